import math
from types import SimpleNamespace

import pytest
import torch

from recon.errors import ConfigError, DataError
from recon.io.sensor import SensorSpec, adu_to_electrons, as_sensor_spec, binomial_split, simulate_adu

SENSOR = SensorSpec(gain_e_per_adu=0.5, offset_adu=100.0, bit_depth=12, read_noise_e=2.0)


def _moments_agree(shots: torch.Tensor, mean_theory: torch.Tensor, var_theory: torch.Tensor, k: float = 5.0):
    """Sample mean and variance per column within k standard errors of the theory."""
    x = shots.double()
    n = x.shape[0]
    mean, var = x.mean(0), x.var(0)
    m4 = ((x - mean) ** 4).mean(0)
    se_mean = torch.sqrt(var_theory / n)
    se_var = torch.sqrt((m4 - var**2).clamp_min(1e-12) / n)
    assert ((mean - mean_theory).abs() < k * se_mean).all(), (mean, mean_theory)
    assert ((var - var_theory).abs() < k * se_var).all(), (var, var_theory)


@pytest.mark.parametrize("dark_e", [0.0, 1.5])
def test_adu_mean_and_variance_match_theory(dark_e):
    sensor = SensorSpec(0.5, 100.0, 12, 2.0, dark_current_e=dark_e)
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([0.0, 3.0, 40.0, 400.0], dtype=torch.float64)
    shots = simulate_adu(lam.expand(40000, 4), sensor, generator=g)
    mean_theory = (lam + dark_e) / sensor.gain_e_per_adu + sensor.offset_adu
    # Poisson + read variance in ADU², plus the rounding variance 1/12 (σ_read/gain = 4 ADU ≫ 1).
    var_theory = (lam + dark_e + sensor.read_noise_e**2) / sensor.gain_e_per_adu**2 + 1 / 12
    _moments_agree(shots, mean_theory, var_theory)


def test_saturation_clipping_and_dtype():
    g = torch.Generator().manual_seed(1)
    out = simulate_adu(torch.tensor([1e6, 0.0, 5.0]), SENSOR, generator=g)
    assert out.dtype == torch.uint16 and int(out[0]) == 2**12 - 1
    e, sat = adu_to_electrons(out, SENSOR)
    assert sat.tolist() == [True, False, False] and e.dtype == torch.float32
    # no offset and pure read noise: negative values clip at 0
    low = simulate_adu(torch.zeros(10000), SensorSpec(1.0, 0.0, 12, 5.0), generator=g)
    low = low.to(torch.int32)  # torch implements few operations on uint16
    assert int(low.min()) == 0 and (low == 0).float().mean() > 0.4
    eight = simulate_adu(torch.tensor([1e6, 0.0, 100.0]), SensorSpec(1.0, 2.0, 8, 2.5), generator=g)
    assert eight.dtype == torch.uint8 and int(eight[0]) == 255  # 8-bit cameras write bytes
    deep = simulate_adu(torch.full((4,), 1e7), SensorSpec(1.0, 0.0, 20, 1.0), generator=g)
    assert deep.dtype == torch.int64 and int(deep.max()) == 2**20 - 1


