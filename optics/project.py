r"""Where a point source lands on the sensor: light traced forward, point → mirror → window → lens.

A point ``X`` seen along path ``k`` (0 direct, k ≥ 1 mirror k − 1) illuminates the whole lens
aperture; its image is the set of sensor points reached by the rays from ``X`` through every
aperture point. Each ray is aimed at an aperture point ``a`` from the virtual point ``X′`` (the
mirror image of ``X``), meets the mirror at ``H`` (on the segment ``X′ a``), reflects, crosses
the windows it crosses (Snell + Fresnel, :func:`optics.window.through_windows`) and lands on the lens plane at
``L``; the thin lens sends it to the sensor point conjugate to where the ray, extended back,
crosses the plane of focus: with ``b`` the backward direction in the camera frame,

.. math::

    T = L + \frac{s_o}{b_z} b, \qquad p = \operatorname{distort}(T_{xy} / s_o)\, s_i,

the exact inverse of :func:`optics.lens.camera_rays` (a backward ray from ``p`` through ``L``
passes through ``X``; tests/calibration/test_project.py checks this against
:func:`optics.trace.trace_pixels`). Each sample carries the photoelectrons per emitted photon
it stands for, ``QE · R_k · T_windows · dΩ / 4π`` with ``dΩ = A cos α / (n |a − X′|²)``
(REFERENCE §2), so a spot's flux and its **aperture-averaged centroid** (the flux-weighted mean
landing point, which is what a centroid of the measured spot estimates — not the chief ray:
mirror edges vignette the beam and defocus spreads it) follow by sums.

Differentiable with respect to the point and every optical parameter (mirror normals and
offsets, camera pose, focus distance, distortion), except through the discrete choices (inside a
mirror or the aperture, blocked by another mirror).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optics.errors import CalibrationError, ShapeError
from optics.lens import distort
from optics.mirror import intersect_mirror, reflect_directions, reflect_points
from optics.rays import dot
from optics.system import System
from optics.window import through_windows

__all__ = ["AIM_MARGIN", "SpotSamples", "aperture_pattern", "spot_centroids", "trace_point_to_sensor"]


AIM_MARGIN = 1.03  # aim over a disk 3 % wider than the aperture: windows shift rays sideways


@dataclass(frozen=True)
class SpotSamples:
    """Sensor landing points of the rays from point sources through the aperture.

    Attributes:
        pixels_uv: (..., A, 2) full-sensor landing positions, px.
        weights: (..., A) photoelectrons per photon emitted at the point (0 where invalid).
        valid: (..., A) the ray reaches the sensor along the path.
        aperture_uv: (..., A, 2) where the ray crosses the lens plane, in units of the aperture
            radius (camera frame x, y): the aperture point of the backward ray from
            ``pixels_uv`` that passes through the source.
    """

    pixels_uv: torch.Tensor
    weights: torch.Tensor
    valid: torch.Tensor
    aperture_uv: torch.Tensor

    def centroids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Flux-weighted centroid (..., 2) px and flux (...) in photoelectrons per photon."""
        flux = self.weights.sum(-1)
        safe = torch.where(flux > 0, flux, torch.ones_like(flux))
        centre = (self.weights.unsqueeze(-1) * self.pixels_uv).sum(-2) / safe.unsqueeze(-1)
        return centre, flux


def aperture_pattern(n: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """(n, 2) points spread evenly over the unit disk (Vogel's sunflower spiral), deterministic.

    Equal-area samples: sample ``i`` sits at radius ``√((i + ½)/n)`` and angle ``i·137.5°``, so
    sums over them approximate integrals over the aperture with a smooth, low error.
    """
    if n < 1:
        raise ShapeError(f"aperture_pattern: n must be ≥ 1, got {n}")
    i = torch.arange(n, dtype=dtype, device=device)
    r = torch.sqrt((i + 0.5) / n)
    theta = i * (math.pi * (3.0 - math.sqrt(5.0)))
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)


