"""Sensors, poses and cameras.

Pixel coordinates follow OpenCV: ``(u, v)`` = (column, row), ``(0, 0)`` is the centre of the
top-left pixel, u right, v down. Full-sensor coordinates are used everywhere (regions of
interest are crops in these coordinates). The principal point (where the optical axis meets the
sensor) is the sensor centre ``((W − 1)/2, (H − 1)/2)`` unless the system file gives it
(``principal_point_px``, as a calibration measures it: OpenCV's ``(cx, cy)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from optics.lens import Lens
from optics.mirror import map_tensors
from optics.rays import normalize

__all__ = ["Camera", "Pose", "Sensor", "look_at_rotation", "roi_pixel_centers", "rois_overlap"]


@dataclass(frozen=True)
class Sensor:
    """A camera sensor (plain numbers: nothing here is fitted by gradient).

    Attributes:
        width_px: number of pixel columns.
        height_px: number of pixel rows.
        pixel_pitch_um: pixel pitch, µm.
        quantum_efficiency: photoelectrons per photon (0–1].
        gain_e_per_adu: photoelectrons per ADU.
        read_noise_e: read noise, e⁻ RMS.
        offset_adu: black level, ADU.
        bit_depth: bits of the ADC; values saturate at 2^bits − 1.
        principal_point: (u, v) of the optical axis on the sensor, px; None: the sensor centre.
        sensitivity: the light this camera records relative to what the numbers above predict
            (exposure, transmission or gain errors), as a calibration measured it; 1 by default.
    """

    width_px: int
    height_px: int
    pixel_pitch_um: float
    quantum_efficiency: float
    gain_e_per_adu: float
    read_noise_e: float
    offset_adu: float
    bit_depth: int
    principal_point: tuple[float, float] | None = None
    sensitivity: float = 1.0

    @property
    def efficiency(self) -> float:
        """Photoelectrons recorded per photon reaching a pixel: quantum efficiency × sensitivity."""
        return self.quantum_efficiency * self.sensitivity

    @property
    def pixel_pitch_mm(self) -> float:
        """Pixel pitch, mm."""
        return self.pixel_pitch_um * 1e-3

    @property
    def pixel_area_mm2(self) -> float:
        """Area of one pixel, mm²."""
        return self.pixel_pitch_mm**2

    @property
    def saturation_adu(self) -> int:
        """Largest value the ADC can report."""
        return 2**self.bit_depth - 1

    @property
    def principal_point_px(self) -> tuple[float, float]:
        """(u, v) of the optical axis on the sensor, px (the given one, else the sensor centre)."""
        if self.principal_point is not None:
            return (float(self.principal_point[0]), float(self.principal_point[1]))
        return ((self.width_px - 1) / 2.0, (self.height_px - 1) / 2.0)

    def to_sensor_mm(self, pixels_uv: torch.Tensor) -> torch.Tensor:
        """Upright sensor coordinates (mm from the principal point) of pixel positions (..., 2)."""
        cu, cv = self.principal_point_px
        centre = torch.tensor([cu, cv], dtype=pixels_uv.dtype, device=pixels_uv.device)
        return (pixels_uv - centre) * self.pixel_pitch_mm

    def to_pixels(self, sensor_xy_mm: torch.Tensor) -> torch.Tensor:
        """Pixel positions (..., 2) of upright sensor coordinates, mm."""
        cu, cv = self.principal_point_px
        centre = torch.tensor([cu, cv], dtype=sensor_xy_mm.dtype, device=sensor_xy_mm.device)
        return sensor_xy_mm / self.pixel_pitch_mm + centre


def roi_pixel_centers(roi: tuple[int, int, int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Full-sensor ``(u, v)`` = (column, row) of the pixel centres of a sensor crop.

    Args:
        roi: ``(x0, y0, width, height)``: columns ``x0 … x0 + width − 1``, rows
            ``y0 … y0 + height − 1``, full-sensor px.
        dtype: floating dtype of the result.

    Returns:
        (height, width, 2) pixel centres, px: entry ``[i, j]`` is ``(x0 + j, y0 + i)``; reshape
        to ``(height·width, 2)`` for row-major order (the order of an image's ``reshape(-1)``).
    """
    x0, y0, w, h = roi
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype) + y0, torch.arange(w, dtype=dtype) + x0, indexing="ij")
    return torch.stack([u, v], -1)


def rois_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two sensor crops ``(x0, y0, width, height)`` share a pixel (touching edges do not)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def look_at_rotation(position: torch.Tensor, look_at: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Camera-to-world rotation (columns: camera x, y, z axes in the world frame).

    The camera looks along ``look_at − position``; image "up" (−y in the camera frame) is the
    projection of ``up``. Differentiable with respect to all three.
    """
    z = normalize(look_at - position)
    x = normalize(torch.cross(z, up, dim=-1))
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


@dataclass(frozen=True)
class Pose:
    """Where the camera (its lens centre) is and how it is turned.

    Attributes:
        position_mm: (3,) lens centre in the world frame, mm.
        rotation: (3, 3) camera-to-world rotation; columns are the camera axes.
    """

    position_mm: torch.Tensor
    rotation: torch.Tensor

    def to_world(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Camera-frame points (..., 3) to world points, mm."""
        return points_cam @ self.rotation.transpose(-1, -2) + self.position_mm

    def directions_to_world(self, directions_cam: torch.Tensor) -> torch.Tensor:
        """Camera-frame directions (..., 3) to world directions."""
        return directions_cam @ self.rotation.transpose(-1, -2)

    def to_camera(self, points_world: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) to camera-frame points, mm."""
        return (points_world - self.position_mm) @ self.rotation

    def to(self, dtype: torch.dtype | None = None, device=None) -> Pose:
        """Return a copy with every tensor moved to ``dtype``/``device``."""
        return map_tensors(self, lambda t: t.to(dtype=dtype, device=device))


@dataclass(frozen=True)
class Camera:
    """One camera: sensor, lens and pose."""

    name: str
    sensor: Sensor
    lens: Lens
    pose: Pose

    @property
    def object_pixel_mm(self) -> float:
        """A pixel's size in object space at the plane of focus, mm: pitch / |magnification|."""
        return self.sensor.pixel_pitch_mm / abs(float(self.lens.magnification))

    def to(self, dtype: torch.dtype | None = None, device=None) -> Camera:
        """Return a copy with every tensor moved to ``dtype``/``device``."""
        from dataclasses import replace

        return replace(self, lens=self.lens.to(dtype, device), pose=self.pose.to(dtype, device))
