"""Each pixel's samples of its area and the lens aperture: random and padded Sobol' nets."""

import math

import pytest
import torch

from optics.sampling import sample_pixel_samples, sobol_points


def test_random_samples_are_drawn_as_they_always_were():
    """The default scheme's draws, in their order: sub-pixel offsets, stratified U, then V."""
    sub, ap = sample_pixel_samples(5, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    offsets = torch.rand(5, 4, 2, generator=gen, dtype=torch.float64) - 0.5
    u = (torch.arange(4, dtype=torch.float64) + torch.rand(5, 4, generator=gen, dtype=torch.float64)) / 4
    theta = 2.0 * math.pi * torch.rand(5, 4, generator=gen, dtype=torch.float64)
    assert torch.equal(sub, offsets)
    assert torch.equal(ap, torch.stack([u.sqrt() * theta.cos(), u.sqrt() * theta.sin()], -1))


def _cells(x: torch.Tensor, y: torch.Tensor, nx: int, ny: int) -> list[int]:
    return sorted(((x * nx).long() * ny + (y * ny).long()).tolist())


def test_sobol_samples_stratify_the_pixel_and_the_aperture():
    """S = 8: in every pixel, each sub-pixel box of area 1/8 (8×1, 4×2, 2×4, 1×8) holds one sample,
    and so does each such box of (U, V); the two sets are paired differently in different pixels."""
    unit = sobol_points(50, 8, generator=torch.Generator().manual_seed(0))
    assert unit.shape == (50, 8, 4) and unit.dtype == torch.float32
    assert 0 < unit.min() and unit.max() < 1
    for pixel in unit:
        x, y, u, v = pixel.unbind(-1)
        for nx in (1, 2, 4, 8):
            assert _cells(x, y, nx, 8 // nx) == list(range(8))
            assert _cells(u, v, nx, 8 // nx) == list(range(8))
    rank = lambda t: torch.argsort(torch.argsort(t, dim=1), dim=1)  # noqa: E731
    pairings = {tuple(rank(unit[:, :, 2])[i][torch.argsort(unit[i, :, 0])].tolist()) for i in range(50)}
    assert len(pairings) > 40
    sub, ap = sample_pixel_samples(50, 8, generator=torch.Generator().manual_seed(0), scheme="sobol")
    assert torch.equal(sub, unit[..., :2] - 0.5)
    assert ap.norm(dim=-1).max() <= 1.0
    centred, _ = sample_pixel_samples(3, 8, generator=torch.Generator().manual_seed(0), scheme="sobol",
                                      jitter=False)
    assert not centred.any()


def test_sobol_samples_are_uniform_reproducible_and_differ_between_pixels():
    n = 20000
    unit = sobol_points(n, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = unit.reshape(-1, 4)
    assert (flat.mean(0) - 0.5).abs().max() < 5 * (1 / 12) ** 0.5 / n**0.5  # each sample is uniform
    assert (flat.var(0) - 1 / 12).abs().max() < 2e-3
    again = sobol_points(n, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(unit, again)
    assert len(torch.unique(unit[:, 0, 0])) > 0.99 * n  # each pixel its own shift
    with pytest.raises(ValueError, match="scheme must be one of"):
        sample_pixel_samples(2, 2, scheme="halton")
    with pytest.raises(ValueError, match="n_samples must be in"):
        sobol_points(1, 0)


@pytest.mark.parametrize("defocus, at_most", [(0.0, 0.3), (0.3, 0.9), (1.0, 1.2), (3.0, 1.2)])
def test_sobol_samples_estimate_a_pixels_integral_with_less_error_than_random_ones(defocus, at_most):
    """A spot on the pixel that moves with the aperture point by ``defocus`` pixels: the variance of
    its 8-sample means over pixels, against the random scheme's — far smaller in focus, at most
    LHS's 8/7 × (plus the draw's noise) where the aperture dominates."""
    def means(scheme):
        sub, ap = sample_pixel_samples(4000, 8, generator=torch.Generator().manual_seed(2),
                                       dtype=torch.float64, scheme=scheme)
        spot = sub + defocus * ap - torch.tensor([0.1, -0.05], dtype=torch.float64)
        return torch.exp(-(spot**2).sum(-1) / 0.08).mean(-1)

    random, sobol = means("random"), means("sobol")
    assert abs(float(random.mean() - sobol.mean())) < 4 * float(random.std()) / 4000**0.5  # one integral
    assert float(sobol.var()) < at_most * float(random.var())
