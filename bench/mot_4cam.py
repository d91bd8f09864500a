"""The four-camera sample: what `recon fit`'s defaults recover from unequal cameras.

data/mot4 is ``recon simulate`` of data/phantoms/mot_cloud.toml (a tilted cloud of 2e6 atoms and a
satellite, several mm across) through data/systems/mot_4cam.toml (four cameras, each behind its
own viewport, 8-bit frames with a 2 ADU black level so that a quarter of the background clips at
0, no dark frames: the black level is the sensor's offset), the cameras recording 1, 0.62, 1.45
and 0.8 times the light the system file predicts: SIM_ARGS below, noise seed 7. Nothing of
recon's defaults was tuned on it.

    python bench/mot_4cam.py [--regenerate] [--fit-seeds 0,1,2] [--noise-seeds 7,8]
                             [--out bench/results/mot_4cam.json] [--fresh]

``--regenerate`` rewrites data/mot4 first. Every (noise seed, fit seed) case runs
``recon fit --views RUN --quiet`` with the defaults (its seed from a FIT.toml), one torch thread;
noise seed 7 is the shipped run, others are simulated into a temporary directory by the same
command. One more fit per noise seed trusts the system file (``camera_sensitivity = "fixed"``):
what unequal cameras cost without the factors. Each case is written to the JSON as it finishes
and a rerun keeps the cases already there (``--fresh`` starts over). Printed and saved, per case:
the camera factors' relative errors against the truth, the atom number's, the centroid's and the
widths' errors against truth.tif's moments, FSC-0.5 against the truth, the share of atoms next to
the box's faces, wall time and peak memory; and mean ± sd over the default cases.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from recon.analysis.moments import cloud_metrics
from recon.io.volume import read_volume

ROOT = Path(__file__).resolve().parents[1]
SENSITIVITY = (1.0, 0.62, 1.45, 0.8)
SIM_ARGS = ["simulate", "--system", "data/systems/mot_4cam.toml", "--phantom", "data/phantoms/mot_cloud.toml",
            "--atoms", "2e6", "--photons-per-atom", "250", "--samples", "4", "--step-mm", "0.1",
            "--truth-voxel-mm", "0.16", "--no-dark",
            "--camera-sensitivity", ",".join(f"{v:g}" for v in SENSITIVITY)]
SHIPPED_SEED = 7


def simulate(out: Path, seed: int) -> None:
    """Write the sample with noise seed ``seed`` to ``out`` (replacing it)."""
    cmd = [sys.executable, "-m", "recon.cli", *SIM_ARGS, "--seed", str(seed), "--out", str(out),
           "--overwrite"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        sys.exit(f"recon simulate failed ({proc.returncode}): {proc.stderr.strip()}")


def fit_case(run: Path, work: Path, fit_seed: int, fixed: bool) -> dict:
    """One `recon fit` of ``run`` with the defaults (and ``fixed`` camera photometry): its errors."""
    work.mkdir(parents=True, exist_ok=True)
    toml = work / "fit.toml"
    toml.write_text(f"seed = {fit_seed}\n" + ('camera_sensitivity = "fixed"\n' if fixed else ""))
    out = work / "fit"
    cmd = [sys.executable, "-m", "recon.cli", "fit", "--views", str(run), "--out", str(out), "--config",
           str(toml), "--quiet", "--overwrite"]
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RECON_POOL_CACHE": str(work.parent / "pools")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"recon fit failed ({proc.returncode}): {proc.stderr.strip()}")
    metrics = json.loads((out / "metrics.json").read_text())
    truth = cloud_metrics(read_volume(run / "truth.tif"))
    phantom = json.loads((run / "phantom.json").read_text())
    true_factors = phantom["camera_sensitivity"]
    ref = next(iter(true_factors.values()))  # the first camera is the fit's reference
    found = {e["camera"]: e for e in metrics.get("camera_sensitivity", [])}
    factors = {name: {"true": true / ref, "fitted": found[name]["factor"], "sd": found[name]["sd"],
                      "relative_error": found[name]["factor"] / (true / ref) - 1}
               for name, true in true_factors.items() if name in found}
    return {
        "wall_s": wall,
        "peak_memory_mb": metrics["peak_memory_mb"],
        "camera_factors": factors,
        "atoms_error": metrics["atoms"] / truth["atoms"] - 1,
        "centroid_error_um": [1e3 * (a - b) for a, b in zip(metrics["centroid_mm"], truth["centroid_mm"],
                                                            strict=True)],
        "width_error": [a / b - 1 for a, b in zip(metrics["width_mm"], truth["width_mm"], strict=True)],
        "fsc05_um": metrics.get("fsc_truth", {}).get("resolution_interpolated_um"),
        "atoms_near_faces": metrics["atoms_near_faces"],
        "warnings": metrics.get("warnings", []),
        "converged": metrics["converged"],
        "steps": metrics["steps"],
        "grid": metrics["grid"],
        "voxel_size_mm": metrics["voxel_size_mm"],
    }


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summary(cases: dict) -> dict:
    """Mean ± sd over the default cases of each figure; the fixed-photometry cases alongside."""
    out = {}
    for kind in ("default", "fixed"):
        rows = [c for c in cases.values() if c["kind"] == kind]
        if not rows:
            continue
        s = {"atoms_error": _mean_sd([r["atoms_error"] for r in rows]),
             "worst_width_error": _mean_sd([max(abs(w) for w in r["width_error"]) for r in rows]),
             "worst_centroid_error_um": _mean_sd([max(abs(c) for c in r["centroid_error_um"]) for r in rows]),
             "atoms_near_faces": _mean_sd([r["atoms_near_faces"] for r in rows]),
             "wall_s": _mean_sd([r["wall_s"] for r in rows]),
             "peak_memory_mb": _mean_sd([r["peak_memory_mb"] for r in rows])}
        fsc = [r["fsc05_um"] for r in rows if r["fsc05_um"] is not None]
        if fsc:
            s["fsc05_um"] = _mean_sd(fsc)
        factors = [abs(f["relative_error"]) for r in rows for f in r["camera_factors"].values()
                   if f["true"] != 1.0]
        if factors:
            s["worst_factor_error"] = {"max": max(factors), "mean": statistics.fmean(factors)}
        out[kind] = s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="rewrite data/mot4 first")
    parser.add_argument("--fit-seeds", default="0,1,2")
    parser.add_argument("--noise-seeds", default=f"{SHIPPED_SEED},8")
    parser.add_argument("--out", default="bench/results/mot_4cam.json")
    parser.add_argument("--fresh", action="store_true", help="forget the cases already in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = ROOT / "data" / "mot4"
    if args.regenerate:
        t0 = time.perf_counter()
        simulate(shipped, SHIPPED_SEED)
        print(f"regenerated {shipped} in {time.perf_counter() - t0:.0f} s")
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.is_file() and not args.fresh else {}
    cases = previous.get("cases", {})
    work = Path(tempfile.mkdtemp(prefix="bench_mot4_"))
    result = {"simulation": {"command": "recon " + " ".join(SIM_ARGS) + " --seed SEED --out RUN",
                             "camera_sensitivity": SENSITIVITY, "shipped_noise_seed": SHIPPED_SEED},
              "tuned_on": "nothing: recon fit's defaults, as tuned on data/run042",
              "cases": cases}
    try:
        for noise_seed in (int(s) for s in args.noise_seeds.split(",")):
            run = shipped
            if noise_seed != SHIPPED_SEED:
                run = work / f"run-{noise_seed}"
            seeds = [int(v) for v in args.fit_seeds.split(",")]
            plan = [(f"noise{noise_seed}-fit{s}", s, False) for s in seeds]
            plan.append((f"noise{noise_seed}-fixed", 0, True))
            for name, fit_seed, fixed in plan:
                if name in cases:
                    continue
                if not run.is_dir():
                    simulate(run, noise_seed)
                case = fit_case(run, work / name, fit_seed, fixed)
                case.update({"kind": "fixed" if fixed else "default", "noise_seed": noise_seed,
                             "fit_seed": fit_seed})
                cases[name] = case
                factors = ", ".join(f"{k} {v['fitted']:.3f}/{v['true']:.3f}"
                                    for k, v in case["camera_factors"].items())
                print(f"{name:<16} atoms {100 * case['atoms_error']:+.2f} %  widths "
                      f"{', '.join(f'{100 * w:+.1f}' for w in case['width_error'])} %  centroid "
                      f"{', '.join(f'{c:+.0f}' for c in case['centroid_error_um'])} µm  FSC "
                      f"{case['fsc05_um'] or float('nan'):.0f} µm  "
                      f"faces {100 * case['atoms_near_faces']:.2f} %  "
                      f"{case['wall_s']:.0f} s  {case['peak_memory_mb']:.0f} MB  [{factors}]", flush=True)
                save(result, out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save(result, out_path)
    print(json.dumps(summary(cases), indent=2))


def save(result: dict, out_path: Path) -> None:
    """Write the cases so far, their summary and the machine (load average included)."""
    result["summary"] = summary(result["cases"])
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                         "threads": 1, "load_average": list(os.getloadavg())}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
