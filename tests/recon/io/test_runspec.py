"""run.toml: every bad key and value gives a one-line error; sizes are checked against the sensors."""

import pytest

from recon.errors import ConfigError, DataError
from recon.io.run import load_run
from tests.recon.io.runs import SENSOR, assert_raises, edit_run, make_spec


@pytest.mark.parametrize(
    "mutate, error, fragment",
    [
        (lambda s: s.pop("views"), ConfigError, "key 'views' is missing"),
        (lambda s: s.pop("schema"), ConfigError, "key 'schema' is missing"),
        (lambda s: s.pop("system"), ConfigError, "key 'system' is missing"),
        (lambda s: s.update(colour="red"), ConfigError, "key 'colour' is not known"),
        (lambda s: s.update(frame="x.tif"), ConfigError, "key 'frame' is not known (did you mean 'frames'?)"),
        (lambda s: s["views"][0].update(cam=0), ConfigError, "key 'views[0].cam' is not known"),
        (lambda s: s.update(truth={"volumes": "t.tif"}), ConfigError, "key 'truth.volumes' is not known"),
        (lambda s: s.update(truth="t.tif"), ConfigError, "key 'truth' must be a table"),
        (lambda s: s.update(photons_per_atom="many"), ConfigError, "key 'photons_per_atom' must be a number"),
        (lambda s: s.update(photons_per_atom=-3.0), ConfigError, "key 'photons_per_atom' must be > 0"),
        (lambda s: s.update(exposure_s=0), ConfigError, "key 'exposure_s' must be > 0"),
        (lambda s: s.update(photons_per_atom=1e-30), ConfigError, "= 1e-30 is not a physical"),
        (lambda s: s["views"][0].update(name="x/../../escape"), ConfigError, "cannot name an output file"),
        (lambda s: s["views"][0].update(name=".."), ConfigError, "cannot name an output file"),
        (lambda s: s["views"][0].update(name=".hidden"), ConfigError, "cannot name an output file"),
        (lambda s: s["views"][0].update(name="a b"), ConfigError, "cannot name an output file"),
        (lambda s: s["views"][0].update(name="c:\\x"), ConfigError, "cannot name an output file"),
        (lambda s: s["views"][0].update(name="v" * 65), ConfigError, "cannot name an output file"),
        (lambda s: s.update(description=3), ConfigError, "key 'description' must be a string"),
        (lambda s: s.update(system=7), ConfigError, "key 'system' must be a non-empty string"),
        (lambda s: s.update(views={"name": "x"}), ConfigError, "'views' must be an array of tables"),
        (lambda s: s["views"][0].pop("name"), ConfigError, "key 'views[0].name' is missing"),
        (lambda s: s["views"][0].pop("roi"), ConfigError, "key 'views[0].roi' is missing"),
        (lambda s: s["views"][0].update(roi=[0, 0, 10]), ConfigError, "'views[0].roi' must be 4 integers"),
        (lambda s: s["views"][0].update(roi=[0, 0, 1.5, 4]), ConfigError, "'views[0].roi' must be 4 int"),
        (lambda s: s["views"][0].update(roi=[0, 0, 0, 4]), ConfigError, "non-positive size"),
        (lambda s: s["views"][0].update(roi=[-1, 0, 20, 16]), ConfigError, "x0 and y0 must be ≥ 0"),
        (lambda s: s["views"][0].update(camera=-1), ConfigError, "'views[0].camera' must be an integer ≥ 0"),
        (lambda s: s["views"][1].update(roi=[60, 30, 12, 10]), ConfigError, "outside the 64×48 sensor"),
        (lambda s: s["views"][1].update(name="direct"), ConfigError, "view name 'direct' appears twice"),
        (lambda s: s.update(schema="recon.run/7"), ConfigError, "expected 'recon.run/1'"),
        (lambda s: s["views"][0].pop("frames"), ConfigError, "view 'direct' has no 'frames'"),
        (lambda s: s["views"][0].update(roi=[10, 8, 5, 5]), DataError, "but its roi is 5×5"),
        (lambda s: s["views"][0].update(dark="views/m1_dark.tif"), DataError, "dark"),
        (lambda s: s["views"][0].update(frames="views/missing.tif"), DataError, "does not exist"),
    ],
)
def test_bad_run_toml(run_dir, mutate, error, fragment):
    edit_run(run_dir, mutate)
    msg = assert_raises(error, fragment, load_run, run_dir, SENSOR)
    assert "run.toml" in msg or "views" in msg


def test_validate_against_sensor_sizes():
    spec = make_spec()
    spec.validate_against((64, 48))
    spec.validate_against([SENSOR])
    spec.validate_against({0: (64, 48)})
    assert_raises(ConfigError, "lies outside the 50×40 sensor of camera 0", spec.validate_against, (50, 40))
    assert_raises(ConfigError, "'views[0].camera' is 0, but the system has 1", spec.validate_against,
                  {1: (64, 48)})


def test_an_integer_beyond_float_is_a_config_error(run_dir):
    edit_run(run_dir, lambda s: s.update(photons_per_atom=10**400))
    assert_raises(ConfigError, "'photons_per_atom'", load_run, run_dir, SENSOR)


@pytest.mark.parametrize("name", ["direct", "r1m01", "cam-2.b", "A+B_3", "v" * 64])
def test_view_names_that_can_name_files_are_accepted(run_dir, name):
    edit_run(run_dir, lambda s: s["views"][0].update(name=name))
    assert load_run(run_dir, SENSOR).views[0].name == name


def test_an_unknown_key_with_a_newline_is_still_one_line(run_dir):
    edit_run(run_dir, lambda s: s["views"][0].update({"\n": 1}))
    msg = assert_raises(ConfigError, "is not known", load_run, run_dir, SENSOR)
    assert "\n" not in msg and "'views[0].\\n'" in msg
