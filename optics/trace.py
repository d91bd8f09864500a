r"""Tracing sensor pixels back through lens, windows and mirrors into the reconstruction box.

For a batch of pixels × samples (sub-pixel position and aperture point), every light path is
traced: the direct path (0) and one path per mirror (k ≥ 1, at most one reflection). A backward
ray leaves the lens, crosses the windows, and travels until it meets a mirror; the part before
the mirror is the direct segment, and if it met the reflective face of mirror k the reflected
part, up to the next mirror it meets, is the segment of path k. A pixel thus sees light from
several paths, and each segment gets its own weight.

Weights make the renderer's sum give expected photoelectrons:

.. math::

    e_\\text{pixel} = \\sum_{s, p} w_{s,p} \\int_{t_\\text{near}}^{t_\\text{far}}
                      ε(o_{s,p} + t\\, d_{s,p})\\, dt,
    \\qquad w = \\frac{QE · A_\\text{pix} · G}{S} · R_k · T_\\text{windows},

with ε the emission density (photons mm⁻³ sr⁻¹), ``G`` the étendue per unit sensor area of the
sample (:func:`optics.lens.camera_rays`), ``S`` the number of samples per pixel, ``R_k`` the
mirror reflectivity and ``T`` the Fresnel transmission of the windows (REFERENCE §2).

Differentiable with respect to every optical parameter, except through the discrete choices
(which mirror a ray meets first, whether it is inside an aperture).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from optics import trace_kernels
from optics.camera import Camera
from optics.errors import ShapeError
from optics.lens import camera_rays, distort
from optics.mirror import intersect_mirror, reflect_directions, reflect_points
from optics.rays import _EPS, T_MIN_MM, dot, intersect_box, normalize
from optics.sampling import SAMPLING_SCHEMES, sample_pixel_samples, sobol_points
from optics.system import System
from optics.window import through_windows

__all__ = [
    "SAMPLING_SCHEMES",
    "TracedRays",
    "blur_diameter_mm",
    "project_points",
    "sample_pixel_samples",
    "sobol_points",
    "ObjectSegments",
    "kernel_geometry",
    "trace_object_rays",
    "trace_object_segments",
    "trace_pixel_segments",
    "trace_pixels",
    "virtual_points",
]


@dataclass(frozen=True)
class TracedRays:
    """Ray segments in object space, one per pixel sample and path.

    Attributes:
        origins: (..., P, 3) segment origins, world frame, mm.
        directions: (..., P, 3) unit directions.
        weights: (..., P) photoelectrons per unit line integral of emission (0 where invalid).
        t_near: (..., P) entry into the reconstruction box along the segment, mm.
        t_far: (..., P) exit from the box (or the end of the segment), mm.
        valid: (..., P) the segment carries light and crosses the box.
        paths: (P,) path index of each slot: 0 direct, k mirror k − 1.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    weights: torch.Tensor
    t_near: torch.Tensor
    t_far: torch.Tensor
    valid: torch.Tensor
    paths: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """Batch shape ``(..., P)``."""
        return self.weights.shape


