"""Every field kind side by side on data/run042: resolution and atom number against fit time.

Each field is fitted with ``recon fit``'s defaults for its kind (EM for the voxel grid, Adam at
lr 1e-2 → 1e-3 and 256 pixels a step for the neural fields) through the same traced pool (fit
seed 0's), one torch thread, with the clock stopped while snapshots are taken; at each snapshot
time the field is sampled on the truth's grid and compared with it (FSC-0.5, atom number).
A neural fit is stopped at ``--cap-s`` unless its held-out stop comes first. Fit seeds change the
field's initialisation, the held-out pixels and (EM) the subsets; the noise is the shipped run's.

No field's settings were tuned here: this is the defaults' comparison, the first step of the
fields issue's (whose sweep per field, other phantoms and gradient-quality measures are to come).

    python bench/fields.py [--kinds voxel hashgrid siren fourier gauss] [--fit-seeds 1 2]
        [--cap-s 120] [--snapshots 15 30 60 120] [--out bench/results/fields.json]

Resumable: cases already in the JSON are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import fit_with_snapshots, fsc_resolution_um, load_case, machine_info, save_json  # noqa: E402

from recon.fitting.config import FIELD_KINDS, FitConfig, resolved  # noqa: E402


def atoms_error(volume: np.ndarray, truth) -> float:
    """Relative error of the atom number on the truth's grid (both sums × the voxel's volume)."""
    return float(volume.astype(np.float64).sum() / truth.data.astype(np.float64).sum() - 1)


def run_case(case, kind: str, seed: int, cap_s: float, schedule: list[float]) -> dict:
    cfg = resolved(FitConfig(field=kind, seed=seed, device="cpu"), case.data)
    with tempfile.TemporaryDirectory(prefix="bench_fields_") as tmp:
        result = fit_with_snapshots(case, cfg, schedule=list(schedule), cap_s=cap_s, out_dir=Path(tmp),
                                    log=None)
    rows = []
    for snap in result["snapshots"]:
        fsc = fsc_resolution_um(snap.volume, case.truth)
        rows.append({"time_s": round(snap.time_s, 2), "step": snap.step, "fsc05_um": fsc.get("resolution_um"),
                     "atoms_error": atoms_error(snap.volume, case.truth)})
    return {"kind": kind, "fit_seed": seed, "steps": result["steps"],
            "fit_time_s": round(result["fit_time_s"], 2), "stopped_at_cap": result["stopped_at_cap"],
            "snapshots": rows}


def at_time(case: dict, t: float) -> dict:
    """The field at fit time ``t``: the first snapshot taken at or after it (snapshots are taken
    after the step that crosses a scheduled time), or the final one for a fit that ended before."""
    later = [s for s in case["snapshots"] if s["time_s"] >= t - 1e-6]
    return later[0] if later else case["snapshots"][-1]


def summary(cases: dict, times: list[float]) -> list[dict]:
    rows = []
    for kind in dict.fromkeys(c["kind"] for c in cases.values()):
        mine = [c for c in cases.values() if c["kind"] == kind]
        for t in times:
            snaps = [at_time(c, t) for c in mine]
            fsc = [s["fsc05_um"] for s in snaps if s["fsc05_um"] is not None and math.isfinite(s["fsc05_um"])]
            atoms = [100 * s["atoms_error"] for s in snaps]
            rows.append({"kind": kind, "time_s": t, "fits": len(snaps),
                         "fsc05_um_mean": statistics.fmean(fsc) if fsc else None,
                         "fsc05_um_sd": statistics.stdev(fsc) if len(fsc) > 1 else None,
                         "atoms_pct_mean": statistics.fmean(atoms) if atoms else None,
                         "atoms_pct_sd": statistics.stdev(atoms) if len(atoms) > 1 else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="data/run042")
    parser.add_argument("--kinds", nargs="+", default=list(FIELD_KINDS), choices=FIELD_KINDS)
    parser.add_argument("--fit-seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--cap-s", type=float, default=120.0)
    parser.add_argument("--snapshots", nargs="+", type=float, default=[15.0, 30.0, 60.0, 120.0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/fields.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"cases": {}}
    report.update({"run": args.run, "cap_s": args.cap_s, "snapshots_s": args.snapshots,
                   "settings": "recon fit's defaults per kind; no tuning", "pool_seed": 0})
    case = None
    for kind in args.kinds:
        for seed in args.fit_seeds:
            name = f"{kind}-seed{seed}"
            if name in report["cases"]:
                continue
            case = case or load_case(args.run)
            report["cases"][name] = run_case(case, kind, seed, args.cap_s, args.snapshots)
            report["machine"] = machine_info(torch.device("cpu"))
            report["summary"] = summary(report["cases"], args.snapshots)
            save_json(args.out, report)
            last = report["cases"][name]["snapshots"][-1]
            print(f"{name}: {report['cases'][name]['steps']} steps, {last['time_s']:.0f} s: FSC-0.5 "
                  f"{last['fsc05_um']} µm, atoms {100 * last['atoms_error']:+.2f} %", flush=True)
    report["summary"] = summary(report["cases"], args.snapshots)
    save_json(args.out, report)
    for row in report["summary"]:
        mean, sd = row["fsc05_um_mean"], row["fsc05_um_sd"] or 0.0
        fsc = "—" if mean is None else f"{mean:.1f} ± {sd:.1f}"
        print(f"{row['kind']:9s} {row['time_s']:6.0f} s  FSC-0.5 {fsc:>14s} µm  atoms "
              f"{row['atoms_pct_mean']:+.2f} ± {row['atoms_pct_sd'] or 0:.2f} %  ({row['fits']} fits)")
    print("(each time: the first snapshot at or after it; a fit that stopped earlier keeps its final field)")


if __name__ == "__main__":
    main()
