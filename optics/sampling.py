"""How each pixel's rays sample its area and the lens aperture: random or padded Sobol' nets.

A pixel's expected signal is an integral over its area and over the lens aperture; tracing
S rays a pixel estimates it from S points (sub-pixel offset, aperture point). This module draws
those points (:func:`sample_pixel_samples`): independently at random, or as two digitally shifted
Sobol' nets paired at random per pixel (:func:`sobol_points`), which estimate the same integral
with less error from the same number of rays.
"""

from __future__ import annotations

import math

import torch

SAMPLING_SCHEMES = ("random", "sobol")  # how a pixel's sub-pixel × aperture samples are drawn

__all__ = ["SAMPLING_SCHEMES", "sample_pixel_samples", "sobol_points"]


def sample_pixel_samples(
    n_pixels: int,
    n_samples: int,
    *,
    generator: torch.Generator | None = None,
    jitter: bool = True,
    dtype: torch.dtype = torch.float32,
    device=None,
    scheme: str = "random",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel offsets and aperture points for each pixel sample.

    The aperture is sampled uniformly over the disk (``r = √U``, ``θ = 2πV``). ``scheme``:

    - ``random``: ``U`` stratified over the samples of a pixel, ``V`` and the sub-pixel offsets
      uniform and independent;
    - ``sobol``: a pixel's sub-pixel offsets are the first S points of the 2-d Sobol' sequence
      and its (U, V) another such set, each digitally shifted by random bits of the pixel's own
      and paired at random (:func:`sobol_points`): each sample is still uniform, so a pixel's
      mean is still unbiased, but the samples stratify the pixel and the aperture (for S = 2^m
      every sub-pixel box of area 1/S holds one), so the mean's error is smaller than with
      independent samples — much smaller where the pixel's response varies across the pixel
      more than across the aperture (a view in focus).

    Args:
        n_pixels: number of pixels N.
        n_samples: samples per pixel S.
        generator: random generator (explicit seeds make results reproducible).
        jitter: if False, every sample sits at the pixel centre (aperture points still vary).
        dtype: floating dtype.
        device: torch device.
        scheme: ``random`` or ``sobol`` (:data:`SAMPLING_SCHEMES`).

    Returns:
        subpixel: (N, S, 2) offsets in pixels, in [−½, ½).
        aperture: (N, S, 2) points of the unit disk.
    """
    if scheme not in SAMPLING_SCHEMES:
        raise ValueError(f"sample_pixel_samples: scheme must be one of {SAMPLING_SCHEMES}, got {scheme!r}")
    shape = (n_pixels, n_samples)
    if scheme == "sobol":
        unit = sobol_points(n_pixels, n_samples, generator=generator, dtype=dtype, device=device)
        subpixel = unit[..., :2] - 0.5 if jitter else torch.zeros(*shape, 2, dtype=dtype, device=device)
        return subpixel, _disk(unit[..., 2], unit[..., 3])
    rand = lambda *s: torch.rand(*s, generator=generator, dtype=dtype, device=device)  # noqa: E731
    if jitter:
        subpixel = rand(*shape, 2) - 0.5
    else:
        subpixel = torch.zeros(*shape, 2, dtype=dtype, device=device)
    strata = torch.arange(n_samples, dtype=dtype, device=device)
    u = (strata + rand(*shape)) / n_samples
    return subpixel, _disk(u, rand(*shape))


def _disk(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., 2) points of the unit disk, uniform for uniform u, v in [0, 1): ``r = √u``, ``θ = 2πv``."""
    theta = 2.0 * math.pi * v
    r = torch.sqrt(u)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)


_SOBOL_BITS = 23  # (k + ½)/2^23 < 1 is exact in float32 for every k < 2^23


def _shifted_nets(n_pixels: int, n_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """(N, S, 2) float64 the first S 2-d Sobol' points, digitally shifted per pixel, at cell centres."""
    base = torch.quasirandom.SobolEngine(2, scramble=False).draw(n_samples, dtype=torch.float64)
    digits = torch.round(base * (1 << _SOBOL_BITS)).long()  # exact: the first S points have ≤ 23 bits
    shift = torch.randint(0, 1 << _SOBOL_BITS, (n_pixels, 1, 2), generator=generator)
    return ((digits ^ shift).double() + 0.5) / (1 << _SOBOL_BITS)


def sobol_points(n_pixels: int, n_samples: int, *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(N, S, 4) each pixel's samples (sub-pixel x, y; aperture U, V) in (0, 1): padded Sobol' nets.

    Each pair is the first S points of the 2-d Sobol' sequence (for S = 2^m a (0, m, 2)-net: every
    box of area 1/S whose sides are powers of ½ holds one point) on a grid of 2^-23, XOR-ed with
    23 random bits per pixel and coordinate (a random digital shift, which keeps the net) and moved
    to the centres of their grid cells, so that every point is uniform. The aperture's net is paired
    with the sub-pixel one by a random permutation per pixel ("padding", Kollig & Keller 2002): the
    first points of the 4-d Sobol' sequence tie the aperture to the sub-pixel position, and a
    defocused pixel's mean is then noisier than with independent samples.
    """
    if not 1 <= n_samples <= 1 << _SOBOL_BITS:
        raise ValueError(f"sobol_points: n_samples must be in 1 … 2^{_SOBOL_BITS}, got {n_samples}")
    pixel = _shifted_nets(n_pixels, n_samples, generator)
    aperture = _shifted_nets(n_pixels, n_samples, generator)
    pairing = torch.argsort(torch.rand(n_pixels, n_samples, generator=generator), dim=1)
    aperture = torch.gather(aperture, 1, pairing.unsqueeze(-1).expand(-1, -1, 2))
    return torch.cat([pixel, aperture], dim=-1).to(dtype=dtype, device=device)
