"""Ray primitives: normalisation and ray–plane, disk, rectangle and box intersections.

All functions are batch-first with coordinates last, ``(..., 3)``, work in float32 and float64,
and return a validity mask instead of NaN or inf: a ray that misses gets ``valid = False`` and a
finite placeholder distance, and denominators are guarded with ``torch.where`` so the
unselected branch cannot poison gradients.
"""

from __future__ import annotations

import torch

__all__ = [
    "T_MIN_MM",
    "dot",
    "intersect_box",
    "intersect_disk",
    "intersect_plane",
    "intersect_rectangle",
    "normalize",
]

_EPS = 1e-12
T_MIN_MM = 1e-6  # hits closer than this to the ray origin are ignored (self-intersection)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the last axis: ``(..., 3), (..., 3) -> (...)`` (broadcast).

    Written out by component: the same sum, ``(a₀b₀ + a₁b₁) + a₂b₂``, bit for bit, as
    ``(a * b).sum(-1)`` on torch's CPU kernels, without the (..., 3) temporary and its reduction.
    """
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def normalize(v: torch.Tensor) -> torch.Tensor:
    """Unit vectors along ``v``: ``(..., 3) -> (..., 3)``; zero vectors stay zero."""
    norm = v.norm(dim=-1, keepdim=True)
    return v / torch.where(norm > _EPS, norm, torch.ones_like(norm))


def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ok = den.abs() > _EPS
    return num / torch.where(ok, den, torch.ones_like(den)), ok


def intersect_plane(
    origins: torch.Tensor,
    directions: torch.Tensor,
    point: torch.Tensor,
    normal: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersect rays with the plane through ``point`` with normal ``normal``.

    Args:
        origins: (..., 3) ray origins, mm.
        directions: (..., 3) ray directions (any length; ``t`` is in units of it).
        point: (..., 3) a point of the plane, mm (broadcast against the rays).
        normal: (..., 3) plane normal (need not be unit).

    Returns:
        t: (...) ray parameter of the hit (0 where invalid).
        valid: (...) the ray is not parallel to the plane and the hit lies ahead (t > 0).
    """
    t, ok = _safe_divide(dot(point - origins, normal), dot(directions, normal))
    valid = ok & (t > T_MIN_MM)
    return torch.where(valid, t, torch.zeros_like(t)), valid


def intersect_disk(
    origins: torch.Tensor,
    directions: torch.Tensor,
    center: torch.Tensor,
    normal: torch.Tensor,
    radius: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersect rays with a disk of ``radius`` (mm) centred at ``center``.

    Returns:
        t: (...) ray parameter of the hit, valid: (...) hit ahead and inside the disk.
    """
    t, valid = intersect_plane(origins, directions, center, normal)
    hit = origins + t.unsqueeze(-1) * directions
    n = normalize(normal)
    offset = hit - center
    in_plane = offset - dot(offset, n).unsqueeze(-1) * n
    valid = valid & (dot(in_plane, in_plane) <= torch.as_tensor(radius) ** 2)
    return t, valid


def intersect_rectangle(
    origins: torch.Tensor,
    directions: torch.Tensor,
    center: torch.Tensor,
    normal: torch.Tensor,
    u_axis: torch.Tensor,
    half_size: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersect rays with a rectangle.

    Args:
        origins: (..., 3) ray origins, mm.
        directions: (..., 3) ray directions.
        center: (..., 3) rectangle centre, mm.
        normal: (..., 3) rectangle normal.
        u_axis: (..., 3) direction of the rectangle's first side (projected into the plane).
        half_size: (..., 2) half lengths along ``u`` and ``v = normal × u``, mm.

    Returns:
        t: (...) ray parameter of the hit, valid: (...) hit ahead and inside the rectangle.
    """
    t, valid = intersect_plane(origins, directions, center, normal)
    hit = origins + t.unsqueeze(-1) * directions
    n = normalize(normal)
    u = normalize(u_axis - dot(u_axis, n).unsqueeze(-1) * n)
    v = torch.cross(n, u, dim=-1)
    offset = hit - center
    inside = (dot(offset, u).abs() <= half_size[..., 0]) & (dot(offset, v).abs() <= half_size[..., 1])
    return t, valid & inside


def intersect_box(
    origins: torch.Tensor,
    directions: torch.Tensor,
    box_min: torch.Tensor,
    box_max: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entry and exit parameters of rays through an axis-aligned box (slab method).

    Args:
        origins: (..., 3) ray origins, mm.
        directions: (..., 3) ray directions.
        box_min: (3,) lower corner, mm.
        box_max: (3,) upper corner, mm.

    Returns:
        t_near: (...) entry parameter, clipped at 0 (an origin inside the box enters at 0).
        t_far: (...) exit parameter.
        valid: (...) the ray passes through the box ahead of its origin. Invalid entries hold 0.
    """
    small = directions.abs() <= _EPS
    safe_dir = torch.where(small, torch.full_like(directions, _EPS), directions)
    t0 = (box_min - origins) / safe_dir
    t1 = (box_max - origins) / safe_dir
    lo = torch.minimum(t0, t1)
    hi = torch.maximum(t0, t1)
    # A direction parallel to a slab: inside the slab → no constraint, outside → miss.
    inside_slab = (origins >= box_min) & (origins <= box_max)
    big = torch.full_like(lo, 1e30)
    lo = torch.where(small, torch.where(inside_slab, -big, big), lo)
    hi = torch.where(small, torch.where(inside_slab, big, -big), hi)
    t_near = lo.amax(dim=-1).clamp_min(0.0)
    t_far = hi.amin(dim=-1)
    valid = t_far > t_near
    zero = torch.zeros_like(t_near)
    return torch.where(valid, t_near, zero), torch.where(valid, t_far, zero), valid
