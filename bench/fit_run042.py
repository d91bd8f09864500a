"""Time the README's main command on data/run042 and compare its metrics with the truth.

Prints a table and saves JSON (machine, versions, time, atom number, centroid, widths, errors).

    python bench/fit_run042.py [--run data/run042] [--out bench/results/fit_run042.json] [-- fit options]

With ``-- --split-halves`` it also prints the split-halves FSC (threshold 0.143). With
``--baseline REV`` the same command of another revision (a git worktree of REV, its own
data/run042) runs at the same time on the other core, one torch thread each, and the two wall
times and their ratio are printed and saved: the side-by-side comparison of the main command.
This tree's command starts with an empty ray-pool cache (``RECON_POOL_CACHE`` in the work
directory), as on a new machine; ``--second-shot`` then runs it once more, the pool read from
that cache (the next shot through the same instrument; the same frames, so EM's sensitivities
come from the cache too, which a new shot's frames, with their own view weights and bright
pixels, would not find), and records its wall time and its
ratio to the baseline's. ``--rounds N`` repeats all of it N times (each round with a fresh cache
and a fresh baseline run beside it): this machine's timings drift by tens of per cent from one
run to the next, so the JSON keeps every round (``rounds``) and its table and ``side_by_side``
are the round of median speed-up; ``summary`` has each shot's median, least and greatest
speed-up over the rounds.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import Baseline

from recon.analysis.moments import cloud_metrics
from recon.io.volume import read_volume


def fringe_band_fsc(csv_path: Path, phantom_json: Path) -> dict | None:
    """The FSC against the truth at the shell nearest a fringe phantom's fringe frequency.

    A sin² fringe of period p puts all its power at 1/p; a Gaussian envelope has almost none
    between ~1/mm and there, so the first crossing of the FSC says little about the fringes.
    """
    if not csv_path.is_file() or not phantom_json.is_file():
        return None
    params = json.loads(phantom_json.read_text()).get("params", {})
    period = params.get("period_mm")
    if not period:
        return None
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    best = min(rows, key=lambda r: abs(float(r["frequency_per_mm"]) - 1 / period))
    return {"fringe_period_um": 1000 * period, "fringe_frequency_per_mm": 1 / period,
            "shell": int(best["shell"]), "frequency_per_mm": float(best["frequency_per_mm"]),
            "fsc_at_fringe": float(best["fsc"])}


def _round(args, work: Path) -> dict:
    """One round: the baseline started (if any); this tree's first and second shot (if asked) beside it."""
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECON_POOL_CACHE": str(work / "pool-cache")}
    cmd = ["recon", "fit", "--views", args.run, "--out", str(work / "fit"), "--quiet", *args.fit_args]
    baseline = None
    if args.baseline:
        argv = ["fit", "--views", "data/run042", "--out", str(work / "baseline-fit"), "--quiet"]
        baseline = Baseline(args.baseline, argv, work, env)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"recon fit failed ({proc.returncode}): {proc.stderr.strip()}")
    second, second_parts = None, None
    if args.second_shot:
        again = [*cmd[:cmd.index("--out") + 1], str(work / "fit-again"), *cmd[cmd.index("--out") + 2:]]
        t1 = time.perf_counter()
        proc2 = subprocess.run(again, capture_output=True, text=True, env=env)
        second = time.perf_counter() - t1
        if proc2.returncode != 0:
            sys.exit(f"the second recon fit failed ({proc2.returncode}): {proc2.stderr.strip()}")
        again_metrics = json.loads((work / "fit-again" / "metrics.json").read_text())
        second_parts = {k: again_metrics.get(k)
                        for k in ("time_s", "fit_loop_s", "outputs_s", "peak_memory_mb")}
    side_by_side = None
    if baseline is not None:
        base_wall = baseline.finish()
        side_by_side = {"baseline": args.baseline, "baseline_wall_s": base_wall, "wall_s": wall,
                        "ratio": wall / base_wall, "speedup": base_wall / wall,
                        "second_shot_wall_s": second,
                        "second_shot_speedup": None if second is None else base_wall / second}
    return {"work": work, "cmd": cmd, "wall_s": wall, "second_shot_wall_s": second,
            "second_parts": second_parts, "side_by_side": side_by_side}


