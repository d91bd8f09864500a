"""Learnable optical parameters: an ``nn.Module`` that builds the instrument on each forward pass.

The geometry objects of :mod:`optics` are frozen dataclasses of tensors; this module holds the
*corrections* to a nominal instrument as parameters and returns a new :class:`optics.system.System`
from :meth:`OpticalParameters.forward`, so everything downstream (the forward point tracer, the
pixel tracer, the renderer) is differentiable with respect to them.

Parameters are stored in units of their prior standard deviation (``value = σ · z``), so the
prior toward the nominal instrument is ``½ Σ z²`` and every parameter is O(1) for the optimiser.

Groups (``fit``):

- ``mirrors``: per mirror, two tilts (rad) about its in-plane axes and the offset (mm) of its
  plane along its nominal normal. In-plane shifts are not parameters: they do not change the
  reflection.
- ``pose``: camera rotation (rotation vector in the camera frame, rad) and position (mm).
- ``focus``: the lens's focus distance ``s_o`` (mm); the image distance (and so the
  magnification) follows from ``1/f = 1/s_o + 1/s_i``.
- ``distortion``: OpenCV k1, k2, p1, p2 added to the nominal coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from calibration.perturb import tilt_normal
from optics.errors import ConfigError
from optics.system import System

__all__ = ["FIT_GROUPS", "OpticalParameters", "PriorConfig", "parse_fit_groups"]

FIT_GROUPS = ("mirrors", "pose", "focus", "distortion")


def parse_fit_groups(text: str, *, where: str = "calibrate --fit") -> tuple[str, ...]:
    """``"mirrors,pose"`` → ``("mirrors", "pose")``; unknown or empty names are errors."""
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    bad = [g for g in groups if g not in FIT_GROUPS]
    if bad or not groups:
        raise ConfigError(
            f"{where}: '{text}' is not a list of {', '.join(FIT_GROUPS)}; "
            f"pass e.g. mirrors or mirrors,pose,focus"
        )
    return tuple(dict.fromkeys(groups))


@dataclass(frozen=True)
class PriorConfig:
    """Standard deviations of the prior toward the nominal instrument (also the parameter units).

    Attributes:
        tilt_deg: mirror tilt about each in-plane axis, degrees.
        shift_mm: mirror offset along its normal, mm.
        rotation_deg: camera rotation about each axis, degrees.
        position_mm: camera position along each axis, mm.
        focus_mm: focus distance, mm.
        distortion: each distortion coefficient (dimensionless).
    """

    tilt_deg: float = 2.0
    shift_mm: float = 0.5
    rotation_deg: float = 1.0
    position_mm: float = 2.0
    focus_mm: float = 2.0
    distortion: float = 0.05

    def validate(self) -> None:
        """Raise ConfigError for a non-positive σ."""
        for key, value in self.__dict__.items():
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"calibration prior: '{key}' must be a finite σ > 0, got {value}")


def _skew(w: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(w[0])
    return torch.stack(
        [
            torch.stack([zero, -w[2], w[1]]),
            torch.stack([w[2], zero, -w[0]]),
            torch.stack([-w[1], w[0], zero]),
        ]
    )


class OpticalParameters(nn.Module):
    """Corrections to a nominal instrument; ``forward()`` returns the corrected System.

    Args:
        nominal: the nominal instrument (kept in float64).
        fit: the groups to make learnable (others stay at the nominal values).
        prior: σ of the prior (and unit) of each kind of parameter.
        camera: the camera whose pose, focus and distortion are corrected.
        fix_mean_shift: hold the mean of the mirror offsets at zero (a gauge fix: a common
            offset of all mirrors along their normals is nearly a change of scale about the lens,
            which unknown target positions cannot see).
    """

    def __init__(
        self,
        nominal: System,
        fit: tuple[str, ...] = ("mirrors",),
        *,
        prior: PriorConfig = PriorConfig(),
        camera: int = 0,
        fix_mean_shift: bool = False,
    ):
        super().__init__()
        for g in fit:
            if g not in FIT_GROUPS:
                raise ConfigError(
                    f"OpticalParameters: unknown group '{g}'; choose from {', '.join(FIT_GROUPS)}"
                )
        prior.validate()
        self.nominal = nominal.to(torch.float64)
        self.fit = tuple(fit)
        self.prior = prior
        self.camera = camera
        self.fix_mean_shift = fix_mean_shift
        n_m = len(self.nominal.mirrors)
        f64 = torch.float64
        self.mirror_tilt = nn.Parameter(torch.zeros(n_m, 2, dtype=f64), requires_grad="mirrors" in fit)
        self.mirror_shift = nn.Parameter(torch.zeros(n_m, dtype=f64), requires_grad="mirrors" in fit)
        self.pose_rotation = nn.Parameter(torch.zeros(3, dtype=f64), requires_grad="pose" in fit)
        self.pose_position = nn.Parameter(torch.zeros(3, dtype=f64), requires_grad="pose" in fit)
        self.focus = nn.Parameter(torch.zeros((), dtype=f64), requires_grad="focus" in fit)
        self.distortion = nn.Parameter(torch.zeros(4, dtype=f64), requires_grad="distortion" in fit)

    # Physical values of the corrections ------------------------------------------------------

    def tilts_rad(self) -> torch.Tensor:
        """(M, 2) mirror tilts about the in-plane axes, rad."""
        return self.mirror_tilt * math.radians(self.prior.tilt_deg)

    def shifts_mm(self) -> torch.Tensor:
        """(M,) mirror offsets along the nominal normals, mm."""
        z = self.mirror_shift - self.mirror_shift.mean() if self.fix_mean_shift else self.mirror_shift
        return z * self.prior.shift_mm

    def rotation_rad(self) -> torch.Tensor:
        """(3,) camera rotation vector, camera frame, rad."""
        return self.pose_rotation * math.radians(self.prior.rotation_deg)

    def position_mm(self) -> torch.Tensor:
        """(3,) camera displacement, world frame, mm."""
        return self.pose_position * self.prior.position_mm

    def focus_mm(self) -> torch.Tensor:
        """() change of the focus distance, mm."""
        return self.focus * self.prior.focus_mm

    def distortion_delta(self) -> torch.Tensor:
        """(4,) changes of k1, k2, p1, p2."""
        return self.distortion * self.prior.distortion

    def prior_loss(self) -> torch.Tensor:
        """½ Σ z² over the learnable parameters (a Gaussian prior toward the nominal values)."""
        total = torch.zeros((), dtype=torch.float64)
        for p in self.parameters():
            if p.requires_grad:
                total = total + 0.5 * (p**2).sum()
        return total

    def n_free(self) -> int:
        """Number of learnable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self) -> System:
        """The corrected instrument (float64), differentiable with respect to the parameters."""
        nom = self.nominal
        mirrors = list(nom.mirrors)
        if "mirrors" in self.fit:
            tilts, shifts = self.tilts_rad(), self.shifts_mm()
            for k, m in enumerate(nom.mirrors):
                n0 = m.normal / m.normal.norm()
                mirrors[k] = replace(
                    m, normal=tilt_normal(n0, tilts[k]), center_mm=m.center_mm + shifts[k] * n0
                )
        cameras = list(nom.cameras)
        cam = cameras[self.camera]
        if "pose" in self.fit:
            rot = cam.pose.rotation @ torch.linalg.matrix_exp(_skew(self.rotation_rad()))
            cam = replace(
                cam,
                pose=replace(cam.pose, rotation=rot, position_mm=cam.pose.position_mm + self.position_mm()),
            )
        lens = cam.lens
        if "focus" in self.fit:
            lens = replace(lens, focus_distance_mm=lens.focus_distance_mm + self.focus_mm())
        if "distortion" in self.fit:
            base = lens.distortion if lens.distortion is not None else torch.zeros(8, dtype=torch.float64)
            delta = torch.cat(
                [
                    self.distortion_delta()[:2],
                    self.distortion_delta()[2:],
                    torch.zeros(4, dtype=torch.float64),
                ]
            )
            # OpenCV order k1, k2, p1, p2, k3, k4, k5, k6
            lens = replace(lens, distortion=base + delta)
        cam = replace(cam, lens=lens)
        cameras[self.camera] = cam
        return replace(nom, mirrors=tuple(mirrors), cameras=tuple(cameras))

    def changes(self) -> dict:
        """JSON-ready parameter changes in physical units (tilts in degrees, shifts in µm)."""
        with torch.no_grad():
            out: dict = {"fit": list(self.fit)}
            if "mirrors" in self.fit:
                tilts = torch.rad2deg(self.tilts_rad())
                out["mirrors"] = [
                    {
                        "name": m.name,
                        "tilt_u_deg": float(tilts[k, 0]),
                        "tilt_v_deg": float(tilts[k, 1]),
                        "tilt_deg": float(tilts[k].norm()),
                        "normal_shift_um": float(self.shifts_mm()[k] * 1e3),
                    }
                    for k, m in enumerate(self.nominal.mirrors)
                ]
            if "pose" in self.fit:
                out["pose"] = {
                    "rotation_deg": torch.rad2deg(self.rotation_rad()).tolist(),
                    "position_um": (self.position_mm() * 1e3).tolist(),
                }
            if "focus" in self.fit:
                out["focus_distance_mm"] = float(self.focus_mm())
            if "distortion" in self.fit:
                out["distortion_k1_k2_p1_p2"] = self.distortion_delta().tolist()
        return out
