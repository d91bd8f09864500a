"""`recon fsc`: against a truth on another grid, between halves, the report sections, dispatch and errors."""

import json
import math

import numpy as np
import pytest

from recon.errors import ConfigError, DataError, ShapeError
from recon.io.volume import Volume, write_volume
from recon.jobs.compare import compare_paths, fsc_halves, fsc_truth
from recon.reporting.report import fsc_sections


def _blob(n, voxel, origin, sigma=0.3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    axis = lambda k: origin[k] + voxel * np.arange(n)  # noqa: E731
    z, y, x = np.meshgrid(axis(2), axis(1), axis(0), indexing="ij")
    rho = np.exp(-(x**2 + y**2 + z**2) / (2 * sigma**2)) * (1 + 0.3 * np.sin(2 * math.pi * y / 0.4))
    return Volume((rho + noise * rng.standard_normal(rho.shape)).astype(np.float32), origin, (voxel,) * 3)


def test_truth_on_a_finer_grid_is_resampled_and_a_perfect_fit_reaches_nyquist(tmp_path):
    fit = _blob(32, 0.05, (-0.775,) * 3)
    truth = _blob(62, 0.025, (-0.7625,) * 3)  # same box, half the voxel size
    report = fsc_truth(fit, truth, tmp_path)
    assert report["threshold"] == "0.5" and report["maps"] == {"a": "reconstruction", "b": "truth"}
    assert report["reached_nyquist"] and report["nyquist_um"] == pytest.approx(100.0)
    for name in ("fsc.csv", "fsc.json", "fsc.png"):
        assert (tmp_path / "fsc-truth" / name).is_file()
    assert json.loads((tmp_path / "fsc-truth" / "fsc.json").read_text()) == report


def test_noisy_halves_resolve_worse_than_clean_ones_and_the_report_shows_both(tmp_path):
    clean = fsc_halves(_blob(32, 0.05, (-0.775,) * 3, noise=1e-6, seed=1),
                       _blob(32, 0.05, (-0.775,) * 3, noise=1e-6, seed=2), tmp_path / "a")
    noisy = fsc_halves(_blob(32, 0.05, (-0.775,) * 3, noise=0.3, seed=1),
                       _blob(32, 0.05, (-0.775,) * 3, noise=0.3, seed=2), tmp_path / "b")
    assert clean["threshold"] == noisy["threshold"] == "0.143"
    assert noisy["resolution_interpolated_um"] > 1.5 * clean["resolution_interpolated_um"]
    fsc_truth(_blob(32, 0.05, (-0.775,) * 3), _blob(32, 0.05, (-0.775,) * 3), tmp_path / "b")
    sections = fsc_sections(tmp_path / "b")
    assert len(sections) == 2 and "against the truth" in sections[0] and "split halves" in sections[1]
    assert "data:image/png;base64," in sections[0] and "along x / y / z" in sections[1]
    assert fsc_sections(tmp_path / "missing") == []


def test_compare_paths_dispatch_and_errors(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    write_volume(a, _blob(24, 0.05, (-0.575,) * 3, noise=0.05, seed=1))
    write_volume(b, _blob(24, 0.05, (-0.575,) * 3, noise=0.05, seed=2))
    report, where = compare_paths(a, b, threshold="half-bit", out=tmp_path / "ab")
    assert report["threshold"] == "half-bit" and where == tmp_path / "ab" and (where / "fsc.json").is_file()
    report, where = compare_paths(a, truth=b, out=tmp_path / "t")
    assert report["threshold"] == "0.5" and where == tmp_path / "t" / "fsc-truth"
    again, where = compare_paths(str(a), truth=str(b), out=str(tmp_path / "s"))  # as the Python API is called
    assert again["resolution_um"] == report["resolution_um"] and where == tmp_path / "s" / "fsc-truth"
    other = tmp_path / "other.tif"
    write_volume(other, _blob(20, 0.05, (-0.475,) * 3))
    with pytest.raises(ShapeError, match="different grids"):
        compare_paths(a, other, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="two volumes"):
        compare_paths(a)
    with pytest.raises(ConfigError, match="0.5 threshold"):
        compare_paths(a, truth=b, threshold="0.143")
    with pytest.raises(DataError, match="does not exist"):
        compare_paths(a, tmp_path / "nope.tif")
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    with pytest.raises(ConfigError, match="no half maps"):
        compare_paths(fit_dir)
    with pytest.raises(ConfigError, match="fit directory"):
        compare_paths(fit_dir, b)
    assert not (tmp_path / "x").exists() and not (fit_dir / "fsc-halves").exists()


def test_a_fit_directory_is_compared_with_the_truth_its_fit_recorded(tmp_path):
    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    write_volume(fit_dir / "density.tif", _blob(24, 0.05, (-0.575,) * 3, noise=0.05, seed=1))
    truth = tmp_path / "run" / "truth.tif"
    truth.parent.mkdir()
    write_volume(truth, _blob(24, 0.05, (-0.575,) * 3))
    (fit_dir / "config.json").write_text(json.dumps({"run": "run", "truth": str(truth)}))
    report, where = compare_paths(fit_dir)
    assert where == fit_dir / "fsc-truth" and report["threshold"] == "0.5"
    assert report == compare_paths(fit_dir, truth=truth)[0]  # the same as naming it
    truth.unlink()
    with pytest.raises(ConfigError, match=f"the truth {fit_dir}'s fit was compared with, {truth}, is no "):
        compare_paths(fit_dir)
    for content in ("{not json", json.dumps(["x"]), json.dumps({"truth": 3}), json.dumps({"truth": None})):
        (fit_dir / "config.json").write_text(content)  # untrusted: anything else is "no truth recorded"
        with pytest.raises(ConfigError, match="recorded no truth; pass --truth"):
            compare_paths(fit_dir)
