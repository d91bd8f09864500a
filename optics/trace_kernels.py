"""Compiled (numba) tracing of rays through windows and mirrors into the box, without gradients.

:func:`through_windows` and :func:`segments` compute what
:func:`optics.trace.trace_object_segments` computes, in compiled loops instead of torch's passes
over millions of rays per operation; the torch code stays the specification (and the
differentiable path). Two stages:

- :func:`through_windows`: one loop iteration per ray, through the windows it crosses, nearest
  first (:func:`optics.window.through_windows`); a window acts only before the ray's leg ends at
  the box or a mirror, which is computed only where the window is not nearer than the sphere
  around the box and every mirror (the torch code's shortcut);
- :func:`segments`: the nearest mirror each ray meets, by one branch-free pass per mirror over
  all the rays (vectorised by the compiler, cheaper than the torch code's culling of mirrors out
  of a batch's reach); the reflection at the first mirror met on its face; each ray's direct and
  reflected parts inside the box, in the torch code's order (by ray, then path).

The arithmetic repeats the torch code's, operation for operation in the rays' dtype: every dot
product is ``(a₀b₀ + a₁b₁) + a₂b₂`` (:func:`optics.rays.dot`), every constant of a mirror or
window (unit normals, squared radii, a rectangle's axes, 1/n) is computed by torch once
(:func:`optics.trace.kernel_geometry`), comparisons against ε use ε in the rays' dtype as torch
casts a Python scalar, and ties between equally near mirrors or windows go to the lower index as
``torch.min`` does. The segments are the torch code's; their values agree to a few units in the
last place, not bit for bit: torch's vectorised square root is not correctly rounded, the
kernels' is (tests/optics/test_trace_kernels.py).

The kernels are compiled on first use (a few seconds, cached on disk by numba when its cache
directory is writable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

__all__ = ["Geometry", "segments", "through_windows"]


@nb.njit(inline="always", cache=True, error_model="numpy")
def _dot(ax, ay, az, bx, by, bz):
    return (ax * bx + ay * by) + az * bz


@nb.njit(inline="always", cache=True, error_model="numpy")
def _plane(ox, oy, oz, dx, dy, dz, px, py, pz, nx, ny, nz, eps, t_min, zero, one):
    """:func:`optics.rays.intersect_plane`: (t, valid), t = 0 where not valid."""
    den = _dot(dx, dy, dz, nx, ny, nz)
    ok = abs(den) > eps
    t = _dot(px - ox, py - oy, pz - oz, nx, ny, nz) / (den if ok else one)
    valid = ok and t > t_min
    return (t if valid else zero), valid


@nb.njit(inline="always", cache=True, error_model="numpy")
def _box(ox, oy, oz, dx, dy, dz, box, eps, big, zero):
    """:func:`optics.rays.intersect_box`: (t_near, t_far, valid), zeros where not valid."""
    t_near = -big
    t_far = big
    first = True
    for a in range(3):
        o = ox if a == 0 else (oy if a == 1 else oz)
        d = dx if a == 0 else (dy if a == 1 else dz)
        lo_b = box[0, a]
        hi_b = box[1, a]
        if abs(d) <= eps:
            inside = o >= lo_b and o <= hi_b
            lo = -big if inside else big
            hi = big if inside else -big
        else:
            t0 = (lo_b - o) / d
            t1 = (hi_b - o) / d
            lo = min(t0, t1)
            hi = max(t0, t1)
        if first:
            t_near, t_far, first = lo, hi, False
        else:
            t_near = max(t_near, lo)
            t_far = min(t_far, hi)
    t_near = max(t_near, zero)
    valid = t_far > t_near
    if not valid:
        return zero, zero, False
    return t_near, t_far, True


@nb.njit(inline="always", cache=True, error_model="numpy")
def _mirror_hit(ox, oy, oz, dx, dy, dz, m, disk, eps, t_min, zero, one):
    """:func:`optics.mirror.intersect_mirror` of one ray and the mirror ``m``: (t, hit, front).

    ``m``: the mirror's constants (:func:`_mirror_constants`), ``disk`` its shape; no branch on the
    ray, so that a loop over rays with the constants held outside it vectorises.
    """
    cx, cy, cz, nx, ny, nz, ax, ay, az, ux, uy, uz, vx, vy, vz, s0, s1 = m
    t, valid = _plane(ox, oy, oz, dx, dy, dz, cx, cy, cz, nx, ny, nz, eps, t_min, zero, one)
    offx = (ox + t * dx) - cx
    offy = (oy + t * dy) - cy
    offz = (oz + t * dz) - cz
    if disk:  # the in-plane part of the offset within the radius (s0: the squared radius)
        along = _dot(offx, offy, offz, ax, ay, az)
        px = offx - along * ax
        py = offy - along * ay
        pz = offz - along * az
        inside = _dot(px, py, pz, px, py, pz) <= s0
    else:  # a rectangle: within the half sizes s0, s1 along u and v
        inside = ((abs(_dot(offx, offy, offz, ux, uy, uz)) <= s0)
                  & (abs(_dot(offx, offy, offz, vx, vy, vz)) <= s1))
    hit = valid & inside
    return t, hit, hit & (_dot(dx, dy, dz, nx, ny, nz) < zero)


@nb.njit(inline="always", cache=True, error_model="numpy")
def _mirror_constants(k, mc, mn, mu, msize):
    """Mirror k's centre, normal as given, unit normal, u, v and sizes (:func:`_mirror_hit`'s ``m``)."""
    return (mc[k, 0], mc[k, 1], mc[k, 2], mn[k, 0], mn[k, 1], mn[k, 2], mu[k, 0, 0], mu[k, 0, 1], mu[k, 0, 2],
            mu[k, 1, 0], mu[k, 1, 1], mu[k, 1, 2], mu[k, 2, 0], mu[k, 2, 1], mu[k, 2, 2],
            msize[k, 0], msize[k, 1])


@nb.njit(inline="always", cache=True, error_model="numpy")
def _first_mirror(ox, oy, oz, dx, dy, dz, mc, mn, mu, shape, msize, eps, t_min, zero, one, inf):
    """The nearest mirror hit of one ray: (t, k, front), t = ∞ and k = −1 where none."""
    t_best = inf
    k_best = -1
    front_best = False
    for k in range(mc.shape[0]):
        t, hit, front = _mirror_hit(ox, oy, oz, dx, dy, dz, _mirror_constants(k, mc, mn, mu, msize),
                                    shape[k] == 0, eps, t_min, zero, one)
        if hit and t < t_best:
            t_best, k_best, front_best = t, k, front
    return t_best, k_best, front_best


@nb.njit(inline="always", cache=True, error_model="numpy")
def _refract(dx, dy, dz, nx, ny, nz, eta, eta2, one):
    """:func:`optics.window.refract`: (refracted x, y, z, cos_i, valid)."""
    cos_i = -_dot(dx, dy, dz, nx, ny, nz)
    sin2_t = eta2 * (one - cos_i * cos_i)
    valid = sin2_t < one
    cos_t = math.sqrt(one - sin2_t if valid else one)
    if not valid:
        return dx, dy, dz, cos_i, False
    s = eta * cos_i - cos_t
    return eta * dx + s * nx, eta * dy + s * ny, eta * dz + s * nz, cos_i, True


@nb.njit(inline="always", cache=True, error_model="numpy")
def _fresnel(cos_i, cos_t, n1, n2, one, half):
    """:func:`optics.window.fresnel_transmittance`."""
    rs = (n1 * cos_i - n2 * cos_t) / (n1 * cos_i + n2 * cos_t)
    rp = (n2 * cos_i - n1 * cos_t) / (n2 * cos_i + n1 * cos_t)
    return one - half * (rs * rs + rp * rp)


@nb.njit(inline="always", cache=True, error_model="numpy")
def _inside(px, py, pz, wc, wa, j, limit2):
    """The point's distance from window j's axis within sqrt(limit2)."""
    offx, offy, offz = px - wc[j, 0], py - wc[j, 1], pz - wc[j, 2]
    ax, ay, az = wa[j, 0], wa[j, 1], wa[j, 2]
    along = _dot(offx, offy, offz, ax, ay, az)
    rx, ry, rz = offx - along * ax, offy - along * ay, offz - along * az
    return _dot(rx, ry, rz, rx, ry, rz) <= limit2


@nb.njit(cache=True, error_model="numpy")
def _through_windows(o, d, w, box, centre, reach, mc, mn, mu, shape, msize, wc, wa, wk, consts):
    """Rays (n, 3), (n, 3), (n,) after the windows they cross (:func:`optics.window.through_windows`)."""
    eps, t_min, big, zero, one, half, inf = (consts[0], consts[1], consts[2], consts[3], consts[4], consts[6],
                                             consts[7])
    n = o.shape[0]
    n_windows = wc.shape[0]
    o_out = np.empty_like(o)
    d_out = np.empty_like(d)
    w_out = np.empty_like(w)
    for i in range(n):
        ox, oy, oz = o[i, 0], o[i, 1], o[i, 2]
        dx, dy, dz = d[i, 0], d[i, 1], d[i, 2]
        trans = one
        met = 0
        for _ in range(n_windows):  # the windows the ray crosses, nearest first
            t_next = inf
            j_next = -1
            crosses = False
            blocked = False
            fx = fy = fz = zero  # the entry face's normal, facing the ray
            for j in range(n_windows):  # optics.window.window_entry
                if met & (1 << j):
                    continue
                ax, ay, az = wa[j, 0], wa[j, 1], wa[j, 2]
                sign = one if _dot(dx, dy, dz, ax, ay, az) < zero else -one
                nx, ny, nz = sign * ax, sign * ay, sign * az
                hf = wk[j, 0]
                t, ahead = _plane(ox, oy, oz, dx, dy, dz, wc[j, 0] + hf * nx, wc[j, 1] + hf * ny,
                                  wc[j, 2] + hf * nz, nx, ny, nz, eps, t_min, zero, one)
                if ahead and t < t_next:
                    px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
                    t_next, j_next, fx, fy, fz = t, j, nx, ny, nz
                    crosses = _inside(px, py, pz, wc, wa, j, wk[j, 3])
                    blocked = (not crosses) and wk[j, 4] >= zero and _inside(px, py, pz, wc, wa, j, wk[j, 4])
            if j_next < 0:
                break
            # The leg ends where the ray enters the box or meets a mirror: a window beyond does not act.
            # Both lie within ``reach`` of ``centre``: a window nearer than that sphere acts.
            cx, cy, cz = ox - centre[0], oy - centre[1], oz - centre[2]
            if not t_next < math.sqrt(_dot(cx, cy, cz, cx, cy, cz)) - reach:
                bn, _, bhit = _box(ox, oy, oz, dx, dy, dz, box, eps, big, zero)
                tm, _, _ = _first_mirror(ox, oy, oz, dx, dy, dz, mc, mn, mu, shape, msize, eps, t_min,
                                         zero, one, inf)
                if not t_next < min(bn if bhit else inf, tm):
                    break
            j = j_next
            met |= 1 << j
            if blocked:
                trans = zero
            elif crosses:  # optics.window.trace_window, from the entry face met at t_next (normal f)
                nx, ny, nz, hf = fx, fy, fz, wk[j, 0]
                p1x, p1y, p1z = ox + t_next * dx, oy + t_next * dy, oz + t_next * dz
                d1x, d1y, d1z, cos1, _ = _refract(dx, dy, dz, nx, ny, nz, wk[j, 2], wk[j, 5], one)
                t2, ok2 = _plane(p1x, p1y, p1z, d1x, d1y, d1z, wc[j, 0] - hf * nx, wc[j, 1] - hf * ny,
                                 wc[j, 2] - hf * nz, nx, ny, nz, eps, t_min, zero, one)
                p2x, p2y, p2z = p1x + t2 * d1x, p1y + t2 * d1y, p1z + t2 * d1z
                d2x, d2y, d2z, cos2, ok3 = _refract(d1x, d1y, d1z, nx, ny, nz, wk[j, 1], wk[j, 6], one)
                ng = wk[j, 1]
                tr = (_fresnel(cos1, _dot(d1x, d1y, d1z, -nx, -ny, -nz), one, ng, one, half)
                      * _fresnel(cos2, _dot(d2x, d2y, d2z, -nx, -ny, -nz), ng, one, one, half))
                through = (ok2 and ok3 and _inside(p1x, p1y, p1z, wc, wa, j, wk[j, 3])
                           and _inside(p2x, p2y, p2z, wc, wa, j, wk[j, 3]))
                norm = math.sqrt(_dot(d2x, d2y, d2z, d2x, d2y, d2z))
                norm = norm if norm > eps else one
                ox, oy, oz = p2x, p2y, p2z
                dx, dy, dz = d2x / norm, d2y / norm, d2z / norm
                trans = trans * tr if through else zero
        o_out[i, 0], o_out[i, 1], o_out[i, 2] = ox, oy, oz
        d_out[i, 0], d_out[i, 1], d_out[i, 2] = dx, dy, dz
        w_out[i] = w[i] * trans
    return o_out, d_out, w_out


@nb.njit(cache=True, error_model="numpy")
def _nearest_mirror_pass(o, d, skip, k, mc, mn, mu, shape, msize, consts, t_best, k_best, front):
    """Mirror k against every ray: where it is hit nearer than ``t_best`` (and k ≠ ``skip``), take it.

    :func:`_first_mirror`'s loop turned inside out: one mirror over all the rays (``o``, ``d`` as
    (3, n) rows), without a branch on the ray, so that the compiler vectorises it.
    """
    eps, t_min, zero, one = consts[0], consts[1], consts[3], consts[4]
    m = _mirror_constants(k, mc, mn, mu, msize)
    disk = shape[k] == 0
    for i in range(o.shape[1]):
        t, hit, faces = _mirror_hit(o[0, i], o[1, i], o[2, i], d[0, i], d[1, i], d[2, i], m, disk, eps, t_min,
                                    zero, one)
        better = hit & (t < t_best[i]) & (skip[i] != k)
        t_best[i] = t if better else t_best[i]
        k_best[i] = k if better else k_best[i]
        front[i] = faces if better else front[i]


@nb.njit(cache=True, error_model="numpy")
def _reflect(o, d, w, t_first, k_first, front, mu, refl, consts):
    """The rays reflected by the first mirror they meet on its face: (ray, k, o, d, w) of each.

    :func:`optics.mirror.reflect_directions` at the hit point, the weight times the mirror's
    reflectivity; rays whose reflected weight is not positive carry no light and are left out.
    """
    two, zero = consts[5], consts[3]
    n = o.shape[1]
    count = 0
    for i in range(n):
        if k_first[i] >= 0 and front[i] and w[i] * refl[k_first[i]] > zero:
            count += 1
    ray = np.empty(count, np.int64)
    k = np.empty(count, np.int64)
    o_k = np.empty((3, count), o.dtype)
    d_k = np.empty((3, count), o.dtype)
    w_k = np.empty(count, o.dtype)
    j = 0
    for i in range(n):
        m = k_first[i]
        if m < 0 or not front[i] or not w[i] * refl[m] > zero:
            continue
        t = t_first[i]
        dx, dy, dz = d[0, i], d[1, i], d[2, i]
        ux, uy, uz = mu[m, 0, 0], mu[m, 0, 1], mu[m, 0, 2]
        s = two * _dot(dx, dy, dz, ux, uy, uz)
        ray[j], k[j], w_k[j] = i, m, w[i] * refl[m]
        o_k[0, j], o_k[1, j], o_k[2, j] = o[0, i] + t * dx, o[1, i] + t * dy, o[2, i] + t * dz
        d_k[0, j], d_k[1, j], d_k[2, j] = dx - s * ux, dy - s * uy, dz - s * uz
        j += 1
    return ray, k, o_k, d_k, w_k


@nb.njit(cache=True, error_model="numpy")
def _assemble(o, d, w, t_first, ray_k, k, o_k, d_k, w_k, t_end, box, consts):
    """Each ray's direct segment (up to its first mirror) and reflected one (up to the next), in the box.

    :func:`optics.trace._segments_beyond_windows`' ``add_segment``: a segment is kept where it
    crosses the box before its end and carries light. Ordered by ray, then path.
    """
    eps, big, zero = consts[0], consts[2], consts[3]
    n = o.shape[1]
    cap = n + len(ray_k)
    ray = np.empty(cap, np.int64)
    path = np.empty(cap, np.int64)
    so = np.empty((cap, 3), o.dtype)
    sd = np.empty((cap, 3), o.dtype)
    sw = np.empty(cap, o.dtype)
    sn = np.empty(cap, o.dtype)
    sf = np.empty(cap, o.dtype)
    m = 0
    j = 0
    for i in range(n):
        if w[i] > zero:
            bn, bf, hit = _box(o[0, i], o[1, i], o[2, i], d[0, i], d[1, i], d[2, i], box, eps, big, zero)
            bf = min(bf, t_first[i])
            if hit and bf > bn:
                ray[m], path[m], sw[m], sn[m], sf[m] = i, 0, w[i], bn, bf
                for a in range(3):
                    so[m, a], sd[m, a] = o[a, i], d[a, i]
                m += 1
        if j < len(ray_k) and ray_k[j] == i:
            bn, bf, hit = _box(o_k[0, j], o_k[1, j], o_k[2, j], d_k[0, j], d_k[1, j], d_k[2, j], box, eps,
                               big, zero)
            bf = min(bf, t_end[j])
            if hit and bf > bn:
                ray[m], path[m], sw[m], sn[m], sf[m] = i, k[j] + 1, w_k[j], bn, bf
                for a in range(3):
                    so[m, a], sd[m, a] = o_k[a, j], d_k[a, j]
                m += 1
            j += 1
    return ray[:m], path[:m], so[:m], sd[:m], sw[:m], sn[:m], sf[:m]


@dataclass(frozen=True)
class Geometry:
    """An instrument's box, mirrors and windows as the kernels take them (numpy, the rays' dtype).

    Every entry is computed by torch from the system (:func:`optics.trace.kernel_geometry`), so
    that a unit normal or a squared radius is the one the torch code uses.

    Attributes:
        box: (2, 3) the box's lower and upper corners.
        centre: (3,) the box's centre.
        reach: the radius about ``centre`` of a sphere around the box and every mirror.
        mirror_centres: (M, 3).
        mirror_normals: (M, 3) as the system gives them.
        mirror_axes: (M, 3, 3) the unit normal and a rectangle's unit u and v.
        mirror_shapes: (M,) 0 a disk, 1 a rectangle.
        mirror_sizes: (M, 2) a disk's squared radius, a rectangle's half sizes.
        reflectivity: (M,).
        window_centres: (W, 3).
        window_axes: (W, 3) unit normals.
        windows: (W, 7) half thickness, n, 1/n, squared aperture radius, squared mount radius (−1:
            no mount), (1/n)², n².
        consts: ε, the smallest hit distance, 1e30, 0, 1, 2, ½, ∞ in the rays' dtype.
    """

    box: np.ndarray
    centre: np.ndarray
    reach: float
    mirror_centres: np.ndarray
    mirror_normals: np.ndarray
    mirror_axes: np.ndarray
    mirror_shapes: np.ndarray
    mirror_sizes: np.ndarray
    reflectivity: np.ndarray
    window_centres: np.ndarray
    window_axes: np.ndarray
    windows: np.ndarray
    consts: np.ndarray

    def mirrors(self) -> tuple:
        """The mirrors' arrays in the order the kernels take them."""
        return (self.mirror_centres, self.mirror_normals, self.mirror_axes, self.mirror_shapes,
                self.mirror_sizes)