def test_simulation_is_reproducible_with_a_seed():
    lam = torch.rand(50, 50, generator=torch.Generator().manual_seed(3)) * 30
    a = simulate_adu(lam, SENSOR, generator=torch.Generator().manual_seed(7))
    b = simulate_adu(lam, SENSOR, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_noise_none_gives_expected_adu_float32_unclipped():
    out = simulate_adu(torch.tensor([10.0, 1e4]), SENSOR, noise="none")
    assert out.dtype == torch.float32
    assert out.tolist() == [10.0 / 0.5 + 100.0, 1e4 / 0.5 + 100.0]  # not rounded, not clipped at 4095
    e, sat = adu_to_electrons(out, SENSOR)
    assert torch.allclose(e, torch.tensor([10.0, 1e4])) and sat.tolist() == [False, True]


def test_adu_to_electrons_with_dark_frame_and_dark_current():
    adu = torch.tensor([[110, 130], [100, 4095]], dtype=torch.int32)
    dark = torch.tensor([[100.0, 102.0], [98.5, 100.0]])
    e, sat = adu_to_electrons(adu, SENSOR, dark)
    assert e.tolist() == [[5.0, 14.0], [0.75, 1997.5]] and sat.tolist() == [[False, False], [False, True]]
    e2, _ = adu_to_electrons(adu, SensorSpec(0.5, 100.0, 12, 2.0, dark_current_e=1.0))
    assert e2[0].tolist() == [4.0, 14.0]


def test_binomial_halves_are_independent_poisson_halves():
    g = torch.Generator().manual_seed(2)
    n = 200000
    counts = torch.poisson(torch.full((n,), 30.0), generator=g)
    a, b = binomial_split(counts, g)
    assert torch.equal(a + b, counts) and a.dtype == torch.float32
    for half in (a, b):
        assert abs(half.mean().item() - 15.0) < 5 * math.sqrt(15.0 / n)
        assert abs(half.var().item() - 15.0) < 5 * 15.0 * math.sqrt(2 / n)  # Poisson: variance = mean
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert abs(corr.item()) < 5 / math.sqrt(n)


def test_binomial_split_rounds_and_keeps_the_sign_of_measured_electrons():
    counts = torch.tensor([-3.2, 0.4, 2.6, 10.0, -1.0])
    a, b = binomial_split(counts, torch.Generator().manual_seed(0))
    assert (a + b).tolist() == [-3.0, 0.0, 3.0, 10.0, -1.0]
    assert (torch.sign(a) * torch.sign(counts.round()) >= 0).all()  # a negative count thins by magnitude
    with pytest.raises(DataError, match="NaN"):
        binomial_split(torch.tensor([1.0, math.nan]))
    with pytest.raises(DataError, match="read_noise_e"):
        binomial_split(torch.tensor([1.0]), read_noise_e=-1.0)


def test_binomial_split_of_read_noisy_counts_decorrelates_the_halves():
    g = torch.Generator().manual_seed(3)
    n, lam, sigma = 200000, 40.0, 3.0
    counts = torch.poisson(torch.full((n,), lam), generator=g) + sigma * torch.randn(n, generator=g)
    # Plain thinning shares the read noise: Cov(a, b) = σ²/4.
    a0, b0 = binomial_split(counts, g)
    cov0 = ((a0 - a0.mean()) * (b0 - b0.mean())).mean().item()
    assert abs(cov0 - sigma**2 / 4) < 0.3
    a, b = binomial_split(counts, g, read_noise_e=sigma)
    assert torch.allclose(a + b, counts.round(), atol=1e-4)
    cov = ((a - a.mean()) * (b - b.mean())).mean().item()
    var_half = lam / 2 + sigma**2 / 2 + 1 / 24  # + rounding
    assert abs(cov) < 5 * var_half / math.sqrt(n)
    for half in (a, b):
        assert abs(half.mean().item() - lam / 2) < 5 * math.sqrt(var_half / n)
        assert abs(half.var().item() - var_half) < 5 * var_half * math.sqrt(2 / n)


def test_sensor_spec_conversion_and_validation():
    optics_like = SimpleNamespace(width_px=9600, height_px=6422, pixel_pitch_um=3.76, quantum_efficiency=0.77,
                                  gain_e_per_adu=1, read_noise_e=2, offset_adu=100, bit_depth=16)
    spec = as_sensor_spec(optics_like)
    assert spec == SensorSpec(1.0, 100.0, 16, 2.0, 0.0, 9600, 6422) and spec.saturation_adu == 65535
    assert as_sensor_spec(spec) is spec
    with pytest.raises(ConfigError, match="has no 'gain_e_per_adu'"):
        as_sensor_spec(SimpleNamespace(offset_adu=0, bit_depth=12))
    for bad in ({"gain_e_per_adu": 0.0}, {"bit_depth": 40}, {"read_noise_e": -1.0}, {"offset_adu": math.nan}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SensorSpec(**bad)


def test_simulate_adu_rejects_bad_input():
    with pytest.raises(ConfigError, match="noise must be one of"):
        simulate_adu(torch.zeros(2), SENSOR, noise="gaussian")
    with pytest.raises(DataError, match="negative or non-finite"):
        simulate_adu(torch.tensor([1.0, -1.0]), SENSOR)
    with pytest.raises(DataError, match="negative or non-finite"):
        simulate_adu(torch.tensor([math.inf]), SENSOR, noise="none")


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
def test_batch_shapes(shape):
    lam = torch.full(shape, 5.0)
    for noise in ("poisson", "none"):
        g = torch.Generator().manual_seed(0)
        assert simulate_adu(lam, SENSOR, noise=noise, generator=g).shape == shape
    e, sat = adu_to_electrons(torch.full(shape, 120), SENSOR)
    assert e.shape == sat.shape == shape
    a, b = binomial_split(torch.full(shape, 4.0))
    assert a.shape == b.shape == shape
