import math

import pytest
import torch

from calibration.model import OpticalParameters
from optics.design import collected_fraction
from optics.errors import CalibrationError, ShapeError
from optics.project import aperture_pattern, spot_centroids, trace_point_to_sensor
from optics.rays import dot
from optics.trace import trace_pixels
from tests.calibration.conftest import small_dome
from tests.optics.helpers import make_system


def test_aperture_pattern_is_equal_area_inside_the_disk():
    p = aperture_pattern(1000)
    r = p.norm(dim=-1)
    assert p.shape == (1000, 2) and float(r.max()) < 1.0
    # equal-area: the fraction inside radius ρ is ρ²
    for rho in (0.3, 0.6, 0.9):
        assert abs(float((r < rho).double().mean()) - rho**2) < 2e-3
    assert float(p.mean(0).norm()) < 2e-3
    with pytest.raises(ShapeError):
        aperture_pattern(0)


@pytest.mark.parametrize("path", [0, 1, 3])
def test_forward_rays_retrace_backward_through_the_source(path):
    """Twin check: a landing pixel, traced back through its aperture point, passes through X."""
    system = small_dome()
    x = torch.tensor([0.31, -0.22, 0.41], dtype=torch.float64)
    s = trace_point_to_sensor(system, x, path, aperture_pattern(40))
    idx = s.valid.nonzero()[:, 0]
    assert len(idx) > 30
    uv, ap = s.pixels_uv[idx], s.aperture_uv[idx]
    back = trace_pixels(
        system, uv, subpixel=torch.zeros(len(idx), 1, 2, dtype=torch.float64), aperture=ap.unsqueeze(1)
    )
    assert bool(back.valid[:, 0, path].all())
    o, d = back.origins[:, 0, path], back.directions[:, 0, path]
    miss = (x - o) - dot(x - o, d).unsqueeze(-1) * d
    assert float(miss.norm(dim=-1).max()) < 1e-7  # mm


@pytest.mark.parametrize("path", [0, 2])
def test_flux_matches_the_backward_collected_fraction(path):
    # Without the window both count the aperture's solid angle; collected_fraction aims its
    # rays ignoring refraction, so the identity is exact only without windows.
    from dataclasses import replace

    system = replace(small_dome(), windows=())
    x = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64)
    _, flux = trace_point_to_sensor(system, x, path, aperture_pattern(4096)).centroids()
    qe = system.cameras[0].sensor.quantum_efficiency
    expected = collected_fraction(system, x, path, n=20000) * qe
    assert float(flux) == pytest.approx(expected, rel=0.005)


def test_window_brings_the_source_closer_and_raises_the_flux():
    """A slab makes a point appear t(1 − 1/n) closer: Ω grows by ≈ 2t(1 − 1/n)/d, times Fresnel T."""
    from dataclasses import replace

    with_window = small_dome()
    without = replace(with_window, windows=())
    x = torch.zeros(3, dtype=torch.float64)
    ap = aperture_pattern(8192)
    f1 = float(trace_point_to_sensor(with_window, x, 0, ap).centroids()[1])
    f0 = float(trace_point_to_sensor(without, x, 0, ap).centroids()[1])
    w = with_window.windows[0]
    shift = float(w.thickness_mm * (1 - 1 / w.refractive_index))
    d = float(with_window.cameras[0].pose.position_mm.norm())
    n = float(w.refractive_index)
    fresnel = (1 - ((n - 1) / (n + 1)) ** 2) ** 2  # two faces, near-normal incidence
    assert f1 / (f0 * fresnel) - 1 == pytest.approx(2 * shift / d, rel=0.05)


def test_point_on_the_plane_of_focus_images_to_one_pixel_on_axis():
    system = make_system()  # thin lens, no mirrors, camera on −z looking at the origin
    x = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    s = trace_point_to_sensor(system, x, 0, aperture_pattern(64))
    cu, cv = system.cameras[0].sensor.principal_point_px
    # magnification 0.215 at the origin: the origin is in focus → every ray lands at one point
    assert torch.allclose(s.pixels_uv[s.valid], torch.tensor([cu, cv], dtype=torch.float64), atol=1e-6)
    # a point off the plane of focus spreads into a blur disk of diameter c = D m |z − s_o| / z
    x2 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    s2 = trace_point_to_sensor(system, x2, 0, aperture_pattern(2000))
    lens = system.cameras[0].lens
    z = float(lens.focus_distance_mm) + 1.0
    c = 2 * float(lens.aperture_radius_mm) * float(lens.image_distance_mm) / z * 1.0 / z
    c_px = c / system.cameras[0].sensor.pixel_pitch_mm
    spread = (s2.pixels_uv[s2.valid] - torch.tensor([cu, cv], dtype=torch.float64)).norm(dim=-1).max()
    assert float(spread) == pytest.approx(c_px / 2, rel=0.02)


def test_centroid_shapes_and_errors():
    system = small_dome()
    pts = torch.zeros(3, 3, dtype=torch.float64)
    c, f = spot_centroids(system, pts, n_aperture=32)
    assert c.shape == (3, system.n_paths, 2) and f.shape == (3, system.n_paths)
    assert bool((f > 0).all())
    with pytest.raises(CalibrationError):
        trace_point_to_sensor(system, pts, system.n_paths, aperture_pattern(8))
    with pytest.raises(ShapeError):
        trace_point_to_sensor(system, pts, 0, torch.zeros(8))


def test_centroid_gradients_match_finite_differences_in_the_mirror_parameters():
    system = small_dome()
    model = OpticalParameters(system, ("mirrors", "pose", "focus"))
    x = torch.tensor([[0.1, -0.2, 0.25]], dtype=torch.float64)

    def f(tilt, shift, rot, focus):
        with torch.no_grad():
            model.mirror_tilt.copy_(tilt)
            model.mirror_shift.copy_(shift)
            model.pose_rotation.copy_(rot)
            model.focus.copy_(focus)
            return spot_centroids(model(), x, [1, 2], n_aperture=64)[0]

    params = [model.mirror_tilt, model.mirror_shift, model.pose_rotation, model.focus]
    c = spot_centroids(model(), x, [1, 2], n_aperture=64)[0]
    grads = torch.autograd.grad(c.sum(), params)
    eps = 1e-6
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        for i in range(min(p.numel(), 3)):
            args = [q.detach().clone() for q in params]
            args[k].view(-1)[i] += eps
            up = f(*args).sum()
            args[k].view(-1)[i] -= 2 * eps
            down = f(*args).sum()
            fd = float(up - down) / (2 * eps)
            assert fd == pytest.approx(float(g.reshape(-1)[i]), rel=1e-4, abs=1e-6), (k, i)
    assert math.isfinite(float(c.detach().sum()))
