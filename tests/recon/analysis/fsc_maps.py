"""Maps with known FSC shared by the FSC tests."""

import numpy as np
from scipy.ndimage import gaussian_filter1d

from recon.io.volume import Volume

N = 64


VOXEL_MM = 0.01  # 10 µm


def k_radius(n: int) -> np.ndarray:
    """(n, n, n) |k| in Fourier-voxel units, full-grid (fftn) layout."""
    k = np.fft.fftfreq(n, 1.0 / n)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.sqrt(kx**2 + ky**2 + kz**2)


def power_spectrum(k: np.ndarray) -> np.ndarray:
    """Signal power per voxel: flat, then a steep fall, FSC = 0.143 near |k| ≈ 18 (of 32)."""
    return 100.0 / (1.0 + (k / 16.0) ** 48)


def random_signal(power: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real random field whose expected |F(k)|² is ``n³ · power_spectrum(k)``."""
    white = rng.standard_normal(power.shape)
    return np.fft.ifftn(np.fft.fftn(white) * np.sqrt(power)).real


def make_halves(rng, sigma=1.0, blur_z=0.0):
    """Signal (optionally blurred along array axis 0 = z) plus independent noise, twice."""
    k = k_radius(N)
    signal = random_signal(power_spectrum(k), rng)
    if blur_z:
        signal = gaussian_filter1d(signal, blur_z, axis=0, mode="wrap")
    a = signal + sigma * rng.standard_normal(signal.shape)
    b = signal + sigma * rng.standard_normal(signal.shape)
    return a, b, k


def as_volume(data, voxel=VOXEL_MM, origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(data=np.asarray(data, dtype=np.float32), origin_mm=origin, voxel_size_mm=(voxel,) * 3)
