r"""The projector: the linear map from a voxel density to the expected photoelectrons of the pool's pixels.

For the emission model with a voxel density x (values at the voxel centres, trilinearly
interpolated with the :class:`~recon.model.fields.voxel.VoxelField` convention), the expected
photoelectrons of pixel i are

.. math::

    λ_i = (A x)_i = \frac{Y}{4π} \sum_{r ∈ i} w_r \sum_k δ_r\, \mathrm{trilinear}(x, o_r + t_{rk} d_r)

over its pooled segments r at the stratum midpoints ``t_rk`` (:func:`recon.model.render.render_pixels`
with ``jitter=False``, the quadrature EM inverts). :class:`Projector` applies A (:meth:`~Projector.forward`)
and its exact transpose (:meth:`~Projector.adjoint`) to any subset of the pixels, without storing
A (its entries are computed on the fly: the matrix of run042 would hold billions of entries).

Backends: ``numba`` (compiled CPU kernels, :mod:`recon.fitting.projector_kernels`; the default on
the CPU) and ``torch`` (``render_pixels`` of the grid, and autograd for the adjoint: the
specification the kernels are tested against, and the path on CUDA). :func:`project` is A as a
differentiable torch function of x, so a field evaluated on a grid can be fitted through it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from recon.errors import BackendUnavailableError, ShapeError
from recon.fitting.projector_kernels import adjoint_kernel, fold, forward_kernel, pad
from recon.fitting.raypool import RayPool
from recon.io.volume import grid_points
from recon.model.render import render_pixels
from recon.threads import numba_threads

__all__ = ["PROJECTOR_BACKENDS", "Projector", "grid_density", "predict_pixels", "project", "voxel_centres",
           "voxel_values"]

PROJECTOR_BACKENDS = ("auto", "numba", "torch")


def grid_density(grid: torch.Tensor, box_min_mm, box_max_mm):
    """The density function of voxel values ``grid`` (Z, Y, X) tiling a box, as a VoxelField interpolates.

    Trilinear (``grid_sample``, ``align_corners=False``, ``padding_mode="border"``); 0 outside the
    box. Differentiable with respect to ``grid``.
    """
    lo = torch.as_tensor(box_min_mm, dtype=grid.dtype, device=grid.device)
    extent = torch.as_tensor(box_max_mm, dtype=grid.dtype, device=grid.device) - lo

    def density(points_mm: torch.Tensor) -> torch.Tensor:
        u = (points_mm.to(grid.dtype) - lo) / extent
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        coords = (2 * u - 1).reshape(1, -1, 1, 1, 3)
        out = F.grid_sample(grid[None, None], coords, mode="bilinear", padding_mode="border",
                            align_corners=False).reshape(u.shape[:-1])
        return torch.where(inside, out, torch.zeros_like(out))

    return density


class Projector:
    """A (and Aᵀ) over the pooled segments of a :class:`~recon.fitting.raypool.RayPool`.

    Args:
        pool: the ray pool (CPU for the numba backend).
        box_min_mm: (3,) the lower corner (x, y, z) of the box the voxels tile, mm.
        box_max_mm: (3,) its upper corner, mm.
        shape_zyx: the grid's shape (Z, Y, X).
        photons_per_atom: Y (λ carries ``Y / 4π``).
        step_mm: the largest stratum length along a segment, mm.
        backend: ``numba``, ``torch``, or ``auto`` (numba for a CPU pool, torch for CUDA).
        chunk_pixels: pixels per call of the torch backend (bounds its memory).

    Raises:
        BackendUnavailableError: ``numba`` asked for a CUDA pool.
    """

    def __init__(self, pool: RayPool, box_min_mm, box_max_mm, shape_zyx, *, photons_per_atom: float,
                 step_mm: float, backend: str = "auto", chunk_pixels: int = 32768) -> None:
        if backend not in PROJECTOR_BACKENDS:
            raise ValueError(f"Projector: backend must be one of {PROJECTOR_BACKENDS}, got {backend!r}")
        on_cpu = pool.rays.weights.device.type == "cpu"
        if backend == "auto":
            backend = "numba" if on_cpu else "torch"
        if backend == "numba" and not on_cpu:
            raise BackendUnavailableError("Projector: the numba backend runs on the CPU, and this pool is on "
                                          f"{pool.rays.weights.device}; pass backend='torch' (or 'auto')")
        self.pool, self.backend, self.chunk_pixels = pool, backend, chunk_pixels
        self.shape = tuple(int(n) for n in shape_zyx)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ShapeError(f"Projector: shape_zyx must be (Z, Y, X) of positive ints, got {shape_zyx}")
        self.box_min_mm = [float(v) for v in box_min_mm]
        self.box_max_mm = [float(v) for v in box_max_mm]
        self.emission = float(photons_per_atom) / (4.0 * math.pi)
        self.step_mm = float(step_mm)
        if backend == "numba":  # the kernels compute in the rays' dtype where torch does (float32 or 64)
            rays = pool.rays
            real = self._real = rays.weights.detach().numpy().dtype.type
            self._lo = np.asarray(self.box_min_mm, dtype=real)
            self._extent = np.asarray(self.box_max_mm, dtype=real) - self._lo
            length = (rays.t_far - rays.t_near).detach().clamp_min(0.0)  # as recon.model.render samples
            strata = pool.strata(self.step_mm)
            self._rays = (*(np.ascontiguousarray(t.detach().numpy(), dtype=real) for t in (
                rays.origins, rays.directions, rays.weights, rays.t_near)),
                strata.to(torch.int32).numpy(), (length / strata).numpy())
            self._offsets = pool.offsets.numpy()
        self._cells: np.ndarray | None = None  # each pixel's cell code (locality_order), when first asked

    def __repr__(self) -> str:
        return (f"Projector(pixels={self.pool.n_pixels}, segments={len(self.pool.rays)}, shape={self.shape}, "
                f"step_mm={self.step_mm}, backend={self.backend!r})")

    def segments(self, pixels: torch.Tensor) -> int:
        """The number of pooled segments of ``pixels``."""
        p = pixels.to(self.pool.offsets.device)
        s = self.pool.samples
        return int((self.pool.offsets[(p + 1) * s] - self.pool.offsets[p * s]).sum())

    def locality_order(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` reordered so that pixels whose rays cross the same part of the box come together.

        For a sparse set of pixels (an EM subset, the held-out pixels: a pixel in 20 or 32), which
        the kernels otherwise visit in index order, each ray far from the last and the grid's
        cache lines fetched anew. The order: by the Morton code of the 4×4×4 cell holding the
        midpoint of the pixel's first segment, then by index within a cell: rays that cross
        the same region in turn (``bench/projector_pass.py`` times a subset of run042 both
        ways). A dense set (every pixel) is faster in index order, where neighbouring pixels
        share cache lines: leave it so. The result of :meth:`forward` follows
        the order of the pixels it is given, and :meth:`adjoint` does not depend on it but by
        rounding. The torch backend keeps the order given.
        """
        if self.backend != "numba" or len(pixels) < 2:
            return pixels
        if self._cells is None:
            self._cells = _cell_codes(self._lo, self._extent, *self._rays, self._offsets, self.pool.samples)
        order = np.argsort(self._cells[pixels.cpu().numpy()], kind="stable")
        return pixels[torch.from_numpy(order).to(pixels.device)]

    def _segments(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last segment of each pixel (its samples' segments are contiguous)."""
        p = pixels.cpu().numpy().astype(np.int64)
        s = self.pool.samples
        return self._offsets[p * s], self._offsets[(p + 1) * s]

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape) != self.shape:
            raise ShapeError(f"Projector: the grid must have shape {self.shape} (Z, Y, X), "
                             f"got {tuple(x.shape)}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(P,) expected photoelectrons ``(A x)[pixels]`` of the voxel values ``x`` (Z, Y, X).

        Not differentiable (see :func:`project`); in x's dtype, on the pool's device.
        """
        self._check(x)
        if self.backend == "torch":
            density = grid_density(x, self.box_min_mm, self.box_max_mm)
            return torch.cat([render_pixels(density, self.pool.gather(part), len(part),
                                            photons_per_atom=4 * math.pi * self.emission,
                                            step_mm=self.step_mm, jitter=False)
                              for part in pixels.split(self.chunk_pixels)]) if len(pixels) else x.new_zeros(0)
        first, last = self._segments(pixels)
        out = np.zeros(len(first), dtype=np.float64)
        numba_threads()
        forward_kernel(pad(x.detach().cpu().numpy()), self._lo, self._extent, *self._rays, first, last, out)
        return torch.from_numpy(out * self.emission).to(x.dtype)

    @torch.no_grad()
    def adjoint(self, y: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """(Z, Y, X) ``Aᵀ y``: the values y (P,) of ``pixels`` back-projected onto the grid."""
        if y.shape != pixels.shape:
            raise ShapeError(f"Projector.adjoint: y must have the shape of pixels {tuple(pixels.shape)}, "
                             f"got {tuple(y.shape)}")
        if self.backend == "torch":
            x = torch.zeros(self.shape, dtype=y.dtype, device=y.device, requires_grad=True)
            density = grid_density(x, self.box_min_mm, self.box_max_mm)
            out = torch.zeros(self.shape, dtype=y.dtype, device=y.device)
            with torch.enable_grad():
                for part, values in zip(pixels.split(self.chunk_pixels), y.split(self.chunk_pixels),
                                        strict=True):
                    pred = render_pixels(density, self.pool.gather(part), len(part),
                                         photons_per_atom=4 * math.pi * self.emission, step_mm=self.step_mm,
                                         jitter=False)
                    if pred.requires_grad:  # else no segment of these pixels crosses the box
                        out += torch.autograd.grad(pred, x, values)[0]
            return out
        first, last = self._segments(pixels)
        partial = np.zeros((numba_threads(), *(n + 2 for n in self.shape)), dtype=self._real)
        adjoint_kernel(y.detach().cpu().numpy().astype(np.float64), self._lo, self._extent, *self._rays,
                       first, last, partial)
        out = torch.empty(self.shape, dtype=y.dtype)
        fold(partial, self.emission, out.numpy())
        return out


def _cell_codes(lo, extent, origins, directions, weights, t_near, strata, deltas, offsets, samples: int
                ) -> np.ndarray:
    """(P,) int64 each pixel's cell code for :meth:`Projector.locality_order`.

    The Morton code of the 4×4×4 cell of the box that holds the midpoint of the pixel's first
    segment; 0 for a pixel without segments.
    """
    n_pixels = (len(offsets) - 1) // samples
    first = offsets[np.arange(n_pixels) * samples]
    has = first < offsets[np.arange(1, n_pixels + 1) * samples]
    r = first[has]
    t = t_near[r].astype(np.float64) + 0.5 * strata[r] * deltas[r].astype(np.float64)
    mid = origins[r].astype(np.float64) + t[:, None] * directions[r]
    cell = np.clip(((mid - lo) / extent * 4).astype(np.int64), 0, 3)  # (x, y, z) in 0 … 3
    code = np.zeros(n_pixels, dtype=np.int64)
    for bit in range(2):  # interleave the two bits of x, y, z
        for axis in range(3):
            code[has] |= ((cell[:, axis] >> bit) & 1) << (3 * bit + axis)
    return code


def voxel_centres(projector: Projector) -> torch.Tensor:
    """(Z·Y·X, 3) float64 centres (x, y, z) of the projector's voxels, mm, in the grid's C order."""
    lo = np.asarray(projector.box_min_mm, dtype=np.float64)
    size = (np.asarray(projector.box_max_mm, dtype=np.float64) - lo) / np.asarray(projector.shape[::-1])
    return grid_points(projector.shape, tuple(lo + size / 2), tuple(size), dtype=torch.float64).reshape(-1, 3)


def voxel_values(field) -> torch.Tensor | None:
    """(Z, Y, X) the density at the voxel centres of a linear VoxelField (what A acts on), else None.

    A field whose density is linear in its values (``kind == "voxel"``, ``activation == "linear"``)
    is its voxel values trilinearly interpolated, so its render is the projector's forward map.
    """
    if getattr(field, "kind", "") != "voxel" or getattr(field, "activation", "") != "linear":
        return None
    scale = field.density_scale * torch.exp(field.log_gain.to(field.dtype))
    return (scale * field.grid.detach()[0, 0].clamp_min(0.0)).detach()


@torch.no_grad()
def predict_pixels(field, pool: RayPool, pixels: torch.Tensor, *, photons_per_atom: float, step_mm: float,
                   model: str = "emission", attenuation: float = 1.0, max_samples: int = 1 << 19,
                   projector: Projector | None = None) -> torch.Tensor:
    """(P,) expected photoelectrons of ``pixels`` at the stratum midpoints, not differentiable.

    By the projector for a linear voxel field in the emission model (:func:`voxel_values`): the
    given ``projector`` (over ``pool``, this field's grid, ``photons_per_atom`` and ``step_mm``:
    EM's own, so that the fit's checks do not set one up anew each time) or a new one. Otherwise
    by :func:`recon.model.render.render_pixels` of the field, in runs of pixels of about
    ``max_samples`` samples (:meth:`~recon.fitting.raypool.RayPool.chunks`: a neural field's
    activations for a run are held at once).
    """
    values = voxel_values(field) if model == "emission" else None
    if values is not None:
        op = projector or Projector(pool, *field.box_mm, values.shape, photons_per_atom=photons_per_atom,
                                    step_mm=step_mm)
        return op.forward(values, pixels)
    parts = [render_pixels(field, pool.gather(part), len(part), photons_per_atom=photons_per_atom,
                           step_mm=step_mm, model=model, attenuation=attenuation, jitter=False)
             for part in pool.chunks(pixels, step_mm, max_samples)]
    return torch.cat(parts) if parts else pool.summed_electrons.new_zeros(0)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, projector, pixels):
        ctx.projector, ctx.pixels = projector, pixels
        return projector.forward(x, pixels)

    @staticmethod
    def backward(ctx, grad):
        return ctx.projector.adjoint(grad.contiguous(), ctx.pixels).to(grad.dtype), None, None


def project(projector: Projector, x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """``(A x)[pixels]``, differentiable with respect to x (its gradient is the adjoint)."""
    return _Project.apply(x, projector, pixels)
