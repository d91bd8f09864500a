"""The compiled line integrals of Gaussian-mixture phantoms against torch's, and their fall-backs."""

import math

import numpy as np
import pytest
import torch

from recon.model.render import RayBatch, line_integrals
from recon.simulation.named import fringes, interferometer, sphere
from recon.simulation.phantoms import PrimitivePhantom, ShiftedPhantom
from recon.simulation.primitives import Fringes, Gaussian

STEP = 0.01


def _rays(n=400, seed=0, dtype=torch.float64, far_mm=150.0):
    """Segments through a ±1.2 mm box from origins ``far_mm`` away (as a dome's mirror rays are)."""
    gen = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.6
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1)
    origin = target - far_mm * direction
    half = 1.2 + 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)
    t_near, t_far = far_mm - half, far_mm + half * torch.rand(n, generator=gen, dtype=torch.float64)
    return RayBatch(origin.to(dtype), direction.to(dtype), torch.ones(n, dtype=dtype), t_near.to(dtype),
                    t_far.to(dtype), torch.arange(n), torch.zeros(n, dtype=torch.long))


def _batch(origins, directions, t_near, t_far):
    """Float64 segments of weight 1, each its own pixel."""
    o, d, near, far = (torch.tensor(v, dtype=torch.float64) for v in (origins, directions, t_near, t_far))
    n = len(near)
    return RayBatch(o, d, torch.ones(n, dtype=torch.float64), near, far, torch.arange(n),
                    torch.zeros(n, dtype=torch.long))


def _tilted(second_sigma_mm=0.03, cov_scale=1.0) -> PrimitivePhantom:
    """Two Gaussians, one with a full covariance, under tilted fringes with an origin off zero.

    Culled from the rays' span (±2.3 mm) at the defaults (supports ±8σ), neither at σ 0.5 mm and
    ``cov_scale`` 4.
    """
    cov = np.array([[0.09, 0.02, -0.01], [0.02, 0.06, 0.015], [-0.01, 0.015, 0.04]])
    comps = [(0.7, Gaussian(np.array([0.1, -0.05, 0.0]), cov * cov_scale)),
             (0.3, Gaussian.isotropic((-0.3, 0.2, 0.1), second_sigma_mm))]
    fr = Fringes(np.array([0.3, 0.9, 0.2]), period_mm=0.15, phase_rad=0.4,
                 origin_mm=np.array([0.02, 0.0, -0.1]))
    return PrimitivePhantom("tilted", comps, atoms=1e5, fringes=fr)


def _both(phantom, rays, jitter=True):
    """(torch, compiled) integrals from generators seeded alike, and both generators' next draw."""
    out, nxt = [], []
    for density in (phantom.density, phantom):
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            out.append(line_integrals(density, rays, step_mm=STEP, generator=gen, jitter=jitter))
        nxt.append(torch.rand(4, generator=gen))
    return out, nxt


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-6)])
@pytest.mark.parametrize("make", [lambda: interferometer(1e6), _tilted,
                                  lambda: ShiftedPhantom(interferometer(1e6), (0.05, -0.1, 0.02))])
def test_the_compiled_sums_are_torchs_to_the_last_bits_of_the_dtype(make, dtype, tol):
    phantom = make()
    rays = _rays(dtype=dtype)
    (ref, fast), (next_ref, next_fast) = _both(phantom, rays)
    assert fast.dtype == ref.dtype == dtype
    assert float(ref.abs().max()) > 0
    assert float((fast - ref).abs().max() / ref.abs().max()) < tol
    assert torch.equal(next_ref, next_fast)  # the jitter was drawn once, alike


def _einsum_sums_in_index_order(dtype) -> bool:
    """Whether torch's einsum ``(x − c)ᵀ P (x − c)`` rounds here as the kernel's sums in index order.

    Its matrix product is the BLAS's: on some CPUs (an AVX-512 Xeon, 2026-12-07) it fuses the
    multiply-adds, and a full covariance's quadratic form then differs from the kernel's in the
    last bit (a diagonal one does not: its products with 0 are exact either way).
    """
    d = torch.randn(4096, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    p = torch.tensor([[11.0, -3.0, 2.0], [-3.0, 17.0, -5.0], [2.0, -5.0, 25.0]], dtype=dtype)
    a = [(d[:, 0] * p[0, j] + d[:, 1] * p[1, j]) + d[:, 2] * p[2, j] for j in range(3)]
    in_order = (a[0] * d[:, 0] + a[1] * d[:, 1]) + a[2] * d[:, 2]
    return torch.equal(torch.einsum("...i,ij,...j->...", d, p, d), in_order)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make", [lambda: fringes(1e6, sigma_mm=0.5, phase_rad=0.3),
                                  lambda: fringes(1e6, sigma_mm=0.5, phase_rad=0.3, direction=(0.2, 1.0, 0.3),
                                                  chirp_per_mm2=9.0),
                                  lambda: _tilted(second_sigma_mm=0.5, cov_scale=4.0)],
                         ids=["fringes", "chirped", "tilted"])
