"""The pictures of a fit: measured | predicted | residual per view, max-intensity projections, loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from optics.atomic import atomic_path
from recon.fitting.data import FitData
from recon.fitting.raypool import RayPool
from recon.io.volume import Volume

__all__ = ["colour_top", "scale_bar_mm", "write_mip", "write_renders", "write_turntable"]


def _png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def colour_top(measured: np.ndarray, predicted: np.ndarray) -> float:
    """The top of a view's colour scale, shared by its measured and predicted images.

    The prediction's 99.9th percentile: the two images are compared on the model's scale, and
    light above it (noise, or a cloud brighter than the fit) shows as the top colour. Scaling by
    the measured maximum instead lets the noise peaks of a read-noise-dominated view (the
    defocused direct view) set it, and the prediction shows nearly black; the prediction's own
    maximum is set there by a few pixels whose few pooled rays happen to cross the densest
    voxels. Where nothing is predicted, the 99.9th percentile of the measured image averaged over
    3 × 3 pixels.
    """
    top = float(np.percentile(predicted, 99.9)) if np.size(predicted) else 0.0
    if top > 0:
        return top
    from scipy.ndimage import uniform_filter

    smooth = uniform_filter(np.asarray(measured, np.float64), size=3, mode="nearest")
    return max(float(np.percentile(smooth, 99.9)), 1e-9)


def scale_bar_mm(width_mm: float) -> float:
    """A round length (1, 2 or 5 × 10ⁿ mm) of at most 30 % of an image ``width_mm`` wide."""
    target = 0.3 * width_mm
    exponent = math.floor(math.log10(target))
    for step in (5, 2, 1):
        if step * 10.0**exponent <= target:
            return float(f"{step * 10.0**exponent:.3g}")
    return float(f"{10.0**exponent:.3g}")


def write_renders(
    out_dir: Path, data: FitData, pool: RayPool, predicted: torch.Tensor, volume: Volume, losses: list[float]
) -> list[Path]:
    """Write measured | predicted | residual per view, max-intensity projections, loss curve (PNG).

    A view's images are drawn in its sensor pixels, with a scale bar of the object-space length
    (pixel pitch / magnification: at the focal plane), and its measured and predicted images
    share one colour scale (:func:`colour_top`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    renders = out_dir / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    written = []
    mean = (pool.summed_electrons / pool.n_frames.clamp_min(1)).numpy()
    pred = predicted.numpy()
    # One figure for every view (building a figure per view took a third of the renders' time):
    # its images, colour scales and titles change, and it is laid out afresh from the same state.
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    titles = ("measured e⁻", "predicted e⁻", "residual / noise σ")
    images = [ax.imshow(np.zeros((2, 2)), cmap=cmap) for ax, cmap in zip(axes, ("magma", "magma", "RdBu_r"),
                                                                         strict=True)]
    for ax, im, title in zip(axes, images, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("sensor x (px)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].set_ylabel("sensor y (px)")
    (bar,) = axes[0].plot([], [], color="white", lw=2, solid_capstyle="butt")
    bar_label = axes[0].text(0, 0, "", color="white", fontsize=8, ha="left", va="bottom")
    suptitle = fig.suptitle("view")
    start = {k: getattr(fig.subplotpars, k) for k in ("left", "right", "bottom", "top", "wspace", "hspace")}
    first = 0
    for view in data.views:
        x0, y0, w, h = view.roi
        m = mean[first : first + w * h].reshape(h, w)
        p = pred[first : first + w * h].reshape(h, w)
        first += w * h
        vmax = colour_top(m, p)
        res = (m - p) / np.sqrt(np.maximum(p, 0) + pool.read_noise_e**2)
        limits = ((0, vmax), (0, vmax), (-4, 4))
        for ax, im, img, (lo, hi) in zip(axes, images, (m, p, res), limits, strict=True):
            im.set_data(img)
            im.set_extent((x0 - 0.5, x0 + w - 0.5, y0 + h - 0.5, y0 - 0.5))  # sensor pixels
            im.set_clim(lo, hi)
            ax.set_xlim(x0 - 0.5, x0 + w - 0.5)
            ax.set_ylim(y0 + h - 0.5, y0 - 0.5)
        px_mm = data.system.cameras[view.camera].object_pixel_mm
        length_mm = scale_bar_mm(w * px_mm)
        left, top = x0 + 0.05 * w, y0 + 0.92 * h
        bar.set_data([left, left + length_mm / px_mm], [top, top])
        bar_label.set_position((left, top - 0.02 * h))
        bar_label.set_text(f"{length_mm:g} mm")
        suptitle.set_text(f"view {view.name}  ROI {view.roi}")
        fig.subplots_adjust(**start)  # tight_layout from the same state for every view
        fig.tight_layout()
        path = renders / f"view_{view.name}.png"
        _png(fig, path)
        written.append(path)
    plt.close(fig)
    written.append(write_mip(volume, renders / "mip.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (deviance per pixel)")
    ax.set_yscale("log")
    ax.set_title("loss")
    fig.tight_layout()
    path = renders / "loss.png"
    _png(fig, path)
    plt.close(fig)
    written.append(path)
    return written


def write_mip(volume: Volume, path: Path) -> Path:
    """Maximum-intensity projections along z, y and x, labelled in mm (PNG); returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    (x_lo, y_lo, z_lo) = volume.origin_mm
    nz, ny, nx = volume.shape
    dx, dy, dz = volume.voxel_size_mm
    extents = {
        "z": (x_lo, x_lo + (nx - 1) * dx, y_lo + (ny - 1) * dy, y_lo),
        "y": (x_lo, x_lo + (nx - 1) * dx, z_lo + (nz - 1) * dz, z_lo),
        "x": (y_lo, y_lo + (ny - 1) * dy, z_lo + (nz - 1) * dz, z_lo),
    }
    for ax, (axis, index, labels) in zip(axes, (("z", 0, "xy"), ("y", 1, "xz"), ("x", 2, "yz")), strict=True):
        ax.imshow(volume.data.max(axis=index), cmap="magma", extent=extents[axis])
        ax.set_title(f"max along {axis}")
        ax.set_xlabel(f"{labels[0]} (mm)")
        ax.set_ylabel(f"{labels[1]} (mm)")
    fig.suptitle(f"maximum-intensity projections ({volume.unit})")
    fig.tight_layout()
    _png(fig, path)
    plt.close(fig)
    return path


def write_turntable(frames, unit: str, directory: Path, axis: str = "z") -> tuple[list[Path], Path]:
    """The frames of :func:`recon.analysis.turntable.turntable` as PNGs and one looping GIF.

    One colour scale for every frame (the largest value of all), axes in mm, the angle in each
    title. Returns the PNG paths and the GIF's.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    top = max(float(f.image.max()) for f in frames) or 1.0
    fig, ax = plt.subplots(figsize=(5, 5))
    im = ax.imshow(frames[0].image, cmap="magma", vmin=0, vmax=top, extent=frames[0].extent_mm)
    fig.colorbar(im, ax=ax, fraction=0.046, label=unit)
    ax.set_xlabel("across the view (mm)")
    ax.set_ylabel(f"{axis} (mm)")
    title = ax.set_title("")
    pngs, pictures = [], []
    for k, frame in enumerate(frames):
        im.set_data(frame.image)
        title.set_text(f"maximum intensity, {frame.angle_deg:.0f}° about {axis}")
        path = directory / f"frame_{k:03d}.png"
        _png(fig, path)
        pngs.append(path)
        with Image.open(path) as picture:
            pictures.append(picture.convert("P", palette=Image.Palette.ADAPTIVE))
    plt.close(fig)
    gif = directory.parent / "turntable.gif"
    with atomic_path(gif) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=120, loop=0)
    return pngs, gif
