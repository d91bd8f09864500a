"""Loading runs: round trips, frame kinds, masks, damaged frames, sensors per camera, the sample run."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tomllib
import torch

from recon.errors import ConfigError, DataError
from recon.io.run import load_run
from recon.io.runspec import RunSpec, TruthSpec, ViewSpec, read_run_spec
from recon.io.runwriter import write_run
from recon.io.sensor import SensorSpec
from recon.io.volume import read_volume
from recon.simulation.phantom_file import load_phantom
from recon.simulation.truth import truth_volume
from tests.recon.io.runs import ROIS, SENSOR, assert_raises, edit_run, make_frames, make_spec


def test_write_then_load_round_trips(tmp_path):
    frames = {name: make_frames(roi, seed=i) for i, (name, roi) in enumerate(ROIS.items())}
    darks = {"direct": np.full((3, 16, 20), 98, np.uint16)}
    darks["direct"][1] = 104  # mean 100
    ph = load_phantom("gaussian", atoms=1e4)
    truth = truth_volume(ph, (-1, -1, -1), (1, 1, 1), 0.25)
    spec = make_spec(truth=TruthSpec("truth.tif", "phantom.json"), exposure_s=0.001)
    out = write_run(tmp_path / "sim", spec, frames=frames, darks=darks, volumes={"truth.tif": truth},
                    extra_files={"phantom.json": json.dumps(ph.to_dict()), "system.toml": b"x = 1\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim"]  # nothing partial left
    run = load_run(out, SENSOR)
    assert run.spec == read_run_spec(out) and run.name == "sim" and run.system is None
    assert run.photons_per_atom == 200.0 and run.exposure_s == 0.001 and run.density_unit == "atoms/mm^3"
    assert run.system_path == out / "system.toml" and run.truth_volume == out / "truth.tif"
    assert read_volume(run.truth_volume).shape == truth.shape
    assert json.loads(run.truth_phantom.read_text())["name"] == "gaussian"
    d, m = run.view("direct"), run.view("m1")
    assert d.electrons.dtype == torch.float32 and d.electrons.shape == (2, 16, 20) == d.mask.shape
    assert torch.equal(d.electrons, torch.from_numpy((frames["direct"].astype(np.float32) - 100.0) * 2.0))
    assert torch.equal(m.electrons, torch.from_numpy((frames["m1"].astype(np.float32) - 100.0) * 2.0))
    assert d.dark_pages == 3 and m.dark_pages == 0 and d.mask.all() and m.mask.all()
    assert d.frames_path == out / "views" / "direct.tif" and d.dark_path == out / "views" / "direct_dark.tif"
    uv = m.pixel_coords()
    assert uv.shape == (10, 12, 2) and uv[0, 0].tolist() == [40.0, 30.0]
    assert uv[-1, -1].tolist() == [51.0, 39.0]
    assert uv[0, 1].tolist() == [41.0, 30.0]  # u = column runs along the last axis


def test_float_frames_and_full_sensor_frames(tmp_path):
    full = np.full((1, 48, 64), 100.0, np.float32)
    full[0, 8:24, 10:30] = 130.0
    full[0, 30:40, 40:52] = 150.5
    dark = np.full((48, 64), 100, np.uint16)
    spec = RunSpec("system.toml", tuple(ViewSpec(n, 0, r) for n, r in ROIS.items()), frames="full.tif",
                   dark="full_dark.tif")
    out = write_run(tmp_path / "full", spec, files={"full.tif": full, "full_dark.tif": dark})
    run = load_run(out, SENSOR)
    assert run.photons_per_atom is None and run.density_unit == "relative"
    assert torch.equal(run.view("direct").electrons, torch.full((1, 16, 20), 60.0))
    assert torch.equal(run.view("m1").electrons, torch.full((1, 10, 12), 101.0))
    assert run.view("m1").dark_pages == 1
    # a view's own frames win over the full-sensor frames
    own = np.full((1, 10, 12), 110, np.uint16)
    tifffile.imwrite(out / "m1.tif", own)
    edit_run(out, lambda s: s["views"][1].update(frames="m1.tif"))
    assert torch.equal(load_run(out, SENSOR).view("m1").electrons, torch.full((1, 10, 12), 20.0))


def test_masks_saturation_nan_clipping_and_bad_dark(tmp_path):
    frames = np.full((2, 16, 20), 150.0, np.float32)
    frames[0, 0, 0] = np.nan  # dead pixel
    frames[1, 1, 1] = 4095.0  # saturated
    ints = np.full((1, 10, 12), 150, np.uint16)
    ints[0, 2, 2] = 0  # clipped at the bottom of the ADC (offset 100)
    dark = np.full((2, 10, 12), 100, np.uint16)
    dark[1, 3, 3] = 4095  # saturated in a dark page
    spec = RunSpec("s.toml", (ViewSpec("direct", 0, ROIS["direct"]), ViewSpec("m1", 0, ROIS["m1"])))
    out = write_run(tmp_path / "r", spec, frames={"direct": frames, "m1": np.repeat(ints, 2, 0)},
                    darks={"m1": dark})
    run = load_run(out, SENSOR)
    d, m = run.view("direct"), run.view("m1")
    assert not d.mask[0, 0, 0] and not d.mask[1, 1, 1] and int((~d.mask).sum()) == 2
    assert d.electrons[0, 0, 0] == 0 and torch.isfinite(d.electrons).all()
    assert d.saturated[1, 1, 1] and int(d.saturated.sum()) == 1
    assert not m.mask[0, 2, 2] and not m.mask[:, 3, 3].any() and int((~m.mask).sum()) == 4
    # the clipped value is censored, not lost: below 0.5 ADU of the frame's own signal; the dark
    # subtraction's excess over the offset (dark 100 = the offset here) is 0
    assert m.censored is not None and bool(m.censored[:, 2, 2].all()) and int(m.censored.sum()) == 2
    assert torch.equal(m.censor_e, torch.full((10, 12), (0.5 - 100.0) * 2.0))
    assert float(m.censor_shift[2, 2]) == 0.0 and m.dark_clipped == 0.0
    assert d.censored is None and d.censor_e is None  # float frames never clip


def test_a_dark_frame_clipped_at_0_is_said_and_shifts_the_censored_bound(tmp_path):
    from recon.analysis.inspect import view_stats

    frames = np.full((1, 10, 12), 5, np.uint8)
    frames[0, 0, :4] = 0
    dark = np.full((1, 10, 12), 3, np.uint8)
    dark[0, 5, :3] = 0  # a clipping camera's dark frame
    spec = RunSpec("s.toml", (ViewSpec("m1", 0, ROIS["m1"]),))
    out = write_run(tmp_path / "r", spec, frames={"m1": frames}, darks={"m1": dark})
    eight = SensorSpec(gain_e_per_adu=1.5, offset_adu=2.0, bit_depth=8, read_noise_e=2.0, width_px=64,
                       height_px=48)
    view = load_run(out, eight).view("m1")
    assert int(view.censored.sum()) == 4 and view.dark_clipped == pytest.approx(3 / 120)
    assert torch.equal(view.censor_e, torch.full((10, 12), (0.5 - 2.0) * 1.5))
    assert float(view.censor_shift[1, 1]) == pytest.approx((3 - 2.0) * 1.5)  # (dark − offset) · gain
    assert float(view.censor_shift[5, 0]) == pytest.approx((0 - 2.0) * 1.5)
    warnings = view_stats(view, eight).warnings
    assert any("dark frame is clipped at 0 ADU in 2%" in w and "offset_adu" in w for w in warnings)


def test_truncated_frames(run_dir):
    frames = run_dir / "views" / "direct.tif"
    frames.write_bytes(frames.read_bytes()[:300])
    msg = assert_raises(DataError, "is the file complete?", load_run, run_dir, SENSOR)
    assert str(frames) in msg


def test_bad_frames_in_a_run(run_dir):
    frames = run_dir / "views" / "direct.tif"
    tifffile.imwrite(frames, np.zeros((2, 16, 20), np.uint16))
    assert_raises(DataError, "all pixels of", load_run, run_dir, SENSOR)
    tifffile.imwrite(frames, np.full((2, 16, 20), 4095, np.uint16))
    assert_raises(DataError, "every pixel of", load_run, run_dir, SENSOR)
    tifffile.imwrite(frames, np.full((3, 16, 20), 200, np.uint16), photometric="minisblack")
    assert_raises(DataError, "different numbers of shots (direct: 3, m1: 2)", load_run, run_dir, SENSOR)
    tifffile.imwrite(frames, np.full((2, 16, 20), 200, np.uint8))
    assert_raises(DataError, "too narrow for the 12-bit sensor", load_run, run_dir, SENSOR)


def test_full_sensor_frames_of_the_wrong_size(tmp_path):
    spec = RunSpec("s.toml", (ViewSpec("direct", 0, ROIS["direct"]),), frames="full.tif")
    out = write_run(tmp_path / "r", spec, files={"full.tif": np.full((1, 40, 64), 150, np.uint16)})
    assert_raises(DataError, "not the full 48×64 sensor", load_run, out, SENSOR)
    sizeless = SensorSpec(2.0, 100.0, 12)
    run = load_run(out, sizeless)  # sizes unknown: only the crop must fit
    assert run.view("direct").electrons.shape == (1, 16, 20)
    edit_run(out, lambda s: s["views"][0].update(roi=[10, 30, 20, 16]))
    assert_raises(DataError, "lies outside the 64×40 (w×h) frames", load_run, out, sizeless)


def test_missing_run_and_invalid_toml(tmp_path, run_dir):
    assert_raises(ConfigError, "does not exist", load_run, tmp_path / "nowhere", SENSOR)
    (tmp_path / "empty").mkdir()
    assert_raises(ConfigError, "holds no run.toml", load_run, tmp_path / "empty", SENSOR)
    (run_dir / "run.toml").write_text("schema = ")
    assert_raises(ConfigError, "not valid TOML", load_run, run_dir, SENSOR)


def test_sensors_per_camera(tmp_path):
    views = (ViewSpec("a", 0, (0, 0, 4, 4)), ViewSpec("b", 1, (0, 0, 4, 4)))
    frames = {"a": np.full((1, 4, 4), 110, np.uint16), "b": np.full((1, 4, 4), 110, np.uint16)}
    out = write_run(tmp_path / "r", RunSpec("s.toml", views), frames=frames)
    run = load_run(out, [SENSOR, SensorSpec(1.0, 10.0, 16)])
    assert run.view("a").electrons[0, 0, 0] == 20.0 and run.view("b").electrons[0, 0, 0] == 100.0
    assert_raises(ConfigError, "'views[1].camera' is 1, but the system has 1", load_run, out, [SENSOR])
    assert_raises(ConfigError, "'views[0].roi' [0, 0, 4, 4] lies outside the 3×3 sensor", load_run, out,
            {0: SensorSpec(1.0, 0.0, 16, width_px=3, height_px=3), 1: SENSOR})


def test_torch_arrays_are_accepted(tmp_path):
    adu = torch.full((2, 16, 20), 130, dtype=torch.uint16)
    out = write_run(tmp_path / "t", RunSpec("s.toml", (ViewSpec("direct", 0, ROIS["direct"]),)),
                    frames={"direct": adu})
    assert tifffile.imread(out / "views" / "direct.tif").dtype == np.uint16
    assert torch.equal(load_run(out, SENSOR).view("direct").electrons, torch.full((2, 16, 20), 60.0))


def test_the_sample_run_loads():
    run042 = Path(__file__).resolve().parents[3] / "data" / "run042"
    if not (run042 / "run.toml").is_file():
        pytest.skip("data/run042 not present")
    system = tomllib.loads((run042 / "system.toml").read_text())
    numbers = system["cameras"][0]["sensor"]
    sensor = SensorSpec(numbers["gain_e_per_adu"], numbers["offset_adu"], numbers["bit_depth"],
                        numbers["read_noise_e"], width_px=numbers["width_px"], height_px=numbers["height_px"])
    run = load_run(run042, sensor)
    assert len(run.views) == 15 and run.views[0].name == "direct" and run.photons_per_atom == 200.0
    assert all(v.mask.all() for v in run.views) and run.truth_volume.is_file()


def test_the_four_camera_sample_loads_with_its_clipped_frames_censored():
    """data/mot4: four 8-bit cameras, no dark frames, a quarter of each view clipped at 0 ADU."""
    from recon.analysis.inspect import view_stats

    root = Path(__file__).resolve().parents[3]
    run = load_run(root / "data" / "mot4")
    assert [v.camera for v in run.views] == [0, 1, 2, 3] and len(run.system.windows) == 4
    for view in run.views:
        assert view.dark_path is None and view.censored is not None
        clipped = float(view.censored.float().mean())
        assert 0.2 < clipped < 0.32, (view.name, clipped)
        assert torch.equal(view.censor_e, torch.full(view.shape, (0.5 - 2.0) * 1.0))
        assert not bool((view.mask & view.censored).any())  # a clipped frame is not a value
        stats = view_stats(view, run.sensors[view.camera])
        assert stats.clipped_fraction == pytest.approx(clipped) and stats.masked_fraction == 0.0
        assert not stats.warnings  # clipped values are censored, not lost: nothing to warn about
