"""A simulated campaign through `recon batch`: the recovered series against the truth, and shots per hour.

    python bench/batch.py [--shots 40] [--ray-shots 12] [--work /tmp/recon_batch_bench]
                          [--out bench/results/batch.json] [--fresh]
    python bench/batch.py --instrument dome --shots 6 --cases local-1,local-1-warm \
                          --work /tmp/recon_batch_dome --out bench/results/batch_dome.json

The campaign: ``recon simulate --campaign`` of data/phantoms/campaign_cloud.toml (1e6 atoms, 200
photons per atom) through data/systems/three_cameras.toml (three views, ≈ 74 000 pixels a
shot), the centre drifting by a random walk of 20 µm per axis and shot, the atom number
fluctuating by 3 %, walk seed 1 (shot i's noise: seed 1 + i), 4 samples per pixel and 20 µm
strata for the simulation. Every case runs the command a user types, ``recon batch SHOTS --out
C --workers W --threads 1 [--engine ray]``, with `recon fit`'s defaults and an empty pool cache
of its own (its first shot traces the instrument, the others read the traced pool):

* ``local-1`` and ``local-2``: every shot, on 1 and 2 local worker processes;
* ``ray-1`` and ``ray-2``: the first ``--ray-shots`` shots, as Ray tasks on a private local Ray
  (its start-up included in the wall time), when ray is installed;
* ``local-1-warm``: every shot on 1 worker with ``--warm-start`` (each EM starting from the
  previous shot's density): its fit seconds and series errors against ``local-1``'s.

``--instrument dome`` simulates the campaign through data/run042's instrument instead (the
MAGIS dome, 21 views, ≈ 910 000 pixels a shot) with run042's phantom (``interferometer``), 8
samples per pixel and 20 µm strata (as bench/accuracy.py renders it): a cloud whose EM needs
many steps, where a warm start could pay. ``--cases`` picks the cases to run.

Printed and saved per case: wall time, shots per hour, the fits' own seconds, the overhead per
shot (wall × workers / shots − the fits' mean seconds), and, against the truth recorded in each
shot (truth.tif's moments), the RMS over shots of the atom number's error (%), of the centroid's
error (µm, per axis) and of the recovered drift (centroid − shot 0's, against the truth's). The
Ray cases are compared figure by figure with ``local-2`` on the same shots (all fits use one
thread, so the same seeds must give the same numbers). Each case is saved as it finishes; a
rerun keeps the cases already in the JSON (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchlib import machine_info, save_json  # noqa: E402
from recon.campaign.engines import ray_missing  # noqa: E402
from recon.simulation.campaign import simulate_campaign  # noqa: E402

SIM = {"atoms": 1e6, "photons_per_atom": 200.0, "seed": 1, "drift_um": 20.0, "atom_spread": 0.03,
       "samples": 4, "step_mm": 0.02}
#: name: (system file, phantom, simulation settings)
INSTRUMENTS = {
    "three_cameras": (ROOT / "data" / "systems" / "three_cameras.toml",
                      str(ROOT / "data" / "phantoms" / "campaign_cloud.toml"), SIM),
    "dome": (ROOT / "data" / "run042" / "system.toml", "interferometer", {**SIM, "samples": 8}),
}
CASES = ("local-1", "local-2", "ray-1", "ray-2", "local-1-warm")
FIGURES = ("atoms", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "width_x_mm", "width_y_mm",
           "width_z_mm", "steps")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def series_errors(rows: list[dict]) -> dict:
    """RMS over the done shots of the atoms' error (%), the centroid's (µm) and the drift's (µm)."""
    done = [r for r in rows if r["state"] == "done" and r["truth_atoms"]]
    if not done:
        return {}
    axes = ("x", "y", "z")
    out = {"shots": len(done),
           "atoms_rms_pct": _rms([100 * (float(r["atoms"]) / float(r["truth_atoms"]) - 1) for r in done]),
           "atoms_truth_spread_pct": 100 * statistics.pstdev([float(r["truth_atoms"]) for r in done])
           / statistics.mean([float(r["truth_atoms"]) for r in done])}
    for a in axes:
        fit = [1000 * float(r[f"centroid_{a}_mm"]) for r in done]
        truth = [1000 * float(r[f"truth_centroid_{a}_mm"]) for r in done]
        out[f"centroid_{a}_rms_um"] = _rms([f - t for f, t in zip(fit, truth, strict=True)])
        out[f"drift_{a}_rms_um"] = _rms([(f - fit[0]) - (t - truth[0])
                                         for f, t in zip(fit, truth, strict=True)])
        out[f"truth_excursion_{a}_um"] = max(truth) - min(truth)
        out[f"shot_noise_limit_{a}_um_median"] = statistics.median(
            float(r[f"centroid_{a}_sd_um"]) for r in done if r[f"centroid_{a}_sd_um"])
    # How often the shot-noise limit, taken as a 1σ error bar, holds the truth (68 % if it were the
    # whole error): atoms, centroid and widths.
    covered = {"atoms": [abs(float(r["atoms"]) - float(r["truth_atoms"])) <= float(r["atoms_sd"])
                         for r in done]}
    for key in ("centroid", "width"):
        for a in axes:
            covered[f"{key}_{a}"] = [abs(float(r[f"{key}_{a}_mm"]) - float(r[f"truth_{key}_{a}_mm"])) * 1000
                                     <= float(r[f"{key}_{a}_sd_um"]) for r in done]
    out["shot_noise_limit_coverage"] = {k: round(sum(v) / len(v), 3) for k, v in covered.items()}
    return out


