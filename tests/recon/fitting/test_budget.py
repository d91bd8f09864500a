"""A fit's memory estimated before tracing: the probe of the pool, the phases, and the refusal."""

import dataclasses
import math

import pytest

from recon.errors import ConfigError
from recon.fitting.budget import (
    GB,
    LIBRARIES_BYTES,
    OUTPUT_VOXEL_BYTES,
    POOL_FACTOR,
    SEGMENT_BYTES,
    MemoryPlan,
    available_memory,
    check_memory,
    em_voxel_bytes,
    estimate_memory,
    grid_solver_voxel_bytes,
    neural_bytes,
    probe_segments,
)
from recon.fitting.config import FitConfig, resolved
from recon.fitting.data import density_grid, load_fit_data
from recon.fitting.raypool import boost_factors, boost_pool, build_ray_pool, rays_per_sample
from recon.fitting.solvers import RUN_POINTS


@pytest.fixture(scope="module")
def data(tiny_run):
    return load_fit_data(tiny_run)[0]


def test_the_probe_counts_about_the_segments_the_pool_will_hold(data):
    per_view = rays_per_sample(data, 4)
    pool = build_ray_pool(data, samples=4, seed=0, rays_per_sample=per_view)
    probed = probe_segments(data, 4, per_view, pixels_per_view=256)
    assert len(pool.rays) > 1000 and abs(probed / len(pool.rays) - 1) < 0.1
    assert probe_segments(data, 8, per_view) > 1.8 * probed  # twice the rays, twice the segments


def test_the_probe_counts_the_segments_a_boost_adds(data):
    per_view = rays_per_sample(data, 4)
    pool = build_ray_pool(data, samples=4, seed=0, rays_per_sample=per_view)
    bright = float((pool.summed_electrons / pool.n_frames.clamp_min(1)).quantile(0.9)) / 2
    factors = boost_factors(pool.summed_electrons, pool.n_frames, bright, 4)
    assert 1.05 < float(factors.double().mean()) < 2  # a tenth of the pixels get 2 … 4 times the samples
    boosted = boost_pool(pool, data, factors, seed=0, rays_per_sample=per_view)
    probed = probe_segments(data, 4, per_view, pixels_per_view=256, boost_e=bright, boost_max=4)
    assert len(boosted.rays) > len(pool.rays) and abs(probed / len(boosted.rays) - 1) < 0.15


def test_the_peak_is_the_largest_phase_above_the_libraries_and_the_frames():
    plan = MemoryPlan(1.0 * GB, 0.5 * GB, 4_000_000, tracing=2.0 * GB, fitting=3.0 * GB, outputs=1.0 * GB)
    assert plan.peak == 4.5 * GB and plan.phase == "the fit"
    assert plan.line() == ("memory ≈ 4.5 GB at its peak (the fit): tracing 3.5 GB for ≈ 4 M segments, "
                           "the fit 4.5, the outputs 2.5")


def test_the_phases_grow_with_what_they_hold(data):
    cfg = resolved(FitConfig(), data)
    plan = estimate_memory(data, cfg, segments=1_000_000)
    keys = sum(v.roi[2] * v.roi[3] for v in data.views) * cfg.pool_samples + 1
    pool = 1_000_000 * SEGMENT_BYTES + 8 * keys
    assert plan.libraries == LIBRARIES_BYTES and plan.segments == 1_000_000
    em_voxels = math.prod(density_grid(data, 0.0)[0])  # the voxel field's grid is density.tif's
    assert plan.fitting == pytest.approx(POOL_FACTOR * pool + em_voxels * em_voxel_bytes(32))
    few = estimate_memory(data, dataclasses.replace(cfg, subsets=8), segments=1_000_000)
    assert few.fitting == plan.fitting  # EM's start is its largest state until the sensitivities outgrow it
    many, more = (estimate_memory(data, dataclasses.replace(cfg, subsets=n), segments=1_000_000)
                  for n in (64, 96))
    assert more.fitting - many.fitting == pytest.approx(em_voxels * 4 * 32)  # a sensitivity grid per subset
    finer = estimate_memory(data, dataclasses.replace(cfg, voxel_size_mm=cfg.voxel_size_mm or 0.01),
                            segments=1_000_000)
    assert finer.outputs >= plan.outputs and (finer.outputs - POOL_FACTOR * pool) % OUTPUT_VOXEL_BYTES == 0
    traced = estimate_memory(data, cfg, segments=2_000_000)
    assert traced.tracing - plan.tracing == pytest.approx(2.7 * 1_000_000 * SEGMENT_BYTES)
    assert estimate_memory(data, cfg).segments > 0  # probed when not given


