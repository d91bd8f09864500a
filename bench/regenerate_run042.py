"""Check that the README's command regenerates data/run042 bit for bit.

Runs ``recon simulate`` with the README's arguments into a temporary directory, compares every
file with data/run042 byte for byte (TIFF pixel data and tags included), prints a table and
saves JSON, with the CPU's model: the shipped frames come back bit for bit on the machine of
``regenerate_run042.json`` (which did not record it; the benches of that time ran on an AMD EPYC),
and not on an Intel Xeon with AVX-512 (``regenerate_run042_xeon.json``):

    python bench/regenerate_run042.py [--out bench/results/regenerate_run042.json]
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import device_name

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["simulate", "--system", "data/systems/magis_dome.toml", "--phantom", "interferometer",
        "--atoms", "1e6", "--photons-per-atom", "200", "--seed", "42"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="bench/results/regenerate_run042.json")
    args = parser.parse_args()
    shipped = ROOT / "data" / "run042"
    fresh = Path(tempfile.mkdtemp(prefix="run042_")) / "run042"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recon.cli", *ARGS, "--out", str(fresh)], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"recon simulate failed ({proc.returncode}): {proc.stderr.strip()}")
    names = sorted({p.relative_to(shipped).as_posix() for p in shipped.rglob("*") if p.is_file()}
                   | {p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file()})
    rows = []
    for name in names:
        a, b = shipped / name, fresh / name
        same = a.is_file() and b.is_file() and _digest(a) == _digest(b)
        rows.append({"file": name, "identical": same, "shipped": a.is_file(), "regenerated": b.is_file()})
    print(f"{'file':<28}{'identical':>10}")
    for r in rows:
        print(f"{r['file']:<28}{'yes' if r['identical'] else 'NO':>10}")
    identical = all(r["identical"] for r in rows)
    print(f"{sum(r['identical'] for r in rows)}/{len(rows)} files identical; simulate took {wall:.1f} s")
    result = {"command": "recon " + " ".join(ARGS) + " --out RUN", "identical": identical, "files": rows,
              "wall_s": wall, "machine": {"platform": platform.platform(),
                                          "cpu": device_name(torch.device("cpu")), "cpus": os.cpu_count(),
                                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                                          "load_average": list(os.getloadavg())}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
