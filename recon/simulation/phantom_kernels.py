"""Compiled (numba) line integrals of a fringe-modulated Gaussian mixture along jittered strata.

:func:`recon.model.render.line_integrals` with ``model="emission"`` samples each segment ``r``
at ``t = t_near + (j + u) · δ`` for its strata ``j = 0 … n_r − 1`` (``u`` uniform jitter drawn by
torch), evaluates the density at ``o + t d`` and sums ``ρ δ`` over the segment. For a
:class:`~recon.simulation.phantoms.PrimitivePhantom` made of Gaussians (every named cloud:
``gaussian``, ``fringes``, ``clouds``, ``interferometer``) the torch path spends most of its time
sorting each chunk's points along x to cull the small clumps and gathering them; here
(:func:`gaussian_mixture_integrals`) three passes compute the same sums:

1. :func:`sample_positions`: every sample's position, ``t_near + (j + u) δ`` then ``o + t d − a``
   per axis, as torch rounds them (no fused multiply-add), and their span.
2. :func:`dense_arguments`: for each Gaussian whose support box holds the whole span (the torch
   path evaluates those at every point), ``−½ (x − c)ᵀ P (x − c)`` with ``P (x − c)`` summed in
   einsum's order, and the fringes' ``k n·(x − o) − φ``; then **torch** takes their exponentials
   and sines, on arrays of the same length and order as the torch path's, so that the vectorised
   SLEEF functions and their scalar tails give the same bits.
3. :func:`sum_strata`: per segment, the sum over its samples of ``(scale · ρ) · δ``, each
   Gaussian added in the phantom's order; a culled one (a clump) only where the point lies in its
   support box, both faces inclusive, and only tested on the segments whose line meets that box
   (a slab test per segment), with numba's exponential (whose last bit differs from torch's for
   some arguments).

Every product is in the positions' dtype with each scalar rounded to it first, as torch computes a
tensor times a Python number. So the sums are torch's bit for bit, except where a clump's
exponential differs in its last bit.

Compiled on first use (seconds; cached on disk by numba when its cache directory is writable).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

__all__ = ["dense_arguments", "gaussian_mixture_integrals", "sample_positions", "sum_strata"]


@nb.njit(parallel=True, cache=True)  # no fastmath: the positions must round as torch's do
def sample_positions(origins, directions, t_near, strata, deltas, first, jitter, offset, out):
    """``out[first_r + j] = o_r + t_j d_r − a`` with ``t_j = t_near_r + (j + u_{first_r + j}) δ_r``.

    Args:
        origins: (R, 3) segment origins, mm.
        directions: (R, 3) unit directions.
        t_near: (R,) entry, mm.
        strata: (R,) samples of each segment (≥ 1).
        deltas: (R,) stratum lengths, mm.
        first: (R,) index of each segment's first sample.
        jitter: (M,) uniform jitter in [0, 1), segment after segment.
        offset: (3,) ``a``, the phantom's shift, mm.
        out: (M, 3) the positions (written).
    """
    real = origins.dtype.type
    ax, ay, az = offset[0], offset[1], offset[2]
    for r in nb.prange(origins.shape[0]):
        ox, oy, oz = origins[r, 0], origins[r, 1], origins[r, 2]
        ux, uy, uz = directions[r, 0], directions[r, 1], directions[r, 2]
        t0, delta, base = t_near[r], deltas[r], first[r]
        for j in range(strata[r]):
            t = t0 + (real(j) + jitter[base + j]) * delta
            out[base + j, 0] = (ox + t * ux) - ax
            out[base + j, 1] = (oy + t * uy) - ay
            out[base + j, 2] = (oz + t * uz) - az


@nb.njit(inline="always", cache=True)
def _crosses(o, d, t0, t1, lo, hi, offset) -> bool:
    """Whether the points ``o + t d − offset``, ``t0 ≤ t ≤ t1``, may meet ``[lo, hi]`` (a padded slab test).

    Only a cull: the per-sample test decides. The pad (1 µm and a part in 1e6 of the distances)
    covers the rounding of float32 positions computed hundreds of mm from the origins.
    """
    t0, t1 = float(t0), float(t1)
    for a in range(3):
        oa, da = float(o[a]) - float(offset[a]), float(d[a])
        if da == 0.0:
            if oa < lo[a] or oa > hi[a]:
                return False
            continue
        ta, tb = (lo[a] - oa) / da, (hi[a] - oa) / da
        if ta > tb:
            ta, tb = tb, ta
        pad = 1e-6 * (abs(ta) + abs(tb) + abs(t0) + abs(t1)) + 1e-3
        t0 = max(t0, ta - pad)
        t1 = min(t1, tb + pad)
        if t0 > t1:
            return False
    return True


@nb.njit(cache=True)
def _span(points):
    """The least and greatest coordinate of (M, 3) points along each axis (numpy's axis-0 min is slow)."""
    lo = points[0].copy()
    hi = points[0].copy()
    for i in range(1, points.shape[0]):
        for a in range(3):
            lo[a] = min(lo[a], points[i, a])
            hi[a] = max(hi[a], points[i, a])
    return lo, hi


@nb.njit(inline="always", cache=True)
def _quadratic(x, y, z, c, p):
    """``(x − c)ᵀ P (x − c)`` with ``(x − c)ᵀ P`` first, each sum in index order (torch's einsum)."""
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    px = (dx * p[0, 0] + dy * p[1, 0]) + dz * p[2, 0]
    py = (dx * p[0, 1] + dy * p[1, 1]) + dz * p[2, 1]
    pz = (dx * p[0, 2] + dy * p[1, 2]) + dz * p[2, 2]
    return (px * dx + py * dy) + pz * dz


@nb.njit(parallel=True, cache=True)
def dense_arguments(points, centers, precisions, dense, fringe_origin, fringe_direction, fringe_k,
                    fringe_phase, fringe_chirp, has_fringes, args, phases):
    """The exponents of the Gaussians ``dense`` and the fringes' phase at every point.

    Args:
        points: (M, 3) positions, mm.
        centers: (G, 3) the Gaussians' centres, mm.
        precisions: (G, 3, 3) their inverse covariances, mm⁻².
        dense: (D,) the Gaussians evaluated at every point.
        fringe_origin: (3,) the fringes' origin o, mm.
        fringe_direction: (3,) their unit wave vector n.
        fringe_k: k, rad/mm.
        fringe_phase: φ, rad.
        fringe_chirp: κ, rad/mm² (0: none).
        has_fringes: whether to write ``phases``.
        args: (D, M) ``−½ (x − c)ᵀ P (x − c)`` (written).
        phases: (M,) ``(k + ½ κ s) s − φ``, ``s = n·(x − o)`` (written when ``has_fringes``; without
            a chirp ``k s − φ``, as the torch path rounds it).
    """
    real = points.dtype.type
    half, k, phase = real(-0.5), real(fringe_k), real(fringe_phase)
    half_chirp = real(0.5) * real(fringe_chirp)
    fx, fy, fz = fringe_origin[0], fringe_origin[1], fringe_origin[2]
    nx, ny, nz = fringe_direction[0], fringe_direction[1], fringe_direction[2]
    for i in nb.prange(points.shape[0]):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        for row in range(dense.shape[0]):
            m = dense[row]
            args[row, i] = half * _quadratic(x, y, z, centers[m], precisions[m])
        if has_fringes:
            s = ((x - fx) * nx + (y - fy) * ny) + (z - fz) * nz
            if half_chirp == 0:
                phases[i] = k * s - phase
            else:
                phases[i] = (k + half_chirp * s) * s - phase


@nb.njit(parallel=True, cache=True)
def sum_strata(points, origins, directions, t_near, strata, deltas, first, offset, factors, lows, highs,
               centers, precisions, dense_row, dense_values, sines, has_fringes, scale, out):
    """``out[r] = Σ_j (scale · ρ_j) · δ_r`` over segment ``r``'s samples, ``ρ`` summed in the phantom's order.

    ``ρ = (Σ_m w_m · (norm_m · e_m)) · sin²`` where ``e_m`` is ``dense_values[dense_row[m]]`` for a
    dense Gaussian, else ``exp(−½ (x − c_m)ᵀ P_m (x − c_m))`` where the point lies in its support
    box (and nothing where it does not); ``sin²`` only when ``has_fringes``. A culled Gaussian is
    tested only on the segments whose line meets its box between their first and last stratum.

    Args:
        points: (M, 3) the samples' positions, mm.
        origins: (R, 3) segment origins, mm.
        directions: (R, 3) unit directions.
        t_near: (R,) entry, mm.
        strata: (R,) samples of each segment.
        deltas: (R,) stratum lengths, mm.
        first: (R,) index of each segment's first sample.
        offset: (3,) the phantom's shift, mm.
        factors: (G, 2) each Gaussian's weight w and normalisation norm.
        lows: (G, 3) each Gaussian's support box's lower corner, mm.
        highs: (G, 3) its upper corner, mm.
        centers: (G, 3) the Gaussians' centres, mm.
        precisions: (G, 3, 3) their inverse covariances, mm⁻².
        dense_row: (G,) the row of ``dense_values`` of a dense Gaussian, −1 for a culled one.
        dense_values: (D, M) the dense Gaussians' exponentials.
        sines: (M,) the fringes' sines.
        has_fringes: whether to modulate.
        scale: the phantom's atoms per unit mass.
        out: (R,) the integrals (written).
    """
    real = points.dtype.type
    factor, half = real(scale), real(-0.5)
    n_prim = factors.shape[0]
    for r in nb.prange(strata.shape[0]):
        base, n, delta = first[r], strata[r], deltas[r]
        active = np.empty(n_prim, np.int64)
        n_active = 0
        o, d, t0 = origins[r], directions[r], t_near[r]
        for m in range(n_prim):
            if dense_row[m] >= 0 or _crosses(o, d, t0, t0 + n * delta, lows[m], highs[m], offset):
                active[n_active] = m
                n_active += 1
        acc = real(0.0)
        for k in range(base, base + n):
            x, y, z = points[k, 0], points[k, 1], points[k, 2]
            rho = real(0.0)
            for i in range(n_active):
                m = active[i]
                row = dense_row[m]
                if row >= 0:
                    rho = rho + factors[m, 0] * (factors[m, 1] * dense_values[row, k])
                elif not (x < lows[m, 0] or x > highs[m, 0] or y < lows[m, 1] or y > highs[m, 1]
                          or z < lows[m, 2] or z > highs[m, 2]):
                    e = math.exp(half * _quadratic(x, y, z, centers[m], precisions[m]))
                    rho = rho + factors[m, 0] * (factors[m, 1] * e)
            if has_fringes:
                rho = rho * (sines[k] * sines[k])
            acc += (factor * rho) * delta
        out[r] = acc


def gaussian_mixture_integrals(origins, directions, t_near, strata, deltas, jitter, offset, centers,
                               precisions, factors, lows, highs, fringe_origin, fringe_direction, fringe_k,
                               fringe_phase, has_fringes, scale, fringe_chirp=0.0) -> np.ndarray:
    """``Σ_j (scale · ρ(o_r + t_j d_r − a)) · δ_r`` for every segment ``r`` (the three passes above).

    Every array in the rays' dtype (float32 or float64) but ``strata`` (int64); ``G`` Gaussians,
    their support boxes inclusive.

    Args:
        origins: (R, 3) segment origins, mm.
        directions: (R, 3) unit directions.
        t_near: (R,) entry, mm.
        strata: (R,) samples of each segment (≥ 1).
        deltas: (R,) stratum lengths, mm.
        jitter: (Σ strata,) uniform jitter in [0, 1), segment after segment.
        offset: (3,) ``a``, the phantom's shift, mm.
        centers: (G, 3) the Gaussians' centres, mm.
        precisions: (G, 3, 3) their inverse covariances, mm⁻².
        factors: (G, 2) each Gaussian's weight w and normalisation norm (it adds ``w · (norm · exp(…))``).
        lows: (G, 3) each support box's lower corner, mm.
        highs: (G, 3) its upper corner, mm.
        fringe_origin: (3,) the fringes' origin o, mm.
        fringe_direction: (3,) their unit wave vector n.
        fringe_k: k, rad/mm.
        fringe_phase: φ, rad.
        has_fringes: whether ρ is modulated by ``sin²((k + ½ κ s) s − φ)``, ``s = n·(x − o)``.
        scale: the phantom's atoms per unit mass.
        fringe_chirp: κ, rad/mm² (0: none).

    Returns:
        (R,) the integrals.
    """
    first = np.cumsum(strata) - strata
    points = np.empty((len(jitter), 3), origins.dtype)
    sample_positions(origins, directions, t_near, strata, deltas, first, jitter, offset, points)
    # dense: the Gaussians whose support holds every point, which torch evaluates everywhere
    span_lo, span_hi = _span(points)
    dense = np.flatnonzero((lows <= span_lo).all(axis=1) & (highs >= span_hi).all(axis=1))
    dense_row = np.full(len(factors), -1, dtype=np.int64)
    dense_row[dense] = np.arange(len(dense))
    args = np.empty((len(dense), len(points)), origins.dtype)
    phases = np.empty(len(points) if has_fringes else 0, origins.dtype)
    dense_arguments(points, centers, precisions, dense, fringe_origin, fringe_direction, fringe_k,
                    fringe_phase, fringe_chirp, has_fringes, args, phases)
    for row in args:  # one call per Gaussian, on arrays like the torch path's: its SLEEF bits
        torch.from_numpy(row).exp_()
    sines = torch.sin(torch.from_numpy(phases)).numpy()
    out = np.empty(len(strata), origins.dtype)
    sum_strata(points, origins, directions, t_near, strata, deltas, first, offset, factors, lows, highs,
               centers, precisions, dense_row, args, sines, has_fringes, scale, out)
    return out