def _mirrors_in_reach(mirrors, origins: torch.Tensor, directions: torch.Tensor) -> list[bool]:
    """Which mirrors some ray ``o + t d`` (t > 0) of the batch may meet: a necessary condition.

    The batch's directions lie within θ of their mean axis a (θ < 60°, else every mirror is
    kept); s and perp are a point's coordinates along and across a from a reference point. Two
    bounds, each necessary, for a mirror inside a sphere (c, R):

    - from the origins (within r of their mean): a ray's point has ``perp ≤ r + (s + r) tan θ``
      (a diverging bundle);
    - from the point p nearest to every ray in least squares, which every ray passes within ρ
      of: ``perp ≤ ρ + (|s| + ρ) tan θ`` (a converging bundle, as a lens focuses one view's
      pixels onto the box through one mirror).

    The sphere's nearest point is at ``perp(c) − R`` across and ``s(c) ± R`` along; a mirror is out
    of reach when that breaks either bound beyond a margin for rounding. Mirrors out of reach are
    not hit by any ray of the batch, so they need not be intersected: for one view's pixels that
    is most of the dome.
    """
    if len(mirrors) == 0 or origins.numel() == 0:
        return [bool(origins.numel())] * len(mirrors)
    with torch.no_grad():  # the batch-sized arrays in the rays' dtype (the margin covers float32)
        o, d = (t.reshape(-1, 3) for t in torch.broadcast_tensors(origins.detach(), directions.detach()))
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        axis = d.mean(0, dtype=torch.float64)
        if not float(axis.norm()) >= 1e-6:
            return [True] * len(mirrors)
        axis = axis / axis.norm()
        cos = float((d @ axis.to(d.dtype)).min()) - 1e-6
        if not cos >= 0.5:  # (NaN included)
            return [True] * len(mirrors)
        tan = math.sqrt(max(0.0, 1.0 - cos * cos)) / cos
        centre = o.mean(0, dtype=torch.float64)
        r = float((o - centre.to(o.dtype)).norm(dim=-1).max())
        # p minimises Σ |(I − d dᵀ)(p − o)|²: Σ (I − d dᵀ) p = Σ (I − d dᵀ) o
        normal_matrix = len(d) * torch.eye(3, dtype=torch.float64) - (d.T @ d).double()
        rhs = o.sum(0, dtype=torch.float64) - (d.T @ (d * o).sum(-1)).double()
        focus = torch.linalg.lstsq(normal_matrix, rhs[:, None]).solution[:, 0]
        offset = focus.to(o.dtype) - o
        rho = float((offset - (offset * d).sum(-1, keepdim=True) * d).norm(dim=-1).max())
        if not math.isfinite(rho):
            rho = math.inf
        reach = []
        for mirror in mirrors:
            size = float(mirror.radius_mm if mirror.shape == "circle" else mirror.half_size_mm.norm())
            ok = True
            for ref, spread, two_sided in ((centre, r, False), (focus, rho, True)):
                rel = mirror.center_mm.detach().double() - ref
                s_c = float(rel @ axis)
                perp = float((rel - s_c * axis).norm())
                margin = 1e-3 + 1e-4 * (float(rel.norm()) + size + spread)
                along = abs(s_c) + size + spread if two_sided else max(s_c + size + spread, 0.0)
                ok &= perp - size <= spread + along * tan + margin
                ok &= two_sided or s_c + size + spread >= -margin
            reach.append(bool(ok))
        return reach


def _mirror_hits(system: System, origins, directions, skip: int | None = None):
    """(..., M) hit parameters, hit masks and front-face masks against every mirror.

    Mirrors out of the batch's reach (:func:`_mirrors_in_reach`) and mirror ``skip`` give no hit
    (and t = 0: t is meaningful only where ``hit``).
    """
    ts, hits, fronts = [], [], []
    reach = _mirrors_in_reach(system.mirrors, origins, directions)
    batch = torch.broadcast_shapes(origins.shape[:-1], directions.shape[:-1])
    for k, mirror in enumerate(system.mirrors):
        if (skip is not None and k == skip) or not reach[k]:
            hit = torch.zeros(batch, dtype=torch.bool, device=origins.device)
            t, front = torch.zeros(batch, dtype=origins.dtype, device=origins.device), hit
        else:
            t, hit, front = intersect_mirror(mirror, origins, directions)
        ts.append(t)
        hits.append(hit)
        fronts.append(front)
    return torch.stack(ts, -1), torch.stack(hits, -1), torch.stack(fronts, -1)


