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


def _gaussian(shape, origin, vox, centre, sigma):
    z, y, x = np.meshgrid(*(o + vox * np.arange(n) for o, n in zip(origin[::-1], shape, strict=True)),
                          indexing="ij")
    return np.exp(-sum((p - c) ** 2 / (2 * s**2) for p, c, s in zip((x, y, z), centre, sigma, strict=True)))


def test_the_window_leaves_a_gaussian_in_a_large_box_as_the_whole_box_gives_it():
    shape, vox, origin = (120, 120, 120), 0.1, (-6.0, -6.0, -6.0)  # a 12 mm box, σ ≈ 0.5 mm: the window binds
    rho = _gaussian(shape, origin, vox, (0.3, -0.2, 0.1), (0.6, 0.5, 0.4))
    windowed = cloud_moments(rho, origin, (vox,) * 3)
    whole = cloud_moments(rho, origin, (vox,) * 3, window=None)
    assert windowed["window_share"] < 1.0  # the window is smaller than the box ...
    # ... and loses what a Gaussian has beyond ±5 σ: 2e-6 of its mass, 1e-5 of its widths
    assert np.allclose(windowed["width_mm"], whole["width_mm"], rtol=2e-5)
    assert np.allclose(windowed["centroid_mm"], whole["centroid_mm"], atol=1e-9)
    assert windowed["total"] == whole["total"]


def test_a_faint_haze_far_from_the_cloud_does_not_widen_the_windowed_moments():
    shape, vox, origin = (100, 100, 100), 0.2, (-10.0, -10.0, -10.0)
    sigma = (1.2, 1.0, 0.8)
    cloud = _gaussian(shape, origin, vox, (0.0, 0.0, 0.0), sigma)
    haze = np.full(shape, 1e-5 * cloud.max())  # 0.5 % of the atoms, spread over a ±10 mm box
    assert 0.003 < haze.sum() / (cloud + haze).sum() < 0.01
    whole = cloud_moments(cloud + haze, origin, (vox,) * 3, window=None)
    windowed = cloud_moments(cloud + haze, origin, (vox,) * 3)
    assert min(w / s - 1 for w, s in zip(whole["width_mm"], sigma, strict=True)) > 0.04  # the box's haze
    # within ±5 σ the haze is a tenth of the box's and weighs ≈ 8 σ² / 12 of the variance: ≲ 0.3 %
    assert np.allclose(windowed["width_mm"], sigma, rtol=0.005)
    assert windowed["total"] == whole["total"]  # the atom number counts the whole box
    assert 0.99 < windowed["window_share"] < 1.0


def test_windowed_moments_of_degenerate_densities():
    origin, vox = (0.0, 0.0, 0.0), (0.1, 0.1, 0.1)
    point = np.zeros((9, 9, 9))
    point[4, 5, 6] = 2.0  # one voxel: centroid there, widths 0
    m = cloud_moments(point, origin, vox)
    assert np.allclose(m["centroid_mm"], (0.6, 0.5, 0.4)) and m["width_mm"] == [0.0, 0.0, 0.0]
    assert math.isclose(m["total"], 2.0 * 1e-3)
    empty = cloud_moments(np.zeros((4, 4, 4)), origin, vox)
    assert empty["total"] == 0.0 and all(math.isnan(v) for v in empty["width_mm"])
    two = np.zeros((1, 1, 50))  # two equal spikes 4.9 mm apart: the window holds both
    two[0, 0, 0] = two[0, 0, -1] = 1.0
    m = cloud_moments(two, origin, vox)
    assert math.isclose(m["width_mm"][0], 2.45, rel_tol=1e-9) and m["window_share"] == 1.0
