"""The ray pool: the CSR gather returns exactly the segments of each pixel sample."""

import pytest
import torch

from optics.design import view_regions
from recon.fitting.data import FitData, ViewData
from recon.fitting.poolcache import array_digest
from recon.fitting.raypool import BOOST_SEED_OFFSET, boost_factors, boost_pool, build_ray_pool
from recon.model.render import render_pixels
from tests.optics.helpers import make_system


def _tiny_data(n_frames=1):
    s = make_system(dtype=torch.float32)
    regs = view_regions(s)
    x0, y0, w, h = regs[0].roi
    roi = (x0 + w // 2 - 10, y0 + h // 2 - 8, 20, 16)
    counts = torch.rand(n_frames, 16, 20)
    mask = torch.ones(n_frames, 16, 20, dtype=torch.bool)
    mask[0, 0, 0] = False
    return FitData(s, (ViewData("direct", 0, roi, counts, mask),), 100.0)


def test_pool_csr_gathers_exactly_the_segments_of_each_pixel_sample():
    data = _tiny_data(n_frames=2)
    pool = build_ray_pool(data, samples=3, seed=0)
    assert pool.n_pixels == 320 and pool.offsets[-1] == len(pool.rays)
    pixels = torch.tensor([5, 5, 200, 0])
    batch = pool.gather(pixels)
    for local, p in enumerate(pixels.tolist()):
        mine = batch.pixel == local
        expected = (pool.rays.pixel // 3) == p
        assert mine.sum() == expected.sum() > 0
    # one sample per pixel: weights scaled by the pool size, so the mean over samples is the same
    density = lambda pts: torch.exp(-(pts**2).sum(-1) / 0.5)  # noqa: E731
    full = render_pixels(density, pool.gather(pixels), 4, jitter=False)
    singles = torch.stack(
        [render_pixels(density, pool.gather(pixels, torch.full((4,), k)), 4, jitter=False) for k in range(3)]
    )
    assert torch.allclose(singles.mean(0), full, rtol=1e-5)
    # masked pixel 0 of frame 0 is excluded from the sum
    assert pool.n_frames[0] == 1 and pool.n_frames[1] == 2


def test_m_rays_per_sample_are_the_rays_of_a_pool_m_times_larger_filed_m_to_a_sample():
    data = _tiny_data()
    big = build_ray_pool(data, samples=8, seed=3)
    grouped = build_ray_pool(data, samples=2, seed=3, rays_per_sample=[4])
    assert grouped.samples == 2 and len(grouped.rays) == len(big.rays)
    # the same rays in the same order, sample s filed as sample s // 4
    assert torch.equal(grouped.rays.weights, big.rays.weights)
    assert torch.equal(grouped.rays.origins, big.rays.origins)
    assert torch.equal(grouped.rays.pixel, (big.rays.pixel // 8) * 2 + (big.rays.pixel % 8) // 4)
    assert grouped.offsets[-1] == len(grouped.rays)
    pixels = torch.arange(grouped.n_pixels)
    density = lambda pts: torch.exp(-(pts**2).sum(-1) / 0.5)  # noqa: E731
    full = render_pixels(density, grouped.gather(pixels), len(pixels), jitter=False)
    same = render_pixels(density, big.gather(pixels), len(pixels), jitter=False)
    assert torch.allclose(full, same, rtol=1e-5)
    # one pooled sample (scaled by 2) is the mean of its four rays, scaled by 8 / 4
    one = render_pixels(density, grouped.gather(pixels, torch.ones_like(pixels)), len(pixels), jitter=False)
    four = sum(render_pixels(density, big.gather(pixels, torch.full_like(pixels, k)), len(pixels),
                             jitter=False) for k in range(4, 8)) / 4
    assert torch.allclose(one, four, rtol=1e-5)


def test_only_a_view_blurred_beyond_the_box_s_image_is_defocused():
    from pathlib import Path

    from recon.fitting.data import load_fit_data
    from recon.fitting.raypool import defocused_views, rays_per_sample

    data, _, _ = load_fit_data(Path(__file__).resolve().parents[3] / "data" / "run042")
    assert [v.name for v in data.views][0] == "direct"
    assert defocused_views(data) == [True] + [False] * 14  # 371 px of blur against 155 px of box
    assert rays_per_sample(data, 4) == [4] + [1] * 14


def _pool_of_lengths(lengths, pixel):
    """A pool of one sample per pixel whose segments have these lengths (mm) and owners."""
    from recon.fitting.raypool import RayPool
    from recon.model.render import RayBatch

    lengths, pixel = torch.tensor(lengths), torch.tensor(pixel)
    n = int(pixel.max()) + 1
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(pixel, minlength=n).cumsum(0)])
    m = len(lengths)
    rays = RayBatch(torch.zeros(m, 3), torch.zeros(m, 3), torch.ones(m), torch.zeros(m), lengths, pixel,
                    torch.zeros(m, dtype=torch.long))
    return RayPool(rays, offsets, torch.zeros(n), torch.ones(n), torch.zeros(n, dtype=torch.long), 1.0, 1)


def test_chunks_hold_about_max_samples_strata_in_the_pixels_order():
    # strata at 0.1 mm: pixel 0 → 1, pixel 1 → 3 + 1, pixel 2 → 3, pixel 3 → 3, pixel 4 → 1
    pool = _pool_of_lengths([0.1, 0.25, 0.05, 0.3, 0.3, 0.1], [0, 1, 1, 2, 3, 4])
    runs = pool.chunks(torch.arange(5), 0.1, 4)  # preceding strata 0, 1, 5, 8, 11: runs of 4
    assert [r.tolist() for r in runs] == [[0, 1], [2], [3, 4]]
    assert [r.tolist() for r in pool.chunks(torch.tensor([4, 0, 3]), 0.1, 2)] == [[4, 0], [3]]
    assert [r.tolist() for r in pool.chunks(torch.arange(5), 0.1, 100)] == [[0, 1, 2, 3, 4]]
    assert pool.chunks(torch.zeros(0, dtype=torch.long), 0.1) == []


def test_a_sobol_pool_estimates_each_pixels_integral_better_than_a_random_one():
    """Against a pool of 256 random samples a pixel: the error of 8 samples, three seeds each."""
    data = _tiny_data()
    density = lambda pts: torch.exp(-(pts**2).sum(-1) / 0.05)  # noqa: E731

    def predicted(sampling, samples, seed):
        pool = build_ray_pool(data, samples=samples, seed=seed, sampling=sampling)
        pixels = torch.arange(pool.n_pixels)
        return render_pixels(density, pool.gather(pixels), len(pixels), jitter=False, step_mm=0.01).double()

    reference = predicted("random", 256, 100)
    error = {s: sum(float((predicted(s, 8, seed) - reference).pow(2).mean()) for seed in range(3))
             for s in ("random", "sobol")}
    assert error["sobol"] < 0.5 * error["random"]
    first, again = (build_ray_pool(data, samples=8, seed=0, sampling="sobol") for _ in range(2))
    assert torch.equal(first.rays.origins, again.rays.origins)


def test_boost_factors_are_the_measured_mean_over_bright_e_rounded_up_within_one_and_most():
    summed = torch.tensor([0.0, -3.0, 4.0, 10.0, 10.1, 1e6, 0.0])
    frames = torch.tensor([0, 2, 2, 2, 2, 1, 2])
    factors = boost_factors(summed, frames, 2.5, 8)
    assert factors.tolist() == [1, 1, 1, 2, 3, 8, 1]  # means 0, −1.5, 2, 5, 5.05, 10⁶, 0 e⁻ a frame
    assert factors.dtype == torch.long
    assert boost_factors(summed, frames, 0.0, 8).tolist() == [1] * 7


def test_a_pool_boosted_m_times_is_its_rays_over_m_and_those_of_a_pool_of_m_minus_one_times_the_samples():
    data = _tiny_data()
    base = build_ray_pool(data, samples=2, seed=5)
    m = 3
    boosted = boost_pool(base, data, torch.full((base.n_pixels,), m), seed=5)
    extra = build_ray_pool(data, samples=2 * (m - 1), seed=5 + BOOST_SEED_OFFSET)
    assert boosted.key == base.key and boosted.boost == array_digest(torch.full((base.n_pixels,), m))
    assert base.boost is None and boosted.samples == 2
    assert len(boosted.rays) == len(base.rays) + len(extra.rays) == boosted.offsets[-1]
    assert bool((boosted.rays.pixel[1:] >= boosted.rays.pixel[:-1]).all())  # still sorted by pixel sample
    for key in (0, 1, 77, 2 * 319 + 1):
        mine = boosted.rays.select(slice(int(boosted.offsets[key]), int(boosted.offsets[key + 1])))
        old = base.rays.select(slice(int(base.offsets[key]), int(base.offsets[key + 1])))
        pixel, sample = divmod(key, 2)  # the extra pool's samples 2(m−1)… filed m − 1 to a pooled sample
        lo, hi = pixel * 2 * (m - 1) + sample * (m - 1), pixel * 2 * (m - 1) + (sample + 1) * (m - 1)
        new = extra.rays.select(slice(int(extra.offsets[lo]), int(extra.offsets[hi])))
        assert bool((mine.pixel == key).all()) and len(mine) == len(old) + len(new)
        assert torch.equal(mine.origins, torch.cat([old.origins, new.origins]))
        assert torch.allclose(mine.weights, torch.cat([old.weights / m, new.weights * (m - 1) / m]))


def test_a_boost_leaves_pixels_of_factor_one_alone_and_keeps_each_pooled_sample_unbiased():
    data = _tiny_data()
    base = build_ray_pool(data, samples=4, seed=1)
    factors = torch.ones(base.n_pixels, dtype=torch.long)
    factors[::3], factors[1::7] = 2, 5
    boosted = boost_pool(base, data, factors, seed=1)
    calm = (factors == 1).nonzero(as_tuple=True)[0]
    before, after = base.gather(calm), boosted.gather(calm)
    assert torch.equal(before.origins, after.origins) and torch.equal(before.weights, after.weights)
    pixels = torch.arange(base.n_pixels)
    density = lambda pts: torch.exp(-(pts**2).sum(-1) / 0.5)  # noqa: E731
    full = render_pixels(density, boosted.gather(pixels), len(pixels), jitter=False)
    singles = torch.stack([render_pixels(density, boosted.gather(pixels, torch.full((len(pixels),), k)),
                                         len(pixels), jitter=False) for k in range(4)])
    assert torch.allclose(singles.mean(0), full, rtol=1e-5)
    # the same integral as the base pool's, to its quadrature error (a smooth density: well under 5 %)
    old = render_pixels(density, base.gather(pixels), len(pixels), jitter=False)
    assert float((full - old).abs().sum() / old.abs().sum()) < 0.05
    assert boost_pool(base, data, torch.ones(base.n_pixels, dtype=torch.long), seed=1) is base
    with pytest.raises(ValueError, match="factors"):
        boost_pool(base, data, factors[:-1], seed=1)
