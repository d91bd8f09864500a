"""Self-calibration in the fit loop: the learnable optics, batches traced through them, the refined pool."""

import math

import pytest
import torch

from optics.design import view_regions
from optics.trace import sample_pixel_samples, trace_pixels
from recon.errors import ConfigError
from recon.fitting.config import FitConfig
from recon.fitting.data import FitData, ViewData
from recon.fitting.raypool import build_ray_pool, rays_per_sample
from recon.fitting.refine import Refinement
from recon.model.render import compact_rays
from tests.calibration.conftest import small_dome

W, H = 6, 4  # pixels per view
SAMPLES = 2


@pytest.fixture(scope="module")
def data():
    """The direct view and the first mirror's view of the small dome, 6 × 4 pixels at each centre."""
    system = small_dome().to(torch.float32)
    views = []
    for region in view_regions(system)[:2]:
        x0, y0, w, h = region.roi
        roi = (x0 + w // 2 - W // 2, y0 + h // 2 - H // 2, W, H)
        electrons = torch.rand(1, H, W, generator=torch.Generator().manual_seed(len(views)))
        views.append(ViewData(region.name, 0, roi, electrons, torch.ones(1, H, W, dtype=torch.bool)))
    return FitData(system, tuple(views), 100.0, read_noise_e=2.0)


@pytest.fixture(scope="module")
def cfg():
    return FitConfig(refine="mirrors", pool_samples=SAMPLES, steps=10, refine_warmup=2, refine_lr=3e-3,
                     seed=5)


@pytest.fixture
def refinement(data, cfg):
    return Refinement.start(data, cfg, 2 * W * H, "cpu")


def test_start_makes_the_refined_groups_learnable_and_nothing_else(data, cfg, refinement):
    learnable = {name for name, p in refinement.module.named_parameters() if p.requires_grad}
    assert learnable == {"optics.mirror_tilt", "optics.mirror_shift"}
    assert all(not p.detach().any() for p in refinement.module.parameters())  # start at the system
    (group,) = refinement.optim.param_groups
    assert group["lr"] == 3e-3
    learnable_ids = {id(p) for p in refinement.module.parameters() if p.requires_grad}
    assert {id(p) for p in group["params"]} == learnable_ids
    pose = Refinement.start(data, FitConfig(refine="pose,focus", steps=10), 48, "cpu")
    assert {n for n, p in pose.module.named_parameters() if p.requires_grad} == {
        "optics.pose_rotation", "optics.pose_position", "optics.focus"}


def test_start_has_one_pixel_table_entry_per_pixel(data, refinement):
    assert refinement.pixel_uv.shape == (2 * W * H, 2)
    assert torch.equal(refinement.pixel_uv, torch.cat([v.pixel_coords() for v in data.views]))
    assert refinement.pixel_camera.dtype == torch.long
    assert torch.equal(refinement.pixel_camera, torch.zeros(2 * W * H, dtype=torch.long))
    assert refinement.module.n_pixels == 2 * W * H


def test_start_rejects_unknown_groups(data):
    with pytest.raises(ConfigError, match="fit --refine: 'lens' is not a list of"):
        Refinement.start(data, FitConfig(refine="lens"), 48, "cpu")


def test_a_batch_is_the_requested_pixels_traced_through_the_current_optics(data, refinement):
    pixels = torch.tensor([3, 30, 7, 47, 30])  # both views, a repeat
    order, rays = refinement.batch(pixels, SAMPLES, torch.Generator().manual_seed(0))
    assert torch.equal(order, pixels)  # one camera: traced in the order asked
    assert rays.pixel.min() >= 0 and rays.pixel.max() < len(pixels)
    assert set(rays.path[rays.pixel == 1].tolist()) == {1}  # pixel 30: the first mirror's view (path 1)
    # At zero corrections the batch is the static tracing of those pixels with the same samples.
    sub, ap = sample_pixel_samples(len(pixels), SAMPLES, generator=torch.Generator().manual_seed(0))
    static = compact_rays(trace_pixels(data.system, refinement.pixel_uv[pixels], subpixel=sub, aperture=ap))
    assert torch.equal(rays.pixel, static.pixel) and torch.equal(rays.path, static.path)
    for name in ("origins", "directions", "weights", "t_near", "t_far"):
        assert torch.allclose(getattr(rays, name), getattr(static, name), rtol=1e-5, atol=1e-5), name


def test_a_batch_carries_the_gradient_to_the_mirror_of_its_view(refinement):
    pixels = torch.arange(W * H, 2 * W * H)  # the mirror view only
    _, rays = refinement.batch(pixels, SAMPLES, torch.Generator().manual_seed(1))
    (rays.weights * (rays.t_far - rays.t_near) + rays.origins.sum(-1)).sum().backward()
    tilt = refinement.module.optics.mirror_tilt.grad
    assert tilt[0].abs().sum() > 0
    assert torch.equal(tilt[1:], torch.zeros_like(tilt[1:]))  # the other mirrors are not seen


def test_finish_without_a_step_returns_the_start_system_and_its_pool(data, cfg, refinement):
    log = []
    refined, record, pool = refinement.finish(data, cfg, log.append)
    start = data.system
    assert refined.dtype == torch.float64  # the learnable optics' precision
    assert [m.name for m in refined.mirrors] == [m.name for m in start.mirrors]
    for m, m0 in zip(refined.mirrors, start.mirrors, strict=True):
        assert torch.allclose(m.normal.float(), m0.normal / m0.normal.norm(), atol=1e-7)
        assert torch.allclose(m.center_mm.float(), m0.center_mm, atol=1e-6)
    cam, cam0 = refined.cameras[0], start.cameras[0]
    assert torch.allclose(cam.pose.position_mm.float(), cam0.pose.position_mm)
    assert torch.allclose(cam.pose.rotation.float(), cam0.pose.rotation)
    assert record["refine"] == "mirrors" and record["warmup_steps"] == 2 and record["lr"] == 3e-3
    assert record["prior"]["tilt_deg"] == refinement.module.optics.prior.tilt_deg
    changes = record["changes"]
    assert changes["fit"] == ["mirrors"] and len(changes["mirrors"]) == len(start.mirrors)
    assert all(m["tilt_deg"] == 0.0 and m["normal_shift_um"] == 0.0 for m in changes["mirrors"])
    # The pool is the one the static optics give, with the fit's samples and seed.
    static = build_ray_pool(data, samples=SAMPLES, seed=cfg.seed,
                            rays_per_sample=rays_per_sample(data, cfg.defocused_rays))
    assert pool.samples == SAMPLES and torch.equal(pool.offsets, static.offsets)
    assert torch.allclose(pool.rays.origins, static.rays.origins, atol=1e-5)
    assert torch.allclose(pool.rays.weights, static.rays.weights, rtol=1e-5)
    assert torch.equal(pool.summed_electrons, static.summed_electrons)
    views = [line.split(" (")[0] for line in log if not line.startswith("tracing ")]  # start, pace
    assert views == [f"traced view {v.name}: {W * H} pixels" for v in data.views]
    assert log[-1].endswith("about 0 s left)") and "(100% of " in log[-1]  # the tracing's pace


def test_finish_reports_what_the_optimiser_changed(data, cfg, refinement):
    with torch.no_grad():
        refinement.module.optics.mirror_tilt[0, 0] = 0.5  # half the prior σ (2°)
        refinement.module.optics.mirror_shift[0] = 0.1  # a tenth of 0.5 mm
    refined, record, pool = refinement.finish(data, cfg, lambda line: None)
    m0 = record["changes"]["mirrors"][0]
    assert m0["tilt_deg"] == pytest.approx(1.0) and m0["normal_shift_um"] == pytest.approx(50.0)
    n0 = data.system.mirrors[0].normal.double()
    n0 = n0 / n0.norm()
    angle = math.degrees(math.acos(float(torch.dot(refined.mirrors[0].normal, n0).clamp(-1, 1))))
    assert angle == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(refined.mirrors[1].normal.float(), data.system.mirrors[1].normal, atol=1e-7)
    # The returned pool is traced through the refined mirror: its view's segments moved.
    static = build_ray_pool(data, samples=SAMPLES, seed=cfg.seed,
                            rays_per_sample=rays_per_sample(data, cfg.defocused_rays))
    mirror_view = slice(int(static.offsets[W * H * SAMPLES]), len(static.rays))
    direct = slice(0, int(static.offsets[W * H * SAMPLES]))
    assert torch.allclose(pool.rays.origins[direct], static.rays.origins[direct], atol=1e-5)
    assert not torch.allclose(pool.rays.directions[mirror_view], static.rays.directions[mirror_view],
                              atol=1e-3)
