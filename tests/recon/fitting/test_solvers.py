"""The solvers: a non-finite step is refused before it changes anything, the learning-rate schedule,
the loop's message for each, and the grid solver's gradient against autograd through the renderer."""

import functools
import math

import pytest
import torch

from recon.errors import ConfigError, FitError
from recon.fitting.config import FitConfig, field_factory, load_fit_config
from recon.fitting.data import density_grid
from recon.fitting.em import OSEM
from recon.fitting.holdout import split_held_out
from recon.fitting.loop import check_interval, run_fit
from recon.fitting.projector import Projector, grid_density, voxel_centres
from recon.fitting.solvers import (
    AdamSolver,
    EMSolver,
    GridSolver,
    NonFiniteStep,
    fit_to_grid,
    voxel_means,
)
from recon.io.volume import grid_points
from recon.model.loss import data_loss
from recon.model.render import render_pixels
from tests.micro import LogLines, make_micro_pool_case


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return make_micro_pool_case(tmp_path_factory.mktemp("micro"))


def _cfg(micro, **kw):
    return load_fit_config(micro["cfg"], field="voxel", device="cpu", field_options={"voxel_resolution": 8},
                           subsets=4, **kw)


def _field(micro, cfg):
    box = micro["data"].system.volume
    return field_factory(cfg, box.min_mm.tolist(), box.max_mm.tolist(), 1e5, torch.device("cpu"))


def test_an_em_step_that_leaves_the_field_non_finite_is_refused(micro):
    cfg = _cfg(micro, solver="em")
    field = _field(micro, cfg)
    pool = micro["pool"]
    solver = EMSolver(field, pool, torch.arange(pool.n_pixels), cfg, photons_per_atom=200.0)
    with torch.no_grad():
        field.grid[0, 0, 0, 0, 0] = math.nan
    with pytest.raises(NonFiniteStep, match="the EM update became non-finite") as err:
        solver.step(type("State", (), {"step": 0})())
    assert "{then}" in err.value.advice


def test_the_adam_learning_rate_falls_from_lr_to_lr_final_along_a_cosine(micro):
    cfg = _cfg(micro, solver="adam", lr=0.1, lr_final=0.001, steps=11)
    pool = micro["pool"]
    solver = AdamSolver(_field(micro, cfg), pool, torch.arange(pool.n_pixels), cfg, photons_per_atom=200.0,
                        mean_density=1e5, box=micro["data"].system.volume, generator=torch.Generator(),
                        max_steps=11, refine=None, warn=print)
    assert solver.lr_at(0) == pytest.approx(0.1)
    assert solver.lr_at(5) == pytest.approx((0.1 + 0.001) / 2)
    assert solver.lr_at(10) == solver.lr_at(50) == pytest.approx(0.001)


def test_the_loop_says_where_an_em_fit_turned_non_finite_and_how_to_go_on(micro, tmp_path, monkeypatch):
    calls = []

    def update(self, step):
        calls.append(step)
        return (math.nan if step == 2 else 1.0), 10

    monkeypatch.setattr(OSEM, "update", update)
    cfg = _cfg(micro, solver="em", steps=10, checkpoint_every=2, holdout=0.0)
    with pytest.raises(FitError) as err:
        run_fit(micro["data"], cfg, tmp_path, make_field=field_factory)
    assert calls == [0, 1, 2]
    assert str(err.value) == (
        f"fit: the EM update became non-finite at step 3; the last good checkpoint (step 2) is "
        f"{tmp_path / 'checkpoint.pt'}. Check the data (`recon inspect`) and the run's photons_per_atom, "
        "then rerun with --resume")


def _grid_solver(micro, cfg, field, voxel_mm=0.22):
    # 0.22 mm: the grid's faces (±0.55 mm) fall between the stratum midpoints of the micro box's rays
    # (±0.575, ±0.525 …), where torch's float32 and the kernel's float64 would each put a layer of
    # samples on its own side of the face.
    pool = micro["pool"]
    return GridSolver(field, pool, torch.arange(pool.n_pixels), cfg, photons_per_atom=200.0, mean_density=1e5,
                      box=micro["data"].system.volume, grid=density_grid(micro["data"], voxel_mm),
                      generator=torch.Generator().manual_seed(0), max_steps=10)


def test_voxel_centres_are_where_the_projectors_trilinear_grid_takes_its_values(micro):
    lo, hi, shape = [-1.0, -0.5, -2.0], [1.0, 0.7, 1.0], (4, 3, 5)
    op = Projector(micro["pool"], lo, hi, shape, photons_per_atom=1.0, step_mm=0.05)
    centres = voxel_centres(op).reshape(*shape, 3)
    values = torch.rand(shape, dtype=torch.float64)
    assert torch.allclose(centres[0, 0, 0], torch.tensor([-0.8, -0.3, -1.625], dtype=torch.float64))
    assert torch.allclose(grid_density(values, lo, hi)(centres), values, atol=1e-12)


