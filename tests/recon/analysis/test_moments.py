"""Moments of a density: a Gaussian's total, centroid and widths."""

import math

import numpy as np

from recon.analysis.moments import cloud_moments


def test_cloud_moments_of_a_gaussian():
    shape, vox = (60, 64, 70), 0.05
    origin = (-1.7, -1.5, -1.4)
    z, y, x = np.meshgrid(
        *(o + vox * np.arange(n) for o, n in zip(origin[::-1], shape, strict=False)), indexing="ij"
    )
    c, s = (0.1, -0.2, 0.05), (0.3, 0.25, 0.2)
    rho = np.exp(
        -((x - c[0]) ** 2) / (2 * s[0] ** 2)
        - (y - c[1]) ** 2 / (2 * s[1] ** 2)
        - (z - c[2]) ** 2 / (2 * s[2] ** 2)
    )
    m = cloud_moments(rho, origin, (vox,) * 3)
    assert np.allclose(m["centroid_mm"], c, atol=1e-6)
    assert np.allclose(m["width_mm"], s, rtol=1e-3)
    assert math.isclose(m["total"], (2 * math.pi) ** 1.5 * np.prod(s), rel_tol=1e-3)
