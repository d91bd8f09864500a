"""The resolution of a fit: FSC against a known truth, or between two independent half maps.

Glue between :mod:`recon.fsc` (the curves) and fit output directories. A comparison is written
into its own sub-directory of the fit output — ``fsc-truth/`` (threshold 0.5, the fit against
the simulation's ``truth.tif``) or ``fsc-halves/`` (threshold 0.143, half map 1 against half
map 2) — as ``fsc.csv``, ``fsc.json`` and ``fsc.png``, and :func:`fsc_sections` turns whatever
comparisons a fit directory holds into the resolution section of ``report.html``.

Grids: the fit's grid is padded to a cube (:func:`recon.fsc.pad_to_cube`); a truth on another
grid is resampled onto it (:func:`recon.fsc.resample_like`, voxel-averaged when coarser), so
the comparison is made at the fit's voxel size. Two half maps must already share a grid.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from recon.errors import ConfigError, DataError
from recon.fsc import compare_volumes, fsc_report, pad_to_cube, resample_like, write_fsc_outputs
from recon.outputs import figure_html, write_report
from recon.volume import Volume, read_volume

__all__ = ["COMPARISONS", "compare_paths", "format_um", "fsc_halves", "fsc_sections", "fsc_truth",
           "refresh_report", "summary_line"]

#: Sub-directory of a fit output → (title, threshold).
COMPARISONS = {
    "fsc-truth": ("against the truth", "0.5"),
    "fsc-halves": ("between the split halves", "0.143"),
}


def fsc_truth(volume: Volume, truth: Volume | str | Path, out_dir: Path, *, mask: str | None = None) -> dict:
    """FSC of a reconstruction against the truth (threshold 0.5), written to ``out_dir/fsc-truth/``.

    Args:
        volume: the reconstruction (any box-shaped grid of cubic voxels).
        truth: the true density, or the path of its TIFF; resampled onto ``volume``'s grid.
        out_dir: the fit output directory (or any directory).
        mask: ``None`` or ``"sphere"`` (see :func:`recon.fsc.compare_volumes`).

    Returns:
        The ``fsc.json`` dict.
    """
    if not isinstance(truth, Volume):
        truth = read_volume(_volume_file(Path(truth)))
    recon_cube = pad_to_cube(volume)
    truth_cube = resample_like(truth, recon_cube)
    result = compare_volumes(recon_cube, truth_cube, threshold="0.5", mask=mask,
                             labels=("reconstruction", "truth"))
    write_fsc_outputs(result, out_dir / "fsc-truth")
    return fsc_report(result)


def fsc_halves(half1: Volume, half2: Volume, out_dir: Path, *, mask: str | None = None) -> dict:
    """FSC of two independent half maps (threshold 0.143), written to ``out_dir/fsc-halves/``.

    Returns:
        The ``fsc.json`` dict.
    """
    result = compare_volumes(pad_to_cube(half1), pad_to_cube(half2), threshold="0.143", mask=mask,
                             labels=("half 1", "half 2"))
    write_fsc_outputs(result, out_dir / "fsc-halves")
    return fsc_report(result)


def format_um(value: float | None) -> str:
    """A resolution in µm for tables and logs ('—' when undefined)."""
    return "—" if value is None else f"{value:.4g} µm"


def summary_line(report: dict) -> str:
    """One line: threshold, resolution (shell and interpolated), and x/y/z from the cones."""
    words = (f"FSC {report['maps']['a']} vs {report['maps']['b']} at {report['threshold']}: "
             f"{format_um(report['resolution_um'])} "
             f"(interpolated {format_um(report['resolution_interpolated_um'])})")
    if report["reached_nyquist"]:
        words += f", reached Nyquist ({report['nyquist_um']:.4g} µm)"
    d = report.get("directional")
    if d:
        words += (f"; along x/y/z {format_um(d['resolution_x_um'])} / {format_um(d['resolution_y_um'])} / "
                  f"{format_um(d['resolution_z_um'])}, sphericity {d['sphericity']:.3f}")
    return words


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
        img = figure_html(png_path, f"{sub}/fsc.png") if png_path.is_file() else ""
        sections.append(f"<h2>Resolution {html.escape(title)} (FSC)</h2><table>{table}</table>{img}")
    return sections


def _volume_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"fsc: {path} does not exist; pass a volume TIFF (density.tif, truth.tif) "
                        "or a fit directory")
    return path


def compare_paths(
    first: Path,
    second: Path | None = None,
    *,
    truth: Path | None = None,
    threshold: str | None = None,
    mask: str | None = None,
    out: Path | None = None,
) -> tuple[dict, Path]:
    """What ``recon fsc`` compares, by its arguments, written where it belongs.

    * ``first`` a fit directory and ``truth``: the fit's density.tif against the truth (0.5),
      into ``first/fsc-truth/``; without ``truth``: its half1.tif against half2.tif (0.143),
      into ``first/fsc-halves/``. The fit's report.html is rewritten with the section.
    * ``first`` a TIFF and ``truth``: against the truth (0.5), into ``out/fsc-truth/``.
    * two TIFFs: ``threshold`` (default 0.143), same grid required, into ``out`` (default
      ``./fsc``).

    Returns:
        The ``fsc.json`` dict, and the directory written.
    """
    if first.is_dir():
        if second is not None:
            raise ConfigError(f"fsc: {first} is a fit directory; compare it with --truth, or pass two TIFFs")
        if threshold is not None:
            raise ConfigError("fsc: a fit directory uses 0.5 against --truth and 0.143 between its halves; "
                              "pass two TIFF files to choose --threshold")
        target = out or first
        if truth is not None:
            report = fsc_truth(read_volume(_volume_file(first / "density.tif")), truth, target, mask=mask)
            sub = "fsc-truth"
        elif (first / "half1.tif").is_file() and (first / "half2.tif").is_file():
            report = fsc_halves(read_volume(first / "half1.tif"), read_volume(first / "half2.tif"), target,
                                mask=mask)
            sub = "fsc-halves"
        else:
            raise ConfigError(f"fsc: {first} holds no half maps (half1.tif, half2.tif); pass --truth "
                              "RUN/truth.tif, or fit with --split-halves")
        if target == first:
            refresh_report(first)
        return report, target / sub
    if (second is None) == (truth is None):
        raise ConfigError("fsc: pass two volumes (recon fsc A.tif B.tif), or one with --truth T.tif, "
                          "or a fit directory")
    target = out or Path("fsc")
    a = read_volume(_volume_file(first))
    if truth is not None:
        if threshold not in (None, "0.5"):
            raise ConfigError("fsc: the comparison with --truth uses the 0.5 threshold; "
                              "leave --threshold out")
        return fsc_truth(a, truth, target, mask=mask), target / "fsc-truth"
    result = compare_volumes(a, read_volume(_volume_file(second)), threshold=threshold or "0.143", mask=mask,
                             labels=(first.name, second.name))
    write_fsc_outputs(result, target)
    return fsc_report(result), target


def refresh_report(out_dir: Path) -> None:
    """Rewrite a fit's report.html so that it holds the FSC sections now in ``out_dir``."""
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        images = sorted((out_dir / "renders").glob("*.png"))
        write_report(out_dir, json.loads(metrics_path.read_text()), images)
