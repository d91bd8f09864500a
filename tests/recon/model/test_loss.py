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