def _first(ts: torch.Tensor, hits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest hit: (t, index, any) over the last axis; t = +inf where nothing is hit."""
    inf = torch.full_like(ts, math.inf)
    t_first, k_first = torch.where(hits, ts, inf).min(dim=-1)
    return t_first, k_first, hits.any(dim=-1)


@dataclass(frozen=True)
class ObjectSegments:
    """The segments of a batch of rays that cross the box, compact (M of them).

    Ordered by ray, then path (as ``TracedRays.valid.nonzero()`` lists them).

    Attributes:
        ray: (M,) index of the ray in the flattened batch ``(...)``.
        path: (M,) path index (0 direct, k mirror k − 1).
        origins: (M, 3) segment origins, world frame, mm.
        directions: (M, 3) unit directions.
        weights: (M,) photoelectrons per unit line integral of emission.
        t_near: (M,) entry into the box, mm.
        t_far: (M,) exit from the box (or the end of the segment), mm.
    """

    ray: torch.Tensor
    path: torch.Tensor
    origins: torch.Tensor
    directions: torch.Tensor
    weights: torch.Tensor
    t_near: torch.Tensor
    t_far: torch.Tensor


def trace_object_segments(
    system: System, origins: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor, *,
    compiled: bool | None = None,
) -> ObjectSegments:
    """Trace rays leaving the lens (world frame) through windows and mirrors; keep what crosses the box.

    Each path's hit points, reflected directions and box intersections are computed only for
    the rays that take it (most rays take one path of the 1 + number of mirrors), so the cost
    follows the segments, not rays × paths. Where no gradient is asked for, the compiled
    kernels of :mod:`optics.trace_kernels` trace instead of torch (several times faster on one
    core, ``bench/trace_pool.py``): the same segments, their values within a few units in the last
    place (torch's vectorised square root is not correctly rounded; the kernels' is).

    Args:
        system: the instrument.
        origins: (..., 3) points on the lens, world frame, mm.
        directions: (..., 3) unit directions into object space.
        weights: (...) weight of each ray before windows and mirrors.
        compiled: True or False to choose the kernels or torch; None: the kernels wherever they
            can (:func:`_compiled`).
    """
    if compiled is None:
        compiled = _compiled(system, origins, directions, weights)
    if compiled:
        return _compiled_segments(system, origins, directions, weights)
    return _segments_beyond_windows(system, *_through_windows(system, origins, directions, weights))


def _geometry_tensors(system: System):
    """Every tensor of the box, the mirrors and the windows (what the segments depend on besides the rays)."""
    yield system.volume.min_mm
    yield system.volume.max_mm
    for item in (*system.mirrors, *system.windows):
        values = (getattr(item, f.name) for f in fields(item))
        yield from (v for v in values if isinstance(v, torch.Tensor))


def _compiled(system: System, *rays: torch.Tensor) -> bool:
    """Whether the compiled kernels (:mod:`optics.trace_kernels`) trace these rays.

    They do on the CPU, in float32 or float64, where no gradient is asked for (a self-calibration
    differentiates through the torch code), with fewer than 64 windows.
    """
    tensors = (*rays, *_geometry_tensors(system))
    return (all(t.device.type == "cpu" and t.dtype == system.dtype for t in tensors)
            and system.dtype in (torch.float32, torch.float64) and len(system.windows) < 64
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


def kernel_geometry(system: System) -> trace_kernels.Geometry:
    """The system's box, mirrors and windows as :mod:`optics.trace_kernels` takes them.

    Each constant is computed by the torch expression the torch path evaluates, so that the two
    paths use the same unit normals, squared radii and indices to the last bit.
    """
    dtype = system.dtype
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype

    def rows(tensors: list[torch.Tensor], *shape: int) -> np.ndarray:
        """(len, *shape) numpy array of the tensors, in the system's dtype."""
        if not tensors:
            return np.zeros((0, *shape), np_dtype)
        return np.ascontiguousarray(torch.stack([t.detach().cpu() for t in tensors]).numpy())

    axes, sizes = [], []
    for m in system.mirrors:
        n = normalize(m.normal)
        if m.shape == "circle":
            axes.append(torch.stack([n, torch.zeros_like(n), torch.zeros_like(n)]))
            radius2 = torch.as_tensor(m.radius_mm, dtype=dtype) ** 2
            sizes.append(torch.stack([radius2, torch.zeros_like(radius2)]))
        else:
            u = normalize(m.u_axis - dot(m.u_axis, n).unsqueeze(-1) * n)
            axes.append(torch.stack([n, u, torch.cross(n, u, dim=-1)]))
            sizes.append(m.half_size_mm)
    windows = []
    for w in system.windows:
        eta = 1.0 / w.refractive_index
        mount = w.mount_radius_mm**2 if w.mount_radius_mm is not None else torch.tensor(-1.0, dtype=dtype)
        windows.append(torch.stack([0.5 * w.thickness_mm, w.refractive_index, eta, w.aperture_radius_mm**2,
                                    mount, eta**2, w.refractive_index**2]))
    centre, reach = _reach_sphere(system)
    return trace_kernels.Geometry(
        box=rows([system.volume.min_mm, system.volume.max_mm], 3),
        centre=rows([centre], 3)[0],
        reach=np_dtype.type(float(reach)),
        mirror_centres=rows([m.center_mm for m in system.mirrors], 3),
        mirror_normals=rows([m.normal for m in system.mirrors], 3),
        mirror_axes=rows(axes, 3, 3),
        mirror_shapes=np.array([0 if m.shape == "circle" else 1 for m in system.mirrors], np.int64),
        mirror_sizes=rows(sizes, 2),
        reflectivity=rows([m.reflectivity.reshape(()) for m in system.mirrors]),
        window_centres=rows([w.center_mm for w in system.windows], 3),
        window_axes=rows([normalize(w.normal) for w in system.windows], 3),
        windows=rows(windows, 7),
        consts=np.array([_EPS, T_MIN_MM, 1e30, 0.0, 1.0, 2.0, 0.5, np.inf], np_dtype),
    )


def _compiled_segments(system: System, origins, directions, weights) -> ObjectSegments:
    """:func:`trace_object_segments` by the compiled kernels (:func:`_compiled` says when)."""
    geometry = kernel_geometry(system)
    o, d, w = (t.detach().reshape(shape).contiguous().numpy()
               for t, shape in ((origins, (-1, 3)), (directions, (-1, 3)), (weights, (-1,))))
    o, d, w = trace_kernels.through_windows(geometry, o, d, w)
    columns = trace_kernels.segments(geometry, o, d, w)
    return ObjectSegments(*(torch.from_numpy(c) for c in columns))


def _through_windows(system: System, origins, directions, weights):
    """Flattened rays (n, 3), (n, 3), (n,) after the windows they cross before the box or a mirror.

    A window beyond the box or the first mirror along the ray does not act on it
    (:func:`optics.window.through_windows`).
    """
    origins, directions, weights = origins.reshape(-1, 3), directions.reshape(-1, 3), weights.reshape(-1)
    if not system.windows:
        return origins, directions, weights
    box = system.volume
    centre, reach = _reach_sphere(system)

    def leg_end(o, d, t):
        """Where the direct leg meets the box or a mirror (+inf where it surely does not before t)."""
        end = torch.full_like(t, math.inf)
        unsure = t >= (o - centre).norm(dim=-1) - reach
        if not bool(unsure.any()):
            return end
        t_near, _, hit = intersect_box(o, d, box.min_mm, box.max_mm)
        end = torch.where(hit, t_near, end)
        if system.mirrors:
            end = torch.minimum(end, _first(*_mirror_hits(system, o, d)[:2])[0])
        return torch.where(unsure, end, torch.full_like(end, math.inf))

    origins, directions, trans = through_windows(system.windows, origins, directions, leg_end)
    return origins, directions, weights * trans


def _reach_sphere(system: System) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, radius) of a sphere about the box's centre around the box and every mirror."""
    centre = system.volume.center_mm
    reach = 0.5 * system.volume.size_mm.norm()
    for m in system.mirrors:
        size = m.radius_mm if m.shape == "circle" else m.half_size_mm.norm()
        reach = torch.maximum(reach, (m.center_mm - centre).norm() + size)
    return centre, reach


