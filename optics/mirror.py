r"""Flat mirrors: the Householder reflection and ray–mirror interaction.

A planar mirror ``n·x = δ`` with unit normal ``n`` maps points and directions by

.. math::

    x' = (I - 2 n n^T) x + 2 δ n, \\qquad d' = d - 2 (d·n) n,

so reflecting twice is the identity and the Householder matrix ``H = I − 2nnᵀ`` has
``H² = I`` and ``det H = −1`` (a mirror view is a left-handed virtual camera). REFERENCE §3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optics.rays import dot, intersect_disk, intersect_rectangle, normalize

__all__ = [
    "MIRROR_SHAPES",
    "Mirror",
    "householder",
    "intersect_mirror",
    "map_tensors",
    "reflect_directions",
    "reflect_points",
]

MIRROR_SHAPES = ("circle", "rectangle")


@dataclass(frozen=True)
class Mirror:
    """A flat mirror; its reflective face looks along ``normal``.

    Attributes:
        name: label used in tables and the system file.
        center_mm: (3,) centre of the mirror surface, world frame, mm.
        normal: (3,) normal of the reflective face (normalised where used).
        shape: ``"circle"`` or ``"rectangle"``.
        radius_mm: () radius of a circular mirror, mm.
        half_size_mm: (2,) half width and half height of a rectangular mirror, mm.
        u_axis: (3,) direction of a rectangle's width (projected into the mirror plane).
        reflectivity: () fraction of the power reflected (0–1].
    """

    name: str
    center_mm: torch.Tensor
    normal: torch.Tensor
    shape: str
    radius_mm: torch.Tensor
    half_size_mm: torch.Tensor
    u_axis: torch.Tensor
    reflectivity: torch.Tensor

    @property
    def unit_normal(self) -> torch.Tensor:
        """(3,) unit normal of the reflective face."""
        return normalize(self.normal)

    @property
    def offset_mm(self) -> torch.Tensor:
        """() plane offset δ in ``n·x = δ``, mm."""
        return dot(self.unit_normal, self.center_mm)

    def to(self, dtype: torch.dtype | None = None, device=None) -> Mirror:
        """Return a copy with every tensor moved to ``dtype``/``device``."""
        return map_tensors(self, lambda t: t.to(dtype=dtype, device=device))


def map_tensors(obj, fn):
    """A copy of the frozen dataclass ``obj`` with ``fn`` applied to every tensor field."""
    from dataclasses import fields, replace

    return replace(
        obj,
        **{f.name: fn(getattr(obj, f.name)) for f in fields(obj)
           if isinstance(getattr(obj, f.name), torch.Tensor)},
    )


def householder(normal: torch.Tensor) -> torch.Tensor:
    """Householder matrix ``I − 2nnᵀ`` of a plane: ``(..., 3) -> (..., 3, 3)``."""
    n = normalize(normal)
    eye = torch.eye(3, dtype=n.dtype, device=n.device)
    return eye - 2.0 * n.unsqueeze(-1) * n.unsqueeze(-2)


def reflect_points(points: torch.Tensor, center: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Mirror images of ``points`` (..., 3) in the plane through ``center`` with ``normal``, mm."""
    n = normalize(normal)
    return points - 2.0 * dot(points - center, n).unsqueeze(-1) * n


def reflect_directions(directions: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Reflected directions ``d − 2(d·n)n``: ``(..., 3) -> (..., 3)``."""
    n = normalize(normal)
    return directions - 2.0 * dot(directions, n).unsqueeze(-1) * n


def intersect_mirror(
    mirror: Mirror, origins: torch.Tensor, directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays meet a mirror.

    Args:
        mirror: the mirror.
        origins: (..., 3) ray origins, mm.
        directions: (..., 3) ray directions.

    Returns:
        t: (...) ray parameter of the hit (0 where invalid).
        hit: (...) the ray meets the mirror's aperture ahead of its origin (either face;
            any hit blocks the ray).
        front: (...) the hit is on the reflective face (the ray travels against the normal).
    """
    if mirror.shape == "circle":
        t, hit = intersect_disk(origins, directions, mirror.center_mm, mirror.normal,
                                mirror.radius_mm)
    else:
        t, hit = intersect_rectangle(origins, directions, mirror.center_mm, mirror.normal,
                                     mirror.u_axis, mirror.half_size_mm)
    front = hit & (dot(directions, mirror.normal) < 0)
    return t, hit, front
