"""`recon.fit` as a function: where its settings come from, what it returns, which results it refuses."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import recon
from recon.errors import ConfigError, ShapeError
from recon.fitting.checkpoint import read_checkpoint
from recon.io.volume import Volume, read_volume, write_volume
from recon.jobs.fit import FitOutcome, fit, unconverged_warning, worthless_result
from tests.conftest import slow
from tests.micro import FIT_TOML, LogLines, make_micro_case


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return make_micro_case(tmp_path_factory.mktemp("jobfit"))


# ------------------------------------------------------------------------------------ settings


@slow
def test_settings_come_from_options_then_toml_then_the_resumed_fit_then_defaults(micro, tmp_path,
                                                                                 monkeypatch):
    assert recon.fit is fit  # the Python API is the job
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "a.toml"
    toml.write_text("steps = 7\nlr = 0.02\n" + FIT_TOML)
    made = []

    def progress(cfg):
        made.append(LogLines(cfg))
        return made[-1]

    first = fit(micro["run"], config=toml, steps=4, device="cpu", make_progress=progress)
    assert isinstance(first, FitOutcome) and first.out == Path("fits") / "run"  # the default --out
    cfg = first.config
    assert cfg.steps == 4  # an option beats the TOML
    assert cfg.lr == 0.02 and cfg.batch_pixels == 64  # the TOML beats the defaults
    assert cfg.loss == "poisson" and cfg.lr_final == 1e-3  # defaults where nobody said anything
    assert made[0].cfg == cfg  # the progress display is built from the resolved settings
    written = json.loads((tmp_path / "fits" / "run" / "config.json").read_text())
    assert written["fit"]["steps"] == 4 and written["fit"]["lr"] == 0.02
    assert written["resolved"] == {"step_mm": 0.05, "voxel_size_mm": first.metrics["voxel_size_mm"]}
    assert any(line.startswith("plan: ") and "strata 0.05 mm" in line for line in made[0].lines)
    assert any(line.startswith("step 2: ") and "a pass ≈" in line for line in made[0].lines)
    assert written["truth"] == str((micro["run"] / "truth.tif").resolve())  # for `recon fsc OUT/`
    assert first.metrics == json.loads((tmp_path / "fits" / "run" / "metrics.json").read_text())
    assert first.metrics["steps"] == 4
    assert "shot_noise_limit" not in first.metrics  # an Adam fit fits no Gaussian (EM's start does)
    against = first.metrics["against_truth"]  # the run has a truth: the fit's errors against it
    assert set(against) == {"truth", "atoms_error", "centroid_error_um", "width_error"}
    assert against["atoms_error"] == pytest.approx(first.metrics["atoms"] / against["truth"]["atoms"] - 1)
    # the outputs are said one by one as they are written, and their time is in metrics.json
    outputs = [line for line in made[0].lines if line.startswith(("wrote ", "predicted "))]
    assert [line.split(" (")[0] for line in outputs] == ["wrote density.tif", "predicted the views",
                                                         "wrote views.npz, renders/", "wrote fsc-truth/"]
    assert all(line.endswith(" s)") for line in outputs)
    assert 0 <= first.metrics["outputs_s"] < 600

    resumed = fit(micro["run"], out=first.out, resume=True, steps=6, device="cpu")
    assert resumed.config.steps == 6  # an option beats the resumed fit
    assert resumed.config.lr == 0.02 and resumed.config.batch_pixels == 64  # the resumed fit beats defaults
    assert resumed.metrics["steps"] == 6
    assert read_checkpoint(first.out / "checkpoint.pt")["state"]["step"] == 6

    other = tmp_path / "b.toml"
    other.write_text("lr = 0.005\n" + FIT_TOML)
    again = fit(micro["run"], out=first.out, config=other, resume=True, device="cpu")
    assert again.config.lr == 0.005  # the TOML beats the resumed fit
    assert again.config.steps == 6 and again.metrics["steps"] == 6  # the resumed fit beats the default 1500


def test_split_needs_split_halves_and_refine_excludes_them_before_anything_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-such-run"
    with pytest.raises(ConfigError) as info:
        fit(missing, split="frames")
    assert str(info.value) == "fit: --split frames only applies with --split-halves; add --split-halves"
    with pytest.raises(ConfigError, match="--refine and --split-halves cannot be combined"):
        fit(missing, split_halves=True, refine="mirrors")
    with pytest.raises(ConfigError, match="unknown setting 'stepz'"):
        fit(missing, stepz=3)
    assert list(tmp_path.iterdir()) == []


def test_none_settings_are_not_given(micro, tmp_path):
    """The CLI passes every option, None when not given: None must not replace the TOML's value."""
    with pytest.raises(ConfigError, match="--split thinning only applies"):
        fit(micro["run"], config=micro["cfg"], split="thinning", steps=None, seed=None, field=None)


