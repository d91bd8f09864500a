"""A campaign's per-shot table: one row per shot from its metrics.json, as CSV (and Parquet).

Columns (:data:`COLUMNS`): the shot, its state and the one-line reason of a failure; when and
where it ran (``finished_utc``, ``seconds``, ``worker``, ``backend``, ``device``); atoms,
centroid (mm) and widths (σ, mm) with their shot-noise limits (the Cramér–Rao sd of the data's
Gaussian, ``*_sd``: a lower bound of the figure's photon-noise sd, not its whole error bar);
the resolution (FSC 0.5 against a simulated run's truth; empty for a real shot); the kept
held-out deviance, the steps, whether it converged and why it stopped; for simulated shots,
the truth's atoms, centroid and widths; and where the fit analysed its fringes (FIT.toml's
``fringes = true``) and found them, their period (µm), contrast, phase at the origin (rad) and
its formal sd.
"""

from __future__ import annotations

import csv
import io
import math

from optics.atomic import atomic_path, atomic_write_text

__all__ = ["AXES", "COLUMNS", "row_from_metrics", "write_csv", "write_parquet"]

AXES = ("x", "y", "z")
COLUMNS = (
    "shot",
    "state",
    "reason",
    "finished_utc",
    "seconds",
    "worker",
    "backend",
    "device",
    "atoms",
    "atoms_sd",
    *(f"centroid_{a}_mm" for a in AXES),
    *(f"centroid_{a}_sd_um" for a in AXES),
    *(f"width_{a}_mm" for a in AXES),
    *(f"width_{a}_sd_um" for a in AXES),
    "resolution_um",
    "heldout_deviance",
    "steps",
    "converged",
    "stopped_by",
    "truth_atoms",
    *(f"truth_centroid_{a}_mm" for a in AXES),
    *(f"truth_width_{a}_mm" for a in AXES),
    "fringe_period_um",
    "fringe_contrast",
    "fringe_phase_rad",
    "fringe_phase_sd_rad",
    "atoms_split_sd",  # the uncertainty's thinning splits (recon fit --uncertainty K), where fitted
    *(f"centroid_{a}_split_sd_um" for a in AXES),
    *(f"width_{a}_split_sd_um" for a in AXES),
    "fringe_phase_split_sd_rad",
    "split_interval_factor",  # t_K: the 68 % interval is ± t_K × a split sd
)


def _number(value) -> float | None:
    """A finite float, else None (metrics.json of a shot is read as untrusted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _triple(values) -> list[float | None]:
    if not isinstance(values, list) or len(values) != 3:
        return [None] * 3
    return [_number(v) for v in values]


def row_from_metrics(metrics: dict) -> dict:
    """The table's figures of one fitted shot (``shot``, ``state`` … are the caller's)."""
    row: dict = dict.fromkeys(COLUMNS)
    row.update(
        atoms=_number(metrics.get("atoms")),
        backend=str(metrics.get("backend", "")),
        device=str(metrics.get("device", "")),
        finished_utc=str(metrics.get("finished_utc", "")),
        steps=_number(metrics.get("steps")),
        converged=bool(metrics.get("converged", False)),
    )
    for key, values in (("centroid", metrics.get("centroid_mm")), ("width", metrics.get("width_mm"))):
        for a, v in zip(AXES, _triple(values), strict=True):
            row[f"{key}_{a}_mm"] = v
    limit = metrics.get("shot_noise_limit") if isinstance(metrics.get("shot_noise_limit"), dict) else {}
    row["atoms_sd"] = _number(limit.get("atoms_sd"))
    for key in ("centroid", "width"):
        for a, v in zip(AXES, _triple(limit.get(f"{key}_sd_um")), strict=True):
            row[f"{key}_{a}_sd_um"] = v
    fsc = metrics.get("fsc_truth")
    if isinstance(fsc, dict) and _number(fsc.get("resolution_um")) is not None:
        row["resolution_um"] = _number(fsc["resolution_um"])
    runs = metrics.get("convergence")
    if isinstance(runs, list) and runs and isinstance(runs[0], dict):
        row["heldout_deviance"] = _number(runs[0].get("heldout_deviance"))
        row["stopped_by"] = str(runs[0].get("stopped_by", ""))
    fringes = metrics.get("fringes")
    if isinstance(fringes, dict) and fringes.get("detected") is True:
        period, sd = _number(fringes.get("period_mm")), fringes.get("sd")
        row["fringe_period_um"] = None if period is None else 1e3 * period
        row["fringe_contrast"] = _number(fringes.get("contrast"))
        row["fringe_phase_rad"] = _number(fringes.get("phase_at_origin_rad"))
        row["fringe_phase_sd_rad"] = _number(sd.get("phase_at_origin_rad")) if isinstance(sd, dict) else None
    uncertainty = metrics.get("uncertainty")
    noise = uncertainty.get("sd") if isinstance(uncertainty, dict) else None
    if isinstance(noise, dict):
        row["split_interval_factor"] = _number(uncertainty.get("interval_factor"))
        row["atoms_split_sd"] = _number(noise.get("atoms"))
        for key in ("centroid", "width"):
            for a in AXES:
                row[f"{key}_{a}_split_sd_um"] = _number(noise.get(f"{key}_{a}_um"))
        row["fringe_phase_split_sd_rad"] = _number(noise.get("phase_at_origin_rad"))
    truth = metrics.get("against_truth", {})
    truth = truth.get("truth") if isinstance(truth, dict) else None
    if isinstance(truth, dict):
        row["truth_atoms"] = _number(truth.get("atoms"))
        for key in ("centroid", "width"):
            for a, v in zip(AXES, _triple(truth.get(f"{key}_mm")), strict=True):
                row[f"truth_{key}_{a}_mm"] = v
    return row


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def write_csv(path, rows: list[dict]) -> None:
    """``rows`` as CSV with the header :data:`COLUMNS`, written atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(key)) for key in COLUMNS])
    atomic_write_text(path, text.getvalue())


def write_parquet(path, rows: list[dict]) -> bool:
    """``rows`` as Parquet when pyarrow is installed (atomically); False when it is not."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    table = pa.Table.from_pylist([{key: row.get(key) for key in COLUMNS} for row in rows])
    with atomic_path(path, suffix=".tmp.parquet") as tmp:
        pq.write_table(table, tmp)
    return True
