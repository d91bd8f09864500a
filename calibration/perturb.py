"""Realistically wrong instruments, and how far two instruments' mirrors are apart.

A mounted mirror is tilted a little about the two axes in its plane and displaced a little. A
displacement *within* the mirror plane does not change the reflection (only the plane
``n·x = δ`` and the aperture's position matter), so mirror position errors are reported as the
**offset along the normal**: the signed distance of the true mirror centre from the estimated
mirror plane (:func:`mirror_errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from optics.errors import ConfigError
from optics.limits import check_seed
from optics.rays import dot, normalize
from optics.system import System

__all__ = ["MAX_SHIFT_UM", "MAX_TILT_DEG", "MirrorErrors", "in_plane_axes", "mirror_errors", "perturb_system",
           "tilt_normal"]


def in_plane_axes(normal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two unit axes (3,), (3,) spanning the plane perpendicular to ``normal`` (right-handed).

    The first is the projection of the world x axis (or y when the normal is close to x), so
    the axes are a fixed function of the normal.
    """
    n = normalize(normal)
    ref = torch.zeros_like(n)
    ref[0 if abs(float(n[0])) < 0.9 else 1] = 1.0
    u = normalize(ref - dot(ref, n) * n)
    v = torch.cross(n, u, dim=-1)
    return u, v


def tilt_normal(normal: torch.Tensor, tilt_rad: torch.Tensor) -> torch.Tensor:
    """Unit normal turned by the small rotation ``tilt = (a, b)`` (rad) about the in-plane axes.

    The rotation vector is ``a·u + b·v`` (``u``, ``v`` from :func:`in_plane_axes` of the given
    normal); the result is exact (Rodrigues), differentiable with respect to ``tilt``.
    """
    n = normalize(normal)
    u, v = in_plane_axes(n.detach())
    omega = tilt_rad[..., 0:1] * u + tilt_rad[..., 1:2] * v  # (..., 3), ⟂ n
    angle = omega.norm(dim=-1, keepdim=True)
    safe = torch.where(angle > 1e-12, angle, torch.ones_like(angle))
    axis = omega / safe
    # Rodrigues for a vector perpendicular to the axis: n cos θ + (axis × n) sin θ.
    rotated = n * torch.cos(angle) + torch.cross(axis, n.expand_as(axis), dim=-1) * torch.sin(angle)
    return torch.where(angle > 1e-12, rotated, n + torch.cross(omega, n.expand_as(omega), dim=-1))


#: The largest σ of a perturbation: beyond them the mirrors no longer make the instrument.
MAX_TILT_DEG = 30.0
MAX_SHIFT_UM = 1e5


def perturb_system(system: System, *, tilt_deg: float, shift_um: float, seed: int) -> System:
    """A copy of ``system`` with every mirror randomly tilted and shifted.

    Each mirror is turned about its two in-plane axes by independent normal angles of standard
    deviation ``tilt_deg`` (so the tilt of the normal has RMS ``√2 · tilt_deg``) and its centre is
    moved by a 3-D normal vector with standard deviation ``shift_um`` per axis.

    Args:
        system: the nominal instrument.
        tilt_deg: σ of each tilt angle, degrees (≥ 0).
        shift_um: σ of each component of the shift, µm (≥ 0).
        seed: random seed.

    Raises:
        ConfigError: negative σ, or a system without mirrors.
    """
    check_seed(seed, "system perturb")
    if tilt_deg < 0 or shift_um < 0 or not (math.isfinite(tilt_deg) and math.isfinite(shift_um)):
        raise ConfigError(
            f"system perturb: --tilt-deg and --shift-um must be finite and ≥ 0, got {tilt_deg} and {shift_um}"
        )
    if tilt_deg > MAX_TILT_DEG or shift_um > MAX_SHIFT_UM:
        raise ConfigError(
            f"system perturb: --tilt-deg {tilt_deg:g} and --shift-um {shift_um:g} must be at most "
            f"{MAX_TILT_DEG:g}° and {MAX_SHIFT_UM:g} µm (an instrument, not a new one); pass smaller errors")
    if not system.mirrors:
        raise ConfigError(f"system perturb: system '{system.name}' has no mirrors to perturb")
    gen = torch.Generator().manual_seed(seed)
    mirrors = []
    for m in system.mirrors:
        tilt = torch.randn(2, generator=gen, dtype=torch.float64) * math.radians(tilt_deg)
        shift = torch.randn(3, generator=gen, dtype=torch.float64) * (shift_um * 1e-3)
        normal = tilt_normal(m.normal.to(torch.float64), tilt).to(m.normal.dtype)
        center = (m.center_mm.to(torch.float64) + shift).to(m.center_mm.dtype)
        u_axis = m.u_axis
        if m.shape == "rectangle":
            u_axis = normalize(u_axis - dot(u_axis, normal) * normal)
        mirrors.append(replace(m, normal=normal, center_mm=center, u_axis=u_axis))
    note = (
        f"perturbed from '{system.name}': mirror tilts σ {tilt_deg:g}° about each in-plane axis, "
        f"shifts σ {shift_um:g} µm per axis, seed {seed}"
    )
    description = f"{system.description} [{note}]" if system.description else note
    return replace(system, mirrors=tuple(mirrors), description=description)