def test_the_grid_solver_holds_a_run_of_the_field_and_a_few_grids_of_the_output_voxels(data):
    cfg = resolved(FitConfig(field="hashgrid", solver="grid"), data)
    plan = estimate_memory(data, cfg, segments=1_000_000)
    keys = sum(v.roi[2] * v.roi[3] for v in data.views) * cfg.pool_samples + 1
    pool = 1_000_000 * SEGMENT_BYTES + 8 * keys
    voxels = math.prod(density_grid(data, cfg.voxel_size_mm)[0])
    solver = voxels * grid_solver_voxel_bytes() + neural_bytes(cfg, RUN_POINTS)
    assert plan.fitting == pytest.approx(POOL_FACTOR * pool + solver)
    warm = estimate_memory(data, dataclasses.replace(cfg, grid_start="em"), segments=1_000_000)
    assert warm.fitting == pytest.approx(POOL_FACTOR * pool + max(solver, voxels * em_voxel_bytes(32)))
    finer = estimate_memory(data, dataclasses.replace(cfg, voxel_size_mm=0.5 * density_grid(data, 0)[2][0]),
                            segments=1_000_000)
    assert finer.fitting > plan.fitting  # eight times the voxels


def test_a_neural_fields_step_costs_in_proportion_to_its_samples():
    siren = FitConfig(field="siren")
    big = 1 << 20  # a step larger than a prediction's run of 2¹⁹ samples
    assert neural_bytes(siren, 2 * big) - neural_bytes(siren, big) == pytest.approx(big * 23 * 256 * 4)
    hashgrid = FitConfig(field="hashgrid")
    assert neural_bytes(hashgrid, 0) == neural_bytes(hashgrid, 1000) > 16 * 1e6  # the run: ≈ 2.2 M parameters
    assert neural_bytes(hashgrid, 2 * big) > neural_bytes(hashgrid, big)


def test_a_fit_over_its_budget_is_refused_in_one_line(data):
    plan = MemoryPlan(LIBRARIES_BYTES, 0, 5_000_000, tracing=2 * GB, fitting=1 * GB, outputs=1 * GB)
    check_memory(plan, FitConfig(memory_gb=3))
    with pytest.raises(ConfigError) as err:
        check_memory(plan, FitConfig(memory_gb=2))
    text = str(err.value)
    assert "\n" not in text and "needs ≈ 2.32 GB at its peak (tracing; ≈ 5 M ray segments)" in text
    assert "more than the 2 GB memory_gb allows" in text and "pool_samples" in text
    budget, what = available_memory()
    assert math.isfinite(budget) and budget > 0.5 * GB
    assert what in ("this machine has", "this container may use")
    with pytest.raises(ConfigError, match="memory_gb"):
        FitConfig(memory_gb=-1).validate()


def test_recon_fit_says_its_estimate_and_records_it_beside_the_peak(tiny_run, tmp_path):
    import json

    from typer.testing import CliRunner

    from recon.cli import app

    runner = CliRunner()
    config = tmp_path / "fit.toml"
    config.write_text("memory_gb = 0.01\n")
    res = runner.invoke(app, ["fit", "--views", str(tiny_run), "--out", str(tmp_path / "no"), "--config",
                              str(config)])
    assert res.exit_code == 2 and "memory_gb allows" in res.output and not (tmp_path / "no").exists()
    assert not list(tmp_path.glob(".no*"))  # nothing half-made
    config.write_text("steps = 4\n")
    res = runner.invoke(app, ["fit", "--views", str(tiny_run), "--out", str(tmp_path / "fit"), "--config",
                              str(config)])
    assert res.exit_code == 0, res.output
    assert "memory ≈ " in res.output
    metrics = json.loads((tmp_path / "fit" / "metrics.json").read_text())
    assert metrics["peak_memory_estimate_mb"] > LIBRARIES_BYTES / 2**20 and metrics["peak_memory_mb"] > 0
