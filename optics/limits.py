"""The numbers a file may hold: finite, inside float32's range, and physically sane.

Every loader (system file, run.toml, fit config, phantom and target files) checks each number
where it reads it, with :func:`check_number`, so that a value such as ``1e308`` for a mirror
centre or ``1e-300`` for a pixel pitch is refused at once with one line naming the file and the
key — not after minutes of tracing, with an error about something else. The computations run in
float32 (on a GPU) and float64, so a number must survive the conversion to float32 unchanged in
kind: neither overflow to inf nor underflow to 0.

The sane ranges are generous bounds on what an instrument can be, not tolerances: lengths up to
a kilometre, a reconstruction box up to 10 m, pixels from 0.1 µm to 1 mm.
"""

from __future__ import annotations

import dataclasses
import math

from optics.errors import ConfigError

__all__ = ["FLOAT32_MAX", "FLOAT32_TINY", "LENGTH_MM", "check_number", "check_seed", "check_types"]

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32
LENGTH_MM = 1e6  # any position or length of an instrument, mm (1 km)


def check_number(
    value: float,
    key: str,
    source: str,
    *,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
) -> float:
    """``value`` if it is finite, representable in float32 and within ``[low, high]``.

    Args:
        value: the number read.
        key: its key, as the file names it (``mirrors[3].center_mm``).
        source: the file (or option) it came from.
        low: the smallest sane value (None: no bound).
        high: the largest sane value (None: no bound).
        unit: the unit, for the message (``" mm"``).

    Raises:
        ConfigError: naming the file, the key, the value and the range.
    """
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float
        raise ConfigError(f"{source}: key '{key}' is an integer of {int(value).bit_length()} bits, outside "
                          "float32's range (1.2e-38 … 3.4e38 in magnitude, or 0); give a physical value") \
            from None
    if not math.isfinite(value):
        raise ConfigError(f"{source}: key '{key}' must be finite, got {value}")
    if abs(value) > FLOAT32_MAX or 0 < abs(value) < FLOAT32_TINY:
        raise ConfigError(f"{source}: key '{key}' = {value:g} is outside float32's range (1.2e-38 … 3.4e38 "
                          "in magnitude, or 0); give a physical value")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{'-inf' if low is None else f'{low:g}'} … {'inf' if high is None else f'{high:g}'}{unit}"
        raise ConfigError(f"{source}: key '{key}' = {value:g}{unit} is not a physical value; expected {span}")
    return value


_EXPECTED = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false",
             "dict": "a table", "int | tuple[int, int, int]": "an integer or a list of 3 integers"}


def check_seed(seed: int, source: str) -> int:
    """``seed`` if a torch generator takes it (an integer in 0 … 2⁶³ − 1); else a one-line ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"{source}: --seed must be an integer in 0 … 2⁶³ − 1, got {seed!r}")
    return seed


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_types(cls, data: dict, source: str, *, fix: str = "") -> None:
    """Raise ConfigError naming the key when a value of ``data`` does not fit the dataclass ``cls``.

    Checks the fields whose annotation is ``int``, ``float`` (finite, in float32's range), ``str``,
    ``bool``, ``dict`` or ``int | tuple[int, int, int]``; others (nested configs) are left to the
    class. Unknown keys are the caller's to refuse.

    Args:
        cls: the dataclass.
        data: its keys and values, as read from a file or given as options.
        source: where they came from, for the message.
        fix: what to fix, appended to the message ("; fix the fit config").
    """
    kinds = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
             for f in dataclasses.fields(cls)}
    for key, value in data.items():
        kind = kinds.get(key)
        if kind == "int":
            ok = _is_int(value)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and not (isinstance(value, float) and not math.isfinite(value))
            if ok:
                check_number(value, key, source)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "dict":
            ok = isinstance(value, dict)
        elif kind == "int | tuple[int, int, int]":
            ok = _is_int(value) or (isinstance(value, (list, tuple)) and len(value) == 3
                                    and all(_is_int(v) for v in value))
        else:
            continue
        if not ok:
            shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
            raise ConfigError(f"{source}: key '{key}' must be {_EXPECTED[kind]}, got {shown}{fix}")
