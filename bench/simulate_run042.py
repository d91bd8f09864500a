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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["simulate", "--system", "data/systems/magis_dome.toml", "--phantom", "interferometer",
        "--atoms", "1e6", "--photons-per-atom", "200", "--seed", "42"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="c755b32", help="the git revision to time side by side")
    parser.add_argument("--out", default="bench/results/simulate_run042.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_simulate_"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tree = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], check=True, cwd=ROOT,
                   capture_output=True)
    try:
        base_cmd = [sys.executable, "-c", "from recon.cli import main; main()", *ARGS,
                    "--out", str(work / "baseline-run")]
        done: dict = {}
        t_base = time.perf_counter()
        baseline = subprocess.Popen(base_cmd, cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def wait() -> None:  # the baseline's own end time
            done["stderr"] = baseline.communicate()[1]
            done["wall_s"] = time.perf_counter() - t_base

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "recon.cli", *ARGS, "--out", str(work / "run")],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        waiter.join()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"recon simulate failed ({proc.returncode}): {proc.stderr.strip()}")
    if baseline.returncode != 0:
        sys.exit(f"the baseline's recon simulate failed ({baseline.returncode}): {done['stderr'].strip()}")
    shipped = ROOT / "data" / "run042" / "views"
    views = sorted(p.name for p in shipped.iterdir())
    identical = all(filecmp.cmp(shipped / name, work / "run" / "views" / name, shallow=False)
                    for name in views)
    result = {
        "command": "recon " + " ".join(ARGS) + " --out RUN",
        "baseline": args.baseline,
        "wall_s": wall,
        "baseline_wall_s": done["wall_s"],
        "speedup": done["wall_s"] / wall,
        "views_identical_to_shipped": identical,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": 1,
                    "load_average": list(os.getloadavg())},
    }
    print(f"side by side, one thread each: this tree {wall:.1f} s, {args.baseline} {done['wall_s']:.1f} s "
          f"({result['speedup']:.2f}× faster); views identical to data/run042: {identical}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
