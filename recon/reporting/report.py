"""``report.html``: one self-contained page with a fit's numbers and pictures."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from pathlib import Path

from optics.atomic import atomic_write_text
from recon.analysis.moments import WINDOW_WIDTHS
from recon.analysis.resolution import COMPARISONS
from recon.fitting.config import FitConfig
from recon.fitting.outdir import read_config_json
from recon.reporting.renders import REPORT_PICTURES
from recon.reporting.summary import (
    UNDEFINED_NOTE,
    format_um,
    fringes_text,
    sensitivity_text,
    shot_noise_text,
    total_label,
    truth_text,
    uncertainty_text,
)

__all__ = ["INLINE_PNG_BYTES", "figure_html", "fsc_sections", "refresh_report", "settings_rows",
           "summary_rows", "write_report"]


#: A PNG larger than this is inlined as a JPEG (noisy camera images compress poorly as PNG).
INLINE_PNG_BYTES = 300_000


def figure_html(png: Path, caption: str) -> str:
    """A PNG inlined (base64) in an HTML figure, so the page is self-contained.

    One larger than :data:`INLINE_PNG_BYTES` goes in as a JPEG of quality 85 (the file on disk
    stays as it is), so that the page stays small enough to send.
    """
    data, kind = png.read_bytes(), "png"
    if len(data) > INLINE_PNG_BYTES:
        from PIL import Image

        buffer = io.BytesIO()
        try:
            with Image.open(io.BytesIO(data)) as picture:
                picture.convert("RGB").save(buffer, format="JPEG", quality=85)
            data, kind = buffer.getvalue(), "jpeg"
        except (OSError, ValueError, Image.DecompressionBombError):  # not a picture PIL reads: as it is
            pass
    return (f"<figure><img src='data:image/{kind};base64,{base64.b64encode(data).decode()}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _um(values) -> str:
    """Values in mm as µm, one decimal, with a true minus sign (as the report's other rows write them)."""
    return ", ".join(f"{1000 * v:.1f}".replace("-", "−") for v in values) + " µm"


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(label, value) of the report's summary table, as a reader wants them: units, few digits."""
    rows: list[tuple[str, str]] = []
    formats = (
        ("atoms", total_label(metrics), lambda v: f"{v:.4g}"),
        ("centroid_mm", "centroid x, y, z", _um),
        ("width_mm", "width σ x, y, z", _um),
        ("against_truth", "against the truth (fit − truth)", truth_text),
        ("camera_sensitivity", "camera sensitivity (fitted, relative)", sensitivity_text),
        ("shot_noise_limit", "shot-noise limit of a Gaussian cloud (Cramér–Rao, 1 σ)", shot_noise_text),
        ("fringes", "fringes (recon.analysis.fringes)", fringes_text),
        ("uncertainty", "noise of the figures (refitted halves of the photons)", uncertainty_text),
        ("atoms_near_faces", "atoms next to the box's faces", lambda v: f"{v:.2%}"),
        ("atoms_outside_window", f"atoms outside the moments' window (±{WINDOW_WIDTHS:g} σ)",
         lambda v: f"{v:.2%}"),
        ("final_loss", "final loss (deviance per pixel)", lambda v: f"{v:.4g}"),
        ("solver", "solver", str),
        ("steps", "steps", str),
        ("converged", "converged", lambda v: "yes (held-out deviance stopped falling)" if v else "NO"),
        ("time_s", "fit time", lambda v: f"{v:.1f} s"),
        ("outputs_s", "outputs time", lambda v: f"{v:.1f} s"),
        ("rays_per_s", "rays per second", lambda v: f"{v:,.0f}"),
        ("peak_memory_mb", "peak memory", lambda v: f"{v / 1024:.2f} GB" if v >= 1024 else f"{v:.0f} MB"),
        ("backend", "backend", str),
        ("device", "device", str),
        ("density_unit", "density unit", str),
        ("finished_utc", "finished (UTC)", str),
        ("versions", "versions", lambda v: ", ".join(f"{k} {x}" for k, x in v.items() if x is not None)),
    )
    for key, label, fmt in formats:
        if key in metrics and metrics[key] is not None:
            try:
                rows.append((label, fmt(metrics[key])))
            except (TypeError, ValueError, AttributeError):  # an unexpected type: shown as it is
                rows.append((label, str(metrics[key])))
    return rows


def settings_rows(out_dir: Path) -> list[tuple[str, str]]:
    """(key, value) of the fit settings in ``out_dir/config.json`` that differ from the defaults.

    config.json may come from anyone: it is read as JSON, and only keys of
    :class:`~recon.fitting.config.FitConfig` are shown, their values as text.
    """
    saved = read_config_json(out_dir).get("fit")
    if not isinstance(saved, dict):
        return []
    defaults = dataclasses.asdict(FitConfig())
    return [(key, json.dumps(saved[key], ensure_ascii=False)) for key in defaults
            if key in saved and saved[key] != defaults[key]]


def write_report(out_dir: Path, metrics: dict, images: list[Path], extra_sections: list[str] = ()) -> None:
    """One self-contained HTML page: the numbers and the pictures (inlined as base64).

    The resolution sections come from the FSC comparisons found in ``out_dir``
    (:func:`recon.reporting.report.fsc_sections`), so rewriting the report after ``recon fsc OUT/``
    adds them.
    """
    extra_sections = [*extra_sections, *fsc_sections(out_dir)]
    rows = [f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>"
            for label, text in summary_rows(metrics)]
    def number(value, spec: str) -> str:  # metrics.json holds null for NaN (a view without usable pixels)
        return "—" if value is None else format(value, spec)

    view_rows = "".join(
        f"<tr><td>{html.escape(v['view'])}</td><td>{v['pixels']}</td>"
        f"<td>{number(v['measured_e'], '.4g')}</td>"
        f"<td>{number(v['predicted_e'], '.4g')}</td><td>{number(v['residual_mean'], '.3f')}</td>"
        f"<td>{number(v['residual_rms'], '.3f')}</td><td>{v.get('cloud_pixels', '—')}</td>"
        f"<td>{number(v.get('cloud_residual_mean'), '.3f')}</td>"
        f"<td>{number(v.get('cloud_residual_rms'), '.3f')}</td></tr>"
        for v in metrics.get("views", [])
    )
    pics = "".join(figure_html(p, p.name) for p in images if p.exists())
    changed = settings_rows(out_dir)
    command = read_config_json(out_dir).get("command")
    ran = f"<p>Command: <code>{html.escape(command)}</code></p>" if isinstance(command, str) else ""
    which = ("Those that differ from the defaults (all are in config.json):" if changed
             else "The defaults (all are in config.json).")
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in changed)
    settings = f"<h2>Settings</h2>{ran}<p>{which}</p>" + (f"<table>{table}</table>" if changed else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>recon fit report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>recon fit: {html.escape(str(metrics.get("run", "")))}</h1>
<h2>Summary</h2><table>{"".join(rows)}</table>
<h2>Views</h2><p>Residuals are (measured − predicted)/√(predicted + σ²_read) per pixel: mean ≈ 0 and
RMS ≈ 1 when the model explains the data down to the noise; over every pixel, and over the cloud's
(predicted light above 3 σ_read per frame), where a misfit shows.</p>
<table><tr><th>view</th><th>pixels</th><th>measured e⁻</th><th>predicted e⁻</th><th>residual mean</th>
<th>residual RMS</th><th>cloud pixels</th><th>cloud residual mean</th><th>cloud residual RMS</th></tr>
{view_rows}</table>
{settings}
{"".join(extra_sections)}
<h2>Pictures</h2>{pics}
</body></html>
"""
    atomic_write_text(out_dir / "report.html", page)


def fsc_sections(out_dir: Path) -> list[str]:
    """HTML sections of ``report.html`` for the comparisons found in ``out_dir``."""
    sections = []
    for sub, (title, _) in COMPARISONS.items():
        json_path, png_path = out_dir / sub / "fsc.json", out_dir / sub / "fsc.png"
        if not json_path.is_file():
            continue
        report = json.loads(json_path.read_text())
        rows = [("threshold", report["threshold"]),
                ("resolution (last shell above)", format_um(report["resolution_um"])),
                ("resolution (interpolated)", format_um(report["resolution_interpolated_um"])),
                ("Nyquist", format_um(report["nyquist_um"]))]
        for name, crossing in report["resolutions"].items():
            rows.append((f"at {name}", format_um(crossing["resolution_um"])))
        d = report.get("directional")
        if d:
            rows += [(f"along x / y / z (cones ±{d['cone_half_angle_deg']:g}°)",
                      " / ".join(format_um(d[f"resolution_{a}_um"]) for a in "xyz")),
                     ("best / worst direction", f"{format_um(d['best_resolution_um'])} / "
                                                f"{format_um(d['worst_resolution_um'])}"),
                     ("sphericity", f"{d['sphericity']:.3f}")]
        table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        undefined = any("—" in str(v) for _, v in rows)
        note = f"<p>{html.escape(UNDEFINED_NOTE)}</p>" if undefined else ""
        img = figure_html(png_path, f"{sub}/fsc.png") if png_path.is_file() else ""
        sections.append(f"<h2>Resolution {html.escape(title)} (FSC)</h2><table>{table}</table>{note}{img}")
    return sections


def refresh_report(out_dir: Path) -> None:
    """Rewrite a fit's report.html so that it holds the FSC sections now in ``out_dir``."""
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        images = [out_dir / "renders" / name for name in REPORT_PICTURES]
        write_report(out_dir, json.loads(metrics_path.read_text()), images)
