"""report.html: self-contained, holding the numbers, the views, the pictures and the FSC sections."""

import base64
import html
import io
import json
import math
import re

import numpy as np

from optics.atomic import atomic_write_json
from recon.reporting.report import INLINE_PNG_BYTES, figure_html, fsc_sections, refresh_report, write_report

# The smallest valid PNG: one transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


def _metrics(**changes):
    metrics = {
        "run": "run042",
        "atoms": 987654.0,
        "centroid_mm": [0.01, -0.02, 0.03],
        "width_mm": [0.5, 0.5, 0.5],
        "final_loss": 1.0123,
        "steps": 200,
        "time_s": 3.5,
        "rays_per_s": 1.5e6,
        "peak_memory_mb": 812.5,
        "backend": "torch",
        "device": "cpu",
        "density_unit": "atoms/mm^3",
        "versions": {"torch": "9.9"},
        "views": [
            {"view": "direct", "pixels": 729, "measured_e": 123456.789, "predicted_e": 120000.0,
             "residual_mean": 0.01234, "residual_rms": 1.0456, "cloud_pixels": 97,
             "cloud_residual_mean": 0.0876, "cloud_residual_rms": 1.3141},
            {"view": "m1", "pixels": 100, "measured_e": 5.0, "predicted_e": 4.5,
             "residual_mean": -0.5, "residual_rms": 2.0},
        ],
    }
    metrics.update(changes)
    return metrics


def _fsc_json(directory, *, threshold, resolution_um, directional=None, png=True):
    directory.mkdir(parents=True, exist_ok=True)
    report = {"threshold": threshold, "resolution_um": resolution_um, "resolution_interpolated_um": 91.234,
              "nyquist_um": 40.0, "resolutions": {"0.5": {"resolution_um": 120.0},
                                                  "half-bit": {"resolution_um": None}},
              "directional": directional}
    (directory / "fsc.json").write_text(json.dumps(report))
    if png:
        (directory / "fsc.png").write_bytes(PNG)


def _rows(page):
    """``{th: td}`` of every two-cell row of the page's tables."""
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", page))


def _no_temporaries(directory):
    return not [p for p in directory.rglob(".*") if ".tmp" in p.name]


def test_report_holds_the_summary_rows_in_order_with_units_and_few_digits(tmp_path):
    write_report(tmp_path, _metrics(converged=True, finished_utc="2026-12-06 05:00:00", outputs_s=2.25,
                                    peak_memory_mb=1331.0), [])
    page = (tmp_path / "report.html").read_text()
    rows = _rows(page)
    assert rows == {
        "atoms": "9.877e+05", "centroid x, y, z": "10.0, −20.0, 30.0 µm",
        "width σ x, y, z": "500.0, 500.0, 500.0 µm",
        "final loss (deviance per pixel)": "1.012", "steps": "200",
        "converged": "yes (held-out deviance stopped falling)", "fit time": "3.5 s", "outputs time": "2.2 s",
        "rays per second": "1,500,000", "peak memory": "1.30 GB", "backend": "torch", "device": "cpu",
        "density unit": "atoms/mm^3", "finished (UTC)": "2026-12-06 05:00:00", "versions": "torch 9.9"}
    assert "views" not in rows and "<h1>recon fit: run042</h1>" in page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert _no_temporaries(tmp_path)


def test_report_of_partial_metrics_has_only_those_rows(tmp_path):
    write_report(tmp_path, {"atoms": 5.0, "steps": 3, "density_unit": "relative", "peak_memory_mb": 512.4,
                            "converged": False, "time_s": "odd"}, [])
    page = (tmp_path / "report.html").read_text()
    assert _rows(page) == {"total (relative units)": "5", "steps": "3", "converged": "NO", "fit time": "odd",
                           "peak memory": "512 MB", "density unit": "relative"}
    assert "<h1>recon fit: </h1>" in page


