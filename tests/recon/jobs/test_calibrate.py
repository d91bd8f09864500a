"""`recon calibrate` as a function: the views of a target set, refusals before work, a tiny calibration."""

import json
import os

import numpy as np
import pytest
import torch

from calibration.perturb import perturb_system
from optics.errors import CalibrationError
from optics.system import load_system, save_system
from recon.errors import ConfigError
from recon.io.run import load_run
from recon.io.runspec import RunSpec, ViewSpec
from recon.io.runwriter import write_run
from recon.io.sensor import SensorSpec
from recon.jobs.calibrate import calibrate, target_views
from tests.conftest import slow
from tests.optics.helpers import make_system

MIRROR = {"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95], "shape": "circle",
          "radius_mm": 4.0, "reflectivity": 0.95}
SENSOR = SensorSpec(gain_e_per_adu=1.0, offset_adu=100.0, bit_depth=12, read_noise_e=2.0,
                    width_px=2001, height_px=1501)


@pytest.fixture(scope="module")
def nominal():
    return make_system(mirrors=[MIRROR])


def _run(directory, names, pages=3):
    """Views of 4 × 5 px whose page k holds k + 1 e⁻ (plus 10 e⁻ per view index) everywhere."""
    views = tuple(ViewSpec(name, 0, (10 * i, 0, 5, 4)) for i, name in enumerate(names))
    frames = {name: np.stack([np.full((4, 5), 100.0 + 10 * i + k + 1, np.float32) for k in range(pages)])
              for i, name in enumerate(names)}
    return load_run(write_run(directory / "cal", RunSpec("s.toml", views), frames=frames), SENSOR)


def test_target_views_takes_the_pages_of_the_exposures_in_their_order(nominal, tmp_path):
    run = _run(tmp_path, ["m1", "direct"])
    views = target_views(run, nominal, (2, 0), "cal/", "tiny.toml")
    assert [(name, path, roi) for name, path, roi, _, _ in views] == [
        ("m1", 1, (0, 0, 5, 4)), ("direct", 0, (10, 0, 5, 4))]
    for (_, _, _, electrons, mask), offset in zip(views, (0.0, 10.0), strict=True):
        assert isinstance(electrons, np.ndarray) and electrons.shape == (2, 4, 5)
        np.testing.assert_array_equal(electrons[:, 0, 0], [offset + 3, offset + 1])
        assert mask.dtype == bool and mask.all()


def test_target_views_refuses_a_view_that_is_no_light_path(nominal, tmp_path):
    run = _run(tmp_path, ["direct", "m9"])
    with pytest.raises(ConfigError, match=r"view 'm9' of cal/ is no path of tiny.toml \(paths: direct, m1\); "
                                          "use the system the set was recorded with"):
        target_views(run, nominal, (0,), "cal/", "tiny.toml")


@pytest.mark.parametrize("exposures", [(0, 1, 2, 3), (5,), (0, 3)])
def test_target_views_refuses_too_few_pages(nominal, tmp_path, exposures):
    run = _run(tmp_path, ["direct"])
    with pytest.raises(ConfigError, match=f"view direct has 3 pages but target.toml names exposures up to "
                                          f"{max(exposures)}; one page per position"):
        target_views(run, nominal, exposures, "cal/", "tiny.toml")


@pytest.mark.parametrize("existing", ["calibrated.toml", "calibrated.calibration.json",
                                      "calibrated.residuals.png"])
