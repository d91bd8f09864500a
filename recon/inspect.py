"""What a run holds, and whether it looks usable: per-view statistics, a table, a contact sheet.

Backs ``recon inspect RUN/`` (the command line lives in :mod:`recon.cli`). Statistics are in
photoelectrons (e⁻) per pixel over the usable pixels of all shots (:mod:`recon.run` masks).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from optics.atomic import atomic_path
from recon.errors import ConfigError
from recon.noise import SensorSpec, as_sensor_spec
from recon.run import Run, RunView

__all__ = ["ViewStats", "format_table", "inspect_run", "view_stats", "write_contact_sheet"]

# Thresholds of the warnings in ViewStats.warnings.
SATURATED_WARN = 0.001  # fraction of pixels
SNR_WARN = 5.0
MASKED_WARN = 0.05


@dataclass(frozen=True)
class ViewStats:
    """Statistics of one view (photoelectrons per pixel, usable pixels of all shots).

    Attributes:
        name: view name.
        camera: camera index.
        roi: ``(x0, y0, width, height)``, full-sensor px.
        frames: shots K.
        min_e: smallest value, e⁻.
        max_e: largest value, e⁻.
        mean_e: mean value, e⁻.
        saturated_fraction: fraction of pixels (all shots) at the top of the ADC range.
        masked_fraction: fraction of pixels not usable (saturated, clipped, NaN, bad dark).
        background_e: background per pixel, e⁻: median of the usable pixels in a border of
            width ``max(1, min(h, w) // 16)``.
        signal_e: signal above the background summed over the view, e⁻ per shot.
        snr: signal-to-noise ratio of that sum, ``signal / sqrt(Σ max(e, 0) + n·σ²_eff)``
            per shot, with σ²_eff the read variance times ``1 + 1/dark_pages``; NaN when the
            noise is 0.
        warnings: short remarks on problems (saturation, low SNR, many masked pixels).
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    frames: int
    min_e: float
    max_e: float
    mean_e: float
    saturated_fraction: float
    masked_fraction: float
    background_e: float
    signal_e: float
    snr: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        out = asdict(self)
        out["roi"] = list(self.roi)
        out["warnings"] = list(self.warnings)
        return out


def _border(h: int, w: int) -> torch.Tensor:
    b = max(1, min(h, w) // 16)
    border = torch.zeros(h, w, dtype=torch.bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    return border


def view_stats(view: RunView, sensor: object) -> ViewStats:
    """Statistics of one view (see :class:`ViewStats`).

    Args:
        view: a loaded view.
        sensor: its camera's sensor numbers (``read_noise_e`` is used).
    """
    spec = as_sensor_spec(sensor)
    e = view.electrons.to(torch.float64)  # (K, h, w)
    mask = view.mask
    k, h, w = e.shape
    usable = e[mask]
    n = mask.numel()
    if usable.numel():
        lo, hi, mean = float(usable.min()), float(usable.max()), float(usable.mean())
    else:
        lo = hi = mean = math.nan
    border = _border(h, w).expand(k, h, w) & mask
    ring = e[border]
    background = float(ring.median()) if ring.numel() else (float(usable.median()) if usable.numel() else 0.0)
    var_read = spec.read_noise_e**2 * (1.0 + (1.0 / view.dark_pages if view.dark_pages else 0.0))
    signal_k = ((e - background) * mask).sum(dim=(1, 2))  # (K,)
    noise_k = torch.sqrt((e.clamp_min(0) * mask).sum(dim=(1, 2)) + mask.sum(dim=(1, 2)) * var_read)
    signal = float(signal_k.mean())
    snr_k = torch.where(noise_k > 0, signal_k / noise_k.clamp_min(1e-300), torch.full_like(noise_k, math.nan))
    snr = float(snr_k.mean())
    saturated = float(view.saturated.sum()) / n
    masked = float((~mask).sum()) / n
    warnings = []
    if saturated > SATURATED_WARN:
        warnings.append(f"{saturated:.1%} saturated: lower the exposure or the atom number")
    if masked - saturated > MASKED_WARN:
        other = masked - saturated
        warnings.append(f"{other:.1%} of pixels unusable besides saturation (NaN, clipped, bad dark)")
    if not snr >= SNR_WARN:
        warnings.append(f"SNR {snr:.1f}: the view barely sees the object")
    return ViewStats(
        view.name,
        view.camera,
        tuple(view.roi),
        k,
        lo,
        hi,
        mean,
        saturated,
        masked,
        background,
        signal,
        snr,
        tuple(warnings),
    )


def inspect_run(run: Run, sensor: object | None = None) -> list[ViewStats]:
    """Statistics of every view of a run, in file order.

    Args:
        run: a loaded run.
        sensor: sensor numbers (one for every camera, or a sequence/mapping by camera); None
            uses those the run was loaded with (``run.sensors``).

    Raises:
        ConfigError: no sensor numbers for a view's camera.
    """
    if sensor is None:
        sensors: Mapping[int, SensorSpec] = run.sensors
    elif isinstance(sensor, Mapping):
        sensors = {int(c): as_sensor_spec(s) for c, s in sensor.items()}
    elif isinstance(sensor, Sequence):
        sensors = {i: as_sensor_spec(s) for i, s in enumerate(sensor)}
    else:
        one = as_sensor_spec(sensor)
        sensors = {v.camera: one for v in run.views}
    out = []
    for v in run.views:
        if v.camera not in sensors:
            raise ConfigError(f"inspect_run: no sensor numbers for camera {v.camera} (view {v.name})")
        out.append(view_stats(v, sensors[v.camera]))
    return out


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
