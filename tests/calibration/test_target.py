"""Calibration target sets: the target.toml reader and writer, and the point-source simulation."""

import math

import pytest
import torch

from calibration.target import (
    TARGET_SCHEMA,
    TargetSpec,
    parse_target_spec,
    read_target_spec,
    simulate_point_exposure,
    target_spec_text,
)
from optics.design import view_regions
from optics.errors import CalibrationError, ConfigError
from optics.project import spot_centroids
from tests.calibration.conftest import small_dome

F64 = torch.float64

GOOD = """\
schema = "recon.calibration_target/1"
description = "three beads on a stage"
bead_sigma_mm = 0.01
photons = 5e7

[[positions]]
exposure = 2
position_mm = [0.1, -0.25, 0.123456789]

[[positions]]
exposure = 0
position_mm = [0, 1, -1]

[[positions]]
exposure = 1
position_mm = [-0.5, 0.5, 0.0]
"""


def _data(**top) -> dict:
    d = {
        "schema": TARGET_SCHEMA,
        "positions": [
            {"exposure": 0, "position_mm": [0.0, 0.1, 0.2]},
            {"exposure": 1, "position_mm": [0.3, 0.4, 0.5]},
        ],
    }
    d.update(top)
    return d


def _with_row(i: int, **row) -> dict:
    d = _data()
    d["positions"][i] = row
    return d


def _write(directory, text: str):
    (directory / "target.toml").write_text(text, encoding="utf-8")
    return directory


# ------------------------------------------------------------------------------- reading, writing


def test_read_a_valid_target_file(tmp_path):
    spec = read_target_spec(_write(tmp_path, GOOD))
    assert spec.exposures == (2, 0, 1)  # file order, not sorted: row i is position i
    assert spec.positions_mm.dtype == F64 and spec.positions_mm.shape == (3, 3)
    assert spec.positions_mm[0].tolist() == [0.1, -0.25, 0.123456789]
    assert spec.positions_mm[1].tolist() == [0.0, 1.0, -1.0]  # integers are numbers too
    assert (spec.bead_sigma_mm, spec.photons, spec.description) == (0.01, 5e7, "three beads on a stage")


def test_a_valid_file_round_trips_through_target_spec_text(tmp_path):
    spec = read_target_spec(_write(tmp_path, GOOD))
    again = read_target_spec(_write(tmp_path, target_spec_text(spec)))
    assert again.exposures == spec.exposures
    torch.testing.assert_close(again.positions_mm, spec.positions_mm, rtol=0.0, atol=1e-12)
    assert (again.bead_sigma_mm, again.photons, again.description) == (0.01, 5e7, spec.description)
    assert target_spec_text(again) == target_spec_text(spec)  # a fixed point


def test_a_spec_without_positions_or_extras_round_trips(tmp_path):
    spec = TargetSpec(exposures=(0, 1, 2), positions_mm=None)
    text = target_spec_text(spec)
    assert "position_mm" not in text and "photons" not in text and "description" not in text
    again = read_target_spec(_write(tmp_path, text))
    assert again == TargetSpec(exposures=(0, 1, 2), positions_mm=None, bead_sigma_mm=0.0)


def test_written_positions_are_rounded_to_a_nanometre(tmp_path):
    positions = torch.tensor([[0.1234567891234, -1 / 3, 2 / 3]], dtype=F64)
    text = target_spec_text(TargetSpec(exposures=(0,), positions_mm=positions, bead_sigma_mm=0.02))
    again = read_target_spec(_write(tmp_path, text))
    assert again.positions_mm[0].tolist() == [0.123456789, -0.333333333, 0.666666667]
    torch.testing.assert_close(again.positions_mm, positions, rtol=0.0, atol=5e-10)


def test_defaults_of_optional_keys():
    spec = parse_target_spec(_data())
    assert (spec.bead_sigma_mm, spec.photons, spec.description) == (0.0, None, "")
    assert parse_target_spec(_data(bead_sigma_mm=0)).bead_sigma_mm == 0.0


