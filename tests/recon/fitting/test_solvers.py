"""The solvers: a non-finite step is refused before it changes anything, the learning-rate schedule,
and the loop's message for each."""

import math

import pytest
import torch

from recon.errors import FitError
from recon.fitting.config import field_factory, load_fit_config
from recon.fitting.em import OSEM
from recon.fitting.loop import run_fit
from recon.fitting.solvers import AdamSolver, EMSolver, NonFiniteStep
from tests.micro import make_micro_pool_case


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
