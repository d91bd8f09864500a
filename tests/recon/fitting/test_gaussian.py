"""The data's 3D Gaussian (recon.fitting.gaussian): exact line integrals, the fit, its shot-noise limit."""

import dataclasses
import math

import pytest
import torch

from recon.fitting.gaussian import SD_RANGE, Gaussian, _gaussian_line_integrals, _gaussian_of, fit_gaussian
from recon.fitting.raypool import RayPool
from recon.io.volume import grid_points
from recon.model.render import RayBatch, render_pixels
from tests.conftest import slow
from tests.micro import make_micro_pool_case


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return make_micro_pool_case(tmp_path_factory.mktemp("gaussian"))


def _rotated_gaussian(atoms=2e5):
    """A Gaussian off the centre of the box, tilted (all six covariance entries non-zero), mm."""
    a = torch.tensor([[0.20, 0.0, 0.0], [0.05, 0.12, 0.0], [-0.04, 0.03, 0.09]], dtype=torch.float64)
    return Gaussian(torch.tensor([0.08, -0.05, 0.11], dtype=torch.float64), a @ a.T, atoms)


def _three_axis_pool(gaussian, n=24, half=0.6):
    """Parallel rays along x, y and z across the box [-half, half]³, n × n per view, one segment each,
    holding the Gaussian's noiseless light (weight 0.01 e⁻ per unit line integral)."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * half - half
    a, b = torch.meshgrid(u, u, indexing="ij")
    a, b = a.flatten(), b.flatten()
    origins, directions = [], []
    for axis in range(3):
        o = torch.zeros(n * n, 3, dtype=torch.float64)
        others = [i for i in range(3) if i != axis]
        o[:, others[0]], o[:, others[1]], o[:, axis] = a, b, -half
        d = torch.zeros(n * n, 3, dtype=torch.float64)
        d[:, axis] = 1.0
        origins.append(o)
        directions.append(d)
    count = 3 * n * n
    f64 = {"dtype": torch.float64}
    rays = RayBatch(torch.cat(origins), torch.cat(directions), torch.full((count,), 0.01, **f64),
                    torch.zeros(count, **f64), torch.full((count,), 2 * half, **f64),
                    torch.arange(count), torch.zeros(count, dtype=torch.long))
    with torch.no_grad():
        light = render_pixels(gaussian, rays, count, photons_per_atom=4 * math.pi, step_mm=0.002,
                              jitter=False)
    views = torch.arange(count) // (n * n)
    return RayPool(rays, torch.arange(count + 1), light, torch.ones(count), views, 0.0, 1)


def test_the_gaussian_s_line_integrals_are_exact(micro):
    """Against fine midpoint quadrature of the Gaussian along the micro run's pooled segments."""
    g = _rotated_gaussian()
    rays = micro["pool"].rays
    per_segment = dataclasses.replace(rays, origins=rays.origins.double(),
                                      directions=rays.directions.double(), t_near=rays.t_near.double(),
                                      t_far=rays.t_far.double(),
                                      weights=torch.ones(len(rays), dtype=torch.float64),
                                      pixel=torch.arange(len(rays)))
    exact = _gaussian_line_integrals(g.mean_mm, torch.linalg.cholesky(g.cov_mm2), g.atoms,
                                     per_segment.origins, per_segment.directions, per_segment.t_near,
                                     per_segment.t_far)
    numeric = render_pixels(g, per_segment, len(rays), photons_per_atom=4 * math.pi, step_mm=0.001,
                            jitter=False)
    assert float(exact.max()) > 1e5  # the segments cross the cloud
    assert torch.allclose(exact, numeric, rtol=1e-5, atol=1e-6 * float(exact.max()))


def test_fit_gaussian_recovers_a_tilted_gaussian_from_three_projections():
    truth = _rotated_gaussian()
    pool = _three_axis_pool(truth)
    fitted = fit_gaussian(pool, torch.arange(pool.n_pixels), [-0.6] * 3, [0.6] * 3, atoms=1e5,
                          photons_per_atom=4 * math.pi, iterations=200)
    assert fitted.mean_mm.tolist() == pytest.approx(truth.mean_mm.tolist(), abs=1e-4)  # 0.1 µm
    assert torch.allclose(fitted.cov_mm2, truth.cov_mm2, atol=1e-4 * float(truth.cov_mm2.max()))
    # the box cuts the Gaussian's tails, the line integrals too: the fit sees the whole cloud's total
    assert fitted.atoms == pytest.approx(truth.atoms, rel=1e-4)


