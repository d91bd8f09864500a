"""Resampling onto another grid keeps world positions and totals."""

import numpy as np

from recon.analysis.grids import resample_like
from tests.recon.analysis.fsc_maps import as_volume


def test_resample_like_is_the_identity_on_the_same_grid_and_averages_onto_coarser_voxels():
    def blob(vol_shape, voxel, origin):
        ax = [np.arange(n) * voxel + o for n, o in zip(vol_shape[::-1], origin, strict=True)]
        z, y, x = np.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
        return np.exp(-(x**2 + y**2 + z**2) / (2 * 1.0**2))

    fine = as_volume(blob((40, 40, 40), 0.1, (-1.95,) * 3), voxel=0.1, origin=(-1.95,) * 3)
    same = resample_like(fine, fine)
    np.testing.assert_allclose(same.data, fine.data, atol=1e-6)
    coarse_grid = as_volume(np.zeros((16, 16, 16)), voxel=0.2, origin=(-1.5,) * 3)
    coarse = resample_like(fine, coarse_grid)
    assert coarse.shape == (16, 16, 16) and coarse.voxel_size_mm == (0.2, 0.2, 0.2)
    np.testing.assert_allclose(coarse.data, blob((16, 16, 16), 0.2, (-1.5,) * 3), atol=0.02)