def _segments_beyond_windows(system: System, origins, directions, weights) -> ObjectSegments:
    """:func:`trace_object_segments` of flattened rays already through the windows."""
    box = system.volume
    parts = []

    def add_segment(path, rays, o, d, w, t_end):
        """The segments of ``rays`` (indices) along (o, d) up to t_end that cross the box."""
        t_near, t_far, hit = intersect_box(o, d, box.min_mm, box.max_mm)
        t_far = torch.minimum(t_far, t_end)
        keep = (hit & (t_far > t_near)).nonzero(as_tuple=True)[0]
        parts.append((rays[keep], torch.full_like(keep, path), o[keep], d[keep], w[keep], t_near[keep],
                      t_far[keep]))

    if system.mirrors:
        ts, hits, fronts = _mirror_hits(system, origins, directions)
        t_first, k_first, _ = _first(ts, hits)
    else:
        t_first = torch.full_like(weights, math.inf)
    lit = (weights > 0).nonzero(as_tuple=True)[0]
    add_segment(0, lit, origins[lit], directions[lit], weights[lit], t_first[lit])
    for k, mirror in enumerate(system.mirrors):
        if not bool(fronts[:, k].any()):  # no ray meets this mirror's face (most are out of reach)
            continue
        w_k = weights * mirror.reflectivity
        sel = (hits[:, k] & (k_first == k) & fronts[:, k] & (w_k > 0)).nonzero(as_tuple=True)[0]
        d_sel = directions[sel]
        o_k = origins[sel] + ts[sel, k].unsqueeze(-1) * d_sel
        d_k = reflect_directions(d_sel, mirror.normal)
        # The next mirror along the reflected ray ends the segment.
        t_end = _first(*_mirror_hits(system, o_k, d_k, skip=k)[:2])[0] if len(sel) else weights.new_zeros(0)
        add_segment(k + 1, sel, o_k, d_k, w_k[sel], t_end)
    ray, path, o, d, w, t_near, t_far = (torch.cat(column) for column in zip(*parts, strict=True))
    order = torch.argsort(ray * system.n_paths + path)  # by ray, then path (the keys are distinct)
    return ObjectSegments(ray[order], path[order], o[order], d[order], w[order], t_near[order], t_far[order])


