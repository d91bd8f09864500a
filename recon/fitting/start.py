r"""EM's start: the data's own Gaussian plus a tapered floor, or another shot's density moved onto it.

All the dome's views lie within 55° of its axis, so nothing measures the spatial frequencies within
35° of z (the missing cone), and EM never corrects the part of its start that lies there: a start
that is uniform up to the faces (a step at each face) left a haze along them (run042's widths came
out +14 % in z); a start tapered to 0 at the faces still gave each cloud the z profile of the taper
(in ``bench/accuracy.py``: a donut's σz +39 %, a cloud near a face pulled 12 µm toward the centre).
EM therefore starts from the data's own Gaussian: the 3D Gaussian of greatest likelihood
(:func:`~recon.fitting.gaussian.fit_gaussian`; its z shape is fixed by the tilted views' projections),
plus a small uniform floor (:func:`start_floor`) tapered (Hann, to 0 at the faces) along every box
axis whose faces no view sees within :data:`EDGE_ON_DEG` of edge-on (:func:`taper_axes`, from the
pool's ray directions; :func:`start_grid`), at the data's light (``FitConfig.em_init`` = 1: from a
much fainter start the first updates raise the bright core faster than the faint wings, and the
early stop keeps the widths small). A warm start (``FitConfig.em_start``, :func:`warm_grid`) puts
another shot's density in the Gaussian's place, moved onto its centre and scaled to its atoms:
consecutive shots of a campaign (``recon batch --warm-start``).
"""

from __future__ import annotations

import math

import torch

from recon.errors import DataError
from recon.fitting.gaussian import Gaussian
from recon.fitting.projector import grid_density
from recon.fitting.raypool import RayPool
from recon.io.volume import Volume, grid_points
from recon.model.fields.base import box_grid

__all__ = ["EDGE_ON_DEG", "START_FLOOR", "START_FLOOR_SCALE", "pool_view_directions", "start_floor",
           "start_grid", "start_window", "taper_axes", "warm_grid"]

# A pair of box faces seen by some view within this angle of edge-on is resolved by it: the start
# stays uniform along that axis (see the module docstring).
EDGE_ON_DEG = 20.0
# The share of EM's start that is uniform (tapered) rather than the data's Gaussian (:func:`start_grid`),
# at most ...
START_FLOOR = 0.005
# ... and at most this times (σ̄ / L̄)², σ̄ and L̄ the geometric means of the Gaussian's widths and of
# the box's edges (:func:`start_floor`).
START_FLOOR_SCALE = 0.2


def taper_axes(directions: torch.Tensor, edge_on_deg: float = EDGE_ON_DEG) -> tuple[int, ...]:
    """Box axes (0 x, 1 y, 2 z) whose faces no view sees within ``edge_on_deg`` of edge-on.

    ``directions``: (V, 3) the views' directions in the box.
    A view along d sees the faces normal to axis e edge-on when d · e = 0; it is ``asin |d · e|``
    from it.
    """
    d = directions.double() / directions.double().norm(dim=1, keepdim=True)
    nearest = d.abs().min(dim=0).values  # per axis: the smallest |d · e| over views
    return tuple(a for a in range(3) if float(nearest[a]) > math.sin(math.radians(edge_on_deg)))