def round_summary(rounds: list[dict]) -> dict | None:
    """Median, least and greatest speed-up of the first and the second shot over the rounds."""
    sides = [r["side_by_side"] for r in rounds if r.get("side_by_side")]
    if not sides:
        return None
    out = {"rounds": len(sides)}
    for key in ("speedup", "second_shot_speedup"):
        values = [side[key] for side in sides if side.get(key) is not None]
        if values:
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                        "values": values}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", default="data/run042")
    parser.add_argument("--out", default="bench/results/fit_run042.json")
    parser.add_argument("--baseline", default=None, help="a git revision to time side by side")
    parser.add_argument("--second-shot", action="store_true",
                        help="time a second fit, the pool from the cache")
    parser.add_argument("fit_args", nargs="*", help="extra options for recon fit")
    parser.add_argument("--rounds", type=int, default=1,
                        help="side-by-side rounds, each with a fresh cache (this machine's timings drift "
                             "between runs); the JSON keeps every round and quotes the median one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_fit_"))
    rounds = [_round(args, work / f"round{i}") for i in range(max(1, args.rounds))]
    for i, r in enumerate(rounds):
        print(f"round {i + 1}: this tree {r['wall_s']:.1f} s"
              + ("" if r["second_shot_wall_s"] is None else f", second shot {r['second_shot_wall_s']:.1f} s")
              + ("" if r["side_by_side"] is None else
                 f"; {args.baseline} {r['side_by_side']['baseline_wall_s']:.1f} s "
                 f"({r['side_by_side']['speedup']:.1f}×"
                 + ("" if r["second_shot_wall_s"] is None else
                    f", second shot {r['side_by_side']['second_shot_speedup']:.1f}×") + ")"))
    quoted = sorted(rounds, key=lambda r: r["wall_s"] if r["side_by_side"] is None
                    else r["side_by_side"]["speedup"])[(len(rounds) - 1) // 2]  # the median round
    work, cmd, wall = quoted["work"], quoted["cmd"], quoted["wall_s"]
    second, second_parts = quoted["second_shot_wall_s"], quoted["second_parts"]
    side_by_side = quoted["side_by_side"]
    if side_by_side is not None:
        print(f"side by side, one thread each (the median of {len(rounds)} rounds): this tree {wall:.1f} s, "
              f"{args.baseline} {side_by_side['baseline_wall_s']:.1f} s, ratio {side_by_side['ratio']:.2f} "
              f"({side_by_side['speedup']:.1f}× faster)"
              + ("" if second is None else f"; second shot {second:.1f} s "
                 f"({side_by_side['second_shot_speedup']:.1f}× faster)"))
    metrics = json.loads((work / "fit" / "metrics.json").read_text())
    truth = cloud_metrics(read_volume(Path(args.run) / "truth.tif"))
    rows = {
        "atoms": (metrics["atoms"], truth["atoms"], 100 * (metrics["atoms"] / truth["atoms"] - 1), "%"),
    }
    for i, axis in enumerate("xyz"):
        rows[f"centroid {axis} (µm)"] = (
            1e3 * metrics["centroid_mm"][i],
            1e3 * truth["centroid_mm"][i],
            1e3 * (metrics["centroid_mm"][i] - truth["centroid_mm"][i]),
            "µm",
        )
    for i, axis in enumerate("xyz"):
        rows[f"width {axis} (µm)"] = (
            1e3 * metrics["width_mm"][i],
            1e3 * truth["width_mm"][i],
            100 * (metrics["width_mm"][i] / truth["width_mm"][i] - 1),
            "%",
        )
    print(f"{'quantity':<18}{'fit':>14}{'truth':>14}{'error':>12}")
    for name, (fit, tru, err, unit) in rows.items():
        print(f"{name:<18}{fit:>14.4g}{tru:>14.4g}{err:>10.2f} {unit}")
    print(
        f"wall time of `{' '.join(cmd)}`: {wall:.1f} s (fit loop {metrics['fit_loop_s']:.1f} s, "
        f"{metrics['steps']} steps, {metrics['rays_per_s']:,.0f} rays/s)"
    )
    for what, fsc in (("against the truth", metrics.get("fsc_truth")),
                      ("between the split halves", metrics.get("split_halves", {}).get("fsc"))):
        if fsc:
            xyz = ", ".join("—" if v is None else f"{v:.4g}" for v in (fsc["resolution_xyz_um"] or []))
            print(f"FSC {fsc['threshold']} {what}: {fsc['resolution_um']:.4g} µm (interpolated "
                  f"{fsc['resolution_interpolated_um']:.4g} µm; x, y, z: {xyz} µm; "
                  f"sphericity {fsc['sphericity']:.3f})")
    band = fringe_band_fsc(work / "fit" / "fsc-truth" / "fsc.csv", Path(args.run) / "phantom.json")
    if band:
        print(f"FSC against the truth at the fringe frequency {band['fringe_frequency_per_mm']:.3g}/mm "
              f"(period {band['fringe_period_um']:.4g} µm): {band['fsc_at_fringe']:.3f} "
              f"(shell {band['shell']}, {band['frequency_per_mm']:.3g}/mm)")
    result = {
        "fringe_band": band,
        "side_by_side": side_by_side,
        "rounds": [{"wall_s": r["wall_s"], "second_shot_wall_s": r["second_shot_wall_s"],
                    "second_shot_metrics": r["second_parts"], "side_by_side": r["side_by_side"]}
                   for r in rounds],
        "summary": round_summary(rounds),
        "command": " ".join(cmd),
        "wall_s": wall,
        "second_shot_wall_s": second,
        "second_shot_metrics": second_parts,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": 1,  # of the fits (OMP_NUM_THREADS; this driver only waits)
            "load_average": list(os.getloadavg()),
            "device": metrics["device"],
        },
        "metrics": {
            k: metrics[k]
            for k in (
                "atoms",
                "centroid_mm",
                "width_mm",
                "steps",
                "converged",
                "convergence",
                "time_s",
                "fit_loop_s",
                "outputs_s",
                "rays_per_s",
                "peak_memory_mb",
                "peak_memory_estimate_mb",
                "backend",
                "device",
                "fsc_truth",
                "split_halves",
                "shot_noise_limit",
            )
            if k in metrics
        },
        "truth": truth,
        "errors": {
            name: {"fit": f, "truth": t, "error": e, "unit": u} for name, (f, t, e, u) in rows.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
