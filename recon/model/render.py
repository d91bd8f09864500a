r"""The forward model: expected photoelectrons per pixel from a density and traced rays.

Emission (optically thin atom cloud, the default), REFERENCE §2:

.. math::

    e_\text{pixel} = \sum_\text{segments} w \int_{t_\text{near}}^{t_\text{far}}
        \frac{Y}{4π} ρ(o + t d)\, dt

with ρ the density (atoms/mm³), Y the photons scattered per atom, and ``w`` the segment weight
from :func:`optics.trace.trace_pixels` (QE × pixel area × étendue × reflectivity ×
transmission / samples). Emission–absorption (opaque test objects) uses the NeRF quadrature
with transmittance: ``L = S Σ_i T_i (1 − exp(−κ_i δ_i))`` with ``κ = attenuation × ρ`` and
``S = Y/(4π)`` the radiance of an opaque surface per unit density scale.

The integral uses stratified jittered samples: ``n = ceil(length / step)`` equal strata per
segment, one uniform sample in each. For ``emission`` every segment gets its own ``n`` (the
samples of all segments are laid end to end and summed per segment), so short chords through
the box corners cost a few samples, not as many as the longest chord of the batch; the
``emission-absorption`` quadrature needs a running transmittance along each segment and pads
every segment of a chunk to the largest ``n``. Work is chunked so memory stays bounded for any
number of rays. Differentiable with respect to the density and to every optical parameter that
the segments depend on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from optics.trace import TracedRays

__all__ = ["DensityFn", "RENDER_MODELS", "RayBatch", "compact_rays", "line_integrals", "render_pixels"]


RENDER_MODELS = ("emission", "emission-absorption")


DensityFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RayBatch:
    """Valid ray segments, flattened, each knowing its pixel.

    Attributes:
        origins: (R, 3) segment origins, mm.
        directions: (R, 3) unit directions.
        weights: (R,) photoelectrons per unit line integral of emission.
        t_near: (R,) entry into the box, mm.
        t_far: (R,) exit, mm.
        pixel: (R,) index of the pixel each segment belongs to.
        path: (R,) path index (0 direct, k mirror k − 1).
    """

    origins: torch.Tensor
    directions: torch.Tensor
    weights: torch.Tensor
    t_near: torch.Tensor
    t_far: torch.Tensor
    pixel: torch.Tensor
    path: torch.Tensor

    def __len__(self) -> int:
        return self.weights.shape[0]

    def select(self, index: torch.Tensor) -> RayBatch:
        """The segments at ``index`` (a boolean mask or integer indices)."""
        return RayBatch(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def to(self, device=None, dtype: torch.dtype | None = None) -> RayBatch:
        """Move to ``device``; floating tensors to ``dtype``."""
        out = {}
        for f in self.__dataclass_fields__:
            t = getattr(self, f)
            out[f] = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return RayBatch(**out)


def compact_rays(
    traced: TracedRays, pixel_index: torch.Tensor | None = None, *, per_sample: bool = False
) -> RayBatch:
    """Keep the valid segments of traced rays of shape (N, S, P).

    Args:
        traced: output of :func:`optics.trace.trace_pixels`.
        pixel_index: (N,) index to record for each of the N pixels (default 0 … N − 1).
        per_sample: record ``pixel_index · S + sample`` instead, so that one sample of a pixel
            can be selected later.

    Returns:
        The valid segments with their pixel (or pixel-sample) and path indices.
    """
    n, s, p = traced.valid.shape
    if pixel_index is None:
        pixel_index = torch.arange(n, device=traced.valid.device)
    sel = traced.valid.nonzero(as_tuple=True)
    key = pixel_index[sel[0]] * s + sel[1] if per_sample else pixel_index[sel[0]]
    return RayBatch(
        origins=traced.origins[sel],
        directions=traced.directions[sel],
        weights=traced.weights[sel],
        t_near=traced.t_near[sel],
        t_far=traced.t_far[sel],
        pixel=key,
        path=traced.paths[sel[2]],
    )


def _samples(rays: RayBatch, step_mm: float, generator: torch.Generator | None, jitter: bool):
    """Stratified sample positions (R, n, 3) and interval lengths (R, n) along segments."""
    length = (rays.t_far - rays.t_near).clamp_min(0.0)
    n = max(1, int(math.ceil(float(length.max().detach()) / step_mm))) if len(rays) else 1
    strata = torch.arange(n, dtype=length.dtype, device=length.device)
    if jitter:
        u = torch.rand(len(rays), n, generator=generator, dtype=length.dtype, device="cpu")
        u = u.to(length.device)
    else:
        u = torch.full((len(rays), n), 0.5, dtype=length.dtype, device=length.device)
    delta = length / n  # (R,)
    t = rays.t_near.unsqueeze(-1) + (strata + u) * delta.unsqueeze(-1)  # (R, n)
    points = rays.origins.unsqueeze(-2) + t.unsqueeze(-1) * rays.directions.unsqueeze(-2)
    return points, delta.unsqueeze(-1).expand(-1, n)


def _ragged_strata(rays: RayBatch, step_mm: float, generator: torch.Generator | None, jitter: bool):
    """``n_r = ceil(length_r / step)`` strata on each segment ``r``, their length and the jitter.

    Returns:
        ``(counts (R,), delta (R,), u (Σ n_r,))``: strata per segment (at least 1), stratum
        lengths, and one uniform jitter value per sample (0.5 without jitter), segment after
        segment. The jitter is drawn here, and only here, so that the torch samples and a
        density's compiled ``integrate_strata`` consume the generator alike.
    """
    length = (rays.t_far - rays.t_near).clamp_min(0.0)
    counts = torch.ceil(length.detach() / step_mm).clamp_min(1).to(torch.long)  # (R,)
    total = int(counts.sum())
    if jitter:
        u = torch.rand(total, generator=generator, dtype=length.dtype, device="cpu")
        u = u.to(length.device)
    else:
        u = torch.full((total,), 0.5, dtype=length.dtype, device=length.device)
    return counts, length / counts.to(length.dtype), u


def _ragged_samples(rays: RayBatch, counts: torch.Tensor, delta: torch.Tensor, u: torch.Tensor):
    """The samples of :func:`_ragged_strata`'s strata.

    Returns:
        ``(points (M, 3), delta (M,), owner (M,))``: sample positions, stratum lengths and the
        segment each sample belongs to, ``M = Σ_r n_r``.
    """
    total = len(u)
    owner = torch.repeat_interleave(torch.arange(len(rays), device=delta.device), counts, output_size=total)
    first = torch.cumsum(counts, 0) - counts  # (R,) index of each segment's first sample
    stratum = (torch.arange(total, device=delta.device) - first[owner]).to(delta.dtype)
    delta = delta[owner]  # (M,)
    t = rays.t_near[owner] + (stratum + u) * delta  # (M,)
    points = rays.origins[owner] + t.unsqueeze(-1) * rays.directions[owner]
    return points, delta, owner


def line_integrals(
    density: DensityFn,
    rays: RayBatch,
    *,
    step_mm: float = 0.02,
    model: str = "emission",
    attenuation: float = 1.0,
    generator: torch.Generator | None = None,
    jitter: bool = True,
) -> torch.Tensor:
    """Integrals of the density along each segment (mm · density units).

    For ``emission`` this is ``∫ ρ dt``; for ``emission-absorption`` it is
    ``Σ T_i (1 − exp(−κ_i δ_i)) / attenuation`` (which tends to ``∫ ρ dt`` for a thin medium).

    Args:
        density: maps points (M, 3) in mm to densities (M,). An object that also has
            ``integrate_strata(rays, counts, delta, u)`` (a Gaussian-mixture phantom's compiled
            sums, :meth:`~recon.simulation.phantoms.PrimitivePhantom.integrate_strata`) gives the
            ``emission`` integrals itself when no gradient is recorded, or None to leave them to
            torch; the strata and the jitter are drawn here either way.
        rays: the segments (R of them).
        step_mm: the largest stratum length along a segment, mm.
        model: ``"emission"`` or ``"emission-absorption"``.
        attenuation: κ per unit density, mm⁻¹ (emission–absorption only).
        generator: random generator for the jitter.
        jitter: stratified random samples (True) or stratum midpoints (False).

    Returns:
        (R,) integrals.
    """
    if model not in RENDER_MODELS:
        raise ValueError(f"line_integrals: model must be one of {RENDER_MODELS}, got {model!r}")
    if len(rays) == 0:
        return rays.weights.new_zeros(0)
    if model == "emission":
        counts, delta, u = _ragged_strata(rays, step_mm, generator, jitter)
        integrate = getattr(density, "integrate_strata", None)
        if integrate is not None and not torch.is_grad_enabled():
            integral = integrate(rays, counts, delta, u)
            if integral is not None:
                return integral
        points, delta, owner = _ragged_samples(rays, counts, delta, u)
        rho = density(points)  # (M,)
        return torch.zeros_like(rays.t_near).index_add(0, owner, (rho * delta).to(rays.t_near.dtype))
    points, delta = _samples(rays, step_mm, generator, jitter)
    rho = density(points.reshape(-1, 3)).reshape(delta.shape)
    tau = attenuation * rho * delta
    transmittance = torch.exp(-torch.cumsum(tau, dim=-1) + tau)  # T before each sample
    return (transmittance * (1.0 - torch.exp(-tau))).sum(-1) / attenuation


def render_pixels(
    density: DensityFn,
    rays: RayBatch,
    n_pixels: int,
    *,
    photons_per_atom: float = 1.0,
    step_mm: float = 0.02,
    model: str = "emission",
    attenuation: float = 1.0,
    generator: torch.Generator | None = None,
    jitter: bool = True,
    chunk_rays: int = 16384,
) -> torch.Tensor:
    """Expected photoelectrons of ``n_pixels`` pixels.

    Args:
        density: maps points (M, 3) in mm to densities (M,) (atoms/mm³ or relative).
        rays: the segments; ``rays.pixel`` indexes the output.
        n_pixels: number of output pixels.
        photons_per_atom: Y, photons scattered per atom during the exposure.
        step_mm: stratum length along segments, mm.
        model: ``"emission"`` or ``"emission-absorption"``.
        attenuation: κ per unit density, mm⁻¹ (emission–absorption only).
        generator: random generator for the jitter.
        jitter: stratified random samples (True) or midpoints (False).
        chunk_rays: segments processed at once (bounds memory).

    Returns:
        (n_pixels,) expected photoelectrons.
    """
    emission_scale = photons_per_atom / (4.0 * math.pi)
    out = rays.weights.new_zeros(n_pixels)
    for start in range(0, len(rays), chunk_rays):
        chunk = rays.select(slice(start, start + chunk_rays))
        integral = line_integrals(density, chunk, step_mm=step_mm, model=model,
                                  attenuation=attenuation, generator=generator, jitter=jitter)
        out = out.index_add(0, chunk.pixel, chunk.weights * integral * emission_scale)
    return out
