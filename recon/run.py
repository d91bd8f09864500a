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
    volume = "truth.tif"            # the true density (recon.volume TIFF)
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
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from recon.errors import ConfigError, DataError, ShapeError
from recon.noise import SensorSpec, adu_to_electrons, as_sensor_spec

__all__ = [
    "SCHEMA",
    "Run",
    "RunSpec",
    "RunView",
    "TruthSpec",
    "ViewSpec",
    "load_run",
    "read_frames",
    "read_run_spec",
    "write_run",
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
_TRUTH_KEYS = ("volume", "phantom")


def _one_line(text: object, limit: int = 160) -> str:
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# run.toml
# --------------------------------------------------------------------------------------------


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
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}; fix run.toml")
    return float(value)


def _unknown_key(source: str, key: str, allowed: Sequence[str]) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{source}: key '{key}' is not known{hint}; allowed: {', '.join(allowed)}")


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
                f"{source}: key 'schema' is '{schema}', which this version cannot read; "
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
            _check_roi(v, i, size, source)

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
        for v in self.views:
            if v.name == name:
                return v
        raise ConfigError(f"run: no view '{name}'; views: {', '.join(v.name for v in self.views)}")


def _check_roi(v: ViewSpec, i: int, size: tuple[int, int], source: str) -> None:
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
    from optics.tomlio import read_toml

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


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def read_frames(path: str | os.PathLike, *, what: str = "frames", sensor: object | None = None) -> np.ndarray:
    """Read a TIFF of frames as ``(pages, height, width)`` in its own dtype.

    Every image of the file (all series, all pages, ImageJ T/Z/C axes, OME channels) becomes a
    page. Integers (8–64 bit) and floats (16–64 bit) are accepted; NaN marks dead pixels.

    Args:
        path: the TIFF file.
        what: what the file is (named in errors, e.g. ``view direct``).
        sensor: sensor numbers (``bit_depth``) to check integer values against, or None.

    Raises:
        DataError: missing, unreadable or truncated file, colour or non-image data, no pixels,
            inf values, only NaN, negative integers, or integers the sensor cannot produce (a
            dtype narrower than its bit depth, or values above ``2^bits − 1``).
    """
    import tifffile

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what}: {path} is a directory, not a TIFF file; check the path in run.toml")
    if not path.is_file():
        raise DataError(f"{what}: file {path} does not exist; check the path in run.toml")
    from recon.volume import quiet_tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            arrays = [(s.asarray(), s.axes) for s in tif.series]
    except Exception as err:  # tifffile raises many kinds for corrupt or truncated files
        raise DataError(
            f"{what}: cannot read {path} as TIFF ({type(err).__name__}: {_one_line(err, 100)}); "
            "is the file complete?"
        ) from None
    if not arrays:
        raise DataError(
            f"{what}: {path} holds no images (truncated, or not written as TIFF pages?); re-export the frames"
        )
    pages = []
    for data, axes in arrays:
        data = np.asarray(data)
        if "S" in axes:  # samples per pixel: RGB(A), contiguous (…YXS) or planar (…SYX)
            axis = axes.index("S")
            if data.shape[axis] != 1:
                raise DataError(
                    f"{what}: {path} is a colour image ({data.shape[axis]} samples per pixel); save "
                    "monochrome pages (tifffile: photometric='minisblack')"
                )
            data = np.take(data, 0, axis=axis)
        if data.ndim < 2:
            raise DataError(f"{what}: {path} holds an array of shape {data.shape}; expected images")
        if data.size == 0:
            raise DataError(f"{what}: {path} holds an empty image {data.shape}; is the file complete?")
        pages.append(data.reshape(-1, *data.shape[-2:]))
    if len({p.shape[1:] for p in pages}) > 1 or len({p.dtype for p in pages}) > 1:
        raise DataError(
            f"{what}: {path} holds images of different sizes or types "
            f"({', '.join(sorted({f'{p.shape[1]}×{p.shape[2]} {p.dtype}' for p in pages}))}); "
            "one file must hold pages of one view"
        )
    data = pages[0] if len(pages) == 1 else np.concatenate(pages)
    if data.size == 0:
        raise DataError(f"{what}: {path} holds no pixels")
    kind = data.dtype.kind
    if kind not in "uif":
        raise DataError(f"{what}: {path} has pixel type {data.dtype}; expected integers or floats")
    if kind == "f":
        if np.isinf(data).any():
            raise DataError(f"{what}: {path} holds inf values; fix the file (mark dead pixels with NaN)")
        if np.isnan(data).all():
            raise DataError(f"{what}: {path} holds only NaN; the frames hold no data")
    else:
        if kind == "i" and int(data.min()) < 0:
            raise DataError(
                f"{what}: {path} holds negative values ({int(data.min())}); raw frames are counts ≥ 0"
            )
        if sensor is not None:
            spec = as_sensor_spec(sensor)
            bits = data.dtype.itemsize * 8 - (1 if kind == "i" else 0)
            if bits < spec.bit_depth:
                raise DataError(
                    f"{what}: {path} is {data.dtype} ({bits}-bit), too narrow for the "
                    f"{spec.bit_depth}-bit sensor; export the frames with at least {spec.bit_depth} bits"
                )
            top = int(data.max())
            if top > spec.saturation_adu:
                raise DataError(
                    f"{what}: {path} holds values up to {top}, beyond the {spec.bit_depth}-bit range "
                    f"(max {spec.saturation_adu}) of the sensor; check bit_depth in the system file "
                    "or the file"
                )
    return data


