"""Moments of a density: total (atom number), centroid and widths."""

from __future__ import annotations

import math

import numpy as np

from recon.io.volume import Volume

__all__ = ["cloud_metrics", "cloud_moments"]


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
