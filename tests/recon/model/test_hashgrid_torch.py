"""The torch hash grid against hand computations and a reference: values, hash, gradients, determinism."""

import decimal
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch

import recon.model.hashgrid_torch as encoding_module
from recon.errors import ShapeError
from recon.model.hashgrid import HashGridConfig, hashgrid_levels, init_hashgrid_params
from recon.model.hashgrid_torch import TorchHashGrid
from tests.conftest import TOL
from tests.recon.model.hashgrid_reference import TINY

PRIMES = (1, 2654435761, 805459861)


def _f32(value) -> float:
    """Round to float32 (ties to even)."""
    return float(np.float32(float(value)))


def tcnn_scale(level: int, per_level_scale: float, base_resolution: int) -> float:
    """tcnn's host ``exp2f(level * std::log2(s)) * N0 - 1.0f``: every float32 operation correctly
    rounded, the transcendental ones computed to 40 digits with ``decimal`` (no libm, no numpy)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        ln2 = Decimal(2).ln()
        log2_s = _f32(Decimal(_f32(per_level_scale)).ln() / ln2)
        arg = _f32(Decimal(level) * Decimal(log2_s))  # float32 product, rounded once
        power = _f32((Decimal(arg) * ln2).exp())
    return _f32(_f32(Fraction(power) * base_resolution) - 1)


def reference_encode(x, cfg, theta, d=3, fmaf=False):
    """Plain-Python tcnn HashGrid: exact rationals for positions, Python ints for indices.

    ``fmaf``: positions rounded once to float32, as tcnn's ``fmaf(scale, x, 0.5f)`` (the rest
    stays exact).
    """
    feats = cfg.n_features_per_level
    out, entries = [], []
    offset = 0
    for level in range(cfg.n_levels):
        scale = Fraction(tcnn_scale(level, cfg.per_level_scale, cfg.base_resolution))
        res = math.ceil(scale) + 1
        size = min((res**d + 7) // 8 * 8, 2**cfg.log2_hashmap_size)
        p = [Fraction(xi) * scale + Fraction(1, 2) for xi in x]
        if fmaf:
            p = [Fraction(_f32(Fraction(v.numerator, v.denominator))) for v in p]
        g = [math.floor(v) for v in p]
        w = [v - gi for v, gi in zip(p, g, strict=True)]
        acc = [Fraction(0)] * feats
        level_entries = []
        for corner in range(2**d):
            c = [g[k] + ((corner >> k) & 1) for k in range(d)]
            weight = Fraction(1)
            for k in range(d):
                weight *= w[k] if (corner >> k) & 1 else 1 - w[k]
            if res**d <= size:
                entry = sum(c[k] * res**k for k in range(d)) % size
            else:
                h = 0
                for k in range(d):
                    h ^= (c[k] * PRIMES[k]) & 0xFFFFFFFF
                entry = h % size
            level_entries.append(offset + entry)
            for j in range(feats):
                acc[j] += weight * Fraction(theta[(offset + entry) * feats + j])
        out += acc
        entries.append(level_entries)
        offset += size
    return out, entries


def tiny_grid(dtype=torch.float64, d=3):
    enc = TorchHashGrid(TINY, n_input_dims=d, dtype=dtype)
    with torch.no_grad():
        enc.params.copy_(torch.arange(enc.n_params, dtype=dtype))
    return enc


def test_golden_example_hand_computed():
    enc = tiny_grid()
    assert [(lv.resolution, lv.table_size, lv.offset, lv.dense) for lv in enc.levels] == [
        (2, 8, 0, True), (4, 32, 8, False)]
    assert enc.n_params == 80
    # Dyadic positions and integer parameters: every product and sum is exact in float64.
    x = torch.tensor([[3 / 8, 5 / 8, 7 / 8], [1.0, 0.0, 0.5], [1 / 8, 1 / 4, 3 / 4]],
                     dtype=torch.float64)
    out = enc(x)
    # By hand, point 0 = (3/8, 5/8, 7/8):
    #  level 0: p = x + 1/2 = (7/8, 9/8, 11/8), g = (0, 1, 1); corner (0,0,0) -> 0 + 1*2 + 1*4 = 6;
    #   corner (0,1,0) -> 0 + 2*2 + 4 = 8 = 0 mod 8 (wraps). theta is linear, so the
    #   interpolation is theta at the mean entry: features (10, 11).
    #  level 1: p = 3x + 1/2 = (13/8, 19/8, 23/8), g = (1, 2, 3); corner (0,0,0) ->
    #   1 ^ (2*2654435761 mod 2^32 = 1013904226) ^ (3*805459861 = 2416379583) = ...11100b
    #   -> 28 mod 32 -> entry 8 + 28 = 36.
    golden = [
        [10, 11, 3931 / 64, 3995 / 64],
        [9, 10, 55, 56],  # x = 1 reads one vertex past the last (tcnn aliases, no clamp)
        [41 / 4, 45 / 4, 867 / 16, 883 / 16],
    ]
    assert torch.equal(out, torch.tensor(golden, dtype=torch.float64))
    theta = list(range(80))
    for row, point in zip(out.tolist(), x.tolist(), strict=True):
        expected, _ = reference_encode(point, TINY, theta)
        assert row == [float(v) for v in expected]


def test_corner_entries_match_hand_computation():
    enc = tiny_grid()
    plan = enc._plan
    x = torch.tensor([[3 / 8, 5 / 8, 7 / 8]], dtype=torch.float64)
    got = []
    for lv in plan.levels:
        g = torch.floor(x.t() * lv.scale + 0.5).to(torch.int32)
        out = torch.empty(8, 1, dtype=torch.int32)
        encoding_module._corner_entries(g, lv, plan, out)
        got.append(out[:, 0].tolist())
    assert got[0] == [6, 7, 0, 1, 2, 3, 4, 5]
    assert got[1] == [36, 39, 21, 22, 31, 28, 14, 13]
    assert got == reference_encode([Fraction(3, 8), Fraction(5, 8), Fraction(7, 8)], TINY,
                                   list(range(80)))[1]


@pytest.mark.parametrize("complex_units", [True, False])  # False: the CUDA code path
@pytest.mark.parametrize(("d", "n_features"), [(2, 2), (3, 1), (3, 2), (3, 4), (3, 8)])
def test_random_points_match_python_reference(d, n_features, complex_units, monkeypatch):
    monkeypatch.setattr(encoding_module, "_COMPLEX_UNITS_ON_CPU", complex_units)
    cfg = HashGridConfig(n_levels=4, n_features_per_level=n_features, log2_hashmap_size=6,
                         base_resolution=3, per_level_scale=1.7)
    enc = TorchHashGrid(cfg, n_input_dims=d, dtype=torch.float64, seed=3)
    x = torch.rand(40, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[0] = 1.0
    x[1] = 0.0
    theta = enc.params.detach().tolist()
    ref = torch.tensor([[float(v) for v in reference_encode(p, cfg, theta, d)[0]]
                        for p in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(enc(x), ref, rtol=1e-9, atol=1e-15)


def test_hash_wraps_modulo_2_pow_32():
    # One hashed level with 4096 vertices per axis: c1 * 2654435761 overflows 32 bits.
    cfg = HashGridConfig(n_levels=1, n_features_per_level=1, log2_hashmap_size=12,
                         base_resolution=4097, per_level_scale=2.0)
    enc = TorchHashGrid(cfg)
    (lv,) = enc.levels
    assert not lv.dense and lv.table_size == 4096
    gen = torch.Generator().manual_seed(1)
    g = torch.randint(0, 4096, (3, 500), dtype=torch.int32, generator=gen)
    g[:, 0] = 4096  # the top corner
    out = torch.empty(8, 500, dtype=torch.int32)
    encoding_module._corner_entries(g, lv, enc._plan, out)
    for n in range(500):
        for corner in range(8):
            c = [int(g[k, n]) + ((corner >> k) & 1) for k in range(3)]
            h = (c[0] * PRIMES[0]) ^ ((c[1] * PRIMES[1]) & 0xFFFFFFFF) \
                ^ ((c[2] * PRIMES[2]) & 0xFFFFFFFF)
            assert int(out[corner, n]) == (h & 0xFFFFFFFF) % 4096


def test_int32_products_wrap_like_uint32():
    a = torch.tensor([0, 1, 4096, 123457, 2**20], dtype=torch.int32)
    signed = encoding_module.PRIMES_I32[1]
    got = [int(v) & 0xFFFFFFFF for v in a * signed]
    assert got == [(int(v) * PRIMES[1]) & 0xFFFFFFFF for v in a]


def test_init_is_seeded_and_within_range():
    a = TorchHashGrid(TINY, seed=7).params.detach()
    b = TorchHashGrid(TINY, seed=7).params.detach()
    c = TorchHashGrid(TINY, seed=8).params.detach()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1e-4
    assert torch.equal(a, init_hashgrid_params(80, seed=7))


def test_output_shapes_and_errors():
    enc = TorchHashGrid(TINY)
    for n in (0, 1, 5):
        assert enc(torch.rand(n, 3)).shape == (n, 4)
    with pytest.raises(ShapeError):
        enc(torch.rand(5, 2))


def naive_encode(x, enc):
    """Autograd-only twin (gather + weights) used to check the custom backward."""
    plan = enc._plan
    feats = enc.params.view(-1, plan.n_features)
    outs = []
    for lv in plan.levels:
        p = (x.t().double() * lv.scale + 0.5).to(x.dtype)  # fmaf: one rounding
        g = torch.floor(p).detach()
        w = p - g
        entries = torch.empty(8, x.shape[0], dtype=torch.int32)
        encoding_module._corner_entries(g.to(torch.int32), lv, plan, entries)
        weights = encoding_module._corner_weights(w)  # (8, N)
        outs.append((feats[entries.long()] * weights[..., None]).sum(0))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize(("complex_units", "n_features"), [
    (True, 2), (True, 4), (True, 8), (False, 2), (True, 1)])
def test_gradients_match_autograd_reference(complex_units, n_features, monkeypatch):
    monkeypatch.setattr(encoding_module, "_COMPLEX_UNITS_ON_CPU", complex_units)
    cfg = HashGridConfig(n_levels=3, n_features_per_level=n_features, log2_hashmap_size=7,
                         base_resolution=4, per_level_scale=1.9)
    enc = TorchHashGrid(cfg, seed=1)
    with torch.no_grad():
        enc.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(2))
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(3)).requires_grad_()
    upstream = torch.randn(300, 3 * n_features, generator=torch.Generator().manual_seed(4))
    (enc(x) * upstream).sum().backward()
    grad_params, grad_x = enc.params.grad.clone(), x.grad.clone()
    enc.params.grad = None
    x.grad = None
    (naive_encode(x, enc) * upstream).sum().backward()
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(grad_params, enc.params.grad, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-4, atol=1e-4)  # sums of 8·3 products
    assert grad_params.abs().sum() > 0 and grad_x.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_features", [1, 2, 4, 8])
def test_gather_is_bit_exact_and_forward_matches_reference(n_features, dtype):
    # The forward reads whole entries through an integer view of the table (int32 when an
    # entry is 4 bytes, else int64 units): a pure copy, so it equals plain float indexing.
    cfg = HashGridConfig(n_levels=4, n_features_per_level=n_features, log2_hashmap_size=8,
                         base_resolution=4, per_level_scale=1.9)
    enc = TorchHashGrid(cfg, seed=1, dtype=dtype)
    with torch.no_grad():
        enc.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(2))
    x = torch.rand(500, 3, dtype=dtype, generator=torch.Generator().manual_seed(3))
    x[:3] = 1.0  # top faces: the dense levels alias past their last vertex
    plan = enc._plan
    assert any(plan.needs_wrap)
    units = encoding_module._Units(n_features, dtype, torch.device("cpu"))
    table = enc.params.detach().view(-1, n_features)
    for lv in plan.levels:
        g = torch.floor((x.t().double() * lv.scale + 0.5).to(dtype)).to(torch.int32)
        entries = torch.empty(8, len(x), dtype=torch.int32)
        encoding_module._corner_entries(g, lv, plan, entries)
        assert torch.equal(units.gather(enc.params.detach(), entries), table[entries.long()])
    with torch.no_grad():  # the sums over corners may round in another order
        torch.testing.assert_close(enc(x), naive_encode(x, enc), rtol=4 * torch.finfo(dtype).eps,
                                   atol=4 * torch.finfo(dtype).eps)


def test_backward_is_deterministic():
    enc = TorchHashGrid(HashGridConfig(n_levels=4, log2_hashmap_size=10))
    x = torch.rand(1 << 15, 3, generator=torch.Generator().manual_seed(0))
    grads = []
    for _ in range(2):
        enc.params.grad = None
        enc(x).sum().backward()
        grads.append(enc.params.grad.clone())
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("d", [2, 3])
def test_gradcheck_float64(d):
    enc = tiny_grid(d=d)
    with torch.no_grad():
        enc.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(5))
    # Keep away from cell faces, where the encoding is not differentiable.
    x = (torch.rand(6, d, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
         * 0.9 + 0.05)
    x.requires_grad_()
    params = enc.params.detach().clone().requires_grad_()
    fn = encoding_module._HashGridFunction.apply
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, enc._plan), (x, params))


def test_float32_and_float64_agree():
    enc64 = TorchHashGrid(HashGridConfig(n_levels=4, log2_hashmap_size=10), dtype=torch.float64)
    enc32 = TorchHashGrid(HashGridConfig(n_levels=4, log2_hashmap_size=10))
    enc32.load_state_dict(enc64.state_dict())
    x = torch.rand(500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(enc32(x).double(), enc64(x), rtol=1e-4, atol=1e-9)


def test_level_scales_are_tcnn_host_codes_on_every_cpu():
    """2 000 random configurations: every level's scale is the correctly rounded float32 of
    tcnn's host formula (computed here with ``decimal``), so resolutions and table sizes too."""
    rng = np.random.default_rng(7)
    for _ in range(2000):
        cfg = HashGridConfig(n_levels=int(rng.integers(1, 17)), n_features_per_level=2,
                             log2_hashmap_size=int(rng.integers(10, 25)),
                             base_resolution=int(rng.integers(2, 65)),
                             per_level_scale=float(rng.uniform(1.01, 3.0)))
        for lv in hashgrid_levels(cfg, 3):
            expected = tcnn_scale(lv.level, cfg.per_level_scale, cfg.base_resolution)
            assert lv.scale == expected and lv.resolution == math.ceil(expected) + 1, (cfg, lv)


