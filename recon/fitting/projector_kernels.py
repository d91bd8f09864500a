"""Compiled (numba) kernels of the ray-pool projector: trilinear line integrals and their transpose.

The interpolation weights are computed on the fly, segment by segment, as
:func:`recon.model.render.render_pixels` samples a :class:`~recon.model.fields.voxel.VoxelField`
with ``jitter=False``: ``n = ceil(length / step)`` equal strata per segment (computed once, by
torch, in the rays' dtype: numba divides float32 by float32 in float64, and a segment 3.0 mm long
then gets 101 strata of 0.03 mm where torch's float32 gives it 100), one sample at each stratum's
midpoint, samples outside the box skipped, ``grid_sample``'s trilinear weights with
``align_corners=False`` and ``padding_mode="border"``.

The kernels work on the grid **padded by one voxel on every side** with copies of its border
(:func:`pad`): border padding is then plain trilinear interpolation of the padded grid, with no
clamping per sample, and the adjoint's pad layers are folded back onto the border
(:func:`fold`, compiled too: one pass that sums the blocks, folds and scales). A segment's
samples inside the box form one run ``k0 ≤ k < k1`` (the box is convex), found once per segment
(:func:`_inside_run`), so the loop over samples has no test. The samples are stepped in padded
index space (one multiply-add per axis and sample) in float64: torch's float32 positions
``o + t d``, hundreds of mm from the segment's origin, carry errors of 1e-4 voxel that these do
not. The interpolation weights are in the grid's dtype (float32 for a fit: a float64 weight
would turn every read and every scattered addition into a conversion);
sums over a segment in the grid's dtype, over a pixel's segments in float64.

``forward`` runs one pixel per loop iteration (no two iterations write the same output);
``adjoint`` gives each block of pixels (one per thread) a private padded grid in the rays' dtype,
as torch's autograd accumulates a float32 grid's gradient in float32 (a float64 grid holds twice
the cache lines the scattered additions touch), and :func:`fold` sums the blocks in float64.
Neither needs atomics; a given number of threads always gives the same result.

The kernels are compiled on first use (a few seconds, cached on disk by numba when its cache
directory is writable).
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = ["adjoint_kernel", "fold", "forward_kernel", "pad"]

_TINY = 1e-12  # index-space steps below this are taken as parallel to the box's faces


def pad(grid: np.ndarray) -> np.ndarray:
    """(Z+2, Y+2, X+2) the grid with a copy of its border on every side (``grid_sample``'s border padding)."""
    return np.pad(grid, 1, mode="edge")


@nb.njit(cache=True)
def fold(partial: np.ndarray, scale: float, out: np.ndarray) -> None:
    """The transpose of :func:`pad` of each block, summed over the blocks and scaled, into ``out``.

    Each pad layer of every block's padded grid is added onto the border it copies, in float64,
    one output voxel at a time (a single pass over ``partial``).

    Args:
        partial: (B, Z+2, Y+2, X+2) padded grids.
        scale: the factor applied to the sums.
        out: (Z, Y, X) the result (any float dtype; written, not added to).
    """
    blocks, pz, py, px = partial.shape
    nz, ny, nx = pz - 2, py - 2, px - 2
    for z in range(nz):  # the padded indices that fold onto z: z + 1, and the pad layer at a face
        z0, z1 = (0 if z == 0 else z + 1), (z + 2 if z < nz - 1 else pz)
        for y in range(ny):
            y0, y1 = (0 if y == 0 else y + 1), (y + 2 if y < ny - 1 else py)
            for x in range(nx):
                x0, x1 = (0 if x == 0 else x + 1), (x + 2 if x < nx - 1 else px)
                acc = 0.0
                for b in range(blocks):
                    for i in range(z0, z1):
                        for j in range(y0, y1):
                            for k in range(x0, x1):
                                acc += partial[b, i, j, k]
                out[z, y, x] = acc * scale


@nb.njit(inline="always", cache=True)
def _segment(r, lo, extent, nx, ny, nz, origins, directions, t_near, deltas):
    """A segment's first sample and step in padded index space: (c0 (x, y, z), dc (x, y, z)).

    Sample k lies at ``c0 + k · dc``; padded index ``i`` is the centre of voxel ``i − 1``
    (``grid_sample`` with ``align_corners=False``: ``c = u · n − 0.5`` for the box position u,
    plus one for the pad).
    """
    d = float(deltas[r])
    t0 = float(t_near[r]) + 0.5 * d
    sx, sy, sz = nx / float(extent[0]), ny / float(extent[1]), nz / float(extent[2])
    cx = (origins[r, 0] + t0 * directions[r, 0] - lo[0]) * sx + 0.5
    cy = (origins[r, 1] + t0 * directions[r, 1] - lo[1]) * sy + 0.5
    cz = (origins[r, 2] + t0 * directions[r, 2] - lo[2]) * sz + 0.5
    return cx, cy, cz, d * directions[r, 0] * sx, d * directions[r, 1] * sy, d * directions[r, 2] * sz


@nb.njit(inline="always", cache=True)
def _inside(x, y, z, nx, ny, nz):
    """Padded index-space (x, y, z) lies in the box (what the renderer samples)."""
    return 0.5 <= x <= nx + 0.5 and 0.5 <= y <= ny + 0.5 and 0.5 <= z <= nz + 0.5


@nb.njit(inline="always", cache=True)
def _inside_run(cx, cy, cz, dx, dy, dz, n, nx, ny, nz):
    """(k0, k1): the samples ``k0 ≤ k < k1`` of ``n`` that :func:`_inside` accepts (k0 = k1 if none).

    A line meets the box in one interval: its ends from the slabs, widened by one sample against
    rounding and then narrowed by the exact test, so the run is what testing every sample gives.
    """
    lo_k, hi_k = 0.0, float(n)
    for c, dc, m in ((cx, dx, nx), (cy, dy, ny), (cz, dz, nz)):
        a, b = 0.5 - c, m + 0.5 - c  # inside along this axis: a ≤ k·dc ≤ b
        if dc > _TINY:
            lo_k, hi_k = max(lo_k, a / dc), min(hi_k, b / dc + 1.0)
        elif dc < -_TINY:
            lo_k, hi_k = max(lo_k, b / dc), min(hi_k, a / dc + 1.0)
    if lo_k > hi_k:
        return 0, 0
    k0, k1 = max(0, int(lo_k) - 1), min(n, int(hi_k) + 1)
    while k0 < k1 and not _inside(cx + k0 * dx, cy + k0 * dy, cz + k0 * dz, nx, ny, nz):
        k0 += 1
    while k1 > k0 and not _inside(cx + (k1 - 1) * dx, cy + (k1 - 1) * dy, cz + (k1 - 1) * dz, nx, ny, nz):
        k1 -= 1
    return k0, k1


@nb.njit(parallel=True, fastmath=True, cache=True)
def forward_kernel(padded, lo, extent, origins, directions, weights, t_near, strata, deltas, first, last,
                   out):
    """``out[p] = Σ_{r ∈ [first[p], last[p])} weights[r] · Σ_k δ_r · trilinear(grid, o_r + t_k d_r)``.

    Args:
        padded: (Z+2, Y+2, X+2) the voxel values, :func:`pad`-ded.
        lo: (3,) the box's lower corner (x, y, z), mm.
        extent: (3,) the box's extent, mm.
        origins: (R, 3) segment origins, mm.
        directions: (R, 3) unit directions.
        weights: (R,) segment weights.
        t_near: (R,) entry, mm.
        strata: (R,) strata of each segment, ``ceil(length / step)`` (at least 1).
        deltas: (R,) their length ``length / strata``, mm (in the rays' dtype, as every array above).
        first: (P,) first segment of each output pixel.
        last: (P,) one past its last segment.
        out: (P,) float64 output.
    """
    pz, py, px = padded.shape
    nz, ny, nx = pz - 2, py - 2, px - 2
    flat = padded.reshape(-1)
    real = flat.dtype.type
    sy, sz = px, px * py
    for p in nb.prange(first.shape[0]):
        acc = 0.0
        for r in range(first[p], last[p]):
            cx, cy, cz, dx, dy, dz = _segment(r, lo, extent, nx, ny, nz, origins, directions, t_near, deltas)
            k0, k1 = _inside_run(cx, cy, cz, dx, dy, dz, strata[r], nx, ny, nz)
            seg = real(0.0)
            for k in range(k0, k1):
                x, y, z = cx + k * dx, cy + k * dy, cz + k * dz
                ix, iy, iz = int(x), int(y), int(z)
                fx, fy, fz = real(x - ix), real(y - iy), real(z - iz)
                i = (iz * py + iy) * px + ix
                j = i + sz
                v00 = flat[i] + fz * (flat[j] - flat[i])
                v10 = flat[i + 1] + fz * (flat[j + 1] - flat[i + 1])
                v01 = flat[i + sy] + fz * (flat[j + sy] - flat[i + sy])
                v11 = flat[i + sy + 1] + fz * (flat[j + sy + 1] - flat[i + sy + 1])
                v0 = v00 + fy * (v01 - v00)
                seg += v0 + fx * (v10 + fy * (v11 - v10) - v0)
            acc += (weights[r] * deltas[r]) * float(seg)  # the same product as in the adjoint
        out[p] = acc


@nb.njit(inline="always", cache=True)
def _splat(out, i, sy, w, fx, fy, one):
    """Add ``w`` to the four voxels of one z plane around flat index ``i`` with bilinear weights."""
    a = w * (one - fy)
    out[i] += a * (one - fx)
    out[i + 1] += a * fx
    a = w * fy
    out[i + sy] += a * (one - fx)
    out[i + sy + 1] += a * fx


@nb.njit(parallel=True, fastmath=True, cache=True)
def adjoint_kernel(values, lo, extent, origins, directions, weights, t_near, strata, deltas, first, last,
                   partial):
    """The transpose of :func:`forward_kernel`: ``partial[b] += Aᵀ values`` over block b's pixels.

    ``partial``: (B, Z+2, Y+2, X+2) zeros in the rays' dtype, one padded grid per block of pixels
    (B blocks run in parallel; :func:`fold` sums them and folds the pads).
    """
    blocks, pz, py, px = partial.shape
    nz, ny, nx = pz - 2, py - 2, px - 2
    real = partial.dtype.type
    one = real(1.0)
    sy, sz = px, px * py
    n_pixels = first.shape[0]
    for b in nb.prange(blocks):
        out = partial[b].reshape(-1)
        for p in range(b * n_pixels // blocks, (b + 1) * n_pixels // blocks):
            v = values[p]
            if v == 0.0:
                continue
            for r in range(first[p], last[p]):
                cx, cy, cz, dx, dy, dz = _segment(r, lo, extent, nx, ny, nz, origins, directions, t_near,
                                                  deltas)
                k0, k1 = _inside_run(cx, cy, cz, dx, dy, dz, strata[r], nx, ny, nz)
                c = real(v * (weights[r] * deltas[r]))
                for k in range(k0, k1):
                    x, y, z = cx + k * dx, cy + k * dy, cz + k * dz
                    ix, iy, iz = int(x), int(y), int(z)
                    fx, fy, fz = real(x - ix), real(y - iy), real(z - iz)
                    i = (iz * py + iy) * px + ix
                    _splat(out, i, sy, c * (one - fz), fx, fy, one)  # the lower z plane
                    _splat(out, i + sz, sy, c * fz, fx, fy, one)  # the upper one
