"""Outputs of a calibration: the refined system file, a JSON report and a residual-vector plot."""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from calibration.bundle import CalibrationConfig, CalibrationResult, Observations
from optics.atomic import atomic_path, atomic_write_json
from optics.system import save_system

__all__ = ["output_paths", "plot_residuals", "view_table", "write_calibration_outputs"]


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Where the outputs of ``recon calibrate --out OUT.toml`` go: OUT.toml and two siblings."""
    out = Path(out)
    stem = out.with_suffix("")
    return {
        "system": out,
        "report": Path(f"{stem}.calibration.json"),
        "residuals": Path(f"{stem}.residuals.png"),
    }


def view_table(result: CalibrationResult, obs: Observations) -> list[dict]:
    """One row per view: spots, measured σ (median), RMS before and after, px."""
    rows = []
    for j, name in enumerate(obs.names):
        seen = obs.observed[:, j]
        rows.append(
            {
                "view": name,
                "path": obs.paths[j],
                "spots": int(seen.sum()),
                "centroid_sigma_px": float(obs.sigma[:, j][seen].median()) if bool(seen.any()) else math.nan,
                "rms_before_px": result.before_rms_px[name],
                "rms_after_px": result.after_rms_px[name],
            }
        )
    return rows


def write_calibration_outputs(
    result: CalibrationResult,
    obs: Observations,
    cfg: CalibrationConfig,
    out: str | os.PathLike,
    *,
    images: str,
    nominal_path: str,
    versions: dict | None = None,
) -> dict[str, Path]:
    """Write the refined system (with a provenance header), the JSON report and the residual plot.

    Every file is written atomically.
    """
    paths = output_paths(out)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "known" if cfg.known_positions else "unknown (fitted)"
    header = (
        f"Calibrated by `recon calibrate` on {stamp}\n"
        f"from the target set {images} ({obs.n_positions} point-source positions, {mode} positions)\n"
        f"starting from the nominal system {nominal_path}; fitted: {', '.join(cfg.fit)}\n"
        f"reprojection RMS {result.rms_px:.4f} px over {int(obs.observed.sum())} spots; "
        f"report: {paths['report'].name}"
    )
    system = result.system
    note = f"calibrated ({', '.join(cfg.fit)}) from {obs.n_positions} target positions on {stamp}"
    from dataclasses import replace

    system = replace(system, description=f"{system.description} [{note}]" if system.description else note)
    save_system(system, paths["system"], header=header)
    report = {
        "schema": "recon.calibration_report/1",
        "images": images,
        "nominal_system": nominal_path,
        "calibrated_system": str(paths["system"]),
        "fit": list(cfg.fit),
        "known_positions": cfg.known_positions,
        "prior": dict(cfg.prior.__dict__),
        "aperture_samples": cfg.n_aperture,
        "positions": obs.n_positions,
        "spots": int(obs.observed.sum()),
        "spots_left_out": list(obs.skipped),
        "rms_px": result.rms_px,
        "views": view_table(result, obs),
        "changes": result.model.changes(),
        "standard_errors": result.uncertainty,
        "iterations": result.iterations,
        "time_s": round(result.time_s, 2),
        "versions": versions or {},
    }
    if not cfg.known_positions:
        report["fitted_positions_mm"] = result.positions_mm.tolist()
    atomic_write_json(paths["report"], report)
    plot_residuals(result, obs, paths["residuals"])
    return paths


def plot_residuals(result: CalibrationResult, obs: Observations, path: Path, *, dpi: int = 110) -> None:
    """Small multiples, one panel per view: measured spots and their residual vectors (scaled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(obs.names)
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    res = result.residual_uv.detach().numpy()
    uv = torch.nan_to_num(obs.uv).numpy()
    seen = obs.observed.numpy()
    for j in range(rows * cols):
        ax = axes[j // cols][j % cols]
        if j >= n:
            ax.axis("off")
            continue
        s = seen[:, j]
        pts, vec = uv[s, j], res[s, j]
        rms = result.after_rms_px[obs.names[j]]
        span = float(np.ptp(pts, axis=0).max()) if len(pts) > 1 else 1.0
        big = float(np.abs(vec).max()) if len(vec) else 1.0
        scale = 0.15 * max(span, 1.0) / max(big, 1e-6)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c="k")
        ax.quiver(
            pts[:, 0],
            pts[:, 1],
            vec[:, 0] * scale,
            vec[:, 1] * scale,
            angles="xy",
            scale_units="xy",
            scale=1.0,
            color="tab:red",
            width=0.006,
        )
        ax.set_title(f"{obs.names[j]}: RMS {rms:.3f} px\narrows ×{scale:.3g}", fontsize=8)
        ax.invert_yaxis()
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=6)
    fig.suptitle(f"reprojection residuals (predicted − measured), RMS {result.rms_px:.4f} px", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
