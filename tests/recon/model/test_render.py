"""The renderer: chords, analytic projections, photon conservation, the adjoint, gradcheck, strata."""

import math

import pytest
import torch
import torch.nn.functional as F

from optics.design import collected_fraction, design_dome, view_regions
from optics.trace import project_points, sample_pixel_samples, trace_pixels
from recon.model.render import RayBatch, compact_rays, line_integrals, render_pixels
from tests.optics.helpers import make_system

F64 = torch.float64


def gaussian(sigma, atoms=1.0, sigma_z=None):
    sz = sigma if sigma_z is None else sigma_z

    def density(p):
        norm = atoms / ((2 * math.pi) ** 1.5 * sigma * sigma * sz)
        return norm * torch.exp(
            -(p[..., 0] ** 2 + p[..., 1] ** 2) / (2 * sigma**2) - p[..., 2] ** 2 / (2 * sz**2)
        )

    return density


def pixel_grid(centre, half):
    u = torch.arange(centre[0] - half, centre[0] + half + 1, dtype=F64)
    v = torch.arange(centre[1] - half, centre[1] + half + 1, dtype=F64)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2)


def test_chord_length_through_uniform_sphere():
    radius = 0.8
    d = torch.linspace(0, 0.79, 12, dtype=F64)
    origins = torch.stack([torch.full_like(d, -2.0), d, torch.zeros_like(d)], -1)
    directions = torch.tensor([1.0, 0.0, 0.0], dtype=F64).expand(12, 3)
    rays = RayBatch(
        origins,
        directions,
        torch.ones(12, dtype=F64),
        torch.zeros(12, dtype=F64),
        torch.full((12,), 4.0, dtype=F64),
        torch.arange(12),
        torch.zeros(12, dtype=torch.long),
    )
    sphere = lambda p: (p.norm(dim=-1) <= radius).to(F64)  # noqa: E731
    got = line_integrals(sphere, rays, step_mm=1e-4, jitter=False)
    assert torch.allclose(got, 2 * torch.sqrt(radius**2 - d**2), atol=2e-4)


@pytest.mark.parametrize("model", ["pinhole", "telecentric", "thin"])
def test_gaussian_blob_image_equals_analytic_projection(model):
    lenses = {
        "pinhole": {"model": "pinhole", "focal_length_mm": 62.275, "f_number": 1.23, "magnification": 0.215},
        "thin": {"model": "thin", "focal_length_mm": 62.275, "f_number": 1.23, "magnification": 0.215},
        "telecentric": {
            "model": "telecentric",
            "f_number": 4.0,
            "magnification": 0.5,
            "working_distance_mm": 351.926,
        },
    }
    s = make_system(lens=lenses[model], half_z=0.1 if model == "thin" else 1.2)
    cam = s.cameras[0]
    sigma, atoms, y = 0.1, 1e6, 200.0
    # Flat along the axis so that the thin lens's depth of field does not blur it.
    density = gaussian(sigma, atoms, sigma_z=0.01 if model == "thin" else None)
    uv0, _ = project_points(cam, torch.zeros(1, 3, dtype=F64))
    uv = pixel_grid(uv0[0].round(), 30)
    n_samples = 16 if model == "thin" else 1
    sub, ap = sample_pixel_samples(
        len(uv), n_samples, generator=torch.Generator().manual_seed(0), jitter=False, dtype=F64
    )
    rays = compact_rays(trace_pixels(s, uv, subpixel=sub, aperture=ap))
    img = render_pixels(density, rays, len(uv), photons_per_atom=y, step_mm=0.0005, jitter=False)
    # Analytic: pixel weight × Y/4π × the projected Gaussian at the pixel's conjugate point.
    xy = cam.sensor.to_sensor_mm(uv)
    lens = cam.lens
    qe_area = cam.sensor.quantum_efficiency * cam.sensor.pixel_area_mm2
    if model == "telecentric":
        obj = xy / lens.magnification
        weight = qe_area * math.pi / (4 * lens.f_number**2)
    else:
        obj = xy / lens.magnification  # conjugate point on the plane of focus (= the origin plane)
        cos4 = (lens.image_distance_mm**2 / (lens.image_distance_mm**2 + (xy**2).sum(-1))) ** 2
        weight = qe_area * math.pi * lens.aperture_radius_mm**2 * cos4 / lens.image_distance_mm**2
    obj = obj * torch.tensor([-1.0, 1.0], dtype=F64)  # camera x is world −x in this set-up
    projected = atoms / (2 * math.pi * sigma**2) * torch.exp(-(obj**2).sum(-1) / (2 * sigma**2))
    expected = weight * y / (4 * math.pi) * projected
    err = (img - expected).abs().max() / expected.max()
    assert err < 0.01, float(err)


