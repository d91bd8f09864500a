r"""Fourier shell correlation (FSC): the resolution of one map judged against another.

Two maps of the same object on the same cubic grid — two independent half reconstructions, or
a reconstruction and the simulation's truth — are compared shell by shell in Fourier space
(REFERENCE §5):

.. math::

    \mathrm{FSC}(r) = \frac{\operatorname{Re}\sum_{k \in r} F_1(k)\,F_2^*(k)}
                            {\sqrt{\sum_{k \in r} |F_1(k)|^2 \;\sum_{k \in r} |F_2(k)|^2}}

where shell ``r`` holds the Fourier voxels with ``round(|k|) = r`` (``k`` in Fourier-voxel
units, shell width 1, ``r = 0 … N/2``; voxels beyond ``N/2 + ½`` are dropped, the EMAN2,
RELION and 3DFSC convention). Shell ``r`` has spatial frequency ``r/(N·Δ)`` and resolution
(full period) ``N·Δ/r``; Nyquist (``r = N/2``) is ``2Δ``.

* :func:`fsc_curve` / :class:`FSCCurve` — the curve, its frequencies and resolutions, the voxel
  count of every (full) shell and the four standard thresholds; optionally with a soft mask on
  both maps and the phase-randomisation correction of the mask-induced correlation.
* :func:`resolution_at` / :class:`Crossing` — the resolution where the curve first crosses a
  threshold (RELION: the last shell before the drop) and the linearly interpolated crossing.
* :func:`information_threshold` — the half-bit and one-bit curves of van Heel & Schatz.
* :func:`soft_sphere_mask` — a sphere with a raised-cosine edge.
* :func:`directional_fsc` / :class:`DirectionalFSC` — FSC within cones (3DFSC): the resolution
  along x, y, z and over many directions, and the anisotropy.
* :func:`compare_volumes` / :class:`FSCResult` — all of the above for two
  :class:`~recon.volume.Volume` on the same grid; :func:`fsc_report` and
  :func:`write_fsc_outputs` turn it into ``fsc.csv``, ``fsc.json`` and ``fsc.png``.
* :func:`resample_like` and :func:`pad_to_cube` — bring a volume onto another's grid and onto a
  cubic grid, as the comparison requires.

Which threshold: ``0.143`` for two independent half maps (each has half the data; Rosenthal &
Henderson 2003), ``0.5`` against a noise-free ground truth, ``half-bit`` when the number of
voxels per shell is small (van Heel & Schatz 2005).

References:
    Rosenthal, P. B. & Henderson, R. (2003). Optimal determination of particle orientation,
    absolute hand, and contrast loss in single-particle electron cryomicroscopy. J. Mol. Biol.
    333, 721–745. doi:10.1016/j.jmb.2003.07.013

    van Heel, M. & Schatz, M. (2005). Fourier shell correlation threshold criteria. J. Struct.
    Biol. 151, 250–262. doi:10.1016/j.jsb.2005.05.009

    Chen, S. et al. (2013). High-resolution noise substitution to measure overfitting and
    validate resolution in 3D structure determination by single particle electron
    cryomicroscopy. Ultramicroscopy 135, 24–35. doi:10.1016/j.ultramic.2013.06.004

    Tan, Y. Z. et al. (2017). Addressing preferred specimen orientation in single-particle
    cryo-EM through tilting. Nat. Methods 14, 793–796. doi:10.1038/nmeth.4347

Everything here works in float64 NumPy and is not differentiable.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optics.atomic import atomic_path, atomic_write_text
from recon.errors import ConfigError, DataError, ShapeError
from recon.volume import Volume

__all__ = [
    "CSV_COLUMNS",
    "THRESHOLDS",
    "Crossing",
    "DirectionalFSC",
    "FSCCurve",
    "FSCResult",
    "compare_volumes",
    "directional_fsc",
    "fibonacci_directions",
    "fsc_curve",
    "fsc_report",
    "information_threshold",
    "pad_to_cube",
    "resample_like",
    "resolution_at",
    "soft_sphere_mask",
    "write_fsc_outputs",
]

#: The standard thresholds, by name: fixed values and van Heel & Schatz information curves.
THRESHOLDS = ("0.143", "0.5", "half-bit", "one-bit")

#: Columns of ``fsc.csv``, in order.
CSV_COLUMNS = (
    "shell", "frequency_per_mm", "resolution_um", "fsc", "n_voxels",
    "thr_0.143", "thr_0.5", "thr_half_bit", "thr_one_bit",
)

# van Heel & Schatz (2005): s = (2^bits − 1)/2 is the SNR of each half map at which the full map
# carries `bits` of information per voxel: (√2 − 1)/2 = 0.2071 for ½ bit, 0.5 for 1 bit.
_BIT_SNR = {"half-bit": 0.2071, "one-bit": 0.5}
_FIXED = {"0.143": 0.143, "0.5": 0.5}
_ALIASES = {"half_bit": "half-bit", "halfbit": "half-bit", "1/2-bit": "half-bit",
            "one_bit": "one-bit", "onebit": "one-bit", "1-bit": "one-bit"}
_FORMAT = "recon.fsc/1"
_GRID_TOL_MM = 1e-6


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------


def _threshold_name(threshold: str | float, *, where: str = "fsc") -> str:
    """Canonical name of a threshold: one of :data:`THRESHOLDS` or a number as text."""
    if isinstance(threshold, str):
        key = threshold.strip().lower()
        key = _ALIASES.get(key, key)
        if key in _BIT_SNR or key in _FIXED:
            return key
        try:
            value = float(key)
        except ValueError:
            raise ConfigError(
                f"{where}: unknown threshold {threshold!r}; use a number in (0, 1) or one of "
                f"{', '.join(THRESHOLDS)}"
            ) from None
    else:
        value = float(threshold)
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{where}: threshold {threshold!r} is outside (0, 1); use e.g. 0.143 or 0.5")
    name = f"{value:g}"
    return name


def information_threshold(n_voxels: np.ndarray | float, kind: str = "half-bit") -> np.ndarray:
    r"""The information threshold curve of van Heel & Schatz (2005) for shells of ``n`` voxels.

    .. math::

        T(n) = \frac{s + (2\sqrt{s} + 1)/\sqrt{n}}{s + 1 + 2\sqrt{s}/\sqrt{n}}

    with ``s = 0.2071`` for half a bit and ``s = 0.5`` for one bit (at ``n = 1000``: 0.2164 and
    0.3731). Shells with ``n < 1`` are treated as ``n = 1``.

    Args:
        n_voxels: (...) number of Fourier voxels in each full shell.
        kind: ``"half-bit"`` or ``"one-bit"``.

    Returns:
        (...) float64 threshold values.

    Raises:
        ConfigError: ``kind`` is not ``"half-bit"`` or ``"one-bit"``.
    """
    name = _threshold_name(kind, where="information_threshold")
    if name not in _BIT_SNR:
        raise ConfigError(
            f"information_threshold: kind must be 'half-bit' or 'one-bit', got {kind!r}"
        )
    s = _BIT_SNR[name]
    root_n = np.sqrt(np.maximum(np.asarray(n_voxels, dtype=np.float64), 1.0))
    return (s + (2.0 * math.sqrt(s) + 1.0) / root_n) / (s + 1.0 + 2.0 * math.sqrt(s) / root_n)


def _threshold_values(name: str, n_voxels: np.ndarray) -> np.ndarray:
    """Threshold of canonical ``name`` for every shell of ``n_voxels``."""
    if name in _BIT_SNR:
        return information_threshold(n_voxels, name)
    return np.full(np.shape(n_voxels), float(name), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Curves and crossings
# --------------------------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class FSCCurve:
    """A Fourier shell correlation curve, shells ``r = 0 … N//2`` (arrays are read-only).

    Attributes:
        shell: (R,) shell index ``r``.
        frequency_per_mm: (R,) spatial frequency ``r/(N·Δ)``, 1/mm.
        resolution_um: (R,) resolution (full period) ``N·Δ/r``, µm; ``inf`` at ``r = 0``.
        fsc: (R,) FSC; with a mask and the correction, the corrected ``FSC_true``. Shells in
            which either map has no power hold 0.
        n_voxels: (R,) Fourier voxels in each full shell (both half-spaces).
        threshold_0143: (R,) the 0.143 threshold.
        threshold_05: (R,) the 0.5 threshold.
        threshold_half_bit: (R,) the half-bit information curve.
        threshold_one_bit: (R,) the one-bit information curve.
        grid_size: ``N``, voxels per edge of the cubic grid.
        voxel_size_mm: ``Δ``, mm.
        fsc_unmasked: (R,) FSC without the mask (only when a mask was applied).
        fsc_masked: (R,) FSC of the masked maps, ``FSC_t`` (only when a mask was applied).
        fsc_randomized: (R,) FSC of the masked phase-randomised maps, ``FSC_n`` (only when the
            correction was applied).
        randomize_from_shell: first shell whose phases were randomised (where the unmasked
            FSC first drops below 0.8), or ``None``.
    """

    shell: np.ndarray
    frequency_per_mm: np.ndarray
    resolution_um: np.ndarray
    fsc: np.ndarray
    n_voxels: np.ndarray
    threshold_0143: np.ndarray
    threshold_05: np.ndarray
    threshold_half_bit: np.ndarray
    threshold_one_bit: np.ndarray
    grid_size: int
    voxel_size_mm: float
    fsc_unmasked: np.ndarray | None = None
    fsc_masked: np.ndarray | None = None
    fsc_randomized: np.ndarray | None = None
    randomize_from_shell: int | None = None

    @property
    def nyquist_um(self) -> float:
        """Resolution of the last shell, µm (``2Δ`` for even ``N``)."""
        return float(self.resolution_um[-1])

    def threshold_curve(self, threshold: str | float) -> np.ndarray:
        """(R,) values of ``threshold`` (a name in :data:`THRESHOLDS` or a number) per shell."""
        return _threshold_values(_threshold_name(threshold, where="FSCCurve"), self.n_voxels)


@dataclass(frozen=True)
class Crossing:
    """Where an FSC curve first drops below a threshold.

    Attributes:
        threshold: canonical threshold name (``"0.143"``, ``"0.5"``, ``"half-bit"``,
            ``"one-bit"`` or a number as text).
        shell: last shell before the first drop (RELION's convention, no interpolation);
            the last shell when the curve never drops.
        resolution_um: ``N·Δ/shell``, µm (``inf`` when the curve drops at shell 1).
        frequency_per_mm: ``shell/(N·Δ)``, 1/mm.
        interpolated_shell: the crossing between ``shell`` and ``shell + 1`` by linear
            interpolation of ``FSC − T``.
        interpolated_resolution_um: ``N·Δ/interpolated_shell``, µm.
        reached_nyquist: the curve never drops below the threshold; the resolutions are then
            the last shell's (Nyquist, ``2Δ``), a bound rather than a measurement.
    """

    threshold: str
    shell: int
    resolution_um: float
    frequency_per_mm: float
    interpolated_shell: float
    interpolated_resolution_um: float
    reached_nyquist: bool


def _first_drop(fsc: np.ndarray, thr: np.ndarray, n_voxels: np.ndarray,
                min_voxels: float = 1.0) -> tuple[int, float, bool]:
    """(shell, interpolated shell, reached_nyquist) of the first drop below ``thr`` (r ≥ 1).

    Shells with fewer than ``min_voxels`` voxels (the first shells of narrow cones) are
    skipped; interpolation runs between the neighbouring shells that are kept.
    """
    shells = np.flatnonzero(n_voxels >= max(min_voxels, 1.0))
    shells = shells[shells >= 1]
    gap = fsc[shells] - thr[shells]  # (S,)
    below = np.flatnonzero(gap < 0.0)
    if below.size == 0:
        last = len(fsc) - 1
        return last, float(last), True
    j = int(below[0])
    hi = int(shells[j])  # first shell below the threshold
    if j == 0:
        lo, g0 = 0, float(fsc[0] - thr[0])
    else:
        lo, g0 = int(shells[j - 1]), float(gap[j - 1])
    g1 = float(gap[j])
    frac = g0 / (g0 - g1) if g0 > g1 else 0.0
    return lo, lo + (hi - lo) * float(np.clip(frac, 0.0, 1.0)), False


def _shell_resolution_um(shell: float, box_mm: float) -> float:
    return math.inf if shell <= 0 else 1000.0 * box_mm / shell


def resolution_at(curve: FSCCurve, threshold: str | float = "0.143") -> Crossing:
    """The resolution where ``curve`` first falls below ``threshold``.

    The search starts at shell 1 (shell 0 is the mean). As in RELION, the reported shell is the
    last one before the first drop, without interpolation; the linearly interpolated crossing
    is given as well. A curve that stays above the threshold up to the last shell gives the
    Nyquist resolution (``2Δ``) with ``reached_nyquist=True``.

    Args:
        curve: an FSC curve.
        threshold: a number in (0, 1) or a name in :data:`THRESHOLDS` (``"0.143"``, ``"0.5"``,
            ``"half-bit"``, ``"one-bit"``).

    Returns:
        The crossing, resolutions in µm.

    Raises:
        ConfigError: an unknown threshold name or a number outside (0, 1).
    """
    name = _threshold_name(threshold, where="resolution_at")
    thr = _threshold_values(name, curve.n_voxels)
    shell, interp, nyq = _first_drop(np.asarray(curve.fsc), thr, np.asarray(curve.n_voxels))
    box_mm = curve.grid_size * curve.voxel_size_mm
    return Crossing(
        threshold=name,
        shell=shell,
        resolution_um=_shell_resolution_um(shell, box_mm),
        frequency_per_mm=shell / box_mm,
        interpolated_shell=interp,
        interpolated_resolution_um=_shell_resolution_um(interp, box_mm),
        reached_nyquist=nyq,
    )


# --------------------------------------------------------------------------------------------
# Grids, Fourier geometry and masks
# --------------------------------------------------------------------------------------------


def _as_array(x: Any, name: str, where: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3:
        raise ShapeError(f"{where}: {name} must be a 3-D (z, y, x) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{where}: {name} holds NaN or inf values; replace them before the FSC")
    return a


def _isotropic_voxel(voxel_size_mm: float | tuple[float, ...], where: str) -> float:
    sizes = np.atleast_1d(np.asarray(voxel_size_mm, dtype=np.float64))
    if sizes.size not in (1, 3) or not np.all(sizes > 0):
        raise ShapeError(
            f"{where}: voxel_size_mm must be a positive number or (x, y, z), got {voxel_size_mm!r}"
        )
    if np.ptp(sizes) > 1e-9 * sizes.max():
        raise ShapeError(
            f"{where}: voxels are not cubic ({tuple(sizes.tolist())} mm); FSC shells need an "
            "isotropic grid; resample onto cubic voxels (e.g. recon.fsc.resample_like)"
        )
    return float(sizes[0])


def _check_pair(a: np.ndarray, b: np.ndarray, where: str) -> int:
    if a.shape != b.shape:
        raise ShapeError(
            f"{where}: the maps have different grids, {a.shape} and {b.shape} (z, y, x); "
            "resample one onto the other's grid (e.g. recon.fsc.resample_like)"
        )
    if len(set(a.shape)) != 1:
        raise ShapeError(
            f"{where}: the grid {a.shape} (z, y, x) is not cubic; FSC shells need N×N×N; "
            "resample or pad onto a cubic grid (e.g. recon.fsc.pad_to_cube)"
        )
    if a.shape[0] < 4:
        raise ShapeError(f"{where}: a grid of {a.shape} is too small for an FSC; use N ≥ 4")
    return a.shape[0]


@dataclass(frozen=True)
class _Fourier:
    """Geometry of the half-space (rfftn) Fourier grid of an N³ volume, flattened."""

    n: int
    shell: np.ndarray  # (M,) round(|k|); > N//2 means dropped
    weight: np.ndarray  # (M,) 1 or 2: how many voxels of the full grid each entry stands for
    k_xyz: np.ndarray  # (M, 3) frequency (kx, ky, kz) in Fourier-voxel units

    @property
    def r_max(self) -> int:
        return self.n // 2


def _fourier_grid(n: int) -> _Fourier:
    k_zy = np.fft.fftfreq(n, 1.0 / n)  # integer frequencies along z and y
    k_x = np.fft.rfftfreq(n, 1.0 / n)  # the last array axis is x; rfftn keeps kx ≥ 0
    kz, ky, kx = np.meshgrid(k_zy, k_zy, k_x, indexing="ij")
    radius = np.sqrt(kx**2 + ky**2 + kz**2)
    # The half-space stands for the full grid by Hermitian symmetry: entries with 0 < kx < N/2
    # have a mirror twin at −k; kx = 0 and (even N) kx = N/2 planes are their own mirror.
    weight_x = np.full(k_x.shape, 2.0)
    weight_x[0] = 1.0
    if n % 2 == 0:
        weight_x[-1] = 1.0
    weight = np.broadcast_to(weight_x, radius.shape)
    return _Fourier(
        n=n,
        shell=np.rint(radius).astype(np.int64).ravel(),
        weight=weight.ravel().astype(np.float64),
        k_xyz=np.stack([kx.ravel(), ky.ravel(), kz.ravel()], axis=-1),
    )


def _rfft(a: np.ndarray) -> np.ndarray:
    return np.fft.rfftn(a).ravel()


def _shell_sums(f1: np.ndarray, f2: np.ndarray, geo: _Fourier) -> tuple[np.ndarray, ...]:
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


def _ratio(cross: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> np.ndarray:
    den = np.sqrt(p1 * p2)
    ok = den > 0
    return np.where(ok, cross / np.where(ok, den, 1.0), 0.0)


def soft_sphere_mask(
    shape: tuple[int, int, int],
    radius_vox: float,
    edge_vox: float,
    *,
    center_vox: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """A sphere of 1 with a raised-cosine edge falling to 0.

    ``m(d) = 1`` for ``d ≤ radius``, ``½(1 + cos(π (d − radius)/edge))`` up to
    ``radius + edge`` and 0 beyond, ``d`` the distance from the centre in voxels.

    Args:
        shape: (3,) grid shape ``(Z, Y, X)``.
        radius_vox: radius of the flat top, voxels (> 0).
        edge_vox: width of the cosine edge, voxels (≥ 0; 0 gives a hard sphere).
        center_vox: (3,) centre as array indices ``(z, y, x)``; default the grid centre
            ``(n − 1)/2`` on every axis.

    Returns:
        (Z, Y, X) float64 mask in [0, 1].

    Raises:
        ConfigError: a non-positive radius or a negative edge.
    """
    if not radius_vox > 0 or not edge_vox >= 0:
        raise ConfigError(
            f"soft_sphere_mask: need radius_vox > 0 and edge_vox ≥ 0, got {radius_vox} and {edge_vox}"
        )
    centre = [(n - 1) / 2.0 for n in shape] if center_vox is None else list(center_vox)
    axes = [np.arange(n, dtype=np.float64) - c for n, c in zip(shape, centre, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    d = np.sqrt(x**2 + y**2 + z**2)
    if edge_vox == 0:
        return (d <= radius_vox).astype(np.float64)
    t = np.clip((d - radius_vox) / edge_vox, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def _randomize_phases(a: np.ndarray, shell: np.ndarray, from_shell: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``a`` with the Fourier phases of shells ≥ ``from_shell`` replaced by random ones."""
    f = np.fft.rfftn(a)
    # Phases of the transform of real white noise: uniform and Hermitian-consistent.
    noise = np.fft.rfftn(rng.standard_normal(a.shape))
    phase = noise / np.maximum(np.abs(noise), 1e-300)
    hi = (shell >= from_shell).reshape(f.shape)
    f = np.where(hi, np.abs(f) * phase, f)
    return np.fft.irfftn(f, s=a.shape, axes=(0, 1, 2))


def _curve(fsc: np.ndarray, n_vox: np.ndarray, n: int, voxel_mm: float, **extra) -> FSCCurve:
    r = np.arange(len(fsc))
    box_mm = n * voxel_mm
    with np.errstate(divide="ignore"):
        res_um = np.where(r > 0, 1000.0 * box_mm / np.maximum(r, 1), np.inf)
    return FSCCurve(
        shell=_readonly(r),
        frequency_per_mm=_readonly(r / box_mm),
        resolution_um=_readonly(res_um),
        fsc=_readonly(fsc),
        n_voxels=_readonly(n_vox),
        threshold_0143=_readonly(_threshold_values("0.143", n_vox)),
        threshold_05=_readonly(_threshold_values("0.5", n_vox)),
        threshold_half_bit=_readonly(_threshold_values("half-bit", n_vox)),
        threshold_one_bit=_readonly(_threshold_values("one-bit", n_vox)),
        grid_size=n,
        voxel_size_mm=voxel_mm,
        **{k: (_readonly(v) if isinstance(v, np.ndarray) else v) for k, v in extra.items()},
    )


def _prepare_mask(mask: Any, shape: tuple[int, ...], where: str) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, Volume):
        mask = mask.data
    m = _as_array(mask, "mask", where)
    if m.shape != shape:
        raise ShapeError(
            f"{where}: mask has shape {m.shape}, the maps {shape}; give a mask on the maps' grid"
        )
    return m


