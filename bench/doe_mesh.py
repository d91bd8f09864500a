"""The opaque test object end to end: simulate "DOE", fit it, mesh it, compare with the CAD mesh.

Runs the three commands a user would type (printed as they run), then prints the mesh summary
and the surface distances to data/meshes/doe.stl, and saves JSON (+ the preview images):

    python bench/doe_mesh.py [--steps N] [--samples S] [--out bench/results/doe_mesh.json]

The phantom is rendered with the emission-absorption model (its own model, REFERENCE §2), and
the fit uses the same model through a fit config.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> tuple[str, float]:
    print("$ recon " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recon.cli", *cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    print(proc.stdout.strip(), flush=True)
    return proc.stdout, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500, help="fit steps")
    parser.add_argument("--samples", type=int, default=8, help="sub-pixel × aperture samples, simulation")
    parser.add_argument("--photons", type=float, default=5e7,
                        help="photons per unit density (relative units) of the simulation")
    parser.add_argument("--work", default=None, help="keep the run and fit here (default: a temp dir)")
    parser.add_argument("--out", default="bench/results/doe_mesh.json")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_doe_"))
    work.mkdir(parents=True, exist_ok=True)
    run, fit, mesh = work / "doe_run", work / "doe_fit", work / "doe.stl"
    cfg = work / "doe_fit.toml"
    cfg.write_text('model = "emission-absorption"\nfield = "hashgrid"\n')
    walls = {}
    _, walls["simulate_s"] = _run(["simulate", "--system", "data/systems/magis_dome.toml", "--phantom", "doe",
                                   "--photons-per-atom", f"{args.photons:g}", "--samples", str(args.samples),
                                   "--seed", "7", "--out", str(run), "--overwrite"])
    _, walls["fit_s"] = _run(["fit", "--views", str(run), "--out", str(fit), "--config", str(cfg),
                              "--steps", str(args.steps), "--overwrite", "--quiet"])
    _, walls["mesh_s"] = _run(["mesh", str(fit), "--out", str(mesh), "--largest", "--compare",
                               "data/meshes/doe.stl", "--overwrite"])
    comparison = json.loads((work / "doe_compare.json").read_text())
    metrics = json.loads((fit / "metrics.json").read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = ((work / "doe.png", "doe_mesh_preview.png"), (work / "doe_compare.png", "doe_compare.png"))
    for src, name in images:
        if src.is_file():
            shutil.copyfile(src, out.parent / name)
    result = {
        "commands": ["recon simulate --system data/systems/magis_dome.toml --phantom doe "
                     f"--photons-per-atom {args.photons:g} --samples {args.samples} --seed 7 --out RUN",
                     f"recon fit --views RUN --out FIT --config FIT.toml (model = emission-absorption) "
                     f"--steps {args.steps}",
                     "recon mesh FIT --out doe.stl --largest --compare data/meshes/doe.stl"],
        "wall_s": walls,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": metrics["device"]},
        "fit": {k: metrics.get(k) for k in ("steps", "time_s", "rays_per_s", "final_loss", "fsc_truth")},
        "comparison": comparison,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
