"""The files of an FSC comparison: ``fsc.csv``, ``fsc.json`` and ``fsc.png``."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from optics.atomic import atomic_path, output_error
from recon.analysis.fsc import THRESHOLDS, FSCCurve
from recon.analysis.resolution import FSCResult, fsc_report

__all__ = ["CSV_COLUMNS", "write_fsc_outputs"]


#: Columns of ``fsc.csv``, in order.
CSV_COLUMNS = (
    "shell", "frequency_per_mm", "resolution_um", "fsc", "n_voxels",
    "thr_0.143", "thr_0.5", "thr_half_bit", "thr_one_bit",
)


def _csv_text(curve: FSCCurve) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for i in range(len(curve.shell)):
        writer.writerow([
            int(curve.shell[i]),
            f"{curve.frequency_per_mm[i]:.8g}",
            f"{curve.resolution_um[i]:.8g}",
            f"{curve.fsc[i]:.8g}",
            int(round(curve.n_voxels[i])),
            f"{curve.threshold_0143[i]:.8g}",
            f"{curve.threshold_05[i]:.8g}",
            f"{curve.threshold_half_bit[i]:.8g}",
            f"{curve.threshold_one_bit[i]:.8g}",
        ])
    return buf.getvalue()


def _plot(result: FSCResult, path: Path, dpi: int = 120) -> None:
    # The Agg canvas directly: no pyplot, no change to the global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve = result.curve
    f = curve.frequency_per_mm
    fig = Figure(figsize=(7.0, 4.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if result.directional is not None:
        for i, (axis, colour) in enumerate(zip("xyz", ("tab:red", "tab:green", "tab:purple"),
                                               strict=True)):
            ax.plot(f, result.directional.fsc[i], color=colour, lw=0.8, alpha=0.6,
                    label=f"cone ±{result.directional.cone_half_angle_deg:g}° around {axis}")
    if curve.fsc_masked is not None and curve.fsc_randomized is not None:
        ax.plot(f, curve.fsc_masked, color="0.5", lw=0.8, ls="--", label="masked (uncorrected)")
        ax.plot(f, curve.fsc_randomized, color="0.7", lw=0.8, ls=":", label="phase-randomised")
    ax.plot(f, curve.fsc, color="k", lw=1.6, marker=".", ms=3, label="FSC")
    styles = {"0.143": ("tab:blue", "-"), "0.5": ("tab:orange", "-"),
              "half-bit": ("tab:cyan", "--"), "one-bit": ("tab:olive", "--")}
    for name in THRESHOLDS:
        colour, ls = styles[name]
        ax.plot(f, curve.threshold_curve(name), color=colour, lw=0.9, ls=ls, label=f"{name}")
    c = result.crossing
    fx = c.interpolated_shell / curve.box_mm
    fy = float(np.interp(c.interpolated_shell, curve.shell, curve.threshold_curve(c.threshold)))
    word = "≥ Nyquist" if c.reached_nyquist else ""
    ax.plot([fx], [fy], "o", color="crimson", ms=7, mfc="none", mew=1.8,
            label=f"{c.threshold}: {c.resolution_um:.4g} µm {word} "
                  f"(interp. {c.interpolated_resolution_um:.4g} µm)")
    ax.axvline(fx, color="crimson", lw=0.6, ls=":")
    ax.axhline(0.0, color="0.8", lw=0.6)
    ax.set_xlim(0.0, float(f[-1]))
    ax.set_ylim(min(-0.1, float(np.min(curve.fsc)) - 0.05), 1.05)
    ax.set_xlabel("spatial frequency (1/mm)")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_title(f"FSC {result.labels[0]} vs {result.labels[1]} "
                 f"({'×'.join(map(str, curve.shape))}, "
                 f"{'×'.join(f'{v * 1000:.4g}' for v in dict.fromkeys(curve.voxel_size_mm))} µm voxels, "
                 f"mask {result.mask})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    ticks = [t for t in ax.get_xticks() if 0 < t <= f[-1] * (1 + 1e-9)]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1000.0 / t:.3g}" for t in ticks])
    top.set_xlabel("resolution (µm, full period)")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.11, top=0.83)  # fixed margins, no tight_layout
    fig.savefig(path, format="png", pil_kwargs={"compress_level": 1})


def write_fsc_outputs(result: FSCResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``fsc.csv``, ``fsc.json`` and ``fsc.png`` into ``out_dir``, together or not at all.

    All three are written under temporary names first and renamed into place only once every one
    of them is complete, so a full disk leaves the earlier set (or nothing) as it was.

    ``fsc.csv`` has the columns :data:`CSV_COLUMNS` (``resolution_um`` is ``inf`` at shell 0);
    ``fsc.json`` is :func:`fsc_report`; ``fsc.png`` plots the curve against spatial frequency
    (top axis in µm) with the threshold curves and the crossing.

    Args:
        result: from :func:`compare_volumes`.
        out_dir: output directory (created if missing).

    Returns:
        Paths of the files, keyed ``"csv"``, ``"json"``, ``"png"``.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # its parent is a file, no permission: one line, not a traceback

        raise output_error(out, err) from None
    paths = {"csv": out / "fsc.csv", "json": out / "fsc.json", "png": out / "fsc.png"}
    report = json.dumps(fsc_report(result), indent=2, allow_nan=False) + "\n"
    with atomic_path(paths["csv"]) as csv_tmp, atomic_path(paths["json"]) as json_tmp, \
            atomic_path(paths["png"]) as png_tmp:
        csv_tmp.write_text(_csv_text(result.curve), encoding="utf-8")
        json_tmp.write_text(report, encoding="utf-8")
        _plot(result, png_tmp)
    return paths
