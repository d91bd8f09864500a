"""Fourier shell correlation: analytic truths, noise statistics, masks, cones, grids, outputs."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

import recon.fsc as fsc_module
from recon.errors import ConfigError, DataError, ShapeError
from recon.fsc import (
    CSV_COLUMNS,
    THRESHOLDS,
    compare_volumes,
    directional_fsc,
    fibonacci_directions,
    fsc_curve,
    fsc_report,
    information_threshold,
    pad_to_cube,
    resample_like,
    resolution_at,
    soft_sphere_mask,
    write_fsc_outputs,
)
from recon.volume import Volume

N = 64
VOXEL_MM = 0.01  # 10 µm


def _radius(n: int) -> np.ndarray:
    """(n, n, n) |k| in Fourier-voxel units, full-grid (fftn) layout."""
    k = np.fft.fftfreq(n, 1.0 / n)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.sqrt(kx**2 + ky**2 + kz**2)


def _power(k: np.ndarray) -> np.ndarray:
    """Signal power per voxel: flat, then a steep fall, FSC = 0.143 near |k| ≈ 18 (of 32)."""
    return 100.0 / (1.0 + (k / 16.0) ** 48)


def _signal(power: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real random field whose expected |F(k)|² is ``n³ · power(k)``."""
    white = rng.standard_normal(power.shape)
    return np.fft.ifftn(np.fft.fftn(white) * np.sqrt(power)).real


def _halves(rng, sigma=1.0, blur_z=0.0):
    """Signal (optionally blurred along array axis 0 = z) plus independent noise, twice."""
    k = _radius(N)
    signal = _signal(_power(k), rng)
    if blur_z:
        signal = gaussian_filter1d(signal, blur_z, axis=0, mode="wrap")
    a = signal + sigma * rng.standard_normal(signal.shape)
    b = signal + sigma * rng.standard_normal(signal.shape)
    return a, b, k