def test_a_directory_without_target_toml_is_a_calibration_error(tmp_path):
    with pytest.raises(CalibrationError) as info:
        read_target_spec(tmp_path)
    msg = str(info.value)
    assert f"{tmp_path / 'target.toml'} does not exist" in msg and "recon simulate" in msg
    assert "\n" not in msg


def test_invalid_toml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        read_target_spec(_write(tmp_path, "schema = \n"))
    assert str(tmp_path / "target.toml") in str(info.value)


# ------------------------------------------------------------------------------- invalid files


POSITION_1 = "key 'positions[1].position_mm'"


@pytest.mark.parametrize(
    "data, fragment",
    [
        (_data(bead_sigma=0.01), "key 'bead_sigma' is not known; allowed: bead_sigma_mm, description"),
        (_data(schema="recon.calibration_target/2"), "key 'schema' must be 'recon.calibration_target/1'"),
        ({k: v for k, v in _data().items() if k != "schema"}, "key 'schema' must be"),
        ({"schema": TARGET_SCHEMA}, "key 'positions' must be a non-empty array of tables"),
        (_data(positions=[]), "key 'positions' must be a non-empty array of tables"),
        (_data(positions={"exposure": 0}), "key 'positions' must be a non-empty array of tables"),
        (_data(positions=[{"exposure": 0}, 3]), "key 'positions' must be a non-empty array of tables"),
        (_with_row(1, exposure=1, position=[0, 0, 0]), "key 'positions[1].position' is not known"),
        (_with_row(0, position_mm=[0, 0, 0]), "key 'positions[0].exposure' must be an integer ≥ 0, got None"),
        (_with_row(0, exposure=-1), "key 'positions[0].exposure' must be an integer ≥ 0, got -1"),
        (_with_row(0, exposure=1.0), "key 'positions[0].exposure' must be an integer ≥ 0, got 1.0"),
        (_with_row(0, exposure=True), "key 'positions[0].exposure' must be an integer ≥ 0, got True"),
        (_with_row(0, exposure="0"), "key 'positions[0].exposure' must be an integer ≥ 0"),
        (_with_row(1, exposure=1, position_mm=[0, 0]), f"{POSITION_1} must be 3 finite numbers"),
        (_with_row(1, exposure=1, position_mm=[0, 0, 0, 0]), f"{POSITION_1} must be 3 finite numbers"),
        (_with_row(1, exposure=1, position_mm=[0, "a", 0]), f"{POSITION_1} must be 3 finite numbers"),
        (_with_row(1, exposure=1, position_mm="0 0 0"), f"{POSITION_1} must be 3 finite numbers"),
        (_with_row(1, exposure=1, position_mm=[True, 0.0, 0.0]), POSITION_1),
        (_with_row(1, exposure=1, position_mm=[0, math.nan, 0]), POSITION_1),
        (_with_row(1, exposure=1, position_mm=[0, 0, -math.inf]), POSITION_1),
        (_with_row(1, exposure=0, position_mm=[0, 0, 0]), "two positions name the same exposure"),
        (_with_row(1, exposure=1), "some positions have 'position_mm' and others not; give all or none"),
        (_data(bead_sigma_mm=-0.01), "key 'bead_sigma_mm'"),
        (_data(bead_sigma_mm="0.01"), "key 'bead_sigma_mm' must be a number ≥ 0, got '0.01'"),
        (_data(bead_sigma_mm=True), "key 'bead_sigma_mm'"),
        (_data(bead_sigma_mm=math.nan), "key 'bead_sigma_mm'"),
        (_data(bead_sigma_mm=math.inf), "key 'bead_sigma_mm'"),
        (_data(photons="lots"), "key 'photons'"),
        (_data(photons=[1]), "key 'photons'"),
        (_data(photons=-5.0), "key 'photons'"),
        (_data(photons=math.nan), "key 'photons'"),
        (_data(photons=False), "key 'photons'"),
    ],
)
def test_each_bad_key_is_a_one_line_config_error_naming_it(data, fragment):
    with pytest.raises(ConfigError) as info:
        parse_target_spec(data, source="set/target.toml")
    msg = str(info.value)
    assert msg.startswith("set/target.toml: ") and fragment in msg
    assert "\n" not in msg


