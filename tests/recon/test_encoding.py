"""Hash-grid encoding: tcnn's exact geometry, hash and layout; gradients; backend registry."""

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

import recon.encoding as encoding_module
from recon.encoding import (
    TCNN_INSTALL_HINT,
    HashGridConfig,
    TorchHashGrid,
    available_backends,
    hashgrid_levels,
    init_hashgrid_params,
    make_encoding,
    tcnn_status,
)
from recon.errors import BackendUnavailableError, ConfigError, ShapeError
from tests.conftest import TOL, requires_tcnn

PRIMES = (1, 2654435761, 805459861)

# Two levels: level 0 dense (scale 1, 2 vertices per axis, 8 entries), level 1 hashed
# (scale 3, 4^3 = 64 vertices > 2^5 = 32 entries).
TINY = HashGridConfig(n_levels=2, n_features_per_level=2, log2_hashmap_size=5,
                      base_resolution=2, per_level_scale=2.0)


def reference_encode(x, cfg, theta, d=3):
    """Plain-Python tcnn HashGrid: exact rationals for positions, Python ints for indices."""
    feats = cfg.n_features_per_level
    out, entries = [], []
    offset = 0
    for level in range(cfg.n_levels):
        # tcnn: exp2f(level * log2f(s)) * N0 - 1.0f, in float32
        f32 = np.float32
        scale = Fraction(float(f32(np.exp2(f32(level) * np.log2(f32(cfg.per_level_scale))))
                               * f32(cfg.base_resolution) - f32(1)))
        res = math.ceil(scale) + 1
        size = min((res**d + 7) // 8 * 8, 2**cfg.log2_hashmap_size)
        p = [Fraction(xi) * scale + Fraction(1, 2) for xi in x]
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
    signed = encoding_module._PRIMES_I32[1]
    got = [int(v) & 0xFFFFFFFF for v in a * signed]
    assert got == [(int(v) * PRIMES[1]) & 0xFFFFFFFF for v in a]


def test_layout_matches_tcnn_formula_for_tcnn_defaults():
    cfg = HashGridConfig.tcnn_defaults()
    levels = hashgrid_levels(cfg)
    # scale_l = 16 * 2^l - 1, res_l = 16 * 2^l; T_l = min(res^3 rounded up to 8, 2^19).
    assert [lv.resolution for lv in levels[:4]] == [16, 32, 64, 128]
    sizes = [4096, 32768, 262144] + [524288] * 13
    assert [lv.table_size for lv in levels] == sizes
    assert [lv.offset for lv in levels] == [sum(sizes[:i]) for i in range(16)]
    assert [lv.dense for lv in levels] == [True] * 3 + [False] * 13
    enc = TorchHashGrid(cfg)
    assert enc.n_params == enc.params.numel() == sum(sizes) * 2 == 14_229_504
    assert enc.n_output_dims == 32


def test_layout_of_project_default():
    cfg = HashGridConfig()
    levels = hashgrid_levels(cfg)
    assert [lv.resolution for lv in levels] == [16, 23, 31, 43, 59, 81, 111, 153]
    sizes = [4096, 12168, 29792, 79512, 205384, 262144, 262144, 262144]
    assert [lv.table_size for lv in levels] == sizes
    assert [lv.offset for lv in levels] == [sum(sizes[:i]) for i in range(8)]
    assert [lv.dense for lv in levels] == [True] * 5 + [False] * 3
    # Far from integers: float32 rounding on host or device cannot change a resolution.
    assert all(lv.scale == round(lv.scale) or abs(lv.scale - round(lv.scale)) > 0.02
               for lv in levels)


def test_config_validation_and_tcnn_dict():
    with pytest.raises(ConfigError, match="n_features_per_level"):
        HashGridConfig(n_features_per_level=3)
    with pytest.raises(ConfigError, match="per_level_scale"):
        HashGridConfig(per_level_scale=0.5)
    cfg = HashGridConfig()
    assert cfg.to_tcnn() == {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2,
                             "log2_hashmap_size": 18, "base_resolution": 16,
                             "per_level_scale": 1.38, "interpolation": "Linear"}
    assert HashGridConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        HashGridConfig.from_dict({"n_level": 4})


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
        p = x.t() * lv.scale + 0.5
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
        g = torch.floor(x.t() * lv.scale + 0.5).to(torch.int32)
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


# ---------------------------------------------------------------------------------- registry


def test_registry_torch_and_auto_on_cpu():
    enc = make_encoding(TINY, backend="torch", seed=2)
    assert isinstance(enc, TorchHashGrid) and enc.backend == "torch"
    assert make_encoding(TINY, backend="auto", device="cpu").backend == "torch"
    assert torch.equal(enc.params, make_encoding(TINY, seed=2).params)
    assert list(enc.state_dict()) == ["params"]
    with pytest.raises(ConfigError, match="backend must be one of"):
        make_encoding(TINY, backend="cuda")


def test_available_backends_report():
    report = available_backends()
    assert set(report) == {"torch", "tcnn"}
    assert report["torch"][0] is True
    ok, reason = tcnn_status()
    assert report["tcnn"] == (ok, reason) and reason


@pytest.mark.skipif(tcnn_status()[0], reason="tinycudann is usable here")
def test_explicit_tcnn_raises_with_reason_and_remedy():
    _, reason = tcnn_status()
    for device in ("cpu", "cuda"):
        with pytest.raises(BackendUnavailableError) as info:
            make_encoding(TINY, backend="tcnn", device=device)
        message = str(info.value)
        assert "--backend torch" in message
    assert reason in message and TCNN_INSTALL_HINT in message
    if not torch.cuda.is_available():
        assert "no CUDA device" in reason


@pytest.mark.parametrize("error", [
    "raise EnvironmentError('Unknown compute capability. Ensure PyTorch with CUDA support "
    "is installed.')",
    "raise ImportError('libcuda.so.1: cannot open shared object file')",
])
def test_tcnn_status_reports_import_failures(error, tmp_path, monkeypatch):
    package = tmp_path / "tinycudann"
    package.mkdir()
    (package / "__init__.py").write_text(error + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tinycudann", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ok, reason = tcnn_status()
    assert not ok
    assert ("Unknown compute capability" in reason) or ("libcuda.so.1" in reason)
    with pytest.raises(BackendUnavailableError, match="tcnn' is unavailable"):
        make_encoding(TINY, backend="tcnn", device="cuda")


# ---------------------------------------------------------------------- twin equivalence (GPU)


@requires_tcnn
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tcnn_matches_torch_forward_and_gradients(dtype):
    from recon.encoding import TcnnHashGrid

    cfg = HashGridConfig()
    twin = TcnnHashGrid(cfg, seed=0, dtype=dtype, device="cuda")
    ref = TorchHashGrid(cfg, seed=0, device="cuda")
    assert torch.equal(twin.params, ref.params)  # same seeded initialisation
    with torch.no_grad():
        ref.params.uniform_(-1, 1)
    twin.load_state_dict(ref.state_dict())  # the same flat layout under the same name
    x = torch.rand(1 << 14, 3, device="cuda")
    upstream = torch.randn(1 << 14, cfg.n_output_dims, device="cuda")
    out_twin, out_ref = twin(x), ref(x)
    (out_twin * upstream).sum().backward()
    (out_ref * upstream).sum().backward()
    if dtype == torch.float32:
        rtol, atol = 1e-4, 1e-5
    else:  # fp16 parameters and products in tcnn
        rtol, atol = 1e-2, 2e-3
    torch.testing.assert_close(out_twin, out_ref, rtol=rtol, atol=atol)
    scale = ref.params.grad.abs().max()
    torch.testing.assert_close(twin.params.grad / scale, ref.params.grad / scale,
                               rtol=rtol, atol=atol * 10)


def test_importing_fields_does_not_load_tinycudann():
    code = ("import sys, recon.fields, recon.encoding; "
            "assert 'tinycudann' not in sys.modules, 'tinycudann imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True)