def trace_object_rays(
    system: System, origins: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor
) -> TracedRays:
    """Trace rays leaving the lens (world frame) through windows and mirrors into the box, dense.

    :func:`trace_object_segments` laid out per ray and path: slot 0 holds every ray's direct
    segment origin and direction after the windows (the lens point, even where it misses the
    box); the other slots and all weights and ``t`` hold 0 where ``valid`` is False.

    Args:
        system: the instrument.
        origins: (..., 3) points on the lens, world frame, mm.
        directions: (..., 3) unit directions into object space.
        weights: (...) weight of each ray before windows and mirrors.

    Returns:
        Segments of shape (..., P) with P = 1 + number of mirrors.
    """
    shape, paths = weights.shape, system.n_paths
    o0, d0, w0 = _through_windows(system, origins, directions, weights)
    seg = _segments_beyond_windows(system, o0, d0, w0)
    n = o0.shape[0]
    where = (seg.ray, seg.path)
    vectors = o0.new_zeros(n, paths, 3)
    o = torch.cat([o0.unsqueeze(1), vectors[:, 1:]], 1).index_put(where, seg.origins)
    d = torch.cat([d0.unsqueeze(1), vectors[:, 1:]], 1).index_put(where, seg.directions)
    scalars = seg.weights.new_zeros(n, paths)
    return TracedRays(
        origins=o.reshape(*shape, paths, 3),
        directions=d.reshape(*shape, paths, 3),
        weights=scalars.index_put(where, seg.weights).reshape(*shape, paths),
        t_near=scalars.index_put(where, seg.t_near).reshape(*shape, paths),
        t_far=scalars.index_put(where, seg.t_far).reshape(*shape, paths),
        valid=torch.zeros(n, paths, dtype=torch.bool, device=o0.device).index_put(
            where, torch.ones_like(seg.ray, dtype=torch.bool)).reshape(*shape, paths),
        paths=torch.arange(paths, device=o0.device),
    )


def trace_pixels(
    system: System,
    pixels_uv: torch.Tensor,
    *,
    camera: int = 0,
    subpixel: torch.Tensor | None = None,
    aperture: torch.Tensor | None = None,
) -> TracedRays:
    """Trace pixels of one camera into object-space ray segments with photometric weights.

    Args:
        system: the instrument.
        pixels_uv: (N, 2) full-sensor pixel positions (u = column, v = row), px.
        camera: index of the camera in the system.
        subpixel: (N, S, 2) sub-pixel offsets in px (default: one sample at the centre).
        aperture: (N, S, 2) unit-disk aperture points (default: the aperture centre).

    Returns:
        Segments of shape (N, S, P); their weights include the 1/S sample average, so summing
        ``weight × line integral`` over (S, P) gives the expected photoelectrons of each pixel.
    """
    if pixels_uv.ndim != 2 or pixels_uv.shape[-1] != 2:
        raise ShapeError(f"trace_pixels: pixels_uv must have shape (N, 2), got {tuple(pixels_uv.shape)}")
    cam: Camera = system.cameras[camera]
    dtype, device = pixels_uv.dtype, pixels_uv.device
    n = pixels_uv.shape[0]
    if subpixel is None:
        subpixel = torch.zeros(n, 1, 2, dtype=dtype, device=device)
    if aperture is None:
        aperture = torch.zeros_like(subpixel)
    if subpixel.shape != aperture.shape or subpixel.shape[0] != n:
        raise ShapeError("trace_pixels: subpixel and aperture must both have shape (N, S, 2), got "
                         f"{tuple(subpixel.shape)} and {tuple(aperture.shape)}")
    return trace_object_rays(system, *_pixel_rays(cam, pixels_uv, subpixel, aperture))


