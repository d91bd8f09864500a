r"""Fourier shell correlation (FSC): the resolution of one map judged against another.

Two maps of the same object on the same grid — two independent half reconstructions, or
a reconstruction and the simulation's truth — are compared shell by shell in Fourier space
(REFERENCE §5):

.. math::

    \mathrm{FSC}(r) = \frac{\operatorname{Re}\sum_{k \in r} F_1(k)\,F_2^*(k)}
                            {\sqrt{\sum_{k \in r} |F_1(k)|^2 \;\sum_{k \in r} |F_2(k)|^2}}

where shell ``r`` holds the Fourier voxels with ``round(|k|) = r`` (``k`` in Fourier-voxel
units, shell width 1, ``r = 0 … N/2``; voxels beyond ``N/2 + ½`` are dropped, the EMAN2,
RELION and 3DFSC convention). Shell ``r`` has spatial frequency ``r/(N·Δ)`` and resolution
(full period) ``N·Δ/r``; Nyquist (``r = N/2``) is ``2Δ``. A grid that is not a cube, or has
voxels that are not cubes, is compared as it is: ``k`` is the physical frequency times the box's
longest edge ``L`` (so ``N·Δ`` reads ``L``), and the shells stop at the coarsest axis' Nyquist
(:class:`~recon.analysis.spectra.FourierGrid`) — no padding, which would interpolate the
spectrum and read optimistic.

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
  :class:`~recon.io.volume.Volume` on the same grid; :func:`fsc_report` and
  :func:`write_fsc_outputs` turn it into ``fsc.csv``, ``fsc.json`` and ``fsc.png``.
* :func:`resample_like` — brings a volume onto another's grid, as the comparison requires.

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

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from recon.analysis.spectra import (
    FourierGrid,
    Spectra,
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
from recon.errors import ConfigError

__all__ = [
    "Crossing",
    "FSCCurve",
    "GRID_TOL_MM",
    "MIN_SHELL_VOXELS",
    "THRESHOLDS",
    "first_drop",
    "fsc_curve",
    "fsc_with_spectra",
    "information_threshold",
    "resolution_at",
    "shell_resolution_um",
    "soft_sphere_mask",
    "threshold_name",
    "threshold_values",
]


#: Shells with fewer Fourier voxels are skipped in the crossing search (:func:`resolution_at`): on an
#: elongated grid the first shells hold only a couple (2 on 64 × 64 × 96, against 18 on a cube),
#: and a chance dip there would report a resolution of the box's size.
MIN_SHELL_VOXELS = 10

#: The standard thresholds, by name: fixed values and van Heel & Schatz information curves.
THRESHOLDS = ("0.143", "0.5", "half-bit", "one-bit")


# van Heel & Schatz (2005): s = (2^bits − 1)/2 is the SNR of each half map at which the full map
# carries `bits` of information per voxel: (√2 − 1)/2 = 0.2071 for ½ bit, 0.5 for 1 bit.
_BIT_SNR = {"half-bit": 0.2071, "one-bit": 0.5}


_FIXED = {"0.143": 0.143, "0.5": 0.5}


_ALIASES = {"half_bit": "half-bit", "halfbit": "half-bit", "1/2-bit": "half-bit",
            "one_bit": "one-bit", "onebit": "one-bit", "1-bit": "one-bit"}


GRID_TOL_MM = 1e-6


def threshold_name(threshold: str | float, *, where: str = "fsc") -> str:
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
    name = threshold_name(kind, where="information_threshold")
    if name not in _BIT_SNR:
        raise ConfigError(
            f"information_threshold: kind must be 'half-bit' or 'one-bit', got {kind!r}"
        )
    s = _BIT_SNR[name]
    root_n = np.sqrt(np.maximum(np.asarray(n_voxels, dtype=np.float64), 1.0))
    return (s + (2.0 * math.sqrt(s) + 1.0) / root_n) / (s + 1.0 + 2.0 * math.sqrt(s) / root_n)


def threshold_values(name: str, n_voxels: np.ndarray) -> np.ndarray:
    """Threshold of canonical ``name`` for every shell of ``n_voxels``."""
    if name in _BIT_SNR:
        return information_threshold(n_voxels, name)
    return np.full(np.shape(n_voxels), float(name), dtype=np.float64)


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
        shape: ``(Z, Y, X)`` of the grid.
        voxel_size_mm: voxel edges ``(Δx, Δy, Δz)``, mm.
        box_mm: ``L``, the longest edge of the box; shell ``r`` is the frequency ``r/L``.
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
    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    box_mm: float
    fsc_unmasked: np.ndarray | None = None
    fsc_masked: np.ndarray | None = None
    fsc_randomized: np.ndarray | None = None
    randomize_from_shell: int | None = None

    @property
    def nyquist_um(self) -> float:
        """Resolution of the last shell, µm: ``2Δ`` of the coarsest axis (for an even N³ grid, ``2Δ``)."""
        return float(self.resolution_um[-1])

    def threshold_curve(self, threshold: str | float) -> np.ndarray:
        """(R,) values of ``threshold`` (a name in :data:`THRESHOLDS` or a number) per shell."""
        return threshold_values(threshold_name(threshold, where="FSCCurve"), self.n_voxels)


@dataclass(frozen=True)
class Crossing:
    """Where an FSC curve first drops below a threshold.

    Attributes:
        threshold: canonical threshold name (``"0.143"``, ``"0.5"``, ``"half-bit"``,
            ``"one-bit"`` or a number as text).
        shell: last shell before the first drop (RELION's convention, no interpolation);
            the last shell when the curve never drops.
        resolution_um: ``L/shell`` (``N·Δ/shell`` on an N³ grid), µm (``inf`` when the curve
            drops at shell 1).
        frequency_per_mm: ``shell/L``, 1/mm.
        interpolated_shell: the crossing between ``shell`` and ``shell + 1`` by linear
            interpolation of ``FSC − T``.
        interpolated_resolution_um: ``L/interpolated_shell``, µm.
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


def first_drop(fsc: np.ndarray, thr: np.ndarray, n_voxels: np.ndarray,
                min_voxels: float = 1.0) -> tuple[int, float, bool]:
    """(shell, interpolated shell, reached_nyquist) of the first drop below ``thr`` (r ≥ 1).

    Shells with fewer than ``min_voxels`` voxels (the first shells of narrow cones) are
    skipped; interpolation runs between the neighbouring shells that are kept. Where no shell is
    kept (every shell of a narrow cone on a small grid), nothing was measured: (0, 0.0, False),
    an undefined resolution, not Nyquist.
    """
    shells = np.flatnonzero(n_voxels >= max(min_voxels, 1.0))
    shells = shells[shells >= 1]
    if shells.size == 0:
        return 0, 0.0, False
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


def shell_resolution_um(shell: float, box_mm: float) -> float:
    """Full-period resolution of (fractional) shell ``shell`` in a box of ``box_mm``, µm (inf at 0)."""
    return math.inf if shell <= 0 else 1000.0 * box_mm / shell


def resolution_at(curve: FSCCurve, threshold: str | float = "0.143") -> Crossing:
    """The resolution where ``curve`` first falls below ``threshold``.

    The search starts at shell 1 (shell 0 is the mean) and skips shells of fewer than
    :data:`MIN_SHELL_VOXELS` voxels. As in RELION, the reported shell is the last one before the
    first drop, without interpolation; the linearly interpolated crossing is given as well. A
    curve that stays above the threshold up to the last shell gives the Nyquist resolution
    (``2Δ``) with ``reached_nyquist=True``.

    Args:
        curve: an FSC curve.
        threshold: a number in (0, 1) or a name in :data:`THRESHOLDS` (``"0.143"``, ``"0.5"``,
            ``"half-bit"``, ``"one-bit"``).

    Returns:
        The crossing, resolutions in µm.

    Raises:
        ConfigError: an unknown threshold name or a number outside (0, 1).
    """
    name = threshold_name(threshold, where="resolution_at")
    thr = threshold_values(name, curve.n_voxels)
    shell, interp, nyq = first_drop(np.asarray(curve.fsc), thr, np.asarray(curve.n_voxels),
                                    MIN_SHELL_VOXELS)
    box_mm = curve.box_mm
    return Crossing(
        threshold=name,
        shell=shell,
        resolution_um=shell_resolution_um(shell, box_mm),
        frequency_per_mm=shell / box_mm,
        interpolated_shell=interp,
        interpolated_resolution_um=shell_resolution_um(interp, box_mm),
        reached_nyquist=nyq,
    )


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


def _curve(fsc: np.ndarray, n_vox: np.ndarray, geo: FourierGrid, voxel: tuple[float, float, float],
           **extra) -> FSCCurve:
    r = np.arange(len(fsc))
    with np.errstate(divide="ignore"):
        res_um = np.where(r > 0, 1000.0 * geo.box_mm / np.maximum(r, 1), np.inf)
    return FSCCurve(
        shell=readonly(r),
        frequency_per_mm=readonly(r / geo.box_mm),
        resolution_um=readonly(res_um),
        fsc=readonly(fsc),
        n_voxels=readonly(n_vox),
        threshold_0143=readonly(threshold_values("0.143", n_vox)),
        threshold_05=readonly(threshold_values("0.5", n_vox)),
        threshold_half_bit=readonly(threshold_values("half-bit", n_vox)),
        threshold_one_bit=readonly(threshold_values("one-bit", n_vox)),
        shape=geo.shape,
        voxel_size_mm=tuple(voxel),
        box_mm=geo.box_mm,
        **{k: (readonly(v) if isinstance(v, np.ndarray) else v) for k, v in extra.items()},
    )


def fsc_with_spectra(a: np.ndarray, b: np.ndarray, voxel: tuple[float, float, float], mask: np.ndarray | None,
                     *, correct_mask: bool, randomize_below: float, seed: int,
                     geo: FourierGrid) -> tuple[FSCCurve, Spectra]:
    """The curve and the half-space transforms it was computed from."""
    fa, fb = rfft_flat(a), rfft_flat(b)
    cross, p1, p2, n_vox = shell_sums(fa, fb, geo)
    unmasked = correlation(cross, p1, p2)
    if mask is None:
        return _curve(unmasked, n_vox, geo, voxel), Spectra(fa, fb)
    fma, fmb = rfft_flat(a * mask), rfft_flat(b * mask)
    masked = correlation(*shell_sums(fma, fmb, geo)[:3])
    extra: dict[str, Any] = {"fsc_unmasked": unmasked, "fsc_masked": masked}
    below = np.flatnonzero(unmasked[1:] < randomize_below)
    if not (correct_mask and below.size):
        return _curve(masked, n_vox, geo, voxel, **extra), Spectra(fma, fmb)
    start = int(below[0]) + 1
    rng = np.random.default_rng(seed)
    fra = rfft_flat(randomize_phases(a, geo.shell, start, rng) * mask)
    frb = rfft_flat(randomize_phases(b, geo.shell, start, rng) * mask)
    randomized = correlation(*shell_sums(fra, frb, geo)[:3])
    extra.update(fsc_randomized=randomized, randomize_from_shell=start)
    curve = _curve(mask_corrected(masked, randomized, start), n_vox, geo, voxel, **extra)
    return curve, Spectra(fma, fmb, fra, frb, start)


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
    r"""Fourier shell correlation of two maps on the same grid (any shape, any voxel edges).

    .. math::

        \mathrm{FSC}(r) = \frac{\operatorname{Re}\sum_{k \in r} F_1 F_2^*}
                                {\sqrt{\sum_{k \in r} |F_1|^2 \sum_{k \in r} |F_2|^2}},
        \qquad r = \operatorname{round}(|f| L) = 0 \ldots r_\mathrm{max}

    with ``f`` the physical frequency (1/mm) and ``L`` the longest edge of the box, so shells are
    ``1/L`` apart on the grid as it is, without padding; ``r_max = floor(L/(2 Δ_max))``, the
    Nyquist shell of the coarsest axis. On an N³ grid of edge Δ: ``round(|k|)``, ``r = 0 … N/2``.

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
        vol_a: (Z, Y, X) first map, indexed ``(z, y, x)`` (NumPy array or CPU tensor).
        vol_b: (Z, Y, X) second map on the same grid.
        voxel_size_mm: voxel edges ``(Δx, Δy, Δz)`` or one edge for cubic voxels, mm.
        mask: (Z, Y, X) soft mask in [0, 1] applied to both maps (e.g.
            :func:`soft_sphere_mask`); ``None`` for none.
        correct_mask: apply the phase-randomisation correction when a mask is given.
        randomize_below: unmasked FSC below which phases are randomised (RELION: 0.8).
        seed: seed of the random phases.

    Returns:
        The curve for shells ``0 … r_max``.

    Raises:
        ShapeError: the maps differ in shape, are not 3-D or have an edge under 4 voxels, the
            voxel edges are not positive, or the mask has another shape.
        DataError: a map or the mask holds NaN or inf.
    """
    where = "fsc_curve"
    a = as_map(vol_a, "vol_a", where)
    b = as_map(vol_b, "vol_b", where)
    shape = check_pair(a, b, where)
    voxel = voxel_edges(voxel_size_mm, where)
    m = prepare_mask(mask, a.shape, where)
    curve, _ = fsc_with_spectra(a, b, voxel, m, correct_mask=correct_mask, randomize_below=randomize_below,
                                seed=seed, geo=fourier_grid(shape, voxel))
    return curve
