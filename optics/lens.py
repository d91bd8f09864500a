"""Lens models — thin lens (finite, sampled aperture), pinhole, telecentric — and distortion.

Camera frame (OpenCV): x right, y down, z forward along the optical axis; the lens (its
principal plane) is at the origin and the sensor at ``z = −s_i`` behind it. The real image is
inverted; sensor coordinates here are *upright*, as a camera reads its sensor out, so a sensor
point ``s = (s_x, s_y)`` (mm from the principal point, x right, y down) looks toward the object
point ``(s_x, s_y)·s_o/s_i`` on the plane of focus, as in OpenCV's ``u = f·x/z + c``.

Thin lens (REFERENCE §3): ``1/f = 1/s_o + 1/s_i``, ``m = s_i/s_o``, aperture radius
``R = f/(2N)``. A ray from sensor point ``p`` through aperture point ``a`` leaves toward the
conjugate point of ``p`` on the plane of focus. Its étendue per unit sensor area is
``A_ap cos⁴θ / s_i²`` with θ the angle of the *object-space* ray to the axis (derived on the
object side, where the photons are counted; it gives the cos⁴ field vignetting and reduces to
the solid angle of the aperture for a point source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from optics.mirror import map_tensors
from optics.rays import normalize

__all__ = ["LENS_MODELS", "Lens", "camera_rays", "distort", "undistort"]

LENS_MODELS = ("thin", "pinhole", "telecentric")


@dataclass(frozen=True)
class Lens:
    """An imaging lens.

    Attributes:
        model: ``"thin"``, ``"pinhole"`` or ``"telecentric"``.
        focal_length_mm: () focal length f, mm (thin, pinhole).
        f_number: () N; the aperture radius is f/(2N). For a telecentric lens, the image-side
            f-number (object-side numerical aperture m/(2N)).
        focus_distance_mm: () object distance s_o of the plane of focus from the lens, mm.
        telecentric_magnification: () m of a telecentric lens (unused otherwise).
        distortion: (8,) OpenCV coefficients (k1, k2, p1, p2, k3, k4, k5, k6), or None.
    """

    model: str
    focal_length_mm: torch.Tensor
    f_number: torch.Tensor
    focus_distance_mm: torch.Tensor
    telecentric_magnification: torch.Tensor
    distortion: torch.Tensor | None = None

    @property
    def image_distance_mm(self) -> torch.Tensor:
        """() s_i = f s_o / (s_o − f), mm; for a telecentric lens m·s_o (a nominal scale)."""
        if self.model == "telecentric":
            return self.telecentric_magnification * self.focus_distance_mm
        f, so = self.focal_length_mm, self.focus_distance_mm
        return f * so / (so - f)

    @property
    def magnification(self) -> torch.Tensor:
        """() lateral magnification m = s_i / s_o at the plane of focus."""
        if self.model == "telecentric":
            return self.telecentric_magnification
        return self.image_distance_mm / self.focus_distance_mm

    @property
    def aperture_radius_mm(self) -> torch.Tensor:
        """() radius of the entrance pupil R = f/(2N), mm."""
        return self.focal_length_mm / (2.0 * self.f_number)

    def depth_of_field_mm(self, blur_mm: float) -> torch.Tensor:
        """() total depth over which the blur diameter stays below ``blur_mm`` on the sensor.

        From ``c = D·m·|z − s_o|/z``: ``z = s_o / (1 ∓ c/(D m))``.
        """
        if self.model != "thin":
            return torch.full_like(self.focal_length_mm, math.inf)
        so, m = self.focus_distance_mm, self.magnification
        k = blur_mm / (2.0 * self.aperture_radius_mm * m)
        return so / (1.0 - k) - so / (1.0 + k)

    def to(self, dtype: torch.dtype | None = None, device=None) -> Lens:
        """Return a copy with every tensor moved to ``dtype``/``device``."""
        return map_tensors(self, lambda t: t.to(dtype=dtype, device=device))


def distort(xy: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    r"""Apply OpenCV distortion to ideal normalised coordinates.

    .. math::

        x'' = x \\frac{1 + k_1 r^2 + k_2 r^4 + k_3 r^6}{1 + k_4 r^2 + k_5 r^4 + k_6 r^6}
              + 2 p_1 x y + p_2 (r^2 + 2 x^2)

    and likewise for y (with ``p_1 (r² + 2y²) + 2 p_2 x y``).

    Args:
        xy: (..., 2) ideal normalised coordinates x/z, y/z.
        coeffs: (8,) k1, k2, p1, p2, k3, k4, k5, k6.

    Returns:
        (..., 2) distorted normalised coordinates.
    """
    k1, k2, p1, p2, k3, k4, k5, k6 = coeffs.unbind(-1)
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort(xy_distorted: torch.Tensor, coeffs: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Invert :func:`distort` by fixed-point iteration (as OpenCV's ``undistortPoints``).

    Differentiable (the iterations are unrolled). Accurate to float precision for the
    distortion of ordinary lenses within their field; not for extreme fisheye distortion.
    """
    k1, k2, p1, p2, k3, k4, k5, k6 = coeffs.unbind(-1)
    xd, yd = xy_distorted.unbind(-1)
    x, y = xd, yd
    for _ in range(iterations):
        r2 = x * x + y * y
        icdist = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x = (xd - dx) * icdist
        y = (yd - dy) * icdist
    return torch.stack([x, y], dim=-1)