def test_calibrate_refuses_existing_outputs_before_reading_anything(tmp_path, existing):
    (tmp_path / existing).write_text("keep")
    with pytest.raises(ConfigError, match=f"{existing} exists; pass --overwrite or choose another --out"):
        calibrate(tmp_path / "no-images", tmp_path / "no-system.toml", tmp_path / "calibrated.toml")
    assert (tmp_path / existing).read_text() == "keep"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"aperture_samples": 15}, "--aperture-samples must be ≥ 16 and --max-iterations ≥ 1"),
    ({"max_iterations": 0}, "--aperture-samples must be ≥ 16 and --max-iterations ≥ 1"),
    ({"fit_groups": "mirrors,lens"}, "'mirrors,lens' is not a list of"),
    ({"fit_groups": ""}, "'' is not a list of"),
])
def test_calibrate_refuses_bad_settings_before_reading_anything(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        calibrate(tmp_path / "no-images", tmp_path / "no-system.toml", tmp_path / "c.toml", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_calibrate_needs_a_target_toml(tmp_path, nominal):
    save_system(nominal, tmp_path / "tiny.toml")
    with pytest.raises(CalibrationError, match="target.toml does not exist"):
        calibrate(tmp_path, tmp_path / "tiny.toml", tmp_path / "c.toml")
    assert not (tmp_path / "c.toml").exists()


@pytest.fixture(scope="module")
def target_set(tmp_path_factory, nominal):
    """6 known positions imaged through the tiny system with its mirror tilted (0.5°, 50 µm σ)."""
    from recon.simulation.target import simulate_calibration_target

    d = tmp_path_factory.mktemp("target")
    save_system(nominal, d / "nominal.toml")
    save_system(perturb_system(nominal, tilt_deg=0.5, shift_um=50.0, seed=7), d / "true.toml")
    simulate_calibration_target(d / "nominal.toml", d / "cal", points=6, true_system_path=d / "true.toml",
                                photons=5e7, seed=4)
    return d


@slow
def test_a_tiny_calibration_moves_the_mirror_toward_the_truth(target_set, tmp_path):
    lines = []
    outcome = calibrate(target_set / "cal", target_set / "nominal.toml", tmp_path / "calibrated.toml",
                        aperture_samples=64, max_iterations=50, log=lines.append)
    assert lines[0] == "12 spots in 2 views × 6 exposures"
    assert outcome.observations.names == ("direct", "m1") and bool(outcome.observations.observed.all())
    result = outcome.result
    assert result.after_rms_px["m1"] < 0.5 * result.before_rms_px["m1"]  # 7 px → the spot noise (~1 px)
    assert set(outcome.written) == {"system", "report", "residuals"}
    assert all(p.is_file() for p in outcome.written.values())
    report = json.loads(outcome.written["report"].read_text())
    assert report["positions"] == 6 and [v["view"] for v in report["views"]] == ["direct", "m1"]
    true_normal = load_system(target_set / "true.toml", dtype=torch.float64).mirrors[0].normal
    nominal_normal = load_system(target_set / "nominal.toml", dtype=torch.float64).mirrors[0].normal
    refined_normal = load_system(outcome.written["system"], dtype=torch.float64).mirrors[0].normal

    def angle(a, b):
        return float(torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1)))

    assert angle(refined_normal, true_normal) < 0.25 * angle(nominal_normal, true_normal)
    with pytest.raises(ConfigError, match="--overwrite"):
        calibrate(target_set / "cal", target_set / "nominal.toml", tmp_path / "calibrated.toml")


def test_calibrate_refuses_an_out_it_could_not_write_before_reading_anything(tmp_path):
    with pytest.raises(ConfigError) as info:
        calibrate(tmp_path / "no-images", tmp_path / "no-system.toml", tmp_path / "missing" / "c.toml")
    assert str(info.value) == (f"calibrate: the folder of --out, {tmp_path / 'missing'}, does not exist; "
                               "create it or choose another --out")
    (tmp_path / "c.toml").mkdir()
    with pytest.raises(ConfigError, match="c.toml is a directory; choose an --out file name"):
        calibrate(tmp_path / "no-images", tmp_path / "no-system.toml", tmp_path / "c.toml", overwrite=True)


def test_calibrate_refuses_a_read_only_folder_for_its_out_before_reading_anything(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: nothing to refuse
        pytest.skip("this user can write a read-only folder (root)")
    with pytest.raises(ConfigError, match="locked, cannot be written; choose another --out"):
        calibrate(tmp_path / "no-images", tmp_path / "no-system.toml", locked / "c.toml")
