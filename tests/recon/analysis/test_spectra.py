"""Fourier machinery: the half-space grid, shell sums (Parseval), correlation, checks, random phases."""

import numpy as np
import pytest
import torch

from recon.analysis.spectra import (
    as_map,
    check_pair,
    correlation,
    fourier_grid,
    mask_corrected,
    prepare_mask,
    randomize_phases,
    readonly,
    rfft_flat,
    shell_sums,
    voxel_edges,
)
from recon.errors import DataError, ShapeError
from recon.io.volume import Volume


def _full_grid_shells(n):
    """round(|k|) on the full (fftn) grid of an N³ volume."""
    k = np.fft.fftfreq(n, 1.0 / n)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.rint(np.sqrt(kx**2 + ky**2 + kz**2)).astype(int)


@pytest.mark.parametrize("n", [4, 5, 8, 9])
def test_hermitian_weights_stand_for_the_full_grid(n):
    geo = fourier_grid(n)
    assert geo.shell.shape == geo.weight.shape == (n * n * (n // 2 + 1),)
    assert geo.k_xyz.shape == (len(geo.shell), 3)
    assert geo.weight.sum() == n**3
    assert set(np.unique(geo.weight)) == {1.0, 2.0}
    assert geo.r_max == n // 2
    # Weighted voxel counts per shell are those of the full grid.
    full = np.bincount(_full_grid_shells(n).ravel())
    assert np.array_equal(np.bincount(geo.shell, geo.weight), full)


def test_frequencies_follow_the_rfftn_layout():
    n = 8
    x = np.arange(n)
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    kx, ky, kz = 2, -1, 3
    wave = np.cos(2 * np.pi * (kx * xx + ky * y + kz * z) / n)
    f = rfft_flat(wave)
    geo = fourier_grid(n)
    peak = geo.k_xyz[np.argmax(np.abs(f))]
    assert tuple(peak) == (kx, ky, kz)  # the half-space keeps kx ≥ 0
    assert geo.shell[np.argmax(np.abs(f))] == round(np.sqrt(kx**2 + ky**2 + kz**2))


@pytest.mark.parametrize("n", [6, 7])
def test_shell_sums_of_a_map_with_itself_are_parseval_per_shell(n):
    a = np.random.default_rng(n).standard_normal((n, n, n))
    geo = fourier_grid(n)
    f = rfft_flat(a)
    cross, p1, p2, counts = shell_sums(f, f, geo)
    assert len(cross) == geo.r_max + 1
    assert np.allclose(cross, p1) and np.array_equal(p1, p2)
    full_power = np.abs(np.fft.fftn(a)) ** 2
    shells = _full_grid_shells(n)
    expected = np.array([full_power[shells == r].sum() for r in range(geo.r_max + 1)])
    assert np.allclose(p1, expected, rtol=1e-12)
    assert np.array_equal(counts, [np.sum(shells == r) for r in range(geo.r_max + 1)])
    # With the corners beyond N/2 the shells hold all the power: N³ Σ a² (Parseval).
    corners = full_power[shells > geo.r_max].sum()
    assert p1.sum() + corners == pytest.approx(n**3 * (a**2).sum(), rel=1e-12)


def test_cross_sums_are_the_real_part_of_f1_times_conjugate_f2():
    n = 6
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, n, n, n))
    geo = fourier_grid(n)
    cross, _, _, _ = shell_sums(rfft_flat(a), rfft_flat(b), geo)
    fa, fb, shells = np.fft.fftn(a), np.fft.fftn(b), _full_grid_shells(n)
    expected = [np.real(fa * fb.conj())[shells == r].sum() for r in range(geo.r_max + 1)]
    assert np.allclose(cross, expected, rtol=1e-10, atol=1e-9)
    # Shell 0 is the product of the sums (the DC term).
    assert cross[0] == pytest.approx(a.sum() * b.sum())


def test_correlation_is_one_for_identical_maps_minus_one_for_opposite_and_zero_without_power():
    n = 8
    a = np.random.default_rng(1).standard_normal((n, n, n))
    geo = fourier_grid(n)
    fa = rfft_flat(a)
    assert np.allclose(correlation(*shell_sums(fa, fa, geo)[:3]), 1.0)
    assert np.allclose(correlation(*shell_sums(fa, -fa, geo)[:3]), -1.0)
    assert np.allclose(correlation(*shell_sums(fa, 3.0 * fa, geo)[:3]), 1.0)  # independent of scale
    with np.errstate(all="raise"):  # no 0/0 on the way
        zero = correlation(*shell_sums(fa, np.zeros_like(fa), geo)[:3])
    assert np.array_equal(zero, np.zeros(geo.r_max + 1))
    # Power in some shells only: 0 exactly where one map has none.
    low = np.where(geo.shell <= 1, fa, 0)
    got = correlation(*shell_sums(fa, low, geo)[:3])
    assert np.allclose(got[:2], 1.0) and np.array_equal(got[2:], np.zeros(geo.r_max - 1))


