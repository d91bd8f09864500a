"""The lines a command prints at its end: the fit summary and the resolution line."""

from __future__ import annotations

import math

from recon.analysis.fringes import fringe_errors

__all__ = ["UNDEFINED_NOTE", "convergence_line", "format_um", "fringes_text", "sensitivity_text",
           "shot_noise_text", "summary_line", "summary_lines", "total_label", "truth_text",
           "uncertainty_text"]


#: What a "—" in a resolution means (the report and the summary line say it where one shows).
UNDEFINED_NOTE = ("— : the curve is below the threshold from its lowest frequency on, so no resolution is "
                  "defined there: the maps share no structure finer than the box at that threshold (a "
                  "smooth cloud holds little power beyond its size, or the maps differ)")


def summary_lines(metrics: dict) -> list[str]:
    """A few lines for the terminal."""
    c = metrics["centroid_mm"]
    w = metrics["width_mm"]
    fmt = (lambda v: f"{v * 1000:.1f}") if all(math.isfinite(x) for x in c + w) else str
    label = total_label(metrics)
    total = (f"atoms {metrics['atoms']:.4g}" if label == "atoms"
             else f"total {metrics['atoms']:.4g} (relative units)")
    lines = [
        f"{total}, centroid (µm) "
        f"{', '.join(fmt(v) for v in c)}, widths σ (µm) {', '.join(fmt(v) for v in w)}",
        f"{metrics['steps']} steps in {metrics['time_s']:.1f} s, {metrics['rays_per_s']:,.0f} rays/s, "
        f"backend {metrics['backend']} on {metrics['device']}, final loss {metrics['final_loss']:.4f}",
    ]
    if "convergence" in metrics:
        lines.append(convergence_line(metrics))
    if metrics.get("against_truth"):
        lines.append("against the truth: " + truth_text(metrics["against_truth"]))
    if metrics.get("camera_sensitivity"):
        lines.append("camera sensitivity (fitted, relative to the system file): "
                     + sensitivity_text(metrics["camera_sensitivity"]))
    if metrics.get("shot_noise_limit"):
        lines.append("shot-noise limit of a Gaussian cloud (Cramér–Rao, 1 σ): "
                     + shot_noise_text(metrics["shot_noise_limit"]))
    if metrics.get("fringes"):
        lines.append("fringes: " + fringes_text(metrics["fringes"]))
    if metrics.get("uncertainty"):
        lines.append("noise of the figures (refitted halves of the photons): "
                     + uncertainty_text(metrics["uncertainty"]))
    for key, what in (("fsc_truth", "against the truth"), ("split_halves", "between the split halves")):
        if key in metrics:
            f = metrics[key].get("fsc", metrics[key])
            line = (f"resolution {what} (FSC {f['threshold']}): {format_um(f['resolution_um'])}, "
                    f"interpolated {format_um(f['resolution_interpolated_um'])}")
            if f["reached_nyquist"]:
                line += f" (reached Nyquist, {f['nyquist_um']:.4g} µm)"
            if f["resolution_xyz_um"]:
                line += f"; x/y/z {' / '.join(format_um(v) for v in f['resolution_xyz_um'])}"
            lines.append(line)
            if "—" in line:
                lines.append(UNDEFINED_NOTE)
    return lines


def truth_text(against: dict) -> str:
    """metrics.json's ``against_truth`` in one line: the atoms', centroid's and widths' errors."""
    def signed(v, spec, scale=1.0):  # metrics.json holds null for NaN
        return "—" if v is None or v != v else format(scale * v, "+" + spec).replace("-", "−")

    return (f"atoms {signed(against['atoms_error'], '.2f', 100)} %, centroid "
            f"{', '.join(signed(v, '.1f') for v in against['centroid_error_um'])} µm, widths "
            f"{', '.join(signed(v, '.1f', 100) for v in against['width_error'])} %")


def shot_noise_text(limit: dict) -> str:
    """metrics.json's ``shot_noise_limit`` in one line: atoms (%), centroid and widths (µm)."""
    return (f"atoms ±{100 * limit['atoms_relative_sd']:.3g} %, centroid ±"
            f"{', '.join(f'{v:.2g}' for v in limit['centroid_sd_um'])} µm, widths ±"
            f"{', '.join(f'{v:.2g}' for v in limit['width_sd_um'])} µm")


