import math

import pytest
import torch

from recon.fitting.holdout import (
    StopRule,
    heldout_deviance,
    heldout_pixel_deviances,
    paired_difference,
    split_held_out,
)
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


def test_the_pixel_deviances_are_the_held_out_deviance_pixel_by_pixel():
    pool = _pool()
    held = torch.tensor([1, 5, 20, 60])

    def field(points):
        return 3.0 + points[..., 0]

    deviance, count = heldout_pixel_deviances(field, pool, held, photons_per_atom=4 * math.pi, step_mm=0.1)
    assert deviance.shape == count.shape == (4,)
    total = heldout_deviance(field, pool, held, photons_per_atom=4 * math.pi, step_mm=0.1)
    assert float(deviance.sum() / count.sum()) == pytest.approx(total, rel=1e-12)
    pred = render_pixels(field, pool.gather(held), len(held), photons_per_atom=4 * math.pi, step_mm=0.1,
                         jitter=False).double()
    var = pool.read_noise_e**2 + 1e-3  # one frame each: 2 [λ' − n' + n' log(n'/λ')], shifted by σ²
    lam, n = pred + var, pool.summed_electrons[held].double() + var
    assert torch.allclose(deviance.double(), 2 * (lam - n + n * torch.log(n / lam)), rtol=1e-5, atol=1e-6)


def test_a_paired_difference_and_its_standard_error():
    gen = torch.Generator().manual_seed(3)
    reference = torch.rand(10_000, generator=gen, dtype=torch.float64) * 4
    count = torch.ones(10_000, dtype=torch.float64)
    mean, error = paired_difference(reference + 0.25, reference, count)
    assert mean == pytest.approx(0.25) and error == pytest.approx(0.0, abs=1e-12)  # a shift: no doubt
    noise = 0.1 * torch.randn(10_000, generator=gen, dtype=torch.float64)
    mean, error = paired_difference(reference + 0.01 + noise, reference, count)
    assert mean == pytest.approx(0.01 + float(noise.mean()), rel=1e-9)
    assert error == pytest.approx(0.1 / 100, rel=0.03)  # σ/√n of the differences, not of the deviances
    two = count * 2  # two frames a pixel: per frame, half of it
    assert paired_difference(reference + 0.5, reference, two)[0] == pytest.approx(0.25)


def test_with_significance_only_a_clear_improvement_is_a_new_best():
    gen = torch.Generator().manual_seed(4)
    base = torch.rand(40_000, generator=gen, dtype=torch.float64) + 0.5
    count = torch.ones_like(base)

    def check(shift, spread):  # the mean falls by exactly -shift; the pixels scatter by spread
        noise = spread * torch.randn(40_000, generator=gen, dtype=torch.float64)
        pixels = base + shift + noise - noise.mean()
        return float(pixels.mean()), pixels

    plain, rule = StopRule(patience=2), StopRule(patience=2, significance=1.0)
    steps = [check(0.0, 0.0), check(-0.0004, 0.2), check(-0.0002, 0.2), check(-0.02, 0.2),
             check(-0.0204, 0.2)]
    seen = [rule.update(step, d, pixels, count) for step, (d, pixels) in enumerate(steps, 1)]
    plain_seen = [plain.update(step, d) for step, (d, _) in enumerate(steps, 1)]
    # a fall of 0.0004 per pixel is below one standard error (0.2/200 = 0.001): no new best
    assert seen == [True, False, False, True, False] and rule.best_step == 4
    assert plain_seen[:2] == [True, True] and plain.best_step >= 4  # the relative tolerance takes it
    copy = StopRule(patience=2, significance=1.0)
    copy.load_state_dict(rule.state_dict())
    assert torch.equal(copy.best_pixels, rule.best_pixels) and copy.best_step == 4
    assert StopRule(significance=1.0).update(1, 3.0)  # no pixels given: the relative rule alone
