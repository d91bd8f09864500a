"""Directional FSC: cone directions, isotropy, the whole-shell limit, anisotropic blur."""

import numpy as np
import pytest

from recon.analysis.directional import directional_fsc, fibonacci_directions
from recon.analysis.fsc import fsc_curve, resolution_at
from recon.errors import ConfigError
from tests.recon.analysis.fsc_maps import VOXEL_MM, make_halves


def test_fibonacci_directions_are_unit_vectors_on_the_upper_half_sphere():
    d = fibonacci_directions(300)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    assert np.all(d[:, 2] > 0)
    assert np.abs(d[:, :2].mean(0)).max() < 0.02  # balanced in azimuth


def test_directional_fsc_of_an_isotropic_case_is_isotropic(halves):
    a, b, _ = halves
    cones = directional_fsc(a, b, VOXEL_MM, threshold="0.143", n_directions=150)
    assert cones.directions.shape == (153, 3)
    np.testing.assert_array_equal(cones.directions[:3], np.eye(3))
    assert np.ptp(cones.shell[:3]) <= 1
    assert cones.resolution_x_um == pytest.approx(cones.resolution_um[0])
    assert cones.anisotropy_ratio > 0.85
    assert cones.sphericity > 0.99
    assert cones.best_resolution_um <= cones.worst_resolution_um
    overall = resolution_at(fsc_curve(a, b, VOXEL_MM), "0.143").shell
    assert np.all(np.abs(cones.shell[:3] - overall) <= 2)


def test_a_90_degree_cone_is_the_whole_shell(halves):
    a, b, _ = halves
    cones = directional_fsc(a, b, VOXEL_MM, n_directions=5, cone_half_angle_deg=90.0)
    curve = fsc_curve(a, b, VOXEL_MM)
    np.testing.assert_allclose(cones.fsc, np.broadcast_to(curve.fsc, cones.fsc.shape), atol=1e-12)
    np.testing.assert_array_equal(cones.n_voxels, np.broadcast_to(curve.n_voxels, cones.n_voxels.shape))
    with pytest.raises(ConfigError):
        directional_fsc(a, b, VOXEL_MM, cone_half_angle_deg=0.0)


def test_blur_along_array_axis_0_worsens_the_z_resolution():
    a, b, _ = make_halves(np.random.default_rng(9), blur_z=2.0)
    cones = directional_fsc(a, b, VOXEL_MM, threshold="0.143", n_directions=150)
    assert abs(cones.shell[0] - cones.shell[1]) <= 1  # x and y untouched
    assert cones.shell[2] <= min(cones.shell[:2]) - 3  # z worse by several shells
    assert cones.resolution_z_um > max(cones.resolution_x_um, cones.resolution_y_um)
    assert cones.worst_resolution_um >= cones.resolution_z_um * 0.95
    assert abs(cones.worst_direction[2]) > 0.9  # the worst cone points along z
    assert cones.anisotropy_ratio < 0.8
    assert cones.sphericity < 0.99


def test_cones_without_a_usable_shell_do_not_claim_nyquist():
    """A cone none of whose shells holds min_cone_voxels voxels (each cone of a 12³ grid) measured nothing."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 12, 12, 12))  # independent: no resolution at all
    overall = resolution_at(fsc_curve(a, b, 0.1), "0.143")
    assert not overall.reached_nyquist
    cones = directional_fsc(a, b, 0.1)
    assert not cones.reached_nyquist[:3].any(), cones.resolution_um[:3]
    assert np.isinf(cones.resolution_um[:3]).all()  # undefined, shown as "—"


def test_the_cone_sums_are_the_voxel_by_direction_membership_sums():
    """Against the (voxels × directions) membership matrix, on an elongated grid with unequal voxels."""
    import math

    from recon.analysis import spectra as fourier
    from recon.analysis.directional import _cone_sums, fibonacci_directions

    rng = np.random.default_rng(4)
    shape = (9, 12, 16)
    a = rng.normal(size=shape)
    b = a + rng.normal(size=shape)
    geo = fourier.fourier_grid(shape, (0.02, 0.03, 0.05))
    fa, fb = fourier.rfft_flat(a), fourier.rfft_flat(b)
    dirs = np.concatenate([np.eye(3), fibonacci_directions(40)])
    cos_max = math.cos(math.radians(25))
    got = _cone_sums(fa, fb, geo, dirs, cos_max)

    keep = geo.shell <= geo.r_max
    w, shell, k = geo.weight[keep], geo.shell[keep], geo.k_xyz[keep]
    terms = np.stack([w * (fa[keep] * fb[keep].conj()).real, w * abs(fa[keep]) ** 2,
                      w * abs(fb[keep]) ** 2, w], -1)
    length = np.linalg.norm(k, axis=-1)
    cosines = np.abs(k @ dirs.T) / np.where(length > 0, length, 1)[:, None]
    inside = (cosines >= cos_max - 1e-12) | (shell == 0)[:, None]  # (M, D); the mean in every cone
    expected = np.stack([np.stack([(inside[shell == r, d, None] * terms[shell == r]).sum(0)
                                   for r in range(geo.r_max + 1)]) for d in range(len(dirs))])
    assert np.array_equal(got[..., 3], expected[..., 3])
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    whole = np.array([w[shell == r].sum() for r in range(geo.r_max + 1)])
    assert (got[:, 1:, 3] < whole[1:]).all()  # a 25° cone holds part of every shell
