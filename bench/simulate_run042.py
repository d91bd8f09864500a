"""Time `recon simulate` of data/run042 against another revision's, side by side, one thread each.

Runs the README's command that regenerates data/run042 (bench/regenerate_run042.py checks its
bytes) in this tree and in a git worktree of ``--baseline`` at the same time, each with one
torch thread on its own core, and saves both wall times, their ratio and whether this tree's
views equal the shipped ones byte for byte:

    python bench/simulate_run042.py [--baseline c755b32] [--out bench/results/simulate_run042.json]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import Baseline
from regenerate_run042 import ARGS  # the README's command

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="c755b32", help="the git revision to time side by side")
    parser.add_argument("--out", default="bench/results/simulate_run042.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_simulate_"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    baseline = Baseline(args.baseline, [*ARGS, "--out", str(work / "baseline-run")], work, env)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recon.cli", *ARGS, "--out", str(work / "run")], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    base_wall = baseline.finish()
    if proc.returncode != 0:
        sys.exit(f"recon simulate failed ({proc.returncode}): {proc.stderr.strip()}")
    shipped = ROOT / "data" / "run042" / "views"
    views = sorted(p.name for p in shipped.iterdir())
    identical = all(filecmp.cmp(shipped / name, work / "run" / "views" / name, shallow=False)
                    for name in views)
    result = {
        "command": "recon " + " ".join(ARGS) + " --out RUN",
        "baseline": args.baseline,
        "wall_s": wall,
        "baseline_wall_s": base_wall,
        "speedup": base_wall / wall,
        "views_identical_to_shipped": identical,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1,
                    "load_average": list(os.getloadavg())},
    }
    print(f"side by side, one thread each: this tree {wall:.1f} s, {args.baseline} {base_wall:.1f} s "
          f"({result['speedup']:.2f}× faster); views identical to data/run042: {identical}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