def test_total_photons_conserved_to_the_collected_fraction():
    s = design_dome().to(F64)
    atoms, y, sigma = 1e6, 200.0, 0.15
    for reg in view_regions(s)[:3]:
        x0, y0, w, h = reg.roi
        uv = pixel_grid(torch.tensor([x0 + w // 2, y0 + h // 2], dtype=F64), min(w, h) // 2 - 2)
        sub, ap = sample_pixel_samples(len(uv), 4, generator=torch.Generator().manual_seed(1), dtype=F64)
        rays = compact_rays(trace_pixels(s, uv, subpixel=sub, aperture=ap))
        total = render_pixels(gaussian(sigma, atoms), rays, len(uv), photons_per_atom=y, step_mm=0.03).sum()
        frac = collected_fraction(s, torch.zeros(3, dtype=F64), reg.path, n=20000)
        expected = atoms * y * s.cameras[0].sensor.quantum_efficiency * frac
        # Expected fraction ≈ 0.15 % (direct) and 0.11 % (each mirror) of all photons.
        assert 0.0009 < frac < 0.0017
        # The mirror views are in focus: their light falls inside this grid, and the window's focal
        # shift is in collected_fraction, so the renderer agrees to its sampling noise. The direct
        # view is 40 mm out of focus (a blur of ~370 px): 4 aperture samples a pixel over a square
        # grid inside its region sample its cone more coarsely (±1.5 % between grids and samples).
        tolerance = 0.02 if reg.path == 0 else 0.003
        assert abs(total.item() / expected - 1) < tolerance, (reg.name, total.item() / expected)


def _grid_density(values, half=1.2):
    def density(p):
        grid = (p / half).reshape(1, -1, 1, 1, 3).to(values.dtype)
        out = F.grid_sample(values[None, None], grid, align_corners=True, padding_mode="zeros")
        return out.reshape(p.shape[:-1])

    return density


def test_adjoint_identity():
    s = design_dome().to(F64)
    reg = view_regions(s)[3]
    x0, y0, w, h = reg.roi
    uv = pixel_grid(torch.tensor([x0 + w // 2, y0 + h // 2], dtype=F64), 20)
    rays = compact_rays(trace_pixels(s, uv))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 8, 8, dtype=F64, generator=g).requires_grad_(True)
    yv = torch.randn(len(uv), dtype=F64, generator=g)

    def forward(v):
        return render_pixels(_grid_density(v), rays, len(uv), step_mm=0.05, jitter=False)

    ax = forward(x)
    (aty,) = torch.autograd.grad((ax * yv).sum(), x)
    lhs = (forward(x.detach()) * yv).sum()
    rhs = (x.detach() * aty).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10)
    # and with a different x (linearity: Aᵀy does not depend on x)
    x2 = torch.rand(8, 8, 8, dtype=F64, generator=g)
    assert torch.allclose((forward(x2) * yv).sum(), (x2 * aty).sum(), rtol=1e-10)


def test_gradcheck_renderer_density_and_mirror():
    from dataclasses import replace

    s = design_dome().to(F64)
    reg = view_regions(s)[2]
    x0, y0, w, h = reg.roi
    uv = torch.tensor([[x0 + w / 2, y0 + h / 2], [x0 + w / 2.5, y0 + h / 2]], dtype=F64)
    k = reg.path - 1

    def fn(values, centre):
        mirrors = list(s.mirrors)
        mirrors[k] = replace(mirrors[k], center_mm=centre)
        rays = compact_rays(trace_pixels(replace(s, mirrors=tuple(mirrors)), uv))
        return render_pixels(_grid_density(values), rays, 2, step_mm=0.2, jitter=False)

    values = torch.rand(4, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    centre = s.mirrors[k].center_mm.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (values, centre), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_emission_absorption_thin_limit_and_opaque_limit():
    d = torch.zeros(1, dtype=F64)
    rays = RayBatch(
        torch.tensor([[-2.0, 0.0, 0.0]], dtype=F64),
        torch.tensor([[1.0, 0.0, 0.0]], dtype=F64),
        torch.ones(1, dtype=F64),
        d,
        torch.full((1,), 4.0, dtype=F64),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
    )
    sphere = lambda scale: lambda p: scale * (p.norm(dim=-1) <= 0.5).to(F64)  # noqa: E731
    thin = line_integrals(sphere(1e-3), rays, model="emission-absorption", step_mm=1e-3, jitter=False)
    assert abs(thin.item() - 1e-3) / 1e-3 < 1e-3
    opaque = line_integrals(sphere(100.0), rays, model="emission-absorption", step_mm=1e-3, jitter=False)
    assert abs(opaque.item() - 1.0) < 1e-6  # saturates at 1/attenuation


def _segments(lengths, dtype=F64):
    n = len(lengths)
    return RayBatch(
        torch.tensor([[-2.0, 0.1 * i, 0.0] for i in range(n)], dtype=dtype),
        torch.tensor([[1.0, 0.0, 0.0]], dtype=dtype).expand(n, 3),
        torch.ones(n, dtype=dtype),
        torch.full((n,), 0.5, dtype=dtype),
        0.5 + torch.tensor(lengths, dtype=dtype),
        torch.arange(n),
        torch.zeros(n, dtype=torch.long),
    )


def test_each_segment_gets_its_own_strata():
    # Segments of very different lengths: every one is split into ceil(length / step) strata,
    # so the density is evaluated sum(ceil(l / step)) times, not n · ceil(max / step).
    lengths = [0.01, 0.25, 1.0, 3.3]
    rays = _segments(lengths)
    calls = []

    def linear(p):
        calls.append(p.shape[0])
        return 2.0 + p[..., 0]  # exactly integrated by the midpoint rule

    got = line_integrals(linear, rays, step_mm=0.1, jitter=False)
    assert sum(calls) == sum(math.ceil(v / 0.1 - 1e-9) for v in lengths)
    t0, t1 = rays.t_near, rays.t_far
    x0, x1 = -2.0 + t0, -2.0 + t1
    expected = 2.0 * (t1 - t0) + 0.5 * (x1**2 - x0**2)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_jittered_strata_are_unbiased_for_each_segment():
    rays = _segments([0.05, 0.7, 2.0])
    quad = lambda p: (p[..., 0] + 1.0) ** 2  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    mean = torch.stack([line_integrals(quad, rays, step_mm=0.3, generator=gen) for _ in range(4000)]).mean(0)
    x0, x1 = -2.0 + rays.t_near, -2.0 + rays.t_far
    exact = ((x1 + 1.0) ** 3 - (x0 + 1.0) ** 3) / 3.0
    torch.testing.assert_close(mean, exact, rtol=5e-3, atol=1e-4)


def test_segment_lengths_stay_differentiable():
    rays = _segments([0.3, 1.7])
    t_far = rays.t_far.clone().requires_grad_(True)
    moved = RayBatch(rays.origins, rays.directions, rays.weights, rays.t_near, t_far, rays.pixel, rays.path)
    line_integrals(lambda p: torch.ones_like(p[..., 0]), moved, step_mm=0.1, jitter=False).sum().backward()
    torch.testing.assert_close(t_far.grad, torch.ones(2, dtype=F64))  # d(length)/d(t_far) = 1
