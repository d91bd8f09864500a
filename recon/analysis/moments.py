"""Moments of a density: total (atom number), centroid and widths."""

from __future__ import annotations

import math

import numpy as np

from recon.io.volume import Volume

__all__ = ["FACE_LAYER", "FACE_WARNING_FRACTION", "cloud_metrics", "cloud_moments", "face_fraction",
           "face_warning", "truth_errors"]

# The layer along each face that :func:`face_fraction` counts: this share of the box's extent
# along the face's axis, at least two voxels.
FACE_LAYER = 0.025
# More of the atoms than this in that layer is worth a warning (a cloud inside its box holds
# almost none there).
FACE_WARNING_FRACTION = 0.05


def cloud_moments(density: np.ndarray, origin_mm, voxel_size_mm) -> dict:
    """Total (sum × voxel volume), centroid and widths (standard deviations) of a (Z, Y, X) density."""
    rho = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    total = rho.sum()
    if total <= 0:
        return {"total": 0.0, "centroid_mm": [math.nan] * 3, "width_mm": [math.nan] * 3}
    axes = []
    for axis_len, o, s in zip(rho.shape[::-1], origin_mm, voxel_size_mm, strict=True):
        axes.append(o + s * np.arange(axis_len))
    marg = [rho.sum(axis=(0, 1)), rho.sum(axis=(0, 2)), rho.sum(axis=(1, 2))]  # x, y, z
    centroid = [float((a * m).sum() / total) for a, m in zip(axes, marg, strict=True)]
    width = [
        float(np.sqrt((((a - c) ** 2) * m).sum() / total))
        for a, m, c in zip(axes, marg, centroid, strict=True)
    ]
    return {"total": float(total * np.prod(voxel_size_mm)), "centroid_mm": centroid, "width_mm": width}


def cloud_metrics(volume: Volume) -> dict:
    """Total atom number, centroid and widths of a density volume."""
    m = cloud_moments(volume.data, volume.origin_mm, volume.voxel_size_mm)
    return {"atoms": m["total"], "centroid_mm": m["centroid_mm"], "width_mm": m["width_mm"]}


def truth_errors(fit: dict, truth: dict) -> dict:
    """A fit's atoms, centroid and widths (:func:`cloud_metrics`) against the truth's.

    Returns: ``truth`` (its atoms, centroid, widths), ``atoms_error`` and ``width_error``
    (relative: fit / truth − 1) and ``centroid_error_um`` (fit − truth, µm).
    """
    def rel(a: float, b: float) -> float:
        return a / b - 1 if b else math.nan

    return {"truth": {k: truth[k] for k in ("atoms", "centroid_mm", "width_mm")},
            "atoms_error": rel(fit["atoms"], truth["atoms"]),
            "centroid_error_um": [1e3 * (a - b) for a, b in zip(fit["centroid_mm"], truth["centroid_mm"],
                                                                 strict=True)],
            "width_error": [rel(a, b) for a, b in zip(fit["width_mm"], truth["width_mm"], strict=True)]}


def face_fraction(volume: Volume, layer: float = FACE_LAYER) -> float:
    """The share of the atoms within ``layer`` of the box's extent (≥ 2 voxels) of any of its faces."""
    rho = np.clip(np.asarray(volume.data, dtype=np.float64), 0.0, None)
    total = rho.sum()
    if not total > 0:
        return 0.0
    inner = rho
    for axis in range(3):  # (z, y, x)
        n = rho.shape[axis]
        k = min(max(2, math.ceil(layer * n)), n // 2)
        inner = np.take(inner, np.arange(k, inner.shape[axis] - k), axis=axis)
    return float(1.0 - inner.sum() / total)


def face_warning(fraction: float, layer: float = FACE_LAYER) -> str | None:
    """A warning when the atoms pile up at the box's faces (None when they do not)."""
    if fraction <= FACE_WARNING_FRACTION:
        return None
    return (f"{fraction:.0%} of the atoms lie next to the box's faces (in its outer {layer:.1%} along an "
            "axis): the box may be too small for the cloud, or the views disagree (unequal cameras: see "
            "camera_sensitivity)")
