
import torch

from optics.design import collected_fraction, design_dome, view_regions
from optics.system import load_system
from optics.trace import sample_pixel_samples, trace_pixels
from tests.optics.helpers import make_system


def _overlap(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def test_default_dome_views_are_disjoint_and_chief_rays_hit_box():
    s = load_system("data/systems/magis_dome.toml", dtype=torch.float64)
    regions = view_regions(s)
    assert len(regions) == s.n_paths >= 13
    polar = [r.polar_deg for r in regions[1:]]
    assert max(polar) <= 55.0 + 1e-6
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            assert not _overlap(a.roi, b.roi), (a.name, b.name)
        x0, y0, w, h = a.roi
        centre = torch.tensor([[x0 + (w - 1) / 2, y0 + (h - 1) / 2]], dtype=torch.float64)
        tr = trace_pixels(s, centre)
        assert tr.valid[0, 0, a.path], a.name
        # the view's own path carries the light; no other path reaches the box from its centre
        assert tr.valid[0, 0].sum() == 1


def test_mirror_views_see_only_their_path_within_region():
    s = design_dome()
    for reg in view_regions(s)[1:4]:
        x0, y0, w, h = reg.roi
        u = torch.linspace(x0, x0 + w - 1, 9, dtype=torch.float64)
        v = torch.linspace(y0, y0 + h - 1, 9, dtype=torch.float64)
        uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2)
        sub, ap = sample_pixel_samples(len(uv), 4, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64)
        tr = trace_pixels(s, uv, subpixel=sub, aperture=ap)
        other = tr.valid.clone()
        other[..., reg.path] = False
        assert not other.any()
        assert tr.valid[..., reg.path].float().mean() > 0.5


def test_collected_fraction_direct_matches_solid_angle():
    s = make_system()
    cam = s.cameras[0]
    frac = collected_fraction(s, torch.zeros(3, dtype=torch.float64), 0, n=20000)
    radius = cam.lens.aperture_radius_mm.item()
    dist = -cam.pose.position_mm[2].item()
    expected = radius**2 / (4 * dist**2)  # πR²/(4πd²), paraxial
    assert abs(frac - expected) / expected < 0.01


def test_mirror_path_segment_is_the_reflection():
    mirror = {"name": "m", "center_mm": [0.0, 0.0, 10.0], "normal": [0.0, 0.0, -1.0],
              "shape": "circle", "radius_mm": 20.0, "reflectivity": 0.9}
    s = make_system(mirrors=[mirror])
    uv = torch.tensor([[1000.0, 750.0]], dtype=torch.float64)
    tr = trace_pixels(s, uv)
    assert tr.valid[0, 0].tolist() == [True, True]
    assert torch.allclose(tr.origins[0, 0, 1, 2], torch.tensor(10.0, dtype=torch.float64))
    assert tr.directions[0, 0, 1, 2] < 0
    assert torch.allclose(tr.weights[0, 0, 1], 0.9 * tr.weights[0, 0, 0])
    # the direct segment ends where the ray meets the mirror (the origin of the mirror path)
    t_mirror = float(((tr.origins[0, 0, 1] - tr.origins[0, 0, 0]) * tr.directions[0, 0, 0]).sum())
    assert tr.t_near[0, 0, 0] < tr.t_far[0, 0, 0] <= t_mirror + 1e-9


def _traced_sum(system, uv, sub, ap):
    tr = trace_pixels(system, uv, subpixel=sub, aperture=ap)
    # a smooth scalar of everything that depends on the optics
    mid = tr.origins + (0.5 * (tr.t_near + tr.t_far)).unsqueeze(-1) * tr.directions
    return (tr.weights * (tr.t_far - tr.t_near)).sum() * 1e6 + (mid * tr.valid.unsqueeze(-1)).sum()