def _near_cone(system: System, start, r_start: float, end, r_end: float, skip: int | None) -> list[int]:
    """Mirrors (other than ``skip``) whose disk may cross the cone from ``start`` to ``end``.

    A conservative geometric pre-selection (not differentiable, it only chooses which mirrors are
    tested): the cone's radius grows linearly from ``r_start`` to ``r_end`` (mm); a mirror is kept
    when its centre lies within its radius + the cone's local radius + 1 mm of the axis segment.
    """
    with torch.no_grad():
        a = start.detach().to(torch.float64)
        axis = end.detach().to(torch.float64) - a
        length2 = float(dot(axis, axis))
        out = []
        for j, m in enumerate(system.mirrors):
            if j == skip:
                continue
            c = m.center_mm.detach().to(torch.float64)
            s = min(max(float(dot(c - a, axis)) / max(length2, 1e-12), 0.0), 1.0)
            dist = float((c - a - s * axis).norm())
            size = float(m.radius_mm) if m.shape == "circle" else float(m.half_size_mm.norm())
            if dist <= size + r_start + s * (r_end - r_start) + 1.0:
                out.append(j)
        return out


def _blocked(system: System, origins, directions, t_max, candidates: list[int]) -> torch.Tensor:
    """(...) one of the ``candidates`` mirrors meets the ray before ``t_max``."""
    blocked = torch.zeros(origins.shape[:-1], dtype=torch.bool, device=origins.device)
    for k in candidates:
        mirror = system.mirrors[k]
        t, hit, _ = intersect_mirror(mirror, origins, directions)
        blocked = blocked | (hit & (t < t_max))
    return blocked