def pool_view_directions(pool: RayPool) -> torch.Tensor:
    """(V, 3) the mean direction of each view's segments in the box (x, y, z), unit length."""
    rays = pool.rays
    view = pool.view_of_pixel[rays.pixel // pool.samples]
    views = int(pool.view_of_pixel.max()) + 1
    out = torch.zeros(views, 3, dtype=torch.float64, device=view.device).index_add_(
        0, view, rays.directions.double())  # a view's rays cross the box one way, within its lens's cone
    return (out / out.norm(dim=1, keepdim=True).clamp_min(1e-30)).cpu()


def start_window(shape_zyx: tuple[int, int, int], axes: tuple[int, ...]) -> torch.Tensor:
    """(Z, Y, X) a Hann window ``cos²(π t / 2)`` along each of ``axes`` (0 x, 1 y, 2 z), 1 along the others.

    t runs over (−1, 1) across the box, at the voxel centres.
    """
    window = torch.ones(shape_zyx, dtype=torch.float64)
    for axis in axes:  # x is the last grid dimension
        dim = 2 - axis
        n = shape_zyx[dim]
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
        shape = [1, 1, 1]
        shape[dim] = n
        window = window * (torch.cos(0.5 * math.pi * t) ** 2).reshape(shape)
    return window


def start_floor(gaussian: Gaussian, box_min_mm, box_max_mm) -> float:
    """The share of EM's start that is the uniform floor: ``min(START_FLOOR, START_FLOOR_SCALE (σ̄/L̄)²)``.

    EM barely changes the start where the views hold little light, and its early stop keeps much
    of the floor there: a haze whose share s of the atoms, spread over a box of edge L, adds about
    ``s L² / 12`` to the cloud's variance. Bounding s by ``0.2 (σ̄/L̄)²`` keeps that below 1.7 % of
    the variance (widths +0.9 %) in any box: data/run042's box is 6 of its cloud's σ̄ across (s
    0.5 %, :data:`START_FLOOR`), data/mot4's 17 (s 0.07 %).
    """
    sigma = float(torch.diagonal(gaussian.cov_mm2).clamp_min(0).sqrt().prod()) ** (1 / 3)
    edge = float(torch.as_tensor(box_max_mm, dtype=torch.float64).sub(
        torch.as_tensor(box_min_mm, dtype=torch.float64)).prod()) ** (1 / 3)
    return min(START_FLOOR, START_FLOOR_SCALE * (sigma / edge) ** 2)


def start_grid(gaussian: Gaussian, mean_density: float, shape_zyx: tuple[int, int, int], box_min_mm,
               box_max_mm, axes: tuple[int, ...], floor: float = START_FLOOR) -> torch.Tensor:
    """(Z, Y, X) EM's start, relative to ``mean_density``: the Gaussian plus a tapered floor.

    ``(1 − floor) · G(x) / mean_density + floor · w(x)``, G at the voxel centres and w the
    :func:`start_window` along ``axes``. The floor lets EM put density where the Gaussian has
    almost none (a second cloud, a clump in the wings), whose growth from G's tails alone would
    take many updates; it is small because its missing-cone part is never corrected (a larger
    floor leaves a haze that widens a small cloud and pulls one near a face toward the centre).
    """
    shape, origin, size = box_grid(box_min_mm, box_max_mm, shape_zyx)
    g = gaussian.on_grid(shape, origin, size)
    return (1 - floor) * g / mean_density + floor * start_window(shape, axes)


def warm_grid(previous: Volume, gaussian: Gaussian, mean_density: float, shape_zyx: tuple[int, int, int],
              box_min_mm, box_max_mm, axes: tuple[int, ...], floor: float = START_FLOOR) -> torch.Tensor:
    """(Z, Y, X) EM's warm start, relative to ``mean_density``: another fit's density, moved and scaled.

    ``previous`` (a similar shot's density, e.g. the one before in a campaign) is moved so that
    its centroid lies on the data's Gaussian centre, sampled at this grid's voxel centres
    (trilinear, 0 outside its own box) and scaled to the Gaussian's atoms inside this box (those
    of :func:`start_grid`'s Gaussian part: a cloud wider than the box has atoms beyond it that no
    voxel holds); the tapered floor of
    :func:`start_grid` is added as there. The shape the data cannot decide (the missing cone)
    then comes from the previous fit rather than from a Gaussian; what the new data say is
    fitted by EM as from any start.

    Raises:
        DataError: a previous density with no positive voxel.
    """
    data = torch.as_tensor(previous.data, dtype=torch.float64).clamp_min(0.0)
    total = float(data.sum())
    if not total > 0:
        raise DataError("fit: em_start's density holds no positive voxel; give a fit's density.tif or leave "
                        "em_start empty")
    voxel = torch.tensor(previous.voxel_size_mm, dtype=torch.float64)
    first = torch.tensor(previous.origin_mm, dtype=torch.float64)  # centre of voxel (0, 0, 0), (x, y, z)
    points = grid_points(tuple(data.shape), tuple(first.tolist()), tuple(voxel.tolist()), dtype=torch.float64)
    centroid = (data[..., None] * points).sum((0, 1, 2)) / total
    lo = first - voxel / 2
    density = grid_density(data, lo.tolist(), (lo + voxel * torch.tensor(data.shape[::-1])).tolist())
    shape, origin, size = box_grid(box_min_mm, box_max_mm, shape_zyx)
    here = grid_points(shape, origin, size, dtype=torch.float64)
    moved = density(here - (gaussian.mean_mm.double().cpu() - centroid))
    if not float(moved.sum()) > 0:
        raise DataError("fit: em_start's density does not overlap this fit's box once moved onto the data's "
                        "centre; give a density of the same instrument or leave em_start empty")
    scale = float(gaussian.on_grid(shape, origin, size).sum()) / float(moved.sum())  # its atoms in the box
    return (1 - floor) * moved * scale / mean_density + floor * start_window(shape, axes)
