import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tomli_w
import tomllib
import torch

from recon.errors import ConfigError, DataError, ShapeError
from recon.noise import SensorSpec
from recon.phantoms import load_phantom, truth_volume
from recon.run import RunSpec, TruthSpec, ViewSpec, load_run, read_frames, read_run_spec, write_run
from recon.volume import read_volume

SENSOR = SensorSpec(gain_e_per_adu=2.0, offset_adu=100.0, bit_depth=12, read_noise_e=2.0,
                    width_px=64, height_px=48)
ROIS = {"direct": (10, 8, 20, 16), "m1": (40, 30, 12, 10)}


def _frames(roi, k=2, seed=0):
    x0, y0, w, h = roi
    rng = np.random.default_rng(seed)
    return rng.integers(100, 400, size=(k, h, w)).astype(np.uint16)


def _spec(**extra):
    views = [ViewSpec(name, 0, roi) for name, roi in ROIS.items()]
    return RunSpec("system.toml", tuple(views), photons_per_atom=200.0, description="test run", **extra)


@pytest.fixture
def run_dir(tmp_path):
    """A small run: two views with two shots each and one-page dark frames."""
    frames = {name: _frames(roi, seed=i) for i, (name, roi) in enumerate(ROIS.items())}
    darks = {name: np.full((1, roi[3], roi[2]), 100, np.uint16) for name, roi in ROIS.items()}
    return write_run(tmp_path / "run", _spec(), frames=frames, darks=darks,
                     extra_files={"system.toml": "# not read by these tests\n"})


def _edit(run, fn):
    spec = tomllib.loads((run / "run.toml").read_text())
    fn(spec)
    (run / "run.toml").write_text(tomli_w.dumps(spec))


def _raises(error, fragment, fn, *args, **kwargs):
    with pytest.raises(error) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message
    return message


def test_write_then_load_round_trips(tmp_path):
    frames = {name: _frames(roi, seed=i) for i, (name, roi) in enumerate(ROIS.items())}
    darks = {"direct": np.full((3, 16, 20), 98, np.uint16)}
    darks["direct"][1] = 104  # mean 100
    ph = load_phantom("gaussian", atoms=1e4)
    truth = truth_volume(ph, (-1, -1, -1), (1, 1, 1), 0.25)
    spec = _spec(truth=TruthSpec("truth.tif", "phantom.json"), exposure_s=0.001)
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
    _edit(out, lambda s: s["views"][1].update(frames="m1.tif"))
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


FLAVOURS = ["imagej", "ome", "bigtiff", "pages", "appended", "uint32", "int32", "float64"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tiff_flavours(tmp_path, flavour):
    data = _frames(ROIS["direct"], k=4)
    path = tmp_path / "f.tif"
    if flavour == "imagej":
        tifffile.imwrite(path, data.reshape(2, 2, 16, 20), imagej=True, metadata={"axes": "TZYX"})
    elif flavour == "ome":
        tifffile.imwrite(path, data, ome=True)
    elif flavour == "bigtiff":
        tifffile.imwrite(path, data, bigtiff=True, photometric="minisblack")
    elif flavour == "pages":
        for page in data:
            tifffile.imwrite(path, page, append=True, metadata=None)
    elif flavour == "appended":
        for page in data:
            tifffile.imwrite(path, page, append=True)  # one series per page
    else:
        tifffile.imwrite(path, data.astype(flavour), photometric="minisblack")
    out = read_frames(path, sensor=SENSOR)
    assert out.shape == (4, 16, 20) and np.array_equal(out, data)


def test_eight_bit_frames_need_an_eight_bit_sensor(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.full((2, 4, 4), 200, np.uint8), photometric="minisblack")
    assert read_frames(path, sensor=SensorSpec(1.0, 10.0, 8)).dtype == np.uint8
    _raises(DataError, "too narrow for the 12-bit sensor", read_frames, path, sensor=SENSOR)


def test_read_frames_errors(tmp_path):
    path = tmp_path / "f.tif"
    _raises(DataError, "does not exist", read_frames, path)
    path.write_bytes(b"definitely not a tiff")
    _raises(DataError, "cannot read", read_frames, path)
    tifffile.imwrite(path, np.zeros((5, 6, 3), np.uint8), photometric="rgb")
    _raises(DataError, "colour image (3 samples per pixel)", read_frames, path)
    tifffile.imwrite(path, np.zeros((3, 5, 6), np.uint16), photometric="rgb", planarconfig="separate")
    _raises(DataError, "photometric='minisblack'", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), np.inf, np.float32), photometric="minisblack")
    _raises(DataError, "inf values", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), np.nan, np.float32), photometric="minisblack")
    _raises(DataError, "only NaN", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), -5, np.int16), photometric="minisblack")
    _raises(DataError, "negative values", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), 5000, np.uint16), photometric="minisblack")
    _raises(DataError, "beyond the 12-bit range (max 4095)", read_frames, path, sensor=SENSOR)
    tifffile.imwrite(path, np.zeros((4, 4), np.uint16))
    tifffile.imwrite(path, np.zeros((5, 5), np.uint16), append=True)
    _raises(DataError, "images of different sizes", read_frames, path)


