"""The pictures of a fit: every view's measured | predicted | residual, max-intensity projections, loss."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from optics.atomic import atomic_path
from recon.io.viewimages import ViewImage
from recon.io.volume import Volume

__all__ = ["REPORT_PICTURES", "MosaicLayout", "colour_top", "mosaic_layout", "pyplot", "save_png",
           "save_rgb_png", "scale_bar_mm",
           "write_mip", "write_renders", "write_turntable", "write_view_figures", "write_view_mosaic"]


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
_MOSAIC_TITLES = ("measured e⁻", "predicted e⁻", "residual / σ (±4)")
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


#: The picture of every view (:func:`write_view_mosaic`), in pixels: a panel's width, the names'
#: column, the column titles' band, the gaps between panels and between rows, the right and bottom margin.
MOSAIC_PANEL_PX, MOSAIC_LABEL_PX, MOSAIC_TITLE_PX, MOSAIC_GAP_PX, MOSAIC_ROW_GAP_PX, MOSAIC_MARGIN_PX = (
    190, 55, 30, 6, 12, 5)


@dataclasses.dataclass(frozen=True)
class MosaicLayout:
    """Where :func:`write_view_mosaic` puts each view's panels.

    Attributes:
        width, height: the picture's size in pixels.
        panels: per view, its measured, predicted and residual panels as (x0, y0, x1, y1) pixel
            boxes, origin top left, x1 and y1 excluded.
    """

    width: int
    height: int
    panels: tuple[tuple[tuple[int, int, int, int], ...], ...]


def mosaic_layout(images: list[ViewImage]) -> MosaicLayout:
    """A row per view, three panels of :data:`MOSAIC_PANEL_PX` across, each as tall as its view's aspect."""
    rows, y = [], MOSAIC_TITLE_PX
    for view in images:
        _, _, w, h = view.roi
        height = max(1, round(MOSAIC_PANEL_PX * h / w))
        xs = [MOSAIC_LABEL_PX + k * (MOSAIC_PANEL_PX + MOSAIC_GAP_PX) for k in range(3)]
        rows.append(tuple((x, y, x + MOSAIC_PANEL_PX, y + height) for x in xs))
        y += height + MOSAIC_ROW_GAP_PX
    width = MOSAIC_LABEL_PX + 3 * MOSAIC_PANEL_PX + 2 * MOSAIC_GAP_PX + MOSAIC_MARGIN_PX
    return MosaicLayout(width, y - MOSAIC_ROW_GAP_PX + MOSAIC_MARGIN_PX, tuple(rows))


def _coloured(image: np.ndarray, limits: tuple[float, float], lut: np.ndarray, size: tuple[int, int]
              ) -> np.ndarray:
    """``image`` averaged over ``size`` = (width, height) boxes, coloured by ``lut``; NaN (unused) white.

    Each output pixel is the mean of the image's area it covers (PIL's box filter; nearest
    neighbour when enlarging), over its finite pixels only; values are clipped to ``limits`` and
    coloured as matplotlib's ``Normalize`` and a 256-colour map do.
    """
    from PIL import Image

    finite = np.isfinite(image)
    values = np.where(finite, image, 0.0).astype(np.float32)
    box = Image.Resampling.BOX
    total = np.asarray(Image.fromarray(values, mode="F").resize(size, box))
    weight = np.asarray(Image.fromarray(finite.astype(np.float32), mode="F").resize(size, box))
    lo, hi = limits
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (total / weight - lo) / (hi - lo)
    index = np.minimum((np.clip(np.nan_to_num(t), 0.0, 1.0) * len(lut)).astype(np.int64), len(lut) - 1)
    rgb = lut[index]
    rgb[weight <= 0] = 255
    return rgb


