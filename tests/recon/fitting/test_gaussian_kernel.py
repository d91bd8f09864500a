"""The compiled Gaussian line integrals against the torch specification, and the fit that uses them."""

import math

import pytest
import torch

from recon.fitting.gaussian import _gaussian_line_integrals, fit_gaussian
from recon.fitting.gaussian_kernel import P6_INDEX, GaussianPixelSums, SegmentGeometry, gaussian_pixel_sums
from recon.fitting.loop import _device_pool
from tests.conftest import requires_cuda
from tests.recon.fitting.test_gaussian import _rotated_gaussian, _three_axis_pool


def _segments(seed=0, count=3000, pixels=400):
    """Random segments through a 2 mm box whose origins lie 300 mm away (as the mirrors' do)."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(count, 3, dtype=torch.float64, generator=gen)
    d = d / d.norm(dim=1, keepdim=True)
    o = 0.3 * torch.randn(count, 3, dtype=torch.float64, generator=gen) - 300 * d
    t_near = 299.0 + 0.2 * torch.rand(count, dtype=torch.float64, generator=gen)
    t_far = t_near + 1.6 * torch.rand(count, dtype=torch.float64, generator=gen)
    emission = torch.rand(count, dtype=torch.float64, generator=gen)
    pixel = torch.randint(0, pixels, (count,), generator=gen).sort().values
    return o, d, t_near, t_far, emission, pixel, pixels


def _spec(chol, mean, o, d, t_near, t_far, emission, pixel, pixels):
    """Σ_r e_r J_r by the torch closed form (its normalisation taken off)."""
    unit = _gaussian_line_integrals(mean, chol, 1.0, o, d, t_near, t_far)
    norm = (2 * math.pi) ** 1.5 * torch.diagonal(chol).prod()
    return torch.zeros(pixels, dtype=torch.float64).index_add(0, pixel, emission * unit) * norm


CHOL = torch.tensor([[0.3, 0, 0], [0.05, 0.25, 0], [-0.04, 0.03, 0.2]], dtype=torch.float64)
MEAN = torch.tensor([0.05, -0.02, 0.01], dtype=torch.float64)


def _p6(chol):
    inv = torch.linalg.inv(chol)
    return (inv.T @ inv)[P6_INDEX]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_kernel_s_sums_are_the_torch_closed_form(seed):
    segs = _segments(seed)
    geometry = SegmentGeometry(*segs)
    sums, _ = gaussian_pixel_sums(_p6(CHOL).numpy(), MEAN.numpy(), geometry)
    spec = _spec(CHOL, MEAN, *segs)
    assert float(spec.max()) > 0.1  # segments cross the cloud
    assert torch.allclose(torch.from_numpy(sums), spec, rtol=1e-9, atol=1e-12 * float(spec.max()))


def test_the_kernel_s_derivatives_are_the_jacobian_of_the_closed_form():
    """Every pixel's nine derivatives (P's six entries, the centre) against autograd of the spec."""
    segs = _segments(2, count=600, pixels=50)
    geometry = SegmentGeometry(*segs)
    _, jac = gaussian_pixel_sums(_p6(CHOL).numpy(), MEAN.numpy(), geometry)

    def of_p6_and_mean(p6, mean):  # the spec as a function of P's entries: P → Σ = P⁻¹ → its factor
        rows, cols = (torch.tensor(i) for i in P6_INDEX)
        precision = torch.zeros(3, 3, dtype=torch.float64).index_put((rows, cols), p6)
        precision = precision + torch.triu(precision, 1).T
        return _spec(torch.linalg.cholesky(torch.linalg.inv(precision)), mean, *segs)

    dp6, dmean = torch.autograd.functional.jacobian(of_p6_and_mean, (_p6(CHOL), MEAN))
    # the spec reads P's upper entries (0,1), (0,2), (1,2) once; the kernel's derivative is with
    # respect to the symmetric entry, which appears twice: the same number
    expected = torch.cat([dp6, dmean], dim=1)
    scale = float(expected.abs().max())
    assert scale > 0
    assert torch.allclose(torch.from_numpy(jac), expected, rtol=1e-7, atol=1e-9 * scale)


def test_the_autograd_function_s_gradient_is_the_spec_s():
    segs = _segments(3)
    geometry = SegmentGeometry(*segs)
    upstream = torch.randn(segs[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    chol, mean = CHOL.clone().requires_grad_(), MEAN.clone().requires_grad_()
    expected = torch.autograd.grad((_spec(chol, mean, *segs) * upstream).sum(), (chol, mean))
    chol, mean = CHOL.clone().requires_grad_(), MEAN.clone().requires_grad_()
    got = torch.autograd.grad((GaussianPixelSums.apply(_p6(chol), mean, geometry)[0] * upstream).sum(),
                              (chol, mean))
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-7, atol=1e-9 * float(e.abs().max()))


def test_a_pixel_without_segments_sums_to_zero_and_unsorted_segments_are_refused():
    o, d, t_near, t_far, emission, pixel, _ = _segments(5, count=10, pixels=3)
    geometry = SegmentGeometry(o, d, t_near, t_far, emission, torch.zeros(10, dtype=torch.long), 3)
    sums, jac = gaussian_pixel_sums(_p6(CHOL).numpy(), MEAN.numpy(), geometry)
    assert sums[1] == 0 and sums[2] == 0 and (jac[1:] == 0).all() and sums[0] > 0
    with pytest.raises(ValueError, match="sorted by pixel"):
        SegmentGeometry(o, d, t_near, t_far, emission, torch.arange(10).flip(0), 10)


def test_fit_gaussian_is_the_same_with_the_kernel_and_with_torch():
    """The compiled fit finds the torch fit's Gaussian and its shot-noise limit (the same optimum)."""
    truth = _rotated_gaussian()
    pool = _three_axis_pool(truth)
    fits = [fit_gaussian(pool, torch.arange(pool.n_pixels), [-0.6] * 3, [0.6] * 3, atoms=1e5,
                         photons_per_atom=4 * math.pi, iterations=60, fisher=True, backend=backend)
            for backend in ("numba", "torch")]
    compiled, spec = fits
    assert torch.allclose(compiled.mean_mm, spec.mean_mm, rtol=0, atol=1e-9)
    assert torch.allclose(compiled.cov_mm2, spec.cov_mm2, rtol=1e-7)
    assert compiled.atoms == pytest.approx(spec.atoms, rel=1e-9)
    assert compiled.shot_noise_sd == pytest.approx(spec.shot_noise_sd, rel=1e-6)
    with pytest.raises(ValueError, match="backend"):
        fit_gaussian(pool, torch.arange(pool.n_pixels), [-0.6] * 3, [0.6] * 3, atoms=1e5,
                     photons_per_atom=4 * math.pi, backend="cuda")


@requires_cuda
def test_the_numba_backend_refuses_a_pool_on_the_gpu():
    pool = _device_pool(_three_axis_pool(_rotated_gaussian()), torch.device("cuda"))
    with pytest.raises(ValueError, match="numba backend runs on the CPU"):
        fit_gaussian(pool, torch.arange(pool.n_pixels, device="cuda"), [-0.6] * 3, [0.6] * 3, atoms=1e5,
                     photons_per_atom=4 * math.pi, backend="numba")
