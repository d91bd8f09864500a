"""The uncertainty from thinning splits: the spread's arithmetic, its scale on a known estimator, the fit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recon.fitting.data import load_fit_data
from recon.fitting.uncertainty import interval_factor, split_spread, thinning_uncertainty


def test_the_spread_is_half_the_rms_difference_and_phases_wrap():
    pairs = [({"atoms": 10.0, "phase_rad": 3.1}, {"atoms": 6.0, "phase_rad": -3.1}),
             ({"atoms": 8.0, "phase_rad": 0.2}, {"atoms": 10.0, "phase_rad": 0.0})]
    sd = split_spread(pairs)
    assert sd["atoms"] == pytest.approx(math.sqrt((2.0 ** 2 + 1.0 ** 2) / 2))
    wrapped = 2 * math.pi - 6.2  # 3.1 − (−3.1) is 6.2 rad: 0.083 rad the other way round
    assert sd["phase_rad"] == pytest.approx(math.sqrt(((wrapped / 2) ** 2 + 0.1 ** 2) / 2))
    assert split_spread([({"a": 1.0}, {"a": float("nan")}), ({"a": 1.0}, {})]) == {"a": None}


def test_the_68_percent_factor_is_students_t():
    assert interval_factor(1) == pytest.approx(math.tan(math.pi * (0.841344746 - 0.5)), rel=1e-6)  # Cauchy
    assert interval_factor(2) == pytest.approx(1.321, abs=1e-3)
    assert 1.0 < interval_factor(8) < interval_factor(4) < interval_factor(2)


def test_the_splits_give_the_noise_of_an_estimate_from_all_the_photons(tiny_run, tmp_path):
    """An estimator whose noise is known: the total light (of a half: twice its light), from K = 8 splits.

    The whole run's total has the variance Σ (k⁺ + σ²) over its pixels (Poisson and read noise);
    the splits' σ̂ must agree within the chi distribution's spread for 8 degrees of freedom.
    """
    data, _, _ = load_fit_data(Path(tiny_run))
    sigma = float(data.read_noise_e)

    def total(d):
        return sum(float(torch.where(v.mask, v.electrons, torch.zeros_like(v.electrons)).sum())
                   for v in d.views)

    seen = []

    def fit_half(half, cfg, where):
        assert where.is_dir() and cfg.uncertainty_splits == 0
        seen.append(cfg.seed)
        return {"light": 2 * total(half), "photons_per_atom": half.photons_per_atom}

    from recon.fitting.config import FitConfig

    out = thinning_uncertainty(data, FitConfig(uncertainty_splits=8), tmp_path / "work", splits=8,
                               fit_half=fit_half)
    pixels = sum(int(v.mask.sum()) for v in data.views)
    k = sum(float(torch.where(v.mask, v.electrons, torch.zeros_like(v.electrons)).clamp_min(0).sum())
            for v in data.views)
    expected = math.sqrt(k + pixels * sigma ** 2)
    assert 0.6 < out["sd"]["light"] / expected < 1.45, (out["sd"]["light"], expected)
    assert out["sd"]["photons_per_atom"] == 0.0  # every half is fitted with half the photons per atom
    assert out["splits"] == 8 and out["interval_factor"] == pytest.approx(interval_factor(8))
    assert len(set(seen)) == 16  # each half its own seed (its own pool)
    assert not (tmp_path / "work").exists()  # the scratch fits are removed


def test_recon_fit_reports_the_noise_of_its_figures(tiny_run, tmp_path):
    from recon.campaign.results import row_from_metrics
    from recon.jobs.fit import fit
    from recon.reporting.summary import summary_lines

    outcome = fit(tiny_run, out=tmp_path / "fit", uncertainty_splits=1, steps=40)
    record = outcome.metrics["uncertainty"]
    assert record["splits"] == 1 and record["interval_factor"] == pytest.approx(interval_factor(1))
    sd = record["sd"]
    assert sd["atoms"] > 0 and all(sd[f"centroid_{a}_um"] > 0 and sd[f"width_{a}_um"] > 0 for a in "xyz")
    assert sd["atoms"] < 0.2 * outcome.metrics["atoms"]
    assert any(line.startswith("noise of the figures") for line in summary_lines(outcome.metrics))
    row = row_from_metrics(outcome.metrics)
    assert row["atoms_split_sd"] == sd["atoms"] and row["width_z_split_sd_um"] == sd["width_z_um"]
    assert row["split_interval_factor"] == pytest.approx(interval_factor(1))
    assert not (tmp_path / "fit" / "uncertainty").exists()
    assert 0 < outcome.metrics["outputs_s"] < record["seconds"]  # the refits are timed apart
    assert "noise of the figures" in (tmp_path / "fit" / "report.html").read_text()


def test_uncertainty_and_split_halves_are_refused_together(tiny_run, tmp_path):
    from recon.errors import ConfigError
    from recon.jobs.fit import fit

    with pytest.raises(ConfigError, match="--uncertainty and --split-halves"):
        fit(tiny_run, out=tmp_path / "fit", uncertainty_splits=1, split_halves=True)
    assert not (tmp_path / "fit").exists()
    with pytest.raises(ConfigError, match="uncertainty_splits"):
        fit(tiny_run, out=tmp_path / "fit", uncertainty_splits=9)


def test_the_camera_factors_get_their_noise_too(three_camera_run, tmp_path):
    """Three cameras of unequal sensitivity: each fitted factor's sd from the halves' (the reference's 0)."""
    from recon.jobs.fit import fit
    from recon.reporting.summary import uncertainty_text

    outcome = fit(three_camera_run, out=tmp_path / "fit", uncertainty_splits=1, steps=24)
    sd = outcome.metrics["uncertainty"]["sd"]
    assert sd["camera_south"] == 0.0  # the reference camera keeps 1 in every half
    assert 0 < sd["camera_east"] < 0.1 and 0 < sd["camera_north"] < 0.3
    assert "camera factors ±south 0, east" in uncertainty_text(outcome.metrics["uncertainty"])
