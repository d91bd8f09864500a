"""Calibration target sets: point-source exposures, their description file, and their simulation.

A target set is a run directory (``recon.run/1``: ``run.toml``, one TIFF per view whose page
``i`` is exposure ``i``, dark frames) plus ``target.toml``, which says what the exposures are::

    schema = "recon.calibration_target/1"
    description = "..."
    bead_sigma_mm = 0.01        # size of the source (Gaussian σ), mm
    photons = 5e7               # photons emitted per exposure (informational)
    [[positions]]
    exposure = 0                # page of the view TIFFs
    position_mm = [x, y, z]     # where the source was (world frame, mm); omit when unknown

The simulation is physical and independent of the pixel tracer: photons leave a Gaussian bead
isotropically, are traced forward through mirror, windows and lens
(:func:`optics.project.trace_point_to_sensor`), and each one that reaches the sensor is
counted in its pixel (QE included), so the counts are exactly Poisson.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from optics.errors import CalibrationError, ConfigError
from optics.limits import LENGTH_MM, check_number
from optics.project import trace_point_to_sensor
from optics.system import System
from optics.tomlio import read_toml

__all__ = [
    "TARGET_SCHEMA",
    "TargetSpec",
    "parse_target_spec",
    "read_target_spec",
    "simulate_point_exposure",
    "target_spec_text",
]

TARGET_SCHEMA = "recon.calibration_target/1"


@dataclass(frozen=True)
class TargetSpec:
    """The content of ``target.toml``.

    Attributes:
        exposures: (N,) page index of each exposure.
        positions_mm: (N, 3) source positions (float64), or None when they are not known.
        bead_sigma_mm: Gaussian σ of the source, mm.
        photons: photons emitted per exposure, or None.
        description: free text.
    """

    exposures: tuple[int, ...]
    positions_mm: torch.Tensor | None
    bead_sigma_mm: float = 0.0
    photons: float | None = None
    description: str = ""


def parse_target_spec(data: dict, *, source: str = "target.toml") -> TargetSpec:
    """Check the tables of ``target.toml``.

    Raises:
        ConfigError: wrong schema, unknown or mistyped keys, some positions given and others not.
    """
    allowed = {"schema", "description", "bead_sigma_mm", "photons", "positions"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{source}: key {key!r} is not known; allowed: {', '.join(sorted(allowed))}")
    if data.get("schema") != TARGET_SCHEMA:
        raise ConfigError(f"{source}: key 'schema' must be '{TARGET_SCHEMA}', got {data.get('schema')!r}")
    rows = data.get("positions")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ConfigError(f"{source}: key 'positions' must be a non-empty array of tables ([[positions]])")
    exposures, positions = [], []
    for i, r in enumerate(rows):
        for key in r:
            if key not in ("exposure", "position_mm"):
                raise ConfigError(
                    f"{source}: key {f'positions[{i}].{key}'!r} is not known; allowed: exposure, position_mm"
                )
        e = r.get("exposure")
        if not isinstance(e, int) or isinstance(e, bool) or e < 0:
            raise ConfigError(f"{source}: key 'positions[{i}].exposure' must be an integer ≥ 0, got {e!r}")
        exposures.append(e)
        p = r.get("position_mm")
        if p is not None:
            if not (isinstance(p, list) and len(p) == 3
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
                raise ConfigError(
                    f"{source}: key 'positions[{i}].position_mm' must be 3 finite numbers, got {p!r}"
                )
            p = [check_number(v, f"positions[{i}].position_mm", source, low=-LENGTH_MM, high=LENGTH_MM,
                              unit=" mm") for v in p]
        positions.append(p)
    if len(set(exposures)) != len(exposures):
        raise ConfigError(f"{source}: two positions name the same exposure; each page is one position")
    known = [p is not None for p in positions]
    if any(known) and not all(known):
        raise ConfigError(f"{source}: some positions have 'position_mm' and others not; give all or none")
    bead = data.get("bead_sigma_mm", 0.0)
    photons = data.get("photons")
    if isinstance(bead, bool) or not isinstance(bead, (int, float)):
        raise ConfigError(f"{source}: key 'bead_sigma_mm' must be a number ≥ 0, got {bead!r}")
    check_number(bead, "bead_sigma_mm", source, low=0.0, high=100.0, unit=" mm")
    if photons is not None:
        if isinstance(photons, bool) or not isinstance(photons, (int, float)):
            raise ConfigError(f"{source}: key 'photons' must be a number > 0, got {photons!r}")
        check_number(photons, "photons", source, low=1.0, high=1e20)
    return TargetSpec(
        exposures=tuple(exposures),
        positions_mm=torch.tensor(positions, dtype=torch.float64) if all(known) else None,
        bead_sigma_mm=float(bead),
        photons=None if photons is None else float(photons),
        description=str(data.get("description", "")),
    )


def read_target_spec(directory: str | os.PathLike) -> TargetSpec:
    """Read ``target.toml`` of a target set.

    Raises:
        CalibrationError: the directory has no ``target.toml``.
        ConfigError: the file is not valid.
    """
    path = Path(directory) / "target.toml"
    if not path.is_file():
        raise CalibrationError(
            f"calibrate: {path} does not exist; a target set is a run directory with a "
            "target.toml (make one with `recon simulate --calibration-target points:N`)"
        )
    data = read_toml(path, "target description")
    return parse_target_spec(data, source=str(path))


def target_spec_text(spec: TargetSpec) -> str:
    """``target.toml`` text of a spec."""
    import tomli_w

    rows = []
    for i, e in enumerate(spec.exposures):
        row: dict = {"exposure": int(e)}
        if spec.positions_mm is not None:
            row["position_mm"] = [round(float(v), 9) for v in spec.positions_mm[i]]
        rows.append(row)
    data: dict = {"schema": TARGET_SCHEMA}
    if spec.description:
        data["description"] = spec.description
    data["bead_sigma_mm"] = spec.bead_sigma_mm
    if spec.photons is not None:
        data["photons"] = spec.photons
    data["positions"] = rows
    return tomli_w.dumps(data)


@torch.no_grad()
def simulate_point_exposure(
    system: System,
    point_mm: torch.Tensor,
    regions: list[tuple[int, tuple[int, int, int, int]]],
    *,
    photons: float,
    bead_sigma_mm: float,
    generator: torch.Generator,
    camera: int = 0,
    batch: int = 32768,
) -> list[torch.Tensor]:
    """Photoelectron counts of one exposure of a point source (Monte Carlo, exact Poisson counts).

    For each path the expected number of photoelectrons Λ = photons × ∫ w (w from
    :func:`~optics.project.trace_point_to_sensor`, estimated over random aperture points)
    gives the number of detected photons N ~ Poisson(Λ); N landing points are drawn by
    rejection (accept a random ray with probability w / w_max) from rays leaving random points
    of the Gaussian bead toward random aperture points, and counted in their pixels.

    Args:
        system: the (true) instrument.
        point_mm: (3,) centre of the source, mm.
        regions: (path, roi) of each view to record; roi = (x0, y0, w, h) full-sensor px.
        photons: photons emitted into 4π during the exposure.
        bead_sigma_mm: Gaussian σ of the source, mm.
        generator: random generator.
        camera: camera index.
        batch: rays traced per batch.

    Returns:
        One (h, w) float64 image of photoelectrons per region.
    """
    sys64 = system.to(torch.float64)
    point = point_mm.to(torch.float64)
    out = []

    def draw_rays(path: int):
        # Every ray has its own source point and aperture point (no shared grid, whose few
        # distinct bead points would add their own noise to the centroid).
        src = point + bead_sigma_mm * torch.randn(batch, 3, generator=generator, dtype=torch.float64)
        r = torch.sqrt(torch.rand(batch, 1, generator=generator, dtype=torch.float64))
        phi = 2 * math.pi * torch.rand(batch, 1, generator=generator, dtype=torch.float64)
        ap = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], -1)  # (B, 1, 2)
        s = trace_point_to_sensor(sys64, src, path, ap, camera=camera)
        return s.pixels_uv.reshape(-1, 2), s.weights.reshape(-1)

    for path, roi in regions:
        x0, y0, w, h = roi
        image = torch.zeros(h * w, dtype=torch.float64)
        uv, wt = draw_rays(path)
        expected = photons * float(wt.mean())  # one aperture sample per ray: w is the whole integral
        w_max = float(wt.max()) * 1.001
        n_left = (
            int(torch.poisson(torch.tensor(expected, dtype=torch.float64), generator=generator))
            if expected > 0
            else 0
        )
        while n_left > 0:
            accept = torch.rand(len(wt), generator=generator, dtype=torch.float64) * w_max < wt
            land = uv[accept][:n_left]
            n_left -= len(land)
            col = torch.round(land[:, 0]).long() - x0
            row = torch.round(land[:, 1]).long() - y0
            inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
            image.index_add_(
                0, row[inside] * w + col[inside], torch.ones(int(inside.sum()), dtype=torch.float64)
            )
            if n_left > 0:
                uv, wt = draw_rays(path)
        out.append(image.reshape(h, w))
    return out
