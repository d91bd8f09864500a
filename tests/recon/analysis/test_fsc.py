"""FSC curves: identities, analytic signal-plus-noise curves, thresholds, crossings, the mask correction."""

import dataclasses
import math

import numpy as np
import pytest

from recon.analysis.directional import directional_fsc
from recon.analysis.fsc import fsc_curve, information_threshold, resolution_at, soft_sphere_mask
from recon.errors import ConfigError
from tests.recon.analysis.fsc_maps import VOXEL_MM, N, k_radius, power_spectrum


def _expected_fsc(k: np.ndarray, sigma: float) -> np.ndarray:
    """E[FSC] per shell for the signal of `power` plus white noise σ²: ΣP / (ΣP + nσ²)."""
    shell = np.rint(k).astype(int).ravel()
    keep = shell <= N // 2
    sum_p = np.bincount(shell[keep], power_spectrum(k).ravel()[keep], N // 2 + 1)
    n = np.bincount(shell[keep], minlength=N // 2 + 1)
    return sum_p / (sum_p + n * sigma**2)


def _reference_fsc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward full-grid FSC (fftn, no Hermitian folding): the specification."""
    n = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    shell = np.rint(k_radius(n)).astype(int).ravel()
    keep = shell <= n // 2
    s = shell[keep]
    cross = np.bincount(s, (fa * fb.conj()).real.ravel()[keep])
    p1 = np.bincount(s, (np.abs(fa) ** 2).ravel()[keep])
    p2 = np.bincount(s, (np.abs(fb) ** 2).ravel()[keep])
    return cross / np.sqrt(p1 * p2), np.bincount(s)


def test_fsc_of_a_map_with_itself_is_one_in_every_shell():
    v = np.random.default_rng(0).standard_normal((N, N, N))
    curve = fsc_curve(v, v, VOXEL_MM)
    np.testing.assert_allclose(curve.fsc, 1.0, atol=1e-12)
    np.testing.assert_allclose(fsc_curve(v, 3.0 * v + 0.0, VOXEL_MM).fsc, 1.0, atol=1e-12)
    np.testing.assert_allclose(fsc_curve(v, -v, VOXEL_MM).fsc, -1.0, atol=1e-12)
    assert curve.shell.tolist() == list(range(N // 2 + 1))


@pytest.mark.parametrize("n", [15, 16])
def test_half_space_sums_match_the_full_grid_definition(n):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal((2, n, n, n))
    b = a + 2.0 * b
    expected, counts = _reference_fsc(a, b)
    curve = fsc_curve(a, b, 1.0)
    np.testing.assert_allclose(curve.fsc, expected, atol=1e-12)
    np.testing.assert_array_equal(curve.n_voxels, counts)


def test_frequencies_resolutions_and_nyquist_of_a_64_grid_with_10um_voxels():
    v = np.random.default_rng(2).standard_normal((N, N, N))
    curve = fsc_curve(v, v, VOXEL_MM)
    assert curve.nyquist_um == pytest.approx(20.0)
    assert curve.resolution_um[-1] == pytest.approx(20.0)
    assert math.isinf(curve.resolution_um[0])
    np.testing.assert_allclose(curve.frequency_per_mm, curve.shell / (N * VOXEL_MM))
    np.testing.assert_allclose(curve.resolution_um[1:], 1000.0 / curve.frequency_per_mm[1:])
    crossing = resolution_at(curve, "0.143")
    assert crossing.reached_nyquist
    assert crossing.shell == N // 2
    assert crossing.resolution_um == pytest.approx(20.0)
    assert crossing.interpolated_resolution_um == pytest.approx(20.0)


def test_information_thresholds_at_1000_voxels():
    assert information_threshold(1000, "half-bit") == pytest.approx(0.2164, abs=1e-4)
    assert information_threshold(1000, "one-bit") == pytest.approx(0.3731, abs=1e-4)
    # Small shells demand more correlation; large shells tend to s/(s + 1).
    t = information_threshold(np.array([10, 100, 1e4, 1e8]), "half-bit")
    assert np.all(np.diff(t) < 0)
    assert t[-1] == pytest.approx(0.2071 / 1.2071, abs=1e-3)


def test_curve_carries_the_four_threshold_arrays(halves):
    a, b, _ = halves
    curve = fsc_curve(a, b, VOXEL_MM)
    np.testing.assert_allclose(curve.threshold_0143, 0.143)
    np.testing.assert_allclose(curve.threshold_05, 0.5)
    np.testing.assert_allclose(curve.threshold_half_bit, information_threshold(curve.n_voxels, "half-bit"))
    np.testing.assert_allclose(curve.threshold_one_bit, information_threshold(curve.n_voxels, "one-bit"))
    with pytest.raises(ValueError):
        curve.fsc[0] = 0.0  # read-only


def test_resolution_at_reports_the_last_shell_before_the_drop_and_the_interpolated_crossing():
    v = np.random.default_rng(3).standard_normal((N, N, N))
    curve = dataclasses.replace(fsc_curve(v, v, VOXEL_MM), fsc=1.0 - np.arange(N // 2 + 1) / 20.0)
    c = resolution_at(curve, 0.143)  # 1 − r/20 = 0.143 at r = 17.14
    assert c.shell == 17 and not c.reached_nyquist
    assert c.interpolated_shell == pytest.approx(17.14)
    assert c.resolution_um == pytest.approx(N * VOXEL_MM * 1000 / 17)
    assert c.interpolated_resolution_um == pytest.approx(N * VOXEL_MM * 1000 / 17.14)
    assert resolution_at(curve, "0.5").shell == 10  # exactly 0.5 at r = 10 is not below
    assert resolution_at(curve, "half_bit").threshold == "half-bit"
    for bad in ("quarter-bit", 1.5, 0.0):
        with pytest.raises(ConfigError):
            resolution_at(curve, bad)


def test_signal_plus_independent_noise_gives_p_over_p_plus_sigma2(halves):
    a, b, k = halves
    curve = fsc_curve(a, b, VOXEL_MM)
    expected = _expected_fsc(k, 1.0)
    big = curve.n_voxels >= 1000
    assert big.sum() > 15
    assert np.mean(np.abs(curve.fsc - expected)[big]) <= 0.02
    # Every shell within 5 standard errors (≈ 1/√n).
    assert np.all(np.abs(curve.fsc - expected)[1:] <= 5.0 / np.sqrt(curve.n_voxels[1:]))
    expected_shell = int(np.flatnonzero(expected[1:] < 0.143)[0])  # last shell before the drop
    assert abs(resolution_at(curve, "0.143").shell - expected_shell) <= 1


def test_independent_noise_stays_within_4_over_sqrt_n():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, N, N, N))
    curve = fsc_curve(x, y, VOXEL_MM)
    assert np.all(np.abs(curve.fsc[1:]) < 4.0 / np.sqrt(curve.n_voxels[1:]))


def test_soft_sphere_mask_profile():
    m = soft_sphere_mask((33, 33, 33), 8.0, 4.0)
    centre = m[16, 16]  # (x) profile through the centre
    assert m.shape == (33, 33, 33) and m.min() == 0.0 and m.max() == 1.0
    assert np.all(centre[16:25] == 1.0)  # d ≤ 8
    assert centre[16 + 10] == pytest.approx(0.5)  # half-way through the edge
    assert np.all(centre[16 + 12 :] == 0.0)
    assert np.all(np.diff(centre[16:]) <= 0)
    hard = soft_sphere_mask((9, 9, 9), 3.0, 0.0)
    assert set(np.unique(hard)) == {0.0, 1.0}
    with pytest.raises(ConfigError):
        soft_sphere_mask((9, 9, 9), 0.0, 1.0)


def _blob_halves(rng, sigma=1.0):
    """A smooth blob (no power beyond a few shells) plus independent noise in each half."""
    ax = np.arange(N) - (N - 1) / 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    blob = 10.0 * np.exp(-(x**2 + y**2 + z**2) / (2 * 8.0**2))
    return blob + sigma * rng.standard_normal(blob.shape), blob + sigma * rng.standard_normal(blob.shape)


def test_phase_randomisation_leaves_an_unmasked_case_essentially_unchanged():
    a, b = _blob_halves(np.random.default_rng(6))
    curve = fsc_curve(a, b, VOXEL_MM, mask=np.ones_like(a), seed=1)
    start = curve.randomize_from_shell
    assert start is not None and 1 <= start < N // 2
    np.testing.assert_array_equal(curve.fsc[:start], curve.fsc_masked[:start])
    np.testing.assert_allclose(curve.fsc_masked, curve.fsc_unmasked, atol=1e-12)
    assert np.all(np.abs(curve.fsc - curve.fsc_masked)[start:] < 4.0 / np.sqrt(curve.n_voxels[start:]))


def test_phase_randomisation_removes_mask_induced_correlation():
    a, b = _blob_halves(np.random.default_rng(7))
    mask = soft_sphere_mask(a.shape, 10.0, 1.0)  # cuts through the blob: a sharp, shared edge
    curve = fsc_curve(a, b, VOXEL_MM, mask=mask, seed=2)
    high = slice(16, None)  # no signal here: the true FSC is ~0
    assert np.mean(np.abs(curve.fsc_unmasked[high])) < 0.05
    inflated = np.mean(curve.fsc_masked[high])
    assert inflated > 0.3
    assert np.mean(np.abs(curve.fsc[high])) < min(0.15, inflated / 3)
    # The cones are corrected too (x, y, z only; a cone of this tiny masked region is noisy,
    # so compare the mean over the three cones).
    cones = directional_fsc(a, b, VOXEL_MM, mask=mask, n_directions=0, seed=2)
    raw = directional_fsc(a, b, VOXEL_MM, mask=mask, n_directions=0, correct_mask=False)
    assert np.mean(raw.fsc[:, high]) > 0.3
    assert abs(np.mean(cones.fsc[:, high])) < np.mean(raw.fsc[:, high]) / 2
    uncorrected = fsc_curve(a, b, VOXEL_MM, mask=mask, correct_mask=False)
    assert uncorrected.fsc_randomized is None
    np.testing.assert_allclose(uncorrected.fsc, curve.fsc_masked)


def test_no_correction_when_the_unmasked_fsc_never_drops_below_0_8():
    v = np.random.default_rng(8).standard_normal((16, 16, 16))
    curve = fsc_curve(v, v, 1.0, mask=soft_sphere_mask(v.shape, 5.0, 2.0))
    assert curve.randomize_from_shell is None and curve.fsc_randomized is None


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    v = torch.randn(16, 16, 16, dtype=torch.float64, requires_grad=True)
    np.testing.assert_allclose(fsc_curve(v, v, 1.0).fsc, 1.0, atol=1e-12)
