"""What a fit needs from a run: the measured views (:class:`ViewData`), the instrument (:class:`FitData`).

Also how a run is split into two statistically independent halves (:func:`split_fit_data`) and
the grid of a fit's density volume (:func:`density_grid`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from optics.camera import roi_pixel_centers
from optics.system import System
from recon.errors import ConfigError
from recon.io.run import Run, load_run
from recon.io.sensor import binomial_split

__all__ = [
    "AUTO_VOXELS_MAX",
    "HALF_SEED_OFFSET",
    "SPLITS",
    "FitData",
    "ViewData",
    "auto_voxel_mm",
    "density_grid",
    "fit_data",
    "load_fit_data",
    "object_pixel_mm",
    "split_fit_data",
]


@dataclass(frozen=True)
class ViewData:
    """Measured data of one view.

    Attributes:
        name: view name.
        camera: camera index in the system.
        roi: (x0, y0, width, height), full-sensor px.
        electrons: (K, h, w) photoelectrons after dark subtraction, float32.
        mask: (K, h, w) usable pixels (not saturated, not dead).
        censored: (K, h, w) frames clipped at 0 ADU, or None (:class:`recon.io.run.RunView`).
        censor_e: (h, w) the bound on a clipped frame's own signal, e⁻, or None.
        censor_shift: (h, w) the dark subtraction beyond the offset, e⁻, or None.
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    electrons: torch.Tensor
    mask: torch.Tensor
    censored: torch.Tensor | None = None
    censor_e: torch.Tensor | None = None
    censor_shift: torch.Tensor | None = None

    def pixel_coords(self) -> torch.Tensor:
        """(h·w, 2) full-sensor (u, v) of the view's pixels, row-major."""
        return roi_pixel_centers(self.roi).reshape(-1, 2)


@dataclass(frozen=True)
class FitData:
    """Everything a fit needs from a run."""

    system: System
    views: tuple[ViewData, ...]
    photons_per_atom: float | None
    read_noise_e: float | None = None  # effective read noise; None: the sensor's

    @property
    def density_unit(self) -> str:
        """Unit of the fitted density."""
        return "atoms/mm^3" if self.photons_per_atom else "relative"


def fit_data(run: Run) -> tuple[FitData, Path | None]:
    """What the fit needs from a loaded run, and its truth volume (None for a real run).

    The read noise used by the loss includes the noise of a subtracted dark frame:
    σ_eff = σ √(1 + 1/dark_pages).
    """
    views = tuple(ViewData(v.name, v.camera, v.roi, v.electrons, v.mask, v.censored, v.censor_e,
                           v.censor_shift) for v in run.views)
    sigma = run.system.cameras[0].sensor.read_noise_e
    pages = min(v.dark_pages for v in run.views)
    sigma_eff = sigma * math.sqrt(1 + 1 / pages) if pages > 0 else sigma
    truth = run.truth_volume
    truth = truth if truth is not None and truth.is_file() else None
    return FitData(run.system, views, run.photons_per_atom, sigma_eff), truth


def load_fit_data(run_dir: Path) -> tuple[FitData, str, Path | None]:
    """Read a run directory into what the fit needs: the data, the run's name, its truth (or None)."""
    run = load_run(run_dir)
    data, truth = fit_data(run)
    return data, run.name, truth


HALF_SEED_OFFSET = 1000  # half i of a split-halves fit uses seed + i · HALF_SEED_OFFSET
SPLIT_SEED_OFFSET = 7919  # split k of the uncertainty's thinning uses seed + k · SPLIT_SEED_OFFSET

#: How ``--split-halves`` divides the data.
SPLITS = ("auto", "thinning", "frames")


