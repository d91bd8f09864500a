"""The run directory: ``run.toml`` plus the TIFF frames of the views (schema ``recon.run/1``).

::

    schema = "recon.run/1"
    system = "system.toml"          # the instrument (system file), relative to the run directory
    photons_per_atom = 200.0        # optional, > 0; without it densities are in relative units
    exposure_s = 0.001              # optional, > 0, informational
    description = "..."             # optional
    frames = "full.tif"             # optional: full-sensor frames the views crop their ROI from
    dark = "full_dark.tif"          # optional: full-sensor dark frame(s), cropped likewise
    [[views]]
    name = "direct"                 # unique
    camera = 0                      # camera index in the system file (default 0)
    roi = [x0, y0, width, height]   # full-sensor px: column and row of the top-left pixel
    frames = "views/direct.tif"     # optional if the run has full-sensor frames (then it wins)
    dark = "views/direct_dark.tif"  # optional; (height, width) or pages that are averaged
    [truth]                         # optional (simulated runs)
    volume = "truth.tif"            # the true density (recon.io.volume TIFF)
    phantom = "phantom.json"        # the phantom's parameters

Frames are TIFF files (8/16/32-bit integers or 32/64-bit floats; multi-page, ImageJ
hyperstacks, OME-TIFF, BigTIFF): every page is one shot, all views hold the same number of
shots. Values are ADU. They are converted to photoelectrons with the sensor numbers of the
system file: ``(ADU − dark) · gain`` with a dark frame (the mean of its pages), else
``(ADU − offset) · gain − dark_current_e``.

Pixel conventions: ``roi = [x0, y0, w, h]`` selects sensor columns ``x0 … x0 + w − 1`` and rows
``y0 … y0 + h − 1``; arrays are ``(rows, columns)``; the centre of sensor pixel (column u, row v)
has coordinates ``(u, v)`` (the top-left pixel's centre is ``(0, 0)``), as in
``optics.camera.Sensor``.

Masks, not NaNs: a pixel is usable unless it is saturated (at ``2^bits − 1``), clipped at 0
(integer frames of a sensor with an offset > 0), NaN (float frames may mark dead pixels with
NaN), or bad in the dark frame. Unusable pixels hold 0 electrons and ``mask = False``.

Every problem raises a one-line :class:`~recon.errors.ConfigError` (run.toml) or
:class:`~recon.errors.DataError` (TIFF files) naming the file or key and the fix.

This module does not load the system file unless :func:`load_run` is given no sensor numbers.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from optics.limits import check_number
from optics.tomlio import read_toml
from recon.errors import ConfigError

__all__ = [
    "SAFE_VIEW_NAME",
    "RunSpec",
    "SCHEMA",
    "TruthSpec",
    "ViewSpec",
    "check_roi",
    "one_line",
    "read_run_spec",
    "view_named",
]


SCHEMA = "recon.run/1"


_TOP_KEYS = (
    "schema",
    "system",
    "photons_per_atom",
    "exposure_s",
    "description",
    "frames",
    "dark",
    "views",
    "truth",
)


_VIEW_KEYS = ("name", "camera", "roi", "frames", "dark")
# A view's name becomes part of output file names (renders/view_<name>.png): no separators, no "..".
SAFE_VIEW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


_TRUTH_KEYS = ("volume", "phantom")


def view_named(views, name: str, where: str):
    """The view of ``views`` (anything with a ``name``) called ``name``; else a ConfigError listing them."""
    for v in views:
        if v.name == name:
            return v
    raise ConfigError(f"{where}: no view '{name}'; views: {', '.join(v.name for v in views)}")


def one_line(text: object, limit: int = 160) -> str:
    """``text`` on one line (the first, cut to ``limit`` characters), for error messages."""
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


@dataclass(frozen=True)
class ViewSpec:
    """One ``[[views]]`` table.

    Attributes:
        name: unique view name.
        camera: camera index in the system file.
        roi: ``(x0, y0, width, height)``, full-sensor px.
        frames: TIFF of the view's frames (relative to the run directory), or None when the run
            has full-sensor frames.
        dark: TIFF of the view's dark frame(s), or None.
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    frames: str | None = None
    dark: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the view, px."""
        return self.roi[3], self.roi[2]


@dataclass(frozen=True)
class TruthSpec:
    """The ``[truth]`` table of a simulated run (paths relative to the run directory)."""

    volume: str | None = None
    phantom: str | None = None


def _type_error(source: str, key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}; fix run.toml")


def _string(table: Mapping, key: str, where: str, source: str, *, required: bool = False) -> str | None:
    if key not in table:
        if required:
            raise ConfigError(f"{source}: key '{where}{key}' is missing; add it")
        return None
    value = table[key]
    if not isinstance(value, str) or not value:
        raise _type_error(source, where + key, "a non-empty string", value)
    return value


def _positive(table: Mapping, key: str, source: str) -> float | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(source, key, "a number", value)
    if isinstance(value, float) and not math.isfinite(value) or not value > 0:
        raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}; fix run.toml")
    return check_number(value, key, source, low=_LOWEST[key], high=_HIGHEST[key])


#: The sane range of run.toml's numbers: photons scattered per atom in one exposure (an atom
#: scattering fewer than 1e-3 photons leaves no image; 1e-30 would make every density 1e30×), seconds.
_LOWEST = {"photons_per_atom": 1e-3, "exposure_s": 1e-9}
_HIGHEST = {"photons_per_atom": 1e12, "exposure_s": 1e6}


def _unknown_key(source: str, key: str, allowed: Sequence[str]) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    # repr: a key holding a newline still gives one line
    return ConfigError(f"{source}: key {key!r} is not known{hint}; allowed: {', '.join(allowed)}")


def _sizes(sensor_sizes: object) -> Mapping[int, tuple[int, int]] | tuple[int, int]:
    """Camera index → (width, height), or one (width, height) for every camera."""

    def size_of(item: object) -> tuple[int, int] | None:
        if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(v, int) for v in item):
            return int(item[0]), int(item[1])
        w, h = getattr(item, "width_px", None), getattr(item, "height_px", None)
        return None if w is None or h is None else (int(w), int(h))

    single = size_of(sensor_sizes)
    if single is not None:
        return single
    if isinstance(sensor_sizes, Mapping):
        items = dict(sensor_sizes).items()
    elif isinstance(sensor_sizes, Sequence):
        items = enumerate(sensor_sizes)
    else:
        raise ConfigError(
            f"validate_against: cannot read sensor sizes from {type(sensor_sizes).__name__}; pass "
            "(width_px, height_px), a sensor, or a sequence of them indexed by camera"
        )
    return {int(k): s for k, v in items if (s := size_of(v)) is not None}


@dataclass(frozen=True)
class RunSpec:
    """The content of ``run.toml``.

    Attributes:
        system: system file, relative to the run directory (or absolute).
        views: the views, in file order.
        photons_per_atom: photons scattered per atom in the exposure, or None (relative units).
        exposure_s: exposure time, s (informational), or None.
        description: free text.
        frames: full-sensor frames TIFF the views crop from, or None.
        dark: full-sensor dark TIFF, or None.
        truth: the ``[truth]`` table of a simulated run, or None.
        schema: always ``recon.run/1``.
    """

    system: str
    views: tuple[ViewSpec, ...]
    photons_per_atom: float | None = None
    exposure_s: float | None = None
    description: str = ""
    frames: str | None = None
    dark: str | None = None
    truth: TruthSpec | None = None
    schema: str = SCHEMA

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str = "run.toml") -> RunSpec:
        """Parse and check the tables of ``run.toml`` (``source`` names the file in errors).

        Raises:
            ConfigError: missing, unknown or mistyped keys, unsupported schema, bad ROIs,
                duplicate view names, views without frames.
        """
        for key in data:
            if key not in _TOP_KEYS:
                raise _unknown_key(source, key, _TOP_KEYS)
        schema = _string(data, "schema", "", source, required=True)
        if schema != SCHEMA:
            raise ConfigError(
                f"{source}: key 'schema' is {schema!r}, which this version cannot read; "
                f"expected '{SCHEMA}'"
            )
        views_data = data.get("views")
        if views_data is None:
            raise ConfigError(f"{source}: key 'views' is missing; add [[views]] tables")
        if not isinstance(views_data, list) or not all(isinstance(v, Mapping) for v in views_data):
            raise ConfigError(f"{source}: key 'views' must be an array of tables ([[views]])")
        views = []
        for i, v in enumerate(views_data):
            where = f"views[{i}]."
            for key in v:
                if key not in _VIEW_KEYS:
                    raise _unknown_key(source, where + key, _VIEW_KEYS)
            name = _string(v, "name", where, source, required=True)
            camera = v.get("camera", 0)
            if isinstance(camera, bool) or not isinstance(camera, int) or camera < 0:
                raise _type_error(source, where + "camera", "an integer ≥ 0", camera)
            if "roi" not in v:
                raise ConfigError(f"{source}: key '{where}roi' is missing; add roi = [x0, y0, width, height]")
            roi = v["roi"]
            if not (
                isinstance(roi, list)
                and len(roi) == 4
                and all(isinstance(r, int) and not isinstance(r, bool) for r in roi)
            ):
                raise _type_error(source, where + "roi", "4 integers [x0, y0, width, height]", roi)
            views.append(
                ViewSpec(
                    name,
                    camera,
                    tuple(roi),
                    _string(v, "frames", where, source),
                    _string(v, "dark", where, source),
                )
            )
        truth = None
        if "truth" in data:
            t = data["truth"]
            if not isinstance(t, Mapping):
                raise _type_error(source, "truth", "a table ([truth])", t)
            for key in t:
                if key not in _TRUTH_KEYS:
                    raise _unknown_key(source, f"truth.{key}", _TRUTH_KEYS)
            truth = TruthSpec(_string(t, "volume", "truth.", source), _string(t, "phantom", "truth.", source))
        description = data.get("description", "")
        if not isinstance(description, str):
            raise _type_error(source, "description", "a string", description)
        spec = cls(
            system=_string(data, "system", "", source, required=True),
            views=tuple(views),
            photons_per_atom=_positive(data, "photons_per_atom", source),
            exposure_s=_positive(data, "exposure_s", source),
            description=description,
            frames=_string(data, "frames", "", source),
            dark=_string(data, "dark", "", source),
            truth=truth,
        )
        spec.validate(source=source)
        return spec

    def validate(self, *, source: str = "run spec") -> None:
        """Check what does not need the sensor: ROIs, unique names, a frames file for every view.

        Raises:
            ConfigError: naming ``source`` and the key.
        """
        if self.schema != SCHEMA:
            raise ConfigError(f"{source}: schema must be '{SCHEMA}', got '{self.schema}'")
        if not self.views:
            raise ConfigError(f"{source}: key 'views' is empty; add [[views]] tables")
        seen: set[str] = set()
        for i, v in enumerate(self.views):
            where = f"views[{i}]"
            if not SAFE_VIEW_NAME.fullmatch(v.name):
                raise ConfigError(
                    f"{source}: view name {v.name!r} ({where}.name) cannot name an output file; use letters, "
                    "digits, '.', '_', '+' and '-' (1–64 of them, starting with a letter or digit)")
            if v.name in seen:
                raise ConfigError(
                    f"{source}: view name '{v.name}' appears twice ({where}.name); names must be unique"
                )
            seen.add(v.name)
            x0, y0, w, h = v.roi
            if w <= 0 or h <= 0:
                raise ConfigError(f"{source}: key '{where}.roi' has a non-positive size {w}×{h}; fix the roi")
            if x0 < 0 or y0 < 0:
                raise ConfigError(
                    f"{source}: key '{where}.roi' starts at ({x0}, {y0}), outside the sensor; "
                    "x0 and y0 must be ≥ 0"
                )
            if v.frames is None and self.frames is None:
                raise ConfigError(
                    f"{source}: view '{v.name}' has no 'frames' and the run gives no full-sensor "
                    "'frames'; add one of them"
                )

    def validate_against(self, sensor_sizes: object, *, source: str = "run.toml") -> None:
        """Check camera indices and that every ROI lies on its sensor.

        Args:
            sensor_sizes: ``(width_px, height_px)`` for every camera; or a sensor-like object
                with ``width_px``/``height_px``; or a sequence (indexed by camera) or mapping
                (camera → size) of either.
            source: the file named in errors.

        Raises:
            ConfigError: a camera index the sizes do not cover, or an ROI outside its sensor.
        """
        sizes = _sizes(sensor_sizes)
        for i, v in enumerate(self.views):
            where = f"views[{i}]"
            if isinstance(sizes, tuple):
                size = sizes
            elif v.camera in sizes:
                size = sizes[v.camera]
            else:
                raise ConfigError(
                    f"{source}: key '{where}.camera' is {v.camera}, but the system has "
                    f"{len(sizes)} camera(s); use an index below {len(sizes)}"
                )
            check_roi(v, i, size, source)

    def to_dict(self) -> dict:
        """The tables of ``run.toml`` (None values left out), for ``tomli_w``."""
        out: dict = {"schema": self.schema, "system": self.system}
        for key in ("photons_per_atom", "exposure_s", "frames", "dark"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.description:
            out["description"] = self.description
        out["views"] = []
        for v in self.views:
            table = {"name": v.name, "camera": v.camera, "roi": list(v.roi)}
            if v.frames is not None:
                table["frames"] = v.frames
            if v.dark is not None:
                table["dark"] = v.dark
            out["views"].append(table)
        if self.truth is not None:
            truth = {k: getattr(self.truth, k) for k in _TRUTH_KEYS if getattr(self.truth, k) is not None}
            if truth:
                out["truth"] = truth
        return out

    def view(self, name: str) -> ViewSpec:
        """The view called ``name``.

        Raises:
            ConfigError: no such view.
        """
        return view_named(self.views, name, "run")


def check_roi(v: ViewSpec, i: int, size: tuple[int, int], source: str) -> None:
    """Raise ConfigError when view ``i``'s roi leaves the sensor of ``size`` (width, height) px."""
    width, height = size
    x0, y0, w, h = v.roi
    if x0 < 0 or y0 < 0 or x0 + w > width or y0 + h > height:
        raise ConfigError(
            f"{source}: key 'views[{i}].roi' {list(v.roi)} lies outside the {width}×{height} "
            f"sensor of camera {v.camera}; fix the region of interest"
        )


def read_run_spec(run: str | os.PathLike) -> RunSpec:
    """Read and check ``run.toml`` (``run``: the run directory or the file itself).

    Raises:
        ConfigError: missing directory or file, invalid TOML, invalid content.
    """
    path = Path(run)
    if path.suffix != ".toml" and path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file, not a run directory; pass the directory holding run.toml")
    source = path if path.suffix == ".toml" else path / "run.toml"
    if not source.parent.is_dir():
        raise ConfigError(f"run directory {source.parent} does not exist; pass a directory holding run.toml")
    if not source.is_file():
        raise ConfigError(f"{source.parent} holds no run.toml; is it a run directory? (see README: Files)")
    data = read_toml(source, "run description")
    return RunSpec.from_dict(data, source=str(source))