def test_truncated_frames(run_dir):
    frames = run_dir / "views" / "direct.tif"
    frames.write_bytes(frames.read_bytes()[:300])
    msg = _raises(DataError, "is the file complete?", load_run, run_dir, SENSOR)
    assert str(frames) in msg


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
    _edit(run_dir, mutate)
    msg = _raises(error, fragment, load_run, run_dir, SENSOR)
    assert "run.toml" in msg or "views" in msg


def test_bad_frames_in_a_run(run_dir):
    frames = run_dir / "views" / "direct.tif"
    tifffile.imwrite(frames, np.zeros((2, 16, 20), np.uint16))
    _raises(DataError, "all pixels of", load_run, run_dir, SENSOR)
    tifffile.imwrite(frames, np.full((2, 16, 20), 4095, np.uint16))
    _raises(DataError, "every pixel of", load_run, run_dir, SENSOR)
    tifffile.imwrite(frames, np.full((3, 16, 20), 200, np.uint16), photometric="minisblack")
    _raises(DataError, "different numbers of shots (direct: 3, m1: 2)", load_run, run_dir, SENSOR)
    tifffile.imwrite(frames, np.full((2, 16, 20), 200, np.uint8))
    _raises(DataError, "too narrow for the 12-bit sensor", load_run, run_dir, SENSOR)


def test_full_sensor_frames_of_the_wrong_size(tmp_path):
    spec = RunSpec("s.toml", (ViewSpec("direct", 0, ROIS["direct"]),), frames="full.tif")
    out = write_run(tmp_path / "r", spec, files={"full.tif": np.full((1, 40, 64), 150, np.uint16)})
    _raises(DataError, "not the full 48×64 sensor", load_run, out, SENSOR)
    sizeless = SensorSpec(2.0, 100.0, 12)
    run = load_run(out, sizeless)  # sizes unknown: only the crop must fit
    assert run.view("direct").electrons.shape == (1, 16, 20)
    _edit(out, lambda s: s["views"][0].update(roi=[10, 30, 20, 16]))
    _raises(DataError, "lies outside the 64×40 (w×h) frames", load_run, out, sizeless)


def test_missing_run_and_invalid_toml(tmp_path, run_dir):
    _raises(ConfigError, "does not exist", load_run, tmp_path / "nowhere", SENSOR)
    (tmp_path / "empty").mkdir()
    _raises(ConfigError, "holds no run.toml", load_run, tmp_path / "empty", SENSOR)
    (run_dir / "run.toml").write_text("schema = ")
    _raises(ConfigError, "not valid TOML", load_run, run_dir, SENSOR)


def test_validate_against_sensor_sizes():
    spec = _spec()
    spec.validate_against((64, 48))
    spec.validate_against([SENSOR])
    spec.validate_against({0: (64, 48)})
    _raises(ConfigError, "lies outside the 50×40 sensor of camera 0", spec.validate_against, (50, 40))
    _raises(ConfigError, "'views[0].camera' is 0, but the system has 1", spec.validate_against, {1: (64, 48)})


