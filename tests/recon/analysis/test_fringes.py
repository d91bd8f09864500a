"""Fringe analysis: exact recovery of the model, a phantom's known fringes, formal sds on white noise."""

import math

import numpy as np
import pytest
import torch

from recon.analysis.fringes import fit_fringes, fringe_model, phantom_fringes
from recon.errors import ShapeError
from recon.io.volume import Volume
from recon.simulation.phantom_file import load_phantom
from recon.simulation.truth import truth_volume

SHAPE = (30, 34, 28)  # (z, y, x)
ORIGIN = (-0.7, -0.8, -0.75)
VOXEL = (0.05, 0.048, 0.053)


def _params(phase=0.9, contrast=0.6, k_dir=(0.2, 0.95, 0.24), period=0.3, floor=0.5):
    n = np.asarray(k_dir) / np.linalg.norm(k_dir)
    k = 2 * math.pi / period * n
    return torch.tensor([math.log(100.0), 0.05, -0.03, 0.02, math.log(0.3), math.log(0.25), math.log(0.2),
                         0.1, -0.05, 0.08, contrast, *k, phase, floor], dtype=torch.float64)


def _volume(params, noise_sd=0.0, seed=0):
    grid = Volume(np.zeros(SHAPE, np.float32), ORIGIN, VOXEL)
    with torch.no_grad():
        rho = fringe_model(params, grid.points(torch.float64).reshape(-1, 3)).reshape(SHAPE).numpy()
    if noise_sd:
        rho = rho + np.random.default_rng(seed).normal(0.0, noise_sd, SHAPE)
    return Volume(rho, ORIGIN, VOXEL)


@pytest.mark.parametrize("robust", [True, False])
def test_the_model_sampled_at_the_voxels_is_recovered_exactly(robust):
    p = _params()
    fit = fit_fringes(_volume(p), **({} if robust else {"robust_scale": None}))
    k = p[11:14].numpy()
    assert fit.period_mm == pytest.approx(0.3, rel=1e-8)
    assert np.allclose(fit.direction, k / np.linalg.norm(k), atol=1e-8)
    assert np.allclose(fit.wavevector_rad_per_mm, k, rtol=1e-8)
    assert fit.contrast == pytest.approx(0.6, rel=1e-8)
    assert fit.phase_rad == pytest.approx(0.9, abs=1e-8)
    assert np.allclose(fit.centre_mm, (0.05, -0.03, 0.02), atol=1e-9)
    at_origin = math.remainder(0.9 - float(k @ np.array([0.05, -0.03, 0.02])), 2 * math.pi)
    assert fit.phase_at_origin_rad == pytest.approx(at_origin, abs=1e-8)
    assert fit.floor == pytest.approx(0.5, rel=1e-6) and fit.detected
    assert fit.residual_rms < 1e-8 and fit.stride == 1 and fit.why_not == ""


def test_k_and_minus_k_are_reported_alike():
    """cos(K·d + φ) = cos(−K·d − φ): the fit reports K with its largest component positive."""
    plus = fit_fringes(_volume(_params(phase=0.4)))
    minus_params = _params(phase=-0.4, k_dir=(-0.2, -0.95, -0.24))
    minus = fit_fringes(_volume(minus_params))
    assert np.allclose(plus.wavevector_rad_per_mm, minus.wavevector_rad_per_mm, rtol=1e-7)
    assert plus.phase_rad == pytest.approx(minus.phase_rad, abs=1e-7)
    assert max(plus.direction, key=abs) > 0


def test_a_phantoms_fringes_are_found_with_its_period_direction_and_phase():
    """The `fringes` phantom (voxel averages, as truth.tif holds them): sin² fringes of full contrast."""
    params = {"period_mm": 0.25, "phase_rad": 0.3, "direction": (0.3, 0.2, 0.93),
              "center_mm": (0.1, -0.05, 0.0), "sigma_mm": 0.35}
    phantom = load_phantom("fringes", atoms=1e6, options=params)
    volume = truth_volume(phantom, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.04)
    fit = fit_fringes(volume)
    truth = phantom_fringes(params)
    angle = math.degrees(math.acos(min(1.0, abs(float(np.dot(fit.direction, truth["direction"]))))))
    assert fit.period_mm == pytest.approx(0.25, rel=2e-3)
    assert angle < 0.2
    assert abs(math.remainder(fit.phase_at_origin_rad - truth["phase_at_origin_rad"], 2 * math.pi)) < 0.02
    assert fit.contrast > 0.9 and fit.detected  # sin² is full contrast; voxel averages blur it a little
    assert np.allclose(fit.centre_mm, (0.1, -0.05, 0.0), atol=2e-3)


def test_phantom_fringes_reads_only_fringe_parameters():
    assert phantom_fringes({"sigma_mm": 0.5}) is None
    assert phantom_fringes({"period_mm": -1, "phase_rad": 0, "direction": (0, 1, 0)}) is None
    t = phantom_fringes({"period_mm": 0.2, "phase_rad": 0.0, "direction": (0, -1, 0), "center_mm": (0, 0, 0)})
    assert t["direction"] == [0.0, 1.0, 0.0] and t["phase_at_origin_rad"] == pytest.approx(math.pi)
    base = {"period_mm": 0.2, "phase_rad": 0.3, "direction": (0, 1, 0), "center_mm": (0, 0.01, 0)}
    shot = phantom_fringes({"base": base, "offset_mm": (0.0, 0.02, 0.0)})  # a campaign's shot, moved
    assert shot["phase_at_origin_rad"] == pytest.approx(
        phantom_fringes({**base, "center_mm": (0, 0.03, 0)})["phase_at_origin_rad"])
    assert phantom_fringes({"base": base, "offset_mm": "far"}) is None