def trace_point_to_sensor(
    system: System,
    points: torch.Tensor,
    path: int,
    aperture: torch.Tensor,
    *,
    camera: int = 0,
    edge_px: float | None = None,
) -> SpotSamples:
    """Trace light from points through one path onto the sensor of one camera.

    Args:
        system: the instrument (thin-lens or pinhole camera).
        points: (..., 3) source positions, world frame, mm.
        path: 0 direct, k ≥ 1 through mirror k − 1.
        aperture: (A, 2) points of the unit disk where the rays are aimed on the lens (scaled by
            the aperture radius × 1.03), shared by all points: equal-area samples
            (:func:`aperture_pattern`); or (..., A, 2), broadcast against the points, e.g. one
            random aperture point per point for a Monte-Carlo simulation.
        camera: camera index.
        edge_px: None for a hard aperture rim (Monte-Carlo simulation); a number for an
            antialiased rim whose ramp is this many sample spacings wide (fixed patterns).

    Returns:
        Samples of shape (..., A).

    Raises:
        CalibrationError: the lens is telecentric (not supported here) or ``path`` is out of range.
    """
    if not 0 <= path < system.n_paths:
        raise CalibrationError(f"trace_point_to_sensor: path {path} out of range 0…{system.n_paths - 1}")
    if aperture.ndim < 2 or aperture.shape[-1] != 2:
        raise ShapeError(f"trace_point_to_sensor: aperture must be (..., A, 2), got {tuple(aperture.shape)}")
    cam = system.cameras[camera]
    lens = cam.lens
    if lens.model == "telecentric":
        raise CalibrationError(
            "calibration: telecentric lenses are not supported; use a thin or pinhole lens"
        )
    dtype = points.dtype
    radius = lens.aperture_radius_mm if lens.model == "thin" else torch.zeros_like(lens.focal_length_mm)
    aim_r = radius * AIM_MARGIN
    ap = aperture.to(dtype)
    zeros = torch.zeros_like(ap[..., 0])
    a_cam = torch.stack([ap[..., 0] * aim_r, ap[..., 1] * aim_r, zeros], -1)  # (..., A, 3)
    a_world = cam.pose.to_world(a_cam)
    x = points.unsqueeze(-2)  # (..., 1, 3)
    if path == 0:
        virtual = x
    else:
        mirror = system.mirrors[path - 1]
        virtual = reflect_points(x, mirror.center_mm, mirror.normal)
    offset = a_world - virtual  # (..., A, 3)
    dist = offset.norm(dim=-1)
    d_lens = offset / dist.unsqueeze(-1)  # direction of the ray arriving at the lens
    axis = cam.pose.rotation[..., :, 2]
    cos_a = -dot(d_lens, axis)
    n_aim = ap.shape[-2]
    area = math.pi * aim_r**2
    solid = area / n_aim * cos_a.clamp_min(0.0) / dist**2  # (..., A) sr
    weight = solid / (4.0 * math.pi) * cam.sensor.efficiency
    x_b = x.expand_as(offset)
    box = system.volume
    box_r = 0.5 * float(box.size_mm.norm())
    lens_c, lens_r = cam.pose.position_mm, float(aim_r)
    inf = torch.full_like(dist, math.inf)
    if path == 0:
        origin, direction = x_b, d_lens
        near = _near_cone(system, box.center_mm, box_r, lens_c, lens_r, None)
        ok = ~_blocked(system, origin, direction, inf, near)
    else:
        k = path - 1
        mirror = system.mirrors[k]
        d_out = reflect_directions(d_lens, mirror.normal)  # from X toward the mirror
        t_h, hit, front = intersect_mirror(mirror, x_b, d_out)
        h = x_b + t_h.unsqueeze(-1) * d_out
        size = float(mirror.radius_mm) if mirror.shape == "circle" else float(mirror.half_size_mm.norm())
        near_in = _near_cone(system, box.center_mm, box_r, mirror.center_mm, size, k)
        near_out = _near_cone(system, mirror.center_mm, size, lens_c, lens_r, k)
        ok = hit & front & ~_blocked(system, x_b, d_out, t_h, near_in)
        ok = ok & ~_blocked(system, h, d_lens, inf, near_out)
        origin, direction = h, d_lens
        weight = weight * mirror.reflectivity
    if system.windows:  # those crossed before the lens plane, nearest first
        def lens_plane(o, d, t):
            b_z = -(d @ cam.pose.rotation)[..., 2]
            return torch.where(b_z > 1e-9, cam.pose.to_camera(o)[..., 2] / b_z.clamp_min(1e-9),
                               torch.full_like(b_z, math.inf))

        origin, direction, trans = through_windows(system.windows, origin, direction, lens_plane)
        weight = weight * trans
        ok = ok & (trans > 0)
    # Land on the lens plane (camera frame) and map to the sensor by the thin lens.
    o_c = cam.pose.to_camera(origin)
    b = -(direction @ cam.pose.rotation)  # backward direction, camera frame, b_z > 0
    bz_ok = b[..., 2] > 1e-9
    bz = torch.where(bz_ok, b[..., 2], torch.ones_like(b[..., 2]))
    t_l = o_c[..., 2] / bz  # o_c - t_l·b lies on z = 0 (the ray travels along −b)
    land = o_c - t_l.unsqueeze(-1) * b  # (..., A, 3)
    r_l = land[..., :2].norm(dim=-1) if lens.model == "thin" else torch.zeros_like(t_l)
    if edge_px is not None and lens.model == "thin":
        # Antialiased aperture edge: a sample within half a sample spacing of the rim counts in
        # proportion to how much of its cell lies inside (a linear ramp), so sums over a fixed
        # pattern change smoothly as the beam moves (quadrature error O(h²) instead of O(h)).
        h = aim_r * math.sqrt(math.pi / n_aim) * edge_px
        weight = weight * ((radius - r_l) / h + 0.5).clamp(0.0, 1.0)
        ok = ok & bz_ok & (t_l > 0) & (r_l <= radius + 0.5 * h)
    else:
        ok = ok & bz_ok & (t_l > 0) & (r_l <= radius)
    s_o, s_i = lens.focus_distance_mm, lens.image_distance_mm
    target_xy = land[..., :2] + (s_o / bz).unsqueeze(-1) * b[..., :2]
    normalized = target_xy / s_o
    if lens.distortion is not None:
        normalized = distort(normalized, lens.distortion)
    uv = cam.sensor.to_pixels(normalized * s_i)
    weight = torch.where(ok, weight, torch.zeros_like(weight))
    safe_r = torch.where(radius > 0, radius, torch.ones_like(radius))
    return SpotSamples(pixels_uv=uv, weights=weight, valid=ok, aperture_uv=land[..., :2] / safe_r)


def spot_centroids(
    system: System,
    points: torch.Tensor,
    paths: list[int] | None = None,
    *,
    n_aperture: int = 512,
    camera: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aperture-averaged spot centroids of point sources in each path.

    Args:
        system: the instrument.
        points: (N, 3) source positions, mm.
        paths: paths to predict (default: all).
        n_aperture: aperture samples (:func:`aperture_pattern`).
        camera: camera index.

    Returns:
        centroids: (N, P, 2) px (meaningless where ``flux`` is 0).
        flux: (N, P) photoelectrons per emitted photon.
    """
    paths = list(range(system.n_paths)) if paths is None else paths
    ap = aperture_pattern(n_aperture, dtype=points.dtype, device=points.device)
    cs, fs = [], []
    for p in paths:
        c, f = trace_point_to_sensor(system, points, p, ap, camera=camera, edge_px=1.0).centroids()
        cs.append(c)
        fs.append(f)
    return torch.stack(cs, -2), torch.stack(fs, -1)
