"""Comparisons of volumes: grids that do not match are refused with the fix."""

import numpy as np
import pytest

from recon.analysis.fsc import fsc_curve
from recon.analysis.resolution import compare_volumes, compare_with_truth, load_truth
from recon.errors import DataError, ShapeError
from recon.io.volume import write_volume
from tests.recon.analysis.fsc_maps import as_volume


def test_mismatched_grids_raise_shape_error():
    rng = np.random.default_rng(10)
    v = rng.standard_normal((16, 16, 16))
    with pytest.raises(ShapeError, match=r"\(16, 16, 16\).*\(16, 16, 15\)"):
        fsc_curve(v, v[:, :, :15], 1.0)
    # Any box shape and any voxel edges are compared as they are (FSC of a map with itself: 1).
    assert np.allclose(fsc_curve(v[:, :, :15], v[:, :, :15], 1.0).fsc, 1.0)
    assert np.allclose(fsc_curve(v, v, (1.0, 1.0, 2.0)).fsc, 1.0)
    with pytest.raises(ShapeError, match="mask"):
        fsc_curve(v, v, 1.0, mask=np.ones((8, 8, 8)))
    with pytest.raises(DataError):
        fsc_curve(np.full_like(v, np.nan), v, 1.0)
    a = as_volume(v)
    for other in (as_volume(v[:, :, :15]), as_volume(v, voxel=0.02), as_volume(v, origin=(0.0, 0.0, 1e-3))):
        with pytest.raises(ShapeError, match="A has shape .* B has shape .*resample"):
            compare_volumes(a, other, threshold="0.143")
    flat = as_volume(v[:8])
    assert np.allclose(compare_volumes(flat, flat, threshold="0.143").curve.fsc, 1.0)
    with pytest.raises(ShapeError, match="too small"):
        compare_volumes(as_volume(v[:3]), as_volume(v[:3]), threshold="0.143")
    # Within 1e-6 mm the grids count as equal.
    compare_volumes(a, as_volume(v, origin=(0.0, 0.0, 1e-7)), threshold="0.5", directional=False)


def test_a_truth_too_coarse_to_compare_with_is_refused_like_a_map_of_that_grid(tmp_path):
    rng = np.random.default_rng(11)
    fit = as_volume(rng.standard_normal((16, 16, 16)))
    for shape in ((1, 1, 1), (16, 16, 3)):
        truth = as_volume(np.ones(shape), voxel=0.5)
        with pytest.raises(ShapeError) as info:
            compare_with_truth(fit, truth)
        assert str(info.value) == (f"fsc: the truth has a grid of {shape} voxels (z, y, x), too coarse to "
                                   "compare with; use a truth of ≥ 4 voxels per edge")
        with pytest.raises(ShapeError, match="^fit: the truth has a grid"):
            load_truth(truth, where="fit")
    path = tmp_path / "truth.tif"
    write_volume(path, as_volume(np.ones((1, 1, 1)), voxel=2.4))
    with pytest.raises(ShapeError, match=f"the truth {path} has a grid of \\(1, 1, 1\\)"):
        compare_with_truth(fit, path)
    coarse = as_volume(np.ones((4, 4, 4)), voxel=4.0)  # coarse but a grid: resampled and compared
    assert compare_with_truth(fit, coarse).shape == (16, 16, 16)
