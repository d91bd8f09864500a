"""How time and memory grow with the number of views, pixels per view and volume resolution.

Each configuration runs in its own process (so the peak memory is its own): it reads
data/run042 (the first ``views`` views, each cropped around its centre to ``pixel fraction`` of
its pixels), traces the pool of rays (timed), then runs ``--steps`` steps of ``recon fit``'s
loop with the default settings and a hash grid of ``levels`` levels (the finest grid resolution
grows by 1.38× a level: 6 → 81, 8 → 153, 10 → 290 vertices per axis), and reports the time per
step (after two warm-up steps), the process's peak resident memory (and on CUDA the peak
allocated GPU memory), and the memory held after importing torch (the floor).

    python bench/scaling.py [--steps 30] [--threads 1] [--short] [--device auto|cpu|cuda]
                            [--out bench/results/scaling.json]

One torch thread by default: on a shared 2-core machine two threads stall in OpenMP barriers.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import load_case, machine_info, pick_device, save_json, using_pool  # noqa: E402

# (views, pixel fraction, hash-grid levels); views=15 is every view of run042.
CONFIGS = [
    (1, 1.0, 8), (5, 1.0, 8), (15, 1.0, 8),
    (15, 0.25, 8), (15, 0.5, 8),
    (15, 1.0, 6), (15, 1.0, 10),
]
SHORT_CONFIGS = [(1, 0.25, 8), (5, 0.25, 8), (15, 0.25, 6)]


def one(views: int, fraction: float, levels: int, steps: int, device: str) -> dict:
    """Measure one configuration in this process."""
    from recon.fitting.config import FitConfig, field_factory
    from recon.fitting.loop import run_fit
    from recon.model.hashgrid import HashGridConfig, hashgrid_levels

    floor_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    case = load_case("data/run042", views=views, pixel_fraction=fraction)
    encoding = {"n_levels": levels}
    finest = hashgrid_levels(HashGridConfig(**encoding))[-1].resolution
    cfg = FitConfig(field="hashgrid", steps=steps + 2, checkpoint_every=10**9, device=device,
                    field_options={"encoding": encoding})
    times: list[float] = []

    class Clock:
        def start(self, total, first=0):
            self.t = time.perf_counter()

        def update(self, step, loss, rays_per_s):
            if cfg.device == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - self.t)
            self.t = now

        def log(self, text):
            pass

        def stop(self):
            pass

    import tempfile

    with using_pool(case.pool):
        state = run_fit(case.data, cfg, Path(tempfile.mkdtemp(prefix="bench_scale_")),
                        make_field=field_factory, progress=Clock()).state
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if cfg.device == "cuda" else None
    return {
        "views": len(case.data.views), "pixel_fraction": fraction, "levels": levels,
        "finest_resolution": finest, "pixels": case.pool.n_pixels, "segments": len(case.pool.rays),
        "pool_s": case.pool_seconds, "step_s": statistics.median(times[2:]),
        "segments_per_step": state.rays_rendered / max(state.step, 1),
        "peak_rss_mb": peak_mb, "rss_floor_mb": floor_mb, "peak_gpu_mb": gpu_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--short", action="store_true", help="three small configurations")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/scaling.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration as JSON
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    if args.one:
        views, fraction, levels = json.loads(args.one)
        print(json.dumps(one(views, fraction, levels, args.steps, device.type)))
        return
    configs = SHORT_CONFIGS if args.short else CONFIGS
    steps = min(args.steps, 10) if args.short else args.steps
    header = (f"{'views':>5} {'px frac':>7} {'levels':>6} {'finest':>6} {'pixels':>8} "
              f"{'segments':>9} {'pool s':>7} {'step ms':>8} {'peak RSS MB':>11} {'GPU MB':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    report = {"benchmark": "scaling", "machine": machine_info(device), "steps": steps, "rows": rows}
    for views, fraction, levels in configs:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps([views, fraction, levels]),
             "--steps", str(steps), "--device", device.type, "--threads", str(args.threads)],
            capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"configuration {(views, fraction, levels)} failed:\n{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        gpu = f"{row['peak_gpu_mb']:.0f}" if row["peak_gpu_mb"] is not None else "-"
        print(f"{row['views']:>5} {row['pixel_fraction']:>7.2f} {row['levels']:>6} "
              f"{row['finest_resolution']:>6} {row['pixels']:>8} {row['segments']:>9} "
              f"{row['pool_s']:>7.1f} {1e3 * row['step_s']:>8.1f} {row['peak_rss_mb']:>11.0f} "
              f"{gpu:>7}", flush=True)
        save_json(args.out, report)
    print(f"(memory floor after importing torch: {rows[0]['rss_floor_mb']:.0f} MB)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
