"""Throughput of the density fields: samples per second, forward + backward.

For every field kind at its default size (recon.model.fields.FieldConfig) and every hash-grid backend
that this machine has, on the CPU (for each ``--threads`` count) and on CUDA when present: a
batch of points uniform in the 2.4 mm box, ``field(points).sum().backward()``, warm-up calls,
then timed repeats (median and best wall time, and the CPU time per call, which on a shared
machine is less disturbed by other processes than the wall time). Memory: the parameters'
bytes, and the bytes the forward pass keeps for the backward one per point (the tensors autograd
saves, each storage counted once, parameters not; what grows with the batch). Forward-only (no_grad)
throughput is reported as well, and for the hash grid the encoding alone (``encoding(u)`` then
``backward`` of a random upstream gradient). On CUDA, ``--amp`` adds rows under
``torch.autocast(float16)``. ``--profile`` records the operator profile of the torch hash grid's
forward + backward (where the time goes) in the JSON and prints it.

    python bench/field_throughput.py [--device auto|cpu|cuda] [--batch 65536] [--threads 1 2]
                                     [--amp] [--profile] [--short]
                                     [--best-from SWEEP.json --variants bench/configs/fields_sweep.toml]
                                     [--out bench/results/field_throughput.json]

``--best-from`` with ``--variants``: each kind at the field options of its best variant in a
``bench/fields.py`` sweep (:func:`fields.best_variants`), not at its defaults.

CPU numbers are only meaningful on an otherwise idle machine: with fewer free cores than torch
threads, OpenMP barriers stall and throughput collapses (the load average is recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine_info, save_json  # noqa: E402

from recon.model.fields.config import FIELD_KINDS, FieldConfig
from recon.model.fields.registry import make_field
from recon.model.hashgrid_tcnn import tcnn_status

BOX = ((-1.2, -1.2, -1.2), (1.2, 1.2, 1.2))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each timed call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def saved_bytes(module: torch.nn.Module, inputs: torch.Tensor) -> int:
    """Bytes of the tensors that ``module(inputs)`` saves for its backward pass (storages, once each).

    The module's own parameters are not counted (they are there with or without a batch).
    """
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen and key not in params:
            seen.add(key)
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(inputs)
    return total


def bench_one(kind: str, backend: str, device: torch.device, batch: int, warmup: int,
              repeats: int, *, part: str = "field", amp: bool = False, seed: int = 0,
              options: dict | None = None) -> dict:
    """Throughput of one field (``part="field"``) or of its hash encoding (``"encoding"``).

    ``options``: FieldConfig keys other than the defaults (a sweep variant's ``field_options``).
    """
    cfg = FieldConfig.from_dict({"kind": kind, **(options or {})})
    field = make_field(cfg, *BOX, backend=backend, device=device, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lo = torch.tensor(BOX[0])
    hi = torch.tensor(BOX[1])
    points = (lo + (hi - lo) * torch.rand(batch, 3, generator=gen)).to(device)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.float16) if amp
                else contextlib.nullcontext())
    if part == "encoding":
        module = field.encoding
        u = torch.rand(batch, 3, generator=gen).to(device)
        upstream = torch.randn(batch, module.n_output_dims, generator=gen).to(device)

        def forward_backward():
            module.zero_grad(set_to_none=True)
            with autocast:
                out = module(u)
            out.float().backward(upstream)

        def forward():
            with torch.no_grad(), autocast:
                module(u)
    else:
        def forward_backward():
            field.zero_grad(set_to_none=True)
            with autocast:
                out = field(points)
            out.float().sum().backward()

        def forward():
            with torch.no_grad(), autocast:
                field(points)

    fb, fb_cpu = _time(forward_backward, device, warmup, repeats)
    fw, _ = _time(forward, device, warmup, repeats)
    n_params = sum(p.numel() for p in field.parameters())
    module, inputs = (field.encoding, u) if part == "encoding" else (field, points)
    with autocast:
        saved = saved_bytes(module, inputs)
    return {
        "kind": kind,
        "part": part,
        "backend": field.backend,
        "device": str(device),
        "amp": amp,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "n_params": n_params,
        "param_bytes": sum(p.numel() * p.element_size() for p in field.parameters()),
        "saved_bytes_per_sample": saved / batch,
        "fwd_bwd_samples_per_s_median": batch / statistics.median(fb),
        "fwd_bwd_samples_per_s_best": batch / min(fb),
        "fwd_bwd_samples_per_cpu_s": batch / statistics.median(fb_cpu),
        "fwd_samples_per_s_median": batch / statistics.median(fw),
        "fwd_bwd_seconds": fb,
        "config": cfg.to_dict(),
    }


def profile_hashgrid(device: torch.device, batch: int) -> str:
    """Operator table of the torch hash-grid field's forward + backward (3 calls)."""
    from torch.profiler import ProfilerActivity, profile

    field = make_field(FieldConfig(), *BOX, backend="torch", device=device)
    points = (torch.rand(batch, 3) * 2.4 - 1.2).to(device)
    for _ in range(2):
        field(points).sum().backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            field.zero_grad(set_to_none=True)
            field(points).sum().backward()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the CPU, and CUDA when present")
    parser.add_argument("--batch", type=int, default=1 << 16, help="points per call")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--kinds", nargs="+", default=list(FIELD_KINDS), choices=FIELD_KINDS)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch CPU thread counts to measure (default: torch's choice)")
    parser.add_argument("--amp", action="store_true", help="CUDA: add float16 autocast rows")
    parser.add_argument("--profile", action="store_true",
                        help="record the operator profile of the torch hash grid")
    parser.add_argument("--short", action="store_true", help="small batch, few repeats")
    parser.add_argument("--best-from", type=Path, default=None,
                        help="a bench/fields.py sweep JSON: each kind at its best variant's field options")
    parser.add_argument("--variants", type=Path, default=None, help="that sweep's variants file")
    parser.add_argument("--out", type=Path, default=Path("bench/results/field_throughput.json"))
    args = parser.parse_args()
    if (args.best_from is None) != (args.variants is None):
        parser.error("--best-from and --variants go together")
    chosen = {kind: ("default", {}) for kind in args.kinds}
    if args.best_from is not None:
        from fields import best_of, load_variants

        for kind, variant in best_of(load_variants(args.variants, args.kinds), args.best_from).items():
            (name, overrides), = variant.items()
            chosen[kind] = (name, overrides.get("field_options", {}))
    if args.short:
        args.batch, args.repeats, args.warmup = 1 << 13, 2, 1
    load_before = os.getloadavg()

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    tcnn_ok, tcnn_reason = tcnn_status()
    thread_counts = args.threads or [torch.get_num_threads()]

    results = []
    header = (f"{'kind':<9} {'part':<8} {'backend':<7} {'device':<6} {'amp':<3} {'thr':>3} "
              f"{'params':>9} {'fwd+bwd M/s median':>18} {'best':>6} {'per CPU-s':>9} "
              f"{'fwd M/s':>8} {'MB params':>9} {'B/point':>8}")
    print(header)
    print("-" * len(header))
    for device in devices:
        for threads in (thread_counts if device.type == "cpu" else [torch.get_num_threads()]):
            torch.set_num_threads(threads)
            for kind in args.kinds:
                backends = ["torch"]
                if kind == "hashgrid" and device.type == "cuda" and tcnn_ok:
                    backends.append("tcnn")
                parts = ["field", "encoding"] if kind == "hashgrid" else ["field"]
                amps = [False, True] if (args.amp and device.type == "cuda") else [False]
                for backend in backends:
                    for part in parts:
                        for amp in amps:
                            row = bench_one(kind, backend, device, args.batch, args.warmup,
                                            args.repeats, part=part, amp=amp, options=chosen[kind][1])
                            row["variant"] = chosen[kind][0]
                            results.append(row)
                            print(f"{kind:<9} {part:<8} {row['backend']:<7} {device.type:<6} "
                                  f"{'yes' if amp else 'no':<3} {threads:>3} {row['n_params']:>9} "
                                  f"{row['fwd_bwd_samples_per_s_median'] / 1e6:>18.3f} "
                                  f"{row['fwd_bwd_samples_per_s_best'] / 1e6:>6.3f} "
                                  f"{row['fwd_bwd_samples_per_cpu_s'] / 1e6:>9.3f} "
                                  f"{row['fwd_samples_per_s_median'] / 1e6:>8.3f} "
                                  f"{row['param_bytes'] / 1e6:>9.2f} {row['saved_bytes_per_sample']:>8.0f}",
                                  flush=True)

    profiles = {}
    if args.profile:
        for device in devices:
            torch.set_num_threads(thread_counts[-1])
            profiles[str(device)] = profile_hashgrid(device, args.batch)
            print(f"\nprofile of the torch hash-grid field, forward + backward, {device} "
                  f"({torch.get_num_threads()} threads, 3 calls of {args.batch} points):")
            print(profiles[str(device)])

    report = {
        "benchmark": "field_throughput",
        "machine": machine_info(devices[-1]),
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "tcnn": {"available": tcnn_ok, "reason": tcnn_reason},
        "box_mm": BOX,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "results": results,
        "profiles": profiles,
    }
    save_json(args.out, report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
