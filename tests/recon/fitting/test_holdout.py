import math

import pytest
import torch

from recon.fitting.holdout import StopRule, heldout_deviance, split_held_out
from recon.fitting.raypool import RayPool
from recon.model.loss import data_loss
from recon.model.render import RayBatch, render_pixels


def _pool(views=(0,) * 50 + (1,) * 30 + (2,) * 1, samples=1):
    n = len(views)
    rays = RayBatch(torch.zeros(n, 3), torch.tensor([[1.0, 0, 0]]).repeat(n, 1), torch.ones(n),
                    torch.full((n,), -0.5), torch.full((n,), 0.5), torch.arange(n),
                    torch.zeros(n, dtype=torch.long))
    return RayPool(rays, torch.arange(n + 1), torch.arange(n, dtype=torch.float32), torch.ones(n),
                   torch.tensor(views), 2.0, samples)


def test_the_split_holds_out_each_views_share_and_nothing_twice():
    pool = _pool()
    usable = torch.arange(pool.n_pixels)[torch.arange(pool.n_pixels) != 7]  # pixel 7 is masked
    train, held = split_held_out(pool, usable, 0.2, seed=3)
    assert len(set(train.tolist()) & set(held.tolist())) == 0
    assert sorted(train.tolist() + held.tolist()) == usable.tolist()
    per_view = torch.bincount(pool.view_of_pixel[held], minlength=3).tolist()
    assert per_view == [round(0.2 * 49), round(0.2 * 30), 0]  # a one-pixel view keeps its pixel
    again = split_held_out(pool, usable, 0.2, seed=3)
    assert torch.equal(again[1], held) and not torch.equal(split_held_out(pool, usable, 0.2, seed=4)[1], held)
    train0, held0 = split_held_out(pool, usable, 0.0, seed=3)
    assert len(held0) == 0 and torch.equal(train0, usable)


def test_the_held_out_deviance_is_the_data_loss_of_those_pixels():
    pool = _pool()
    held = torch.tensor([1, 5, 20, 60])

    def field(points):
        return 3.0 + points[..., 0]

    got = heldout_deviance(field, pool, held, photons_per_atom=4 * math.pi, step_mm=0.1)
    pred = render_pixels(field, pool.gather(held), len(held), photons_per_atom=4 * math.pi, step_mm=0.1,
                         jitter=False)
    expected = float(data_loss(pred, pool.summed_electrons[held], pool.n_frames[held], pool.read_noise_e))
    assert got == pytest.approx(expected, rel=1e-6)


def test_the_stop_rule_waits_patience_checks_after_the_best():
    rule = StopRule(patience=2, tolerance=1e-3)
    seen = [rule.update(step, d) for step, d in enumerate([5.0, 4.0, 3.0, 2.9999, 3.1, 3.2], 1)]
    assert seen == [True, True, True, False, False, False]  # 2.9999 is within the tolerance of 3.0
    assert rule.best == 3.0 and rule.best_step == 3 and rule.done
    copy = StopRule(patience=2)
    copy.load_state_dict(rule.state_dict())
    assert (copy.best, copy.best_step, copy.waited, copy.done) == (3.0, 3, 3, True)
    fresh = StopRule(patience=2)
    assert fresh.update(1, 10.0) and not fresh.done
