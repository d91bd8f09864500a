import shutil

import numpy as np
import pytest
import tifffile
import tomli_w
import tomllib

from recon.errors import ConfigError, DataError
from recon.run import load_run


def _copy(tiny_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def _edit(run, fn):
    spec = tomllib.loads((run / "run.toml").read_text())
    fn(spec)
    (run / "run.toml").write_text(tomli_w.dumps(spec))


def test_simulated_run_round_trips(tiny_run):
    run = load_run(tiny_run)
    assert [v.name for v in run.views][0] == "direct" and run.photons_per_atom == 200.0
    v = run.views[0]
    assert v.electrons.shape == v.mask.shape and v.electrons.shape[0] == 1
    assert v.dark_pages == 1 and run.truth_volume.is_file()
    assert v.electrons.sum() > 1000  # the cloud is seen
    assert not any(p.name.startswith(".") for p in tiny_run.parent.iterdir())  # no partial dirs left


@pytest.mark.parametrize(
    "mutate, error, fragment",
    [
        (lambda s: s.pop("views"), ConfigError, "key 'views' is missing"),
        (lambda s: s.update(colour="red"), ConfigError, "key 'colour' is not known"),
        (lambda s: s.update(photons_per_atom="many"), ConfigError, "must be a number"),
        (lambda s: s.update(photons_per_atom=-3.0), ConfigError, "must be > 0"),
        (lambda s: s["views"][0].update(roi=[0, 0, 10]), ConfigError, "must be 4 integers"),
        (lambda s: s["views"][0].update(roi=[1995, 0, 50, 50]), ConfigError, "outside the 2001×1501 sensor"),
        (
            lambda s: s["views"][0].update(roi=s["views"][0]["roi"][:2] + [5, 5]),
            DataError,
            "but its roi is 5×5",
        ),
        (lambda s: s["views"][0].update(frames="views/missing.tif"), DataError, "does not exist"),
        (lambda s: s["views"][1].update(name="direct"), ConfigError, "appears twice"),
        (lambda s: s.update(schema="recon.run/7"), ConfigError, "schema"),
        (lambda s: s["views"][0].update(camera=3), ConfigError, "has 1 camera"),
        (lambda s: s.update(system="nope.toml"), ConfigError, "does not exist"),
    ],
)
def test_bad_run_toml(tiny_run, tmp_path, mutate, error, fragment):
    run = _copy(tiny_run, tmp_path)
    _edit(run, mutate)
    with pytest.raises(error) as err:
        load_run(run)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_bad_frames(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    frames = run / "views" / "direct.tif"
    data = tifffile.imread(frames)
    frames.write_bytes(frames.read_bytes()[:200])
    with pytest.raises(DataError, match="cannot read .* is the file complete"):
        load_run(run)
    tifffile.imwrite(frames, np.full(data.shape, np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="NaN or inf"):
        load_run(run)
    tifffile.imwrite(frames, np.zeros(data.shape, dtype=np.uint16))
    with pytest.raises(DataError, match="all pixels are zero"):
        load_run(run)
    tifffile.imwrite(frames, np.full(data.shape, 2**16 - 1, dtype=np.uint16))
    with pytest.raises(DataError, match="every pixel is saturated"):
        load_run(run)
    tifffile.imwrite(frames, np.full(data.shape, 2**20, dtype=np.uint32))
    with pytest.raises(DataError, match="beyond the 16-bit sensor"):
        load_run(run)
    (run / "run.toml").write_text("schema = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_run(run)
    with pytest.raises(ConfigError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_full_sensor_frames_are_cropped(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    spec = tomllib.loads((run / "run.toml").read_text())
    full = np.full((1, 1501, 2001), 100, dtype=np.uint16)
    for v in spec["views"]:
        x0, y0, w, h = v["roi"]
        full[:, y0 : y0 + h, x0 : x0 + w] = tifffile.imread(run / v["frames"]).reshape(1, h, w)
        del v["frames"], v["dark"]
    spec["frames"] = "full.tif"
    tifffile.imwrite(run / "full.tif", full)
    (run / "run.toml").write_text(tomli_w.dumps(spec))
    a, b = load_run(tiny_run), load_run(run)
    assert np.allclose(a.views[0].electrons.sum() + 100 * 0, b.views[0].electrons.sum(), rtol=0.05)
    assert b.views[0].dark_pages == 0