@pytest.mark.parametrize("kind", ["hashgrid", "siren"])
def test_the_grid_solvers_gradient_is_autograd_through_the_rendered_grid(micro, kind):
    """The adjoint's grid gradient carried run by run into the field = autograd through render_pixels."""
    cfg = load_fit_config(micro["cfg"], field=kind, solver="grid", device="cpu", subsets=2, step_mm=0.05)
    field = _field(micro, cfg).double()
    solver = _grid_solver(micro, cfg, field)
    solver.optimizer.step = lambda: None  # keep the gradients, change nothing
    pixels = solver.subsets[0]
    pool = micro["pool"]
    solver.step(type("State", (), {"step": 0})())
    ours = [p.grad.clone() for p in field.parameters()]
    field.zero_grad()
    op = solver.projector
    values = field(voxel_centres(op)).reshape(op.shape)
    density = grid_density(values, op.box_min_mm, op.box_max_mm)
    predicted = render_pixels(density, pool.gather(pixels), len(pixels), photons_per_atom=200.0, step_mm=0.05,
                              jitter=False)
    data_loss(predicted, pool.summed_electrons[pixels], pool.n_frames[pixels], pool.read_noise_e).backward()
    assert all(float(g.abs().max()) > 0 for g in ours)
    # The pool's segments are float32: the kernel's sample positions round where torch's do not, and a
    # hash-table entry sums many voxels' slopes of both signs (1e-4 of its largest seen).
    for mine, theirs in zip(ours, (p.grad for p in field.parameters()), strict=True):
        assert float((mine - theirs).abs().max()) <= 1e-3 * float(theirs.abs().max())