def trace_pixel_segments(
    system: System, pixels_uv: torch.Tensor, *, camera: int, subpixel: torch.Tensor, aperture: torch.Tensor,
    compiled: bool | None = None,
) -> ObjectSegments:
    """:func:`trace_pixels`, compact: only the segments that cross the box.

    ``ray`` numbers the pixel samples ``n · S + s`` of the (N, S) samples, in the order of
    ``trace_pixels(...).valid.nonzero()``; traced by torch (``compiled=False``) the weights,
    origins, directions and ``t`` are bit for bit those of :func:`trace_pixels`' valid slots, by
    the compiled kernels (:func:`trace_object_segments`) within a few units in the last place.
    """
    if subpixel.shape != aperture.shape or subpixel.ndim != 3 or subpixel.shape[0] != pixels_uv.shape[0]:
        raise ShapeError("trace_pixel_segments: subpixel and aperture must both have shape (N, S, 2), got "
                         f"{tuple(subpixel.shape)} and {tuple(aperture.shape)}")
    return trace_object_segments(system, *_pixel_rays(system.cameras[camera], pixels_uv, subpixel, aperture),
                                 compiled=compiled)


def _pixel_rays(cam: Camera, pixels_uv, subpixel, aperture):
    """The (N, S) rays leaving the lens for pixel samples: origins, directions (world), weights."""
    n_samples = subpixel.shape[1]
    sensor_xy = cam.sensor.to_sensor_mm(pixels_uv.unsqueeze(1) + subpixel)  # (N, S, 2)
    o_cam, d_cam, etendue = camera_rays(cam.lens, sensor_xy, aperture)
    origins = cam.pose.to_world(o_cam)
    directions = cam.pose.directions_to_world(d_cam)
    weights = etendue * (cam.sensor.efficiency * cam.sensor.pixel_area_mm2 / n_samples)
    return origins, directions, weights


def virtual_points(system: System, points: torch.Tensor, path: int) -> torch.Tensor:
    """Where ``points`` (..., 3) appear to the camera along a path (their mirror image), mm."""
    if path == 0:
        return points
    mirror = system.mirrors[path - 1]
    return reflect_points(points, mirror.center_mm, mirror.normal)


def project_points(camera: Camera, points_world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chief-ray projection of world points onto the sensor (windows ignored).

    Args:
        camera: the camera.
        points_world: (..., 3) points, mm.

    Returns:
        pixels_uv: (..., 2) sensor positions, px (with lens distortion applied).
        depth_mm: (...) distance along the optical axis from the lens, mm.
    """
    p = camera.pose.to_camera(points_world)
    depth = p[..., 2]
    lens = camera.lens
    if lens.model == "telecentric":
        xy = p[..., :2] * lens.telecentric_magnification
    else:
        safe = torch.where(depth.abs() > 1e-9, depth, torch.ones_like(depth))
        normalized = p[..., :2] / safe.unsqueeze(-1)
        if lens.distortion is not None:
            normalized = distort(normalized, lens.distortion)
        xy = normalized * lens.image_distance_mm
    return camera.sensor.to_pixels(xy), depth


def blur_diameter_mm(camera: Camera, depth_mm: torch.Tensor) -> torch.Tensor:
    """Defocus blur diameter on the sensor, ``c = D·m·|z − s_o|/z`` (mm), of points at depth z."""
    lens = camera.lens
    if lens.model != "thin":
        return torch.zeros_like(depth_mm)
    aperture = 2.0 * lens.aperture_radius_mm
    so = lens.focus_distance_mm
    return aperture * lens.magnification * (depth_mm - so).abs() / depth_mm
