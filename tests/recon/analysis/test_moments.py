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


def test_the_share_of_atoms_next_to_the_faces_is_the_outer_layers_share():
    from recon.analysis.moments import FACE_WARNING_FRACTION, face_fraction, face_warning
    from recon.io.volume import Volume

    shape = (40, 50, 80)  # the layers: 2, 2 and 2 voxels (2.5 % of 80 rounds up to 2)
    uniform = Volume(np.ones(shape, np.float32), (0.0, 0.0, 0.0), (0.01, 0.01, 0.01))
    inner = (40 - 4) * (50 - 4) * (80 - 4)
    assert math.isclose(face_fraction(uniform), 1 - inner / np.prod(shape), rel_tol=1e-9)
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    centred = Volume(np.exp(-(x**2 + y**2 + z**2) / (2 * 4.0**2)).astype(np.float32), (0.0,) * 3, (0.01,) * 3)
    assert face_fraction(centred) < 1e-4 and face_warning(face_fraction(centred)) is None
    piled = np.zeros(shape, np.float32)
    piled[:, :, :2] = 1.0  # everything on one face
    piled[20, 25, 40] = 1.0
    assert face_fraction(Volume(piled, (0.0,) * 3, (0.01,) * 3)) > 0.99
    assert "box may be too small" in face_warning(0.17) and face_warning(FACE_WARNING_FRACTION) is None
    assert face_fraction(Volume(np.zeros(shape, np.float32), (0.0,) * 3, (0.01,) * 3)) == 0.0
