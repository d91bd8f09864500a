"""Time the tracing of run042's ray pool: the compiled tracer against the torch tracer, side by side.

Builds the pool `recon fit` builds for data/run042 (every pixel × 8 samples, the direct view with
4 defocused rays a sample, no cache) twice in one process, one thread: with the compiled kernels
of ``optics.trace_kernels`` (the default where no gradient is asked for) and with the torch tracer
they are tested against. Checks that both give the same segments (pixel sample and path) and
reports the largest difference of their values. Prints a table and saves JSON:

    python bench/trace_pool.py [--repeats 2] [--out bench/results/trace_pool.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numba
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optics.trace as trace  # noqa: E402
from recon.fitting.config import FitConfig  # noqa: E402
from recon.fitting.data import load_fit_data  # noqa: E402
from recon.fitting.raypool import build_ray_pool, rays_per_sample  # noqa: E402


def build(data, compiled: bool):
    """The pool, traced by the kernels or by torch; and the seconds it took."""
    chosen = trace._compiled
    if not compiled:
        trace._compiled = lambda *args: False
    try:
        t0 = time.perf_counter()
        pool = build_ray_pool(data, samples=FitConfig().pool_samples, seed=0,
                              rays_per_sample=rays_per_sample(data, FitConfig().defocused_rays))
        return pool, time.perf_counter() - t0
    finally:
        trace._compiled = chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2, help="timed builds of each (the best is kept)")
    parser.add_argument("--out", default="bench/results/trace_pool.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    data, *_ = load_fit_data(ROOT / "data" / "run042")
    build(data, compiled=True)  # the kernels compiled (or read from numba's cache) before timing
    times: dict[str, list[float]] = {"compiled": [], "torch": []}
    pools = {}
    for _ in range(args.repeats):
        for name in ("compiled", "torch"):
            pools[name], seconds = build(data, compiled=name == "compiled")
            times[name].append(seconds)
            print(f"{name}: {seconds:.2f} s", flush=True)
    fast, spec = pools["compiled"].rays, pools["torch"].rays
    same = bool(torch.equal(fast.pixel, spec.pixel) and torch.equal(fast.path, spec.path))
    differences = {}
    if same:
        for name in ("origins", "directions", "weights", "t_near", "t_far"):
            a, b = getattr(fast, name).double(), getattr(spec, name).double()
            differences[name] = float((a - b).abs().max() / b.abs().max())
    best = {name: min(values) for name, values in times.items()}
    result = {
        "command": "python bench/trace_pool.py",
        "run": "data/run042",
        "pixels": int(pools["compiled"].n_pixels),
        "segments": int(len(fast.pixel)),
        "seconds": times,
        "best_s": best,
        "speedup": best["torch"] / best["compiled"],
        "same_segments": same,
        "largest_difference_relative_to_largest_value": differences,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "numba": numba.__version__, "threads": 1, "load_average": list(os.getloadavg())},
    }
    print(f"pool of {result['pixels']} pixels, {result['segments']} segments: "
          f"compiled {best['compiled']:.2f} s, torch {best['torch']:.2f} s ({result['speedup']:.1f}×); "
          f"same segments: {same}; "
          f"largest differences {differences}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
