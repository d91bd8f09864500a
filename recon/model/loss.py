r"""Data terms and regularisers of the fit.

Photoelectron counts ``e`` of a pixel after dark subtraction follow Poisson(λ) plus Gaussian
read noise of variance σ². The default data term is the shifted-Poisson approximation of that
Poisson–Gaussian model: ``e + σ² ~ Poisson(λ + σ²)`` (Snyder et al. 1993,
doi:10.1364/JOSAA.10.001014), exact in mean and variance. With K frames of the same expected
image the sufficient statistic is the sum of the frames, so

.. math::

    \mathrm{NLL}(λ) = K (λ + σ^2) − \Big(\sum_k e_k + K σ^2\Big)_+ \log(λ + σ^2)

up to a constant. Alternatives: a Gaussian NLL with variance λ + σ² and plain MSE.
"""

from __future__ import annotations

import torch

__all__ = ["LOSSES", "data_loss", "tv_regulariser"]


LOSSES = ("poisson", "gaussian", "mse")


def data_loss(
    predicted: torch.Tensor,
    summed_electrons: torch.Tensor,
    n_frames: torch.Tensor,
    read_noise_e: float,
    *,
    kind: str = "poisson",
) -> torch.Tensor:
    """Mean per-pixel negative log-likelihood (or squared error).

    Args:
        predicted: (B,) expected photoelectrons per frame λ ≥ 0.
        summed_electrons: (B,) measured photoelectrons summed over the usable frames.
        n_frames: (B,) number of usable frames of each pixel (≥ 1).
        read_noise_e: σ, read noise in e⁻ RMS.
        kind: ``"poisson"``, ``"gaussian"`` or ``"mse"``.

    Returns:
        () the loss, normalised per pixel and frame.
    """
    var = read_noise_e**2 + 1e-3  # keeps the log finite where λ = 0 and σ = 0
    k = n_frames.to(predicted.dtype)
    lam = predicted.clamp_min(0.0) + var
    if kind == "poisson":
        shifted = (summed_electrons + k * var).clamp_min(0.0)
        nll = k * lam - shifted * torch.log(lam)
        # Subtract the value at the optimum so the loss reads as a deviance (≥ 0, ~1 per pixel).
        opt = (shifted / k).clamp_min(var * 1e-3)
        nll = nll - (k * opt - shifted * torch.log(opt))
        return 2.0 * nll.sum() / k.sum()
    mean = summed_electrons / k
    if kind == "gaussian":
        return (((mean - lam + var) ** 2) * k / lam + torch.log(lam)).sum() / k.sum()
    if kind == "mse":
        return (((mean - predicted) ** 2) * k).sum() / k.sum()
    raise ValueError(f"data_loss: kind must be one of {LOSSES}, got {kind!r}")


def tv_regulariser(density, points: torch.Tensor, step_mm: float, scale: float) -> torch.Tensor:
    """Total variation of the density at random points, normalised by a density ``scale``.

    Args:
        density: maps (M, 3) points (mm) to (M,) densities.
        points: (M, 3) sample points, mm.
        step_mm: finite-difference step, mm.
        scale: typical density, so that the regulariser is dimensionless.

    Returns:
        () mean |∇ρ| · step / scale (an anisotropic L1 TV).
    """
    offsets = torch.eye(3, dtype=points.dtype, device=points.device) * step_mm
    centre = density(points)
    diffs = [density(points + offsets[i]) - centre for i in range(3)]
    return torch.stack(diffs, -1).abs().sum(-1).mean() / scale
