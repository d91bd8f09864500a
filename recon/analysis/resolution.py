"""The resolution of a reconstruction: FSC against a known truth, or between two independent half maps.

A truth on another grid is resampled onto the reconstruction's (:func:`recon.analysis.grids.resample_like`,
voxel-averaged when coarser), so the comparison is made on the reconstruction's grid as it is
(any box shape, shells in physical frequency: :mod:`recon.analysis.spectra`). Two half maps must
already share a grid. :func:`compare_volumes` computes the curve,
every standard threshold's crossing and the directional figures; :func:`fsc_report` is its
``fsc.json`` dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon.analysis.directional import DirectionalFSC, check_directional_options, directional_from_spectra
from recon.analysis.fsc import (
    GRID_TOL_MM,
    THRESHOLDS,
    Crossing,
    FSCCurve,
    fsc_with_spectra,
    resolution_at,
    soft_sphere_mask,
    threshold_name,
)
from recon.analysis.grids import resample_like
from recon.analysis.spectra import as_map, check_pair, fourier_grid, prepare_mask, voxel_edges
from recon.errors import ConfigError, DataError, ShapeError
from recon.io.volume import Volume, read_volume

__all__ = [
    "COMPARISONS",
    "FSCResult",
    "compare_halves",
    "compare_volumes",
    "compare_with_truth",
    "fsc_report",
    "load_truth",
    "volume_file",
]


#: Sub-directory of a fit output → (title, threshold).
COMPARISONS = {
    "fsc-truth": ("against the truth", "0.5"),
    "fsc-halves": ("between the split halves", "0.143"),
}


def compare_with_truth(volume: Volume, truth: Volume | str | Path, *, mask: str | None = None) -> FSCResult:
    """FSC of a reconstruction against the truth (threshold 0.5).

    Args:
        volume: the reconstruction (any box-shaped grid).
        truth: the true density, or the path of its TIFF; resampled onto ``volume``'s grid.
        mask: ``None`` or ``"sphere"`` (see :func:`compare_volumes`).
    """
    return compare_volumes(volume, resample_like(load_truth(truth), volume), threshold="0.5", mask=mask,
                           labels=("reconstruction", "truth"))


def load_truth(truth: Volume | str | Path, *, where: str = "fsc") -> Volume:
    """The true density (read from its TIFF if a path), refused if its grid is too coarse to compare with.

    Raises:
        DataError: no such file, or not a volume.
        ShapeError: fewer than 4 voxels along an edge (resampled onto a fit's grid, it would fill
            it with a few values and still give a resolution).
    """
    name = "the truth"
    if not isinstance(truth, Volume):
        name = f"the truth {truth}"
        truth = read_volume(volume_file(Path(truth)))
    if min(truth.shape) < 4:
        raise ShapeError(f"{where}: {name} has a grid of {truth.shape} voxels (z, y, x), too coarse to "
                         "compare with; use a truth of ≥ 4 voxels per edge")
    return truth


def compare_halves(half1: Volume, half2: Volume, *, mask: str | None = None) -> FSCResult:
    """FSC of two independent half maps (threshold 0.143); they must share a grid."""
    return compare_volumes(half1, half2, threshold="0.143", mask=mask, labels=("half 1", "half 2"))


def volume_file(path: Path) -> Path:
    """``path`` if it is a file; else the one-line error of ``recon fsc``."""
    if not path.is_file():
        raise DataError(f"fsc: {path} does not exist; pass a volume TIFF (density.tif, truth.tif) "
                        "or a fit directory")
    return path


_FORMAT = "recon.fsc/1"


@dataclass(frozen=True, eq=False)
class FSCResult:
    """Everything :func:`compare_volumes` found, ready for :func:`write_fsc_outputs`.

    Attributes:
        curve: the (mask-corrected) FSC curve.
        threshold: canonical name of the threshold asked for.
        crossing: the crossing at ``threshold``.
        crossings: crossings at every threshold in :data:`THRESHOLDS` (and ``threshold``).
        directional: cone FSC at ``threshold``, or ``None``.
        shape: grid ``(Z, Y, X)``.
        origin_mm: ``(x, y, z)`` centre of voxel ``(0, 0, 0)``, mm.
        voxel_size_mm: voxel edges ``(Δx, Δy, Δz)``, mm.
        mask: how the maps were masked: ``"none"``, ``"sphere"`` or ``"array"``.
        labels: names of the two maps (e.g. file names), for the report.
    """

    curve: FSCCurve
    threshold: str
    crossing: Crossing
    crossings: dict[str, Crossing]
    directional: DirectionalFSC | None
    shape: tuple[int, int, int]
    origin_mm: tuple[float, float, float]
    voxel_size_mm: tuple[float, float, float]
    mask: str = "none"
    labels: tuple[str, str] = ("a", "b")


def _check_grids(a: Volume, b: Volume, where: str) -> None:
    def fmt(v: Volume) -> str:
        return (f"shape {v.shape} (z, y, x), voxel {tuple(round(s, 9) for s in v.voxel_size_mm)} mm, "
                f"origin {tuple(round(o, 9) for o in v.origin_mm)} mm")

    same = (a.shape == b.shape
            and np.allclose(a.voxel_size_mm, b.voxel_size_mm, rtol=0, atol=GRID_TOL_MM)
            and np.allclose(a.origin_mm, b.origin_mm, rtol=0, atol=GRID_TOL_MM))
    if not same:
        raise ShapeError(
            f"{where}: the volumes are on different grids: A has {fmt(a)}, B has {fmt(b)}; "
            "resample one onto the other (recon.analysis.grids.resample_like) before comparing"
        )


def compare_volumes(
    a: Volume,
    b: Volume,
    *,
    threshold: str | float,
    mask: str | np.ndarray | Volume | None = None,
    directional: bool = True,
    correct_mask: bool = True,
    n_directions: int = 200,
    cone_half_angle_deg: float = 20.0,
    min_cone_voxels: int = 20,
    seed: int = 0,
    labels: tuple[str, str] = ("a", "b"),
) -> FSCResult:
    """The FSC of two volumes on the same grid, its crossings and its anisotropy.

    Args:
        a: first volume (e.g. half map 1, or the reconstruction).
        b: second volume on the same grid (half map 2, or the truth resampled with
            :func:`resample_like`).
        threshold: the threshold to report: ``"0.143"`` for independent half maps, ``"0.5"``
            against a truth, ``"half-bit"``, ``"one-bit"`` or a number in (0, 1). The
            crossings at all four standard thresholds are computed as well.
        mask: ``None``; ``"sphere"`` — a soft sphere filling the grid's shortest edge N (edge
            ``max(2, N/16)`` voxels, radius ``N/2 − edge − 1``); or a (Z, Y, X) array or
            Volume in [0, 1]. Applied to both volumes.
        directional: also compute the cone FSC (:func:`directional_fsc`).
        correct_mask: phase-randomisation correction of a mask (see :func:`fsc_curve`).
        n_directions: Fibonacci directions for the cone FSC besides x, y, z.
        cone_half_angle_deg: cone half-angle, degrees.
        min_cone_voxels: cone shells with fewer voxels are not used for the cone crossings.
        seed: seed of the random phases.
        labels: (2,) names of the volumes for the report.

    Returns:
        The result; write it with :func:`write_fsc_outputs`.

    Raises:
        ShapeError: the grids differ (shape, voxel size or origin by more than 1e-6 mm), or an
            edge has fewer than 4 voxels.
        DataError: a volume holds NaN or inf.
        ConfigError: an unknown threshold or mask name, or bad directional options.
    """
    where = "compare_volumes"
    name = threshold_name(threshold, where=where)
    if directional:
        check_directional_options(n_directions, cone_half_angle_deg, where)
    _check_grids(a, b, where)
    data_a = as_map(a.data, "A", where)
    data_b = as_map(b.data, "B", where)
    shape = check_pair(data_a, data_b, where)
    voxel = voxel_edges(a.voxel_size_mm, where)
    if isinstance(mask, str):
        if mask.strip().lower() != "sphere":
            raise ConfigError(f"{where}: mask must be None, 'sphere' or an array, got {mask!r}")
        n = min(shape)  # a sphere (in voxels) inside the shortest edge
        edge = max(2.0, n / 16.0)
        m = soft_sphere_mask(data_a.shape, max(1.0, n / 2.0 - edge - 1.0), edge)
        mask_kind = "sphere"
    else:
        m = prepare_mask(mask, data_a.shape, where)
        mask_kind = "none" if m is None else "array"
    geo = fourier_grid(shape, voxel)
    curve, spectra = fsc_with_spectra(data_a, data_b, voxel, m, correct_mask=correct_mask,
                                      randomize_below=0.8, seed=seed, geo=geo)
    crossings = {t: resolution_at(curve, t) for t in (*THRESHOLDS, name)}
    cones = (directional_from_spectra(spectra, geo, voxel, name, n_directions, cone_half_angle_deg,
                                      min_cone_voxels) if directional else None)
    return FSCResult(
        curve=curve,
        threshold=name,
        crossing=crossings[name],
        crossings=crossings,
        directional=cones,
        shape=tuple(data_a.shape),
        origin_mm=tuple(float(o) for o in a.origin_mm),
        voxel_size_mm=voxel,
        mask=mask_kind,
        labels=(str(labels[0]), str(labels[1])),
    )


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _crossing_dict(c: Crossing) -> dict:
    return {
        "shell": c.shell,
        "resolution_um": _finite(c.resolution_um),
        "interpolated_resolution_um": _finite(c.interpolated_resolution_um),
        "frequency_per_mm": c.frequency_per_mm,
        "reached_nyquist": c.reached_nyquist,
    }


def fsc_report(result: FSCResult) -> dict:
    """The JSON summary of a comparison (what ``fsc.json`` holds); infinities become ``None``.

    Args:
        result: from :func:`compare_volumes`.

    Returns:
        A JSON-serialisable dict: ``format``, ``maps``, ``threshold``, ``resolution_um`` and
        ``resolution_interpolated_um`` at that threshold, ``reached_nyquist``, ``nyquist_um``,
        ``resolutions`` (every threshold), ``grid``, ``mask`` and ``directional``.
    """
    curve, c = result.curve, result.crossing
    mask: dict[str, Any] = {"kind": result.mask}
    if curve.fsc_masked is not None:
        mask["phase_randomization"] = {
            "applied": curve.fsc_randomized is not None,
            "from_shell": curve.randomize_from_shell,
            "fsc_unmasked": curve.fsc_unmasked.tolist(),
            "fsc_masked": curve.fsc_masked.tolist(),
            "fsc_randomized": (None if curve.fsc_randomized is None
                               else curve.fsc_randomized.tolist()),
        }
    directional = None
    if result.directional is not None:
        d = result.directional
        directional = {
            "threshold": d.threshold,
            "cone_half_angle_deg": d.cone_half_angle_deg,
            "min_cone_voxels": d.min_cone_voxels,
            "n_directions": int(len(d.directions)),
            "resolution_x_um": _finite(d.resolution_x_um),
            "resolution_y_um": _finite(d.resolution_y_um),
            "resolution_z_um": _finite(d.resolution_z_um),
            "interpolated_resolution_xyz_um": [_finite(v) for v in d.interpolated_resolution_um[:3]],
            "best_resolution_um": _finite(d.best_resolution_um),
            "worst_resolution_um": _finite(d.worst_resolution_um),
            "best_direction_xyz": [round(float(v), 4) for v in d.best_direction],
            "worst_direction_xyz": [round(float(v), 4) for v in d.worst_direction],
            "anisotropy_ratio": d.anisotropy_ratio,
            "sphericity": d.sphericity,
            "sphericity_definition": (
                "Wadell sphericity pi^(1/3)(6V)^(2/3)/A of the polyhedron with vertices at each "
                "cone's interpolated crossing frequency, divided by that of equal radii"),
            "anisotropy_ratio_definition": "finest / coarsest interpolated cone resolution",
        }
    return {
        "format": _FORMAT,
        "maps": {"a": result.labels[0], "b": result.labels[1]},
        "threshold": result.threshold,
        "resolution_um": _finite(c.resolution_um),
        "resolution_interpolated_um": _finite(c.interpolated_resolution_um),
        "reached_nyquist": c.reached_nyquist,
        "crossing_shell": c.shell,
        "nyquist_um": curve.nyquist_um,
        "resolutions": {name: _crossing_dict(x) for name, x in result.crossings.items()},
        "grid": {
            "shape_zyx": list(result.shape),
            "voxel_size_mm": list(result.voxel_size_mm),
            "origin_mm": list(result.origin_mm),
            "box_mm": curve.box_mm,
            "shells": int(len(curve.shell)),
        },
        "mask": mask,
        "directional": directional,
    }