def test_gradcheck_wrt_mirror_lens_pose_window():
    from dataclasses import replace

    s = design_dome()
    reg = view_regions(s)[2]
    x0, y0, w, h = reg.roi
    uv = torch.tensor([[x0 + w / 2, y0 + h / 2], [x0 + w / 3, y0 + h / 2]], dtype=torch.float64)
    sub, ap = sample_pixel_samples(2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    k = reg.path - 1

    def fn(center, normal, focal, focus, position, window_center):
        mirrors = list(s.mirrors)
        mirrors[k] = replace(mirrors[k], center_mm=center, normal=normal)
        cam = s.cameras[0]
        lens = replace(cam.lens, focal_length_mm=focal, focus_distance_mm=focus)
        pose = replace(cam.pose, position_mm=position)
        cam = replace(cam, lens=lens, pose=pose)
        windows = (replace(s.windows[0], center_mm=window_center),)
        sys2 = replace(s, mirrors=tuple(mirrors), cameras=(cam,), windows=windows)
        return _traced_sum(sys2, uv, sub, ap)

    m = s.mirrors[k]
    cam = s.cameras[0]
    inputs = tuple(t.clone().requires_grad_(True) for t in (
        m.center_mm, m.normal, cam.lens.focal_length_mm, cam.lens.focus_distance_mm,
        cam.pose.position_mm, s.windows[0].center_mm))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    out = fn(*inputs)
    grads = torch.autograd.grad(out, inputs)
    assert all(g.abs().sum() > 0 for g in grads)


def test_the_compact_segments_are_the_dense_traces_valid_slots_bit_for_bit():
    """Every view of the dome (windows, 14 mirrors), traced by torch: same values, same order as
    valid.nonzero() (the compiled kernels against torch: tests/optics/test_trace_kernels.py)."""
    from optics.trace import trace_pixel_segments

    s = load_system("data/systems/magis_dome.toml", dtype=torch.float32)
    gen = torch.Generator().manual_seed(3)
    for region in view_regions(s)[::3]:
        x0, y0, w, h = region.roi
        uv = torch.stack(torch.meshgrid(torch.arange(x0, x0 + w, 7.0), torch.arange(y0, y0 + h, 7.0),
                                        indexing="xy"), -1).reshape(-1, 2)
        sub, ap = sample_pixel_samples(len(uv), 4, generator=gen)
        dense = trace_pixels(s, uv, subpixel=sub, aperture=ap)
        seg = trace_pixel_segments(s, uv, camera=0, subpixel=sub, aperture=ap, compiled=False)
        n, k, p = dense.valid.nonzero(as_tuple=True)
        assert len(n) > 0, region.name
        assert torch.equal(seg.ray, n * 4 + k) and torch.equal(seg.path, p)
        for name in ("origins", "directions", "weights", "t_near", "t_far"):
            assert torch.equal(getattr(seg, name), getattr(dense, name)[n, k, p]), (region.name, name)
        assert (dense.weights[~dense.valid] == 0).all() and (dense.t_far[~dense.valid] == 0).all()


def test_the_dense_trace_is_differentiable_through_the_compact_one():
    """The weights of the mirror path depend on the mirror's reflectivity and the hit on its centre."""
    system = make_system(mirrors=[{"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95],
                                   "shape": "circle", "radius_mm": 4.0, "reflectivity": 0.95}])
    view = view_regions(system)[1]
    x0, y0, w, h = view.roi
    uv = torch.tensor([[x0 + w / 2, y0 + h / 2]], dtype=torch.float64)
    centre = system.mirrors[0].center_mm.clone().requires_grad_(True)
    import dataclasses

    mirror = dataclasses.replace(system.mirrors[0], center_mm=centre)
    moved = dataclasses.replace(system, mirrors=(mirror,))
    tr = trace_pixels(moved, uv)
    assert tr.valid[0, 0, 1]
    (tr.origins[0, 0, 1].sum() + tr.t_far[0, 0, 1]).backward()
    assert centre.grad is not None and torch.isfinite(centre.grad).all() and centre.grad.abs().sum() > 0


def _four_camera_dict(extra_windows=()):
    """Four cameras on ±x and ±z at 350 mm, each behind its own viewport 100 mm from the box."""
    from copy import deepcopy

    from tests.optics.helpers import system_dict

    d = system_dict()
    base = d["cameras"][0]
    cams, windows = [], []
    for name, axis in (("px", (1, 0, 0)), ("mx", (-1, 0, 0)), ("pz", (0, 0, 1)), ("mz", (0, 0, -1))):
        cam = deepcopy(base)
        cam["name"] = name
        cam["pose"] = {"position_mm": [350.0 * a for a in axis], "look_at_mm": [0.0, 0.0, 0.0],
                       "up": [0.0, 1.0, 0.0]}
        cams.append(cam)
        windows.append({"name": f"port_{name}", "center_mm": [100.0 * a for a in axis],
                        "normal": [float(a) for a in axis], "thickness_mm": 6.35,
                        "refractive_index": 1.4645, "aperture_radius_mm": 35.0, "mount_radius_mm": 60.0})
    d["cameras"] = cams
    d["windows"] = windows + list(extra_windows)
    return d


def test_each_camera_sees_the_box_through_its_own_window_only():
    """Every camera's rays cross its own port (and, beyond the cloud, the opposite one, which must
    not act): the trace equals the trace with only its own window, bit for bit."""
    from optics.system import system_from_dict

    full = system_from_dict(_four_camera_dict(), dtype=torch.float64)
    uv = torch.tensor([[1000.0, 750.0], [960.0, 780.0], [1050.0, 710.0]], dtype=torch.float64)  # the box
    sub, ap = sample_pixel_samples(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for k in range(4):
        d = _four_camera_dict()
        d["windows"] = [d["windows"][k]]
        alone = system_from_dict(d, dtype=torch.float64)
        a = trace_pixels(full, uv, camera=k, subpixel=sub, aperture=ap)
        b = trace_pixels(alone, uv, camera=k, subpixel=sub, aperture=ap)
        assert a.valid[..., 0].all(), full.cameras[k].name  # every sample's direct segment reaches the box
        for x, y in ((a.origins, b.origins), (a.directions, b.directions), (a.weights, b.weights),
                     (a.t_near, b.t_near), (a.t_far, b.t_far)):
            assert torch.equal(x, y)
        # without any window the weights rise by the port's Fresnel losses (≈ 7 % at n = 1.46)
        none = system_from_dict({**_four_camera_dict(), "windows": []}, dtype=torch.float64)
        c = trace_pixels(none, uv, camera=k, subpixel=sub, aperture=ap)
        ratio = a.weights[..., 0] / c.weights[..., 0]
        assert torch.allclose(ratio, torch.full_like(ratio, 0.93), atol=0.01)


def test_a_window_in_a_cameras_path_but_outside_its_aperture_blocks_only_with_a_mount():
    """A small window beside the -z camera's beam (≈ ±11 mm wide there): its plane cuts every ray,
    its aperture none; the rays pass untouched, or are blocked by the window's mount."""
    from optics.system import system_from_dict

    small = {"name": "small_port", "center_mm": [20.0, 0.0, -200.0], "normal": [0.0, 0.0, 1.0],
             "thickness_mm": 2.0, "refractive_index": 1.5, "aperture_radius_mm": 0.5}
    d = _four_camera_dict()
    d["windows"] = [small]
    uv = torch.tensor([[1040.0, 750.0]], dtype=torch.float64)
    sub, ap = sample_pixel_samples(1, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mz = 3
    free = trace_pixels(system_from_dict(d, dtype=torch.float64), uv, camera=mz, subpixel=sub, aperture=ap)
    d["windows"] = [{**small, "mount_radius_mm": 100.0}]
    walled = trace_pixels(system_from_dict(d, dtype=torch.float64), uv, camera=mz, subpixel=sub, aperture=ap)
    assert free.valid[..., 0].all() and not walled.valid[..., 0].any()


def _bundle(gen, converging: bool, n: int = 400):
    """A bundle of rays, from a disk towards a focus (converging) or from a point outward, and its axis."""
    axis = torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
    start = torch.randn(3, generator=gen, dtype=torch.float64) * 50
    spread = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    if converging:
        origins = start + 12.0 * spread
        focus = start + 300.0 * axis + 2.0 * torch.randn(n, 3, generator=gen, dtype=torch.float64)
        directions = torch.nn.functional.normalize(focus - origins, dim=-1)
    else:
        origins = start + 0.5 * spread
        directions = torch.nn.functional.normalize(axis + 0.05 * spread, dim=-1)
    return origins, directions, start, axis


def test_a_mirror_out_of_reach_is_hit_by_no_ray():
    """The reach test is necessary: any mirror some ray meets is kept (random bundles and mirrors).

    It must also cull: mirrors far enough from a narrow bundle are out of its reach.
    """
    from optics.mirror import intersect_mirror
    from optics.trace import _mirrors_in_reach

    gen = torch.Generator().manual_seed(11)
    hit_kept = culled = 0
    for trial in range(300):
        origins, directions, start, axis = _bundle(gen, converging=trial % 2 == 0)
        along = 50 + 400 * torch.rand(6, 1, generator=gen, dtype=torch.float64)
        centres = start + along * axis + 25 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
        mirrors = make_system(mirrors=[
            {"name": f"m{i}", "center_mm": centres[i].tolist(),
             "normal": torch.randn(3, generator=gen, dtype=torch.float64).tolist(),
             **({"shape": "circle", "radius_mm": 15.0} if i % 2 else
                {"shape": "rectangle", "size_mm": [40.0, 16.0], "u_axis": [1.0, 0.3, 0.2]}),
             "reflectivity": 0.9} for i in range(6)]).mirrors
        reach = _mirrors_in_reach(mirrors, origins, directions)
        for mirror, kept in zip(mirrors, reach, strict=True):
            hit = bool(intersect_mirror(mirror, origins, directions)[1].any())
            assert kept or not hit, (trial, mirror.name)
            hit_kept += hit
            culled += not kept
    assert hit_kept > 500 and culled > 200


def test_the_dome_traces_the_same_without_the_reach_test(monkeypatch):
    """Bit for bit, every third view of the dome; most mirrors are culled for most batches."""
    import optics.trace as trace

    s = load_system("data/systems/magis_dome.toml", dtype=torch.float32)
    kept = []
    real = trace._mirrors_in_reach

    def counting(mirrors, origins, directions):
        reach = real(mirrors, origins, directions)
        kept.append(sum(reach))
        return reach

    for region in view_regions(s)[::3]:
        x0, y0, w, h = region.roi
        uv = torch.stack(torch.meshgrid(torch.arange(x0, x0 + w, 5.0), torch.arange(y0, y0 + h, 5.0),
                                        indexing="xy"), -1).reshape(-1, 2)
        sub, ap = sample_pixel_samples(len(uv), 4, generator=torch.Generator().manual_seed(5))
        monkeypatch.setattr(trace, "_mirrors_in_reach", counting)
        fast = trace.trace_pixel_segments(s, uv, camera=0, subpixel=sub, aperture=ap, compiled=False)
        monkeypatch.setattr(trace, "_mirrors_in_reach", lambda m, o, d: [True] * len(m))
        full = trace.trace_pixel_segments(s, uv, camera=0, subpixel=sub, aperture=ap, compiled=False)
        for name in ("ray", "path", "origins", "directions", "weights", "t_near", "t_far"):
            assert torch.equal(getattr(fast, name), getattr(full, name)), (region.name, name)
    assert sorted(kept)[len(kept) // 2] <= 2 < len(s.mirrors)  # the median batch intersects 2 of 14
