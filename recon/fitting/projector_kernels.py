"""Compiled (numba) kernels of the ray-pool projector: trilinear line integrals and their transpose.

The interpolation weights are computed on the fly, segment by segment, as
:func:`recon.model.render.render_pixels` samples a :class:`~recon.model.fields.voxel.VoxelField`
with ``jitter=False``: ``n = ceil(length / step)`` equal strata per segment (computed once, by
torch, in the rays' dtype: numba divides float32 by float32 in float64, and a segment 3.0 mm long
then gets 101 strata of 0.03 mm where torch's float32 gives it 100), one sample at each stratum's
midpoint, samples outside the
box skipped, ``grid_sample``'s trilinear weights with ``align_corners=False`` and
``padding_mode="border"``. The samples of a segment are stepped in grid index space (one
multiply-add per axis and sample) in float64: torch's float32 positions ``o + t d``, hundreds of
mm from the segment's origin, carry errors of 1e-4 voxel that these do not. Sums are
accumulated in float64.

``forward`` runs one pixel per loop iteration (no two iterations write the same output) and sums
in float64; ``adjoint`` gives each block of pixels (one per thread) a private grid in the rays'
dtype, as torch's autograd accumulates a float32 grid's gradient in float32 (a float64 grid
holds twice the cache lines the scattered additions touch), and the caller sums the blocks in
float64. Neither needs atomics; a given number of threads always gives the same result.

The kernels are compiled on first use (a few seconds, cached on disk by numba when its cache
directory is writable).
"""

from __future__ import annotations

import numba as nb

__all__ = ["adjoint_kernel", "forward_kernel"]


@nb.njit(inline="always", cache=True)
def _segment(r, lo, extent, nx, ny, nz, origins, directions, t_near, strata, deltas):
    """A segment's strata in grid index space: (n, δ, c0 (x, y, z), dc (x, y, z)).

    ``n`` strata of length δ (given: :class:`~recon.fitting.projector.Projector` computes them as
    the torch renderer does); sample k lies at index-space position ``c0 + k · dc``, where index
    ``i`` is the centre of voxel i (``grid_sample`` with ``align_corners=False``: ``c = u · n − 0.5``
    for the box position u).
    """
    n = strata[r]
    delta = deltas[r]
    d = float(delta)
    t0 = float(t_near[r]) + 0.5 * d
    sx, sy, sz = nx / float(extent[0]), ny / float(extent[1]), nz / float(extent[2])
    cx = (origins[r, 0] + t0 * directions[r, 0] - lo[0]) * sx - 0.5
    cy = (origins[r, 1] + t0 * directions[r, 1] - lo[1]) * sy - 0.5
    cz = (origins[r, 2] + t0 * directions[r, 2] - lo[2]) * sz - 0.5
    dx, dy, dz = d * directions[r, 0] * sx, d * directions[r, 1] * sy, d * directions[r, 2] * sz
    return n, delta, cx, cy, cz, dx, dy, dz


@nb.njit(inline="always", cache=True)
def _axis(c, n):
    """``grid_sample``'s border padding along one axis: (i0, f) for index-space position c.

    The value is ``(1 − f) v[i0] + f v[i0 + 1]`` (``i0 ≤ n − 2``; for n = 1 the caller's stride
    of the next voxel is 0).
    """
    c = min(max(c, 0.0), n - 1.0)
    i0 = min(int(c), max(n - 2, 0))
    return i0, c - i0


@nb.njit(inline="always", cache=True)
def _cell(x, y, z, nx, ny, nz):
    """The sample at index-space (x, y, z): (inside the box, flat index of its lower corner, fx, fy, fz)."""
    if not (-0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5 and -0.5 <= z <= nz - 0.5):
        return False, 0, 0.0, 0.0, 0.0
    x0, fx = _axis(x, nx)
    y0, fy = _axis(y, ny)
    z0, fz = _axis(z, nz)
    return True, (z0 * ny + y0) * nx + x0, fx, fy, fz


@nb.njit(parallel=True, fastmath=True, cache=True)
def forward_kernel(grid, lo, extent, origins, directions, weights, t_near, strata, deltas, first, last, out):
    """``out[p] = Σ_{r ∈ [first[p], last[p])} weights[r] · Σ_k δ_r · trilinear(grid, o_r + t_k d_r)``.

    Args:
        grid: (Z, Y, X) voxel values.
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
    nz, ny, nx = grid.shape
    flat = grid.reshape(-1)
    sx, sy, sz = (1 if nx > 1 else 0), (nx if ny > 1 else 0), (nx * ny if nz > 1 else 0)
    for p in nb.prange(first.shape[0]):
        acc = 0.0
        for r in range(first[p], last[p]):
            n, delta, cx, cy, cz, dx, dy, dz = _segment(r, lo, extent, nx, ny, nz, origins, directions,
                                                         t_near, strata, deltas)
            seg = 0.0
            for k in range(n):
                inside, i, fx, fy, fz = _cell(cx + k * dx, cy + k * dy, cz + k * dz, nx, ny, nz)
                if not inside:
                    continue
                gx = 1.0 - fx
                lower = ((1.0 - fy) * (gx * flat[i] + fx * flat[i + sx])
                         + fy * (gx * flat[i + sy] + fx * flat[i + sy + sx]))
                i += sz
                upper = ((1.0 - fy) * (gx * flat[i] + fx * flat[i + sx])
                         + fy * (gx * flat[i + sy] + fx * flat[i + sy + sx]))
                seg += lower + fz * (upper - lower)
            acc += (weights[r] * delta) * seg  # the same product as in the adjoint
        out[p] = acc


@nb.njit(parallel=True, fastmath=True, cache=True)
def adjoint_kernel(values, lo, extent, origins, directions, weights, t_near, strata, deltas, first, last,
                   partial):
    """The transpose of :func:`forward_kernel`: ``partial[b] += Aᵀ values`` over block b's pixels.

    ``partial``: (B, Z, Y, X) zeros in the rays' dtype, one grid per block of pixels (B blocks run
    in parallel; the caller sums them).
    """
    blocks, nz, ny, nx = partial.shape
    sx, sy, sz = (1 if nx > 1 else 0), (nx if ny > 1 else 0), (nx * ny if nz > 1 else 0)
    n_pixels = first.shape[0]
    for b in nb.prange(blocks):
        out = partial[b].reshape(-1)
        for p in range(b * n_pixels // blocks, (b + 1) * n_pixels // blocks):
            v = values[p]
            if v == 0.0:
                continue
            for r in range(first[p], last[p]):
                n, delta, cx, cy, cz, dx, dy, dz = _segment(r, lo, extent, nx, ny, nz, origins, directions,
                                                             t_near, strata, deltas)
                c = v * (weights[r] * delta)
                for k in range(n):
                    inside, i, fx, fy, fz = _cell(cx + k * dx, cy + k * dy, cz + k * dz, nx, ny, nz)
                    if not inside:
                        continue
                    gx = 1.0 - fx
                    for upper in range(2):
                        cz_ = c * (fz if upper else 1.0 - fz)
                        a = cz_ * (1.0 - fy)
                        out[i] += a * gx
                        out[i + sx] += a * fx
                        a = cz_ * fy
                        out[i + sy] += a * gx
                        out[i + sy + sx] += a * fx
                        i += sz
