"""The truth volume of a simulated run: a phantom sampled (voxel-averaged) on a grid that tiles the box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recon.errors import ConfigError
from recon.io.volume import Volume
from recon.simulation.phantoms import Phantom

__all__ = ["truth_volume"]


@torch.no_grad()
def truth_volume(
    phantom: Phantom,
    box_min: Sequence[float],
    box_max: Sequence[float],
    voxel_size_mm: float,
    *,
    supersample: int = 2,
    dtype: torch.dtype = torch.float64,
    chunk_points: int = 1 << 21,
) -> Volume:
    """The phantom's voxel averages on a grid tiling the box.

    The grid has ``floor((max − min)/voxel)`` voxels per axis, centred in the box; each voxel
    value is the mean of ``supersample³`` samples at the centres of its sub-cells (the midpoint
    rule for the voxel average), so ``Σ values · voxel³`` is the atom number inside the grid.

    Args:
        phantom: the phantom.
        box_min: (3,) ``(x, y, z)`` lower corner, mm.
        box_max: (3,) upper corner, mm.
        voxel_size_mm: voxel edge, mm.
        supersample: samples per voxel edge (≥ 1).
        dtype: evaluation dtype (the volume is float32).
        chunk_points: points evaluated at once (bounds memory).

    Returns:
        A float32 Volume in atoms/mm³ (``relative`` for emission–absorption phantoms), with
        ``meta`` holding the phantom name, ``atoms_total`` and ``atoms_in_grid``.

    Raises:
        ConfigError: an empty box, a non-positive voxel size or ``supersample`` < 1.

    Not differentiable (evaluated under ``torch.no_grad``).
    """
    lo, hi = np.asarray(box_min, dtype=float).reshape(3), np.asarray(box_max, dtype=float).reshape(3)
    if not (voxel_size_mm > 0 and np.all(hi > lo) and supersample >= 1):
        raise ConfigError(
            f"truth_volume: need box_max > box_min, voxel_size_mm > 0 and supersample ≥ 1, got "
            f"{lo.tolist()}, {hi.tolist()}, {voxel_size_mm}, {supersample}"
        )
    n = np.maximum(np.floor((hi - lo) / voxel_size_mm + 1e-9).astype(int), 1)  # x, y, z
    origin = (lo + hi) / 2 - (n - 1) / 2 * voxel_size_mm
    sub = ((torch.arange(supersample, dtype=dtype) + 0.5) / supersample - 0.5) * voxel_size_mm
    offsets = torch.stack(torch.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3)  # (S, 3)
    axes = [torch.as_tensor(origin[i] + voxel_size_mm * np.arange(n[i]), dtype=dtype) for i in range(3)]
    out = np.zeros(tuple(n[::-1]), dtype=np.float64)
    slab = max(1, chunk_points // max(1, int(n[0] * n[1]) * len(offsets)))
    y, x = torch.meshgrid(axes[1], axes[0], indexing="ij")
    for k0 in range(0, int(n[2]), slab):
        z = axes[2][k0 : k0 + slab]
        pts = torch.stack(
            [x.expand(len(z), -1, -1), y.expand(len(z), -1, -1), z[:, None, None].expand(-1, *x.shape)], -1
        )  # (slab, Y, X, 3)
        vals = phantom.density(pts.unsqueeze(-2) + offsets)  # (slab, Y, X, S)
        out[k0 : k0 + len(z)] = vals.mean(-1).cpu().numpy()
    unit = "atoms/mm^3" if phantom.model == "emission" else "relative"
    meta = {
        "phantom": phantom.name,
        "atoms_total": float(phantom.total_atoms),
        "atoms_in_grid": float(out.sum() * voxel_size_mm**3),
        "supersample": int(supersample),
    }
    origin_mm = tuple(float(v) for v in origin)
    return Volume(out.astype(np.float32), origin_mm, (float(voxel_size_mm),) * 3, unit, meta)
