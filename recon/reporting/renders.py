"""The pictures of a fit: every view's measured | predicted | residual, max-intensity projections, loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from optics.atomic import atomic_path
from recon.io.viewimages import ViewImage
from recon.io.volume import Volume

__all__ = ["REPORT_PICTURES", "colour_top", "pyplot", "save_png", "scale_bar_mm", "write_mip",
           "write_renders", "write_turntable", "write_view_figures", "write_view_mosaic"]


def save_png(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG at ``path``, atomically (100 dpi).

    zlib level 1: about a tenth larger than the default level 6 and quicker to encode (a fit's
    pictures are written while the user waits).
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", pil_kwargs={"compress_level": 1})


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


#: The pictures of a fit's renders/ that its report shows, in this order.
REPORT_PICTURES = ("views.png", "mip.png", "loss.png")
_TITLES = ("measured e⁻", "predicted e⁻", "residual / noise σ")
_CMAPS = ("magma", "magma", "RdBu_r")


def pyplot():
    """Matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(view: ViewImage, read_noise_e: float):
    """A view's measured, predicted and residual images, each with its colour limits.

    Measured and predicted share :func:`colour_top`; residuals span ±4 σ.
    """
    top = colour_top(view.measured, view.predicted)
    return ((view.measured, (0.0, top)), (view.predicted, (0.0, top)),
            (view.residual(read_noise_e), (-4.0, 4.0)))


def _scale_bar(view: ViewImage, extent: tuple[float, float, float, float]):
    """A round object-space length (:func:`scale_bar_mm`) in the lower left of a view's image.

    Returns the bar's x and y (two points each), its label's position and the label.
    """
    left, right, bottom, top = extent
    width, height = right - left, bottom - top
    length_mm = scale_bar_mm(view.roi[2] * view.object_pixel_mm)
    x, y = left + 0.05 * width, top + 0.92 * height
    return [x, x + length_mm / view.object_pixel_mm], [y, y], (x, y - 0.02 * height), f"{length_mm:g} mm"


def _extent(view: ViewImage) -> tuple[float, float, float, float]:
    x0, y0, w, h = view.roi  # sensor pixels, image rows downwards
    return x0 - 0.5, x0 + w - 0.5, y0 + h - 0.5, y0 - 0.5


def write_view_mosaic(path: Path, images: list[ViewImage], read_noise_e: float) -> Path:
    """Every view in one picture: a row per view, measured | predicted | residual (PNG); returns ``path``.

    Each row keeps its view's aspect and sensor orientation, with the view's name, its colour
    scale's top (shared by measured and predicted, :func:`colour_top`) and a scale bar of the
    object-space length; residuals are in σ of the expected noise, ±4. One figure drawn once: a
    glance at every view, cheaper than a figure per view (:func:`write_view_figures`, which
    ``recon render OUT/ --views`` draws).
    """
    plt = pyplot()
    panel_in, label_in = 1.9, 0.55
    heights = [view.roi[3] / view.roi[2] for view in images]
    height_in = 0.35 + panel_in * sum(heights) + 0.12 * len(images)
    fig, axes = plt.subplots(len(images), 3, squeeze=False, figsize=(label_in + 3 * panel_in, height_in),
                             gridspec_kw={"height_ratios": heights, "wspace": 0.03, "hspace": 0.12})
    fig.subplots_adjust(left=label_in / (label_in + 3 * panel_in), right=0.99,
                        top=1 - 0.3 / fig.get_figheight(), bottom=0.05 / fig.get_figheight())
    for ax, title in zip(axes[0], ("measured e⁻", "predicted e⁻", "residual / σ (±4)"), strict=True):
        ax.set_title(title, fontsize=9)
    for row, view in zip(axes, images, strict=True):
        extent, panels = _extent(view), _panels(view, read_noise_e)
        for ax, (image, (lo, hi)), cmap in zip(row, panels, _CMAPS, strict=True):
            ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, extent=extent)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(view.name, fontsize=8)
        row[0].text(0.03, 0.97, f"0 – {panels[0][1][1]:.3g} e⁻", transform=row[0].transAxes, color="white",
                    fontsize=6, ha="left", va="top")
        xs, ys, at, label = _scale_bar(view, extent)
        row[0].plot(xs, ys, color="white", lw=2, solid_capstyle="butt")
        row[0].text(*at, label, color="white", fontsize=6, ha="left", va="bottom")
    save_png(fig, path)
    plt.close(fig)
    return path


