"""Fourier-space machinery shared by the FSC curves and the directional FSC.

Maps are checked and converted (:func:`as_map`), transformed to the half-space (rfftn) grid of
the volume as it is — any (Z, Y, X) shape, any voxel edges (:class:`FourierGrid`) — summed shell
by shell in physical frequency (:func:`shell_sums`) and correlated
(:func:`correlation`); a soft mask's own correlation is removed by phase randomisation
(:func:`randomize_phases`, :func:`mask_corrected`; Chen et al. 2013,
doi:10.1016/j.ultramic.2013.06.004). Everything is float64 NumPy, not differentiable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from recon.errors import DataError, ShapeError
from recon.io.volume import Volume

__all__ = [
    "FourierGrid",
    "Spectra",
    "as_map",
    "check_pair",
    "correlation",
    "fourier_grid",
    "voxel_edges",
    "mask_corrected",
    "prepare_mask",
    "randomize_phases",
    "readonly",
    "rfft_flat",
    "shell_sums",
]


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as an array that cannot be written to (curves are shared, not copied)."""
    a = np.asarray(a)
    a.setflags(write=False)
    return a


def as_map(x: Any, name: str, where: str) -> np.ndarray:
    """A 3-D float64 array of ``x`` (NumPy or torch); one-line errors for other shapes or NaN/inf."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3:
        raise ShapeError(f"{where}: {name} must be a 3-D (z, y, x) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{where}: {name} holds NaN or inf values; replace them before the FSC")
    return a


def voxel_edges(voxel_size_mm: float | tuple[float, ...], where: str) -> tuple[float, float, float]:
    """The voxel edges ``(Δx, Δy, Δz)`` in mm (a number for cubic voxels); a ShapeError otherwise."""
    sizes = np.atleast_1d(np.asarray(voxel_size_mm, dtype=np.float64))
    if sizes.size not in (1, 3) or not np.all(np.isfinite(sizes)) or not np.all(sizes > 0):
        raise ShapeError(
            f"{where}: voxel_size_mm must be a positive number or (x, y, z), got {voxel_size_mm!r}"
        )
    sizes = np.broadcast_to(sizes, (3,))
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


def check_pair(a: np.ndarray, b: np.ndarray, where: str) -> tuple[int, int, int]:
    """The (Z, Y, X) shape of two maps on the same grid; a ShapeError naming the fix otherwise."""
    if a.shape != b.shape:
        raise ShapeError(
            f"{where}: the maps have different grids, {a.shape} and {b.shape} (z, y, x); "
            "resample one onto the other's grid (e.g. recon.analysis.grids.resample_like)"
        )
    if min(a.shape) < 4:
        raise ShapeError(f"{where}: a grid of {a.shape} is too small for an FSC; use ≥ 4 voxels per edge")
    return tuple(int(n) for n in a.shape)


@dataclass(frozen=True)
class FourierGrid:
    """Geometry of the half-space (rfftn) Fourier grid of a (Z, Y, X) volume, flattened.

    Shells are spaced in physical frequency by ``1/L``, ``L = max_i N_i Δ_i`` the longest edge of
    the box (the finest frequency step any axis has); shell ``r`` is ``round(|f| L)`` (halves
    rounded up), f the frequency in 1/mm. The last full shell ``r_max`` is the Nyquist of the coarsest axis,
    ``floor(L / (2 max Δ))``; entries beyond it (the corners, and the other axes' higher
    frequencies) are dropped. On an N³ grid of edge Δ this is the usual ``round(|k|)``, ``N/2``.
    """

    shape: tuple[int, int, int]  # (Z, Y, X)
    box_mm: float  # L
    r_max: int
    shell: np.ndarray  # (M,) round(|f| L); > r_max means dropped
    weight: np.ndarray  # (M,) 1 or 2: how many voxels of the full grid each entry stands for
    k_xyz: np.ndarray  # (M, 3) frequency (fx, fy, fz) · L, in shell units


def fourier_grid(shape: int | tuple[int, int, int], voxel_size_mm: float | tuple[float, ...] = 1.0
                 ) -> FourierGrid:
    """The shells, Hermitian weights and frequencies of the rfftn grid of a (Z, Y, X) volume.

    Args:
        shape: ``N`` for an N³ grid, or ``(Z, Y, X)``.
        voxel_size_mm: voxel edges ``(Δx, Δy, Δz)`` or one edge, mm.
    """
    nz, ny, nx = (shape,) * 3 if isinstance(shape, int | np.integer) else tuple(shape)
    dx, dy, dz = voxel_edges(voxel_size_mm, "fourier_grid")
    box = max(nx * dx, ny * dy, nz * dz)
    fz = np.fft.fftfreq(nz, dz) * box  # frequency × L: integers on the longest axis
    fy = np.fft.fftfreq(ny, dy) * box
    fx = np.fft.rfftfreq(nx, dx) * box  # the last array axis is x; rfftn keeps fx ≥ 0
    kz, ky, kx = np.meshgrid(fz, fy, fx, indexing="ij")
    radius = np.sqrt(kx**2 + ky**2 + kz**2)
    # The half-space stands for the full grid by Hermitian symmetry: entries with 0 < kx < Nx/2
    # have a mirror twin at −k; kx = 0 and (even Nx) kx = Nx/2 planes are their own mirror.
    weight_x = np.full(fx.shape, 2.0)
    weight_x[0] = 1.0
    if nx % 2 == 0:
        weight_x[-1] = 1.0
    weight = np.broadcast_to(weight_x, radius.shape)
    r_max = int(math.floor(box / (2 * max(dx, dy, dz)) + 1e-9))
    return FourierGrid(
        shape=(int(nz), int(ny), int(nx)),
        box_mm=float(box),
        r_max=r_max,
        # round half up: a radius of exactly r + ½ (rational edge ratios: 1.5 on a 64 × 64 × 96
        # grid) goes to shell r + 1 whatever its last bit, where rint would round half to even
        shell=np.floor(radius + 0.5 + 1e-9).astype(np.int64).ravel(),
        weight=weight.ravel().astype(np.float64),
        k_xyz=np.stack([kx.ravel(), ky.ravel(), kz.ravel()], axis=-1),
    )


def rfft_flat(a: np.ndarray) -> np.ndarray:
    """The half-space (rfftn) transform of a map, flattened.

    scipy's FFT: in the map's precision, as numpy's, and quicker than numpy's on the prime edge
    lengths a fit's grid often has (137³: the FSC of every fit with a truth transforms two maps).
    """
    import scipy.fft

    return scipy.fft.rfftn(a).ravel()


def shell_sums(f1: np.ndarray, f2: np.ndarray, geo: FourierGrid) -> tuple[np.ndarray, ...]:
    """Per-shell Σ Re F1F2*, Σ|F1|², Σ|F2|² and voxel counts over the full grid."""
    keep = geo.shell <= geo.r_max
    s, w = geo.shell[keep], geo.weight[keep]
    a, b = f1[keep], f2[keep]
    length = geo.r_max + 1
    cross = np.bincount(s, w * (a.real * b.real + a.imag * b.imag), length)
    p1 = np.bincount(s, w * (a.real**2 + a.imag**2), length)
    p2 = np.bincount(s, w * (b.real**2 + b.imag**2), length)
    n = np.bincount(s, w, length)
    return cross, p1, p2, n


def correlation(cross: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    """Σ Re F1F2* / √(Σ|F1|² Σ|F2|²) per shell; 0 where a map has no power."""
    den = np.sqrt(p1 * p2)
    ok = den > 0
    return np.where(ok, cross / np.where(ok, den, 1.0), 0.0)


def randomize_phases(a: np.ndarray, shell: np.ndarray, from_shell: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``a`` with the Fourier phases of shells ≥ ``from_shell`` replaced by random ones."""
    f = np.fft.rfftn(a)
    # Phases of the transform of real white noise: uniform and Hermitian-consistent.
    noise = np.fft.rfftn(rng.standard_normal(a.shape))
    phase = noise / np.maximum(np.abs(noise), 1e-300)
    hi = (shell >= from_shell).reshape(f.shape)
    f = np.where(hi, np.abs(f) * phase, f)
    return np.fft.irfftn(f, s=a.shape, axes=(0, 1, 2))


