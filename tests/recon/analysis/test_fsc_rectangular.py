"""FSC on grids that are not cubes, with voxels that are not cubes, against an independent reference.

The reference below is written from the definition, not from recon's code: the full complex FFT
(``fftn``, no half-space weights), every Fourier voxel's physical frequency from its index and
the axis' length, shells of width ``1/L`` (``L`` the longest edge of the box), and a plain loop
over shells up to the coarsest axis' Nyquist.
"""

import math

import numpy as np
import pytest

from recon.analysis.fsc import MIN_SHELL_VOXELS, fsc_curve, resolution_at
from recon.analysis.resolution import compare_volumes
from recon.analysis.spectra import fourier_grid
from tests.recon.analysis.fsc_maps import as_volume


def reference_fsc(a: np.ndarray, b: np.ndarray, voxel_xyz: tuple[float, float, float]):
    """(frequency 1/mm, FSC, voxel count) per shell, by brute force over the full FFT."""
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    nz, ny, nx = a.shape
    dx, dy, dz = voxel_xyz
    length = max(nx * dx, ny * dy, nz * dz)
    last = math.floor(length / (2 * max(dx, dy, dz)) + 1e-9)
    cross = np.zeros(last + 1)
    p1 = np.zeros(last + 1)
    p2 = np.zeros(last + 1)
    count = np.zeros(last + 1)
    for k in range(nz):
        fz = (k if k <= nz // 2 else k - nz) / (nz * dz)
        for j in range(ny):
            fy = (j if j <= ny // 2 else j - ny) / (ny * dy)
            for i in range(nx):
                fx = (i if i <= nx // 2 else i - nx) / (nx * dx)
                if nx % 2 == 0 and i == nx // 2:
                    fx = -fx  # numpy's convention for the Nyquist bin; |f| is the same
                shell = math.floor(math.sqrt(fx * fx + fy * fy + fz * fz) * length + 0.5 + 1e-9)  # ½ up
                if shell > last:
                    continue
                u, w = fa[k, j, i], fb[k, j, i]
                cross[shell] += (u * np.conj(w)).real
                p1[shell] += abs(u) ** 2
                p2[shell] += abs(w) ** 2
                count[shell] += 1
    return np.arange(last + 1) / length, cross / np.sqrt(p1 * p2), count


def _maps(shape, seed):
    """A smooth object plus independent noise in each map: an FSC that falls through the thresholds."""
    rng = np.random.default_rng(seed)
    obj = rng.standard_normal(shape)
    spectrum = np.fft.fftn(obj)
    axes = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    spectrum *= np.exp(-sum(f**2 for f in axes) / (2 * 0.12**2))
    obj = np.fft.ifftn(spectrum).real
    obj /= obj.std()
    return obj + 0.3 * rng.standard_normal(shape), obj + 0.3 * rng.standard_normal(shape)


@pytest.mark.parametrize("shape, voxel", [
    ((10, 14, 12), (0.02, 0.02, 0.02)),   # a box that is not a cube, cubic voxels
    ((8, 12, 15), (0.03, 0.02, 0.025)),  # odd x, voxels of three different edges
    ((12, 12, 12), (0.02, 0.02, 0.02)),  # the cube: the usual round(|k|) shells
])
def test_the_curve_is_the_reference_on_any_box_and_voxel(shape, voxel):
    a, b = _maps(shape, seed=sum(shape))
    curve = fsc_curve(a, b, voxel)
    freq, fsc, count = reference_fsc(a, b, voxel)
    assert len(curve.fsc) == len(fsc)
    np.testing.assert_allclose(curve.frequency_per_mm, freq, rtol=1e-12)
    np.testing.assert_allclose(curve.fsc, fsc, atol=1e-10)
    np.testing.assert_allclose(curve.n_voxels, count)
    length = max(n * d for n, d in zip(shape[::-1], voxel, strict=True))
    assert curve.box_mm == pytest.approx(length)
    assert curve.nyquist_um == pytest.approx(1000 * length / (len(fsc) - 1))


def test_the_cube_keeps_the_reference_conventions():
    """On an N³ grid of edge Δ: shells 0 … N/2, frequency r/(NΔ), Nyquist 2Δ (REFERENCE §5)."""
    a, b = _maps((16, 16, 16), seed=3)
    curve = fsc_curve(a, b, 0.025)
    assert len(curve.fsc) == 9 and curve.nyquist_um == pytest.approx(50.0)
    np.testing.assert_allclose(curve.frequency_per_mm, np.arange(9) / 0.4)


def test_a_volume_and_its_resolution_are_compared_without_padding():
    """compare_volumes on a non-cubic grid gives the reference curve's crossing (no pad to a cube)."""
    shape, voxel = (10, 16, 12), (0.02, 0.02, 0.02)
    a, b = _maps(shape, seed=7)
    result = compare_volumes(as_volume(a, voxel=0.02), as_volume(b, voxel=0.02), threshold="0.5",
                             directional=False)
    freq, fsc, _ = reference_fsc(a, b, voxel)
    below = int(np.flatnonzero(fsc[1:] < 0.5)[0]) + 1  # first shell under 0.5
    assert result.crossing.shell == below - 1
    assert result.crossing.resolution_um == pytest.approx(1000 / freq[below - 1])
    assert resolution_at(result.curve, "0.5") == result.crossing


def test_a_radius_halfway_between_shells_goes_up_whatever_its_last_bit():
    """On 8 × 8 × 12 (z longest) the short axes step by 1.5 shells: 1.5 → 2 and 4.5 → 5 (not to even)."""
    geo = fourier_grid((12, 8, 8), 0.02)
    k = geo.k_xyz
    for radius, shell in ((1.5, 2), (4.5, 5), (3.0, 3)):
        on_y = (np.abs(k[:, 0]) < 1e-9) & (np.abs(k[:, 2]) < 1e-9) & (np.abs(np.abs(k[:, 1]) - radius) < 1e-9)
        assert on_y.any() and set(geo.shell[on_y].tolist()) == {shell}


def test_a_dip_in_a_shell_of_two_voxels_does_not_set_the_resolution():
    """On 8 × 8 × 12 shell 1 holds only kz = ±1: a chance anti-correlation there is not a crossing."""
    a, _ = _maps((12, 8, 8), seed=4)
    spectrum = np.fft.fftn(a)
    spectrum[1, 0, 0] *= -1  # kz = ±1 (Hermitian pair), the whole of shell 1
    spectrum[-1, 0, 0] *= -1
    b = np.fft.ifftn(spectrum).real
    curve = fsc_curve(a, b, 0.02)
    assert curve.n_voxels[1] == 2 and curve.fsc[1] < -0.99 and np.all(curve.fsc[2:] > 0.99)
    assert MIN_SHELL_VOXELS > 2 and curve.n_voxels[2] >= MIN_SHELL_VOXELS
    crossing = resolution_at(curve, "0.5")
    assert crossing.reached_nyquist and crossing.shell == len(curve.fsc) - 1
