import numpy as np
import pytest

from calibration.spots import SpotMissing, detect_spot
from optics.errors import CalibrationError


def _image(rng, centres, *, size=(60, 70), sigma=1.2, flux=2e4, read=2.0):
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(float)
    lam = np.zeros(size)
    for cx, cy in centres:
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        lam += flux * g / g.sum()
    return rng.poisson(lam) + rng.normal(0.0, read, size)


def test_centroid_is_unbiased_with_the_stated_uncertainty():
    rng = np.random.default_rng(0)
    errs, sigmas = [], []
    for _ in range(60):
        cx, cy = rng.uniform(25, 45), rng.uniform(20, 40)
        spot = detect_spot(_image(rng, [(cx, cy)]), (100, 200, 70, 60), expected_diameter_px=5.0)
        errs.append([spot.u - 100 - cx, spot.v - 200 - cy])
        sigmas.append(spot.sigma_px)
    errs = np.array(errs)
    sig = float(np.mean(sigmas))
    assert abs(errs.mean()) < 3 * sig / np.sqrt(errs.size)
    # the stated σ matches the scatter (pixel-integration of a σ = 1.2 px spot adds ~nothing)
    assert 0.7 < errs.std() / sig < 1.4
    assert spot.flux_e == pytest.approx(2e4, rel=0.02)
    assert spot.radius_px == pytest.approx(np.sqrt(2 * (1.2**2 + 1 / 12)), rel=0.1)


def test_defocused_disk_is_found_and_centred():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:300, 0:300].astype(float)
    disk = ((xx - 151.3) ** 2 + (yy - 140.7) ** 2 <= 80**2).astype(float)
    img = rng.poisson(disk * 5e5 / disk.sum()) + rng.normal(0, 2, disk.shape)
    spot = detect_spot(img, (0, 0, 300, 300), expected_diameter_px=160.0)
    assert abs(spot.u - 151.3) < 4 * spot.sigma_px and abs(spot.v - 140.7) < 4 * spot.sigma_px
    assert spot.sigma_px < 0.3


def test_no_spot_two_spots_and_cut_spot_are_clear_errors():
    rng = np.random.default_rng(2)
    blank = rng.normal(0, 2, (50, 50))
    with pytest.raises(SpotMissing, match="no spot found in view r1m01, exposure 3"):
        detect_spot(blank, (0, 0, 50, 50), expected_diameter_px=4.0, where="view r1m01, exposure 3")
    two = _image(rng, [(15, 20), (45, 30)])
    with pytest.raises(CalibrationError, match="ambiguous spots"):
        detect_spot(two, (0, 0, 70, 60), expected_diameter_px=4.0)
    edge = _image(rng, [(1.0, 30)])
    with pytest.raises(SpotMissing, match="cut by the edge"):
        detect_spot(edge, (0, 0, 70, 60), expected_diameter_px=4.0)
    with pytest.raises(CalibrationError, match="usable pixels"):
        detect_spot(blank, (0, 0, 50, 50), expected_diameter_px=4.0, mask=np.zeros((50, 50), bool))


def test_a_spot_with_light_on_saturated_pixels_is_left_out_but_a_dead_pixel_at_its_rim_is_not():
    rng = np.random.default_rng(3)
    img = _image(rng, [(35.3, 30.6)], flux=2e5)
    core = img > 0.5 * img.max()  # the saturated core, masked as the run reader masks it
    with pytest.raises(SpotMissing, match=r"saturated or masked pixels holding .* lower the exposure"):
        detect_spot(img, (0, 0, 70, 60), expected_diameter_px=5.0, mask=~core, where="view r1m01, exposure 0")
    # A large defocused disc with one dead pixel in it: a negligible share of its light.
    yy, xx = np.mgrid[0:300, 0:300].astype(float)
    disk = ((xx - 151.3) ** 2 + (yy - 140.7) ** 2 <= 80**2).astype(float)
    img = rng.poisson(disk * 5e5 / disk.sum()) + rng.normal(0, 2, disk.shape)
    dead = np.ones(disk.shape, bool)
    dead[140, 200] = False
    spot = detect_spot(img, (0, 0, 300, 300), expected_diameter_px=160.0, mask=dead)
    assert abs(spot.u - 151.3) < 0.5 and abs(spot.v - 140.7) < 0.5
