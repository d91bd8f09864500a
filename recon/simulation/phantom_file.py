"""Phantom files (TOML) and phantom names: :func:`load_phantom`.

The file format is described in :mod:`recon.simulation.phantoms`.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from optics.limits import LENGTH_MM, check_number
from optics.tomlio import read_toml
from recon.errors import ConfigError
from recon.simulation.named import PHANTOMS
from recon.simulation.phantoms import MODELS, Phantom, PrimitivePhantom
from recon.simulation.primitives import Box, Donut, Fringes, Gaussian, Primitive, Sphere

__all__ = ["load_phantom", "phantom_from_definition"]


_PRIMITIVE_KEYS = {
    "gaussian": ("center_mm", "sigma_mm", "covariance_mm2", "weight", "amplitude"),
    "sphere": ("center_mm", "radius_mm", "edge_mm", "weight", "amplitude"),
    "box": ("min_mm", "max_mm", "edge_mm", "weight", "amplitude"),
    "donut": ("center_mm", "sigma_r_mm", "hole_mm", "sigma_z_mm", "power", "weight", "amplitude"),
}


_FRINGE_KEYS = ("period_mm", "phase_rad", "axis", "direction", "origin_mm", "chirp_per_mm2")


_TOP_KEYS = ("name", "description", "model", "fringes", *_PRIMITIVE_KEYS)


def _unknown(source: str, key: str, allowed: Sequence[str], where: str = "") -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    # repr: a key holding a newline still gives one line
    return ConfigError(f"{source}: unknown key {where + key!r}{hint}; allowed: {', '.join(allowed)}")


def _number(value, key: str, source: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{source}: key '{key}' must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}")
    if nonneg and value < 0:
        raise ConfigError(f"{source}: key '{key}' must be ≥ 0, got {value!r}")
    bound = LENGTH_MM if key.split(".")[-1].endswith(("_mm", "_mm2")) else None  # lengths; else float32
    return check_number(value, key, source, low=None if bound is None else -bound, high=bound)


def _vector3(value, key: str, source: str, *, scalar_ok: bool = False, positive: bool = False) -> np.ndarray:
    if scalar_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        out = np.full(3, _number(value, key, source))
    elif isinstance(value, list) and len(value) == 3:
        out = np.array([_number(v, key, source) for v in value])
    else:
        what = "a number or a list of 3 numbers" if scalar_ok else "a list of 3 numbers [x, y, z]"
        raise ConfigError(f"{source}: key '{key}' must be {what}, got {value!r}")
    if positive and np.any(out <= 0):
        raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}")
    return out


def _primitive(kind: str, item: dict, where: str, source: str) -> Primitive:
    def get(key, default=None):
        return item.get(key, default)

    if kind == "gaussian":
        center = _vector3(get("center_mm", [0.0, 0.0, 0.0]), f"{where}.center_mm", source)
        if "covariance_mm2" in item:
            if "sigma_mm" in item:
                raise ConfigError(f"{source}: '{where}' gives both sigma_mm and covariance_mm2; keep one")
            cov = item["covariance_mm2"]
            if not (isinstance(cov, list) and len(cov) == 3):
                raise ConfigError(f"{source}: key '{where}.covariance_mm2' must be 3 rows of 3 numbers")
            m = np.array([_vector3(r, f"{where}.covariance_mm2", source) for r in cov])
            if not np.allclose(m, m.T, rtol=1e-9, atol=1e-12):
                raise ConfigError(f"{source}: key '{where}.covariance_mm2' must be symmetric")
            try:
                return Gaussian(center, m)
            except np.linalg.LinAlgError:
                raise ConfigError(
                    f"{source}: key '{where}.covariance_mm2' is not positive definite; check the matrix"
                ) from None
        sigma = _vector3(get("sigma_mm", 0.5), f"{where}.sigma_mm", source, scalar_ok=True, positive=True)
        return Gaussian.isotropic(center, sigma)
    if kind == "sphere":
        if "radius_mm" not in item:
            raise ConfigError(f"{source}: key '{where}.radius_mm' is missing; add the sphere's radius")
        return Sphere(
            _vector3(get("center_mm", [0.0, 0.0, 0.0]), f"{where}.center_mm", source),
            _number(item["radius_mm"], f"{where}.radius_mm", source, positive=True),
            _number(get("edge_mm", 0.0), f"{where}.edge_mm", source, nonneg=True),
        )
    if kind == "box":
        for key in ("min_mm", "max_mm"):
            if key not in item:
                raise ConfigError(f"{source}: key '{where}.{key}' is missing; add the box corner")
        lo = _vector3(item["min_mm"], f"{where}.min_mm", source)
        hi = _vector3(item["max_mm"], f"{where}.max_mm", source)
        if np.any(hi <= lo):
            raise ConfigError(f"{source}: key '{where}.max_mm' must exceed min_mm on every axis")
        return Box(lo, hi, _number(get("edge_mm", 0.0), f"{where}.edge_mm", source, nonneg=True))
    power = get("power", 2)
    if isinstance(power, bool) or not isinstance(power, int) or power < 1:
        raise ConfigError(f"{source}: key '{where}.power' must be an integer ≥ 1, got {power!r}")
    return Donut(
        _vector3(get("center_mm", [0.0, 0.0, 0.0]), f"{where}.center_mm", source),
        _number(get("sigma_r_mm", 0.5), f"{where}.sigma_r_mm", source, positive=True),
        _number(get("hole_mm", 0.2), f"{where}.hole_mm", source, positive=True),
        _number(get("sigma_z_mm", 0.2), f"{where}.sigma_z_mm", source, positive=True),
        power,
    )


def _fringes(table, source: str) -> Fringes:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'fringes' must be a table ([fringes])")
    for key in table:
        if key not in _FRINGE_KEYS:
            raise _unknown(source, key, _FRINGE_KEYS, "fringes.")
    if "period_mm" not in table:
        raise ConfigError(f"{source}: key 'fringes.period_mm' is missing; add the fringe period in mm")
    if "axis" in table and "direction" in table:
        raise ConfigError(f"{source}: 'fringes' gives both axis and direction; keep one")
    if "direction" in table:
        direction = _vector3(table["direction"], "fringes.direction", source)
        if not np.linalg.norm(direction) > 0:
            raise ConfigError(f"{source}: key 'fringes.direction' must be a non-zero vector")
    else:
        axis = table.get("axis", "y")
        if axis not in ("x", "y", "z"):
            raise ConfigError(f"{source}: key 'fringes.axis' must be 'x', 'y' or 'z', got {axis!r}")
        direction = np.eye(3)["xyz".index(axis)]
    return Fringes(
        direction,
        _number(table["period_mm"], "fringes.period_mm", source, positive=True),
        _number(table.get("phase_rad", 0.0), "fringes.phase_rad", source),
        _vector3(table.get("origin_mm", [0.0, 0.0, 0.0]), "fringes.origin_mm", source),
        _number(table.get("chirp_per_mm2", 0.0), "fringes.chirp_per_mm2", source),
    )


def phantom_from_definition(
    definition: Mapping, *, atoms: float, source: str = "phantom", name: str | None = None
) -> PrimitivePhantom:
    """A phantom from phantom-file tables (a parsed TOML file, or :attr:`Phantom.definition`).

    Args:
        definition: the tables (see the module docstring).
        atoms: total atom number over all space.
        source: where the tables came from, for error messages (file path).
        name: phantom name when the tables give none.

    Raises:
        ConfigError: unknown or missing keys, wrong types or values, naming the key and source.
    """
    for key in definition:
        if key not in _TOP_KEYS:
            raise _unknown(source, key, _TOP_KEYS)
    model = definition.get("model", "emission")
    if model not in MODELS:
        raise ConfigError(f"{source}: key 'model' must be one of {', '.join(MODELS)}, got {model!r}")
    title = definition.get("name", name or "phantom")
    if not isinstance(title, str):
        raise ConfigError(f"{source}: key 'name' must be a string, got {title!r}")
    components: list[tuple[str, float, Primitive]] = []
    for kind, keys in _PRIMITIVE_KEYS.items():
        items = definition.get(kind, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ConfigError(f"{source}: '{kind}' must be an array of tables ([[{kind}]])")
        for i, item in enumerate(items):
            where = f"{kind}[{i}]"
            for key in item:
                if key not in keys:
                    raise _unknown(source, key, keys, f"{where}.")
            if "weight" in item and "amplitude" in item:
                raise ConfigError(f"{source}: '{where}' gives both weight and amplitude; keep one")
            how = "amplitude" if "amplitude" in item else "weight"
            value = _number(item.get(how, 1.0), f"{where}.{how}", source, nonneg=True)
            try:
                prim = _primitive(kind, item, where, source)
            except ValueError as err:  # a geometric constraint the checks above did not catch
                raise ConfigError(f"{source}: '{where}': {err}") from None
            if how == "amplitude":
                value = value / prim.peak()  # relative peak density → relative atom share
            components.append((how, value, prim))
    if not components:
        raise ConfigError(
            f"{source}: no primitives; add [[gaussian]], [[sphere]], [[box]] or [[donut]] tables"
        )
    if len({how for how, _, _ in components}) > 1:
        raise ConfigError(
            f"{source}: some primitives give 'weight' and others 'amplitude'; use one kind in a file"
        )
    if not any(v > 0 for _, v, _ in components):
        raise ConfigError(f"{source}: every weight is 0; give at least one primitive a positive weight")
    fr = _fringes(definition["fringes"], source) if "fringes" in definition else None
    phantom = PrimitivePhantom(
        title, [(v, p) for _, v, p in components], atoms=atoms, fringes=fr, model=model, params={}
    )
    phantom.params = {"source": str(source), **phantom.definition}
    return phantom


def load_phantom(
    name_or_path: str | os.PathLike,
    *,
    atoms: float,
    seed: int = 0,
    options: Mapping | None = None,
) -> Phantom:
    """A phantom by registry name (:data:`PHANTOMS`) or from a TOML phantom file.

    Args:
        name_or_path: a registry name, or the path of a ``.toml`` phantom file.
        atoms: total atom number over all space (> 0).
        seed: seed of phantoms drawn at random (``clouds``); others ignore it.
        options: keyword arguments of the registry function (e.g. ``{"period_mm": 0.1}``).

    Raises:
        ConfigError: unknown name or option, missing or invalid file (naming the key).
    """
    valid = isinstance(atoms, (int, float)) and not isinstance(atoms, bool)
    if not (valid and math.isfinite(atoms) and atoms > 0):
        raise ConfigError(f"load_phantom: atoms must be a positive number, got {atoms!r}")
    text = str(name_or_path)
    if text in PHANTOMS:
        factory = PHANTOMS[text]
        allowed = [p for p in inspect.signature(factory).parameters if p not in ("atoms", "seed")]
        kwargs = dict(options or {})
        for key in kwargs:
            if key not in allowed:
                raise _unknown(f"phantom {text}", key, allowed or ["(none)"])
        if "seed" in inspect.signature(factory).parameters:
            kwargs["seed"] = seed
        try:
            return factory(float(atoms), **kwargs)
        except (ValueError, TypeError, np.linalg.LinAlgError) as err:
            raise ConfigError(f"phantom {text}: invalid options {kwargs} ({err})") from None
    path = Path(text)
    if path.suffix.lower() == ".toml" or path.exists():
        if options:
            raise ConfigError(f"load_phantom: options apply to registry phantoms, not to the file {path}")
        if not path.is_file():
            raise ConfigError(f"phantom file {path} does not exist; check the path")

        data = read_toml(path, "phantom file")
        return phantom_from_definition(data, atoms=float(atoms), source=str(path), name=path.stem)
    raise ConfigError(
        f"load_phantom: unknown phantom '{text}'; use one of {', '.join(PHANTOMS)} or a .toml phantom file"
    )