# --------------------------------------------------------------------------------------------
# Loaded runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunView:
    """One view of a loaded run.

    Attributes:
        name: view name.
        camera: camera index.
        roi: ``(x0, y0, width, height)``, full-sensor px.
        electrons: (K, h, w) float32 photoelectrons of the K shots (0 where ``mask`` is False).
        mask: (K, h, w) bool, usable pixels (finite, not saturated or clipped, good dark).
        saturated: (K, h, w) bool, pixels at the top of the ADC range.
        dark_pages: dark exposures averaged into the subtracted dark frame (0: the sensor offset
            was subtracted). Subtracting a dark frame adds its read noise: the effective read
            variance is σ²(1 + 1/dark_pages).
        frames_path: the file the frames came from.
        dark_path: the file the dark frame came from, or None.
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    electrons: torch.Tensor
    mask: torch.Tensor
    saturated: torch.Tensor
    dark_pages: int = 0
    frames_path: Path | None = None
    dark_path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, px."""
        return self.roi[3], self.roi[2]

    @property
    def n_frames(self) -> int:
        """Number of shots K."""
        return int(self.electrons.shape[0])

    def pixel_coords(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Full-sensor ``(u, v)`` = (column, row) of the pixel centres, ``(h, w, 2)``, px.

        Entry ``[i, j]`` is ``(x0 + j, y0 + i)``; reshape to ``(h·w, 2)`` for row-major order
        (the order of ``electrons[k].reshape(-1)``).
        """
        x0, y0, w, h = self.roi
        v, u = torch.meshgrid(
            torch.arange(h, dtype=dtype) + y0, torch.arange(w, dtype=dtype) + x0, indexing="ij"
        )
        return torch.stack([u, v], -1)


@dataclass(frozen=True)
class Run:
    """A loaded run.

    Attributes:
        path: the run directory.
        spec: the parsed ``run.toml``.
        views: the views with their frames, in file order.
        sensors: camera index → the sensor numbers used to convert its frames.
        system: the ``optics`` System when :func:`load_run` loaded it (no sensor given), else None.
    """

    path: Path
    spec: RunSpec
    views: tuple[RunView, ...]
    sensors: Mapping[int, SensorSpec] = field(default_factory=dict)
    system: object | None = None

    @property
    def name(self) -> str:
        """The run directory's name."""
        return self.path.resolve().name

    @property
    def system_path(self) -> Path:
        """The system file, resolved relative to the run directory."""
        return self.path / self.spec.system

    @property
    def photons_per_atom(self) -> float | None:
        """Photons per atom, or None (relative units)."""
        return self.spec.photons_per_atom

    @property
    def exposure_s(self) -> float | None:
        """Exposure time, s, or None."""
        return self.spec.exposure_s

    @property
    def description(self) -> str:
        """Free text of run.toml."""
        return self.spec.description

    @property
    def density_unit(self) -> str:
        """``atoms/mm^3`` when the run gives photons per atom, else ``relative``."""
        return "atoms/mm^3" if self.photons_per_atom is not None else "relative"

    @property
    def truth_volume(self) -> Path | None:
        """The truth volume of a simulated run, or None."""
        t = self.spec.truth
        return None if t is None or t.volume is None else self.path / t.volume

    @property
    def truth_phantom(self) -> Path | None:
        """The phantom file of a simulated run, or None."""
        t = self.spec.truth
        return None if t is None or t.phantom is None else self.path / t.phantom

    @property
    def n_frames(self) -> int:
        """Shots per view."""
        return self.views[0].n_frames

    def view(self, name: str) -> RunView:
        """The view called ``name``.

        Raises:
            ConfigError: no such view.
        """
        for v in self.views:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.views)
        raise ConfigError(f"run {self.name}: no view '{name}'; views: {known}")


