"""The run directory: ``run.toml`` plus TIFF frames of the views (schema ``recon.run/1``).

::

    schema = "recon.run/1"
    system = "system.toml"          # the instrument, relative to the run directory
    photons_per_atom = 200.0        # optional; without it densities are in relative units
    exposure_s = 0.001              # optional, informational
    description = "..."             # optional
    frames = "full.tif"             # optional: full-sensor frames that views crop their ROI from
    dark = "full_dark.tif"          # optional: full-sensor dark frame(s)
    [[views]]
    name = "direct"                 # unique
    camera = 0                      # camera index in the system file
    roi = [x0, y0, width, height]   # full-sensor px: column and row of the top-left pixel
    frames = "views/direct.tif"     # pages = repeated shots, each (height, width)
    dark = "views/direct_dark.tif"  # optional; (height, width), or pages that are averaged
    [truth]                         # optional (simulated runs)
    volume = "truth.tif"
    phantom = "phantom.json"

Frames are converted to photoelectrons: ``(ADU − dark) × gain`` with the dark frame, or
``(ADU − offset) × gain`` without one. Saturated pixels (at 2^bits − 1) and non-finite values are
masked. Every problem is a one-line :class:`~recon.errors.DataError` or
:class:`~recon.errors.ConfigError` naming the file or key and the fix.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optics.camera import Sensor
from optics.system import System, load_system
from recon.errors import ConfigError, DataError
from recon.noise import adu_to_electrons

__all__ = ["Run", "RunView", "load_run", "read_frames", "write_run"]

SCHEMA = "recon.run/1"
_TOP_KEYS = {
    "schema",
    "system",
    "photons_per_atom",
    "exposure_s",
    "description",
    "frames",
    "dark",
    "views",
    "truth",
}
_VIEW_KEYS = {"name", "camera", "roi", "frames", "dark"}
_TRUTH_KEYS = {"volume", "phantom"}


@dataclass(frozen=True)
class RunView:
    """One view of a loaded run.

    Attributes:
        name: view name.
        camera: camera index.
        roi: (x0, y0, width, height), full-sensor px.
        electrons: (K, h, w) float32 photoelectrons of the K shots.
        mask: (K, h, w) usable pixels (finite, not saturated).
        dark_pages: dark exposures averaged into the subtracted dark frame (0: the sensor offset
            was subtracted). Subtracting a dark frame adds its read noise: the effective read
            variance is σ²(1 + 1/dark_pages).
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    electrons: torch.Tensor
    mask: torch.Tensor
    dark_pages: int = 0


@dataclass(frozen=True)
class Run:
    """A loaded run."""

    path: Path
    system_path: Path
    system: System
    views: tuple[RunView, ...]
    photons_per_atom: float | None
    exposure_s: float | None
    description: str
    truth_volume: Path | None
    truth_phantom: Path | None

    @property
    def name(self) -> str:
        """The run's directory name."""
        return self.path.resolve().name


def read_frames(path: Path, *, what: str, sensor: Sensor | None = None) -> np.ndarray:
    """Read a TIFF as (pages, h, w): 8/16/32-bit integers or floats, ImageJ, OME, BigTIFF.

    Raises:
        DataError: missing, unreadable/truncated, not 2-D pages, NaN/inf, or values beyond the
            sensor's bit depth.
    """
    import tifffile

    if not path.is_file():
        raise DataError(f"{what}: file {path} does not exist; check the path in run.toml")
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
    except Exception as err:  # tifffile raises many kinds for corrupt files
        raise DataError(
            f"{what}: cannot read {path} as TIFF ({type(err).__name__}: {err}); is the file complete?"
        ) from None
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    data = np.squeeze(data, axis=tuple(i for i in range(1, data.ndim - 2) if data.shape[i] == 1))
    if data.ndim != 3:
        raise DataError(
            f"{what}: {path} holds an array of shape {data.shape}; expected (height, width) pages"
        )
    if data.dtype.kind not in "uif":
        raise DataError(f"{what}: {path} has pixel type {data.dtype}; expected integers or floats")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise DataError(f"{what}: {path} holds NaN or inf pixels; fix or mask them before fitting")
    if sensor is not None and data.dtype.kind in "ui" and data.size:
        top = int(data.max())
        if top > sensor.saturation_adu or int(data.min()) < 0:
            raise DataError(
                f"{what}: {path} holds values up to {top}, beyond the {sensor.bit_depth}-bit "
                "sensor of the system file; check bit_depth or the file"
            )
    return data