def _expected_fsc(k: np.ndarray, sigma: float) -> np.ndarray:
    """E[FSC] per shell for the signal of `_power` plus white noise σ²: ΣP / (ΣP + nσ²)."""
    shell = np.rint(k).astype(int).ravel()
    keep = shell <= N // 2
    sum_p = np.bincount(shell[keep], _power(k).ravel()[keep], N // 2 + 1)
    n = np.bincount(shell[keep], minlength=N // 2 + 1)
    return sum_p / (sum_p + n * sigma**2)


def _reference_fsc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Straightforward full-grid FSC (fftn, no Hermitian folding): the specification."""
    n = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    shell = np.rint(_radius(n)).astype(int).ravel()
    keep = shell <= n // 2
    s = shell[keep]
    cross = np.bincount(s, (fa * fb.conj()).real.ravel()[keep])
    p1 = np.bincount(s, (np.abs(fa) ** 2).ravel()[keep])
    p2 = np.bincount(s, (np.abs(fb) ** 2).ravel()[keep])
    return cross / np.sqrt(p1 * p2), np.bincount(s)


def _volume(data, voxel=VOXEL_MM, origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(data=np.asarray(data, dtype=np.float32), origin_mm=origin, voxel_size_mm=(voxel,) * 3)


@pytest.fixture(scope="module")
def halves():
    return _halves(np.random.default_rng(1))


# ---- analytic truths and identities --------------------------------------------------------


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


# ---- statistics of signal and noise -------------------------------------------------------


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


# ---- masks and the phase-randomisation correction -----------------------------------------


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


# ---- directional FSC ----------------------------------------------------------------------


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
    a, b, _ = _halves(np.random.default_rng(9), blur_z=2.0)
    cones = directional_fsc(a, b, VOXEL_MM, threshold="0.143", n_directions=150)
    assert abs(cones.shell[0] - cones.shell[1]) <= 1  # x and y untouched
    assert cones.shell[2] <= min(cones.shell[:2]) - 3  # z worse by several shells
    assert cones.resolution_z_um > max(cones.resolution_x_um, cones.resolution_y_um)
    assert cones.worst_resolution_um >= cones.resolution_z_um * 0.95
    assert abs(cones.worst_direction[2]) > 0.9  # the worst cone points along z
    assert cones.anisotropy_ratio < 0.8
    assert cones.sphericity < 0.99


# ---- volumes, grids and outputs -----------------------------------------------------------


def test_mismatched_grids_raise_shape_error():
    rng = np.random.default_rng(10)
    v = rng.standard_normal((16, 16, 16))
    with pytest.raises(ShapeError, match=r"\(16, 16, 16\).*\(16, 16, 15\)"):
        fsc_curve(v, v[:, :, :15], 1.0)
    with pytest.raises(ShapeError, match="not cubic"):
        fsc_curve(v[:, :, :15], v[:, :, :15], 1.0)
    with pytest.raises(ShapeError, match="isotropic"):
        fsc_curve(v, v, (1.0, 1.0, 2.0))
    with pytest.raises(ShapeError, match="mask"):
        fsc_curve(v, v, 1.0, mask=np.ones((8, 8, 8)))
    with pytest.raises(DataError):
        fsc_curve(np.full_like(v, np.nan), v, 1.0)
    a = _volume(v)
    for other in (_volume(v[:, :, :15]), _volume(v, voxel=0.02), _volume(v, origin=(0.0, 0.0, 1e-3))):
        with pytest.raises(ShapeError, match="A has shape .* B has shape .*resample"):
            compare_volumes(a, other, threshold="0.143")
    flat = _volume(v[:8])
    with pytest.raises(ShapeError, match="pad_to_cube"):
        compare_volumes(flat, flat, threshold="0.143")
    # Within 1e-6 mm the grids count as equal.
    compare_volumes(a, _volume(v, origin=(0.0, 0.0, 1e-7)), threshold="0.5", directional=False)


def test_compare_volumes_and_outputs(halves, tmp_path):
    a, b, _ = halves
    result = compare_volumes(_volume(a), _volume(b), threshold="half-bit", mask="sphere",
                             n_directions=100, labels=("half1.tif", "half2.tif"))
    assert result.threshold == "half-bit" and result.mask == "sphere"
    assert set(result.crossings) == set(THRESHOLDS)
    assert result.crossing == result.crossings["half-bit"]
    assert result.curve.fsc_randomized is not None
    paths = write_fsc_outputs(result, tmp_path / "fsc")
    assert sorted(p.name for p in (tmp_path / "fsc").iterdir()) == ["fsc.csv", "fsc.json", "fsc.png"]

    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == N // 2 + 1
    assert rows[0]["resolution_um"] == "inf"
    assert float(rows[-1]["resolution_um"]) == pytest.approx(20.0)
    np.testing.assert_allclose([float(r["fsc"]) for r in rows], result.curve.fsc, atol=1e-7)
    np.testing.assert_allclose([float(r["thr_half_bit"]) for r in rows], result.curve.threshold_half_bit,
                               rtol=1e-7)

    report = json.loads(paths["json"].read_text())
    assert report == json.loads(json.dumps(fsc_report(result)))
    assert report["threshold"] == "half-bit"
    assert report["resolution_um"] == pytest.approx(result.crossing.resolution_um)
    assert set(report["resolutions"]) == set(THRESHOLDS)
    assert report["grid"]["shape_zyx"] == [N, N, N] and report["grid"]["voxel_size_mm"] == VOXEL_MM
    assert report["nyquist_um"] == pytest.approx(20.0)
    directional = report["directional"]
    assert {"resolution_x_um", "resolution_y_um", "resolution_z_um", "best_resolution_um",
            "worst_resolution_um", "sphericity", "anisotropy_ratio"} <= set(directional)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_without_directional_or_mask(tmp_path):
    v = np.random.default_rng(11).standard_normal((16, 16, 16))
    result = compare_volumes(_volume(v), _volume(v), threshold=0.5, directional=False)
    assert result.directional is None and result.crossing.reached_nyquist
    paths = write_fsc_outputs(result, tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["directional"] is None and report["reached_nyquist"] is True
    assert report["mask"] == {"kind": "none"}
    with pytest.raises(ConfigError):
        compare_volumes(_volume(v), _volume(v), threshold="0.143", mask="cube")


def test_pad_to_cube_keeps_world_positions():
    data = np.random.default_rng(12).standard_normal((4, 6, 10)).astype(np.float32)
    vol = Volume(data=data, origin_mm=(1.0, 2.0, 3.0), voxel_size_mm=(0.5, 0.5, 0.5))
    cube = pad_to_cube(vol)
    assert cube.shape == (10, 10, 10)
    k, j = (10 - 4) // 2, (10 - 6) // 2
    np.testing.assert_array_equal(cube.data[k : k + 4, j : j + 6, :], data)
    assert cube.data.sum() == pytest.approx(data.sum(), rel=1e-5)
    np.testing.assert_allclose(cube.points()[k, j, 0].numpy(), vol.points()[0, 0, 0].numpy())
    assert pad_to_cube(cube) is cube


def test_resample_like_is_the_identity_on_the_same_grid_and_averages_onto_coarser_voxels():
    def blob(vol_shape, voxel, origin):
        ax = [np.arange(n) * voxel + o for n, o in zip(vol_shape[::-1], origin, strict=True)]
        z, y, x = np.meshgrid(ax[2], ax[1], ax[0], indexing="ij")
        return np.exp(-(x**2 + y**2 + z**2) / (2 * 1.0**2))

    fine = _volume(blob((40, 40, 40), 0.1, (-1.95,) * 3), voxel=0.1, origin=(-1.95,) * 3)
    same = resample_like(fine, fine)
    np.testing.assert_allclose(same.data, fine.data, atol=1e-6)
    coarse_grid = _volume(np.zeros((16, 16, 16)), voxel=0.2, origin=(-1.5,) * 3)
    coarse = resample_like(fine, coarse_grid)
    assert coarse.shape == (16, 16, 16) and coarse.voxel_size_mm == (0.2, 0.2, 0.2)
    np.testing.assert_allclose(coarse.data, blob((16, 16, 16), 0.2, (-1.5,) * 3), atol=0.02)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    v = torch.randn(16, 16, 16, dtype=torch.float64, requires_grad=True)
    np.testing.assert_allclose(fsc_curve(v, v, 1.0).fsc, 1.0, atol=1e-12)


def test_all_names_resolve():
    for name in fsc_module.__all__:
        assert hasattr(fsc_module, name), name
