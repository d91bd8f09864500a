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