def test_clouds_without_culled_clumps_are_torchs_bit_for_bit(make, dtype):
    """Positions, exponents, order of additions and sums round as torch's; exp and sin are torch's own."""
    phantom = make()
    full = any(np.count_nonzero(g.covariance_mm2 - np.diag(np.diag(g.covariance_mm2)))
               for g in phantom.primitives if isinstance(g, Gaussian))
    if full and not _einsum_sums_in_index_order(dtype):
        pytest.skip("torch's BLAS fuses multiply-adds on this CPU, so a full covariance's quadratic form "
                    "is not the kernel's to the last bit (the tolerance test above still applies)")
    (ref, fast), _ = _both(phantom, _rays(n=2000, dtype=dtype))
    assert torch.equal(ref, fast), phantom.name


def test_with_clumps_nearly_every_float32_segment_is_torchs_bit_for_bit():
    """Only a clump's exponential is numba's (torch's differs from it in the last bit for some arguments)."""
    rays = _rays(n=2000, dtype=torch.float32)
    (ref, fast), _ = _both(interferometer(1e6), rays)
    assert float((ref == fast).double().mean()) > 0.97


def test_without_jitter_the_midpoints_are_used_alike():
    (ref, fast), _ = _both(_tilted(), _rays(n=200))
    (ref_mid, fast_mid), _ = _both(_tilted(), _rays(n=200), jitter=False)
    assert torch.allclose(fast_mid, ref_mid, rtol=1e-12, atol=0)
    assert not torch.allclose(fast_mid, fast, rtol=1e-6, atol=0)


def test_a_gaussians_integral_along_a_line_through_its_centre():
    """∫ norm·exp(−t²/2σ²) dt = norm·σ·√(2π) = 1/(2πσ²) for a unit-mass isotropic Gaussian."""
    sigma = 0.1
    phantom = PrimitivePhantom("one", [(1.0, Gaussian.isotropic((0.0, 0.0, 0.0), sigma))], atoms=1.0)
    rays = _batch([[0.0, 0.0, -3.0]], [[0.0, 0.0, 1.0]], [1.8], [4.2])
    with torch.no_grad():
        value = float(line_integrals(phantom, rays, step_mm=0.001, jitter=False)[0])
    assert value == pytest.approx(1 / (2 * math.pi * sigma**2), rel=1e-6)


def test_a_segment_that_only_grazes_a_clumps_support_box_gets_torchs_sum():
    """The cull is conservative: a segment that passes the box's corner by less than a stratum."""
    clump = Gaussian.isotropic((0.0, 0.0, 0.0), 0.02)  # support ±0.16 mm
    phantom = PrimitivePhantom("graze", [(1.0, Gaussian.isotropic((0, 0, 0), 0.5)), (0.5, clump)], atoms=1e3)
    corner = 0.16 - 1e-4
    origin = [[corner, corner, -1.0], [0.16 + 1e-4, corner, -1.0]]
    rays = _batch(origin, [[0.0, 0.0, 1.0]] * 2, [0.0, 0.0], [2.0, 2.0])
    (ref, fast), _ = _both(phantom, rays)
    assert torch.allclose(fast, ref, rtol=1e-13, atol=0)


def test_other_primitives_and_recorded_gradients_take_the_torch_path():
    rays = _rays(n=50)
    ball = sphere(1e5)
    counts = torch.ones(len(rays), dtype=torch.long)
    assert ball.integrate_strata(rays, counts, torch.ones(len(rays), dtype=torch.float64),
                                 torch.rand(len(rays), dtype=torch.float64)) is None
    (ref, fast), _ = _both(ball, rays)
    assert torch.equal(ref, fast)
    origins = rays.origins.clone().requires_grad_(True)
    moved = RayBatch(origins, rays.directions, rays.weights, rays.t_near, rays.t_far, rays.pixel, rays.path)
    gen = torch.Generator().manual_seed(0)
    line_integrals(interferometer(1e6), moved, step_mm=STEP, generator=gen).sum().backward()
    assert origins.grad is not None and float(origins.grad.abs().sum()) > 0