def test_the_grid_solver_fits_the_field_at_the_voxel_centres_of_density_tif(micro):
    cfg = load_fit_config(micro["cfg"], field="hashgrid", solver="grid", device="cpu", subsets=2)
    solver = _grid_solver(micro, cfg, _field(micro, cfg), voxel_mm=0.13)
    shape, origin, voxel = density_grid(micro["data"], 0.13)
    box = micro["data"].system.volume
    assert solver.projector.shape == shape
    assert (torch.tensor(solver.projector.box_min_mm) >= box.min_mm - 1e-6).all()  # within the box
    k, j, i = (n - 1 for n in shape)  # the last voxel's centre, as density.tif places it
    last = torch.tensor([o + n * v for o, n, v in zip(origin, (i, j, k), voxel, strict=True)])
    assert torch.allclose(solver.points[0].double(), torch.tensor(origin, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(solver.points[-1].double(), last.double(), atol=1e-6)


def test_a_grid_step_that_makes_the_loss_non_finite_changes_nothing(micro):
    cfg = load_fit_config(micro["cfg"], field="hashgrid", solver="grid", device="cpu", subsets=2)
    field = _field(micro, cfg)
    solver = _grid_solver(micro, cfg, field)
    with torch.no_grad():
        field.log_gain.fill_(math.inf)
    before = {k: v.clone() for k, v in field.state_dict().items()}
    with pytest.raises(NonFiniteStep, match="the loss became"):
        solver.step(type("State", (), {"step": 0})())
    after = field.state_dict()
    assert all(torch.equal(before[k], after[k]) or not torch.isfinite(before[k]).all() for k in before)
    assert not solver.optimizer.state


def test_a_grid_fit_lowers_the_held_out_deviance_and_predicts_from_its_grid(micro, tmp_path):
    cfg = load_fit_config(micro["cfg"], field="hashgrid", solver="grid", device="cpu", subsets=4, steps=24,
                          check_every=4, patience=100, lr=0.02)
    result = run_fit(micro["data"], cfg, tmp_path, make_field=field_factory)
    deviances = [d for _, d in result.state.heldout]
    assert len(deviances) == 6 and min(deviances[1:]) < deviances[0]
    assert result.predicted.shape == (result.pool.n_pixels,) and float(result.predicted.min()) >= 0
    # The final gain: the kept field's light over the training pixels is the measured light.
    pool = result.pool
    usable = (pool.observed_frames > 0).nonzero(as_tuple=True)[0]
    train = split_held_out(pool, usable, cfg.holdout, cfg.seed)[0]
    measured = float(pool.summed_electrons[train].sum())
    assert result.final_gain > 0
    assert float((pool.n_frames[train] * result.predicted[train]).sum()) == pytest.approx(measured, rel=1e-5)


def test_voxel_means_are_the_midpoint_rule_over_sub_voxels_no_larger_than_the_detail():
    points = torch.tensor([[0.3, -0.2, 0.1], [1.0, 2.0, -1.0]], dtype=torch.float64)
    voxel = (0.2, 0.1, 0.1)

    def density(p):
        return p[:, 0] ** 2 + 3 * p[:, 1] - p[:, 2]  # linear in y, z: their means are the centre's

    for finer, sub in ((0.05, 4), (0.2, 1), (0.07, 3)):
        want = density(points) + voxel[0] ** 2 / 12 * (1 - 1 / sub**2)  # midpoint rule of x² over s cells
        assert torch.allclose(voxel_means(density, points, voxel, finer), want, rtol=1e-12)


def test_a_field_fitted_to_a_grid_holds_it_to_the_misfit_it_reports():
    cfg = load_fit_config(None, field="hashgrid", device="cpu")
    field = field_factory(cfg, [-1.0] * 3, [1.0] * 3, 1.0, torch.device("cpu"))
    points = grid_points((24, 24, 24), (-23 / 24,) * 3, (1 / 12,) * 3).reshape(-1, 3)  # tiling [-1, 1]³
    target = 1e4 * torch.exp(-0.5 * (points / torch.tensor([0.3, 0.4, 0.2])).square().sum(-1))
    with torch.no_grad():
        before = float((field(points) - target).square().mean().sqrt() / target.square().mean().sqrt())
    misfit = fit_to_grid(field, points, target, generator=torch.Generator().manual_seed(0), steps=300,
                         batch=4096)
    with torch.no_grad():
        after = float((field(points) - target).square().mean().sqrt() / target.square().mean().sqrt())
    assert misfit == pytest.approx(after, rel=1e-4) and misfit < 0.1 < before


def test_the_grid_solver_can_start_from_ems_fit_and_keeps_no_trace_of_it(micro, tmp_path):
    base = dict(field="hashgrid", solver="grid", device="cpu", subsets=4, steps=4, check_every=4,
                patience=100, lr=1e-3)
    lines = LogLines()
    warm = run_fit(micro["data"], load_fit_config(micro["cfg"], grid_start="em", **base), tmp_path / "warm",
                   make_field=field_factory, progress=lines)
    cold = run_fit(micro["data"], load_fit_config(micro["cfg"], **base), tmp_path / "cold",
                   make_field=field_factory)
    assert any(line.startswith("EM start: ") for line in lines.lines)
    assert any(line.startswith("grid start: the field fitted to EM's density") for line in lines.lines)
    assert not (tmp_path / "warm" / "em-start").exists()
    assert warm.state.heldout[0][1] < cold.state.heldout[0][1]  # it starts where EM stopped


@pytest.mark.parametrize("sampling", ["random", "sobol"])
def test_the_em_start_fits_the_same_pool_as_the_grid_solver(micro, tmp_path, sampling, monkeypatch):
    """One pool in the cache after both fits: EM's start traced (or read) the fit's own pool."""
    # how well the field holds EM's density is not what this test checks: 20 steps, not 3000
    monkeypatch.setattr("recon.fitting.loop.fit_to_grid", functools.partial(fit_to_grid, steps=20))
    cfg = load_fit_config(micro["cfg"], field="hashgrid", solver="grid", grid_start="em", device="cpu",
                          subsets=4, steps=2, check_every=2, pool_sampling=sampling)
    run_fit(micro["data"], cfg, tmp_path / "fit", make_field=field_factory, pool_cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("pool-*.npz"))) == 1


def test_a_grid_fit_resumes_where_its_checkpoint_left_it(micro, tmp_path):
    # lr = lr_final: a schedule that the step limit leaves alone
    base = dict(field="hashgrid", solver="grid", device="cpu", subsets=4, check_every=2, patience=100,
                checkpoint_every=2, max_passes=100, lr=1e-2, lr_final=1e-2)
    whole = run_fit(micro["data"], load_fit_config(micro["cfg"], steps=8, **base), tmp_path / "whole",
                    make_field=field_factory)
    run_fit(micro["data"], load_fit_config(micro["cfg"], steps=4, **base), tmp_path / "parts",
            make_field=field_factory)
    resumed = run_fit(micro["data"], load_fit_config(micro["cfg"], steps=8, **base), tmp_path / "parts",
                      make_field=field_factory, resume=True)
    assert resumed.state.step == 8 and len(resumed.state.losses) == 8
    assert resumed.state.losses[4:] == pytest.approx(whole.state.losses[4:], rel=1e-5)


@pytest.mark.parametrize(("change", "message"), [
    ({"grid_start": "em", "solver": "adam"}, "grid_start = 'em' starts the grid solver"),
    ({"grid_start": "voxels"}, "'grid_start' must be '' or 'em'"),
    ({"model": "emission-absorption"}, "solver .grid. projects"),
    ({"refine": "mirrors"}, "solver 'grid' projects"),
    ({"solver": "gird"}, "'solver' must be auto, em, adam, grid"),
])
def test_the_grid_solver_refuses_what_its_operator_cannot_model(micro, change, message):
    with pytest.raises(ConfigError, match=message):
        load_fit_config(micro["cfg"], **{"field": "hashgrid", "solver": "grid", **change})


def test_held_out_checks_come_every_four_em_updates_every_grid_pass_and_every_100_adam_steps():
    assert check_interval(FitConfig()) == 4  # EM's 32 subsets
    assert check_interval(FitConfig(subsets=4)) == 1
    assert check_interval(FitConfig(field="hashgrid", solver="grid", subsets=6)) == 6
    assert check_interval(FitConfig(field="hashgrid")) == 100