def camera_rays(
    lens: Lens, sensor_xy_mm: torch.Tensor, aperture_uv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object-space rays, in the camera frame, for sensor points and aperture samples.

    Args:
        lens: the lens.
        sensor_xy_mm: (..., 2) upright sensor coordinates from the principal point, mm
            (x right, y down), before distortion correction.
        aperture_uv: (..., 2) points of the unit disk choosing where the ray crosses the
            aperture (ignored by the pinhole model).

    Returns:
        origins: (..., 3) ray origins in the lens plane (camera frame), mm.
        directions: (..., 3) unit directions into object space.
        etendue: (...) étendue per unit sensor area, sr (multiply by the pixel area, mm², to get
            mm²·sr; with a line integral of emission, photons).
    """
    s_i = lens.image_distance_mm
    s_o = lens.focus_distance_mm
    xy = sensor_xy_mm
    if lens.distortion is not None and lens.model != "telecentric":
        xy = undistort(xy / s_i, lens.distortion) * s_i
    zeros = torch.zeros_like(xy[..., 0])
    ones = torch.ones_like(zeros)
    if lens.model == "telecentric":
        m = lens.telecentric_magnification
        na = m / (2.0 * lens.f_number)  # object-side numerical aperture
        in_focus = torch.stack([xy[..., 0] / m, xy[..., 1] / m, s_o * ones], dim=-1)
        tilt = torch.cat([aperture_uv * na, ones.unsqueeze(-1)], dim=-1)
        directions = normalize(tilt)
        origins = in_focus - (s_o / tilt[..., 2]).unsqueeze(-1) * tilt
        etendue = ones * (math.pi / (4.0 * lens.f_number**2))
        return origins, directions, etendue

    # Conjugate of the sensor point on the plane of focus.
    scale = s_o / s_i
    target = torch.stack([xy[..., 0] * scale, xy[..., 1] * scale, s_o * ones], dim=-1)
    radius = lens.aperture_radius_mm
    if lens.model == "pinhole":
        origins = torch.zeros_like(target)
    else:
        origins = torch.stack([aperture_uv[..., 0] * radius, aperture_uv[..., 1] * radius, zeros],
                              dim=-1)
    directions = normalize(target - origins)
    # Étendue of the (sensor area, aperture area) pair measured on the object side: for a
    # fixed aperture point the sensor element maps to dA_s/m² on the plane of focus, which
    # subtends cos³θ dA_s/(m² s_o²) at the aperture, times cosθ for the aperture's own tilt.
    # θ is the object-side angle of the ray; m s_o = s_i.
    cos_obj = directions[..., 2]
    area = math.pi * radius**2
    etendue = area * cos_obj**4 / s_i**2
    return origins, directions, etendue