def uncertainty_text(record: dict) -> str:
    """metrics.json's ``uncertainty`` in one line: each figure's noise sd and the 68 % factor."""
    sd = record["sd"]

    def some(keys):
        return ", ".join("—" if sd.get(k) is None else f"{sd[k]:.2g}" for k in keys)

    atoms = sd.get("atoms")
    parts = [f"atoms ±{atoms:.3g}" if atoms is not None else "atoms —",
             f"centroid ±{some([f'centroid_{a}_um' for a in 'xyz'])} µm",
             f"widths ±{some([f'width_{a}_um' for a in 'xyz'])} µm"]
    if sd.get("phase_at_origin_rad") is not None:
        parts.append(f"fringe phase ±{sd['phase_at_origin_rad']:.2g} rad, period "
                     f"±{some(['period_um'])} µm, contrast ±{some(['contrast'])}")
    cameras = [(k.removeprefix("camera_"), v) for k, v in sd.items() if k.startswith("camera_")]
    if cameras:
        parts.append("camera factors ±" + ", ".join(f"{name} {'—' if v is None else format(v, '.2g')}"
                                                      for name, v in cameras))
    return (", ".join(parts) + f" (1 sd from {record['splits']} thinning split(s); a 68 % interval is "
            f"±{record['interval_factor']:.2f} sd)")


def sensitivity_text(entries: list) -> str:
    """metrics.json's camera factors as 'cam0 1 (reference), cam1 0.512 ± 0.004' (per half for halves)."""
    if entries and isinstance(entries[0], list):
        return " | ".join(f"half {i}: {sensitivity_text(e)}" for i, e in enumerate(entries, 1))
    return ", ".join(f"{e['camera']} 1 (reference)" if e["reference"] else
                     f"{e['camera']} {e['factor']:.3f} ± {e['sd']:.3f}" for e in entries)


def total_label(metrics: dict) -> str:
    """What the total of a fit's density is: "atoms" for atoms/mm³, else relative units."""
    return "atoms" if metrics.get("density_unit", "atoms/mm^3") == "atoms/mm^3" else "total (relative units)"


def convergence_line(metrics: dict) -> str:
    """Whether the fit converged: where the held-out deviance was best, or why it stopped before."""
    parts = []
    for c in metrics["convergence"]:
        if c["converged"]:
            parts.append(f"converged: held-out deviance {c['heldout_deviance']:.5f} best at step "
                         f"{c['best_step']}, no better in the checks after it")
        elif c["stopped_by"] in ("steps", "passes"):
            limit = "--steps" if c["stopped_by"] == "steps" else "max_passes"
            best = (f"; held-out deviance best at step {c['best_step']}" if c["heldout_deviance"] is not None
                    else "; no pixels held out (holdout = 0)")
            parts.append(f"NOT converged: stopped at the step limit ({c['max_steps']}, {limit}){best}")
        else:
            parts.append(f"NOT converged: stopped by {c['stopped_by']}")
    if len(parts) == 1:
        return parts[0]
    return " | ".join(f"half {i}: {p}" for i, p in enumerate(parts, 1))


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


def fringes_text(record: dict) -> str:
    """A fringe fit's record (fringes.json, metrics.json's ``fringes``) in one line, the truth beside it.

    The sds are the fit's formal ones (:mod:`recon.analysis.fringes`), and the line says so.
    """
    if not record.get("detected"):
        return "none detected (" + str(record.get("why_not") or record.get("error") or "no fit") + ")"
    sd = record["sd"]
    text = (f"period {1e3 * record['period_mm']:.2f} ± {1e3 * sd['period_mm']:.2f} µm, direction "
            f"({', '.join(f'{v:.4f}' for v in record['direction'])}), contrast {record['contrast']:.3f} ± "
            f"{sd['contrast']:.3f}, phase at the origin {record['phase_at_origin_rad']:+.4f} ± "
            f"{sd['phase_at_origin_rad']:.4f} rad (formal sds: too small for a reconstruction)")
    limit = record.get("shot_noise_limit")
    phase = limit.get("phase_at_origin_rad") if isinstance(limit, dict) else None
    if isinstance(phase, float) and math.isfinite(phase):
        text += f"; the phase's shot-noise limit {phase:.4f} rad (Cramér–Rao)"
    truth = record.get("truth")
    if truth:
        errors = fringe_errors(record, truth)
        text += (f"; against the truth: period {100 * errors['period']:+.2f} %, direction "
                 f"{errors['direction_deg']:.2f}° off, phase {errors['phase_rad']:+.4f} rad")
    return text
