"""Throughput of the density fields: samples per second, forward + backward.

For every field kind at its default size (recon.fields.FieldConfig) and every hash-grid backend
that this machine has, on the CPU and on CUDA when present: a batch of points uniform in a
2.4 mm box, ``field(points).sum().backward()``, warm-up calls, then timed repeats (median and
best reported). Forward-only (no_grad) throughput is reported as well.

    python bench/field_throughput.py [--device auto|cpu|cuda] [--batch 65536] [--threads N]
                                     [--out bench/results/field_throughput.json]

CPU numbers are only meaningful on an otherwise idle machine: with fewer free cores than torch
threads, OpenMP barriers stall and throughput collapses (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from recon.encoding import tcnn_status
from recon.fields import FIELD_KINDS, FieldConfig, make_field

BOX = ((-1.2, -1.2, -1.2), (1.2, 1.2, 1.2))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def bench_one(kind: str, backend: str, device: torch.device, batch: int, warmup: int,
              repeats: int, seed: int = 0) -> dict:
    cfg = FieldConfig(kind=kind)
    field = make_field(cfg, *BOX, backend=backend, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lo = torch.tensor(BOX[0])
    hi = torch.tensor(BOX[1])
    points = (lo + (hi - lo) * torch.rand(batch, 3, generator=gen)).to(device)

    def forward_backward():
        field.zero_grad(set_to_none=True)
        field(points).sum().backward()

    def forward():
        with torch.no_grad():
            field(points)

    fb = _time(forward_backward, device, warmup, repeats)
    fw = _time(forward, device, warmup, repeats)
    n_params = sum(p.numel() for p in field.parameters())
    return {
        "kind": kind,
        "backend": field.backend,
        "device": str(device),
        "batch": batch,
        "n_params": n_params,
        "fwd_bwd_samples_per_s_median": batch / statistics.median(fb),
        "fwd_bwd_samples_per_s_best": batch / min(fb),
        "fwd_samples_per_s_median": batch / statistics.median(fw),
        "fwd_bwd_seconds": fb,
        "config": cfg.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the CPU, and CUDA when present")
    parser.add_argument("--batch", type=int, default=1 << 16, help="points per call")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--kinds", nargs="+", default=list(FIELD_KINDS), choices=FIELD_KINDS)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/field_throughput.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    tcnn_ok, tcnn_reason = tcnn_status()

    results = []
    header = (f"{'kind':<9} {'backend':<7} {'device':<6} {'params':>10} "
              f"{'fwd+bwd M/s (median)':>21} {'(best)':>8} {'fwd M/s':>8}")
    print(header)
    print("-" * len(header))
    for device in devices:
        for kind in args.kinds:
            backends = ["torch"]
            if kind == "hashgrid" and device.type == "cuda" and tcnn_ok:
                backends.append("tcnn")
            for backend in backends:
                row = bench_one(kind, backend, device, args.batch, args.warmup, args.repeats)
                results.append(row)
                print(f"{kind:<9} {row['backend']:<7} {device.type:<6} {row['n_params']:>10} "
                      f"{row['fwd_bwd_samples_per_s_median'] / 1e6:>21.3f} "
                      f"{row['fwd_bwd_samples_per_s_best'] / 1e6:>8.3f} "
                      f"{row['fwd_samples_per_s_median'] / 1e6:>8.3f}")

    report = {
        "benchmark": "field_throughput",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "cuda_devices": [torch.cuda.get_device_name(i)
                             for i in range(torch.cuda.device_count())],
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_before": load_before,
        "tcnn": {"available": tcnn_ok, "reason": tcnn_reason},
        "box_mm": BOX,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