@dataclass(frozen=True, eq=False)
class _Spectra:
    """Half-space transforms behind a curve.

    The (masked) maps and, when corrected, their masked phase-randomised twins together with
    the first randomised shell.
    """

    fa: np.ndarray
    fb: np.ndarray
    random_a: np.ndarray | None = None
    random_b: np.ndarray | None = None
    randomize_from_shell: int | None = None


def _corrected(masked: np.ndarray, randomized: np.ndarray, start: int) -> np.ndarray:
    """Chen et al. (2013): (FSC_t − FSC_n)/(1 − FSC_n) for shells ≥ ``start`` (last axis)."""
    one_minus = 1.0 - randomized
    safe = np.abs(one_minus) > 1e-12
    corrected = np.where(safe, (masked - randomized) / np.where(safe, one_minus, 1.0), 0.0)
    return np.where(np.arange(masked.shape[-1]) >= start, corrected, masked)


def _fsc_core(a: np.ndarray, b: np.ndarray, n: int, voxel_mm: float, mask: np.ndarray | None,
              *, correct_mask: bool, randomize_below: float, seed: int,
              geo: _Fourier) -> tuple[FSCCurve, _Spectra]:
    """The curve and the half-space transforms it was computed from."""
    fa, fb = _rfft(a), _rfft(b)
    cross, p1, p2, n_vox = _shell_sums(fa, fb, geo)
    unmasked = _ratio(cross, p1, p2)
    if mask is None:
        return _curve(unmasked, n_vox, n, voxel_mm), _Spectra(fa, fb)
    fma, fmb = _rfft(a * mask), _rfft(b * mask)
    masked = _ratio(*_shell_sums(fma, fmb, geo)[:3])
    extra: dict[str, Any] = {"fsc_unmasked": unmasked, "fsc_masked": masked}
    below = np.flatnonzero(unmasked[1:] < randomize_below)
    if not (correct_mask and below.size):
        return _curve(masked, n_vox, n, voxel_mm, **extra), _Spectra(fma, fmb)
    start = int(below[0]) + 1
    rng = np.random.default_rng(seed)
    fra = _rfft(_randomize_phases(a, geo.shell, start, rng) * mask)
    frb = _rfft(_randomize_phases(b, geo.shell, start, rng) * mask)
    randomized = _ratio(*_shell_sums(fra, frb, geo)[:3])
    extra.update(fsc_randomized=randomized, randomize_from_shell=start)
    curve = _curve(_corrected(masked, randomized, start), n_vox, n, voxel_mm, **extra)
    return curve, _Spectra(fma, fmb, fra, frb, start)