def test_errors_from_a_file_name_the_file(tmp_path):
    text = GOOD.replace("exposure = 0", "exposure = -3")
    with pytest.raises(ConfigError) as info:
        read_target_spec(_write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / 'target.toml'}: key 'positions[1].exposure'")


@pytest.mark.parametrize(
    "line, key",
    [
        ("bead_sigma_mm = nan", "bead_sigma_mm"),
        ("bead_sigma_mm = true", "bead_sigma_mm"),
        ('photons = "lots"', "photons"),
        ("photons = -5.0", "photons"),
        ("photons = inf", "photons"),
    ],
)
def test_bad_numbers_in_a_file_are_config_errors_naming_the_key(tmp_path, line, key):
    """TOML's nan, inf and booleans reach the checks as Python floats and bools."""
    text = GOOD.replace("bead_sigma_mm = 0.01\nphotons = 5e7\n", line + "\n")
    assert line in text
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        read_target_spec(_write(tmp_path, text))


# ---------------------------------------------------------------------------------- simulation


POINT = torch.tensor([0.3, -0.2, 0.4], dtype=F64)
PHOTONS = 1e8
BEAD_MM = 0.02


@pytest.fixture(scope="module")
def dome():
    return small_dome()


@pytest.fixture(scope="module")
def regions(dome):
    return view_regions(dome)


@pytest.fixture(scope="module")
def exposures(dome, regions):
    """Direct view and mirror view r1m01 with a bead; r1m01 again with a point source."""
    views = [(r.path, r.roi) for r in regions[:2]]
    bead = simulate_point_exposure(
        dome, POINT, views, photons=PHOTONS, bead_sigma_mm=BEAD_MM, generator=torch.Generator().manual_seed(3)
    )
    (point,) = simulate_point_exposure(
        dome, POINT, views[1:], photons=PHOTONS, bead_sigma_mm=0.0, generator=torch.Generator().manual_seed(4)
    )
    return bead, point


def _moments(image: torch.Tensor, roi) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Total count, centroid (2,) px and variance (2,) px² of an image of a region."""
    x0, y0, w, h = roi
    v, u = torch.meshgrid(torch.arange(h, dtype=F64) + y0, torch.arange(w, dtype=F64) + x0, indexing="ij")
    n = float(image.sum())
    centre = torch.stack([(image * u).sum(), (image * v).sum()]) / n
    var = torch.stack([(image * (u - centre[0]) ** 2).sum(), (image * (v - centre[1]) ** 2).sum()]) / n
    return n, centre, var


def test_images_are_exact_photoelectron_counts(exposures, regions):
    bead, point = exposures
    for image, r in zip([*bead, point], [regions[0], regions[1], regions[1]], strict=True):
        assert image.dtype == F64 and image.shape == (r.roi[3], r.roi[2])
        assert bool((image >= 0).all()) and torch.equal(image, image.round())


def test_photon_count_matches_the_predicted_flux(dome, exposures, regions):
    """Σ counts ~ Poisson(photons × flux), flux per emitted photon from spot_centroids (QE included)."""
    bead, point = exposures
    _, flux = spot_centroids(dome, POINT.unsqueeze(0), [0, 1], n_aperture=4096)
    for image, k in [(bead[0], 0), (bead[1], 1), (point, 1)]:
        expected = PHOTONS * float(flux[0, k])
        # Poisson noise 1/√Λ and the Monte-Carlo estimate of Λ from one batch of 32768 rays (the
        # relative error of a mean of weights that are ~constant or 0 is ≤ 1/√batch): 5 σ
        tol = 5 * math.sqrt(1 / expected + 1 / 32768)
        assert float(image.sum()) == pytest.approx(expected, rel=tol), regions[k].name


def test_spot_lands_where_spot_centroids_predicts(dome, exposures, regions):
    bead, point = exposures
    centre, _ = spot_centroids(dome, POINT.unsqueeze(0), [0, 1], n_aperture=4096)
    for image, k in [(bead[0], 0), (bead[1], 1), (point, 1)]:
        n, c, var = _moments(image, regions[k].roi)
        # statistical error of a centroid: spot σ / √N (0.27 px for the 370 px defocused direct
        # view, 0.006 px for a mirror view); + 0.01 px for the bead's second-order shift
        tol = 6 * (var / n).sqrt() + 0.01
        assert bool(((c - centre[0, k]).abs() < tol).all()), (regions[k].name, c, centre[0, k])


def test_bead_widens_the_spot_by_its_projected_sigma(exposures, regions, dome):
    """A Gaussian source convolves the point's spot: variances add, σ_img = σ_bead · m / pitch."""
    bead, point = exposures
    r = regions[1]
    _, _, var_bead = _moments(bead[1], r.roi)
    _, _, var_point = _moments(point, r.roi)
    sigma_px = BEAD_MM * r.magnification / dome.cameras[0].sensor.pixel_pitch_mm
    assert sigma_px == pytest.approx(1.14, abs=0.01)
    # the pixel binning (1/12 px²) is in both and cancels; σ of a variance estimate √(2/N) ≈ 0.5 %
    # per image gives ≈ 1.5 % on the difference
    torch.testing.assert_close(var_bead - var_point, torch.full((2,), sigma_px**2, dtype=F64),
                               rtol=0.06, atol=0.0)