def _sensor_table(sensor: object | None, spec: RunSpec, run_dir: Path):
    """Camera index → SensorSpec, and the loaded system (when the system file was read)."""
    cameras = sorted({v.camera for v in spec.views})
    if sensor is None:
        from optics.system import load_system

        system = load_system(run_dir / spec.system)
        found = {i: as_sensor_spec(c.sensor) for i, c in enumerate(system.cameras)}
        return found, system
    if isinstance(sensor, Mapping):
        found = {int(k): as_sensor_spec(s) for k, s in sensor.items()}
    elif isinstance(sensor, Sequence) and not isinstance(sensor, (str, bytes)):
        found = {i: as_sensor_spec(s) for i, s in enumerate(sensor)}
    else:
        one = as_sensor_spec(sensor)
        found = {c: one for c in cameras}
    return found, None


def load_run(run_dir: str | os.PathLike, sensor: object | None = None) -> Run:
    """Read and check a run directory; frames become photoelectrons with masks.

    Args:
        run_dir: the run directory (holding ``run.toml``).
        sensor: the sensor numbers: one :class:`~recon.noise.SensorSpec` (or sensor-like
            object, e.g. ``optics.camera.Sensor``) for every camera, or a sequence (indexed by
            camera) or mapping of them. None loads the system file named in run.toml (through
            ``optics.system.load_system``) and keeps it in ``Run.system``. Sensor sizes, when
            known, are checked against the ROIs.

    Returns:
        The run.

    Raises:
        ConfigError: run.toml is missing, invalid, or inconsistent with the sensors.
        DataError: a frame file is missing, unreadable, of the wrong shape or holds bad values.
    """
    run_dir = Path(run_dir)
    spec = read_run_spec(run_dir)
    source = str(run_dir / "run.toml")
    sensors, system = _sensor_table(sensor, spec, run_dir)
    for i, v in enumerate(spec.views):
        if v.camera not in sensors:
            raise ConfigError(
                f"{source}: key 'views[{i}].camera' is {v.camera}, but the system has "
                f"{len(sensors)} camera(s); use an index below {len(sensors)}"
            )
    for i, v in enumerate(spec.views):
        s = sensors[v.camera]
        if s.width_px and s.height_px:
            _check_roi(v, i, (s.width_px, s.height_px), source)

    cache: dict[tuple[Path, int], np.ndarray] = {}

    def frames_of(rel: str, what: str, camera: int) -> tuple[Path, np.ndarray]:
        path = run_dir / rel
        if (path, camera) not in cache:
            cache[(path, camera)] = read_frames(path, what=what, sensor=sensors[camera])
        return path, cache[(path, camera)]

    def crop_full(rel: str, what: str, v: ViewSpec) -> tuple[Path, np.ndarray]:
        path, full = frames_of(rel, what, v.camera)
        s = sensors[v.camera]
        if s.width_px and s.height_px and full.shape[1:] != (s.height_px, s.width_px):
            raise DataError(
                f"{what}: {path} is {full.shape[1]}×{full.shape[2]} px (h×w), not the full "
                f"{s.height_px}×{s.width_px} sensor of camera {v.camera}; give full-sensor frames "
                "or per-view frames"
            )
        x0, y0, w, h = v.roi
        if y0 + h > full.shape[1] or x0 + w > full.shape[2]:
            raise DataError(
                f"{what}: view '{v.name}' roi {list(v.roi)} lies outside the "
                f"{full.shape[2]}×{full.shape[1]} (w×h) frames of {path}; fix the roi"
            )
        return path, full[:, y0 : y0 + h, x0 : x0 + w]

    views = []
    for v in spec.views:
        sensor_v = sensors[v.camera]
        h, w = v.shape
        if v.frames is not None:
            frames_path, adu = frames_of(v.frames, f"view {v.name}", v.camera)
            if adu.shape[1:] != (h, w):
                raise DataError(
                    f"view {v.name}: {frames_path} has pages of {adu.shape[1]}×{adu.shape[2]} px "
                    f"(h×w) but its roi is {h}×{w}; fix the roi or the file"
                )
        else:
            frames_path, adu = crop_full(spec.frames, f"view {v.name} (full-sensor frames)", v)
        dark_path, dark, dark_pages = None, None, 0
        if v.dark is not None:
            dark_path, d = frames_of(v.dark, f"view {v.name} dark", v.camera)
            if d.shape[1:] != (h, w):
                raise DataError(
                    f"view {v.name}: dark {dark_path} has pages of {d.shape[1]}×{d.shape[2]} px "
                    f"(h×w) but the roi is {h}×{w}; fix the roi or the file"
                )
        elif spec.dark is not None:
            dark_path, d = crop_full(spec.dark, f"view {v.name} (full-sensor dark)", v)
        if dark_path is not None:
            d64 = d.astype(np.float64)
            dark_bad = torch.from_numpy(np.isnan(d64).any(0) | (d64 >= sensor_v.saturation_adu).any(0))
            dark = torch.from_numpy(np.nan_to_num(d64.mean(0), nan=0.0))
            dark_pages = int(d.shape[0])
        if not np.any(adu):
            raise DataError(
                f"view {v.name}: all pixels of {frames_path} are zero; the frames hold no data "
                "(check the file)"
            )
        adu_t = torch.from_numpy(np.ascontiguousarray(adu))
        if adu_t.dtype == torch.uint16 or adu_t.dtype == torch.uint32:  # older torch lacks their ops
            adu_t = adu_t.to(torch.int64)
        electrons, saturated = adu_to_electrons(adu_t, sensor_v, dark)
        mask = torch.isfinite(electrons) & ~saturated
        if adu.dtype.kind in "ui" and sensor_v.offset_adu > 0:
            mask &= adu_t != 0  # clipped at the bottom of the ADC range
        if dark_path is not None:
            mask &= ~dark_bad
        if not bool(mask.any()):
            why = "saturated" if bool(saturated.all()) else "saturated, clipped or NaN"
            raise DataError(
                f"view {v.name}: every pixel of {frames_path} is {why}; lower the exposure or "
                "the atom number, or check offset_adu"
            )
        electrons = torch.where(mask, electrons, torch.zeros((), dtype=electrons.dtype))
        views.append(
            RunView(v.name, v.camera, v.roi, electrons, mask, saturated, dark_pages, frames_path, dark_path)
        )
    counts = {rv.n_frames for rv in views}
    if len(counts) > 1:
        detail = ", ".join(f"{rv.name}: {rv.n_frames}" for rv in views)
        raise DataError(
            f"{source}: the views hold different numbers of shots ({detail}); every view must hold the "
            "same shots"
        )
    used = {v.camera: sensors[v.camera] for v in spec.views}
    return Run(run_dir, spec, tuple(views), used, system)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _as_numpy(array: object) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype in (torch.uint16, torch.uint32):  # numpy() of these needs a recent torch
            array = array.to(torch.int64)
        array = array.numpy()
    array = np.asarray(array)
    if array.dtype.kind in "iu" and array.size and array.dtype.itemsize > 2:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            array = array.astype(np.uint16)
        elif lo >= 0 and hi <= np.iinfo(np.uint32).max:
            array = array.astype(np.uint32)
    return array


