"""Small run specs and frames shared by the run tests."""

import numpy as np
import pytest
import tomli_w
import tomllib

from recon.io.runspec import RunSpec, ViewSpec
from recon.io.sensor import SensorSpec

SENSOR = SensorSpec(gain_e_per_adu=2.0, offset_adu=100.0, bit_depth=12, read_noise_e=2.0,
                    width_px=64, height_px=48)


ROIS = {"direct": (10, 8, 20, 16), "m1": (40, 30, 12, 10)}


def make_frames(roi, k=2, seed=0):
    x0, y0, w, h = roi
    rng = np.random.default_rng(seed)
    return rng.integers(100, 400, size=(k, h, w)).astype(np.uint16)


def make_spec(**extra):
    views = [ViewSpec(name, 0, roi) for name, roi in ROIS.items()]
    return RunSpec("system.toml", tuple(views), photons_per_atom=200.0, description="test run", **extra)


def edit_run(run, fn):
    spec = tomllib.loads((run / "run.toml").read_text())
    fn(spec)
    (run / "run.toml").write_text(tomli_w.dumps(spec))


def assert_raises(error, fragment, fn, *args, **kwargs):
    with pytest.raises(error) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message
    return message