def test_a_phantom_files_fringes_are_the_named_phantoms(tmp_path):
    """The tables of a phantom file (its fringes' origin in the place of the centre), alone and as
    a campaign's base, give the truth the named form gives."""
    path = tmp_path / "oblique.toml"
    path.write_text("[[gaussian]]\ncenter_mm = [0.1, 0.0, -0.05]\nsigma_mm = 0.4\n"
                    "[fringes]\nperiod_mm = 0.2\nphase_rad = 0.5\ndirection = [0.3, 0.9, 0.3]\n"
                    "origin_mm = [0.1, 0.0, -0.05]\n")
    params = load_phantom(path, atoms=1e6).params
    named = {"period_mm": 0.2, "phase_rad": 0.5, "direction": (0.3, 0.9, 0.3),
             "center_mm": (0.1, 0.0, -0.05)}
    assert phantom_fringes(params) == phantom_fringes(named)
    moved = phantom_fringes({"base": params, "offset_mm": (0.02, 0.0, 0.01)})
    assert moved == phantom_fringes({**named, "center_mm": (0.12, 0.0, -0.04)})


def test_a_chirped_clouds_straight_fringes_are_its_tangent_at_the_centre_with_a_phase_offset():
    """A chirp κ (the local period ±9 % at ±1σ) leaves the straight-fringe fit at the centre's
    period, its phase ahead of the tangent's by about κσ²/2 (the envelope²-weighted mean of the
    phase's quadratic term κ s², s ~ N(0, σ²/2)) and its contrast lowered."""
    params = {"period_mm": 0.2, "phase_rad": 0.3, "direction": (0.0, 1.0, 0.0), "center_mm": (0.0, 0.0, 0.0),
              "sigma_mm": 0.3, "chirp_per_mm2": 5.0}
    box = (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2)
    plain = {**params, "chirp_per_mm2": 0.0}
    fit, straight = (fit_fringes(truth_volume(load_phantom("fringes", atoms=1e6, options=p), *box, 0.04))
                     for p in (params, plain))
    truth = phantom_fringes(params)
    assert truth["chirp_per_mm2"] == 5.0 and truth["period_mm"] == 0.2
    assert {k: v for k, v in truth.items() if k != "chirp_per_mm2"} == phantom_fringes(plain)
    assert fit.period_mm == pytest.approx(0.2, rel=0.01)

    def offset(f) -> float:
        return math.remainder(f.phase_at_origin_rad - truth["phase_at_origin_rad"], 2 * math.pi)

    assert 0.6 < offset(fit) / (5.0 * 0.3**2 / 2) < 1.1
    assert abs(offset(straight)) < 0.01
    assert fit.contrast < straight.contrast


@pytest.mark.slow
@pytest.mark.parametrize("robust", [True, False])
def test_formal_sds_match_the_spread_over_white_noise(robust):
    """With independent Gaussian noise on the voxels, the least-squares sd is the estimates' spread."""
    p = _params()
    fits = [fit_fringes(_volume(p, noise_sd=2.0, seed=seed), **({} if robust else {"robust_scale": None}))
            for seed in range(24)]
    for name, value in (("phase_rad", lambda f: f.phase_rad), ("contrast", lambda f: f.contrast),
                        ("period_mm", lambda f: f.period_mm)):
        spread = float(np.std([value(f) for f in fits], ddof=1))
        reported = float(np.mean([f.sd[name] for f in fits]))
        assert 0.6 < spread / reported < 1.5, (name, spread, reported)
    assert abs(np.mean([f.phase_rad for f in fits]) - 0.9) < 3 * fits[0].sd["phase_rad"]


def test_a_cloud_without_fringes_is_not_detected():
    p = _params(contrast=0.0)
    fit = fit_fringes(_volume(p, noise_sd=2.0, seed=1))
    assert not fit.detected and fit.why_not
    assert fit.contrast < 5 * fit.sd["contrast"] or fit.contrast < 0.05


def test_the_record_is_plain_json_even_with_undefined_sds():
    import dataclasses
    import json

    fit = fit_fringes(_volume(_params()))
    sd = {**fit.sd, "phase_rad": float("nan"), "width_mm": (1.0, float("inf"), 2.0)}
    odd = dataclasses.replace(fit, sd=sd)
    record = json.loads(json.dumps(odd.to_json(), allow_nan=False))
    assert record["sd"]["phase_rad"] is None and record["sd"]["width_mm"] == [1.0, None, 2.0]


def test_an_empty_volume_is_refused():
    with pytest.raises(ShapeError, match="no positive, finite density"):
        fit_fringes(Volume(np.zeros(SHAPE, np.float32), ORIGIN, VOXEL))
    rho = np.zeros(SHAPE, np.float32)
    rho[3, 3, 3] = 1.0
    with pytest.raises(ShapeError, match="voxels hold the cloud"):
        fit_fringes(Volume(rho, ORIGIN, VOXEL))
