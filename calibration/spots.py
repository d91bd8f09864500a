"""Finding the image of a point source in a view: detection, sub-pixel centroid, uncertainty.

The spot is found on the image smoothed at the scale of the expected spot (a matched filter for
a blob of that size, so a defocused disk hundreds of pixels wide is found as reliably as a
one-pixel spot), then measured by the background-subtracted intensity centroid in a circular
window re-centred until it settles. The centroid estimates the flux-weighted mean landing
point of the photons, which is what :func:`optics.project.trace_point_to_sensor` predicts.
Its uncertainty follows from the photon and background noise of the pixels in the window:
``σ² = Σ (x − c)² var_i / F²``.

Not differentiable (it works on measured data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from optics.errors import CalibrationError

__all__ = [
    "AMBIGUITY_RATIO",
    "CENTROID_FLOOR_PX",
    "DETECTION_SIGMA",
    "MASKED_LIGHT_LIMIT",
    "Spot",
    "SpotMissing",
    "detect_spot",
]

DETECTION_SIGMA = 10.0  # peak significance (in σ of the smoothed noise) for a spot to count
AMBIGUITY_RATIO = 0.25  # a second peak this strong relative to the first makes the view ambiguous
CENTROID_FLOOR_PX = 0.005  # added in quadrature: pixel response and model limits
MASKED_LIGHT_LIMIT = 1e-3  # share of a spot's light on unusable pixels above which it is left out


class SpotMissing(CalibrationError):
    """No usable spot in this view and exposure (its observation is left out).

    None was found, it is cut by the region's edge, or part of its light fell on saturated or
    masked pixels (its centroid would be biased).
    """


@dataclass(frozen=True)
class Spot:
    """A measured spot.

    Attributes:
        u: centroid column, full-sensor px.
        v: centroid row, full-sensor px.
        sigma_px: estimated standard error of each centroid coordinate, px.
        flux_e: photoelectrons in the window.
        radius_px: RMS radius of the spot, px.
        significance: peak of the matched-filter image in σ of its noise.
    """

    u: float
    v: float
    sigma_px: float
    flux_e: float
    radius_px: float
    significance: float


def _background(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    vals = image[mask]
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med))) * 1.4826
    return med, max(mad, 1e-6)


def detect_spot(
    image: np.ndarray,
    roi: tuple[int, int, int, int],
    *,
    expected_diameter_px: float,
    mask: np.ndarray | None = None,
    where: str = "view",
) -> Spot:
    """Find the one point-source spot in a view and measure its centroid.

    Args:
        image: (h, w) photoelectrons (dark subtracted).
        roi: (x0, y0, w, h) of the view, full-sensor px.
        expected_diameter_px: expected spot diameter (defocus blur + source size), px.
        mask: (h, w) usable pixels (default all).
        where: name of the view and exposure for error messages.

    Returns:
        The spot.

    Raises:
        SpotMissing: no spot, a spot cut by the edge of the view, or one with more than
            :data:`MASKED_LIGHT_LIMIT` of its light on saturated or masked pixels.
        CalibrationError: several spots; too few usable pixels.
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    mask = np.ones_like(img, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.sum() < 16:
        raise CalibrationError(
            f"calibrate: {where} has fewer than 16 usable pixels; check the frames and dark"
        )
    bg, noise = _background(img, mask)
    data = np.where(mask, img - bg, 0.0)
    scale = max(1.0, expected_diameter_px / 4.0)
    smooth = ndimage.gaussian_filter(data, scale, mode="constant")
    # Noise of the smoothed image: white noise σ through a normalised Gaussian of σ = scale.
    noise_s = noise / (2.0 * math.sqrt(math.pi) * scale)
    signif = smooth / noise_s
    peak = np.unravel_index(int(np.argmax(signif)), signif.shape)
    best = float(signif[peak])
    if best < DETECTION_SIGMA:
        raise SpotMissing(
            f"calibrate: no spot found in {where} (best peak {best:.1f} σ < {DETECTION_SIGMA:g} σ); "
            "is the source on, inside the volume, and is this the right view region?"
        )
    # Other strong, separate peaks → ambiguous.
    sep = max(3.0, expected_diameter_px + 4.0 * scale)
    local_max = (signif == ndimage.maximum_filter(signif, size=int(2 * scale) | 1)) & (
        signif >= max(DETECTION_SIGMA, AMBIGUITY_RATIO * best)
    )
    rows, cols = np.nonzero(local_max)
    far = np.hypot(rows - peak[0], cols - peak[1]) > sep
    if far.any():
        j = int(np.argmax(np.where(far, signif[rows, cols], -np.inf)))
        raise CalibrationError(
            f"calibrate: ambiguous spots in {where}: peaks of {best:.0f} σ at (u, v) = "
            f"({peak[1] + roi[0]}, {peak[0] + roi[1]}) and {signif[rows[j], cols[j]]:.0f} σ at "
            f"({cols[j] + roi[0]}, {rows[j] + roi[1]}); one source per exposure, block stray light"
        )
    radius = 0.55 * expected_diameter_px + 4.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = float(peak[0]), float(peak[1])
    for _ in range(30):
        dist2 = (yy - cy) ** 2 + (xx - cx) ** 2
        win = (dist2 <= radius**2) & mask
        # Local background: the mean outside the window (a median of dark-subtracted integer
        # counts is biased by the spot's own pixels); none left → the dark frame's zero.
        outside = (dist2 > (radius + 3.0) ** 2) & mask
        local = float(img[outside].mean()) if outside.sum() >= 200 else 0.0
        data = np.where(mask, img - local, 0.0)
        flux = float(data[win].sum())
        if flux <= 0:
            raise SpotMissing(f"calibrate: no spot found in {where} (no net signal around the peak)")
        ny = float((data[win] * yy[win]).sum() / flux)
        nx = float((data[win] * xx[win]).sum() / flux)
        moved = math.hypot(ny - cy, nx - cx)
        cy, cx = ny, nx
        if moved < 1e-4:
            break
    if cy - radius < -0.5 or cx - radius < -0.5 or cy + radius > h - 0.5 or cx + radius > w - 0.5:
        raise SpotMissing(
            f"calibrate: the spot in {where} at (u, v) = ({cx + roi[0]:.1f}, {cy + roi[1]:.1f}) is cut by "
            "the edge of the view region; move the source inward or record larger regions"
        )
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    holes = disc & ~mask
    if holes.any():
        lost = _masked_light(data, mask, holes)
        if lost > MASKED_LIGHT_LIMIT * flux:
            raise SpotMissing(
                f"calibrate: the spot in {where} has {int(holes.sum())} saturated or masked pixels holding "
                f"≈ {100 * lost / flux:.2g} % of its light, which would bias its centroid; lower the exposure"
            )
    win = disc & mask
    var = np.clip(data[win], 0.0, None) + noise**2
    dx, dy = xx[win] - cx, yy[win] - cy
    sig_x = math.sqrt(float((dx**2 * var).sum())) / flux
    sig_y = math.sqrt(float((dy**2 * var).sum())) / flux
    r_rms = math.sqrt(max(float((data[win] * (dx**2 + dy**2)).sum()) / flux, 0.0))
    sigma = math.hypot(math.sqrt(0.5 * (sig_x**2 + sig_y**2)), CENTROID_FLOOR_PX)
    return Spot(u=cx + roi[0], v=cy + roi[1], sigma_px=sigma, flux_e=flux, radius_px=r_rms, significance=best)


def _masked_light(data: np.ndarray, mask: np.ndarray, holes: np.ndarray) -> float:
    """A lower bound on the light that fell on the ``holes`` (unusable pixels of a spot).

    Each hole is given the mean of its usable 3 × 3 neighbours, or, when it has none (inside a
    saturated core), the brightest usable value of the spot: a saturated pixel held at least that.
    """
    from scipy import ndimage

    good = np.where(mask, np.clip(data, 0.0, None), 0.0)
    total = ndimage.uniform_filter(good, 3, mode="constant")
    count = ndimage.uniform_filter(mask.astype(np.float64), 3, mode="constant")
    brightest = float(good.max())
    fill = np.where(count > 1e-9, total / np.maximum(count, 1e-9), brightest)
    return float(fill[holes].sum())
