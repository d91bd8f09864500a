import json
import math

import numpy as np
import pytest
import torch

from recon.errors import ConfigError, DataError, ShapeError
from recon.fit import FitData, ViewData
from recon.fitjob import split_fit_data
from recon.resolution import compare_paths, fsc_halves, fsc_sections, fsc_truth
from recon.volume import Volume, write_volume
from tests.optics.helpers import make_system


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


def _data(frames, counts_value=50.0):
    system = make_system(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((frames, 6, 8), counts_value), generator=g) + 2 * torch.randn(
        frames, 6, 8, generator=g)
    mask = torch.ones(frames, 6, 8, dtype=torch.bool)
    mask[0, 0, 0] = False
    counts[0, 0, 0] = float("nan")  # a masked pixel may hold anything
    views = (ViewData("direct", 0, (0, 0, 8, 6), counts, mask),)
    return FitData(system, views, 200.0, read_noise_e=2.0)


def test_thinning_halves_hold_half_the_photons_each():
    data = _data(1)
    (a, b), how = split_fit_data(data, "auto", seed=1)
    assert how == "thinning"
    assert a.photons_per_atom == b.photons_per_atom == 100.0
    assert a.read_noise_e == pytest.approx(2.0 / math.sqrt(2))
    total = a.views[0].counts + b.views[0].counts
    usable = data.views[0].mask
    assert torch.allclose(total[usable], data.views[0].counts[usable].round(), atol=1e-4)
    assert torch.isfinite(a.views[0].counts).all() and torch.equal(a.views[0].mask, usable)
    (a2, _), _ = split_fit_data(data, "thinning", seed=1)
    assert torch.equal(a2.views[0].counts, a.views[0].counts)  # the seed fixes the split


def test_frame_split_takes_even_and_odd_shots_and_needs_two():
    data = _data(5)
    (a, b), how = split_fit_data(data, "auto", seed=0)
    assert how == "frames" and a.photons_per_atom == 200.0 and a.read_noise_e == 2.0
    assert torch.equal(a.views[0].counts.nan_to_num(-1.0), data.views[0].counts[0::2].nan_to_num(-1.0))
    assert a.views[0].counts.shape[0] == 3 and b.views[0].counts.shape[0] == 2
    assert torch.equal(b.views[0].counts, data.views[0].counts[1::2])
    with pytest.raises(ConfigError, match="--split thinning"):
        split_fit_data(_data(1), "frames", seed=0)
    with pytest.raises(ConfigError, match="--split must be"):
        split_fit_data(data, "halves", seed=0)
