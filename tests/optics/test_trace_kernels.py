"""The compiled tracer (optics.trace_kernels) against its specification, the torch tracer."""

import pytest
import torch

from optics.design import view_regions
from optics.system import load_system, system_from_dict
from optics.trace import (
    _compiled,
    _pixel_rays,
    sample_pixel_samples,
    trace_object_segments,
    trace_pixel_segments,
)
from tests.optics.helpers import make_system
from tests.optics.test_trace import _four_camera_dict

FIELDS = ("origins", "directions", "weights", "t_near", "t_far")


def assert_same_segments(a, b, rtol: float, where: str = "") -> None:
    """The same segments (ray, path) in the same order, their values within ``rtol`` of their scale."""
    assert len(a.ray) > 0, where
    assert torch.equal(a.ray, b.ray) and torch.equal(a.path, b.path), where
    for name in FIELDS:
        x, y = getattr(a, name).double(), getattr(b, name).double()
        scale = x.abs().amax() + 1.0
        assert (x - y).abs().max() <= rtol * scale, (where, name, float((x - y).abs().max()))


def _grid(roi, step: float, dtype=torch.float32):
    x0, y0, w, h = roi
    u, v = torch.meshgrid(torch.arange(x0, x0 + w, step, dtype=dtype),
                          torch.arange(y0, y0 + h, step, dtype=dtype), indexing="xy")
    return torch.stack([u, v], -1).reshape(-1, 2)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
