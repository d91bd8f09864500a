"""Quadrature of phantoms shared by the phantom tests."""

import numpy as np

from recon.simulation.truth import truth_volume


def phantom_integral(phantom, voxel=0.04, supersample=1):
    lo, hi = phantom.bounds_mm
    v = truth_volume(phantom, lo, hi, voxel, supersample=supersample)
    return float(v.data.astype(np.float64).sum() * voxel**3), v
