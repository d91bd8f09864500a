import copy

import pytest
import torch

from optics.errors import ConfigError
from optics.system import load_system, save_system, system_from_dict
from tests.optics.helpers import system_dict

MIRROR = {"name": "m1", "center_mm": [0.0, 0.0, 20.0], "normal": [0.0, 0.0, -1.0],
          "shape": "circle", "radius_mm": 3.0, "reflectivity": 0.95}


def _mutate(path, value, *, delete=False):
    d = system_dict(mirrors=[dict(MIRROR)])
    node = d
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


@pytest.mark.parametrize(
    "path, value, delete, fragment",
    [
        (("cameras", 0, "lens", "f_number"), 0.0, False, "cameras[0].lens.f_number' must be > 0"),
        (("cameras", 0, "lens", "f_number"), -1.0, False, "must be > 0"),
        (("mirrors", 0, "normal"), [0.0, 0.0, 0.0], False, "mirrors[0].normal' must be a non-zero"),
        (("volume", "max_mm"), [-2.0, 1.2, 1.2], False, "inverted"),
        (("cameras", 0, "lens", "focal_lenght_mm"), 62.0, False, "focal_lenght_mm' is not known"),
        (("volume", "min_mm"), None, True, "volume.min_mm' is missing"),
        (("cameras", 0, "sensor", "width_px"), 9600.5, False, "must be an integer"),
        (("cameras", 0, "lens", "model"), "fisheye", False, "must be one of thin"),
        (("mirrors", 0, "radius_mm"), -2.5, False, "must be > 0"),
        (("mirrors", 0, "reflectivity"), 1.5, False, "must be in (0, 1]"),
        (("schema",), "recon.system/9", False, "schema"),
        (("cameras", 0, "pose", "up"), [0.0, 0.0, 1.0], False, "parallel"),
        (("cameras", 0, "sensor", "quantum_efficiency"), "high", False, "must be a number"),
    ],
)
def test_invalid_system_raises_config_error_naming_key(path, value, delete, fragment):
    with pytest.raises(ConfigError) as err:
        system_from_dict(_mutate(path, value, delete=delete), source="bad.toml")
    msg = str(err.value)
    assert "bad.toml" in msg and fragment in msg and "\n" not in msg


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_system(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_system(bad)


def test_round_trip_through_file(tmp_path):
    d = system_dict(mirrors=[dict(MIRROR)], windows=[{
        "name": "w", "center_mm": [0, 0, -100.0], "normal": [0, 0, 1.0], "thickness_mm": 6.35,
        "refractive_index": 1.46, "aperture_radius_mm": 35.0}])
    s = system_from_dict(copy.deepcopy(d), dtype=torch.float64)
    save_system(s, tmp_path / "s.toml", header="a test\nsecond line")
    s2 = load_system(tmp_path / "s.toml", dtype=torch.float64)
    assert torch.allclose(s.cameras[0].pose.rotation, s2.cameras[0].pose.rotation, atol=1e-12)
    assert torch.allclose(s.cameras[0].lens.focus_distance_mm, s2.cameras[0].lens.focus_distance_mm)
    assert s2.mirrors[0].name == "m1" and s2.windows[0].name == "w"
    assert (tmp_path / "s.toml").read_text().startswith("# a test\n# second line")


def test_default_instrument_loads():
    s = load_system("data/systems/magis_dome.toml")
    assert len(s.mirrors) >= 12 and s.n_paths == len(s.mirrors) + 1


def test_an_integer_beyond_float_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="cameras\\[0\\].lens.focal_length_mm"):
        system_from_dict(_mutate(("cameras", 0, "lens", "focal_length_mm"), 10**400), source="bad.toml")


def test_a_windows_mount_round_trips_and_must_not_be_inside_its_aperture(tmp_path):
    window = {"name": "w", "center_mm": [0, 0, -100.0], "normal": [0, 0, 1.0], "thickness_mm": 6.35,
              "refractive_index": 1.46, "aperture_radius_mm": 35.0, "mount_radius_mm": 80.0}
    s = system_from_dict(system_dict(windows=[dict(window)]), dtype=torch.float64)
    save_system(s, tmp_path / "s.toml")
    assert float(load_system(tmp_path / "s.toml").windows[0].mount_radius_mm) == 80.0
    flush = system_from_dict(system_dict(windows=[{**window, "mount_radius_mm": 35.0}]))
    assert float(flush.windows[0].mount_radius_mm) == 35.0
    with pytest.raises(ConfigError, match=r"windows\[0\].mount_radius_mm' must be ≥ aperture_radius_mm"):
        system_from_dict(system_dict(windows=[{**window, "mount_radius_mm": 20.0}]), source="bad.toml")


def _pose_of(pose: dict):
    d = system_dict()
    d["cameras"][0]["pose"] = pose
    return system_from_dict(d, dtype=torch.float64).cameras[0].pose.rotation


