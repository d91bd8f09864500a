"""A campaign's ``report.html``: the shots' time series, the failed shots, and how fast it ran."""

from __future__ import annotations

import html
import math
from pathlib import Path

from optics.atomic import atomic_write_text
from recon.reporting.renders import pyplot, save_png
from recon.reporting.report import figure_html

__all__ = ["error_bars", "write_campaign_report", "write_series_figure"]

_AXES = ("x", "y", "z")


def _values(rows: list[dict], key: str) -> list[float]:
    return [math.nan if row.get(key) is None else float(row[key]) for row in rows]


def error_bars(done: list[dict]) -> tuple[dict[str, list[float]], str]:
    """Each series' error bars over the done shots, and what they are.

    ``"split"``: every done shot was fitted with ``--uncertainty K`` (results.csv's ``*_split_sd*``
    columns): the 68 % interval ``± t_K σ̂`` of its refitted thinning splits
    (:mod:`recon.fitting.uncertainty`), which includes the reconstruction's own noise.
    ``"shot-noise"``: otherwise, the shot-noise limits the fits report (the Cramér–Rao sd of the
    data's Gaussian), a lower bound of the photon noise. Keys: ``atoms``, ``centroid_x`` …,
    ``width_x`` …, ``fringe_phase``.
    """
    split = {"atoms": "atoms_split_sd", "fringe_phase": "fringe_phase_split_sd_rad",
             **{f"{k}_{a}": f"{k}_{a}_split_sd_um" for k in ("centroid", "width") for a in _AXES}}
    if all(row.get("split_interval_factor") is not None and row.get(split["atoms"]) is not None
           for row in done):
        factor = _values(done, "split_interval_factor")
        return {name: [f * v for f, v in zip(factor, _values(done, key), strict=True)]
                for name, key in split.items()}, "split"
    limit = {"atoms": "atoms_sd", "fringe_phase": "fringe_phase_sd_rad",
             **{f"{k}_{a}": f"{k}_{a}_sd_um" for k in ("centroid", "width") for a in _AXES}}
    return {name: _values(done, key) for name, key in limit.items()}, "shot-noise"


_BARS = {"split": "68 % interval of refitted thinning splits", "shot-noise": "shot-noise limit, 1 σ"}


