import math

import torch

from optics.camera import Sensor
from recon.noise import adu_to_electrons, binomial_split, simulate_adu

SENSOR = Sensor(64, 64, 3.76, 0.77, gain_e_per_adu=0.5, read_noise_e=2.0, offset_adu=100.0, bit_depth=12)


def test_adu_mean_and_variance_match_theory():
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([0.0, 3.0, 40.0, 400.0], dtype=torch.float64)
    shots = simulate_adu(lam.expand(20000, 4), SENSOR, generator=g).double()
    n = shots.shape[0]
    mean_theory = lam / SENSOR.gain_e_per_adu + SENSOR.offset_adu
    # variance in ADU²: (λ + σ²)/gain² plus the rounding variance 1/12
    var_theory = (lam + SENSOR.read_noise_e**2) / SENSOR.gain_e_per_adu**2 + 1 / 12
    mean, var = shots.mean(0), shots.var(0)
    assert ((mean - mean_theory).abs() < 5 * torch.sqrt(var_theory / n)).all()
    assert ((var - var_theory).abs() < 5 * var_theory * math.sqrt(2 / (n - 1))).all()


def test_saturation_and_dtype():
    out = simulate_adu(torch.tensor([1e6, 0.0]), SENSOR, generator=torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint16 and out[0] == 2**12 - 1
    e, sat = adu_to_electrons(out, SENSOR)
    assert sat.tolist() == [True, False]


def test_noise_none_gives_expected_adu_float32():
    out = simulate_adu(torch.tensor([10.0]), SENSOR, noise="none")
    assert out.dtype == torch.float32 and out.item() == 10.0 / 0.5 + 100.0
    e, _ = adu_to_electrons(out, SENSOR)
    assert abs(e.item() - 10.0) < 1e-5


def test_binomial_halves_are_independent_poisson_halves():
    g = torch.Generator().manual_seed(2)
    counts = torch.poisson(torch.full((200000,), 30.0), generator=g)
    a, b = binomial_split(counts, g)
    assert torch.equal(a + b, counts)
    assert abs(a.mean().item() - 15.0) < 0.1 and abs(b.mean().item() - 15.0) < 0.1
    assert abs(a.var().item() - 15.0) < 0.3  # Poisson: variance = mean
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(corr.item()) < 0.01
