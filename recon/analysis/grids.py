"""Bringing volumes onto a common grid for comparison: resampling."""

from __future__ import annotations

import numpy as np

from recon.io.volume import Volume, grid_points, interpolate

__all__ = ["resample_like"]


def resample_like(volume: Volume, like: Volume) -> Volume:
    """``volume`` resampled onto the grid of ``like`` (trilinear; zero outside ``volume``).

    When ``like`` has coarser voxels, ``volume`` is first smoothed along each axis by a Gaussian
    of variance ``(ratio² − 1)/12`` source voxels (what turns an average over one source voxel
    into an average over one target voxel), so the result approximates voxel averages and
    does not alias. Typical use: bring a simulation's ``truth.tif`` onto a reconstruction's
    grid before :func:`compare_volumes`.

    Args:
        volume: the volume to resample.
        like: the volume whose grid (shape, origin, voxel size) to use.

    Returns:
        A float32 Volume on ``like``'s grid, with ``volume``'s unit and meta.
    """
    import torch
    from scipy.ndimage import gaussian_filter


    ratio_zyx = np.asarray(like.voxel_size_mm[::-1], dtype=np.float64) / np.asarray(
        volume.voxel_size_mm[::-1], dtype=np.float64)
    sigma = np.sqrt(np.maximum(ratio_zyx**2 - 1.0, 0.0) / 12.0)
    data = np.asarray(volume.data, dtype=np.float64)
    if np.any(sigma > 0):
        data = gaussian_filter(data, sigma, mode="constant")
    src = Volume(data=data, origin_mm=volume.origin_mm, voxel_size_mm=volume.voxel_size_mm)
    pts = grid_points(like.shape, like.origin_mm, like.voxel_size_mm, dtype=torch.float64)
    out = interpolate(src, pts).numpy().astype(np.float32)
    return Volume(data=out, origin_mm=tuple(like.origin_mm), voxel_size_mm=tuple(like.voxel_size_mm),
                  unit=volume.unit, meta=dict(volume.meta))
