"""Writing runs: errors and --overwrite."""

import numpy as np

from recon.errors import ConfigError, ShapeError
from recon.io.run import load_run
from recon.io.runspec import RunSpec, ViewSpec
from recon.io.runwriter import write_run
from tests.recon.io.runs import ROIS, SENSOR, assert_raises, make_frames, make_spec


def test_write_run_errors_and_overwrite(tmp_path, run_dir):
    frames = {n: make_frames(r) for n, r in ROIS.items()}
    assert_raises(ConfigError, "exists; pass --overwrite", write_run, run_dir, make_spec(), frames=frames)
    assert_raises(ConfigError, "view 'm2', which the spec does not have", write_run, tmp_path / "a",
                  make_spec(), frames={**frames, "m2": frames["m1"]})
    assert_raises(ShapeError, "frames of view 'm1' have shape (2, 16, 20)", write_run, tmp_path / "a",
                  make_spec(), frames={"direct": frames["direct"], "m1": frames["direct"]})
    named = RunSpec("s.toml", tuple(ViewSpec(n, 0, r, f"views/{n}.tif") for n, r in ROIS.items()))
    assert_raises(ConfigError, "names view m1 frames 'views/m1.tif' but nothing writes it", write_run,
            tmp_path / "a", named, frames={"direct": frames["direct"]})
    assert_raises(ConfigError, "must be a relative path", write_run, tmp_path / "a", make_spec(),
            files={"../escape.tif": frames["m1"]}, frames=frames)
    assert_raises(ConfigError, "key 'colour' is not known", write_run, tmp_path / "a", {"colour": 1})
    assert not (tmp_path / "a").exists()
    # overwrite: the new run replaces the old one as a whole, from a dict spec (as the simulator passes)
    spec = {"system": "system.toml", "views": [{"name": "only", "camera": 0, "roi": [0, 0, 4, 4],
                                                "frames": "only.tif"}]}
    write_run(run_dir, spec, files={"only.tif": np.full((4, 4), 120, np.uint16)}, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["only.tif", "run.toml"]
    assert [p.name for p in run_dir.parent.iterdir()] == ["run"]
    assert load_run(run_dir, SENSOR).view("only").electrons.shape == (1, 4, 4)
