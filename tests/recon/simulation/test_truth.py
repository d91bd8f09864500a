"""The truth volume is the voxel average of the phantom, centred in its voxels."""

import math

import numpy as np
import pytest

from recon.errors import ConfigError
from recon.simulation.phantom_file import load_phantom
from recon.simulation.truth import truth_volume


def test_truth_is_the_voxel_average_and_centred():
    ph = load_phantom("gaussian", atoms=1.0)
    v = truth_volume(ph, (-1.2, -1.2, -1.2), (1.2, 1.2, 1.2), 0.1)
    assert v.shape == (24, 24, 24) and np.allclose(v.origin_mm, (-1.15, -1.15, -1.15))
    assert math.isclose(float(v.data.max()), float(v.data[11:13, 11:13, 11:13].max()))
    # A hard box whose faces cut voxels in half: those voxels hold exactly half the density.
    box = load_phantom("box", atoms=0.6**3, options={"min_mm": (-0.25, -0.25, -0.25),
                                                     "max_mm": (0.35, 0.35, 0.35), "edge_mm": 0.0})
    t = truth_volume(box, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), 0.1, supersample=2)
    assert t.data[10, 10, 10] == pytest.approx(1.0) and t.data[10, 10, 7] == pytest.approx(0.5)
    assert t.data[10, 10, 6] == 0.0 and t.data[10, 10, 13] == pytest.approx(0.5)
    assert t.meta["atoms_in_grid"] == pytest.approx(0.6**3)
    with pytest.raises(ConfigError, match="truth_volume"):
        truth_volume(ph, (0, 0, 0), (1, 1, -1), 0.1)
