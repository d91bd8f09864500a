import pytest
import torch

from recon.model.loss import data_loss, tv_regulariser


@pytest.mark.parametrize("kind", ["poisson", "gaussian", "mse"])
def test_loss_is_minimal_at_the_measured_mean(kind):
    counts = torch.tensor([0.0, 3.0, 50.0, 1000.0], dtype=torch.float64)
    frames = torch.ones(4, dtype=torch.float64)
    at = data_loss(counts, counts, frames, 2.0, kind=kind)
    for factor in (0.9, 1.1):
        assert at < data_loss(counts * factor + 0.1, counts, frames, 2.0, kind=kind)
    if kind != "gaussian":  # the Gaussian NLL's optimum is shifted slightly by its log-variance term
        lam = counts.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(data_loss(lam, counts, frames, 2.0, kind=kind), lam)
        assert grad.abs().max() < 1e-9


def test_poisson_deviance_is_about_one_per_pixel_for_poisson_data():
    g = torch.Generator().manual_seed(0)
    lam = torch.full((20000,), 30.0, dtype=torch.float64)
    counts = torch.poisson(lam, generator=g)
    dev = data_loss(lam, counts, torch.ones_like(lam), 0.0)
    assert abs(dev.item() - 1.0) < 0.05


def test_frames_are_summed():
    lam = torch.tensor([5.0], dtype=torch.float64)
    one = data_loss(lam, torch.tensor([10.0], dtype=torch.float64), torch.tensor([1.0]), 1.0)
    two = data_loss(lam, torch.tensor([20.0], dtype=torch.float64), torch.tensor([2.0]), 1.0)
    assert torch.allclose(one, two)


def test_tv_of_constant_is_zero():
    pts = torch.rand(100, 3, dtype=torch.float64)
    assert tv_regulariser(lambda p: torch.ones(len(p), dtype=p.dtype), pts, 0.01, 1.0) == 0


def _poisson_pmf(n, mu):
    import math

    return math.exp(-mu + n * math.log(mu) - math.lgamma(n + 1))


def test_the_censored_mean_and_deviance_are_the_truncated_poissons():
    import math

    from recon.model.loss import censored_deviance, censored_mean

    for mu in (0.3, 2.0, 6.25, 15.0):
        for k in (0, 1, 4, 11):
            probs = [_poisson_pmf(n, mu) for n in range(k + 1)]
            cdf = sum(probs)
            mean = sum(n * p for n, p in enumerate(probs)) / cdf
            got = censored_mean(torch.tensor([mu], dtype=torch.float64), torch.tensor([float(k)]))
            assert float(got) == pytest.approx(mean, rel=1e-9, abs=1e-12), (mu, k)
            dev = censored_deviance(torch.tensor([mu], dtype=torch.float64), torch.tensor([float(k)]))
            assert float(dev) == pytest.approx(-2 * math.log(cdf), rel=1e-9), (mu, k)


def test_censored_frames_add_their_deviance_and_count_as_frames():
    from recon.model.loss import Censored

    lam = torch.tensor([1.0, 0.5, 3.0], dtype=torch.float64, requires_grad=True)
    summed = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    frames = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # pixels 2 and 3: every frame clipped
    cens = Censored(torch.tensor([0.0, 2.0, 1.0]), torch.tensor([-1.0, 4.0, 3.0], dtype=torch.float64),
                    torch.zeros(3, dtype=torch.float64), torch.full((3,), 4.001, dtype=torch.float64))
    plain = data_loss(lam, summed, frames, 2.0)
    both = data_loss(lam, summed, frames, 2.0, censored=cens)
    dev = cens.deviance(lam.detach())
    expected_extra = float(2 * dev[1] + dev[2])
    assert float(both.detach()) == pytest.approx((float(plain.detach()) + expected_extra) / 4, rel=1e-12)
    both.backward()
    assert lam.grad[1] > 0 and lam.grad[2] > 0  # more predicted light makes a clipped frame less likely
    assert cens.used().tolist() == [0.0, 2.0, 1.0]  # a negative bound: clipping cannot happen, left out