def _commit() -> str:
    """The checked-out commit of the code that runs (the tree this script is in)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_case(name: str, shots_source: Path, work: Path, workers: int, engine: str, *,
             warm: bool = False) -> dict:
    campaign, cache = work / name, work / f"{name}-pool-cache"
    for path in (campaign, cache):
        shutil.rmtree(path, ignore_errors=True)
    command = [sys.executable, "-m", "recon.cli", "batch", str(shots_source), "--out", str(campaign),
               "--workers", str(workers), "--threads", "1", "--engine", engine, "--pool-cache", str(cache),
               *(["--warm-start"] if warm else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name}: recon batch failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-2000:]}")
    rows = _rows(campaign / "results.csv")
    seconds = [float(r["seconds"]) for r in rows if r["state"] == "done"]
    done = len(seconds)
    return {
        "command": "recon batch " + " ".join(command[4:]), "commit": _commit(),
        "engine": engine, "workers": workers, "threads_per_fit": 1,
        "shots": len(rows), "done": done, "wall_s": round(wall, 2),
        "shots_per_hour": round(done / wall * 3600, 1),
        "fit_seconds_mean": round(statistics.mean(seconds), 2),
        "fit_seconds_median": round(statistics.median(seconds), 2),
        "first_shot_s": round(seconds[0], 2),
        "overhead_per_shot_s": round(wall * workers / done - statistics.mean(seconds), 2),
        "series": series_errors(rows),
        "rows": {r["shot"]: {k: r[k] for k in FIGURES} for r in rows},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=40)
    parser.add_argument("--ray-shots", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/recon_batch_bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batch.json")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--instrument", choices=sorted(INSTRUMENTS), default="three_cameras")
    parser.add_argument("--cases", default=",".join(CASES), help=f"which of {', '.join(CASES)}")
    args = parser.parse_args()
    chosen = args.cases.split(",")
    if not set(chosen) <= set(CASES):
        parser.error(f"--cases: choose among {', '.join(CASES)}")
    system, phantom, sim = INSTRUMENTS[args.instrument]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    report = {} if args.fresh or not args.out.exists() else json.loads(args.out.read_text())
    settings = {"shots": args.shots, "ray_shots": args.ray_shots, "simulation": {
        **sim, "system": str(system.relative_to(ROOT)),
        "phantom": str(Path(phantom).relative_to(ROOT)) if Path(phantom).is_absolute() else phantom}}
    if report.get("settings") != settings:
        report = {}
    report.update(benchmark="batch", settings=settings, machine=machine_info())
    report.setdefault("cases", {})
    shots = work / "shots"
    if not (shots / "truth.csv").exists() or len(list(shots.glob("shot_*"))) != args.shots:
        start = time.perf_counter()
        simulate_campaign(system, phantom, shots, args.shots, overwrite=True, **sim)
        report["simulate_s"] = round(time.perf_counter() - start, 1)
        print(f"simulated {args.shots} shots in {report['simulate_s']} s")
    subset = shots / "first_shots.txt"  # names its runs as the folder does: shot_0000 …
    subset.write_text("".join(f"shot_{i:04d}\n" for i in range(min(args.ray_shots, args.shots))))
    cases = [("local-1", shots, 1, "local"), ("local-2", shots, 2, "local")]
    warm = [("local-1-warm", shots, 1, "local")]
    missing = ray_missing()
    if missing:
        report["ray"] = f"not run: {missing}"
    else:
        cases += [("ray-1", subset, 1, "ray"), ("ray-2", subset, 2, "ray")]
    for name, source, workers, engine in cases + warm:
        if name in report["cases"] or name not in chosen:
            continue
        result = run_case(name, source, work, workers, engine, warm=name.endswith("-warm"))
        report["cases"][name] = result
        s = result["series"]
        print(f"{name}: {result['done']}/{result['shots']} shots in {result['wall_s']} s, "
              f"{result['shots_per_hour']} shots/h, fit {result['fit_seconds_mean']} s mean, overhead "
              f"{result['overhead_per_shot_s']} s/shot; atoms RMS {s.get('atoms_rms_pct', math.nan):.2f} %, "
              f"drift RMS {s.get('drift_x_rms_um', math.nan):.1f}/{s.get('drift_y_rms_um', math.nan):.1f}/"
              f"{s.get('drift_z_rms_um', math.nan):.1f} µm", flush=True)
        save_json(args.out, report)
    for name, case in report["cases"].items():  # the series of every case from its results.csv, anew
        results = work / name / "results.csv"
        if results.exists():
            case["series"] = series_errors(_rows(results))
    base = report["cases"].get("local-2", {}).get("rows", {})
    for name in ("ray-1", "ray-2"):
        case = report["cases"].get(name)
        if case and base:
            same = [shot for shot, row in case["rows"].items() if base.get(shot) == row]
            case["identical_to_local_2"] = f"{len(same)}/{len(case['rows'])}"
            print(f"{name}: figures identical to local-2 for {case['identical_to_local_2']} shots")
    cold, hot = report["cases"].get("local-1"), report["cases"].get("local-1-warm")
    if cold and hot:
        steps = {key: statistics.mean(float(r["steps"]) for r in case["rows"].values())
                 for key, case in (("cold", cold), ("warm", hot))}
        ratio = round(cold["fit_seconds_mean"] / hot["fit_seconds_mean"], 3)
        report["warm_start"] = {"fit_seconds_ratio": ratio, "steps_mean_cold": steps["cold"],
                                "steps_mean_warm": steps["warm"]}
        print(f"warm start: fits {ratio}× faster on average, steps {steps['cold']:.1f} → {steps['warm']:.1f}")
    save_json(args.out, report)


if __name__ == "__main__":
    main()