def test_fit_gaussian_with_a_pixel_draw_is_unbiased_within_its_noise():
    """A quarter of the pixels, drawn by signal and weighted back, still finds the cloud (to ~1 %)."""
    truth = _rotated_gaussian()
    pool = _three_axis_pool(truth)
    fitted = fit_gaussian(pool, torch.arange(pool.n_pixels), [-0.6] * 3, [0.6] * 3, atoms=1e5,
                          photons_per_atom=4 * math.pi, max_pixels=pool.n_pixels // 4, iterations=200)
    assert fitted.atoms == pytest.approx(truth.atoms, rel=0.01)
    assert torch.diagonal(fitted.cov_mm2).sqrt().tolist() == pytest.approx(
        torch.diagonal(truth.cov_mm2).sqrt().tolist(), rel=0.01)


def test_a_gaussian_on_a_grid_is_the_gaussian_at_the_grid_s_points():
    g = _rotated_gaussian()
    shape, origin, size = (7, 9, 11), (-0.5, -0.45, -0.4), (0.09, 0.1, 0.12)
    points = grid_points(shape, origin, size, dtype=torch.float64)
    expected = g(points)
    assert float(expected.max()) > 1e3 * float(expected.min())  # the grid spans the cloud's fall-off
    assert torch.allclose(g.on_grid(shape, origin, size), expected, rtol=1e-12, atol=0)


@slow
def test_the_shot_noise_limit_is_the_spread_of_the_gaussian_fit_over_noise_draws():
    """Poisson draws of a Gaussian's projections, fitted again each time: the fits scatter as the
    Cramér–Rao standard deviations say (the MLE is efficient at these counts)."""
    truth = _rotated_gaussian()
    clean = _three_axis_pool(truth)
    scale = 2000.0 / float(clean.summed_electrons.max())  # ≈ 2000 e⁻ in the brightest pixel
    clean = dataclasses.replace(clean, summed_electrons=clean.summed_electrons * scale)
    fits = []
    for seed in range(16):
        noisy = torch.poisson(clean.summed_electrons, generator=torch.Generator().manual_seed(seed))
        drawn = dataclasses.replace(clean, summed_electrons=noisy)
        fitted = fit_gaussian(drawn, torch.arange(clean.n_pixels), [-0.6] * 3, [0.6] * 3, atoms=1e5 * scale,
                              photons_per_atom=4 * math.pi, iterations=200, max_pixels=10**8, fisher=True)
        fits.append([fitted.atoms, *fitted.mean_mm.tolist(), *torch.diagonal(fitted.cov_mm2).sqrt().tolist()])
    spread = torch.tensor(fits, dtype=torch.float64).std(dim=0)
    bound = torch.tensor(fitted.shot_noise_sd, dtype=torch.float64)
    ratio = spread / bound
    # 16 draws: a standard deviation is known to ±18 % (1 σ); a wrong information (a factor of
    # frames, of 4π, of the weights) would be off by far more
    assert bool(((ratio > 0.55) & (ratio < 1.6)).all()), ratio.tolist()
    # the total of a cloud that every view sees whole: 1/√(its expected photoelectrons), relative
    relative = float(bound[0]) / fitted.atoms
    assert relative == pytest.approx(1 / math.sqrt(float(clean.summed_electrons.sum())), rel=0.05)


def test_the_start_gaussians_widths_stay_within_their_range_whatever_the_line_search_tries():
    """log σ of −1000 (exp gives 0: a singular factor) and +1000 (inf) are held at SD_RANGE × the
    box's half-size, so the line integrals stay finite; within the range nothing changes."""
    centre = torch.zeros(3, dtype=torch.float64)
    half = torch.tensor([1.2, 1.2, 2.4], dtype=torch.float64)
    zeros = torch.zeros(3, dtype=torch.float64)
    log_sd = torch.tensor([-1000.0, math.log(0.3), 1000.0], dtype=torch.float64)
    log_atoms = torch.zeros((), dtype=torch.float64)
    mean, chol, atoms = _gaussian_of(centre, half, 1e5, zeros, log_sd, zeros, log_atoms)
    assert torch.allclose(torch.diagonal(chol), torch.tensor([SD_RANGE[0] * 1.2, 0.3, SD_RANGE[1] * 2.4],
                                                             dtype=torch.float64))
    origins = torch.tensor([[0.0, 0.0, -5.0], [0.01, 0.0, -5.0]], dtype=torch.float64)
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    near, far = torch.zeros(2, dtype=torch.float64), torch.full((2,), 10.0, dtype=torch.float64)
    integrals = _gaussian_line_integrals(mean, chol, atoms, origins, directions, near, far)
    assert torch.isfinite(integrals).all()
