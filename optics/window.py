"""Flat windows: two parallel refracting faces with Snell's law and Fresnel transmission.

A plane-parallel slab of thickness ``t`` and index ``n`` keeps ray directions and shifts rays
sideways by ``t sin θ (1 − cos θ / √(n² − sin² θ))`` (REFERENCE §3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optics.mirror import map_tensors
from optics.rays import dot, intersect_plane, normalize

__all__ = ["Window", "fresnel_transmittance", "refract", "trace_window"]


@dataclass(frozen=True)
class Window:
    """A plane-parallel window (vacuum viewport).

    Attributes:
        name: label.
        center_mm: (3,) centre of the slab (mid-plane), world frame, mm.
        normal: (3,) normal of the faces (either sense).
        thickness_mm: () slab thickness, mm.
        refractive_index: () index of the glass relative to the surrounding medium.
        aperture_radius_mm: () clear aperture radius; rays outside it are blocked by the mount.
    """

    name: str
    center_mm: torch.Tensor
    normal: torch.Tensor
    thickness_mm: torch.Tensor
    refractive_index: torch.Tensor
    aperture_radius_mm: torch.Tensor

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


def trace_window(
    window: Window, origins: torch.Tensor, directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Propagate rays through a window.

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
