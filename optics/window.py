"""Flat windows: two parallel refracting faces with Snell's law and Fresnel transmission.

A plane-parallel slab of thickness ``t`` and index ``n`` keeps ray directions and shifts rays
sideways by ``t sin θ (1 − cos θ / √(n² − sin² θ))`` (REFERENCE §3).

A window acts on a ray only where the ray crosses it (:func:`through_windows`): its entry face
within the clear aperture, ahead of the ray and before the ray's leg ends (the box, a mirror, the
lens); several windows act in the order the ray meets them. A ray that passes the window's plane
outside the aperture is untouched, unless it meets the window's mount (an opaque annulus out to
``mount_radius_mm``, the port's flange or wall), which blocks it. So each camera of a
multi-camera setup can sit behind its own viewport, and a window beyond the cloud never touches
a ray that has already crossed it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from optics.mirror import map_tensors
from optics.rays import dot, intersect_plane, normalize

__all__ = ["Window", "fresnel_transmittance", "refract", "through_windows", "trace_window", "window_entry"]


@dataclass(frozen=True)
class Window:
    """A plane-parallel window (vacuum viewport).

    Attributes:
        name: label.
        center_mm: (3,) centre of the slab (mid-plane), world frame, mm.
        normal: (3,) normal of the faces (either sense).
        thickness_mm: () slab thickness, mm.
        refractive_index: () index of the glass relative to the surrounding medium.
        aperture_radius_mm: () clear aperture radius.
        mount_radius_mm: () outer radius of the opaque mount around the aperture (≥ the
            aperture): a ray crossing the window's plane between the two is blocked. None: no
            mount (rays outside the aperture pass the window's plane untouched).
    """

    name: str
    center_mm: torch.Tensor
    normal: torch.Tensor
    thickness_mm: torch.Tensor
    refractive_index: torch.Tensor
    aperture_radius_mm: torch.Tensor
    mount_radius_mm: torch.Tensor | None = None

    def to(self, dtype: torch.dtype | None = None, device=None) -> Window:
        """Return a copy with every tensor moved to ``dtype``/``device``."""
        return map_tensors(self, lambda t: t.to(dtype=dtype, device=device))


def refract(
    directions: torch.Tensor, normal: torch.Tensor, eta: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refract unit directions at an interface (Snell's law, vector form).

    Args:
        directions: (..., 3) unit incident directions.
        normal: (..., 3) unit normal facing the incident side (``d·n < 0``).
        eta: ratio n₁/n₂ of the indices (incident over transmitted).

    Returns:
        refracted: (..., 3) unit refracted directions (the incident direction where invalid).
        cos_i: (...) cosine of the angle of incidence.
        valid: (...) no total internal reflection.
    """
    cos_i = -dot(directions, normal)
    sin2_t = eta**2 * (1.0 - cos_i**2)
    valid = sin2_t < 1.0
    cos_t = torch.sqrt(torch.where(valid, 1.0 - sin2_t, torch.ones_like(sin2_t)))
    refracted = eta * directions + (eta * cos_i - cos_t).unsqueeze(-1) * normal
    return torch.where(valid.unsqueeze(-1), refracted, directions), cos_i, valid


def fresnel_transmittance(
    cos_i: torch.Tensor, cos_t: torch.Tensor, n1: torch.Tensor | float, n2: torch.Tensor | float
) -> torch.Tensor:
    """Power transmittance of unpolarised light: the mean of the s and p Fresnel terms."""
    rs = (n1 * cos_i - n2 * cos_t) / (n1 * cos_i + n2 * cos_t)
    rp = (n2 * cos_i - n1 * cos_t) / (n2 * cos_i + n1 * cos_t)
    return 1.0 - 0.5 * (rs**2 + rp**2)


def window_entry(window: Window, origins: torch.Tensor, directions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays meet a window's entry face: (t, crosses, blocked).

    ``t`` (...) the ray parameter of the entry face (+inf where the ray never meets its plane
    ahead); ``crosses`` the entry point lies within the clear aperture; ``blocked`` it lies on
    the mount (outside the aperture, within ``mount_radius_mm``).
    """
    axis = normalize(window.normal)
    sign = torch.where(dot(directions, axis) < 0, 1.0, -1.0).to(directions.dtype)
    n_face = sign.unsqueeze(-1) * axis
    t, ahead = intersect_plane(origins, directions, window.center_mm + 0.5 * window.thickness_mm * n_face,
                               n_face)
    off = origins + t.unsqueeze(-1) * directions - window.center_mm
    radial = off - dot(off, axis).unsqueeze(-1) * axis
    r2 = dot(radial, radial)
    crosses = ahead & (r2 <= window.aperture_radius_mm**2)
    blocked = (ahead & ~crosses & (r2 <= window.mount_radius_mm**2) if window.mount_radius_mm is not None
               else torch.zeros_like(crosses))
    return torch.where(ahead, t, torch.full_like(t, math.inf)), crosses, blocked


def through_windows(
    windows, origins: torch.Tensor, directions: torch.Tensor,
    leg_end: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays through the windows they cross, nearest first: (origins, directions, transmittance).

    Args:
        windows: the windows (any order).
        origins: (..., 3) ray origins, mm.
        directions: (..., 3) unit directions.
        leg_end: ``leg_end(origins, directions, t)`` → (...) where each ray's leg ends (a window
            met at or beyond it does not act); it may return +inf where nothing ends the leg
            before ``t``, the distance to the windows about to act (so that it can skip work).
            None: legs never end.

    Returns:
        origins and directions after the windows (refracted rays leave the far face), and the
        product of the Fresnel transmittances (0 for a ray blocked by an aperture's edge or a
        mount). Differentiable with respect to the windows' and the rays' parameters.
    """
    trans = torch.ones_like(origins[..., 0])
    met = [torch.zeros_like(trans, dtype=torch.bool) for _ in windows]
    for _ in range(len(windows)):
        entries = [window_entry(w, origins, directions) for w in windows]
        t = torch.stack([torch.where(done, torch.full_like(e[0], math.inf), e[0])
                         for e, done in zip(entries, met, strict=True)], -1)
        t_next, which = t.min(-1)
        ahead = torch.isfinite(t_next)
        if not bool(ahead.any()):
            break
        if leg_end is not None:
            ahead = ahead & (t_next < leg_end(origins, directions, t_next))
        if not bool(ahead.any()):
            break
        for j, (window, (_, crosses, blocked)) in enumerate(zip(windows, entries, strict=True)):
            acts = ahead & (which == j)
            if not bool(acts.any()):
                continue
            met[j] = met[j] | acts
            through = acts & crosses
            o2, d2, t2, unblocked = trace_window(window, origins, directions)
            origins = torch.where(through.unsqueeze(-1), o2, origins)
            directions = torch.where(through.unsqueeze(-1), d2, directions)
            trans = torch.where(through, trans * t2 * unblocked, trans)
            trans = torch.where(acts & blocked, torch.zeros_like(trans), trans)
    return origins, directions, trans


def trace_window(
    window: Window, origins: torch.Tensor, directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Propagate rays through one window (every ray that meets its plane must pass the aperture).

    Args:
        window: the window.
        origins: (..., 3) ray origins before the window, mm.
        directions: (..., 3) unit directions.

    Returns:
        origins_out: (..., 3) exit points on the far face, mm.
        directions_out: (..., 3) unit exit directions (parallel to the input for a slab).
        transmittance: (...) product of the two Fresnel transmittances (1 for rays that never
            reach the window's plane, which pass unchanged).
        valid: (...) the ray is not blocked: it crosses both faces inside the clear aperture,
            or never reaches the window's plane.
    """
    n_glass = window.refractive_index
    axis = normalize(window.normal)
    # Face normal pointing back toward the incoming rays.
    sign = torch.where(dot(directions, axis) < 0, 1.0, -1.0).to(directions.dtype)
    n_face = sign.unsqueeze(-1) * axis
    half = 0.5 * window.thickness_mm
    entry_point = window.center_mm + half * n_face
    exit_point = window.center_mm - half * n_face

    t1, ok1 = intersect_plane(origins, directions, entry_point, n_face)
    p1 = origins + t1.unsqueeze(-1) * directions
    d1, cos1, _ = refract(directions, n_face, 1.0 / n_glass)
    t2, ok2 = intersect_plane(p1, d1, exit_point, n_face)
    p2 = p1 + t2.unsqueeze(-1) * d1
    d2, cos2, ok3 = refract(d1, n_face, n_glass)

    def inside(p: torch.Tensor) -> torch.Tensor:
        off = p - window.center_mm
        radial = off - dot(off, axis).unsqueeze(-1) * axis
        return dot(radial, radial) <= window.aperture_radius_mm**2

    cos_t1 = dot(d1, -n_face)
    trans = fresnel_transmittance(cos1, cos_t1, 1.0, n_glass)
    trans = trans * fresnel_transmittance(cos2, dot(d2, -n_face), n_glass, 1.0)
    through = ok1 & ok2 & ok3 & inside(p1) & inside(p2)
    origins_out = torch.where(ok1.unsqueeze(-1), p2, origins)
    directions_out = torch.where(ok1.unsqueeze(-1), normalize(d2), directions)
    trans = torch.where(ok1, torch.where(through, trans, torch.zeros_like(trans)),
                        torch.ones_like(trans))
    return origins_out, directions_out, trans, through | ~ok1