@pytest.mark.parametrize("seed", range(12))
def test_float32_encoding_matches_the_tcnn_reference_on_random_configurations(seed):
    """float32 positions and parameters as tcnn runs them (fmaf positions): ≤ 1e-6 from the
    exact reference on random grids and points, the top faces included."""
    rng = np.random.default_rng(100 + seed)
    d = int(rng.choice([2, 3]))
    cfg = HashGridConfig(n_levels=int(rng.integers(1, 7)),
                         n_features_per_level=int(rng.choice([1, 2, 4])),
                         log2_hashmap_size=int(rng.integers(4, 12)),
                         base_resolution=int(rng.integers(2, 20)),
                         per_level_scale=float(rng.uniform(1.05, 2.6)))
    enc = TorchHashGrid(cfg, n_input_dims=d, dtype=torch.float32, seed=seed)
    with torch.no_grad():
        enc.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))
    x = torch.from_numpy(rng.random((60, d)).astype(np.float32))
    x[0] = 1.0
    x[1, 0] = 0.0
    theta = enc.params.detach().tolist()
    with torch.no_grad():
        got = enc(x).double()
    ref = torch.tensor([[float(v) for v in reference_encode(p, cfg, theta, d, fmaf=True)[0]]
                        for p in x.double().tolist()], dtype=torch.float64)
    assert float((got - ref).abs().max()) <= 1e-6
