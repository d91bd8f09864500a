"""What `recon inspect` shows: the per-view table and the contact sheet of a run's views."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from optics.atomic import atomic_path
from recon.analysis.inspect import ViewStats
from recon.errors import ConfigError
from recon.io.run import Run

__all__ = ["format_table", "write_contact_sheet"]


def format_table(stats: Sequence[ViewStats], *, title: str | None = None):
    """A ``rich.table.Table`` of the statistics (one row per view) for the terminal."""
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for col, justify in (
        ("view", "left"),
        ("cam", "right"),
        ("roi x0,y0 w×h", "left"),
        ("K", "right"),
        ("min e⁻", "right"),
        ("mean e⁻", "right"),
        ("max e⁻", "right"),
        ("bkg e⁻", "right"),
        ("signal e⁻", "right"),
        ("SNR", "right"),
        ("sat.", "right"),
        ("masked", "right"),
        ("clipped", "right"),
        ("notes", "left"),
    ):
        table.add_column(col, justify=justify)
    for s in stats:
        x0, y0, w, h = s.roi
        style = "yellow" if s.warnings else None
        table.add_row(
            s.name,
            str(s.camera),
            f"{x0},{y0} {w}×{h}",
            str(s.frames),
            f"{s.min_e:.1f}",
            f"{s.mean_e:.2f}",
            f"{s.max_e:.1f}",
            f"{s.background_e:.2f}",
            f"{s.signal_e:.4g}",
            f"{s.snr:.1f}",
            f"{s.saturated_fraction:.2%}",
            f"{s.masked_fraction:.2%}",
            f"{s.clipped_fraction:.2%}",
            "; ".join(s.warnings),
            style=style,
        )
    return table


def write_contact_sheet(
    run: Run,
    path_png: str | os.PathLike,
    *,
    columns: int | None = None,
    frame: int | None = None,
    dpi: int = 100,
) -> None:
    """Write a PNG with every view of the run, each labelled with its name (atomic write).

    Each panel shows the mean over shots (or shot ``frame``) in e⁻, stretched from its 1st to
    its 99.5th percentile, in sensor orientation (row 0 at the top); unusable pixels are red.

    Args:
        run: a loaded run.
        path_png: output file.
        columns: panels per row (default: about the square root of the number of views).
        frame: shot to show; None shows the mean over shots.
        dpi: resolution.

    Raises:
        ConfigError: ``frame`` out of range.
    """
    # The Agg canvas directly: no pyplot, no change to the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = run.views
    if frame is not None and not 0 <= frame < run.n_frames:
        raise ConfigError(
            f"write_contact_sheet: frame {frame} out of range; the run has {run.n_frames} shot(s)"
        )
    ncol = columns or max(1, math.ceil(math.sqrt(len(views))))
    nrow = math.ceil(len(views) / ncol)
    fig = Figure(figsize=(2.6 * ncol, 2.6 * nrow + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.suptitle(f"{run.name}: {len(views)} views, {run.n_frames} shot(s), e⁻ per pixel", fontsize=10)
    for i, v in enumerate(views):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        if frame is None:
            counts = v.mask.sum(0)
            image = (v.electrons * v.mask).sum(0) / counts.clamp_min(1)
            good = counts > 0
        else:
            image, good = v.electrons[frame], v.mask[frame]
        img = image.numpy().astype(np.float64)
        ok = good.numpy()
        vals = img[ok]
        lo, hi = (np.percentile(vals, [1.0, 99.5]) if vals.size else (0.0, 1.0))
        if not hi > lo:
            hi = lo + 1.0
        rgb = np.clip((img - lo) / (hi - lo), 0, 1)[..., None].repeat(3, -1)
        rgb[~ok] = (1.0, 0.0, 0.0)
        ax.imshow(rgb, interpolation="nearest", origin="upper")
        ax.set_title(f"{v.name}  (max {vals.max() if vals.size else 0:.0f} e⁻)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, format="png")
