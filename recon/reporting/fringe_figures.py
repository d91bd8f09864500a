"""The picture of a fringe fit (:mod:`recon.analysis.fringes`): the density, the model, a profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from recon.analysis.fringes import FringeFit, fringe_model
from recon.io.volume import Volume
from recon.reporting.renders import pyplot, save_png

__all__ = ["write_fringe_figure"]


def write_fringe_figure(volume: Volume, fit: FringeFit, path: Path) -> None:
    """The density's slice through the envelope's centre, the model's, a profile across the fringes.

    The slice is cut across the axis the fringes' direction has least of, so the fringes lie in it.
    """
    data = np.asarray(volume.data, dtype=np.float64)
    origin, size = np.asarray(volume.origin_mm), np.asarray(volume.voxel_size_mm)
    counts = data.shape[::-1]  # (x, y, z)
    grids = [origin[a] + size[a] * np.arange(counts[a]) for a in range(3)]
    centre = np.asarray(fit.centre_mm)
    cut = int(np.argmin(np.abs(fit.direction)))  # world axis (x, y, z) across which to slice
    cols, rows = [a for a in range(3) if a != cut]  # the plane's columns and rows (world axes, rising)
    index = int(np.clip(round((centre[cut] - origin[cut]) / size[cut]), 0, counts[cut] - 1))
    plane = np.take(data, index, axis=2 - cut)  # the data's axes are (z, y, x): rows, then columns
    rr, cc = np.meshgrid(grids[rows], grids[cols], indexing="ij")
    points = np.empty(rr.shape + (3,))
    points[..., rows], points[..., cols], points[..., cut] = rr, cc, grids[cut][index]
    params = torch.tensor(fit.params, dtype=torch.float64)
    s = np.linspace(-3, 3, 400) * max(fit.width_mm)
    line = centre + s[:, None] * np.asarray(fit.direction)
    with torch.no_grad():
        model = fringe_model(params, torch.from_numpy(points.reshape(-1, 3))).reshape(rr.shape).numpy()
        model_line = fringe_model(params, torch.from_numpy(line)).numpy()
    measured_line = map_coordinates(data, ((line - origin) / size)[:, ::-1].T, order=1, mode="nearest")
    plt = pyplot()
    fig, panels = plt.subplots(1, 3, figsize=(13, 4))
    extent = (grids[cols][0], grids[cols][-1], grids[rows][0], grids[rows][-1])
    top = float(max(np.percentile(plane, 99.5), model.max()))  # clumps above it show as the top colour
    for ax, image, title in ((panels[0], plane, "density"), (panels[1], model, "fitted fringe model")):
        ax.imshow(image, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=top)
        ax.set_title(f"{title}, {'xyz'[cut]} = {1e3 * grids[cut][index]:.0f} µm")
        ax.set_xlabel(f"{'xyz'[cols]} (mm)")
        ax.set_ylabel(f"{'xyz'[rows]} (mm)")
    panels[2].plot(s, measured_line, label="density", lw=1)
    panels[2].plot(s, model_line, label="model", lw=1)
    panels[2].set_xlabel("along the fringes' direction from the centre (mm)")
    panels[2].set_ylabel(volume.unit)
    panels[2].set_title(f"period {1e3 * fit.period_mm:.1f} µm, contrast {fit.contrast:.2f}, "
                        f"φ {fit.phase_rad:+.3f} rad")
    panels[2].legend()
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
