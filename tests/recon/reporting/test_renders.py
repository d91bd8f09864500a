"""renders/: every view in one picture, the maximum-intensity projections and the loss curve, written
atomically; a full-size picture per view on request."""

import dataclasses
import struct

import matplotlib.image
import numpy as np
import pytest
import torch

from recon.fitting.data import FitData, ViewData
from recon.fitting.prediction import view_images
from recon.fitting.raypool import RayPool
from recon.io.volume import Volume
from recon.model.render import RayBatch
from recon.reporting.renders import (
    MOSAIC_PANEL_PX,
    colour_top,
    mosaic_layout,
    scale_bar_mm,
    write_renders,
    write_view_figures,
    write_view_mosaic,
)
from tests.conftest import slow
from tests.optics.helpers import make_system

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _view(name, roi, frames, rng):
    _, _, w, h = roi
    electrons = torch.from_numpy(rng.poisson(20.0, (frames, h, w)).astype(np.float32))
    return ViewData(name, 0, roi, electrons, torch.ones(frames, h, w, dtype=torch.bool))


@pytest.fixture(scope="module")
def fit():
    """A two-view fit's data, pool (no rays: only the measured sums), prediction, volume and losses."""
    rng = np.random.default_rng(0)
    views = (_view("direct", (10, 20, 7, 5), 2, rng), _view("m1", (100, 40, 4, 6), 2, rng))
    data = FitData(make_system(), views, photons_per_atom=200.0)
    summed = torch.cat([(v.electrons * v.mask).sum(0).reshape(-1) for v in views])
    n_frames = torch.cat([v.mask.sum(0).reshape(-1) for v in views])
    n = summed.shape[0]
    empty = torch.zeros(0)
    rays = RayBatch(torch.zeros(0, 3), torch.zeros(0, 3), empty, empty, empty,
                    torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    pool = RayPool(rays, torch.zeros(n + 1, dtype=torch.long), summed, n_frames,
                   torch.cat([torch.full((7 * 5,), 0), torch.full((4 * 6,), 1)]), 2.0, 1)
    predicted = torch.full((n,), 20.0)
    z, y, x = np.meshgrid(np.arange(6), np.arange(5), np.arange(4), indexing="ij")
    volume = Volume(np.exp(-((x - 2.0) ** 2 + (y - 2.0) ** 2 + (z - 3.0) ** 2)).astype(np.float32),
                    (-0.2, -0.3, -0.4), (0.1, 0.15, 0.2), unit="atoms/mm^3")
    losses = [10.0 / (1 + k) for k in range(30)]
    return view_images(data, pool, predicted), pool.read_noise_e, volume, losses


@pytest.fixture(scope="module")
def written(tmp_path_factory, fit):
    out = tmp_path_factory.mktemp("renders") / "deep" / "fit"  # parents are made
    return out, write_renders(out, *fit)


def test_every_view_in_one_picture_then_mip_and_loss(written):
    out, paths = written
    renders = out / "renders"
    assert paths == [renders / "views.png", renders / "mip.png", renders / "loss.png"]


def test_pictures_are_complete_pngs_of_the_figure_sizes(written, fit):
    _, paths = written
    # figsize × dpi 100: the MIP 12 × 4 in, the loss curve 6 × 4 in; the views as their layout says
    assert [_png_size(p) for p in paths][1:] == [(1200, 400), (600, 400)]
    layout = mosaic_layout(fit[0])
    assert _png_size(paths[0]) == (layout.width, layout.height) == (
        55 + 3 * 190 + 2 * 6 + 5, 30 + round(190 * 5 / 7) + 12 + round(190 * 6 / 4) + 5)
    assert all(p.read_bytes()[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82" for p in paths)


def test_view_images_cut_the_pool_into_each_views_rows(fit):
    images, read_noise, _, _ = fit
    assert [(v.name, v.roi, v.measured.shape) for v in images] == [("direct", (10, 20, 7, 5), (5, 7)),
                                                                    ("m1", (100, 40, 4, 6), (6, 4))]
    assert all(v.predicted.dtype == np.float32 and (v.frames == 2).all() for v in images)
    assert read_noise == 2.0


def test_no_temporary_files_are_left(written):
    out, paths = written
    assert sorted((out / "renders").iterdir()) == sorted(paths)
    assert sorted(out.iterdir()) == [out / "renders"]


def test_the_residual_is_in_sigma_of_the_mean_of_the_frames(fit):
    view = dataclasses.replace(fit[0][1], measured=np.full((6, 4), 12.0, np.float32),
                               predicted=np.full((6, 4), 10.0, np.float32),
                               frames=np.array([[4] * 4] * 5 + [[0] * 4], np.int32))
    z = view.residual(2.0)  # σ² = (10 + 2²) / 4
    assert np.allclose(z[:5], 2.0 / np.sqrt(14.0 / 4.0)) and np.isnan(z[5]).all()


@slow
def test_rewriting_replaces_the_pictures(tmp_path, fit):
    images, read_noise, volume, losses = fit
    first = write_renders(tmp_path, images, read_noise, volume, losses)
    before = first[0].read_bytes()
    brighter = [dataclasses.replace(v, predicted=3.0 * v.predicted) for v in images]
    second = write_renders(tmp_path, brighter, read_noise, volume, losses)
    assert second == first and first[0].read_bytes() != before
    assert sorted((tmp_path / "renders").iterdir()) == sorted(second)


def test_a_views_picture_does_not_depend_on_the_views_drawn_before_it(tmp_path, fit):
    """The views share one figure: each picture is still that of its view alone."""
    images, read_noise, _, _ = fit
    both = write_view_figures(tmp_path / "both", images, read_noise)
    alone = write_view_figures(tmp_path / "alone", images[1:], read_noise)
    assert [p.name for p in both] == ["view_direct.png", "view_m1.png"]
    second, first = matplotlib.image.imread(both[1]), matplotlib.image.imread(both[0])
    assert _png_size(both[0]) == (1200, 400)
    assert np.array_equal(second, matplotlib.image.imread(alone[0]))
    assert not np.array_equal(second, first)


def _drawn_panels(monkeypatch):
    """Patch the PNG writer to keep, per picture, each axes' box in pixels (origin top-left) as drawn."""
    import recon.reporting.renders as renders

    boxes, write = {}, renders.save_png

    def keep(fig, path):
        write(fig, path)
        height = fig.bbox.height
        boxes[path.name] = [(round(b.x0), round(height - b.y1), round(b.x1), round(height - b.y0))
                            for b in (ax.get_window_extent() for ax in fig.axes)]

    monkeypatch.setattr(renders, "save_png", keep)
    return boxes


def _crop(path, box):
    x0, y0, x1, y1 = box
    return matplotlib.image.imread(path)[y0 + 2:y1 - 2, x0 + 2:x1 - 2, :3]  # inside the frame


def _bright_corner(images):
    """The views with 1000 e⁻ in view "direct"'s (7 × 5) row 0, column 0 and nothing else, none predicted."""
    bright = []
    for v in images:
        measured = np.zeros_like(v.measured)
        if v.name == "direct":
            measured[0, 0] = 1000.0
        bright.append(dataclasses.replace(v, measured=measured, predicted=np.zeros_like(v.predicted)))
    return bright


@pytest.mark.parametrize("picture", ["views.png", "view_direct.png"])
def test_a_view_is_drawn_upright_with_the_residual_sign(tmp_path, monkeypatch, fit, picture):
    """One bright pixel at the ROI's first row and column: top left of the measured panel, red residual.

    In the picture of every view (its first row) and in the view's own.
    """
    images, _, volume, losses = fit
    boxes = _drawn_panels(monkeypatch)
    bright = _bright_corner(images)
    if picture == "views.png":
        write_renders(tmp_path, bright, 1.0, volume, losses)
    else:
        write_view_figures(tmp_path / "renders", bright, 1.0)
    path = tmp_path / "renders" / picture
    panels = mosaic_layout(bright).panels[0] if picture == "views.png" else boxes[picture][:3]  # then bars
    measured, _, residual = (_crop(path, b) for b in panels)
    h, w = measured.shape[:2]
    assert abs(w / h - 7 / 5) < 0.05  # the ROI's aspect: 7 columns, 5 rows, not transposed
    corner = measured[: h // 5 - 2, : w // 7 - 2].mean(axis=(0, 1))
    rest = measured[h // 5 + 2:, :].mean()
    assert corner.min() > 0.7 and rest < 0.05  # magma: the maximum light yellow, zero black
    h, w = residual.shape[:2]
    red = residual[: h // 5 - 2, : w // 7 - 2].mean(axis=(0, 1))
    assert red[0] > 0.3 and red[1] < 0.1 and red[2] < 0.2  # RdBu_r: a positive residual is (dark) red
    assert residual[h // 5 + 2:, :].min() > 0.9  # and no residual elsewhere: white


def test_the_mips_show_a_blob_where_it_is(tmp_path, monkeypatch, fit):
    """A blob at the box's high x, low y and high z: right and top of "max along z" (y runs down)."""
    images, read_noise, volume, losses = fit
    boxes = _drawn_panels(monkeypatch)
    grid = np.zeros((6, 5, 4), np.float32)
    grid[5, 0, 3] = 1.0  # (z, y, x)
    blob = Volume(grid, volume.origin_mm, volume.voxel_size_mm, unit=volume.unit)
    write_renders(tmp_path, images, read_noise, blob, losses)
    path = tmp_path / "renders" / "mip.png"
    xy = _crop(path, boxes["mip.png"][0]).mean(axis=2)
    rows, cols = np.nonzero(xy > 0.6)
    assert cols.min() > 0.6 * xy.shape[1] and rows.max() < 0.4 * xy.shape[0]
    xz = _crop(path, boxes["mip.png"][1]).mean(axis=2)
    rows, cols = np.nonzero(xz > 0.6)
    assert cols.min() > 0.6 * xz.shape[1] and rows.min() > 0.6 * xz.shape[0]  # z runs down as well


@pytest.mark.parametrize(("width_mm", "bar_mm"),
                         [(1.0, 0.2), (2.4, 0.5), (10.0, 2.0), (0.05, 0.01), (0.5, 0.1)])
def test_the_scale_bar_is_a_round_length_of_at_most_a_third_of_the_image(width_mm, bar_mm):
    assert scale_bar_mm(width_mm) == bar_mm and bar_mm <= 0.3 * width_mm


def test_a_noise_dominated_view_is_scaled_by_its_light_not_by_its_noise_peaks():
    rng = np.random.default_rng(0)
    predicted = np.full((200, 200), 1.0)  # 1 e⁻ per pixel under 2 e⁻ of read noise
    measured = predicted + rng.normal(0.0, 2.0, predicted.shape)
    raw_top = float(np.percentile(measured, 99.9))  # ≈ 1 + 3σ
    assert raw_top > 6.0 and colour_top(measured, predicted) == 1.0  # the model's scale
    outliers = predicted.copy()
    outliers.flat[:20] = 17.0  # 20 of 40 000 pixels: not the scale
    assert colour_top(measured, outliers) == 1.0
    nothing = np.zeros_like(predicted)  # nothing predicted: the measured light, noise averaged down
    assert 1.0 < colour_top(measured, nothing) < 0.6 * raw_top


def test_a_view_is_drawn_in_sensor_pixels_with_a_scale_bar_in_mm(tmp_path, monkeypatch, fit):
    import recon.reporting.renders as renders

    images, read_noise, _, _ = fit
    figures, write = {}, renders.save_png

    def keep(figure, path):
        write(figure, path)
        ax = figure.axes[0]
        figures[path.name] = (ax.get_xlim(), ax.get_ylim(), ax.get_xlabel(), ax.get_ylabel(),
                              [t.get_text() for t in ax.texts])

    monkeypatch.setattr(renders, "save_png", keep)
    write_view_figures(tmp_path, images, read_noise)
    xlim, ylim, xlabel, ylabel, texts = figures["view_m1.png"]  # ROI (100, 40, 4, 6)
    assert xlim == (99.5, 103.5) and ylim == (45.5, 39.5)  # row 0 of the ROI at the top
    assert (xlabel, ylabel) == ("sensor x (px)", "sensor y (px)")
    camera = make_system().cameras[0]
    width_mm = 4 * float(camera.sensor.pixel_pitch_mm) / abs(float(camera.lens.magnification))
    assert texts == [f"{scale_bar_mm(width_mm):g} mm"]


def test_the_mosaic_layout_gives_each_view_a_row_of_its_aspect(fit):
    images = fit[0]
    wide = dataclasses.replace(images[0], roi=(0, 0, 40, 10))  # 4:1
    layout = mosaic_layout([*images, wide])
    rows = layout.panels
    assert len(rows) == 3 and all(len(row) == 3 for row in rows)
    for row, view in zip(rows, [*images, wide], strict=True):
        heights = {y1 - y0 for _, y0, _, y1 in row}
        widths = {x1 - x0 for x0, _, x1, _ in row}
        assert widths == {MOSAIC_PANEL_PX} and heights == {round(MOSAIC_PANEL_PX * view.roi[3] / view.roi[2])}
        assert row[0][2] < row[1][0] and row[1][2] < row[2][0]  # side by side, apart
    assert all(a[0][3] < b[0][1] for a, b in zip(rows, rows[1:], strict=False))  # rows one below another
    assert max(x1 for row in rows for _, _, x1, _ in row) < layout.width
    assert rows[-1][0][3] < layout.height


def test_the_mosaic_colours_each_panel_as_its_scale_says(tmp_path, fit):
    """Measured at the top of its scale: magma's last colour; no residual: RdBu_r's middle; unused: white."""
    import matplotlib

    images, read_noise, _, _ = fit
    view = images[0]
    frames = np.full_like(view.frames, 2)
    frames[:, -1] = 0  # the last column unused
    flat = dataclasses.replace(view, measured=np.full_like(view.measured, 30.0),
                               predicted=np.full_like(view.predicted, 30.0), frames=frames)
    path = write_view_mosaic(tmp_path / "views.png", [flat], read_noise)
    picture = (matplotlib.image.imread(path)[..., :3] * 255).round().astype(int)
    (mx0, my0, mx1, my1), _, (rx0, ry0, rx1, ry1) = mosaic_layout([flat]).panels[0]
    top = np.array(matplotlib.colormaps["magma"](255, bytes=True)[:3])
    middle = np.array(matplotlib.colormaps["RdBu_r"](128, bytes=True)[:3])
    inside = picture[my0 + 40:my1 - 40, mx0 + 40:mx1 - 40].reshape(-1, 3)
    assert np.abs(inside - top).max() <= 1  # every pixel the predicted maximum's colour
    column = (rx1 - rx0) // 7
    residual = picture[ry0 + 40:ry1 - 40, rx0 + 2:rx1 - column - 2].reshape(-1, 3)
    unused = picture[ry0 + 40:ry1 - 40, rx1 - column + 2:rx1 - 2].reshape(-1, 3)
    assert np.abs(residual - middle).max() <= 1 and (unused == 255).all()


def test_the_mosaics_labels_are_drawn_over_the_panels_only_where_they_are(tmp_path, fit):
    """The view's name left of its row, its scale's top in the measured panel; the rest the panels' colour."""
    import matplotlib

    images, read_noise, _, _ = fit
    dark = [dataclasses.replace(v, measured=np.zeros_like(v.measured), predicted=np.zeros_like(v.predicted))
            for v in images]
    path = write_view_mosaic(tmp_path / "views.png", dark, read_noise)
    picture = matplotlib.image.imread(path)[..., :3]
    (x0, y0, x1, y1), _, _ = mosaic_layout(dark).panels[0]
    assert picture[y0 + 2:y0 + 12, x0 + 5:x0 + 60].max() > 0.5  # "0 – … e⁻" in white, top left
    assert picture[y0 + 40:y0 + 100, x0 + 100:x1 - 5].max() < 0.05  # black elsewhere (no light at all)
    assert picture[y0:y1, x0 - 20:x0 - 2].min() < 0.5  # the view's name, dark on white


def test_a_mosaic_of_no_views_is_its_margins(tmp_path):
    path = write_view_mosaic(tmp_path / "views.png", [], 1.0)
    layout = mosaic_layout([])
    assert _png_size(path) == (layout.width, layout.height) and layout.panels == ()
