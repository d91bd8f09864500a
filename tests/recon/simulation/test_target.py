"""Simulated calibration target sets: `points:N`, positions in the central fill, one page per position."""

import numpy as np
import pytest
import tifffile
import torch

from calibration.perturb import perturb_system
from calibration.target import read_target_spec
from optics.system import load_system, save_system
from recon.errors import ConfigError
from recon.io.run import load_run
from recon.simulation.target import parse_calibration_target, simulate_calibration_target
from tests.optics.helpers import make_system

MIRROR = {"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95], "shape": "circle",
          "radius_mm": 4.0, "reflectivity": 0.95}
POINTS, FILL = 4, 0.5


@pytest.fixture(scope="module")
def nominal(tmp_path_factory):
    path = tmp_path_factory.mktemp("sys") / "tiny.toml"
    save_system(make_system(mirrors=[MIRROR]), path)
    return path


@pytest.fixture(scope="module")
def target(nominal, tmp_path_factory):
    out = tmp_path_factory.mktemp("targets") / "cal"
    summary = simulate_calibration_target(nominal, out, points=POINTS, fill=FILL, photons=5e7, seed=2)
    return out, summary


@pytest.mark.parametrize(("text", "count"), [("points:1", 1), ("points:8", 8), ("points:120", 120)])
def test_parse_points(text, count):
    assert parse_calibration_target(text) == count


@pytest.mark.parametrize("text", ["points:0", "points", "points:", "grid:4", "points:-2", "points:2.5",
                                  "Points:3", "points:3:4", ""])
def test_parse_refuses_anything_else(text):
    with pytest.raises(ConfigError, match=rf"must be points:N with N ≥ 1, got {text!r}"):
        parse_calibration_target(text)


def test_parse_refuses_a_superscript_digit_with_the_config_error():
    with pytest.raises(ConfigError, match="points:N"):
        parse_calibration_target("points:²")


def test_positions_lie_in_the_central_fill_of_the_box(nominal, target):
    out, summary = target
    assert summary["positions"] == POINTS and summary["views"] == 2 and summary["out"] == str(out)
    spec = read_target_spec(out)
    assert spec.exposures == tuple(range(POINTS)) and spec.positions_mm.shape == (POINTS, 3)
    assert spec.bead_sigma_mm == 0.01 and spec.photons == 5e7
    box = load_system(nominal, dtype=torch.float64).volume
    offset = (spec.positions_mm - box.center_mm).abs()
    assert bool((offset <= FILL * box.size_mm / 2 + 1e-9).all())
    assert len({tuple(p.tolist()) for p in spec.positions_mm}) == POINTS  # distinct draws


def test_one_page_per_position_per_view_and_one_dark(nominal, target):
    out, summary = target
    run = load_run(out)
    assert [v.name for v in run.views] == ["direct", "m1"]
    for view in run.views:
        pages = tifffile.imread(out / "views" / f"{view.name}.tif")
        assert pages.shape == (POINTS, view.roi[3], view.roi[2]) and pages.dtype == np.uint16
        assert tifffile.imread(out / "views" / f"{view.name}_dark.tif").shape == (view.roi[3], view.roi[2])
        assert view.n_frames == POINTS and view.dark_pages == 1
        # The pages hold the photoelectrons the summary counts, up to the read noise of the sums
        # (2 e⁻ per pixel in each page and in the one subtracted dark frame).
        n = view.roi[2] * view.roi[3]
        sigma = 2.0 * np.sqrt(n * (1 + 1 / POINTS))
        signal = view.electrons.to(torch.float64).sum(dim=(1, 2))
        assert bool((signal > 5 * 2.0 * np.sqrt(2 * n)).all())
        flux = summary["mean_electrons_per_view"][view.name]
        assert float(signal.mean()) == pytest.approx(flux, abs=5 * sigma)
    assert (out / "system.toml").read_text() == nominal.read_text()
    assert not (out / "true_system.toml").exists()


def test_regions_lie_on_the_sensor(target):
    out, _ = target
    sensor = load_system(out / "system.toml").cameras[0].sensor
    for view in load_run(out).views:
        x0, y0, w, h = view.roi
        assert x0 >= 0 and y0 >= 0 and x0 + w <= sensor.width_px and y0 + h <= sensor.height_px


def test_the_same_seed_reproduces_the_set_and_another_does_not(nominal, target, tmp_path):
    out, _ = target
    again = tmp_path / "again"
    simulate_calibration_target(nominal, again, points=POINTS, fill=FILL, photons=5e7, seed=2)
    assert (again / "target.toml").read_text() == (out / "target.toml").read_text()
    for name in ("direct.tif", "m1.tif", "direct_dark.tif", "m1_dark.tif"):
        np.testing.assert_array_equal(tifffile.imread(again / "views" / name),
                                      tifffile.imread(out / "views" / name))
    other = tmp_path / "other"
    simulate_calibration_target(nominal, other, points=POINTS, fill=FILL, photons=5e7, seed=3)
    assert (other / "target.toml").read_text() != (out / "target.toml").read_text()


def test_a_true_system_is_recorded_and_must_have_the_same_mirrors(nominal, tmp_path):
    true = tmp_path / "true.toml"
    save_system(perturb_system(load_system(nominal, dtype=torch.float64), tilt_deg=0.2, shift_um=20.0,
                               seed=1), true)
    out = tmp_path / "cal"
    simulate_calibration_target(nominal, out, points=1, true_system_path=true, photons=5e7)
    assert (out / "true_system.toml").read_text() == true.read_text()
    other = tmp_path / "other.toml"
    save_system(make_system(mirrors=[dict(MIRROR, name="m2")]), other)
    with pytest.raises(ConfigError, match="other.toml has other mirrors than"):
        simulate_calibration_target(nominal, tmp_path / "x", points=1, true_system_path=other)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kwargs", [{"points": 0}, {"points": 2, "fill": 0.0}, {"points": 2, "fill": 1.5},
                                    {"points": 2, "photons": 0.0}, {"points": 2, "bead_sigma_mm": -0.1}])
def test_bad_settings_are_refused(nominal, tmp_path, kwargs):
    with pytest.raises(ConfigError, match="points:N needs N ≥ 1"):
        simulate_calibration_target(nominal, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_an_existing_out_is_refused_without_overwrite(nominal, tmp_path):
    out = tmp_path / "cal"
    out.mkdir()
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        simulate_calibration_target(nominal, out, points=1)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"bead_sigma_mm": float("nan")}, {"photons": float("inf")},
                                    {"photons": float("nan")}],
                         ids=["bead-nan", "photons-inf", "photons-nan"])
def test_non_finite_settings_are_refused(nominal, tmp_path, kwargs):
    with pytest.raises(ConfigError):
        simulate_calibration_target(nominal, tmp_path / "x", points=2, **kwargs)
    assert not (tmp_path / "x").exists()
