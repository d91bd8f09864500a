"""The ray pool: the CSR gather returns exactly the segments of each pixel sample."""


import torch

from optics.design import view_regions
from recon.fitting.data import FitData, ViewData
from recon.fitting.raypool import build_ray_pool
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
