"""Resolution (FSC against the truth, threshold 0.5) versus fit time on data/run042, per method.

Methods, all through the same pool of traced rays, renderer and clock (snapshots excluded):

- ``default``: ``recon fit``'s defaults (hash grid + MLP, Poisson deviance, Adam, 256 pixels ×
  8 pooled samples a step).
- ``siren-baseline``: the public SLAC recipe in our renderer — SIREN 3 × 256, ω₀ = 30, MSE on
  mean-normalised intensities, Adam at a constant 1e-4, 512 pixels a step (REFERENCE §1). With
  Adam, dividing predictions and measurements by the same mean intensity only rescales the loss,
  which Adam ignores, so this is ``--field siren --loss mse --lr 1e-4 --lr-final 1e-4
  --batch-pixels 512`` with one pooled sample per pixel a step (512 rays). Float32 (the public
  code used float64; float32 is faster here).
  Capped at ``--baseline-cap-s``.
- ``mlem``: a voxel grid on the truth grid (120³, 20 µm) solved by ordered-subsets MLEM, the
  Poisson EM of emission tomography, ``x ← x · Aᵀ((y + σ²)/(Ax + σ²)) / Aᵀ1`` with Aᵀ from
  autograd (the shifted-Poisson read-noise term of the fit's data term); A is the renderer
  with stratum midpoints and one fixed pooled sample per pixel, so it is a fixed linear map.
  Each subset holds ``--mlem-subset-pixels`` pixels (the subsets cycle; Aᵀ1 of a subset is
  computed on its first visit and kept). Run for the default's fit time.
- ``tv-voxel``: a voxel grid (120³) fitted by gradient descent (Adam, the fit's schedule) on the
  same Poisson deviance plus total variation (``--tv-weight``), for the default's fit time.

Prints a table per method and a summary: the default's final resolution and the time it first
reached it; the time the baseline needs for the same resolution and the ratio (a lower bound
when the baseline does not get there within its cap); MLEM's and TV's resolution at the
default's fit time. Saves JSON (machine, device, versions, every snapshot).

    python bench/time_to_resolution.py [--methods default siren-baseline mlem tv-voxel]
        [--baseline-cap-s 900] [--short] [--threads N] [--device auto|cpu|cuda]
        [--out bench/results/time_to_resolution.json]

``--short`` checks the machinery in about two minutes (150 default steps, 20 s caps).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    FitTimer,
    fit_with_snapshots,
    fsc_resolution_um,
    geometric_schedule,
    load_case,
    machine_info,
    pick_device,
    sample_on_grid,
    save_json,
    time_to_reach,
)

from recon.fitting.config import FitConfig, resolved
from recon.fitting.loop import estimate_atoms, resolve_device
from recon.fitting.raypool import RayPool
from recon.model.render import render_pixels

METHODS = ("default", "siren-baseline", "mlem", "tv-voxel")
NO_CHECKPOINTS = 10**9  # checkpoint files are I/O, not fitting: off for every method


def run_mlem(case, cfg: FitConfig, *, cap_s: float, schedule: list[float], subset_pixels: int,
             log) -> dict:
    """Ordered-subsets MLEM on a voxel grid equal to the truth grid (see the module docstring)."""
    device = resolve_device(cfg.device)
    data, truth = case.data, case.truth
    pool = case.pool
    step_mm = resolved(cfg, data).step_mm
    pool_dev = RayPool(pool.rays.to(device), pool.offsets.to(device), pool.summed_electrons.to(device),
                       pool.n_frames.to(device), pool.view_of_pixel.to(device), pool.read_noise_e,
                       pool.samples)
    box = data.system.volume
    lo = box.min_mm.to(device=device, dtype=torch.float32)
    size = box.size_mm.to(device=device, dtype=torch.float32)
    y_photons = data.photons_per_atom or 4 * math.pi
    x = torch.full(truth.shape, estimate_atoms(data, pool), device=device)

    def density_of(grid: torch.Tensor):
        def density(points: torch.Tensor) -> torch.Tensor:
            c = 2.0 * (points.to(torch.float32) - lo) / size - 1.0  # grid_sample order (x, y, z)
            out = F.grid_sample(grid[None, None], c.view(1, -1, 1, 1, 3), mode="bilinear",
                                padding_mode="border", align_corners=False)
            return out.view(-1)
        return density

    usable = (pool.n_frames > 0).nonzero(as_tuple=True)[0]
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    subsets = [s.to(device) for s in usable[torch.randperm(len(usable), generator=gen)].split(subset_pixels)]
    var = pool.read_noise_e**2 + 1e-3
    measured = (pool_dev.summed_electrons / pool_dev.n_frames.clamp_min(1) + var).clamp_min(0.0)
    sens: dict[int, torch.Tensor] = {}
    timer = FitTimer(schedule, cap_s, lambda: sample_on_grid(density_of(x), truth, device), device)
    timer.start()
    k = 0
    try:
        while True:
            s = k % len(subsets)
            pixels = subsets[s]
            batch = pool_dev.gather(pixels, torch.zeros_like(pixels))
            xv = x.detach().requires_grad_(True)
            ax = render_pixels(density_of(xv), batch, len(pixels), photons_per_atom=y_photons,
                               step_mm=step_mm, jitter=False)
            ratio = measured[pixels] / (ax.detach() + var)
            first = s not in sens
            (back,) = torch.autograd.grad(ax, xv, ratio, retain_graph=first)
            if first:
                (sens[s],) = torch.autograd.grad(ax, xv, torch.ones_like(ax))
            with torch.no_grad():
                x = torch.where(sens[s] > 0, x * back / sens[s].clamp_min(1e-30), x)
            k += 1
            if log and k % 20 == 0:
                log(f"  mlem sub-iteration {k} (subset {s + 1}/{len(subsets)}), fit time "
                    f"{timer.elapsed():.0f} s")
            timer.tick(k)
    except FitTimer.Stop:
        pass
    return {"snapshots": timer.snapshots, "fit_time_s": timer.snapshots[-1].time_s, "steps": k,
            "stopped_at_cap": True, "first_step_s": timer.first_step_s,
            "subsets": len(subsets), "subset_pixels": subset_pixels,
            "passes_over_data": k / len(subsets)}


def method_config(method: str, args) -> FitConfig:
    """The fit settings of a method (``default``: FitConfig's own defaults)."""
    common = {"checkpoint_every": NO_CHECKPOINTS, "device": args.device, "seed": args.seed}
    if args.short and method == "default":
        common["steps"] = 150
    if method == "default":
        return FitConfig(**common)
    if method == "mlem":
        return FitConfig(field="hashgrid", **common)  # only its pool settings are used
    if method == "siren-baseline":
        # One of the pooled samples a step (512 rays), the cheapest step the renderer offers the
        # recipe: its speed is not held back by recon's defaults (all 8 samples a step).
        return FitConfig(field="siren", loss="mse", lr=1e-4, lr_final=1e-4, batch_pixels=512,
                         samples_per_step=1, steps=10**9, **common)
    if method == "tv-voxel":
        return FitConfig(field="voxel", solver="adam", tv_weight=args.tv_weight,
                         field_options={"voxel_resolution": 120}, **common)
    raise ValueError(method)


def print_table(name: str, rows: list[dict]) -> None:
    print(f"\n{name}")
    print(f"{'fit time s':>10} {'step':>8} {'FSC 0.5 µm':>11} {'(shell) µm':>11} "
          f"{'FSC at fringe':>13}")
    for r in rows:
        print(f"{r['time_s']:>10.1f} {r['step']:>8d} {r['resolution_um']:>11.1f} "
              f"{r['shell_resolution_um']:>11.1f} {r.get('fsc_at_fringe', float('nan')):>13.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="data/run042")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--baseline-cap-s", type=float, default=900.0,
                        help="wall-clock cap of the SIREN baseline, s of fit time")
    parser.add_argument("--equal-time-s", type=float, default=None,
                        help="fit time of mlem and tv-voxel (default: the default's fit time)")
    parser.add_argument("--mlem-subset-pixels", type=int, default=32768)
    parser.add_argument("--tv-weight", type=float, default=0.03)
    parser.add_argument("--mask", default=None, choices=[None, "sphere"],
                        help="FSC mask (default: none, the whole 2.4 mm box)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--short", action="store_true", help="a quick check of the machinery")
    parser.add_argument("--out", type=Path, default=Path("bench/results/time_to_resolution.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    args.device = device.type
    if args.short:
        args.baseline_cap_s = min(args.baseline_cap_s, 20.0)
        if args.equal_time_s is None and "default" not in args.methods:
            args.equal_time_s = 20.0

    report = {"benchmark": "time_to_resolution", "machine": machine_info(device),
              "run": args.run, "threshold": "0.5 against truth", "mask": args.mask,
              "short": args.short, "methods": {}, "options": {
                  k: v for k, v in vars(args).items() if k not in ("out",)}}
    report["options"]["out"] = str(args.out)
    t0 = time.perf_counter()
    case = load_case(args.run, samples=FitConfig().pool_samples, seed=args.seed)
    report["pool"] = {"seconds": case.pool_seconds, "segments": len(case.pool.rays),
                      "pixels": case.pool.n_pixels}
    print(f"pool: {len(case.pool.rays)} segments for {case.pool.n_pixels} pixels, traced in "
          f"{case.pool_seconds:.1f} s (not counted in any fit time)")
    work = Path(tempfile.mkdtemp(prefix="bench_ttr_"))
    equal_time = args.equal_time_s
    results = {}
    for method in args.methods:
        cfg = method_config(method, args)
        # Snapshots cost time outside the clock (sampling 120³ points, ~25 s for the SIREN
        # on 2 CPU cores): sparser for the slow fields.
        if method == "default":
            cap, schedule = None, geometric_schedule(4.0, 1.4, 1e6)
        elif method == "siren-baseline":
            cap = args.baseline_cap_s
            schedule = geometric_schedule(20.0, 2.5, cap)
        else:
            cap = equal_time if equal_time is not None else results["default"]["fit_time_s"]
            schedule = geometric_schedule(4.0, 1.6, cap)
        print(f"\n== {method}: {'to the end' if cap is None else f'{cap:.0f} s of fit time'}",
              flush=True)
        if method == "mlem":
            res = run_mlem(case, cfg, cap_s=cap, schedule=schedule,
                           subset_pixels=args.mlem_subset_pixels, log=print)
        else:
            res = fit_with_snapshots(case, cfg, schedule=schedule, cap_s=cap,
                                     out_dir=work / method, log=print)
            res.pop("field", None)
        for snap in res["snapshots"]:
            snap.fsc = fsc_resolution_um(snap.volume, case.truth, mask=args.mask,
                                         fringe_period_mm=case.fringe_period_mm)
            snap.volume = None
        rows = [s.row() for s in res["snapshots"]]
        print_table(method, rows)
        results[method] = res
        entry = {k: v for k, v in res.items() if k != "snapshots"}
        entry.update({"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                      "snapshots": rows,
                      "final_resolution_um": rows[-1]["resolution_um"]})
        report["methods"][method] = entry
        report["summary"] = summarize(results)
        report["wall_s"] = time.perf_counter() - t0
        save_json(args.out, report)

    summary = summarize(results)
    print("\nsummary")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    print(f"\nwrote {args.out}")


def summarize(results: dict) -> dict:
    """The headline numbers: time to the default's final resolution, ratios, equal-time FSC."""
    out: dict = {}
    if "default" not in results:
        return out
    snaps = results["default"]["snapshots"]
    final = snaps[-1].fsc["resolution_um"]
    t_final = time_to_reach(snaps, final)
    out.update({"default_final_resolution_um": final,
                "default_time_to_final_s": t_final,
                "default_fit_time_s": results["default"]["fit_time_s"]})
    if "siren-baseline" in results:
        base = results["siren-baseline"]
        t_base = time_to_reach(base["snapshots"], final)
        out["baseline_final_resolution_um"] = base["snapshots"][-1].fsc["resolution_um"]
        out["baseline_fit_time_s"] = base["fit_time_s"]
        out["baseline_steps"] = base["steps"]
        if t_base is not None:
            out["baseline_time_to_default_final_s"] = t_base
            out["speedup"] = t_base / t_final
            out["speedup_is_lower_bound"] = False
        else:
            out["baseline_time_to_default_final_s"] = None
            out["speedup"] = base["fit_time_s"] / t_final
            out["speedup_is_lower_bound"] = True
    for name in ("mlem", "tv-voxel"):
        if name in results:
            out[f"{name}_resolution_at_equal_time_um"] = results[name]["snapshots"][-1].fsc[
                "resolution_um"]
            out[f"{name}_fit_time_s"] = results[name]["fit_time_s"]
    return out


if __name__ == "__main__":
    main()