def fsc_curve(
    vol_a: np.ndarray,
    vol_b: np.ndarray,
    voxel_size_mm: float | tuple[float, float, float],
    *,
    mask: np.ndarray | None = None,
    correct_mask: bool = True,
    randomize_below: float = 0.8,
    seed: int = 0,
) -> FSCCurve:
    r"""Fourier shell correlation of two maps on the same cubic grid.

    .. math::

        \mathrm{FSC}(r) = \frac{\operatorname{Re}\sum_{k \in r} F_1 F_2^*}
                                {\sqrt{\sum_{k \in r} |F_1|^2 \sum_{k \in r} |F_2|^2}},
        \qquad r = \operatorname{round}(|k|) = 0 \ldots N/2

    With a ``mask``, both maps are multiplied by it. The correlation the mask itself creates
    is removed by phase randomisation (Chen et al. 2013, doi:10.1016/j.ultramic.2013.06.004):
    beyond the first shell where the unmasked FSC drops below ``randomize_below`` the phases
    of each map are replaced by independent random ones, the randomised maps are masked alike,
    and for those shells

    .. math::

        \mathrm{FSC}_\mathrm{true} = \frac{\mathrm{FSC}_t - \mathrm{FSC}_n}{1 - \mathrm{FSC}_n}

    with ``FSC_t`` the masked and ``FSC_n`` the masked phase-randomised FSC. If the unmasked
    FSC never drops below ``randomize_below``, nothing is corrected.

    Args:
        vol_a: (N, N, N) first map, indexed ``(z, y, x)`` (NumPy array or CPU tensor).
        vol_b: (N, N, N) second map on the same grid.
        voxel_size_mm: edge ``Δ`` of the cubic voxels, mm (a number or an equal ``(x, y, z)``).
        mask: (N, N, N) soft mask in [0, 1] applied to both maps (e.g.
            :func:`soft_sphere_mask`); ``None`` for none.
        correct_mask: apply the phase-randomisation correction when a mask is given.
        randomize_below: unmasked FSC below which phases are randomised (RELION: 0.8).
        seed: seed of the random phases.

    Returns:
        The curve for shells ``0 … N//2``.

    Raises:
        ShapeError: the maps differ in shape, are not 3-D or not cubic, the voxels are not
            cubic, or the mask has another shape.
        DataError: a map or the mask holds NaN or inf.
    """
    where = "fsc_curve"
    a = _as_array(vol_a, "vol_a", where)
    b = _as_array(vol_b, "vol_b", where)
    n = _check_pair(a, b, where)
    voxel_mm = _isotropic_voxel(voxel_size_mm, where)
    m = _prepare_mask(mask, a.shape, where)
    curve, _ = _fsc_core(a, b, n, voxel_mm, m, correct_mask=correct_mask,
                            randomize_below=randomize_below, seed=seed, geo=_fourier_grid(n))
    return curve


