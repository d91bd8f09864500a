"""What `recon system show` prints and draws: per-view table and the instrument layout."""

from __future__ import annotations

import math
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


def draw_layout(system: System, shown: dict[int, list[ViewSummary]], path: str | os.PathLike) -> None:
    """Draw the instrument with every shown camera's traced rays, and each camera's sensor regions.

    ``shown``: camera index → its view summaries (:func:`summarize_views`). Top row: a side view
    (z–x) and a view along z (x–y) of the box, mirrors, windows and camera positions, with six
    rays through the centre of each view's region traced into the box (coloured by camera when
    several are shown, else by path); below, one panel per shown camera with its sensor regions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    sys64 = system.to(torch.float64)
    cameras = list(shown)
    rows = math.ceil(len(cameras) / 3)  # of sensor panels, three a row
    fig = plt.figure(figsize=(18, 6 + 5 * rows))
    grid = fig.add_gridspec(1 + rows, 3, height_ratios=[6] + [5] * rows)
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1:])]
    colors = plt.cm.tab20.colors
    gen = torch.Generator().manual_seed(0)
    lo, hi = sys64.volume.min_mm, sys64.volume.max_mm

    def colour(camera: int, path_index: int):
        return colors[(camera if len(cameras) > 1 else path_index) % 20]

    near = [lo, hi] + [m.center_mm for m in sys64.mirrors] + [w.center_mm for w in sys64.windows]
    for ax, (i, j) in zip(axes, [(2, 0), (0, 1)], strict=True):
        ax.add_patch(Rectangle((lo[i], lo[j]), hi[i] - lo[i], hi[j] - lo[j], fill=False, lw=1))
        for k, m in enumerate(sys64.mirrors):
            n = m.normal / m.normal.norm()
            tangent = torch.tensor([-n[j], n[i]])
            tangent = tangent / tangent.norm().clamp_min(1e-9) * float(m.radius_mm)
            c = m.center_mm
            ax.plot([c[i] - tangent[0], c[i] + tangent[0]], [c[j] - tangent[1], c[j] + tangent[1]],
                    color=colors[(k + 1) % 20], lw=2)
        for camera, summaries in shown.items():
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
                            color=colour(camera, p), lw=0.4, alpha=0.7)
        for w in sys64.windows:  # a window seen edge-on in neither view is drawn as its diameter
            n = w.normal / w.normal.norm()
            tangent = torch.tensor([-n[j], n[i]])
            tangent = tangent / tangent.norm().clamp_min(1e-9) * float(w.aperture_radius_mm)
            c = w.center_mm
            ax.plot([c[i] - tangent[0], c[i] + tangent[0]], [c[j] - tangent[1], c[j] + tangent[1]],
                    color="c", lw=3, alpha=0.5)
        for index, other in enumerate(sys64.cameras):
            pos = other.pose.position_mm
            ax.plot([pos[i]], [pos[j]], "^", color=colour(index, 0) if index in shown else "0.5", ms=8)
            if len(sys64.cameras) > 1:
                ax.annotate(other.name, (float(pos[i]), float(pos[j])), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel(f"{'xz'[i == 2]} (mm)")
        ax.set_ylabel(f"{'xy'[j == 1]} (mm)")
        ax.set_aspect("equal", adjustable="datalim")
    axes[0].set_title("side view (z–x): box, mirrors, windows, cameras (▲) and traced rays")
    # along z: the box, the mirrors and the windows fill the view (distant cameras are off it)
    span = torch.stack(near)
    margin = 0.15 * float((span.max(0).values - span.min(0).values)[:2].max())
    axes[1].set_xlim(float(span[:, 0].min()) - margin, float(span[:, 0].max()) + margin)
    axes[1].set_ylim(float(span[:, 1].min()) - margin, float(span[:, 1].max()) + margin)
    axes[1].set_aspect("equal", adjustable="box")
    axes[1].set_title("along z (x–y): box, mirrors and windows")
    for n, (camera, summaries) in enumerate(shown.items()):
        ax = fig.add_subplot(grid[1 + n // 3, n % 3])
        sensor = sys64.cameras[camera].sensor
        ax.add_patch(Rectangle((0, 0), sensor.width_px, sensor.height_px, fill=False))
        for s in summaries:
            x0, y0, w, h = s.region.roi
            ax.add_patch(Rectangle((x0, y0), w, h, color=colour(camera, s.region.path), alpha=0.6))
            ax.text(x0 + w / 2, y0 + h / 2, s.region.name, fontsize=6, ha="center", va="center")
        if summaries:
            xs = [s.region.roi[0] for s in summaries] + [s.region.roi[0] + s.region.roi[2] for s in summaries]
            ys = [s.region.roi[1] for s in summaries] + [s.region.roi[1] + s.region.roi[3] for s in summaries]
            pad = 200
            ax.set_xlim(min(xs) - pad, max(xs) + pad)
            ax.set_ylim(max(ys) + pad, min(ys) - pad)
        ax.set_aspect("equal")
        ax.set_title(f"camera {camera} ({sys64.cameras[camera].name}): sensor {sensor.width_px}×"
                     f"{sensor.height_px} px (zoomed), {len(summaries)} view regions", fontsize=9)
        ax.set_xlabel("u (px)")
        ax.set_ylabel("v (px)")
    fig.suptitle(f"{system.name}: {sum(len(v) for v in shown.values())} views of {len(cameras)} camera(s)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