def test_the_dome_traces_the_same_compiled_and_in_torch(dtype, rtol):
    """Every other view of the dome (a window, 14 disk mirrors): same segments, values to a few ulps."""
    s = load_system("data/systems/magis_dome.toml", dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    for region in view_regions(s)[::2]:
        uv = _grid(region.roi, 6.0, dtype)
        sub, ap = sample_pixel_samples(len(uv), 4, generator=gen, dtype=dtype)
        fast = trace_pixel_segments(s, uv, camera=0, subpixel=sub, aperture=ap, compiled=True)
        spec = trace_pixel_segments(s, uv, camera=0, subpixel=sub, aperture=ap, compiled=False)
        assert_same_segments(fast, spec, rtol, region.name)
        assert fast.origins.dtype == dtype and fast.ray.dtype == torch.long


def test_four_cameras_behind_their_ports_with_mounts_trace_the_same():
    """Each camera behind its own window, the opposite port beyond the cloud (which must not act),
    and a small mounted window that blocks part of one camera's beam."""
    small = {"name": "small_port", "center_mm": [4.0, 0.0, -200.0], "normal": [0.0, 0.1, 1.0],
             "thickness_mm": 2.0, "refractive_index": 1.5, "aperture_radius_mm": 3.0, "mount_radius_mm": 9.0}
    s = system_from_dict(_four_camera_dict(extra_windows=[small]), dtype=torch.float64)
    uv = _grid((900, 650, 220, 200), 4.0, torch.float64)
    gen = torch.Generator().manual_seed(1)
    blocked = 0
    for k in range(4):
        sub, ap = sample_pixel_samples(len(uv), 3, generator=gen, dtype=torch.float64)
        fast = trace_pixel_segments(s, uv, camera=k, subpixel=sub, aperture=ap, compiled=True)
        spec = trace_pixel_segments(s, uv, camera=k, subpixel=sub, aperture=ap, compiled=False)
        assert_same_segments(fast, spec, 1e-13, s.cameras[k].name)
        blocked += len(uv) * 3 - len(fast.ray)
    assert blocked > 100  # the small window's mount stops some of the -z camera's rays


def test_random_rays_against_disks_and_rectangles_trace_the_same():
    """Rays from everywhere (inside the box too, along the axes, with zero weight) against mirrors
    of both shapes and a window: the same segments; the reflected paths are taken."""
    gen = torch.Generator().manual_seed(7)
    unit = torch.nn.functional.normalize
    randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    centres = unit(randn(6, 3), dim=-1) * 10
    normals = unit(-centres / 10 + 0.3 * randn(6, 3), dim=-1)  # facing the box, roughly
    mirrors = [{"name": f"m{i}", "center_mm": centres[i].tolist(), "normal": normals[i].tolist(),
                **({"shape": "circle", "radius_mm": 5.0} if i % 2 else
                   {"shape": "rectangle", "size_mm": [9.0, 4.0], "u_axis": [1.0, 0.3, 0.2]}),
                "reflectivity": 0.9} for i in range(6)]
    windows = [{"name": "w", "center_mm": [0.0, 0.0, -15.0], "normal": [0.0, 0.2, 1.0], "thickness_mm": 3.0,
                "refractive_index": 1.46, "aperture_radius_mm": 12.0, "mount_radius_mm": 20.0}]
    s = make_system(mirrors=mirrors, windows=windows)
    n = 20000
    origins = randn(n, 3) * 20
    origins[:500] = torch.rand(500, 3, generator=gen, dtype=torch.float64) - 0.5  # inside the box
    targets = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 6  # about the box and beyond
    directions = unit(targets - origins, dim=-1)
    directions[800:1200] = unit(randn(400, 3), dim=-1)
    directions[500:800] = torch.eye(3, dtype=torch.float64).repeat(100, 1)  # parallel to the box's faces
    k = torch.arange(1200, n) % 6  # the rest towards a mirror's face, from in front of it
    origins[1200:] = centres[k] + 15 * normals[k] + randn(n - 1200, 3)
    directions[1200:] = unit(centres[k] + 2 * randn(n - 1200, 3) - origins[1200:], dim=-1)
    weights = torch.rand(n, generator=gen, dtype=torch.float64)
    weights[::10] = 0.0
    fast = trace_object_segments(s, origins, directions, weights, compiled=True)
    spec = trace_object_segments(s, origins, directions, weights, compiled=False)
    assert_same_segments(fast, spec, 1e-12)
    assert (fast.path == 0).sum() > 100 and (fast.path > 0).sum() > 500 and (fast.weights > 0).all()
    assert len(fast.path[fast.path > 0].unique()) == 6


def test_the_compiled_tracer_is_chosen_only_where_no_gradient_is_asked_for():
    """A self-calibration differentiates through the torch tracer; everything else gets the kernels."""
    s = make_system(mirrors=[{"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95],
                              "shape": "circle", "radius_mm": 4.0, "reflectivity": 0.95}])
    uv = torch.tensor([[1000.0, 750.0]], dtype=torch.float64)
    sub, ap = sample_pixel_samples(1, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rays = _pixel_rays(s.cameras[0], uv, sub, ap)
    assert _compiled(s, *rays)
    assert not _compiled(s.to(torch.float16), *(r.half() for r in rays))
    rays_grad = (rays[0].clone().requires_grad_(True), *rays[1:])
    assert not _compiled(s, *rays_grad)
    with torch.no_grad():
        assert _compiled(s, *rays_grad)
    seg = trace_object_segments(s, *rays_grad)
    assert seg.origins.requires_grad
    seg.t_far.sum().backward()
    assert rays_grad[0].grad is not None


def test_run042s_views_trace_the_same(tmp_path):
    """The sample run's instrument, its direct view (defocused) and a mirror view, as the pool traces them."""
    from recon.fitting.data import load_fit_data

    data, *_ = load_fit_data(__import__("pathlib").Path("data/run042"))
    gen = torch.Generator().manual_seed(0)
    for view in (data.views[0], data.views[1]):
        uv = view.pixel_coords()[::37]
        sub, ap = sample_pixel_samples(len(uv), 8, generator=gen, dtype=uv.dtype)
        fast, spec = (trace_pixel_segments(data.system, uv, camera=view.camera, subpixel=sub, aperture=ap,
                                           compiled=compiled) for compiled in (True, False))
        assert_same_segments(fast, spec, 2e-6, view.name)
