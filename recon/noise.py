"""The sensor model: photon noise, read noise, gain, offset, quantisation, saturation.

REFERENCE §2: ``ADU = (Poisson(e + dark) + Normal(0, σ_read)) / gain + offset``, rounded and
clipped to ``[0, 2^bits − 1]``. Quantum efficiency is part of the optical weights already
(:mod:`optics.trace`), so the input here is expected *photoelectrons*.
"""

from __future__ import annotations

import torch

from optics.camera import Sensor

__all__ = ["NOISE_MODELS", "adu_to_electrons", "binomial_split", "simulate_adu"]

NOISE_MODELS = ("poisson", "none")


def simulate_adu(
    expected_e: torch.Tensor,
    sensor: Sensor,
    *,
    generator: torch.Generator | None = None,
    noise: str = "poisson",
    dark_e: float = 0.0,
) -> torch.Tensor:
    """One exposure of the sensor.

    Args:
        expected_e: (...) expected photoelectrons per pixel.
        sensor: gain, offset, read noise and bit depth.
        generator: random generator (explicit seeds make runs reproducible).
        noise: ``"poisson"`` (photon + read noise, rounded, clipped; uint16 when it fits, else
            int64) or ``"none"`` (the expected ADU as float32, neither rounded nor clipped).
        dark_e: expected dark electrons per pixel.

    Returns:
        (...) ADU.
    """
    if noise not in NOISE_MODELS:
        raise ValueError(f"simulate_adu: noise must be one of {NOISE_MODELS}, got {noise!r}")
    lam = (expected_e.double() + dark_e).clamp_min(0.0)
    if noise == "none":
        return (lam / sensor.gain_e_per_adu + sensor.offset_adu).float()
    electrons = torch.poisson(lam, generator=generator)
    read = torch.randn(lam.shape, generator=generator, dtype=torch.float64) * sensor.read_noise_e
    adu = torch.round((electrons + read) / sensor.gain_e_per_adu + sensor.offset_adu)
    adu = adu.clamp(0, sensor.saturation_adu)
    return adu.to(torch.uint16 if sensor.bit_depth <= 16 else torch.int64)


def adu_to_electrons(
    adu: torch.Tensor, sensor: Sensor, dark_adu: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photoelectrons of measured frames, and the pixels that saturated.

    Args:
        adu: (..., h, w) raw values.
        sensor: gain, offset and bit depth.
        dark_adu: (h, w) mean dark frame in ADU; without it the sensor offset is subtracted.

    Returns:
        electrons: (..., h, w) float32 photoelectrons (may be slightly negative: read noise).
        saturated: (..., h, w) pixels at the top of the ADC range (they carry no information).
    """
    values = adu.double()
    saturated = values >= sensor.saturation_adu
    reference = dark_adu.double() if dark_adu is not None else torch.tensor(sensor.offset_adu)
    electrons = (values - reference) * sensor.gain_e_per_adu
    return electrons.float(), saturated


def binomial_split(
    counts: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two statistically independent halves of Poisson counts (binomial thinning, p = ½).

    For ``k ~ Poisson(λ)``, ``Binomial(k, ½)`` and ``k − Binomial(k, ½)`` are independent
    ``Poisson(λ/2)`` (REFERENCE §2). Measured photoelectrons carry read noise, so they are
    rounded and clipped at 0 first: the halves then hold the photon noise of half the signal
    and the read noise is not split (an approximation that is good when λ ≫ σ²_read).

    Args:
        counts: (...) photoelectrons.
        generator: random generator.

    Returns:
        Two tensors like ``counts`` (float32) that sum to the rounded, clipped counts.
    """
    k = counts.double().round().clamp_min(0.0)
    half = torch.binomial(k, torch.full_like(k, 0.5), generator=generator)
    return half.float(), (k - half).float()
