"""Directional FSC: the FSC within cones around many directions (3DFSC).

Tan, Y. Z. et al. (2017), Nat. Methods 14, 793–796, doi:10.1038/nmeth.4347.

Gives the resolution along x, y and z and over a Fibonacci sphere of directions, and the
sphericity of the resolution (1: isotropic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from recon.analysis import spectra as fourier
from recon.analysis.fsc import (
    first_drop,
    fsc_with_spectra,
    shell_resolution_um,
    threshold_name,
    threshold_values,
)
from recon.errors import ConfigError

__all__ = [
    "DirectionalFSC",
    "check_directional_options",
    "directional_from_spectra",
    "directional_fsc",
    "fibonacci_directions",
]


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
        fsc: (D, R) FSC of each cone, shells ``0 … r_max`` (``N//2`` on an N³ grid).
        n_voxels: (D, R) Fourier voxels of each cone shell.
        threshold: canonical threshold name used for the crossings.
        cone_half_angle_deg: cone half-angle, degrees.
        min_cone_voxels: cone shells with fewer voxels were skipped in the crossing search.
        shell: (D,) last shell before each cone's first drop.
        interpolated_shell: (D,) interpolated crossing of each cone, shells.
        reached_nyquist: (D,) the cone never drops below the threshold.
        resolution_um: (D,) first-crossing resolution of each cone, µm.
        interpolated_resolution_um: (D,) interpolated resolution of each cone, µm.
        shape: ``(Z, Y, X)`` of the grid.
        voxel_size_mm: voxel edges ``(Δx, Δy, Δz)``, mm.
        box_mm: ``L``, the longest edge of the box (shell ``r`` is the frequency ``r/L``).
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
    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    box_mm: float

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


def _cone_sums(fa: np.ndarray, fb: np.ndarray, geo: fourier.FourierGrid, dirs: np.ndarray, cos_max: float
               ) -> np.ndarray:
    """(D, R, 4) per cone and shell: Σ Re F1F2*, Σ|F1|², Σ|F2|², voxel count (full grid).

    A voxel of shell r ≥ 1 belongs to the cone around d when ``|k̂ · d| ≥ cos_max`` (both halves
    of the double cone: the half-space transform stands for its Hermitian mirror); shell 0, the
    mean, belongs to every cone. Compiled (:func:`_cone_kernel`): each voxel is tested against
    every direction without the (voxels × directions) matrix.
    """
    keep = np.flatnonzero(geo.shell <= geo.r_max)
    shell = geo.shell[keep].astype(np.int64)
    w = geo.weight[keep]
    a, b = fa[keep], fb[keep]
    terms = np.stack([w * (a.real * b.real + a.imag * b.imag), w * np.abs(a) ** 2,
                      w * np.abs(b) ** 2, w], axis=-1)  # (M, 4)
    k = geo.k_xyz[keep]
    k_len = np.linalg.norm(k, axis=-1)
    units = k / np.where(k_len > 0, k_len, 1.0)[:, None]  # (M, 3); the k = 0 voxel is (0, 0, 0)
    sums = np.zeros((len(dirs), geo.r_max + 1, 4))
    sums[:, 0, :] = terms[shell == 0].sum(0)  # the mean belongs to every cone
    _cone_kernel(np.ascontiguousarray(units), shell, np.ascontiguousarray(terms),
                 np.ascontiguousarray(dirs, dtype=np.float64), float(cos_max), sums)
    return sums


@nb.njit(cache=True)
def _cone_kernel(units, shell, terms, dirs, cos_max, sums):
    """``sums[d, r] += terms[i]`` for every voxel i of shell r ≥ 1 in the double cone around ``dirs[d]``."""
    for i in range(units.shape[0]):
        r = shell[i]
        if r == 0:
            continue
        ux, uy, uz = units[i, 0], units[i, 1], units[i, 2]
        for d in range(dirs.shape[0]):
            if abs(ux * dirs[d, 0] + uy * dirs[d, 1] + uz * dirs[d, 2]) >= cos_max - 1e-12:
                for j in range(4):
                    sums[d, r, j] += terms[i, j]


def directional_from_spectra(spectra: fourier.Spectra, geo: fourier.FourierGrid,
                             voxel: tuple[float, float, float], name: str,
                             n_directions: int, cone_half_angle_deg: float,
                             min_cone_voxels: int) -> DirectionalFSC:
    """The directional FSC of the half-space transforms behind a curve (see :func:`directional_fsc`)."""
    dirs = np.concatenate([np.eye(3), fibonacci_directions(n_directions)])  # (D, 3)
    cos_max = math.cos(math.radians(cone_half_angle_deg))
    sums = _cone_sums(spectra.fa, spectra.fb, geo, dirs, cos_max)
    fsc = fourier.correlation(sums[..., 0], sums[..., 1], sums[..., 2])  # (D, R)
    if spectra.randomize_from_shell is not None:
        rand = _cone_sums(spectra.random_a, spectra.random_b, geo, dirs, cos_max)
        fsc = fourier.mask_corrected(fsc, fourier.correlation(rand[..., 0], rand[..., 1], rand[..., 2]),
                                     spectra.randomize_from_shell)
    n_vox = sums[..., 3]
    box_mm = geo.box_mm
    shells, interp, nyq = [], [], []
    for d in range(len(dirs)):
        s, si, q = first_drop(fsc[d], threshold_values(name, n_vox[d]), n_vox[d], min_cone_voxels)
        shells.append(s)
        interp.append(si)
        nyq.append(q)
    shells_a, interp_a = np.array(shells), np.array(interp)
    return DirectionalFSC(
        directions=fourier.readonly(dirs),
        fsc=fourier.readonly(fsc),
        n_voxels=fourier.readonly(n_vox),
        threshold=name,
        cone_half_angle_deg=float(cone_half_angle_deg),
        min_cone_voxels=int(min_cone_voxels),
        shell=fourier.readonly(shells_a),
        interpolated_shell=fourier.readonly(interp_a),
        reached_nyquist=fourier.readonly(np.array(nyq)),
        resolution_um=fourier.readonly(np.array([shell_resolution_um(s, box_mm) for s in shells_a])),
        interpolated_resolution_um=fourier.readonly(
            np.array([shell_resolution_um(s, box_mm) for s in interp_a])),
        shape=geo.shape,
        voxel_size_mm=tuple(voxel),
        box_mm=geo.box_mm,
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
        vol_a: (Z, Y, X) first map, ``(z, y, x)``.
        vol_b: (Z, Y, X) second map on the same grid.
        voxel_size_mm: voxel edges ``(Δx, Δy, Δz)`` or one edge, mm (cones are in physical frequency).
        threshold: threshold for each cone's crossing (a name in :data:`THRESHOLDS` or a
            number); information thresholds use each cone shell's voxel count.
        mask: (Z, Y, X) mask applied to both maps, or ``None``.
        n_directions: Fibonacci directions besides the three axes (≥ 0; ~100–500).
        cone_half_angle_deg: cone half-angle, degrees, in (0, 90].
        min_cone_voxels: cone shells with fewer voxels are not used for the crossings.
        correct_mask: apply the phase-randomisation correction when a mask is given.
        seed: seed of the random phases.

    Returns:
        The directional curves and resolutions.

    Raises:
        ShapeError: the maps differ in shape or have an edge under 4 voxels.
        DataError: a map holds NaN or inf.
        ConfigError: an unknown threshold, a negative ``n_directions`` or a bad angle.
    """
    where = "directional_fsc"
    name = threshold_name(threshold, where=where)
    check_directional_options(n_directions, cone_half_angle_deg, where)
    a = fourier.as_map(vol_a, "vol_a", where)
    b = fourier.as_map(vol_b, "vol_b", where)
    shape = fourier.check_pair(a, b, where)
    voxel = fourier.voxel_edges(voxel_size_mm, where)
    m = fourier.prepare_mask(mask, a.shape, where)
    geo = fourier.fourier_grid(shape, voxel)
    _, spectra = fsc_with_spectra(a, b, voxel, m, correct_mask=correct_mask, randomize_below=0.8,
                                  seed=seed, geo=geo)
    return directional_from_spectra(spectra, geo, voxel, name, n_directions, cone_half_angle_deg,
                                    min_cone_voxels)


def check_directional_options(n_directions: int, angle_deg: float, where: str) -> None:
    """Raise ConfigError for a cone count that is not a whole number ≥ 0 or an angle outside (0, 90)°."""
    if int(n_directions) != n_directions or n_directions < 0:
        raise ConfigError(f"{where}: n_directions must be an integer ≥ 0, got {n_directions!r}")
    if not 0 < angle_deg <= 90:
        raise ConfigError(f"{where}: cone_half_angle_deg must be in (0, 90], got {angle_deg!r}")
