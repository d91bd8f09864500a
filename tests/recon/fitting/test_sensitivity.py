"""Per-camera sensitivity: the modes, the scaled pool, and the factors of unequal cameras recovered."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recon.fitting.config import FitConfig
from recon.fitting.data import load_fit_data
from recon.fitting.holdout import split_held_out
from recon.fitting.loop import _traced_pool
from recon.fitting.projector import Projector
from recon.fitting.sensitivity import (
    CameraSensitivity,
    estimate_camera_sensitivity,
    fits_sensitivity,
    scaled_pool,
)
from tests.conftest import THREE_CAMERA_SENSITIVITY


@pytest.fixture(scope="module")
def three(three_camera_run):
    data, _, _ = load_fit_data(Path(three_camera_run))
    cfg = FitConfig()
    pool = _traced_pool(data, cfg, None, lambda text: None)
    usable = (pool.n_frames > 0).nonzero(as_tuple=True)[0]
    train, _ = split_held_out(pool, usable, cfg.holdout, cfg.seed)
    return data, pool, train


def test_the_modes_fit_factors_only_for_several_cameras_unless_told(three, tiny_run):
    data, _, _ = three
    one_camera, _, _ = load_fit_data(Path(tiny_run))
    assert fits_sensitivity("auto", data) and fits_sensitivity("fit", data)
    assert not fits_sensitivity("fixed", data)
    assert not fits_sensitivity("auto", one_camera) and fits_sensitivity("fit", one_camera)
    with pytest.raises(ValueError, match="auto"):
        fits_sensitivity("guess", data)


def test_the_factors_of_unequal_cameras_are_recovered_within_their_photon_noise(three):
    data, pool, train = three
    sens = estimate_camera_sensitivity(data, pool, train, atoms=1e5, photons_per_atom=200.0, seed=0)
    assert sens.names == ("south", "east", "north") and sens.reference == 0
    assert sens.factors[0] == 1.0 and sens.sd[0] == 0.0
    for fitted, sd, true in zip(sens.factors[1:], sens.sd[1:], THREE_CAMERA_SENSITIVITY[1:], strict=True):
        assert 0 < sd < 0.05 * true
        assert abs(fitted - true) < 4 * sd, (fitted, sd, true)
    entries = sens.to_json()
    assert [e["reference"] for e in entries] == [True, False, False]
    assert "east" in sens.describe() and "(reference)" in sens.describe()


def test_the_scaled_pool_multiplies_each_cameras_segments_and_so_its_predictions(three):
    data, pool, _ = three
    sens = CameraSensitivity(("south", "east", "north"), (1.0, 0.25, 3.0), (0.0, 0.0, 0.0), 0)
    scaled = scaled_pool(pool, data, sens)
    box = data.system.volume
    x = torch.rand(8, 9, 10, generator=torch.Generator().manual_seed(1))
    pixels = torch.arange(pool.n_pixels)
    args = (box.min_mm.tolist(), box.max_mm.tolist(), x.shape)
    before = Projector(pool, *args, photons_per_atom=200.0, step_mm=0.04).forward(x, pixels)
    after = Projector(scaled, *args, photons_per_atom=200.0, step_mm=0.04).forward(x, pixels)
    factor = torch.tensor(sens.factors)[pool.view_of_pixel.long()]  # one view per camera here
    assert torch.allclose(after, before * factor.to(before.dtype), rtol=1e-5, atol=1e-12)
    assert scaled.summed_electrons is pool.summed_electrons  # the data are untouched


def test_a_fit_of_unequal_cameras_finds_their_factors_and_the_cloud(three_camera_run, tmp_path):
    """End to end with the defaults (auto: three cameras, so the factors are fitted), against the
    same fit told to trust the system file, which must bend the cloud to reconcile the views."""
    from recon.analysis.moments import cloud_metrics
    from recon.io.volume import read_volume
    from recon.jobs.fit import fit

    truth = cloud_metrics(read_volume(Path(three_camera_run) / "truth.tif"))
    metrics = fit(three_camera_run, out=tmp_path / "fit").metrics
    found = {e["camera"]: e for e in metrics["camera_sensitivity"]}
    for name, true in zip(("south", "east", "north"), THREE_CAMERA_SENSITIVITY, strict=True):
        assert abs(found[name]["factor"] - true) <= max(4 * found[name]["sd"], 1e-12)
    assert metrics["atoms"] == pytest.approx(truth["atoms"], rel=0.05)
    for w, t in zip(metrics["width_mm"], truth["width_mm"], strict=True):
        assert w == pytest.approx(t, rel=0.06)
    assert metrics["atoms_near_faces"] < 0.05 and not any("faces" in w for w in metrics.get("warnings", []))

    (tmp_path / "fixed.toml").write_text('camera_sensitivity = "fixed"\n')
    trusting = fit(three_camera_run, out=tmp_path / "fixed", config=tmp_path / "fixed.toml").metrics
    assert "camera_sensitivity" not in trusting
    worst = max(abs(w / t - 1) for w, t in zip(trusting["width_mm"], truth["width_mm"], strict=True))
    assert worst > 0.1 and math.isfinite(worst)


def test_factors_from_a_calibration_in_the_system_file_are_what_fixed_trusts(three_camera_run, tmp_path):
    """The cameras' measured factors written into the system file (`sensitivity`): the fit that
    trusts the file then finds the cloud as the fit of the factors does."""
    import shutil

    import tomllib

    from optics.system import save_system, system_from_dict
    from recon.analysis.moments import cloud_metrics
    from recon.io.volume import read_volume
    from recon.jobs.fit import fit

    run = tmp_path / "run"
    shutil.copytree(three_camera_run, run)
    with open(run / "system.toml", "rb") as f:
        described = tomllib.load(f)
    for camera, factor in zip(described["cameras"], THREE_CAMERA_SENSITIVITY, strict=True):
        camera["sensor"]["sensitivity"] = factor
    save_system(system_from_dict(described, dtype=torch.float64), run / "system.toml")
    (tmp_path / "fixed.toml").write_text('camera_sensitivity = "fixed"\n')
    metrics = fit(run, out=tmp_path / "fit", config=tmp_path / "fixed.toml").metrics
    truth = cloud_metrics(read_volume(run / "truth.tif"))
    assert "camera_sensitivity" not in metrics  # nothing fitted
    assert metrics["atoms"] == pytest.approx(truth["atoms"], rel=0.05)
    for w, t in zip(metrics["width_mm"], truth["width_mm"], strict=True):
        assert w == pytest.approx(t, rel=0.06)