def write_series_figure(path: Path, rows: list[dict]) -> bool:
    """Atoms, centroid, widths and resolution against shot number (PNG); False with no done shot.

    Error bars: :func:`error_bars` (refitted splits where every shot has them, else the shot-noise
    limits); a simulated campaign's truth is drawn as a line of the same colour. Where shots hold
    fringes (``fringes = true``), a fifth panel shows their phase at the origin.
    """
    done = [row for row in rows if row.get("state") == "done" and row.get("atoms") is not None]
    if not done:
        return False
    plt = pyplot()
    index = [rows.index(row) for row in done]
    bars, kind = error_bars(done)
    fringes = any(row.get("fringe_phase_rad") is not None for row in done)
    fig, axes = plt.subplots(5 if fringes else 4, 1, figsize=(9, 12 if fringes else 10), sharex=True)
    ax = axes[0]
    ax.errorbar(index, _values(done, "atoms"), yerr=bars["atoms"], fmt="o", ms=3, label="fit")
    if any(row.get("truth_atoms") is not None for row in done):
        ax.plot(index, _values(done, "truth_atoms"), "-", color="k", lw=1, label="truth")
    ax.set_ylabel("atoms")
    ax.legend(loc="best", fontsize=8)
    for ax, key, label in ((axes[1], "centroid", "centroid (µm)"), (axes[2], "width", "width σ (µm)")):
        for colour, a in zip(("C0", "C1", "C2"), _AXES, strict=True):
            fitted = [1000 * v for v in _values(done, f"{key}_{a}_mm")]
            ax.errorbar(index, fitted, yerr=bars[f"{key}_{a}"], fmt="o", ms=3, color=colour, label=a)
            truth = [1000 * v for v in _values(done, f"truth_{key}_{a}_mm")]
            if not all(math.isnan(v) for v in truth):
                ax.plot(index, truth, "-", color=colour, lw=1)
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8, ncol=3)
    if fringes:
        ax = axes[4]
        ax.errorbar(index, _values(done, "fringe_phase_rad"), yerr=bars["fringe_phase"], fmt="o", ms=3,
                    color="C5")
        ax.set_ylabel("fringe phase at the\norigin (rad)")
    ax = axes[3]
    ax.plot(index, _values(done, "resolution_um"), "o", ms=3, color="C3")
    ax.set_ylabel("FSC 0.5 vs truth (µm)", color="C3")
    axes[-1].set_xlabel("shot")
    twin = ax.twinx()
    twin.plot(index, _values(done, "seconds"), "s", ms=3, color="C4")
    twin.set_ylabel("fit time (s)", color="C4")
    twin.set_ylim(bottom=0)
    fig.suptitle(f"campaign: per-shot figures (error bars: {_BARS[kind]}; lines: truth)", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return True


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def write_campaign_report(path: Path, rows: list[dict], outcome: dict) -> None:
    """Write the self-contained ``report.html`` of a campaign (and ``series.png`` beside it)."""
    path = Path(path)
    picture = path.parent / "series.png"
    pics = (
        figure_html(picture, "per-shot figures")
        if write_series_figure(picture, rows)
        else "<p>No shot is done yet.</p>"
    )
    done = [row for row in rows if row.get("state") == "done" and row.get("atoms") is not None]
    bars_text = ("Error bars are the 68 % intervals of each fit's refitted thinning splits (± t_K σ̂, "
                 "recon fit --uncertainty K): the photon noise of the figure through the whole "
                 "reconstruction, not its bias." if done and error_bars(done)[1] == "split" else
                 "Error bars are each fit's shot-noise limit (the Cramér–Rao sd of the data's 3D Gaussian): "
                 "a lower bound of the photon noise of the figure, not its whole uncertainty; fit the shots "
                 "with uncertainty_splits = K for error bars from the data.")
    failed = [row for row in rows if row.get("state") == "failed"]
    failed_table = (
        "<p>None.</p>"
        if not failed
        else "<table><tr><th>shot</th><th>reason</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(row['shot'])}</td>"
            f"<td style='text-align:left'>{html.escape(row.get('reason') or '')}"
            "</td></tr>"
            for row in failed
        )
        + "</table>"
    )
    summary = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_cell(outcome.get(k))}</td></tr>"
        for k in (
            "shots",
            "done",
            "failed",
            "pending",
            "engine",
            "workers",
            "fitted_now",
            "seconds",
            "shots_per_hour",
        )
    )
    keys = (
        "shot",
        "state",
        "seconds",
        "atoms",
        "atoms_sd",
        "centroid_x_mm",
        "centroid_y_mm",
        "centroid_z_mm",
        "width_x_mm",
        "width_y_mm",
        "width_z_mm",
        "resolution_um",
        "converged",
    ) + (("fringe_period_um", "fringe_phase_rad", "fringe_phase_sd_rad")
         if any(row.get("fringe_phase_rad") is not None for row in rows) else ())
    table = (
        "<table><tr>"
        + "".join(f"<th>{k}</th>" for k in keys)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{_cell(row.get(k))}</td>" for k in keys) + "</tr>" for row in rows)
        + "</table>"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>recon campaign report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>recon campaign: {html.escape(str(outcome.get("out", "")))}</h1>
<h2>Summary</h2><table>{summary}</table>
<h2>Time series</h2><p>{bars_text}</p>{pics}
<h2>Failed shots</h2>{failed_table}
<h2>Every shot</h2><p>All columns are in results.csv; each shot's own report is
shots/&lt;name&gt;/report.html.</p>
{table}
</body></html>
"""
    atomic_write_text(path, page)
