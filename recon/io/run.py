"""A loaded run: its views in photoelectrons with their masks (:func:`load_run`).

The run directory's format is described in :mod:`recon.io.runspec`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optics.camera import roi_pixel_centers
from optics.system import load_system
from recon.errors import ConfigError, DataError
from recon.io.frames import read_frames
from recon.io.runspec import RunSpec, ViewSpec, check_roi, read_run_spec, view_named
from recon.io.sensor import SensorSpec, adu_to_electrons, as_sensor_spec

__all__ = ["Run", "RunView", "load_run"]


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
        censored: (K, h, w) bool, frames clipped at 0 ADU (integer frames of a sensor with an
            offset > 0): not usable as values, but they say the frame's own signal
            (photoelectrons plus its read noise, before any dark subtraction) was below
            ``censor_e``; None when no frame is clipped.
        censor_e: (h, w) float32, that bound, ``(0.5 − offset) · gain`` (ADU 0 is any analog
            value below 0.5 ADU), or None.
        censor_shift: (h, w) float32, what the dark subtraction removes beyond the offset,
            ``(dark − offset) · gain`` (the frame's electrons are its own signal minus it), or
            None.
        dark_clipped: the share of the dark frame's values at 0 ADU (a sensor with an offset):
            a clipped dark frame's mean overestimates the black level.
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
    censored: torch.Tensor | None = None
    censor_e: torch.Tensor | None = None
    censor_shift: torch.Tensor | None = None
    dark_clipped: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, px."""
        return self.roi[3], self.roi[2]

    @property
    def n_frames(self) -> int:
        """Number of shots K."""
        return int(self.electrons.shape[0])

    def pixel_coords(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Full-sensor ``(u, v)`` of the pixel centres, ``(h, w, 2)``, px (see ``roi_pixel_centers``)."""
        return roi_pixel_centers(self.roi, dtype)


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
        return view_named(self.views, name, f"run {self.name}")


def _sensor_table(sensor: object | None, spec: RunSpec, run_dir: Path):
    """Camera index → SensorSpec, and the loaded system (when the system file was read)."""
    cameras = sorted({v.camera for v in spec.views})
    if sensor is None:

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
        sensor: the sensor numbers: one :class:`~recon.io.sensor.SensorSpec` (or sensor-like
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
            check_roi(v, i, (s.width_px, s.height_px), source)

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

    def view_pages(v: ViewSpec, rel: str, kind: str) -> tuple[Path, np.ndarray]:
        """A view's own frames (``kind`` "") or dark (``kind`` "dark ") pages, checked against its roi."""
        path, pages = frames_of(rel, f"view {v.name} {kind}".rstrip(), v.camera)
        h, w = v.shape
        if pages.shape[1:] != (h, w):
            raise DataError(f"view {v.name}: {kind}{path} has pages of {pages.shape[1]}×{pages.shape[2]} px "
                            f"(h×w) but its roi is {h}×{w}; fix the roi or the file")
        return path, pages

    views = []
    for v in spec.views:
        sensor_v = sensors[v.camera]
        h, w = v.shape
        if v.frames is not None:
            frames_path, adu = view_pages(v, v.frames, "")
        else:
            frames_path, adu = crop_full(spec.frames, f"view {v.name} (full-sensor frames)", v)
        dark_path, dark, dark_pages, dark_clipped = None, None, 0, 0.0
        if v.dark is not None:
            dark_path, d = view_pages(v, v.dark, "dark ")
        elif spec.dark is not None:
            dark_path, d = crop_full(spec.dark, f"view {v.name} (full-sensor dark)", v)
        if dark_path is not None:
            if d.dtype.kind in "ui" and sensor_v.offset_adu > 0:
                dark_clipped = float((d == 0).mean())
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
        if dark_path is not None:
            mask &= ~dark_bad
        censored, censor_e, censor_shift = None, None, None
        if adu.dtype.kind in "ui" and sensor_v.offset_adu > 0:
            clipped = mask & (adu_t == 0)  # clipped at the bottom of the ADC range
            mask &= ~clipped
            if bool(clipped.any()):
                gain = sensor_v.gain_e_per_adu
                zero, _ = adu_to_electrons(torch.zeros(1, h, w), sensor_v, dark)  # what ADU 0 reads as
                censored = clipped
                censor_e = torch.full((h, w), (0.5 - sensor_v.offset_adu) * gain, dtype=torch.float32)
                censor_shift = (-sensor_v.offset_adu * gain - zero[0]).float()
        if not bool(mask.any()):
            why = "saturated" if bool(saturated.all()) else "saturated, clipped or NaN"
            raise DataError(
                f"view {v.name}: every pixel of {frames_path} is {why}; lower the exposure or "
                "the atom number, or check offset_adu"
            )
        electrons = torch.where(mask, electrons, torch.zeros((), dtype=electrons.dtype))
        views.append(
            RunView(v.name, v.camera, v.roi, electrons, mask, saturated, dark_pages, frames_path, dark_path,
                    censored, censor_e, censor_shift, dark_clipped)
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