def _sensor_size_check(roi, sensor: Sensor, where: str, source: Path) -> None:
    x0, y0, w, h = roi
    if x0 < 0 or y0 < 0 or x0 + w > sensor.width_px or y0 + h > sensor.height_px:
        raise ConfigError(
            f"{source}: key '{where}.roi' {list(roi)} lies outside the "
            f"{sensor.width_px}×{sensor.height_px} sensor; fix the region of interest"
        )


def _get(table: dict, key: str, kinds, where: str, source: Path, *, required: bool = True):
    if key not in table:
        if required:
            raise ConfigError(f"{source}: key '{where}{key}' is missing; add it")
        return None
    value = table[key]
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
        if kinds == (int, float):
            kinds = float
        kind_text = " or ".join(
            names.get(k, k.__name__) for k in (kinds if isinstance(kinds, tuple) else (kinds,))
        )
        raise ConfigError(f"{source}: key '{where}{key}' must be {kind_text}, got {value!r}")
    return value


def load_run(run_dir: str | os.PathLike, *, dtype=torch.float32) -> Run:
    """Read and check a run directory.

    Raises:
        ConfigError: run.toml is missing, invalid, or inconsistent with the system file.
        DataError: a frame file is missing, unreadable, of the wrong shape or holds bad values.
    """
    import tomllib

    run_dir = Path(run_dir)
    source = run_dir / "run.toml"
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist; pass a directory holding run.toml")
    if not source.is_file():
        raise ConfigError(f"{run_dir} holds no run.toml; is it a run directory? (see README: Files)")
    try:
        spec = tomllib.loads(source.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{source}: not valid TOML ({err}); fix the syntax") from None
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: key '{unknown[0]}' is not known; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    schema = _get(spec, "schema", str, "", source)
    if schema != SCHEMA:
        raise ConfigError(f"{source}: key 'schema' must be '{SCHEMA}', got '{schema}'")
    system_path = run_dir / _get(spec, "system", str, "", source)
    system = load_system(system_path, dtype=dtype)
    photons = _get(spec, "photons_per_atom", (int, float), "", source, required=False)
    if photons is not None and not (math.isfinite(photons) and photons > 0):
        raise ConfigError(f"{source}: key 'photons_per_atom' must be > 0, got {photons}")
    exposure = _get(spec, "exposure_s", (int, float), "", source, required=False)
    description = _get(spec, "description", str, "", source, required=False) or ""
    full_frames = _get(spec, "frames", str, "", source, required=False)
    full_dark = _get(spec, "dark", str, "", source, required=False)
    views_spec = _get(spec, "views", list, "", source)
    if not views_spec:
        raise ConfigError(f"{source}: key 'views' is empty; add [[views]] tables")
    cache: dict[Path, np.ndarray] = {}

    def frames_of(rel: str, what: str, sensor: Sensor) -> np.ndarray:
        path = run_dir / rel
        if path not in cache:
            cache[path] = read_frames(path, what=what, sensor=sensor)
        return cache[path]

    views = []
    names = set()
    for i, v in enumerate(views_spec):
        where = f"views[{i}]."
        if not isinstance(v, dict):
            raise ConfigError(f"{source}: 'views' must be an array of tables ([[views]])")
        bad = sorted(set(v) - _VIEW_KEYS)
        if bad:
            raise ConfigError(
                f"{source}: key '{where}{bad[0]}' is not known; allowed: {', '.join(sorted(_VIEW_KEYS))}"
            )
        name = _get(v, "name", str, where, source)
        if name in names:
            raise ConfigError(f"{source}: view name '{name}' appears twice; names must be unique")
        names.add(name)
        cam = _get(v, "camera", int, where, source, required=False) or 0
        if not 0 <= cam < len(system.cameras):
            raise ConfigError(
                f"{source}: key '{where}camera' is {cam}, but {system_path} has "
                f"{len(system.cameras)} camera(s)"
            )
        sensor = system.cameras[cam].sensor
        roi = _get(v, "roi", list, where, source)
        if len(roi) != 4 or not all(isinstance(r, int) and not isinstance(r, bool) for r in roi):
            raise ConfigError(
                f"{source}: key '{where}roi' must be 4 integers [x0, y0, width, height], got {roi}"
            )
        if roi[2] <= 0 or roi[3] <= 0:
            raise ConfigError(f"{source}: key '{where}roi' has a non-positive size {roi[2:]}")
        _sensor_size_check(roi, sensor, where.rstrip("."), source)
        x0, y0, w, h = roi
        own = _get(v, "frames", str, where, source, required=False)
        if own is not None:
            adu = frames_of(own, f"view {name}", sensor)
            if adu.shape[1:] != (h, w):
                raise DataError(
                    f"view {name}: {run_dir / own} has pages of {adu.shape[1]}×{adu.shape[2]} px "
                    f"(h×w) but its roi is {h}×{w}; fix the roi or the file"
                )
        elif full_frames is not None:
            full = frames_of(full_frames, "frames", sensor)
            if full.shape[1:] != (sensor.height_px, sensor.width_px):
                raise DataError(
                    f"frames: {run_dir / full_frames} is {full.shape[1]}×{full.shape[2]} px, not "
                    f"the full {sensor.height_px}×{sensor.width_px} sensor"
                )
            adu = full[:, y0 : y0 + h, x0 : x0 + w]
        else:
            raise ConfigError(
                f"{source}: view '{name}' has no 'frames' and run.toml gives no full-sensor "
                "'frames'; add one of them"
            )
        dark_rel = _get(v, "dark", str, where, source, required=False)
        dark = None
        dark_pages = 0
        if dark_rel is not None:
            d = frames_of(dark_rel, f"view {name} dark", sensor)
            if d.shape[1:] != (h, w):
                raise DataError(
                    f"view {name}: dark {run_dir / dark_rel} is {d.shape[1]}×{d.shape[2]} px, roi is {h}×{w}"
                )
            dark, dark_pages = d.mean(axis=0), d.shape[0]
        elif full_dark is not None:
            d = frames_of(full_dark, "dark", sensor)
            dark, dark_pages = d.mean(axis=0)[y0 : y0 + h, x0 : x0 + w], d.shape[0]
        adu_t = torch.from_numpy(adu.astype(np.float64))
        electrons, saturated = adu_to_electrons(
            adu_t, sensor, None if dark is None else torch.from_numpy(np.asarray(dark, dtype=np.float64))
        )
        if adu.dtype.kind in "ui" and bool(saturated.all()):
            raise DataError(f"view {name}: every pixel is saturated; lower the exposure or the atom number")
        if not np.any(adu):
            raise DataError(f"view {name}: all pixels are zero; the frames hold no data (check the file)")
        mask = ~saturated & torch.isfinite(electrons)
        views.append(RunView(name, cam, (x0, y0, w, h), electrons, mask, dark_pages))
    truth = _get(spec, "truth", dict, "", source, required=False) or {}
    bad = sorted(set(truth) - _TRUTH_KEYS)
    if bad:
        raise ConfigError(f"{source}: key 'truth.{bad[0]}' is not known; allowed: volume, phantom")
    truth_volume = run_dir / truth["volume"] if "volume" in truth else None
    truth_phantom = run_dir / truth["phantom"] if "phantom" in truth else None
    return Run(
        run_dir,
        system_path,
        system,
        tuple(views),
        None if photons is None else float(photons),
        None if exposure is None else float(exposure),
        description,
        truth_volume,
        truth_phantom,
    )


def write_run(
    run_dir: str | os.PathLike,
    spec: dict,
    files: dict[str, np.ndarray],
    *,
    extra_files: dict[str, bytes] | None = None,
    volumes: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a run directory as a whole: into a temporary sibling, then renamed into place.

    Args:
        run_dir: the run directory to create.
        spec: the run.toml content (``schema`` is added).
        files: relative TIFF path → (pages, h, w) or (h, w) array, written with tifffile
            (zlib-compressed, ImageJ-compatible for integers).
        extra_files: relative path → bytes for other files (system copy, phantom JSON).
        volumes: relative path → :class:`~recon.volume.Volume` written as volume TIFFs (truth).
        overwrite: replace an existing directory.

    Returns:
        The run directory.
    """
    import tifffile
    import tomli_w

    run_dir = Path(run_dir)
    if run_dir.exists() and not overwrite:
        raise ConfigError(f"{run_dir} exists; pass --overwrite or choose another --out")
    parent = run_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    work = parent / f".{run_dir.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    try:
        for rel, array in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(
                path,
                np.asarray(array),
                compression="zlib",
                metadata={"axes": "QYX"} if np.ndim(array) == 3 else None,
            )
        for rel, volume in (volumes or {}).items():
            from recon.volume import write_volume

            write_volume(work / rel, volume)
        for rel, payload in (extra_files or {}).items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        (work / "run.toml").write_text(tomli_w.dumps({"schema": SCHEMA, **spec}), encoding="utf-8")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        work.rename(run_dir)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return run_dir
