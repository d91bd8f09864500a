"""What `recon system show` prints and draws: per-view table and the instrument layout."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from optics.atomic import atomic_path
from optics.camera import rois_overlap
from optics.design import ViewRegion, collected_fraction, view_regions
from optics.system import System
from optics.trace import sample_pixel_samples, trace_pixels
from recon.errors import ConfigError

__all__ = ["CameraSummary", "ViewSummary", "draw_layout", "off_sensor", "overlapping_regions",
           "summarize_cameras", "summarize_views"]


@dataclass(frozen=True)
class CameraSummary:
    """One row of the camera table: where a camera is, where it looks, and what it resolves."""

    index: int
    name: str
    position_mm: tuple[float, float, float]
    direction: tuple[float, float, float]
    distance_mm: float
    magnification: float
    object_pixel_um: float
    principal_point_px: tuple[float, float]
    f_number: float
    views: int


def summarize_cameras(system: System) -> list[CameraSummary]:
    """Every camera: where it is, where it looks, and what it resolves.

    Position, viewing direction (unit, world), distance to the box centre, magnification there,
    object-space pixel, principal point, f-number and number of views.
    """
    sys64 = system.to(torch.float64)
    centre = sys64.volume.center_mm
    out = []
    for i, cam in enumerate(sys64.cameras):
        axis = cam.pose.rotation[:, 2]
        depth = float((centre - cam.pose.position_mm) @ axis)
        lens = cam.lens
        if lens.model == "telecentric":
            magnification = float(lens.telecentric_magnification)
        else:
            magnification = float(lens.image_distance_mm) / max(depth, 1e-9)
        out.append(CameraSummary(
            index=i, name=cam.name, position_mm=tuple(float(v) for v in cam.pose.position_mm),
            direction=tuple(float(v) for v in axis),
            distance_mm=float((centre - cam.pose.position_mm).norm()),
            magnification=magnification, object_pixel_um=cam.sensor.pixel_pitch_um / magnification,
            principal_point_px=cam.sensor.principal_point_px, f_number=float(lens.f_number),
            views=len(view_regions(system, i)),
        ))
    return out


def off_sensor(system: System, camera: int, region: ViewRegion) -> str | None:
    """Where a view's region of the box runs off its camera's sensor, in words (None: it does not)."""
    sensor = system.cameras[camera].sensor
    x0, y0, w, h = region.roi
    over = {"left": -x0, "top": -y0, "right": x0 + w - sensor.width_px, "bottom": y0 + h - sensor.height_px}
    sides = [f"{px} px {side}" for side, px in over.items() if px > 0]
    if not sides:
        return None
    return (f"the box seen by {system.cameras[camera].name}/{region.name} runs off the sensor "
            f"({', '.join(sides)}): a cloud there is not seen; shrink the box or move the camera back")


@dataclass(frozen=True)
class ViewSummary:
    """One row of the per-view table."""

    region: ViewRegion
    depth_of_field_mm: float
    collected_fraction: float
    chief_ray_hits_box: bool


def summarize_views(system: System, camera: int = 0, *, source: str = "system file") -> list[ViewSummary]:
    """Per-view geometry and light collection of one camera.

    Raises:
        ConfigError: ``camera`` is not a camera of the system.
    """
    if not 0 <= camera < len(system.cameras):
        raise ConfigError(f"system show: camera {camera} does not exist in {source} "
                          f"(it has {len(system.cameras)}); pass --camera 0..{len(system.cameras) - 1}")
    regions = view_regions(system, camera)
    sensor = system.cameras[camera].sensor
    dof = float(system.cameras[camera].lens.to(torch.float64).depth_of_field_mm(sensor.pixel_pitch_mm))
    centre = system.volume.center_mm.to(torch.float64)
    out = []
    sys64 = system.to(torch.float64)
    for reg in regions:
        x0, y0, w, h = reg.roi
        centre_px = torch.tensor([[x0 + (w - 1) / 2, y0 + (h - 1) / 2]], dtype=torch.float64)
        traced = trace_pixels(sys64, centre_px, camera=camera)
        out.append(ViewSummary(
            region=reg,
            depth_of_field_mm=dof,
            collected_fraction=collected_fraction(system, centre, reg.path, camera=camera),
            chief_ray_hits_box=bool(traced.valid[0, 0, reg.path]),
        ))
    return out


def overlapping_regions(regions: list[ViewRegion]) -> list[str]:
    """``"a/b"`` for every pair of view regions whose sensor rectangles overlap."""
    return [f"{a.name}/{b.name}" for i, a in enumerate(regions) for b in regions[i + 1:]
            if rois_overlap(a.roi, b.roi)]


def draw_layout(system: System, summaries: list[ViewSummary], path: str | os.PathLike,
                camera: int = 0) -> None:
    """Draw the instrument (side and front views with traced rays) and the sensor footprints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle


    sys64 = system.to(torch.float64)
    cam = sys64.cameras[camera]
    fig, axes = plt.subplots(1, 3, figsize=(18, 6))
    colors = plt.cm.tab20.colors
    gen = torch.Generator().manual_seed(0)
    for ax, (i, j, label) in zip(axes[:2], [(2, 0, "x"), (0, 1, "y")], strict=True):
        lo, hi = sys64.volume.min_mm, sys64.volume.max_mm
        ax.add_patch(Rectangle((lo[i], lo[j]), hi[i] - lo[i], hi[j] - lo[j], fill=False, lw=1))
        for k, m in enumerate(sys64.mirrors):
            n = m.normal / m.normal.norm()
            tangent = torch.tensor([-n[j], n[i]]) if i == 2 else torch.tensor([-n[j], n[i]])
            tangent = tangent / tangent.norm().clamp_min(1e-9) * float(m.radius_mm)
            c = m.center_mm
            ax.plot([c[i] - tangent[0], c[i] + tangent[0]], [c[j] - tangent[1], c[j] + tangent[1]],
                    color=colors[(k + 1) % 20], lw=2)
        for s in summaries:
            x0, y0, w, h = s.region.roi
            px = torch.tensor([[x0 + w / 2, y0 + h / 2]], dtype=torch.float64).repeat(6, 1)
            sub, ap = sample_pixel_samples(6, 1, generator=gen, jitter=False, dtype=torch.float64)
            tr = trace_pixels(sys64, px, camera=camera, subpixel=sub, aperture=ap)
            p = s.region.path
            for r in range(6):
                if not tr.valid[r, 0, p]:
                    continue
                seg_end = tr.origins[r, 0, p] + tr.t_far[r, 0, p] * tr.directions[r, 0, p]
                pts = [tr.origins[r, 0, 0], seg_end] if p == 0 else [
                    tr.origins[r, 0, 0], tr.origins[r, 0, p], seg_end]
                ax.plot([float(q[i]) for q in pts], [float(q[j]) for q in pts],
                        color=colors[p % 20], lw=0.4, alpha=0.7)
        for w in sys64.windows if i == 2 else ():
            c, half = w.center_mm, float(w.aperture_radius_mm)
            ax.plot([c[i], c[i]], [c[j] - half, c[j] + half], color="c", lw=3, alpha=0.5)
        for other in sys64.cameras:  # every camera; the drawn one's rays and regions
            pos = other.pose.position_mm
            ax.plot([pos[i]], [pos[j]], "^", color="k" if other is cam else "0.5", ms=8)
            if len(sys64.cameras) > 1:
                ax.annotate(other.name, (float(pos[i]), float(pos[j])), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(f"{'zx'[i == 0]} (mm)")
        ax.set_ylabel(f"{label} (mm)" if i == 2 else "y (mm)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title("side view (z–x)" if i == 2 else "back view (x–y), mirrors and box")
    axes[1].set_xlim(-30, 30)
    axes[1].set_ylim(-30, 30)
    ax = axes[2]
    sensor = cam.sensor
    ax.add_patch(Rectangle((0, 0), sensor.width_px, sensor.height_px, fill=False))
    for s in summaries:
        x0, y0, w, h = s.region.roi
        ax.add_patch(Rectangle((x0, y0), w, h, color=colors[s.region.path % 20], alpha=0.6))
        ax.text(x0 + w / 2, y0 + h / 2, s.region.name, fontsize=6, ha="center", va="center")
    xs = [s.region.roi[0] for s in summaries] + [s.region.roi[0] + s.region.roi[2] for s in summaries]
    ys = [s.region.roi[1] for s in summaries] + [s.region.roi[1] + s.region.roi[3] for s in summaries]
    pad = 200
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_ylim(max(ys) + pad, min(ys) - pad)
    ax.set_aspect("equal")
    ax.set_title(f"sensor {sensor.width_px}×{sensor.height_px} px (zoomed): view regions")
    ax.set_xlabel("u (px)")
    ax.set_ylabel("v (px)")
    fig.suptitle(f"{system.name}: {len(summaries)} views")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
