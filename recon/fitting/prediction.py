"""A fit's predictions of the measured pixels, and its residuals per view."""

from __future__ import annotations

import math

import numpy as np
import torch

from recon.fitting.data import FitData
from recon.fitting.projector import predict_pixels, voxel_values
from recon.fitting.raypool import RayPool
from recon.io.viewimages import ViewImage
from recon.io.volume import Volume, interpolate
from recon.model.forward import render_batches

__all__ = ["CLOUD_SIGMAS", "predict_fit", "predict_views", "residual_stats", "view_images"]

#: A pixel is the cloud's where the predicted photoelectrons per frame exceed this many read-noise σ,
#: both its own and their mean over the :data:`CLOUD_BOX` × :data:`CLOUD_BOX` pixels around it.
CLOUD_SIGMAS = 3.0
#: The box (pixels) of that local mean: a prediction's pixel-to-pixel sampling noise (a strongly
#: defocused view's few rays per pixel through bright clumps) must not choose the cloud's pixels.
CLOUD_BOX = 5


@torch.no_grad()
def predict_views(
    volume: Volume,
    pool: RayPool,
    photons_per_atom: float,
    *,
    model: str = "emission",
    attenuation: float = 1.0,
    step_mm: float = 0.02,
    max_samples: int = 1 << 19,
) -> torch.Tensor:
    """Expected photoelectrons of every pooled pixel from a density volume (trilinear).

    Rendered in runs of pixels of about ``max_samples`` samples (:meth:`RayPool.chunks`).
    """
    n = pool.n_pixels
    batches = ((slice(int(run[0]), int(run[-1]) + 1), pool.gather(run))
               for run in pool.chunks(torch.arange(n), step_mm, max_samples))
    return render_batches(lambda p: interpolate(volume, p), batches, n, photons_per_atom=photons_per_atom,
                          step_mm=step_mm, model=model, attenuation=attenuation,
                          generator=torch.Generator().manual_seed(1234))


@torch.no_grad()
def predict_fit(fields, volume: Volume, pool: RayPool, photons_per_atom: float, *, model: str = "emission",
                attenuation: float = 1.0, step_mm: float = 0.02) -> torch.Tensor:
    """Expected photoelectrons of every pooled pixel from a fit (the mean of its ``fields``; float32, CPU).

    Where every field is a linear voxel grid in the emission model (EM), through the operator the
    fit inverted: the projector at the stratum midpoints
    (:func:`recon.fitting.projector.predict_pixels`).
    Otherwise by rendering the fit's density ``volume`` with jittered samples (:func:`predict_views`).
    """
    if model == "emission" and all(voxel_values(f) is not None for f in fields):
        pixels = torch.arange(pool.n_pixels)
        parts = [predict_pixels(f, pool, pixels, photons_per_atom=photons_per_atom, step_mm=step_mm).cpu()
                 for f in fields]
        return (sum(parts) / len(parts)).float()
    return predict_views(volume, pool, photons_per_atom, model=model, attenuation=attenuation,
                         step_mm=step_mm)


