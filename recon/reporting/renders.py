"""The pictures of a fit: measured | predicted | residual per view, max-intensity projections, loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from optics.atomic import atomic_path
from recon.fitting.data import FitData
from recon.fitting.raypool import RayPool
from recon.io.volume import Volume

__all__ = ["write_renders"]


def _png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def write_renders(
    out_dir: Path, data: FitData, pool: RayPool, predicted: torch.Tensor, volume: Volume, losses: list[float]
) -> list[Path]:
    """Write measured | predicted | residual per view, max-intensity projections, loss curve (PNG)."""
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
        fig.colorbar(im, ax=ax, fraction=0.046)
    suptitle = fig.suptitle("view")
    start = {k: getattr(fig.subplotpars, k) for k in ("left", "right", "bottom", "top", "wspace", "hspace")}
    first = 0
    for view in data.views:
        x0, y0, w, h = view.roi
        m = mean[first : first + w * h].reshape(h, w)
        p = pred[first : first + w * h].reshape(h, w)
        first += w * h
        vmax = max(float(np.percentile(m, 99.9)), float(p.max()), 1e-9)
        res = (m - p) / np.sqrt(np.maximum(p, 0) + pool.read_noise_e**2)
        limits = ((0, vmax), (0, vmax), (-4, 4))
        for ax, im, img, (lo, hi) in zip(axes, images, (m, p, res), limits, strict=True):
            im.set_data(img)
            im.set_extent((-0.5, w - 0.5, h - 0.5, -0.5))
            im.set_clim(lo, hi)
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        suptitle.set_text(f"view {view.name}  ROI {view.roi}")
        fig.subplots_adjust(**start)  # tight_layout from the same state for every view
        fig.tight_layout()
        path = renders / f"view_{view.name}.png"
        _png(fig, path)
        written.append(path)
    plt.close(fig)
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
    path = renders / "mip.png"
    _png(fig, path)
    plt.close(fig)
    written.append(path)
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
