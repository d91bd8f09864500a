"""Simulated runs with known truth: render the views of a phantom through an instrument."""

from __future__ import annotations

from collections.abc import Callable

import torch

from optics.design import ViewRegion, view_regions
from optics.system import System
from optics.trace import sample_pixel_samples, trace_pixels
from recon.render import compact_rays, render_pixels

__all__ = ["expected_views", "simulation_regions"]


def simulation_regions(system: System, camera: int = 0) -> list[ViewRegion]:
    """The regions of interest a simulated run records: one per light path of ``camera``."""
    return view_regions(system, camera)


@torch.no_grad()
def expected_views(
    system: System,
    density: Callable[[torch.Tensor], torch.Tensor],
    regions: list[ViewRegion],
    *,
    photons_per_atom: float,
    samples: int = 16,
    step_mm: float = 0.01,
    model: str = "emission",
    attenuation: float = 1.0,
    seed: int = 0,
    camera: int = 0,
    chunk_pixels: int = 16384,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Expected photoelectrons of every pixel of every region (no noise).

    Args:
        system: the instrument.
        density: maps (M, 3) points in mm to (M,) densities (atoms/mm³).
        regions: the views to render.
        photons_per_atom: photons scattered per atom in the exposure.
        samples: sub-pixel × aperture samples per pixel (stratified).
        step_mm: stratum length along rays, mm.
        model: ``emission`` or ``emission-absorption``.
        attenuation: κ per unit density (emission–absorption).
        seed: random seed of the samples.
        camera: camera index.
        chunk_pixels: pixels traced and rendered at once (bounds memory).
        progress: called with (pixels done, pixels in all) after each chunk.

    Returns:
        View name → (h, w) float32 expected photoelectrons.
    """
    gen = torch.Generator().manual_seed(seed)
    total = sum(r.roi[2] * r.roi[3] for r in regions)
    done = 0
    out = {}
    for reg in regions:
        x0, y0, w, h = reg.roi
        v, u = torch.meshgrid(
            torch.arange(h, dtype=torch.float32) + y0,
            torch.arange(w, dtype=torch.float32) + x0,
            indexing="ij",
        )
        uv = torch.stack([u, v], -1).reshape(-1, 2)
        image = torch.zeros(len(uv))
        for start in range(0, len(uv), chunk_pixels):
            chunk = uv[start : start + chunk_pixels]
            sub, ap = sample_pixel_samples(len(chunk), samples, generator=gen)
            rays = compact_rays(trace_pixels(system, chunk, camera=camera, subpixel=sub, aperture=ap))
            image[start : start + len(chunk)] = render_pixels(
                density,
                rays,
                len(chunk),
                photons_per_atom=photons_per_atom,
                step_mm=step_mm,
                model=model,
                attenuation=attenuation,
                generator=gen,
            ).float()
            done += len(chunk)
            if progress:
                progress(done, total)
        out[reg.name] = image.reshape(h, w)
    return out