def residual_stats(data: FitData, pool: RayPool, predicted: torch.Tensor) -> list[dict]:
    """Per view: residuals normalised by the expected noise, √(λ + σ²) per frame.

    ``residual_mean`` and ``residual_rms`` are those of the prediction over every usable pixel;
    ``cloud_pixels``, ``cloud_residual_mean`` and ``cloud_residual_rms`` the same over the
    cloud's pixels, where the predicted light per frame exceeds :data:`CLOUD_SIGMAS` times the
    read noise, in the pixel and in the mean of the :data:`CLOUD_BOX`² pixels around it (most of
    a view is dark sky, whose residuals would hide a misfit of the cloud; at the noise both are
    ≈ 0 and ≈ 1). The local mean keeps a prediction's own sampling noise from choosing the
    pixels: chosen by the pixel alone, the upward fluctuations of a prediction rendered with few
    rays (run042's direct view, 40 mm out of focus, 32 rays a pixel through 12–35 µm clumps) are
    the cloud, and their residuals are negative for no fault of the density.
    ``flat_residual_rms`` is that of a flat image at the view's mean measured value, the
    yardstick of whether the fit explains any of the view's structure.
    """
    mean = pool.summed_electrons / pool.n_frames.clamp_min(1)
    frames = pool.n_frames.clamp_min(1)
    var_read = pool.read_noise_e**2

    def z_scores(prediction: torch.Tensor) -> torch.Tensor:
        return (mean - prediction) / (torch.sqrt(prediction.clamp_min(0) + var_read) / torch.sqrt(frames))

    z = z_scores(predicted)
    bright = predicted > CLOUD_SIGMAS * pool.read_noise_e
    bright &= _local_mean(data, predicted) > CLOUD_SIGMAS * pool.read_noise_e
    rows = []
    for vi, view in enumerate(data.views):
        sel = (pool.view_of_pixel == vi) & (pool.n_frames > 0)
        zs = z[sel]
        cloud = z[sel & bright]
        flat = z_scores(torch.full_like(mean, float(mean[sel].mean())) if len(zs) else mean)[sel]
        rows.append(
            {
                "view": view.name,
                "pixels": int(sel.sum()),
                "measured_e": float(mean[sel].sum()),
                "predicted_e": float(predicted[sel].sum()),
                "residual_mean": float(zs.mean()) if len(zs) else math.nan,
                "residual_rms": float(zs.pow(2).mean().sqrt()) if len(zs) else math.nan,
                "cloud_pixels": int(len(cloud)),
                "cloud_residual_mean": float(cloud.mean()) if len(cloud) else math.nan,
                "cloud_residual_rms": float(cloud.pow(2).mean().sqrt()) if len(cloud) else math.nan,
                "flat_residual_rms": float(flat.pow(2).mean().sqrt()) if len(zs) else math.nan,
            }
        )
    return rows


def _view_parts(data: FitData):
    """Each view with the slice of the pool's pixels it holds and its image shape ``(h, w)``.

    The pool's pixels are the views' regions of interest one after another, row-major.
    """
    first = 0
    for view in data.views:
        w, h = int(view.roi[2]), int(view.roi[3])
        yield view, slice(first, first + w * h), (h, w)
        first += w * h


def _local_mean(data: FitData, values: torch.Tensor) -> torch.Tensor:
    """Each pixel's mean of ``values`` over the :data:`CLOUD_BOX`² pixels of its view around it.

    The view's edge pixels are repeated beyond it.
    """
    from scipy.ndimage import uniform_filter

    flat = values.double().cpu().numpy()
    out = np.empty_like(flat)
    for _, part, shape in _view_parts(data):
        out[part] = uniform_filter(flat[part].reshape(shape), CLOUD_BOX, mode="nearest").reshape(-1)
    return torch.from_numpy(out).to(values.device)


def view_images(data: FitData, pool: RayPool, predicted: torch.Tensor) -> list[ViewImage]:
    """Each view's measured (mean per usable frame) and ``predicted`` images, with its usable frames.

    ``predicted``: (n_pixels,) expected photoelectrons per frame of the pool's pixels, which are
    the views' regions of interest one after another, row-major.
    """
    mean = (pool.summed_electrons / pool.n_frames.clamp_min(1)).float().cpu().numpy()
    frames = pool.n_frames.cpu().numpy().astype(np.int32)
    pred = predicted.float().cpu().numpy()
    images = []
    for view, part, shape in _view_parts(data):
        roi, pixel_mm = tuple(int(v) for v in view.roi), data.system.cameras[view.camera].object_pixel_mm
        images.append(ViewImage(view.name, roi, pixel_mm, mean[part].reshape(shape),
                                pred[part].reshape(shape), frames[part].reshape(shape)))
    return images