@dataclass(frozen=True)
class MirrorErrors:
    """Per-mirror differences between an estimated and a true instrument.

    Attributes:
        names: mirror names.
        tilt_deg: angle between the estimated and the true normal, degrees.
        normal_shift_um: signed distance of the true mirror centre from the estimated plane, µm
            (the displacement that matters for reflection; in-plane shifts do not).
    """

    names: tuple[str, ...]
    tilt_deg: tuple[float, ...]
    normal_shift_um: tuple[float, ...]

    @property
    def tilt_rms_deg(self) -> float:
        """RMS over mirrors of the tilt error, degrees."""
        return math.sqrt(sum(t * t for t in self.tilt_deg) / max(len(self.tilt_deg), 1))

    @property
    def shift_rms_um(self) -> float:
        """RMS over mirrors of the normal offset error, µm."""
        return math.sqrt(sum(s * s for s in self.normal_shift_um) / max(len(self.normal_shift_um), 1))

    @property
    def shift_rms_relative_um(self) -> float:
        """RMS over mirrors of the normal offset error after removing its mean, µm.

        Insensitive to a common offset of all mirrors (nearly a change of scale about the lens,
        which a calibration with unknown target positions cannot see).
        """
        n = max(len(self.normal_shift_um), 1)
        mean = sum(self.normal_shift_um) / n
        return math.sqrt(sum((s - mean) ** 2 for s in self.normal_shift_um) / n)

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "tilt_rms_deg": self.tilt_rms_deg,
            "normal_shift_rms_um": self.shift_rms_um,
            "normal_shift_rms_relative_um": self.shift_rms_relative_um,
            "mirrors": [
                {"name": n, "tilt_deg": t, "normal_shift_um": s}
                for n, t, s in zip(self.names, self.tilt_deg, self.normal_shift_um, strict=True)
            ],
        }


def mirror_errors(estimate: System, truth: System) -> MirrorErrors:
    """How far each mirror of ``estimate`` is from the same mirror of ``truth``.

    Raises:
        ConfigError: the systems have different mirrors.
    """
    if [m.name for m in estimate.mirrors] != [m.name for m in truth.mirrors]:
        raise ConfigError(
            "mirror_errors: the two systems have different mirrors; compare the same instrument"
        )
    tilts, shifts = [], []
    for e, t in zip(estimate.mirrors, truth.mirrors, strict=True):
        ne = normalize(e.normal.detach().to(torch.float64))
        nt = normalize(t.normal.detach().to(torch.float64))
        cos = float(dot(ne, nt).clamp(-1.0, 1.0))
        sin = float(torch.cross(ne, nt, dim=-1).norm())
        tilts.append(math.degrees(math.atan2(sin, cos)))
        offset = float(
            dot(ne, t.center_mm.detach().to(torch.float64) - e.center_mm.detach().to(torch.float64))
        )
        shifts.append(offset * 1e3)
    return MirrorErrors(tuple(m.name for m in truth.mirrors), tuple(tilts), tuple(shifts))