def _write_tiff(path: Path, array: np.ndarray) -> None:
    """Frames as TIFF: ImageJ-compatible (T pages) for uint8/uint16/float32, else plain."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.dtype in (np.uint8, np.uint16, np.float32):
        tifffile.imwrite(path, array, imagej=True, compression="zlib", metadata={"axes": "TYX"})
    else:
        tifffile.imwrite(path, array, compression="zlib", photometric="minisblack")


def _relative(rel: str, what: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ConfigError(f"write_run: {what} '{rel}' must be a relative path inside the run directory")
    return p


def write_run(
    run_dir: str | os.PathLike,
    spec: RunSpec | Mapping,
    files: Mapping[str, object] | None = None,
    *,
    frames: Mapping[str, object] | None = None,
    darks: Mapping[str, object] | None = None,
    volumes: Mapping[str, object] | None = None,
    extra_files: Mapping[str, bytes | str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a whole run directory: into a temporary sibling, renamed into place when complete.

    Args:
        run_dir: the run directory to create.
        spec: a :class:`RunSpec`, or the run.toml tables as a dict (``schema`` may be left out).
        files: relative path → array written as TIFF (e.g. full-sensor frames, or view frames
            the spec names itself).
        frames: view name → (K, h, w) or (h, w) ADU of that view (numpy or torch; uint16 from
            :func:`~recon.noise.simulate_adu`, or float32 for ``noise="none"``). Written to the
            view's ``frames`` path, or ``views/<name>.tif`` (filled into the spec) when it has none.
        darks: view name → (K, h, w) or (h, w) dark ADU; written to the view's ``dark`` path or
            ``views/<name>_dark.tif``.
        volumes: relative path → :class:`~recon.volume.Volume` (e.g. ``truth.tif``).
        extra_files: relative path → bytes or text (e.g. ``system.toml``, ``phantom.json``).
        overwrite: replace an existing run directory (the old one is removed only after the new
            one is in place).

    Returns:
        The run directory.

    Raises:
        ConfigError: the directory exists (without ``overwrite``), the spec is invalid, a view
            name is unknown, or run.toml names a file that nothing writes.
        ShapeError: an array does not match its view's ROI.
    """
    import tomli_w

    from recon.volume import write_volume

    run_dir = Path(run_dir)
    if run_dir.exists() and not overwrite:
        raise ConfigError(f"write_run: {run_dir} exists; pass --overwrite or choose another --out")
    if not isinstance(spec, RunSpec):
        spec = RunSpec.from_dict({"schema": SCHEMA, **dict(spec)}, source="write_run spec")
    names = [v.name for v in spec.views]
    arrays: dict[str, np.ndarray] = {}
    for rel, array in (files or {}).items():
        arrays[str(_relative(rel, "file"))] = _as_numpy(array)
    views = list(spec.views)
    for table, key, suffix in ((frames, "frames", ""), (darks, "dark", "_dark")):
        for name, array in (table or {}).items():
            if name not in names:
                raise ConfigError(f"write_run: {key} given for view '{name}', which the spec does not have")
            i = names.index(name)
            rel = getattr(views[i], key) or f"views/{name}{suffix}.tif"
            views[i] = replace(views[i], **{key: rel})
            arrays[str(_relative(rel, key))] = _as_numpy(array)
    spec = replace(spec, views=tuple(views))
    spec.validate(source="write_run spec")
    written = set(arrays) | {str(_relative(r, "volume")) for r in (volumes or {})}
    written |= {str(_relative(r, "file")) for r in (extra_files or {})}
    referenced = [(f"view {v.name} frames", v.frames) for v in spec.views]
    referenced += [(f"view {v.name} dark", v.dark) for v in spec.views]
    referenced += [("frames", spec.frames), ("dark", spec.dark)]
    if spec.truth is not None:
        referenced += [("truth volume", spec.truth.volume), ("truth phantom", spec.truth.phantom)]
    for what, rel in referenced:
        if rel is not None and str(_relative(rel, what)) not in written:
            raise ConfigError(
                f"write_run: run.toml names {what} '{rel}' but nothing writes it; pass the data"
            )
    for v in spec.views:
        for what, rel in (("frames", v.frames), ("dark", v.dark)):
            if rel is None:
                continue
            shape = arrays[str(PurePosixPath(rel))].shape
            if len(shape) not in (2, 3) or tuple(shape[-2:]) != v.shape:
                raise ShapeError(
                    f"write_run: {what} of view '{v.name}' have shape {tuple(shape)}, but its roi is "
                    f"{v.shape[0]}×{v.shape[1]} (h×w); pass (K, h, w) or (h, w) arrays"
                )

    parent = run_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.partial-", dir=parent))
    except OSError as err:
        from optics.atomic import output_error

        raise output_error(run_dir, err) from None
    old: Path | None = None
    try:
        for rel, array in arrays.items():
            _write_tiff(work / rel, array)
        for rel, volume in (volumes or {}).items():
            write_volume(work / rel, volume)
        for rel, payload in (extra_files or {}).items():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload.encode("utf-8") if isinstance(payload, str) else payload)
        (work / "run.toml").write_text(tomli_w.dumps(spec.to_dict()), encoding="utf-8")
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        if run_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.old-", dir=parent))
            os.replace(run_dir, old / "run")
        try:
            os.replace(work, run_dir)
        except OSError:
            if old is not None:  # put the previous run back
                os.replace(old / "run", run_dir)
            raise
    except OSError as err:  # disk full, permissions: one line, nothing left behind
        from optics.atomic import output_error

        raise output_error(run_dir, err) from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return run_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
