r"""The shot-noise limit of a fringed cloud's figures: the Cramér–Rao bound through the instrument.

For the fringe model of :mod:`recon.analysis.fringes` with parameters θ (envelope, contrast, wave
vector, phase, floor) sampled on EM's voxel grid, the expected photoelectrons of every pooled
pixel are ``λ(θ) = A ρ_θ`` (:class:`~recon.fitting.projector.Projector`, the same quadrature EM
inverts). With the shifted-Poisson counts of the fit (mean and variance ``K (λ + σ²)`` for K
frames) the Fisher information is

.. math::

    I(θ) = \sum_i \frac{K_i}{λ_i + σ^2}\, ∂_θ λ_i\, ∂_θ λ_i^T,\qquad ∂_θ λ = A\, ∂_θ ρ_θ

(one forward projection per parameter of the model's forward-mode derivative on the grid), and
the bound of each reported figure q(θ) (period, phase at the origin, contrast, centre …) is
``√(∇q I⁻¹ ∇qᵀ)``. It is what photon counting and read noise allow for such a cloud seen by
these pixels — the reference the physics issue asks the fitted phase to be compared with.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recon.analysis.fringes import FIGURES, fringe_model, fringe_quantities, split_figures
from recon.fitting.em import shifted_counts
from recon.fitting.projector import Projector, voxel_centres
from recon.fitting.raypool import RayPool

__all__ = ["fringe_bound"]


def fringe_bound(params, pool: RayPool, projector: Projector, *, pixels: torch.Tensor | None = None,
                 stride: int = 1) -> dict:
    """The Cramér–Rao sd of each fringe figure for parameters ``params`` seen through ``pool``.

    Args:
        params: (16,) the fringe model's parameter vector (:attr:`FringeFit.params`), densities in
            the unit the projector's grid holds (atoms/mm³ for a run with photons per atom).
        pool: the ray pool (its frames and read noise weight each pixel).
        projector: A over ``pool`` on the grid the model is sampled on.
        pixels: the pixels that count (default: every pooled pixel with a usable frame).
        stride: use every ``stride``-th of them, each standing for ``stride`` (the information is
            a sum over pixels: an estimate at a ``stride``-th of the cost).

    Returns:
        ``{figure: sd}`` for :data:`recon.analysis.fringes.FIGURES` (tuples for vectors; nan where
        a variance is not a finite non-negative number); None for each where the information is
        singular.
    """
    theta = torch.as_tensor(np.asarray(params, dtype=np.float64))
    if pixels is None:
        pixels = (pool.observed_frames > 0).nonzero(as_tuple=True)[0]
    pixels = pixels[::max(1, int(stride))]
    nz, ny, nx = projector.shape
    points = voxel_centres(projector)
    dtype = pool.rays.weights.dtype

    def project(grid: torch.Tensor) -> torch.Tensor:
        return projector.forward(grid.reshape(nz, ny, nx).to(dtype), pixels).double()

    with torch.no_grad():
        lam = project(fringe_model(theta, points)).clamp_min(0.0)
    unit = torch.eye(len(theta), dtype=torch.float64)
    slopes = torch.stack([project(torch.func.jvp(lambda t: fringe_model(t, points), (theta,), (unit[j],))[1])
                          for j in range(len(theta))], dim=1)  # (P, 16) ∂λ/∂θ
    _, frames, var = shifted_counts(pool, pixels, torch.float64)
    censored = pool.censored(pixels)  # a frame clipped at the black level counts as read (as in EM's start)
    frames = (frames if censored is None else frames + censored.used()) * max(1, int(stride))
    information = slopes.T @ (slopes * (frames / (lam + var))[:, None])
    gradient = torch.func.jacfwd(fringe_quantities)(theta)  # (Q, 16)
    try:
        factor = torch.linalg.cholesky(information)
    except RuntimeError:  # not positive definite: no bound to give
        return dict.fromkeys(name for name, _ in FIGURES)
    variance = (gradient * torch.cholesky_solve(gradient.T, factor).T).sum(1)
    return split_figures([math.sqrt(v) if math.isfinite(v) and v >= 0 else math.nan
                          for v in variance.tolist()])
