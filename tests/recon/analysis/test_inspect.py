"""Per-view statistics of a run: they match the construction; dark-frame read noise; warnings."""

import math

import numpy as np
import pytest
import torch

from recon.analysis.inspect import ViewStats, inspect_run, view_stats
from recon.errors import ConfigError
from recon.io.run import load_run
from recon.io.runspec import RunSpec, ViewSpec
from recon.io.runwriter import write_run
from recon.io.sensor import SensorSpec
from tests.recon.analysis.spots import SENSOR, gaussian_spot


def test_statistics_match_the_construction(run):
    stats = inspect_run(run)
    a, b = stats
    assert isinstance(a, ViewStats) and a.name == "a" and a.frames == 2 and a.roi == (0, 0, 32, 32)
    assert a.background_e == pytest.approx(5.0, abs=1e-3)
    assert a.signal_e == pytest.approx(2000.0, rel=1e-4)
    assert a.min_e == pytest.approx(5.0, abs=1e-3)
    assert a.max_e == pytest.approx(5.0 + gaussian_spot(32, 32, 2000.0).max())
    assert a.mean_e == pytest.approx(5.0 + 2000.0 / 32**2, rel=1e-5)
    noise = math.sqrt(5.0 * 32 * 32 + 2000.0 + 32 * 32 * 9.0)
    assert a.snr == pytest.approx(2000.0 / noise, rel=1e-4)
    assert a.saturated_fraction == 0 and a.masked_fraction == 0 and a.warnings == ()
    assert b.saturated_fraction == pytest.approx(2 / (2 * 24 * 40))
    assert b.masked_fraction == b.saturated_fraction
    assert any("saturated" in w for w in b.warnings)
    assert b.to_dict()["roi"] == [60, 10, 40, 24]


def test_read_noise_of_the_dark_frame_counts(tmp_path):
    frames = np.full((1, 16, 16), 110, np.uint16)
    frames[0, 6:10, 6:10] = 160
    spec = RunSpec("s.toml", (ViewSpec("a", 0, (0, 0, 16, 16)),))
    dark = np.full((4, 16, 16), 100, np.uint16)
    loaded = load_run(write_run(tmp_path / "r", spec, frames={"a": frames}, darks={"a": dark}), SENSOR)
    s = view_stats(loaded.views[0], SENSOR)
    var_read = 9.0 * (1 + 1 / 4)
    assert s.snr == pytest.approx(16 * 50 / math.sqrt(16 * 16 * 10 + 16 * 50 + 256 * var_read))


def test_low_snr_warning_and_sensor_lookup(run):
    noisy = SensorSpec(1.0, 100.0, 12, read_noise_e=500.0)
    stats = inspect_run(run, noisy)
    assert all(any("SNR" in w for w in s.warnings) for s in stats)
    assert inspect_run(run, [noisy])[0].snr == stats[0].snr
    with pytest.raises(ConfigError, match="no sensor numbers for camera 0"):
        inspect_run(run, {1: noisy})


def test_view_without_usable_border_uses_the_median(run):
    v = run.views[0]
    mask = torch.zeros_like(v.mask)
    mask[:, 10:20, 10:20] = True
    from dataclasses import replace

    s = view_stats(replace(v, mask=mask, electrons=v.electrons * mask), SENSOR)
    assert math.isfinite(s.background_e) and s.masked_fraction == pytest.approx(1 - 100 / 1024)
