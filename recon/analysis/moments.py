"""Moments of a density: total (atom number), centroid and widths.

**Windowed moments.** The centroid and widths are the first and second moments of the density
within ±:data:`WINDOW_WIDTHS` widths of the centroid along each axis, iterated to a fixed point
(from the moments of the whole box); the total counts the whole box. A Gaussian cloud loses 2e-6
of its mass and 1e-5 of its widths to such a window; a faint haze far from the
cloud (a fit's start floor that the data, below their read noise, cannot remove; stray light)
would weigh in the second moments by its distance squared, and does not. In a box that the window
covers (data/run042's ±1.19 mm around a σ ≈ 0.4 mm cloud), the moments are those of the whole box.
"""

from __future__ import annotations

import math

import numpy as np

from recon.io.volume import Volume

__all__ = ["FACE_LAYER", "FACE_WARNING_FRACTION", "WINDOW_WIDTHS", "cloud_metrics", "cloud_moments",
           "face_fraction", "face_warning", "truth_errors"]

# The layer along each face that :func:`face_fraction` counts: this share of the box's extent
# along the face's axis, at least two voxels.
FACE_LAYER = 0.025
# More of the atoms than this in that layer is worth a warning (a cloud inside its box holds
# almost none there).
FACE_WARNING_FRACTION = 0.05
# The moments' window: this many widths either side of the centroid along each axis.
WINDOW_WIDTHS = 5.0


def cloud_moments(density: np.ndarray, origin_mm, voxel_size_mm,
                  window: float | None = WINDOW_WIDTHS) -> dict:
    """Total (sum × voxel volume), centroid and widths (standard deviations) of a (Z, Y, X) density.

    The centroid and widths within ±``window`` widths of the centroid along each axis, iterated
    until the window's voxels no longer change (module docstring); ``window=None``: of the whole
    grid. Negative values count as 0. Also ``window_share``: the share of the total within the
    final window (1 without one).
    """
    rho = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    total = rho.sum()
    if total <= 0:
        return {"total": 0.0, "centroid_mm": [math.nan] * 3, "width_mm": [math.nan] * 3, "window_share": 1.0}
    axes = [o + s * np.arange(n) for n, o, s in zip(rho.shape[::-1], origin_mm, voxel_size_mm, strict=True)]
    marginals = [rho.sum(axis=(0, 1)), rho.sum(axis=(0, 2)), rho.sum(axis=(1, 2))]  # x, y, z
    centroid, width = _moments(axes, marginals)
    share, ranges = 1.0, [(0, len(a)) for a in axes]
    for _ in range(100 if window is not None else 0):  # a fixed point within a few in practice
        new = [(int(np.searchsorted(a, c - window * w, side="left")),
                int(np.searchsorted(a, c + window * w, side="right")))
               for a, c, w in zip(axes, centroid, width, strict=True)]
        if new == ranges:
            break
        ranges = new
        (x0, x1), (y0, y1), (z0, z1) = ranges
        inside = rho[z0:z1, y0:y1, x0:x1]
        if not inside.sum() > 0:  # a window holding nothing (a width of 0 between voxels): stop
            break
        share = float(inside.sum() / total)
        marginals = [inside.sum(axis=(0, 1)), inside.sum(axis=(0, 2)), inside.sum(axis=(1, 2))]
        centroid, width = _moments([a[lo:hi] for a, (lo, hi) in zip(axes, ranges, strict=True)], marginals)
    return {"total": float(total * np.prod(voxel_size_mm)), "centroid_mm": centroid, "width_mm": width,
            "window_share": share}


def _moments(axes, marginals) -> tuple[list[float], list[float]]:
    """Centroid and standard deviation along each axis of the marginals (x, y, z) at positions ``axes``."""
    centroid = [float((a * m).sum() / m.sum()) for a, m in zip(axes, marginals, strict=True)]
    width = [float(np.sqrt((((a - c) ** 2) * m).sum() / m.sum()))
             for a, m, c in zip(axes, marginals, centroid, strict=True)]
    return centroid, width


def cloud_metrics(volume: Volume) -> dict:
    """Total atom number, centroid and widths of a density volume (:func:`cloud_moments`).

    Also ``atoms_outside_window``: the share of the atoms outside the moments' window (a haze).
    """
    m = cloud_moments(volume.data, volume.origin_mm, volume.voxel_size_mm)
    return {"atoms": m["total"], "centroid_mm": m["centroid_mm"], "width_mm": m["width_mm"],
            "atoms_outside_window": round(1.0 - m["window_share"], 6)}


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