def test_the_outcome_is_a_frozen_record():
    assert [f.name for f in dataclasses.fields(FitOutcome)] == ["metrics", "out", "config"]
    outcome = FitOutcome({}, Path("o"), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.out = Path("p")


# ------------------------------------------------------------------------ worthless or unconverged


def _view(pixels=1000, fit_rms=1.05, flat_rms=30.0, measured=1e5, predicted=1e5):
    return {"pixels": pixels, "residual_rms": fit_rms, "flat_residual_rms": flat_rms, "measured_e": measured,
            "predicted_e": predicted}


def _metrics(*views, **figures):
    return {"atoms": 1e6, "centroid_mm": [0.0, 0.0, 0.0], "width_mm": [0.5] * 3,
            "views": list(views) or [_view()], **figures}


@pytest.mark.parametrize("figures", [{"atoms": math.inf}, {"atoms": -math.inf},
                                     {"width_mm": [0.5, math.nan, 0.5]},
                                     {"centroid_mm": [0.0, math.inf, 0.0]}])
def test_non_finite_figures_are_worthless(figures):
    assert worthless_result(_metrics(**figures)).startswith("the result is not finite (atoms ")


@pytest.mark.parametrize("atoms", [0.0, -5.0, -0.0])
def test_no_or_negative_atoms_are_worthless(atoms):
    assert worthless_result(_metrics(atoms=atoms)) == "the fitted density is zero everywhere"
    # a zero density has no centroid: that is not "not finite"
    nowhere = _metrics(atoms=0.0, centroid_mm=[math.nan] * 3, width_mm=[math.nan] * 3)
    assert worthless_result(nowhere) == "the fitted density is zero everywhere"


def test_a_prediction_far_above_the_measurement_that_a_flat_image_beats_is_worthless():
    problem = worthless_result(_metrics(_view(fit_rms=40.0, predicted=3e5)))
    assert problem == ("the result explains none of the signal: it predicts 3e+05 of the 1e+05 measured "
                       "photoelectrons, and its residuals (RMS 40 σ) are no smaller than those of a flat "
                       "image (RMS 30 σ)")


@pytest.mark.parametrize("predicted", [5e4, 2e5])
def test_the_factor_two_is_inclusive(predicted):
    metrics = _metrics(_view(fit_rms=40.0, predicted=predicted))
    assert worthless_result(metrics) is None
    assert unconverged_warning(metrics).startswith("the fit has not converged: its residuals (RMS 40 σ)")


def test_a_prediction_off_in_total_that_beats_a_flat_image_is_neither():
    metrics = _metrics(_view(fit_rms=5.0, predicted=1e4))
    assert worthless_result(metrics) is None and unconverged_warning(metrics) is None


def test_nothing_measured_is_not_worthless():
    metrics = _metrics(_view(fit_rms=40.0, measured=0.0, predicted=3e5))
    assert worthless_result(metrics) is None and "not converged" in unconverged_warning(metrics)


def test_a_fit_no_better_than_flat_is_unconverged_even_when_equal():
    warning = unconverged_warning(_metrics(_view(fit_rms=30.0)))
    assert warning == ("the fit has not converged: its residuals (RMS 30 σ) are no smaller than those of a "
                       "flat image (RMS 30 σ); fit longer (--steps) before trusting it")


def test_structure_needs_a_flat_image_to_leave_more_than_noise():
    n = 1000  # a flat image leaves structure when χ²_flat > n (1 + 5 √(2/n)) = 1.2236 n
    noise_only = _metrics(_view(pixels=n, fit_rms=2.0, flat_rms=math.sqrt(1.22), predicted=1e3))
    assert worthless_result(noise_only) is None and unconverged_warning(noise_only) is None
    structured = _metrics(_view(pixels=n, fit_rms=2.0, flat_rms=math.sqrt(1.23), predicted=1e3))
    assert "explains none of the signal" in worthless_result(structured)


def test_views_are_weighted_by_their_pixels_and_empty_or_undefined_ones_ignored():
    small_bad = _view(pixels=10, fit_rms=100.0, flat_rms=1.0)
    large_good = _view(pixels=10000, fit_rms=1.0, flat_rms=30.0)
    assert unconverged_warning(_metrics(small_bad, large_good)) is None  # χ² over pixels, not mean RMS
    ignored = [_view(pixels=0, fit_rms=1e9, flat_rms=1.0), _view(fit_rms=1e9, flat_rms=math.nan)]
    assert unconverged_warning(_metrics(large_good, *ignored)) is None
    assert unconverged_warning(_metrics(*ignored)) is None  # no pixel left: nothing to judge
    assert unconverged_warning({**_metrics(), "views": []}) is None
    assert worthless_result({**_metrics(), "views": []}) is None


# ------------------------------------------------------------------------------- bugs found


@pytest.mark.parametrize("split", ["bogus", "frames"])  # unknown; frames of a one-shot run
def test_a_refused_split_leaves_nothing_behind(micro, tmp_path, split):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--split"):
        fit(micro["run"], out=out, config=micro["cfg"], device="cpu", steps=2, split_halves=True, split=split)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@slow
@pytest.mark.parametrize("where", ["the run", "its parent"])
def test_an_out_that_holds_the_run_is_refused_and_the_run_kept(micro, tmp_path, where):
    import shutil

    run = shutil.copytree(micro["run"], tmp_path / "shot" / "run")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    out = run if where == "the run" else run.parent
    try:
        with pytest.raises(ConfigError, match="--out"):
            fit(run, out=out, config=micro["cfg"], device="cpu", steps=2, overwrite=True)
    finally:
        assert run.is_dir() and sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_views_whose_regions_overlap_on_one_camera_are_refused(micro, tmp_path):
    """A region listed twice (copy and paste in run.toml) would count every pixel of it twice."""
    import shutil

    import tomli_w
    import tomllib

    from recon.errors import DataError

    run = tmp_path / "run"
    shutil.copytree(micro["run"], run)
    spec = tomllib.loads((run / "run.toml").read_text())
    spec["views"].append({**spec["views"][0], "name": "again"})
    (run / "run.toml").write_text(tomli_w.dumps(spec))
    with pytest.raises(DataError, match="views 'direct' and 'again' .* share pixels of camera 0"):
        fit(run, out=tmp_path / "out", steps=2, device="cpu")
    assert not (tmp_path / "out").exists()


@slow
def test_a_fit_recovers_its_truth_where_two_views_constrain_it(tmp_path, tiny_system_file):
    """End to end: simulate a Gaussian cloud through the tiny instrument, fit it with the defaults.

    The instrument has two views (the direct one and one mirror), which pin the cloud in x and y
    but hardly in z (the missing cone), so z is not asserted. Seeded, so the result is the same on
    every run; the bounds leave about twice the errors of this one seed and phantom.
    """
    from recon.analysis.moments import cloud_metrics
    from recon.io.volume import read_volume
    from recon.simulation.simulate import simulate_run

    run = tmp_path / "run"
    simulate_run(tiny_system_file, "gaussian", run, atoms=2e6, photons_per_atom=2000.0, samples=4,
                 step_mm=0.02, truth_voxel_mm=0.05, seed=7)
    (tmp_path / "fit.toml").write_text("pool_samples = 4\n")
    metrics = fit(run, out=tmp_path / "fit", config=tmp_path / "fit.toml").metrics
    truth = cloud_metrics(read_volume(run / "truth.tif"))
    density = read_volume(tmp_path / "fit" / "density.tif")
    resolved = json.loads((tmp_path / "fit" / "config.json").read_text())["resolved"]
    assert resolved["voxel_resolution"] == list(density.data.shape[::-1])  # EM's voxels are density.tif's
    assert metrics["converged"]
    assert metrics["atoms"] == pytest.approx(truth["atoms"], rel=0.06)
    for axis in (0, 1):
        assert abs(metrics["centroid_mm"][axis] - truth["centroid_mm"][axis]) < 0.015
        assert metrics["width_mm"][axis] == pytest.approx(truth["width_mm"][axis], rel=0.18)


def test_a_truth_too_coarse_to_compare_with_is_refused_before_the_fit(micro, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro["run"], run)
    truth = read_volume(run / "truth.tif")
    write_volume(run / "truth.tif", Volume(np.ones((1, 1, 1), np.float32), truth.origin_mm, (2.4,) * 3,
                                           truth.unit))
    with pytest.raises(ShapeError) as info:
        fit(run, out=tmp_path / "out", steps=2, device="cpu")
    path = run / "truth.tif"
    assert str(info.value) == (f"fit: the truth {path} has a grid of (1, 1, 1) voxels (z, y, x), too coarse "
                               "to compare with; use a truth of ≥ 4 voxels per edge")
    assert not (tmp_path / "out").exists()  # refused before anything was written
