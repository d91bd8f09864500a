"""The forward path, written once: sensor pixels → traced rays → expected photoelectrons, in chunks.

:func:`trace_in_chunks` traces the pixels of a view through the instrument a chunk at a time
(drawing each pixel's sub-pixel × aperture samples from the generator), and
:func:`render_batches` renders a stream of ray batches into per-pixel expectations. The
simulator renders each traced chunk at once; the fit keeps the traced chunks (its ray pool,
:mod:`recon.fitting.raypool`) and renders batches gathered from it — for its steps, and for the
predicted views of its outputs. Both consume one generator in the same order, chunk by chunk,
so a seed fixes every sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from optics.system import System
from optics.trace import sample_pixel_samples, trace_pixel_segments
from recon.model.render import RayBatch, render_pixels

__all__ = ["render_batches", "sees_the_box", "trace_in_chunks"]


def trace_in_chunks(
    system: System,
    pixels_uv: torch.Tensor,
    *,
    camera: int,
    samples: int,
    generator: torch.Generator,
    chunk_pixels: int,
    per_sample: bool = False,
    compiled: bool | None = None,
    sampling: str = "random",
) -> Iterator[tuple[slice, RayBatch]]:
    """Trace pixels into the box, ``chunk_pixels`` at a time; yield the segments that cross it.

    Args:
        system: the instrument.
        pixels_uv: (P, 2) full-sensor pixel centres (u, v), px, in the system's dtype.
        camera: camera index.
        samples: sub-pixel × aperture samples per pixel (stratified,
            :func:`optics.sampling.sample_pixel_samples`).
        generator: the random generator of the samples (consumed chunk by chunk).
        chunk_pixels: pixels traced at once (bounds memory).
        per_sample: number the segments' ``pixel`` by pixel sample ``n · samples + s`` instead
            of by pixel n (n counts from the chunk's first pixel).
        compiled: trace with the compiled kernels (True), torch (False), or the kernels where
            they can (None; :func:`optics.trace.trace_object_segments`).
        sampling: how each pixel's samples are drawn, ``random`` or ``sobol``
            (:func:`optics.sampling.sample_pixel_samples`' ``scheme``).

    Yields:
        ``(where, rays)``: the slice of ``pixels_uv`` and the segments of its pixels (those of
        :func:`optics.trace.trace_pixels`' valid slots, in its order, through
        :func:`optics.trace.trace_pixel_segments`).
    """
    for start in range(0, len(pixels_uv), chunk_pixels):
        chunk = pixels_uv[start : start + chunk_pixels]
        sub, ap = sample_pixel_samples(len(chunk), samples, generator=generator, dtype=pixels_uv.dtype,
                                       scheme=sampling)
        seg = trace_pixel_segments(system, chunk, camera=camera, subpixel=sub, aperture=ap, compiled=compiled)
        pixel = seg.ray if per_sample else torch.div(seg.ray, samples, rounding_mode="floor")
        yield slice(start, start + len(chunk)), RayBatch(seg.origins, seg.directions, seg.weights, seg.t_near,
                                                         seg.t_far, pixel, seg.path)


def render_batches(
    density: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[slice, RayBatch]],
    n_pixels: int,
    *,
    photons_per_atom: float,
    step_mm: float,
    model: str = "emission",
    attenuation: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Expected photoelectrons of ``n_pixels`` pixels from batches of their rays.

    Args:
        density: maps (M, 3) points in mm to (M,) densities (a field, a volume's interpolant, a
            phantom).
        batches: ``(where, rays)`` with ``rays.pixel`` numbering the pixels of ``where``
            (0 … len − 1); consumed lazily, one at a time.
        n_pixels: pixels in all.
        photons_per_atom: photons scattered per atom in the exposure.
        step_mm: stratum length along rays, mm.
        model: ``emission`` or ``emission-absorption``.
        attenuation: κ per unit density (emission–absorption).
        generator: the random generator of the jittered samples.
        progress: called with the pixels done so far after each batch.

    Returns:
        (n_pixels,) float32 expected photoelectrons.
    """
    out = torch.zeros(n_pixels)
    for where, rays in batches:
        out[where] = render_pixels(density, rays, where.stop - where.start, photons_per_atom=photons_per_atom,
                                   step_mm=step_mm, model=model, attenuation=attenuation,
                                   generator=generator).float()
        if progress:
            progress(where.stop)
    return out


@torch.no_grad()
def sees_the_box(
    system: System,
    roi: tuple[int, int, int, int],
    *,
    camera: int,
    path: int | None = None,
    grid: int = 12,
    samples: int = 8,
    generator: torch.Generator | None = None,
) -> bool:
    """Whether some pixel of a sensor region sees the box: a quick check before long work.

    A ``grid`` × ``grid`` lattice of the region's pixels (all of them when it is smaller), each
    traced with ``samples`` sub-pixel × aperture samples in float64, must have a ray that crosses
    the box by light path ``path`` (0 direct, k ≥ 1 mirror k − 1), or by any path when None.

    Args:
        system: the instrument.
        roi: ``(x0, y0, width, height)``, full-sensor px.
        camera: camera index.
        path: the light path, or None for any.
        grid: lattice size per axis.
        samples: samples per pixel.
        generator: random generator of the samples (default: seeded 0).
    """
    x0, y0, w, h = roi
    v, u = torch.meshgrid(torch.linspace(y0, y0 + h - 1, min(h, grid), dtype=torch.float64),
                          torch.linspace(x0, x0 + w - 1, min(w, grid), dtype=torch.float64), indexing="ij")
    uv = torch.stack([u, v], -1).reshape(-1, 2)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    sub, ap = sample_pixel_samples(len(uv), samples, generator=gen, dtype=torch.float64)
    seg = trace_pixel_segments(system.to(torch.float64), uv, camera=camera, subpixel=sub, aperture=ap)
    return bool(len(seg.path) if path is None else (seg.path == path).any())