def test_view_table_formats_every_view(tmp_path):
    write_report(tmp_path, _metrics(), [])
    page = (tmp_path / "report.html").read_text()
    assert ("<tr><td>direct</td><td>729</td><td>1.235e+05</td><td>1.2e+05</td><td>0.012</td>"
            "<td>1.046</td><td>97</td><td>0.088</td><td>1.314</td></tr>") in page
    # a metrics.json written before the cloud's residuals were recorded still renders
    assert ("<tr><td>m1</td><td>100</td><td>5</td><td>4.5</td><td>-0.500</td><td>2.000</td>"
            "<td>—</td><td>—</td><td>—</td></tr>") in page


def test_images_are_inlined_as_base64_and_missing_ones_skipped(tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    mip = renders / "mip.png"
    mip.write_bytes(PNG)
    write_report(tmp_path, _metrics(), [mip, renders / "absent.png"])
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert sources == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    assert "<figcaption>mip.png</figcaption>" in page and "absent.png" not in page
    assert "href=" not in page and "http" not in page  # nothing outside the page


def test_extra_sections_come_before_the_pictures(tmp_path):
    write_report(tmp_path, _metrics(), [], extra_sections=["<h2>Refinement</h2><p>done</p>"])
    page = (tmp_path / "report.html").read_text()
    assert page.index("<h2>Views</h2>") < page.index("<h2>Refinement</h2>") < page.index("<h2>Pictures</h2>")


def test_run_and_view_names_are_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    metrics = _metrics(run=evil, backend="a&b")
    metrics["views"][0]["view"] = "<b>direct</b>"
    write_report(tmp_path, metrics, [])
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<td>&lt;b&gt;direct&lt;/b&gt;</td>" in page and _rows(page)["backend"] == "a&amp;b"


def test_figure_caption_is_escaped_and_the_image_round_trips(tmp_path):
    png = tmp_path / "p.png"
    png.write_bytes(PNG)
    fig = figure_html(png, "a<b & c")
    assert fig.endswith("<figcaption>a&lt;b &amp; c</figcaption></figure>")
    data = re.search(r"base64,([^']*)'", fig).group(1)
    assert base64.b64decode(data) == PNG


def test_fsc_sections_of_truth_and_halves_in_that_order(tmp_path):
    directional = {"cone_half_angle_deg": 20.0, "resolution_x_um": 80.0, "resolution_y_um": None,
                   "resolution_z_um": 150.5, "best_resolution_um": 80.0, "worst_resolution_um": 150.5,
                   "sphericity": 0.53156}
    _fsc_json(tmp_path / "fsc-halves", threshold="0.143", resolution_um=None, directional=directional)
    _fsc_json(tmp_path / "fsc-truth", threshold="0.5", resolution_um=100.0, png=False)
    truth, halves = fsc_sections(tmp_path)
    assert truth.startswith("<h2>Resolution against the truth (FSC)</h2>")
    assert halves.startswith("<h2>Resolution between the split halves (FSC)</h2>")
    rows = _rows(truth)
    assert rows == {"threshold": "0.5", "resolution (last shell above)": "100 µm",
                    "resolution (interpolated)": "91.23 µm", "Nyquist": "40 µm", "at 0.5": "120 µm",
                    "at half-bit": "—"}
    assert "<img" not in truth
    rows = _rows(halves)
    assert rows["resolution (last shell above)"] == "—"
    assert rows["along x / y / z (cones ±20°)"] == "80 µm / — / 150.5 µm"
    assert rows["best / worst direction"] == "80 µm / 150.5 µm" and rows["sphericity"] == "0.532"
    assert "<figcaption>fsc-halves/fsc.png</figcaption>" in halves
    from recon.reporting.summary import UNDEFINED_NOTE  # every "—" is explained below its table

    assert halves.count("<p>— : the curve is below the threshold") == 1 and truth.count("<p>— :") == 1
    assert html.escape(UNDEFINED_NOTE) in halves


def test_fsc_sections_need_the_json(tmp_path):
    (tmp_path / "fsc-truth").mkdir()
    (tmp_path / "fsc-truth" / "fsc.png").write_bytes(PNG)  # a picture without its numbers
    (tmp_path / "fsc-other").mkdir()
    assert fsc_sections(tmp_path) == []
    assert fsc_sections(tmp_path / "missing") == []


def test_write_report_picks_up_the_fsc_sections(tmp_path):
    _fsc_json(tmp_path / "fsc-truth", threshold="0.5", resolution_um=100.0)
    write_report(tmp_path, _metrics(), [])
    page = (tmp_path / "report.html").read_text()
    assert page.index("<h2>Views</h2>") < page.index("Resolution against the truth") < page.index("Pictures")


def test_refresh_report_rewrites_from_metrics_json(tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    for name in ("view_direct.png", "loss.png", "mip.png", "views.png"):  # a view's own picture is not shown
        (renders / name).write_bytes(PNG)
    atomic_write_json(tmp_path / "metrics.json", _metrics())
    (tmp_path / "report.html").write_text("stale")
    refresh_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert re.findall(r"<figcaption>(.*?)</figcaption>", page) == ["views.png", "mip.png", "loss.png"]
    assert _rows(page)["steps"] == "200" and "Resolution" not in page
    _fsc_json(tmp_path / "fsc-halves", threshold="0.143", resolution_um=60.0)
    refresh_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "Resolution between the split halves" in page
    assert "<figcaption>fsc-halves/fsc.png</figcaption>" in page
    assert _no_temporaries(tmp_path)


def test_refresh_report_without_metrics_writes_nothing(tmp_path):
    refresh_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_refresh_report_survives_null_residuals_in_metrics_json(tmp_path):
    metrics = _metrics()
    metrics["views"][1].update(pixels=0, measured_e=0.0, predicted_e=0.0, residual_mean=math.nan,
                               residual_rms=math.nan)
    atomic_write_json(tmp_path / "metrics.json", metrics)  # NaN becomes null
    refresh_report(tmp_path)
    assert "<td>m1</td>" in (tmp_path / "report.html").read_text()


def test_the_report_lists_the_settings_that_differ_from_the_defaults(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"command": "recon fit --views 'run <1>'", "fit": {
        "field": "hashgrid", "steps": 1500, "lr": 0.005, "field_options": {"hidden_width": 32},
        "unknown_key": "<script>"}}))
    write_report(tmp_path, _metrics(), [])
    page = (tmp_path / "report.html").read_text()
    settings = page.split("<h2>Settings</h2>")[1].split("<h2>")[0]
    assert "differ from the defaults" in settings
    quoted = html.escape  # values are JSON, escaped in the page
    assert _rows(settings) == {"field": quoted('"hashgrid"'), "lr": "0.005",
                               "field_options": quoted('{"hidden_width": 32}')}
    assert "<script>" not in page and "unknown_key" not in page
    command = quoted("recon fit --views 'run <1>'")
    assert f"<p>Command: <code>{command}</code></p>" in settings
    for content in ("{broken", json.dumps(["x"]), json.dumps({"fit": 3})):  # untrusted: shown as nothing
        (tmp_path / "config.json").write_text(content)
        write_report(tmp_path, _metrics(), [])
        assert "The defaults (all are in config.json)." in (tmp_path / "report.html").read_text()


def test_a_large_picture_is_inlined_as_a_jpeg_and_a_small_one_as_it_is(tmp_path):
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    big = tmp_path / "views.png"
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > INLINE_PNG_BYTES
    html_big = figure_html(big, "views.png")
    data = base64.b64decode(re.search(r"base64,([^']*)'", html_big).group(1))
    assert "data:image/jpeg;base64," in html_big and len(data) < big.stat().st_size / 2
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "JPEG" and picture.size == (400, 400)
    assert big.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the file itself is untouched
    small = tmp_path / "mip.png"
    small.write_bytes(PNG)
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in figure_html(small, "mip.png")
    fake = tmp_path / "fake.png"  # large, but not a picture PIL reads: inlined as it is
    fake.write_bytes(b"x" * (INLINE_PNG_BYTES + 1))
    assert "data:image/png;base64," in figure_html(fake, "fake.png")
