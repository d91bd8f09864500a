"""Calibration end to end on a small dome (direct view + 4 mirrors, 8 positions, 0.5° / 50 µm σ)."""

import pytest
import torch

from calibration.bundle import CalibrationConfig, Observations, calibrate, measure_spots
from calibration.perturb import mirror_errors
from calibration.target import read_target_spec
from optics.errors import CalibrationError
from recon.io.run import load_run


def _views(target_set, system):
    run = load_run(target_set)
    names = {system.path_name(k): k for k in range(system.n_paths)}
    return [(v.name, names[v.name], v.roi, v.electrons.numpy(), v.mask.numpy()) for v in run.views]


@pytest.fixture(scope="module")
def observations(target_set, dome_files):
    _, _, nominal, _ = dome_files
    spec = read_target_spec(target_set)
    return measure_spots(
        _views(target_set, nominal), nominal, positions_mm=spec.positions_mm, bead_sigma_mm=spec.bead_sigma_mm
    )


def test_spots_are_measured_close_to_the_true_instrument_prediction(observations, dome_files):
    from optics.project import spot_centroids

    _, _, _, truth = dome_files
    obs = observations
    assert bool(obs.observed.all()) and obs.uv.shape == (8, 5, 2)
    c, _ = spot_centroids(truth, obs.positions_mm, list(obs.paths), n_aperture=2048)
    z = ((c - obs.uv) / obs.sigma.unsqueeze(-1))[:, 1:]  # mirror views
    # normalised residuals through the true instrument: unit scatter (χ² per coordinate ≈ 1)
    assert 0.5 < float(z.pow(2).mean().sqrt()) < 2.0


def test_known_positions_recover_the_mirrors(observations, dome_files):
    _, _, nominal, truth = dome_files
    res = calibrate(nominal, observations, CalibrationConfig(n_aperture=256))
    before, after = mirror_errors(nominal, truth), mirror_errors(res.system, truth)
    assert before.tilt_rms_deg > 0.5
    assert after.tilt_rms_deg < 0.02
    assert after.shift_rms_um < 10.0
    mirror_rms = [res.after_rms_px[n] for n in observations.names[1:]]
    assert max(mirror_rms) < 0.05
    assert min(res.before_rms_px[n] for n in observations.names[1:]) > 3.0
    assert res.system.mirrors[0].name == nominal.mirrors[0].name
    # The standard errors say how large the remaining errors are.
    unc = res.uncertainty
    assert len(unc["mirrors"]) == len(nominal.mirrors)
    assert 0.25 < after.tilt_rms_deg / unc["tilt_rms_deg"] < 4.0
    assert 0.25 < after.shift_rms_um / unc["normal_shift_rms_um"] < 4.0


def test_unknown_positions_converge_from_nominal(observations, dome_files):
    _, _, nominal, truth = dome_files
    blind = Observations(
        observations.paths,
        observations.names,
        observations.uv,
        observations.sigma,
        observations.observed,
        None,
    )
    res = calibrate(nominal, blind, CalibrationConfig(n_aperture=256, known_positions=False))
    after = mirror_errors(res.system, truth)
    assert after.tilt_rms_deg < 0.05
    assert after.shift_rms_relative_um < 20.0
    assert max(res.after_rms_px[n] for n in observations.names[1:]) < 0.05
    err = (res.positions_mm - observations.positions_mm).norm(dim=-1)
    assert float(err.max()) < 0.05  # mm
    unc = res.uncertainty  # with the mean offset held, the offsets are known relative to their mean
    assert 0.25 < after.tilt_rms_deg / unc["tilt_rms_deg"] < 4.0
    assert 0.25 < after.shift_rms_relative_um / unc["normal_shift_rms_um"] < 4.0


def test_too_few_positions_and_gauge_violations_are_refused(observations, dome_files):
    _, _, nominal, _ = dome_files
    one = Observations(
        observations.paths,
        observations.names,
        observations.uv[:1],
        observations.sigma[:1],
        observations.observed[:1],
        observations.positions_mm[:1],
    )
    with pytest.raises(CalibrationError, match="at least 2"):
        calibrate(nominal, one, CalibrationConfig())
    blind = Observations(
        observations.paths,
        observations.names,
        observations.uv,
        observations.sigma,
        observations.observed,
        None,
    )
    with pytest.raises(CalibrationError, match="gauge"):
        calibrate(nominal, blind, CalibrationConfig(fit=("mirrors", "pose"), known_positions=False))
    with pytest.raises(CalibrationError, match="no position_mm"):
        calibrate(nominal, blind, CalibrationConfig())
    seen = observations.observed.clone()
    seen[:, 2] = False
    seen[0, 2] = True
    sparse = Observations(
        observations.paths,
        observations.names,
        observations.uv,
        observations.sigma,
        seen,
        observations.positions_mm,
    )
    with pytest.raises(CalibrationError, match=f"view {observations.names[2]} has 1 spots"):
        calibrate(nominal, sparse, CalibrationConfig())


def test_an_exposure_without_a_spot_in_one_view_is_left_out(target_set, dome_files):
    """A source imaged outside one view's region loses that observation, not the calibration."""
    _, _, nominal, _ = dome_files
    spec = read_target_spec(target_set)
    views = _views(target_set, nominal)
    name, path, roi, electrons, mask = views[2]
    electrons = electrons.copy()
    electrons[3] = 0.0  # exposure 3: nothing in this view
    views[2] = (name, path, roi, electrons, mask)
    obs = measure_spots(views, nominal, positions_mm=spec.positions_mm, bead_sigma_mm=spec.bead_sigma_mm)
    assert not bool(obs.observed[3, 2]) and int(obs.observed.sum()) == obs.observed.numel() - 1
    assert len(obs.skipped) == 1 and f"view {name}, exposure 3" in obs.skipped[0]
    electrons[:] = 0.0
    with pytest.raises(CalibrationError, match=f"no spot found in any of the 8 exposures of view {name}"):
        measure_spots(views, nominal, positions_mm=spec.positions_mm, bead_sigma_mm=spec.bead_sigma_mm)


def test_a_spot_far_from_its_predicted_place_is_an_error(target_set, dome_files):
    _, _, nominal, _ = dome_files
    spec = read_target_spec(target_set)
    wrong = spec.positions_mm.flip(0)  # exposures and positions out of order
    with pytest.raises(CalibrationError, match="from where the nominal system puts it"):
        measure_spots(
            _views(target_set, nominal), nominal, positions_mm=wrong, bead_sigma_mm=0.01, gate_px=20.0
        )
    assert torch.isfinite(spec.positions_mm).all()
