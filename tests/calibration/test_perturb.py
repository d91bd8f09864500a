import math

import pytest
import torch

from calibration.perturb import in_plane_axes, mirror_errors, perturb_system, tilt_normal
from optics.design import design_dome
from optics.errors import ConfigError
from optics.rays import dot


def test_tilt_normal_turns_by_the_tilt_angle_about_an_in_plane_axis():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
        tilt = torch.randn(2, generator=gen, dtype=torch.float64) * 0.05
        u, v = in_plane_axes(n)
        assert abs(float(dot(u, n))) < 1e-12 and abs(float(dot(v, n))) < 1e-12
        assert torch.allclose(torch.cross(u, v, dim=-1), n, atol=1e-12)
        m = tilt_normal(n, tilt)
        assert float(m.norm()) == pytest.approx(1.0, abs=1e-12)
        angle = math.acos(max(-1.0, min(1.0, float(dot(m, n)))))
        assert angle == pytest.approx(float(tilt.norm()), rel=1e-9)
        # the rotation axis a·u + b·v is perpendicular to both normals
        axis = tilt[0] * u + tilt[1] * v
        assert abs(float(dot(axis, m))) < 1e-12
    assert torch.equal(tilt_normal(n, torch.zeros(2, dtype=torch.float64)), n)


def test_perturbation_statistics_and_reported_errors():
    nominal = design_dome()
    p = perturb_system(nominal, tilt_deg=0.5, shift_um=50.0, seed=3)
    again = perturb_system(nominal, tilt_deg=0.5, shift_um=50.0, seed=3)
    assert all(
        torch.equal(a.normal, b.normal) and torch.equal(a.center_mm, b.center_mm)
        for a, b in zip(p.mirrors, again.mirrors, strict=True)
    )
    err = mirror_errors(nominal, p)
    # each tilt is the norm of two N(0, σ) angles: RMS √2 σ (14 mirrors: loose bounds)
    assert 0.35 < err.tilt_rms_deg < 1.1
    # offset along the normal = n̂_nominal · Δc exactly (the nominal plane is the estimate here)
    for m0, m1, s in zip(nominal.mirrors, p.mirrors, err.normal_shift_um, strict=True):
        n0 = m0.normal / m0.normal.norm()
        assert s == pytest.approx(float(dot(n0, m1.center_mm - m0.center_mm)) * 1e3, abs=1e-9)
    assert 15.0 < err.shift_rms_um < 100.0
    assert err.shift_rms_relative_um <= err.shift_rms_um + 1e-12
    other = perturb_system(nominal, tilt_deg=0.5, shift_um=50.0, seed=4)
    assert not torch.equal(other.mirrors[0].normal, p.mirrors[0].normal)
    same = mirror_errors(p, p)
    assert same.tilt_rms_deg < 1e-6 and same.shift_rms_um < 1e-9
    assert "perturbed" in p.description


def test_zero_perturbation_is_the_identity_and_bad_sigma_is_an_error():
    nominal = design_dome()
    p = perturb_system(nominal, tilt_deg=0.0, shift_um=0.0, seed=1)
    for a, b in zip(nominal.mirrors, p.mirrors, strict=True):
        assert torch.allclose(a.normal, b.normal, atol=1e-15) and torch.equal(a.center_mm, b.center_mm)
    with pytest.raises(ConfigError, match="tilt-deg"):
        perturb_system(nominal, tilt_deg=-1.0, shift_um=0.0, seed=1)
    for tilt, shift in ((0.5, 1e308), (0.5, 1.01e5), (31.0, 50.0)):
        with pytest.raises(ConfigError, match="must be at most 30° and 100000 µm"):
            perturb_system(nominal, tilt_deg=tilt, shift_um=shift, seed=1)
    from dataclasses import replace

    with pytest.raises(ConfigError, match="no mirrors"):
        perturb_system(replace(nominal, mirrors=()), tilt_deg=0.1, shift_um=1.0, seed=1)


def test_a_seed_beyond_64_bits_is_a_config_error():
    with pytest.raises(ConfigError, match="seed"):
        perturb_system(design_dome(), tilt_deg=0.5, shift_um=50.0, seed=2**70)