def prepare_mask(mask: Any, shape: tuple[int, ...], where: str) -> np.ndarray | None:
    """The mask (array or Volume) as float64 on the maps' grid, or None."""
    if mask is None:
        return None
    if isinstance(mask, Volume):
        mask = mask.data
    m = as_map(mask, "mask", where)
    if m.shape != shape:
        raise ShapeError(
            f"{where}: mask has shape {m.shape}, the maps {shape}; give a mask on the maps' grid"
        )
    return m


@dataclass(frozen=True, eq=False)
class Spectra:
    """Half-space transforms behind a curve.

    The (masked) maps and, when corrected, their masked phase-randomised twins together with
    the first randomised shell.
    """

    fa: np.ndarray
    fb: np.ndarray
    random_a: np.ndarray | None = None
    random_b: np.ndarray | None = None
    randomize_from_shell: int | None = None


def mask_corrected(masked: np.ndarray, randomized: np.ndarray, start: int) -> np.ndarray:
    """Chen et al. (2013): (FSC_t − FSC_n)/(1 − FSC_n) for shells ≥ ``start`` (last axis)."""
    one_minus = 1.0 - randomized
    safe = np.abs(one_minus) > 1e-12
    corrected = np.where(safe, (masked - randomized) / np.where(safe, one_minus, 1.0), 0.0)
    return np.where(np.arange(masked.shape[-1]) >= start, corrected, masked)
