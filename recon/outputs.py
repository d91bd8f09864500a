"""What a fit leaves behind: density.tif, renders/, metrics.json, report.html."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import torch

from optics.atomic import atomic_path, atomic_write_text
from recon.fit import FitData, RayPool, cloud_moments
from recon.render import RayBatch, render_pixels
from recon.volume import Volume, interpolate, write_volume

__all__ = [
    "density_grid",
    "figure_html",
    "predict_views",
    "residual_stats",
    "sample_field",
    "write_json",
    "write_renders",
    "write_report",
]


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (NaN becomes null)."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    atomic_write_text(path, json.dumps(clean(data), indent=2) + "\n")


def density_grid(data: FitData, voxel_size_mm: float) -> tuple[tuple[int, int, int], tuple, tuple]:
    """Shape (Z, Y, X), origin and voxel size of the output grid covering the box.

    ``voxel_size_mm = 0`` chooses the object-space pixel of camera 0 (pitch / magnification).
    """
    if voxel_size_mm <= 0:
        cam = data.system.cameras[0]
        voxel_size_mm = round(cam.sensor.pixel_pitch_mm / float(cam.lens.magnification), 4)
    box = data.system.volume
    size = box.size_mm.tolist()
    n = [max(2, int(math.floor(s / voxel_size_mm + 1e-9))) for s in size]  # x, y, z
    centre = box.center_mm.tolist()
    origin = tuple(c - (k - 1) / 2 * voxel_size_mm for c, k in zip(centre, n, strict=True))
    return (n[2], n[1], n[0]), origin, (voxel_size_mm,) * 3


@torch.no_grad()
def sample_field(field_module, shape, origin, voxel, device, chunk: int = 262144) -> np.ndarray:
    """Evaluate a field at the voxel centres of a grid: (Z, Y, X) float32."""
    from recon.volume import grid_points

    pts = grid_points(shape, origin, voxel, device=device).reshape(-1, 3)
    out = torch.cat([field_module(pts[i : i + chunk]).float() for i in range(0, len(pts), chunk)])
    return out.reshape(shape).cpu().numpy()


@torch.no_grad()
def predict_views(
    volume: Volume,
    pool: RayPool,
    photons_per_atom: float,
    *,
    model: str = "emission",
    attenuation: float = 1.0,
    step_mm: float = 0.02,
    chunk_pixels: int = 32768,
) -> torch.Tensor:
    """Expected photoelectrons of every pooled pixel from a density volume (trilinear)."""
    density = lambda p: interpolate(volume, p)  # noqa: E731
    out = torch.zeros(pool.n_pixels)
    gen = torch.Generator().manual_seed(1234)
    for start in range(0, pool.n_pixels, chunk_pixels):
        pixels = torch.arange(start, min(start + chunk_pixels, pool.n_pixels))
        batch: RayBatch = pool.gather(pixels)
        out[pixels] = render_pixels(
            density,
            batch,
            len(pixels),
            photons_per_atom=photons_per_atom,
            step_mm=step_mm,
            model=model,
            attenuation=attenuation,
            generator=gen,
        ).float()
    return out


def residual_stats(data: FitData, pool: RayPool, predicted: torch.Tensor) -> list[dict]:
    """Per view: residuals normalised by the expected noise, √(λ + σ²) per frame."""
    mean = pool.summed_counts / pool.n_frames.clamp_min(1)
    sigma = torch.sqrt(predicted.clamp_min(0) + pool.read_noise_e**2) / torch.sqrt(pool.n_frames.clamp_min(1))
    z = (mean - predicted) / sigma
    rows = []
    for vi, view in enumerate(data.views):
        sel = (pool.view_of_pixel == vi) & (pool.n_frames > 0)
        zs = z[sel]
        rows.append(
            {
                "view": view.name,
                "pixels": int(sel.sum()),
                "measured_e": float(mean[sel].sum()),
                "predicted_e": float(predicted[sel].sum()),
                "residual_mean": float(zs.mean()) if len(zs) else math.nan,
                "residual_rms": float(zs.pow(2).mean().sqrt()) if len(zs) else math.nan,
            }
        )
    return rows


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
    mean = (pool.summed_counts / pool.n_frames.clamp_min(1)).numpy()
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


def figure_html(png: Path, caption: str) -> str:
    """A PNG inlined (base64) in an HTML figure, so the page is self-contained."""
    data = base64.b64encode(png.read_bytes()).decode()
    return (f"<figure><img src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_report(out_dir: Path, metrics: dict, images: list[Path], extra_sections: list[str] = ()) -> None:
    """One self-contained HTML page: the numbers and the pictures (inlined as base64).

    The resolution sections come from the FSC comparisons found in ``out_dir``
    (:func:`recon.resolution.fsc_sections`), so rewriting the report after ``recon fsc OUT/``
    adds them.
    """
    from recon.resolution import fsc_sections

    extra_sections = [*extra_sections, *fsc_sections(out_dir)]
    rows = []
    for key in (
        "atoms",
        "centroid_mm",
        "width_mm",
        "final_loss",
        "steps",
        "time_s",
        "rays_per_s",
        "peak_memory_mb",
        "backend",
        "device",
        "density_unit",
    ):
        if key in metrics:
            rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(metrics[key]))}</td></tr>")
    view_rows = "".join(
        f"<tr><td>{html.escape(v['view'])}</td><td>{v['pixels']}</td><td>{v['measured_e']:.4g}</td>"
        f"<td>{v['predicted_e']:.4g}</td><td>{v['residual_mean']:.3f}</td><td>{v['residual_rms']:.3f}</td></tr>"
        for v in metrics.get("views", [])
    )
    pics = "".join(figure_html(p, p.name) for p in images if p.exists())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>recon fit report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>recon fit: {html.escape(str(metrics.get("run", "")))}</h1>
<h2>Summary</h2><table>{"".join(rows)}</table>
<h2>Views</h2><p>Residuals are (measured − predicted)/√(predicted + σ²_read) per pixel: mean ≈ 0 and
RMS ≈ 1 when the model explains the data down to the noise.</p>
<table><tr><th>view</th><th>pixels</th><th>measured e⁻</th><th>predicted e⁻</th><th>residual mean</th>
<th>residual RMS</th></tr>{view_rows}</table>
{"".join(extra_sections)}
<h2>Pictures</h2>{pics}
</body></html>
"""
    atomic_write_text(out_dir / "report.html", page)


def cloud_metrics(volume: Volume) -> dict:
    """Total atom number, centroid and widths of a density volume."""
    m = cloud_moments(volume.data, volume.origin_mm, volume.voxel_size_mm)
    return {"atoms": m["total"], "centroid_mm": m["centroid_mm"], "width_mm": m["width_mm"]}


def save_density(
    out_dir: Path, data_grid: np.ndarray, origin, voxel, unit: str, meta: dict, *, name: str = "density.tif"
) -> Volume:
    """Write ``out_dir/name`` (default density.tif) and return the Volume."""
    volume = Volume(data_grid.astype(np.float32), tuple(origin), tuple(voxel), unit, meta)
    write_volume(out_dir / name, volume)
    return volume