def test_counts_are_poisson_distributed(dome, regions):
    """Over many faint exposures the total count has variance = mean (dispersion index 1)."""
    r = regions[1]
    g = torch.Generator().manual_seed(11)
    totals = torch.tensor([
        float(simulate_point_exposure(dome, POINT, [(r.path, r.roi)], photons=4e4, bead_sigma_mm=0.0,
                                      generator=g, batch=512)[0].sum())
        for _ in range(250)
    ], dtype=F64)
    _, flux = spot_centroids(dome, POINT.unsqueeze(0), [r.path], n_aperture=4096)
    mean_expected = 4e4 * float(flux[0, 0])  # ≈ 34
    assert float(totals.mean()) == pytest.approx(mean_expected, rel=5 / math.sqrt(250 * mean_expected))
    # the dispersion index of 250 Poisson draws has σ ≈ √(2/250) ≈ 0.09; a fixed count would give
    # 0, a doubled one 2
    assert float(totals.var() / totals.mean()) == pytest.approx(1.0, abs=0.35)


def test_simulation_is_reproducible_and_every_region_is_filled(dome, regions):
    views = [(r.path, r.roi) for r in regions]
    first = simulate_point_exposure(dome, POINT, views, photons=2e5, bead_sigma_mm=0.01,
                                    generator=torch.Generator().manual_seed(7), batch=4096)
    again = simulate_point_exposure(dome, POINT, views, photons=2e5, bead_sigma_mm=0.01,
                                    generator=torch.Generator().manual_seed(7), batch=4096)
    other = simulate_point_exposure(dome, POINT, views, photons=2e5, bead_sigma_mm=0.01,
                                    generator=torch.Generator().manual_seed(8), batch=4096)
    assert len(first) == len(regions)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert all(float(img.sum()) > 100 for img in first)  # ≈ 1e-3 × 2e5 in each view


def test_a_region_away_from_the_spot_stays_dark(dome, regions):
    (dark,) = simulate_point_exposure(dome, POINT, [(1, (0, 0, 20, 10))], photons=1e6, bead_sigma_mm=0.0,
                                      generator=torch.Generator().manual_seed(0), batch=4096)
    assert dark.shape == (10, 20) and float(dark.sum()) == 0.0
    r = regions[1]
    (none,) = simulate_point_exposure(dome, POINT, [(r.path, r.roi)], photons=0.0, bead_sigma_mm=0.0,
                                      generator=torch.Generator().manual_seed(0), batch=4096)
    assert float(none.sum()) == 0.0
