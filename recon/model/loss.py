r"""Data terms and regularisers of the fit.

Photoelectron counts ``e`` of a pixel after dark subtraction follow Poisson(λ) plus Gaussian
read noise of variance σ². The default data term is the shifted-Poisson approximation of that
Poisson–Gaussian model: ``e + σ² ~ Poisson(λ + σ²)`` (Snyder et al. 1993,
doi:10.1364/JOSAA.10.001014), exact in mean and variance. With K frames of the same expected
image the sufficient statistic is the sum of the frames, so

.. math::

    \mathrm{NLL}(λ) = K (λ + σ^2) − \Big(\sum_k e_k + K σ^2\Big)_+ \log(λ + σ^2)

up to a constant. Alternatives: a Gaussian NLL with variance λ + σ² and plain MSE.

**Frames clipped at the black level are censored, not missing.** An ADC reports 0 for every
analog value below half an ADU, so a clipped frame says only that its own signal (photoelectrons
plus its read noise, before any dark subtraction) was at most ``c = (0.5 − offset) · gain``: in
the shifted model, with σ_f the read noise of one frame, ``N ≤ k = ⌊c + σ_f²⌋``. Dropping such
frames keeps only the background's upper tail, whose mean is biased high (8-bit cameras with a black level of
2 ADU clip a quarter of their background; a fit of data/mot4 that dropped them filled the box with
a haze of atoms). Their log-likelihood is ``log P(N ≤ k; μ)`` with ``μ = λ + σ_f²``,
``P(N ≤ k) = Q(k + 1, μ)`` (the regularised upper incomplete gamma function), and its deviance
``−2 log Q(k + 1, μ)`` (:func:`censored_deviance`; the saturated model puts μ → 0 and P → 1).
EM completes them by their expected value ``E[N | N ≤ k] = μ Q(k, μ) / Q(k + 1, μ)``
(:func:`censored_mean`), the E-step of censored data (Dempster, Laird & Rubin 1977), minus σ_f²
and what a dark subtraction removed (:class:`Censored`). A frame whose ``k`` is negative (a
black level far above 0: clipping at 0 cannot happen under the model, so the 0 is a dead pixel)
is left out.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["LOSSES", "Censored", "censored_deviance", "censored_mean", "data_loss", "pixel_deviance",
           "shift_variance", "tv_regulariser"]


LOSSES = ("poisson", "gaussian", "mse")


class Censored(NamedTuple):
    """Frames clipped at the black level of a batch of pixels (all (B,)).

    Attributes:
        frames: clipped frames per pixel.
        bound: ``k = ⌊c + σ_f²⌋``, the largest shifted count of a frame's own signal that reads
            as 0 ADU (c: :attr:`recon.io.run.RunView.censor_e`; σ_f: one frame's read noise);
            negative where clipping cannot happen under the model (those frames are left out).
        shift: what the dark subtraction removes beyond the offset, e⁻ (a frame's electrons are
            its own signal minus it).
        var: σ_f² of the frame (+1e-3, as the shifted counts).
    """

    frames: torch.Tensor
    bound: torch.Tensor
    shift: torch.Tensor
    var: torch.Tensor

    def used(self) -> torch.Tensor:
        """(B,) the clipped frames that count (bound ≥ 0), float64."""
        return torch.where(self.bound >= 0, self.frames.double(), torch.zeros_like(self.bound))

    def deviance(self, predicted: torch.Tensor) -> torch.Tensor:
        """(B,) ``−2 log P(N ≤ k; λ + σ_f²)`` per clipped frame at the prediction λ (differentiable)."""
        return censored_deviance(predicted.double().clamp_min(0.0) + self.var, self.bound.clamp_min(0))

    def electrons(self, predicted: torch.Tensor) -> torch.Tensor:
        """(B,) a clipped frame's expected photoelectrons (after the dark subtraction) given λ."""
        mu = predicted.double().clamp_min(0.0) + self.var
        return censored_mean(mu, self.bound.clamp_min(0)) - self.var - self.shift


def _log_cdf(k: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``log P(N ≤ k)`` for N ~ Poisson(μ), k ≥ 0 (float64; ≥ log 1e-300)."""
    return torch.log(torch.special.gammaincc(k + 1.0, mu).clamp_min(1e-300))


def censored_mean(mu: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``E[N | N ≤ k]`` for N ~ Poisson(μ): ``μ Q(k, μ) / Q(k + 1, μ)`` (0 where k = 0), in [0, k]."""
    mu, k = mu.double(), k.double()
    ratio = torch.exp(_log_cdf((k - 1).clamp_min(0), mu) - _log_cdf(k, mu))
    return torch.where(k > 0, mu * ratio, torch.zeros_like(mu)).clamp(min=0.0).minimum(k.clamp_min(0))


def censored_deviance(mu: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``−2 log P(N ≤ k)`` for N ~ Poisson(μ): a censored frame's deviance (differentiable in μ)."""
    return -2.0 * _log_cdf(k.double(), mu.double())


def shift_variance(read_noise_e: float) -> float:
    """σ² of the shifted-Poisson model, with 10⁻³ e⁻² more: the log stays finite where λ = 0 and σ = 0."""
    return read_noise_e**2 + 1e-3


def pixel_deviance(
    predicted: torch.Tensor,
    summed_electrons: torch.Tensor,
    n_frames: torch.Tensor,
    read_noise_e: float,
    *,
    censored: Censored | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's shifted-Poisson deviance over its frames, and the frames it counts: (B,), (B,).

    :func:`data_loss` (``poisson``) is the ratio of their sums; the held-out stop compares two
    checks pixel by pixel (:class:`recon.fitting.holdout.StopRule`). Arguments as
    :func:`data_loss`'s.
    """
    var = shift_variance(read_noise_e)
    k = n_frames.to(predicted.dtype)
    lam = predicted.clamp_min(0.0) + var
    shifted = (summed_electrons + k * var).clamp_min(0.0)
    nll = k * lam - shifted * torch.log(lam)
    # Subtract the value at the optimum so the loss reads as a deviance (≥ 0, ~1 per pixel).
    opt = (shifted / k.clamp_min(1)).clamp_min(var * 1e-3)
    nll = torch.where(k > 0, nll - (k * opt - shifted * torch.log(opt)), torch.zeros_like(nll))
    deviance, count = 2.0 * nll, k
    if censored is not None:
        frames = censored.used()
        deviance = deviance + (frames * censored.deviance(predicted)).to(deviance.dtype)
        count = count + frames.to(count.dtype)
    return deviance, count


def data_loss(
    predicted: torch.Tensor,
    summed_electrons: torch.Tensor,
    n_frames: torch.Tensor,
    read_noise_e: float,
    *,
    kind: str = "poisson",
    censored: Censored | None = None,
) -> torch.Tensor:
    """Mean per-pixel negative log-likelihood (or squared error).

    Args:
        predicted: (B,) expected photoelectrons per frame λ ≥ 0.
        summed_electrons: (B,) measured photoelectrons summed over the usable frames.
        n_frames: (B,) number of usable frames of each pixel (0 where every frame is censored).
        read_noise_e: σ, read noise in e⁻ RMS.
        kind: ``"poisson"``, ``"gaussian"`` or ``"mse"``.
        censored: the pixels' frames clipped at the black level (:class:`Censored`): their
            deviance ``−2 log P(N ≤ k)`` is added (``poisson`` only; the others leave them out).

    Returns:
        () the loss, normalised per pixel and (usable or censored) frame.
    """
    if kind == "poisson":
        deviance, count = pixel_deviance(predicted, summed_electrons, n_frames, read_noise_e,
                                         censored=censored)
        return deviance.sum() / count.sum()
    var = shift_variance(read_noise_e)
    k = n_frames.to(predicted.dtype)
    lam = predicted.clamp_min(0.0) + var
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