def test_euler_angles_and_quaternions_give_the_rotation_their_convention_states():
    import math

    # A camera looking along world +x, image up = world +z: camera x (right) = -y, y (down) = -z, z = +x.
    expected = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    look = _pose_of({"position_mm": [-300.0, 0, 0], "look_at_mm": [0, 0, 0], "up": [0, 0, 1.0]})
    torch.testing.assert_close(look, expected, atol=1e-12, rtol=0)
    # The same as Rz(γ) Ry(β) Rx(α): α = −90° about x turns the camera's z (forward) to world +y and
    # its y (down) to −z; then γ = −90° about z turns forward to +x and right to −y.
    euler = _pose_of({"position_mm": [-300.0, 0, 0], "euler_xyz_deg": [-90.0, 0.0, -90.0]})
    torch.testing.assert_close(euler, expected, atol=1e-12, rtol=0)
    # Its quaternion (w, x, y, z) = (1/2)(1, −1, 1, −1), given unnormalised.
    quat = _pose_of({"position_mm": [-300.0, 0, 0], "quaternion_wxyz": [2.0, -2.0, 2.0, -2.0]})
    torch.testing.assert_close(quat, expected, atol=1e-12, rtol=0)
    # Single angles are the textbook matrices.
    a = math.radians(30.0)
    ry = _pose_of({"position_mm": [0, 0, -300.0], "euler_xyz_deg": [0.0, 30.0, 0.0]})
    torch.testing.assert_close(ry, torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0],
                                                 [-math.sin(a), 0, math.cos(a)]], dtype=torch.float64))


@pytest.mark.parametrize(("pose", "fragment"), [
    ({"position_mm": [0, 0, -300.0], "euler_xyz_deg": [0, 0, 0], "look_at_mm": [0, 0, 0], "up": [0, 1.0, 0]},
     "cannot be combined with 'look_at_mm'"),
    ({"position_mm": [0, 0, -300.0], "quaternion_wxyz": [0, 0, 0, 0]}, "non-zero quaternion"),
    ({"position_mm": [0, 0, -300.0], "quaternion_wxyz": [1, 0, 0]}, "a list of 4 numbers"),
    ({"position_mm": [0, 0, -300.0], "euler_xyz_deg": [0, 0, 0], "up": [0, 1.0, 0]},
     "goes with 'look_at_mm'"),
    ({"position_mm": [0, 0, -300.0]}, "look_at_mm' is missing"),
])
def test_a_pose_with_no_or_two_orientations_is_refused_naming_the_key(pose, fragment):
    with pytest.raises(ConfigError, match=fragment):
        _pose_of(pose)


def test_the_principal_point_moves_the_optical_axis_on_the_sensor(tmp_path):
    from optics.trace import project_points

    d = system_dict()
    centred = system_from_dict(d, dtype=torch.float64)
    d["cameras"][0]["sensor"]["principal_point_px"] = [1010.5, 742.25]
    shifted = system_from_dict(d, dtype=torch.float64)
    assert centred.cameras[0].sensor.principal_point_px == (1000.0, 750.0)
    origin = torch.zeros(1, 3, dtype=torch.float64)
    uv0 = project_points(centred.cameras[0], origin)[0]
    uv1 = project_points(shifted.cameras[0], origin)[0]
    torch.testing.assert_close(uv1 - uv0, torch.tensor([[10.5, -7.75]], dtype=torch.float64))
    save_system(shifted, tmp_path / "s.toml")
    assert load_system(tmp_path / "s.toml").cameras[0].sensor.principal_point == (1010.5, 742.25)
    save_system(centred, tmp_path / "c.toml")
    assert "principal_point" not in (tmp_path / "c.toml").read_text()
    d["cameras"][0]["sensor"]["principal_point_px"] = [2500.0, 10.0]
    with pytest.raises(ConfigError, match="principal_point_px' must lie on the sensor"):
        system_from_dict(d)


def test_a_calibrated_sensitivity_scales_the_cameras_light_and_round_trips(tmp_path):
    from optics.project import aperture_pattern, trace_point_to_sensor
    from optics.trace import trace_pixels

    d = system_dict(mirrors=[dict(MIRROR)])
    plain = system_from_dict(d, dtype=torch.float64)
    d["cameras"][0]["sensor"]["sensitivity"] = 1.45  # QE × 1.45 exceeds 1: only this key can say it
    calibrated = system_from_dict(d, dtype=torch.float64)
    assert plain.cameras[0].sensor.sensitivity == 1.0
    uv = torch.tensor([[1000.0, 750.0], [1003.0, 741.0]], dtype=torch.float64)
    a, b = trace_pixels(plain, uv), trace_pixels(calibrated, uv)
    torch.testing.assert_close(b.weights, 1.45 * a.weights)
    torch.testing.assert_close(b.t_far, a.t_far)
    x = torch.tensor([[0.1, -0.2, 0.05]], dtype=torch.float64)
    flux = [float(trace_point_to_sensor(s, x, 0, aperture_pattern(40)).centroids()[1].sum())
            for s in (plain, calibrated)]
    assert flux[1] == pytest.approx(1.45 * flux[0], rel=1e-12)
    save_system(calibrated, tmp_path / "cal.toml")
    assert load_system(tmp_path / "cal.toml").cameras[0].sensor.sensitivity == 1.45
    save_system(plain, tmp_path / "plain.toml")
    assert "sensitivity" not in (tmp_path / "plain.toml").read_text()  # files without it unchanged
    for bad, fragment in ((0.0, "must be > 0"), (-2.0, "must be > 0"), ("x", "must be a number")):
        d["cameras"][0]["sensor"]["sensitivity"] = bad
        with pytest.raises(ConfigError, match=f"sensitivity' {fragment}"):
            system_from_dict(d, source="bad.toml")