# --------------------------------------------------------------------------------------------
# Directional FSC
# --------------------------------------------------------------------------------------------


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors on the half-sphere ``z > 0`` (Fibonacci lattice).

    Args:
        n: number of directions (≥ 1).

    Returns:
        (n, 3) unit vectors ``(x, y, z)``.
    """
    i = np.arange(n, dtype=np.float64)
    z = (i + 0.5) / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))  # golden angle
    rho = np.sqrt(1.0 - z**2)
    return np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)


@dataclass(frozen=True, eq=False)
class DirectionalFSC:
    """FSC within cones around many directions (3DFSC, Tan et al. 2017).

    The first three directions are exactly ``x``, ``y`` and ``z`` (physical axes; ``x`` is the
    last array axis). Resolutions are first crossings (:func:`resolution_at`) of each cone's
    curve.

    Attributes:
        directions: (D, 3) unit vectors ``(x, y, z)``; each cone also holds ``−d``.
        fsc: (D, R) FSC of each cone, shells ``0 … N//2``.
        n_voxels: (D, R) Fourier voxels of each cone shell.
        threshold: canonical threshold name used for the crossings.
        cone_half_angle_deg: cone half-angle, degrees.
        min_cone_voxels: cone shells with fewer voxels were skipped in the crossing search.
        shell: (D,) last shell before each cone's first drop.
        interpolated_shell: (D,) interpolated crossing of each cone, shells.
        reached_nyquist: (D,) the cone never drops below the threshold.
        resolution_um: (D,) first-crossing resolution of each cone, µm.
        interpolated_resolution_um: (D,) interpolated resolution of each cone, µm.
        grid_size: ``N``.
        voxel_size_mm: ``Δ``, mm.
    """

    directions: np.ndarray
    fsc: np.ndarray
    n_voxels: np.ndarray
    threshold: str
    cone_half_angle_deg: float
    min_cone_voxels: int
    shell: np.ndarray
    interpolated_shell: np.ndarray
    reached_nyquist: np.ndarray
    resolution_um: np.ndarray
    interpolated_resolution_um: np.ndarray
    grid_size: int
    voxel_size_mm: float

    @property
    def resolution_x_um(self) -> float:
        """First-crossing resolution along x, µm."""
        return float(self.resolution_um[0])

    @property
    def resolution_y_um(self) -> float:
        """First-crossing resolution along y, µm."""
        return float(self.resolution_um[1])

    @property
    def resolution_z_um(self) -> float:
        """First-crossing resolution along z, µm."""
        return float(self.resolution_um[2])

    @property
    def best_resolution_um(self) -> float:
        """Finest first-crossing resolution over all directions, µm."""
        return float(np.min(self.resolution_um))

    @property
    def worst_resolution_um(self) -> float:
        """Coarsest first-crossing resolution over all directions, µm."""
        return float(np.max(self.resolution_um))

    @property
    def best_direction(self) -> np.ndarray:
        """(3,) direction ``(x, y, z)`` of the finest interpolated resolution."""
        return self.directions[int(np.argmin(self.interpolated_resolution_um))]

    @property
    def worst_direction(self) -> np.ndarray:
        """(3,) direction ``(x, y, z)`` of the coarsest interpolated resolution."""
        return self.directions[int(np.argmax(self.interpolated_resolution_um))]

    @property
    def anisotropy_ratio(self) -> float:
        """Finest over coarsest interpolated resolution, in (0, 1]; 1 is isotropic."""
        res = self.interpolated_resolution_um
        return float(np.min(res) / np.max(res)) if np.all(np.isfinite(res)) else 0.0

    @property
    def sphericity(self) -> float:
        """Sphericity of the thresholded 3-D FSC (as 3DFSC reports it), in (0, 1].

        3DFSC thresholds the 3-D FSC volume and reports Wadell's sphericity
        ``π^{1/3} (6V)^{2/3} / A`` of the resulting body. Here that body is the star-shaped
        polyhedron whose vertices lie along ``±d`` at each cone's interpolated crossing
        frequency (triangulated like the convex hull of the unit directions), and the value is
        divided by the same figure for equal radii, so an isotropic resolution gives exactly 1.
        """
        return _sphericity(self.directions, np.maximum(self.interpolated_shell, 1e-6))


def _sphericity(directions: np.ndarray, radii: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    units = np.concatenate([directions, -directions])  # (2D, 3)
    rad = np.concatenate([radii, radii])
    faces = ConvexHull(units).simplices  # (F, 3)

    def wadell(vertices: np.ndarray) -> float:
        tri = vertices[faces]  # (F, 3, 3)
        volume = np.abs(np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))).sum() / 6
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1).sum() / 2
        return math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area

    return float(wadell(units * rad[:, None]) / wadell(units))


def _cone_sums(fa: np.ndarray, fb: np.ndarray, geo: _Fourier, dirs: np.ndarray, cos_max: float,
               chunk: int = 16384) -> np.ndarray:
    """(D, R, 4) per cone and shell: Σ Re F1F2*, Σ|F1|², Σ|F2|², voxel count (full grid)."""
    keep = np.flatnonzero(geo.shell <= geo.r_max)
    order = keep[np.argsort(geo.shell[keep], kind="stable")]
    shell = geo.shell[order]
    w = geo.weight[order]
    a, b = fa[order], fb[order]
    terms = np.stack([w * (a.real * b.real + a.imag * b.imag), w * np.abs(a) ** 2,
                      w * np.abs(b) ** 2, w], axis=-1)  # (M, 4)
    k = geo.k_xyz[order]
    k_len = np.linalg.norm(k, axis=-1)
    units = k / np.where(k_len > 0, k_len, 1.0)[:, None]  # (M, 3); the k = 0 voxel is (0, 0, 0)
    bounds = np.searchsorted(shell, np.arange(geo.r_max + 2))
    sums = np.zeros((len(dirs), geo.r_max + 1, 4))
    sums[:, 0, :] = terms[bounds[0]:bounds[1]].sum(0)  # the mean belongs to every cone
    for r in range(1, geo.r_max + 1):
        for lo in range(bounds[r], bounds[r + 1], chunk):
            hi = min(lo + chunk, bounds[r + 1])
            inside = (np.abs(units[lo:hi] @ dirs.T) >= cos_max - 1e-12).astype(np.float64)  # (m, D)
            sums[:, r, :] += inside.T @ terms[lo:hi]
    return sums


def _directional_core(spectra: _Spectra, geo: _Fourier, voxel_mm: float, name: str,
                      n_directions: int, cone_half_angle_deg: float,
                      min_cone_voxels: int) -> DirectionalFSC:
    dirs = np.concatenate([np.eye(3), fibonacci_directions(n_directions)])  # (D, 3)
    cos_max = math.cos(math.radians(cone_half_angle_deg))
    sums = _cone_sums(spectra.fa, spectra.fb, geo, dirs, cos_max)
    fsc = _ratio(sums[..., 0], sums[..., 1], sums[..., 2])  # (D, R)
    if spectra.randomize_from_shell is not None:
        rand = _cone_sums(spectra.random_a, spectra.random_b, geo, dirs, cos_max)
        fsc = _corrected(fsc, _ratio(rand[..., 0], rand[..., 1], rand[..., 2]),
                         spectra.randomize_from_shell)
    n_vox = sums[..., 3]
    box_mm = geo.n * voxel_mm
    shells, interp, nyq = [], [], []
    for d in range(len(dirs)):
        s, si, q = _first_drop(fsc[d], _threshold_values(name, n_vox[d]), n_vox[d], min_cone_voxels)
        shells.append(s)
        interp.append(si)
        nyq.append(q)
    shells_a, interp_a = np.array(shells), np.array(interp)
    return DirectionalFSC(
        directions=_readonly(dirs),
        fsc=_readonly(fsc),
        n_voxels=_readonly(n_vox),
        threshold=name,
        cone_half_angle_deg=float(cone_half_angle_deg),
        min_cone_voxels=int(min_cone_voxels),
        shell=_readonly(shells_a),
        interpolated_shell=_readonly(interp_a),
        reached_nyquist=_readonly(np.array(nyq)),
        resolution_um=_readonly(np.array([_shell_resolution_um(s, box_mm) for s in shells_a])),
        interpolated_resolution_um=_readonly(
            np.array([_shell_resolution_um(s, box_mm) for s in interp_a])),
        grid_size=geo.n,
        voxel_size_mm=voxel_mm,
    )


def directional_fsc(
    vol_a: np.ndarray,
    vol_b: np.ndarray,
    voxel_size_mm: float | tuple[float, float, float],
    *,
    threshold: str | float = "0.143",
    mask: np.ndarray | None = None,
    n_directions: int = 200,
    cone_half_angle_deg: float = 20.0,
    min_cone_voxels: int = 20,
    correct_mask: bool = True,
    seed: int = 0,
) -> DirectionalFSC:
    """FSC restricted to cones around many directions (3DFSC; Tan et al. 2017).

    For each direction ``d`` the FSC sums run only over the Fourier voxels within
    ``cone_half_angle_deg`` of ``±d`` (the mean, ``k = 0``, belongs to every cone). The
    directions are exactly ``x``, ``y``, ``z`` followed by ``n_directions`` Fibonacci points on
    the half-sphere; cones around ``d`` and ``−d`` are the same. Reference: Tan, Y. Z. et al.
    (2017), doi:10.1038/nmeth.4347. A mask is applied to both maps and, by default, corrected
    in every cone as in :func:`fsc_curve` (the same random phases and first randomised shell).

    The first shells of a cone hold only a few voxels (a 20° cone holds ~6 % of a shell; at
    ``r = 2`` often a single Hermitian pair, whose FSC is just the cosine of one phase
    difference), so shells with fewer than ``min_cone_voxels`` voxels are skipped when
    looking for each cone's crossing; a cone that is already below the threshold at its first
    kept shell is interpolated from shell 0.

    Args:
        vol_a: (N, N, N) first map, ``(z, y, x)``.
        vol_b: (N, N, N) second map on the same grid.
        voxel_size_mm: cubic voxel edge ``Δ``, mm.
        threshold: threshold for each cone's crossing (a name in :data:`THRESHOLDS` or a
            number); information thresholds use each cone shell's voxel count.
        mask: (N, N, N) mask applied to both maps, or ``None``.
        n_directions: Fibonacci directions besides the three axes (≥ 0; ~100–500).
        cone_half_angle_deg: cone half-angle, degrees, in (0, 90].
        min_cone_voxels: cone shells with fewer voxels are not used for the crossings.
        correct_mask: apply the phase-randomisation correction when a mask is given.
        seed: seed of the random phases.

    Returns:
        The directional curves and resolutions.

    Raises:
        ShapeError: the maps differ in shape or are not cubic, or the voxels are not cubic.
        DataError: a map holds NaN or inf.
        ConfigError: an unknown threshold, a negative ``n_directions`` or a bad angle.
    """
    where = "directional_fsc"
    name = _threshold_name(threshold, where=where)
    _check_directional_options(n_directions, cone_half_angle_deg, where)
    a = _as_array(vol_a, "vol_a", where)
    b = _as_array(vol_b, "vol_b", where)
    n = _check_pair(a, b, where)
    voxel_mm = _isotropic_voxel(voxel_size_mm, where)
    m = _prepare_mask(mask, a.shape, where)
    geo = _fourier_grid(n)
    _, spectra = _fsc_core(a, b, n, voxel_mm, m, correct_mask=correct_mask, randomize_below=0.8,
                           seed=seed, geo=geo)
    return _directional_core(spectra, geo, voxel_mm, name, n_directions, cone_half_angle_deg,
                             min_cone_voxels)


def _check_directional_options(n_directions: int, angle_deg: float, where: str) -> None:
    if int(n_directions) != n_directions or n_directions < 0:
        raise ConfigError(f"{where}: n_directions must be an integer ≥ 0, got {n_directions!r}")
    if not 0 < angle_deg <= 90:
        raise ConfigError(f"{where}: cone_half_angle_deg must be in (0, 90], got {angle_deg!r}")


# --------------------------------------------------------------------------------------------
# Volumes: grids, comparison, report
# --------------------------------------------------------------------------------------------


def resample_like(volume: Volume, like: Volume) -> Volume:
    """``volume`` resampled onto the grid of ``like`` (trilinear; zero outside ``volume``).

    When ``like`` has coarser voxels, ``volume`` is first smoothed along each axis by a Gaussian
    of variance ``(ratio² − 1)/12`` source voxels (what turns an average over one source voxel
    into an average over one target voxel), so the result approximates voxel averages and
    does not alias. Typical use: bring a simulation's ``truth.tif`` onto a reconstruction's
    grid before :func:`compare_volumes`.

    Args:
        volume: the volume to resample.
        like: the volume whose grid (shape, origin, voxel size) to use.

    Returns:
        A float32 Volume on ``like``'s grid, with ``volume``'s unit and meta.
    """
    import torch
    from scipy.ndimage import gaussian_filter

    from recon.volume import grid_points, interpolate

    ratio_zyx = np.asarray(like.voxel_size_mm[::-1], dtype=np.float64) / np.asarray(
        volume.voxel_size_mm[::-1], dtype=np.float64)
    sigma = np.sqrt(np.maximum(ratio_zyx**2 - 1.0, 0.0) / 12.0)
    data = np.asarray(volume.data, dtype=np.float64)
    if np.any(sigma > 0):
        data = gaussian_filter(data, sigma, mode="constant")
    src = Volume(data=data, origin_mm=volume.origin_mm, voxel_size_mm=volume.voxel_size_mm)
    pts = grid_points(like.shape, like.origin_mm, like.voxel_size_mm, dtype=torch.float64)
    out = interpolate(src, pts).numpy().astype(np.float32)
    return Volume(data=out, origin_mm=tuple(like.origin_mm), voxel_size_mm=tuple(like.voxel_size_mm),
                  unit=volume.unit, meta=dict(volume.meta))


def pad_to_cube(volume: Volume, *, fill: float = 0.0) -> Volume:
    """``volume`` padded with ``fill`` to an N×N×N grid, ``N`` its largest edge, centred.

    World positions are kept: the origin moves by the padding before the data. Zero padding is
    harmless for the FSC when the density falls to zero at the box edges; otherwise apply a
    soft mask.

    Args:
        volume: the volume, any ``(Z, Y, X)``.
        fill: value of the added voxels.

    Returns:
        The padded Volume (the same object if it is already cubic).
    """
    shape = volume.shape
    n = max(shape)
    if all(s == n for s in shape):
        return volume
    before_zyx = [(n - s) // 2 for s in shape]
    pad = [(lo, n - s - lo) for s, lo in zip(shape, before_zyx, strict=True)]
    data = np.pad(np.asarray(volume.data, dtype=np.float32), pad, constant_values=fill)
    origin = tuple(o - lo * v for o, lo, v in
                   zip(volume.origin_mm, before_zyx[::-1], volume.voxel_size_mm, strict=True))
    return Volume(data=data, origin_mm=origin, voxel_size_mm=tuple(volume.voxel_size_mm),
                  unit=volume.unit, meta=dict(volume.meta))


@dataclass(frozen=True, eq=False)
class FSCResult:
    """Everything :func:`compare_volumes` found, ready for :func:`write_fsc_outputs`.

    Attributes:
        curve: the (mask-corrected) FSC curve.
        threshold: canonical name of the threshold asked for.
        crossing: the crossing at ``threshold``.
        crossings: crossings at every threshold in :data:`THRESHOLDS` (and ``threshold``).
        directional: cone FSC at ``threshold``, or ``None``.
        shape: grid ``(Z, Y, X)``.
        origin_mm: ``(x, y, z)`` centre of voxel ``(0, 0, 0)``, mm.
        voxel_size_mm: cubic voxel edge, mm.
        mask: how the maps were masked: ``"none"``, ``"sphere"`` or ``"array"``.
        labels: names of the two maps (e.g. file names), for the report.
    """

    curve: FSCCurve
    threshold: str
    crossing: Crossing
    crossings: dict[str, Crossing]
    directional: DirectionalFSC | None
    shape: tuple[int, int, int]
    origin_mm: tuple[float, float, float]
    voxel_size_mm: float
    mask: str = "none"
    labels: tuple[str, str] = ("a", "b")


def _check_grids(a: Volume, b: Volume, where: str) -> None:
    def fmt(v: Volume) -> str:
        return (f"shape {v.shape} (z, y, x), voxel {tuple(round(s, 9) for s in v.voxel_size_mm)} mm, "
                f"origin {tuple(round(o, 9) for o in v.origin_mm)} mm")

    same = (a.shape == b.shape
            and np.allclose(a.voxel_size_mm, b.voxel_size_mm, rtol=0, atol=_GRID_TOL_MM)
            and np.allclose(a.origin_mm, b.origin_mm, rtol=0, atol=_GRID_TOL_MM))
    if not same:
        raise ShapeError(
            f"{where}: the volumes are on different grids: A has {fmt(a)}, B has {fmt(b)}; "
            "resample one onto the other (recon.fsc.resample_like) before comparing"
        )


def compare_volumes(
    a: Volume,
    b: Volume,
    *,
    threshold: str | float,
    mask: str | np.ndarray | Volume | None = None,
    directional: bool = True,
    correct_mask: bool = True,
    n_directions: int = 200,
    cone_half_angle_deg: float = 20.0,
    min_cone_voxels: int = 20,
    seed: int = 0,
    labels: tuple[str, str] = ("a", "b"),
) -> FSCResult:
    """The FSC of two volumes on the same cubic grid, its crossings and its anisotropy.

    Args:
        a: first volume (e.g. half map 1, or the reconstruction).
        b: second volume on the same grid (half map 2, or the truth resampled with
            :func:`resample_like`).
        threshold: the threshold to report: ``"0.143"`` for independent half maps, ``"0.5"``
            against a truth, ``"half-bit"``, ``"one-bit"`` or a number in (0, 1). The
            crossings at all four standard thresholds are computed as well.
        mask: ``None``; ``"sphere"`` — a soft sphere filling the grid (edge
            ``max(2, N/16)`` voxels, radius ``N/2 − edge − 1``); or a (N, N, N) array or
            Volume in [0, 1]. Applied to both volumes.
        directional: also compute the cone FSC (:func:`directional_fsc`).
        correct_mask: phase-randomisation correction of a mask (see :func:`fsc_curve`).
        n_directions: Fibonacci directions for the cone FSC besides x, y, z.
        cone_half_angle_deg: cone half-angle, degrees.
        min_cone_voxels: cone shells with fewer voxels are not used for the cone crossings.
        seed: seed of the random phases.
        labels: (2,) names of the volumes for the report.

    Returns:
        The result; write it with :func:`write_fsc_outputs`.

    Raises:
        ShapeError: the grids differ (shape, voxel size or origin by more than 1e-6 mm), or the
            grid or the voxels are not cubic.
        DataError: a volume holds NaN or inf.
        ConfigError: an unknown threshold or mask name, or bad directional options.
    """
    where = "compare_volumes"
    name = _threshold_name(threshold, where=where)
    if directional:
        _check_directional_options(n_directions, cone_half_angle_deg, where)
    _check_grids(a, b, where)
    data_a = _as_array(a.data, "A", where)
    data_b = _as_array(b.data, "B", where)
    n = _check_pair(data_a, data_b, where)
    voxel_mm = _isotropic_voxel(a.voxel_size_mm, where)
    if isinstance(mask, str):
        if mask.strip().lower() != "sphere":
            raise ConfigError(f"{where}: mask must be None, 'sphere' or an array, got {mask!r}")
        edge = max(2.0, n / 16.0)
        m = soft_sphere_mask(data_a.shape, max(1.0, n / 2.0 - edge - 1.0), edge)
        mask_kind = "sphere"
    else:
        m = _prepare_mask(mask, data_a.shape, where)
        mask_kind = "none" if m is None else "array"
    geo = _fourier_grid(n)
    curve, spectra = _fsc_core(data_a, data_b, n, voxel_mm, m, correct_mask=correct_mask,
                              randomize_below=0.8, seed=seed, geo=geo)
    crossings = {t: resolution_at(curve, t) for t in (*THRESHOLDS, name)}
    cones = (_directional_core(spectra, geo, voxel_mm, name, n_directions, cone_half_angle_deg,
                               min_cone_voxels) if directional else None)
    return FSCResult(
        curve=curve,
        threshold=name,
        crossing=crossings[name],
        crossings=crossings,
        directional=cones,
        shape=tuple(data_a.shape),
        origin_mm=tuple(float(o) for o in a.origin_mm),
        voxel_size_mm=voxel_mm,
        mask=mask_kind,
        labels=(str(labels[0]), str(labels[1])),
    )


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _crossing_dict(c: Crossing) -> dict:
    return {
        "shell": c.shell,
        "resolution_um": _finite(c.resolution_um),
        "interpolated_resolution_um": _finite(c.interpolated_resolution_um),
        "frequency_per_mm": c.frequency_per_mm,
        "reached_nyquist": c.reached_nyquist,
    }


def fsc_report(result: FSCResult) -> dict:
    """The JSON summary of a comparison (what ``fsc.json`` holds); infinities become ``None``.

    Args:
        result: from :func:`compare_volumes`.

    Returns:
        A JSON-serialisable dict: ``format``, ``maps``, ``threshold``, ``resolution_um`` and
        ``resolution_interpolated_um`` at that threshold, ``reached_nyquist``, ``nyquist_um``,
        ``resolutions`` (every threshold), ``grid``, ``mask`` and ``directional``.
    """
    curve, c = result.curve, result.crossing
    mask: dict[str, Any] = {"kind": result.mask}
    if curve.fsc_masked is not None:
        mask["phase_randomization"] = {
            "applied": curve.fsc_randomized is not None,
            "from_shell": curve.randomize_from_shell,
            "fsc_unmasked": curve.fsc_unmasked.tolist(),
            "fsc_masked": curve.fsc_masked.tolist(),
            "fsc_randomized": (None if curve.fsc_randomized is None
                               else curve.fsc_randomized.tolist()),
        }
    directional = None
    if result.directional is not None:
        d = result.directional
        directional = {
            "threshold": d.threshold,
            "cone_half_angle_deg": d.cone_half_angle_deg,
            "min_cone_voxels": d.min_cone_voxels,
            "n_directions": int(len(d.directions)),
            "resolution_x_um": _finite(d.resolution_x_um),
            "resolution_y_um": _finite(d.resolution_y_um),
            "resolution_z_um": _finite(d.resolution_z_um),
            "interpolated_resolution_xyz_um": [_finite(v) for v in d.interpolated_resolution_um[:3]],
            "best_resolution_um": _finite(d.best_resolution_um),
            "worst_resolution_um": _finite(d.worst_resolution_um),
            "best_direction_xyz": [round(float(v), 4) for v in d.best_direction],
            "worst_direction_xyz": [round(float(v), 4) for v in d.worst_direction],
            "anisotropy_ratio": d.anisotropy_ratio,
            "sphericity": d.sphericity,
            "sphericity_definition": (
                "Wadell sphericity pi^(1/3)(6V)^(2/3)/A of the polyhedron with vertices at each "
                "cone's interpolated crossing frequency, divided by that of equal radii"),
            "anisotropy_ratio_definition": "finest / coarsest interpolated cone resolution",
        }
    n = curve.grid_size
    return {
        "format": _FORMAT,
        "maps": {"a": result.labels[0], "b": result.labels[1]},
        "threshold": result.threshold,
        "resolution_um": _finite(c.resolution_um),
        "resolution_interpolated_um": _finite(c.interpolated_resolution_um),
        "reached_nyquist": c.reached_nyquist,
        "crossing_shell": c.shell,
        "nyquist_um": curve.nyquist_um,
        "resolutions": {name: _crossing_dict(x) for name, x in result.crossings.items()},
        "grid": {
            "shape_zyx": list(result.shape),
            "voxel_size_mm": result.voxel_size_mm,
            "origin_mm": list(result.origin_mm),
            "box_mm": n * result.voxel_size_mm,
            "shells": int(len(curve.shell)),
        },
        "mask": mask,
        "directional": directional,
    }


def _csv_text(curve: FSCCurve) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(len(curve.shell)):
        writer.writerow([
            int(curve.shell[i]),
            f"{curve.frequency_per_mm[i]:.8g}",
            f"{curve.resolution_um[i]:.8g}",
            f"{curve.fsc[i]:.8g}",
            int(round(curve.n_voxels[i])),
            f"{curve.threshold_0143[i]:.8g}",
            f"{curve.threshold_05[i]:.8g}",
            f"{curve.threshold_half_bit[i]:.8g}",
            f"{curve.threshold_one_bit[i]:.8g}",
        ])
    return buf.getvalue()


def _plot(result: FSCResult, path: Path, dpi: int = 120) -> None:
    # The Agg canvas directly: no pyplot, no change to the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = result.curve
    f = curve.frequency_per_mm
    fig = Figure(figsize=(7.0, 4.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if result.directional is not None:
        for i, (axis, colour) in enumerate(zip("xyz", ("tab:red", "tab:green", "tab:purple"),
                                               strict=True)):
            ax.plot(f, result.directional.fsc[i], color=colour, lw=0.8, alpha=0.6,
                    label=f"cone ±{result.directional.cone_half_angle_deg:g}° around {axis}")
    if curve.fsc_masked is not None and curve.fsc_randomized is not None:
        ax.plot(f, curve.fsc_masked, color="0.5", lw=0.8, ls="--", label="masked (uncorrected)")
        ax.plot(f, curve.fsc_randomized, color="0.7", lw=0.8, ls=":", label="phase-randomised")
    ax.plot(f, curve.fsc, color="k", lw=1.6, marker=".", ms=3, label="FSC")
    styles = {"0.143": ("tab:blue", "-"), "0.5": ("tab:orange", "-"),
              "half-bit": ("tab:cyan", "--"), "one-bit": ("tab:olive", "--")}
    for name in THRESHOLDS:
        colour, ls = styles[name]
        ax.plot(f, curve.threshold_curve(name), color=colour, lw=0.9, ls=ls, label=f"{name}")
    c = result.crossing
    box_mm = curve.grid_size * curve.voxel_size_mm
    fx = c.interpolated_shell / box_mm
    fy = float(np.interp(c.interpolated_shell, curve.shell, curve.threshold_curve(c.threshold)))
    word = "≥ Nyquist" if c.reached_nyquist else ""
    ax.plot([fx], [fy], "o", color="crimson", ms=7, mfc="none", mew=1.8,
            label=f"{c.threshold}: {c.resolution_um:.4g} µm {word} "
                  f"(interp. {c.interpolated_resolution_um:.4g} µm)")
    ax.axvline(fx, color="crimson", lw=0.6, ls=":")
    ax.axhline(0.0, color="0.8", lw=0.6)
    ax.set_xlim(0.0, float(f[-1]))
    ax.set_ylim(min(-0.1, float(np.min(curve.fsc)) - 0.05), 1.05)
    ax.set_xlabel("spatial frequency (1/mm)")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_title(f"FSC {result.labels[0]} vs {result.labels[1]} "
                 f"({curve.grid_size}³, {curve.voxel_size_mm * 1000:.4g} µm voxels, mask {result.mask})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    ticks = [t for t in ax.get_xticks() if 0 < t <= f[-1] * (1 + 1e-9)]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1000.0 / t:.3g}" for t in ticks])
    top.set_xlabel("resolution (µm, full period)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_fsc_outputs(result: FSCResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``fsc.csv``, ``fsc.json`` and ``fsc.png`` into ``out_dir``, each atomically.

    ``fsc.csv`` has the columns :data:`CSV_COLUMNS` (``resolution_um`` is ``inf`` at shell 0);
    ``fsc.json`` is :func:`fsc_report`; ``fsc.png`` plots the curve against spatial frequency
    (top axis in µm) with the threshold curves and the crossing.

    Args:
        result: from :func:`compare_volumes`.
        out_dir: output directory (created if missing).

    Returns:
        Paths of the files, keyed ``"csv"``, ``"json"``, ``"png"``.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # its parent is a file, no permission: one line, not a traceback
        from optics.atomic import output_error

        raise output_error(out, err) from None
    paths = {"csv": out / "fsc.csv", "json": out / "fsc.json", "png": out / "fsc.png"}
    atomic_write_text(paths["csv"], _csv_text(result.curve))
    atomic_write_text(paths["json"], json.dumps(fsc_report(result), indent=2, allow_nan=False) + "\n")
    _plot(result, paths["png"])
    return paths