def test_as_map_accepts_numpy_and_torch_as_float64():
    a = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    got = as_map(a, "map", "fsc")
    assert got.dtype == np.float64 and np.array_equal(got, a)
    t = torch.arange(8.0, requires_grad=True).reshape(2, 2, 2)
    assert np.array_equal(as_map(t, "map", "fsc"), a)


def test_as_map_errors_name_the_map_and_the_caller():
    with pytest.raises(ShapeError, match=r"^fsc: half1 must be a 3-D \(z, y, x\) array, got shape \(4, 4\)$"):
        as_map(np.zeros((4, 4)), "half1", "fsc")
    bad = np.zeros((4, 4, 4))
    bad[1, 2, 3] = np.inf
    with pytest.raises(DataError, match="^fsc: half2 holds NaN or inf values; replace them"):
        as_map(bad, "half2", "fsc")
    bad[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        as_map(bad, "half2", "fsc")


def test_check_pair_returns_the_shape_or_names_the_fix():
    assert check_pair(np.zeros((6, 6, 6)), np.ones((6, 6, 6)), "fsc") == (6, 6, 6)
    with pytest.raises(ShapeError, match=r"different grids, \(6, 6, 6\) and \(6, 6, 5\).*resample_like"):
        check_pair(np.zeros((6, 6, 6)), np.zeros((6, 6, 5)), "fsc")
    assert check_pair(np.zeros((6, 8, 5)), np.zeros((6, 8, 5)), "fsc") == (6, 8, 5)  # any box shape
    with pytest.raises(ShapeError, match="too small for an FSC; use ≥ 4 voxels per edge"):
        check_pair(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), "fsc")


def test_voxel_edges_take_a_number_or_three_positive_edges():
    assert voxel_edges(0.02, "fsc") == (0.02, 0.02, 0.02)
    assert voxel_edges((0.1, 0.2, 0.3), "fsc") == (0.1, 0.2, 0.3)
    for bad in (0.0, -0.1, (0.1, 0.1), (0.1, -0.1, 0.1), float("nan")):
        with pytest.raises(ShapeError, match="voxel_size_mm must be a positive number or \\(x, y, z\\)"):
            voxel_edges(bad, "fsc")


def test_randomize_phases_keeps_the_amplitudes_and_the_low_shells():
    n, start = 12, 3
    rng = np.random.default_rng(4)
    a = rng.standard_normal((n, n, n))
    geo = fourier_grid(n)
    out = randomize_phases(a, geo.shell, start, np.random.default_rng(5))
    assert out.shape == a.shape and out.dtype == np.float64
    fa, fo = rfft_flat(a), rfft_flat(out)
    assert np.allclose(np.abs(fo), np.abs(fa), rtol=1e-9, atol=1e-9)
    low = geo.shell < start
    assert np.allclose(fo[low], fa[low], atol=1e-9)
    # The phases above are new: the map is uncorrelated with itself there.
    corr = correlation(*shell_sums(fa, fo, geo)[:3])
    assert np.allclose(corr[:start], 1.0)
    assert np.all(np.abs(corr[start + 1:]) < 0.3), corr
    again = randomize_phases(a, geo.shell, start, np.random.default_rng(5))
    assert np.array_equal(again, out)  # the generator fixes the phases


def test_mask_corrected_applies_chen_from_the_start_shell():
    masked = np.array([1.0, 0.9, 0.6, 0.5, 0.2])
    randomized = np.array([1.0, 0.8, 0.2, 1.0, 0.0])
    got = mask_corrected(masked, randomized, 2)
    assert np.array_equal(got[:2], masked[:2])  # below the start: unchanged
    assert got[2] == pytest.approx((0.6 - 0.2) / 0.8)
    assert got[3] == 0.0  # FSC_n = 1: no information, no division by zero
    assert got[4] == pytest.approx(0.2)
    both = mask_corrected(np.stack([masked, masked]), np.stack([randomized, randomized]), 2)
    assert np.array_equal(both[1], got)  # per curve along the last axis


def test_prepare_mask_accepts_arrays_and_volumes_on_the_maps_grid():
    assert prepare_mask(None, (4, 4, 4), "fsc") is None
    m = np.ones((4, 4, 4), np.float32)
    assert prepare_mask(m, (4, 4, 4), "fsc").dtype == np.float64
    vol = Volume(m, (0.0, 0.0, 0.0), (0.1, 0.1, 0.1))
    assert np.array_equal(prepare_mask(vol, (4, 4, 4), "fsc"), m)
    with pytest.raises(ShapeError, match=r"mask has shape \(4, 4, 4\), the maps \(5, 5, 5\)"):
        prepare_mask(m, (5, 5, 5), "fsc")


def test_readonly_arrays_cannot_be_written():
    a = readonly(np.zeros(3))
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1.0