def write_view_figures(directory: Path, images: list[ViewImage], read_noise_e: float) -> list[Path]:
    """One full-size figure per view, ``view_<name>.png``: measured | predicted | residual with colour bars.

    Axes in sensor pixels, a scale bar of the object-space length, measured and predicted on one
    colour scale (:func:`colour_top`). Returns the paths.
    """
    plt = pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    # One figure for every view (building a figure per view took a third of the time): its images,
    # colour scales and titles change, and it is laid out afresh from the same state.
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    pictures = [ax.imshow(np.zeros((2, 2)), cmap=cmap) for ax, cmap in zip(axes, _CMAPS, strict=True)]
    for ax, im, title in zip(axes, pictures, _TITLES, strict=True):
        ax.set_title(title)
        ax.set_xlabel("sensor x (px)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[0].set_ylabel("sensor y (px)")
    (bar,) = axes[0].plot([], [], color="white", lw=2, solid_capstyle="butt")
    bar_label = axes[0].text(0, 0, "", color="white", fontsize=8, ha="left", va="bottom")
    suptitle = fig.suptitle("view")
    start = {k: getattr(fig.subplotpars, k) for k in ("left", "right", "bottom", "top", "wspace", "hspace")}
    for view in images:
        extent = _extent(view)
        for ax, im, (img, (lo, hi)) in zip(axes, pictures, _panels(view, read_noise_e), strict=True):
            im.set_data(img)
            im.set_extent(extent)
            im.set_clim(lo, hi)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
        xs, ys, at, label = _scale_bar(view, extent)
        bar.set_data(xs, ys)
        bar_label.set_position(at)
        bar_label.set_text(label)
        suptitle.set_text(f"view {view.name}  ROI {view.roi}")
        fig.subplots_adjust(**start)  # tight_layout from the same state for every view
        fig.tight_layout()
        path = directory / f"view_{view.name}.png"
        save_png(fig, path)
        written.append(path)
    plt.close(fig)
    return written


def write_renders(out_dir: Path, images: list[ViewImage], read_noise_e: float, volume: Volume,
                  losses: list[float]) -> list[Path]:
    """A fit's ``renders/``: every view (:func:`write_view_mosaic`), the projections, the loss curve (PNG).

    Returns the paths, in :data:`REPORT_PICTURES`' order.
    """
    plt = pyplot()
    renders = out_dir / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    written = [write_view_mosaic(renders / "views.png", images, read_noise_e),
               write_mip(volume, renders / "mip.png")]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (deviance per pixel)")
    ax.set_yscale("log")
    ax.set_title("loss")
    fig.tight_layout()
    path = renders / "loss.png"
    save_png(fig, path)
    plt.close(fig)
    written.append(path)
    return written


def write_mip(volume: Volume, path: Path) -> Path:
    """Maximum-intensity projections along z, y and x, labelled in mm (PNG); returns ``path``."""
    plt = pyplot()
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
    save_png(fig, path)
    plt.close(fig)
    return path


def write_turntable(frames, unit: str, directory: Path, axis: str = "z", mode: str = "mip"
                    ) -> tuple[list[Path], Path]:
    """The frames of :func:`recon.analysis.turntable.turntable` as PNGs and one looping GIF.

    One colour scale for every frame (the largest value of all), axes in mm, the angle and the
    ``mode`` in each title (``unit``: the volume's; an emission frame's is it times mm). Returns
    the PNG paths and the GIF's.
    """
    from PIL import Image

    plt = pyplot()

    directory.mkdir(parents=True, exist_ok=True)
    top = max(float(f.image.max()) for f in frames) or 1.0
    fig, ax = plt.subplots(figsize=(5, 5))
    im = ax.imshow(frames[0].image, cmap="magma", vmin=0, vmax=top, extent=frames[0].extent_mm)
    fig.colorbar(im, ax=ax, fraction=0.046, label=unit if mode == "mip" else f"{unit} × mm (column density)")
    ax.set_xlabel("across the view (mm)")
    ax.set_ylabel(f"{axis} (mm)")
    title = ax.set_title("")
    pngs, pictures = [], []
    for k, frame in enumerate(frames):
        im.set_data(frame.image)
        what = "maximum intensity" if mode == "mip" else "emission"
        title.set_text(f"{what}, {frame.angle_deg:.0f}° about {axis}")
        path = directory / f"frame_{k:03d}.png"
        save_png(fig, path)
        pngs.append(path)
        with Image.open(path) as picture:
            pictures.append(picture.convert("P", palette=Image.Palette.ADAPTIVE))
    plt.close(fig)
    gif = directory.parent / "turntable.gif"
    with atomic_path(gif) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=120, loop=0)
    return pngs, gif