def write_view_mosaic(path: Path, images: list[ViewImage], read_noise_e: float) -> Path:
    """Every view in one picture: a row per view, measured | predicted | residual (PNG); returns ``path``.

    Each row keeps its view's aspect and sensor orientation (:func:`mosaic_layout`), with the
    view's name, its colour scale's top (shared by measured and predicted, :func:`colour_top`) and
    a scale bar of the object-space length; residuals are in σ of the expected noise, ±4. The
    panels are coloured into one image and placed pixel for pixel, and only the labels are drawn
    by matplotlib (no grid of axes to lay out and draw); ``recon render OUT/ --views`` draws each
    view with axes and colour bars (:func:`write_view_figures`).
    """
    import matplotlib

    layout = mosaic_layout(images)
    luts = [matplotlib.colormaps[name](np.arange(256), bytes=True)[:, :3] for name in _CMAPS]
    canvas = np.full((layout.height, layout.width, 3), 255, np.uint8)
    labels = []  # (x, y, text, options) in pixels, origin top left
    for (x0, _, x1, _), title in zip(layout.panels[0], _MOSAIC_TITLES, strict=True) if images else ():
        labels.append(((x0 + x1) / 2, MOSAIC_TITLE_PX / 2, title,
                       {"fontsize": 9, "ha": "center", "va": "center"}))
    for view, boxes in zip(images, layout.panels, strict=True):
        panels = _panels(view, read_noise_e)
        for (x0, y0, x1, y1), (image, limits), lut in zip(boxes, panels, luts, strict=True):
            canvas[y0:y1, x0:x1] = _coloured(image, limits, lut, (x1 - x0, y1 - y0))
            canvas[[y0 - 1, y1], x0 - 1:x1 + 1] = canvas[y0 - 1:y1 + 1, [x0 - 1, x1]] = 0  # a frame around it
        x0, y0, x1, y1 = boxes[0]
        width, height = x1 - x0, y1 - y0
        labels.append((x0 - 4, (y0 + y1) / 2, view.name,
                       {"fontsize": 8, "ha": "right", "va": "center", "rotation": 90}))
        labels.append((x0 + 0.03 * width, y0 + 0.03 * height, f"0 – {panels[0][1][1]:.3g} e⁻",
                       {"fontsize": 6, "ha": "left", "va": "top", "color": "white"}))
        left, right, bottom, top = extent = _extent(view)  # the bar in sensor pixels, then in the panel's
        xs, ys, (label_x, label_y), label = _scale_bar(view, extent)
        across, down = width / (right - left), height / (bottom - top)
        bar_x0, bar_x1 = (x0 + round((x - left) * across) for x in xs)
        bar_y = y0 + round((ys[0] - top) * down)
        canvas[max(y0, bar_y - 1):min(y1, bar_y + 1), bar_x0:min(x1, max(bar_x1, bar_x0 + 1))] = 255
        labels.append((x0 + (label_x - left) * across, y0 + (label_y - top) * down - 1, label,
                       {"fontsize": 6, "ha": "left", "va": "bottom", "color": "white"}))
    save_rgb_png(_with_labels(canvas, labels), path)
    return path


def _with_labels(canvas: np.ndarray, labels: list) -> np.ndarray:
    """``canvas`` (height, width, 3) uint8 with matplotlib's text drawn over it at pixel positions.

    ``labels``: (x, y, text, text options) with x, y in pixels from the top left. The text is drawn
    alone on a transparent figure of the canvas's size and laid over it by its alpha: the canvas
    itself never passes through matplotlib's image resampling.
    """
    from matplotlib.transforms import IdentityTransform

    plt = pyplot()
    height, width = canvas.shape[:2]
    fig = plt.figure(figsize=((width + 0.5) / 100, (height + 0.5) / 100), dpi=100)  # Agg truncates
    fig.patch.set_alpha(0.0)
    for x, y, text, options in labels:
        fig.text(x, height - y, text, transform=IdentityTransform(), **options)
    fig.canvas.draw()
    text = np.asarray(fig.canvas.buffer_rgba())[:height, :width]
    plt.close(fig)
    drawn = np.nonzero(text[..., 3])  # the few pixels the text touches
    alpha = text[drawn][:, 3:].astype(np.float32) / 255.0
    out = canvas.copy()
    out[drawn] = np.rint(text[drawn][:, :3] * alpha + canvas[drawn] * (1.0 - alpha)).astype(np.uint8)
    return out


def save_rgb_png(image: np.ndarray, path: Path) -> None:
    """Save a (height, width, 3) uint8 image as PNG at ``path``, atomically, as :func:`save_png` does."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format="png", compress_level=1)


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
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)  # fixed margins
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
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.86, wspace=0.3)  # fixed margins
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
