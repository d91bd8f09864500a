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
    start = 0
    for view in data.views:
        x0, y0, w, h = view.roi
        m = mean[start : start + w * h].reshape(h, w)
        p = pred[start : start + w * h].reshape(h, w)
        start += w * h
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        vmax = max(float(np.percentile(m, 99.9)), float(p.max()), 1e-9)
        for ax, img, title in ((axes[0], m, "measured e⁻"), (axes[1], p, "predicted e⁻")):
            im = ax.imshow(img, cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(title)
            fig.colorbar(im, ax=ax, fraction=0.046)
        res = (m - p) / np.sqrt(np.maximum(p, 0) + pool.read_noise_e**2)
        im = axes[2].imshow(res, cmap="RdBu_r", vmin=-4, vmax=4)
        axes[2].set_title("residual / noise σ")
        fig.colorbar(im, ax=axes[2], fraction=0.046)
        fig.suptitle(f"view {view.name}  ROI {view.roi}")
        fig.tight_layout()
        path = renders / f"view_{view.name}.png"
        _png(fig, path)
        plt.close(fig)
        written.append(path)
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