def test_sensors_per_camera(tmp_path):
    views = (ViewSpec("a", 0, (0, 0, 4, 4)), ViewSpec("b", 1, (0, 0, 4, 4)))
    frames = {"a": np.full((1, 4, 4), 110, np.uint16), "b": np.full((1, 4, 4), 110, np.uint16)}
    out = write_run(tmp_path / "r", RunSpec("s.toml", views), frames=frames)
    run = load_run(out, [SENSOR, SensorSpec(1.0, 10.0, 16)])
    assert run.view("a").electrons[0, 0, 0] == 20.0 and run.view("b").electrons[0, 0, 0] == 100.0
    _raises(ConfigError, "'views[1].camera' is 1, but the system has 1", load_run, out, [SENSOR])
    _raises(ConfigError, "'views[0].roi' [0, 0, 4, 4] lies outside the 3×3 sensor", load_run, out,
            {0: SensorSpec(1.0, 0.0, 16, width_px=3, height_px=3), 1: SENSOR})


def test_write_run_errors_and_overwrite(tmp_path, run_dir):
    frames = {n: _frames(r) for n, r in ROIS.items()}
    _raises(ConfigError, "exists; pass --overwrite", write_run, run_dir, _spec(), frames=frames)
    _raises(ConfigError, "view 'm2', which the spec does not have", write_run, tmp_path / "a", _spec(),
            frames={**frames, "m2": frames["m1"]})
    _raises(ShapeError, "frames of view 'm1' have shape (2, 16, 20)", write_run, tmp_path / "a", _spec(),
            frames={"direct": frames["direct"], "m1": frames["direct"]})
    named = RunSpec("s.toml", tuple(ViewSpec(n, 0, r, f"views/{n}.tif") for n, r in ROIS.items()))
    _raises(ConfigError, "names view m1 frames 'views/m1.tif' but nothing writes it", write_run,
            tmp_path / "a", named, frames={"direct": frames["direct"]})
    _raises(ConfigError, "must be a relative path", write_run, tmp_path / "a", _spec(),
            files={"../escape.tif": frames["m1"]}, frames=frames)
    _raises(ConfigError, "key 'colour' is not known", write_run, tmp_path / "a", {"colour": 1})
    assert not (tmp_path / "a").exists()
    # overwrite: the new run replaces the old one as a whole, from a dict spec (as the simulator passes)
    spec = {"system": "system.toml", "views": [{"name": "only", "camera": 0, "roi": [0, 0, 4, 4],
                                                "frames": "only.tif"}]}
    write_run(run_dir, spec, files={"only.tif": np.full((4, 4), 120, np.uint16)}, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["only.tif", "run.toml"]
    assert [p.name for p in run_dir.parent.iterdir()] == ["run"]
    assert load_run(run_dir, SENSOR).view("only").electrons.shape == (1, 4, 4)


def test_torch_arrays_are_accepted(tmp_path):
    adu = torch.full((2, 16, 20), 130, dtype=torch.uint16)
    out = write_run(tmp_path / "t", RunSpec("s.toml", (ViewSpec("direct", 0, ROIS["direct"]),)),
                    frames={"direct": adu})
    assert tifffile.imread(out / "views" / "direct.tif").dtype == np.uint16
    assert torch.equal(load_run(out, SENSOR).view("direct").electrons, torch.full((2, 16, 20), 60.0))


def test_the_sample_run_loads():
    run042 = Path(__file__).resolve().parents[2] / "data" / "run042"
    if not (run042 / "run.toml").is_file():
        pytest.skip("data/run042 not present")
    system = tomllib.loads((run042 / "system.toml").read_text())
    numbers = system["cameras"][0]["sensor"]
    sensor = SensorSpec(numbers["gain_e_per_adu"], numbers["offset_adu"], numbers["bit_depth"],
                        numbers["read_noise_e"], width_px=numbers["width_px"], height_px=numbers["height_px"])
    run = load_run(run042, sensor)
    assert len(run.views) == 15 and run.views[0].name == "direct" and run.photons_per_atom == 200.0
    assert all(v.mask.all() for v in run.views) and run.truth_volume.is_file()