def through_windows(geometry: Geometry, origins: np.ndarray, directions: np.ndarray, weights: np.ndarray):
    """Rays (n, 3), (n, 3), (n,) after the windows they cross: origins, directions, weights × transmittance.

    :func:`optics.window.through_windows` with the leg ending at the box or the nearest mirror.
    """
    g = geometry
    if len(g.windows) == 0:
        return origins, directions, weights
    return _through_windows(origins, directions, weights, g.box, g.centre, g.reach, *g.mirrors(),
                            g.window_centres, g.window_axes, g.windows, g.consts)


def _nearest_mirror(geometry: Geometry, o: np.ndarray, d: np.ndarray, skip: np.ndarray):
    """The nearest mirror each ray meets: (t, k, front); t = ∞ and k = −1 where none.

    ``o``, ``d``: (3, n) rows; ``skip`` (n,) a mirror each ray ignores (−1: none).
    """
    n = o.shape[1]
    t_best = np.full(n, np.inf, o.dtype)
    k_best = np.full(n, -1, np.int64)
    front = np.zeros(n, np.bool_)
    for k in range(len(geometry.reflectivity)):
        _nearest_mirror_pass(o, d, skip, k, *geometry.mirrors(), geometry.consts, t_best, k_best, front)
    return t_best, k_best, front


def segments(geometry: Geometry, origins: np.ndarray, directions: np.ndarray, weights: np.ndarray):
    """The segments of rays already through the windows: (ray, path, o, d, w, t_near, t_far).

    ``origins``, ``directions`` (n, 3), ``weights`` (n,). Every ray is tested against every
    mirror (a vectorised pass costs less than the culling of :func:`optics.trace._mirrors_in_reach`).
    Ordered by ray, then path, as :class:`optics.trace.ObjectSegments` holds them.
    """
    g = geometry
    o, d = np.ascontiguousarray(origins.T), np.ascontiguousarray(directions.T)
    t_first, k_first, front = _nearest_mirror(g, o, d, np.full(len(weights), -1, np.int64))
    ray_k, k, o_k, d_k, w_k = _reflect(o, d, weights, t_first, k_first, front, g.mirror_axes, g.reflectivity,
                                       g.consts)
    t_end, _, _ = _nearest_mirror(g, o_k, d_k, k)  # the next mirror ends a reflected segment
    return _assemble(o, d, weights, t_first, ray_k, k, o_k, d_k, w_k, t_end, g.box, g.consts)
