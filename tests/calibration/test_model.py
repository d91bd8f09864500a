import pytest
import torch

from calibration.model import OpticalParameters, PriorConfig, parse_fit_groups
from optics.errors import ConfigError
from tests.calibration.conftest import small_dome


def test_zero_corrections_give_the_nominal_instrument():
    nominal = small_dome()
    model = OpticalParameters(nominal, ("mirrors", "pose", "focus", "distortion"))
    s = model()
    for a, b in zip(nominal.mirrors, s.mirrors, strict=True):
        assert torch.allclose(a.normal / a.normal.norm(), b.normal, atol=1e-14)
        assert torch.allclose(a.center_mm, b.center_mm, atol=1e-14)
    cam0, cam = nominal.cameras[0], s.cameras[0]
    assert torch.allclose(cam0.pose.rotation, cam.pose.rotation, atol=1e-14)
    assert torch.equal(cam0.pose.position_mm, cam.pose.position_mm)
    assert torch.equal(cam.lens.distortion, torch.zeros(8, dtype=torch.float64))
    assert float(model.prior_loss().detach()) == 0.0
    assert model.n_free() == 4 * 3 + 6 + 1 + 4


def test_only_the_chosen_groups_learn_and_corrections_have_their_units():
    nominal = small_dome()
    model = OpticalParameters(nominal, ("mirrors",), prior=PriorConfig(tilt_deg=1.0, shift_mm=0.1))
    assert model.mirror_tilt.requires_grad and not model.pose_rotation.requires_grad
    with torch.no_grad():
        model.mirror_tilt[1] = torch.tensor([0.5, 0.0])  # 0.5 σ = 0.5°
        model.mirror_shift[2] = 2.0  # 2 σ = 0.2 mm
    with torch.no_grad():
        s = model()
    n0 = nominal.mirrors[1].normal / nominal.mirrors[1].normal.norm()
    angle = torch.rad2deg(torch.arccos((s.mirrors[1].normal * n0).sum().clamp(max=1.0)))
    assert float(angle) == pytest.approx(0.5, rel=1e-9)
    n2 = nominal.mirrors[2].normal / nominal.mirrors[2].normal.norm()
    assert float(((s.mirrors[2].center_mm - nominal.mirrors[2].center_mm) * n2).sum()) == pytest.approx(0.2)
    assert float(model.prior_loss().detach()) == pytest.approx(0.5 * (0.25 + 4.0))
    ch = model.changes()
    assert ch["mirrors"][2]["normal_shift_um"] == pytest.approx(200.0)
    assert ch["mirrors"][1]["tilt_deg"] == pytest.approx(0.5)
    # a common offset is invisible with fix_mean_shift (the gauge of unknown positions)
    gauge = OpticalParameters(nominal, ("mirrors",), fix_mean_shift=True)
    with torch.no_grad():
        gauge.mirror_shift.fill_(3.0)
    assert torch.allclose(gauge.shifts_mm(), torch.zeros(4, dtype=torch.float64))


def test_pose_and_focus_corrections_move_the_camera():
    nominal = small_dome()
    model = OpticalParameters(nominal, ("pose", "focus"), prior=PriorConfig(position_mm=1.0, focus_mm=1.0))
    with torch.no_grad():
        model.pose_position.copy_(torch.tensor([0.0, 0.0, 1.5]))
        model.pose_rotation.copy_(torch.tensor([0.0, 0.0, 2.0]))  # 2° about the optical axis
        model.focus.fill_(-0.5)
    with torch.no_grad():
        cam = model().cameras[0]
    r = cam.pose.rotation
    assert torch.allclose(r.T @ r, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert float(torch.linalg.det(r)) == pytest.approx(1.0)
    axis0 = nominal.cameras[0].pose.rotation[:, 2]
    assert torch.allclose(r[:, 2], axis0, atol=1e-12)  # a roll keeps the optical axis
    assert float(cam.pose.position_mm[2] - nominal.cameras[0].pose.position_mm[2]) == pytest.approx(1.5)
    assert float(cam.lens.focus_distance_mm - nominal.cameras[0].lens.focus_distance_mm) == pytest.approx(
        -0.5
    )


def test_fit_groups_parse_and_bad_values_raise():
    assert parse_fit_groups("mirrors, pose,mirrors") == ("mirrors", "pose")
    with pytest.raises(ConfigError, match="mirrors"):
        parse_fit_groups("mirrors,lens")
    with pytest.raises(ConfigError):
        parse_fit_groups("")
    with pytest.raises(ConfigError, match="σ > 0"):
        OpticalParameters(small_dome(), ("mirrors",), prior=PriorConfig(tilt_deg=0.0))


def test_calibration_all_names_resolve_and_no_recon_import():
    import subprocess
    import sys

    import calibration

    for name in calibration.__all__:
        assert hasattr(calibration, name), name
    code = "import sys, calibration; print(any(m == 'recon' or m.startswith('recon.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # calibration depends on optics only