def split_fit_data(data: FitData, how: str, seed: int) -> tuple[tuple[FitData, FitData], str]:
    """Two statistically independent halves of the data, for split-halves FSC.

    ``thinning`` splits the photoelectrons of every pixel binomially
    (:func:`recon.io.sensor.binomial_split`): each half holds every view and pixel with half the
    photons, so it is fitted with half the photons per atom and read noise σ/√2, and each half
    map estimates the full density; frames clipped at 0 ADU, whose photons are unknown, are left
    out of both halves (missing, not censored). ``frames`` gives the even shots to one half and the odd to
    the other (every view needs two or more). ``auto``: ``frames`` when every view has two or
    more shots, else ``thinning``.

    Returns:
        The halves and the split actually used.
    """
    if how not in SPLITS:
        raise ConfigError(f"fit: --split must be one of {', '.join(SPLITS)}, got {how!r}")
    shots = min(v.electrons.shape[0] for v in data.views)
    if how == "auto":
        how = "frames" if shots >= 2 else "thinning"
    if how == "frames":
        if shots < 2:
            name = min(data.views, key=lambda v: v.electrons.shape[0]).name
            raise ConfigError(f"fit: --split frames needs two or more shots in every view, view '{name}' "
                              "has one; use --split thinning")
        halves = tuple(
            dataclasses.replace(data, views=tuple(
                ViewData(v.name, v.camera, v.roi, v.electrons[start::2], v.mask[start::2],
                         None if v.censored is None else v.censored[start::2], v.censor_e, v.censor_shift)
                for v in data.views))
            for start in (0, 1)
        )
        return halves, how
    gen = torch.Generator().manual_seed(seed)
    sigma = float(data.read_noise_e if data.read_noise_e is not None
                  else data.system.cameras[0].sensor.read_noise_e)
    split_views: tuple[list, list] = ([], [])
    for v in data.views:
        usable = torch.where(v.mask, v.electrons, torch.zeros_like(v.electrons))
        a, b = binomial_split(usable, gen, read_noise_e=sigma)
        for side, counts in zip(split_views, (a, b), strict=True):
            side.append(ViewData(v.name, v.camera, v.roi, counts, v.mask))
    y_half = (data.photons_per_atom or 4 * math.pi) / 2
    halves = tuple(
        dataclasses.replace(data, views=tuple(side), photons_per_atom=y_half,
                            read_noise_e=sigma / math.sqrt(2))
        for side in split_views
    )
    return halves, how


#: The most voxels along the box's longest edge that the automatic output voxel gives: a box many
#: times the cloud (a ±15 mm MOT chamber seen at 34.5 µm per pixel) would otherwise get an 869³
#: grid of 2.6 GB whose voxels no fit resolves.
AUTO_VOXELS_MAX = 256


def object_pixel_mm(data: FitData) -> float:
    """Camera 0's pixel in object space (pitch / magnification), mm, rounded to 0.1 µm."""
    return round(data.system.cameras[0].object_pixel_mm, 4)


def auto_voxel_mm(data: FitData) -> float:
    """The output voxel of ``voxel_size_mm = 0``, mm.

    The object pixel, coarser if the box would then hold more than :data:`AUTO_VOXELS_MAX` voxels
    along its longest edge.
    """
    longest = float(data.system.volume.size_mm.max())
    return max(object_pixel_mm(data), float(f"{longest / AUTO_VOXELS_MAX:.3g}"))


def density_grid(data: FitData, voxel_size_mm: float) -> tuple[tuple[int, int, int], tuple, tuple]:
    """Shape (Z, Y, X), origin and voxel size of the output grid covering the box.

    ``voxel_size_mm = 0`` chooses :func:`auto_voxel_mm` (the object pixel of camera 0, at most
    :data:`AUTO_VOXELS_MAX` voxels along the longest edge).
    """
    if voxel_size_mm <= 0:
        voxel_size_mm = auto_voxel_mm(data)
    box = data.system.volume
    size = box.size_mm.tolist()
    n = [max(2, int(math.floor(s / voxel_size_mm + 1e-9))) for s in size]  # x, y, z
    centre = box.center_mm.tolist()
    origin = tuple(c - (k - 1) / 2 * voxel_size_mm for c, k in zip(centre, n, strict=True))
    return (n[2], n[1], n[0]), origin, (voxel_size_mm,) * 3
