"""How well a ray pool estimates each pixel's integral: the operator's own sampling error, per scheme.

A pool holds S sub-pixel × aperture samples a pixel, so the fit's forward map A is itself an
estimate of each pixel's integral over its area and the lens aperture. Its error is noise the
fit cannot tell from the photons'. Two pools of one scheme with independent seeds are two
unbiased estimates, so half the mean square of their difference is the variance of one, with no
reference needed: for ``--schemes`` × ``--samples`` this projects data/run042's ``truth.tif``
(120³ of 20 µm) through two pools each (seeds ``s``, ``s + 1``) with the projector of ``recon fit``
(20 µm strata) and reports, over the cloud's pixels (expected light above 3 σ of read noise),
the RMS of that error in units of each pixel's photon noise σ = √(λ + frames · read²), at the
run's photon budget and ten times it, for the mirror views and the direct view apart; and the
seconds each pool took to trace. One thread.

    python bench/pool_sampling.py [--schemes random sobol] [--samples 8 16] [--seeds 1 3]
        [--out bench/results/pool_sampling.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine_info, save_json  # noqa: E402

from optics.sampling import SAMPLING_SCHEMES  # noqa: E402
from recon.fitting.config import FitConfig  # noqa: E402
from recon.fitting.data import load_fit_data  # noqa: E402
from recon.fitting.projector import Projector  # noqa: E402
from recon.fitting.raypool import build_ray_pool, rays_per_sample  # noqa: E402
from recon.io.volume import read_volume  # noqa: E402

BUDGETS = (1.0, 10.0)
STEP_MM = 0.02  # the truth's voxel


def predicted(data, truth, scheme: str, samples: int, seed: int):
    """(λ of every pixel, the pool, the seconds its tracing took)."""
    t0 = time.perf_counter()
    pool = build_ray_pool(data, samples=samples, seed=seed, sampling=scheme,
                          rays_per_sample=rays_per_sample(data, FitConfig().defocused_rays))
    traced = time.perf_counter() - t0
    box = data.system.volume
    op = Projector(pool, box.min_mm.tolist(), box.max_mm.tolist(), truth.shape,
                   photons_per_atom=data.photons_per_atom, step_mm=STEP_MM)
    lam = op.forward(torch.as_tensor(truth.data, dtype=torch.float32), torch.arange(pool.n_pixels)).double()
    return lam, pool, traced


def sampling_error(a: torch.Tensor, b: torch.Tensor, pool, budget: float) -> dict:
    """RMS over the cloud's pixels of one pool's error / σ, from two pools' difference, per view group."""
    lam = budget * (a + b) / 2
    read_var = pool.read_noise_e**2 * pool.n_frames.double()
    sigma = torch.sqrt(lam + read_var)
    z2 = (budget * (a - b) / sigma) ** 2 / 2  # E = the variance of one pool's estimate, in σ²
    cloud = lam > 3 * read_var.sqrt()
    direct = pool.view_of_pixel == 0
    out = {}
    for name, where in (("mirror_views", cloud & ~direct), ("direct_view", cloud & direct)):
        out[name] = float(z2[where].mean().sqrt()) if where.any() else None
        out[f"{name}_pixels"] = int(where.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="data/run042")
    parser.add_argument("--schemes", nargs="+", default=list(SAMPLING_SCHEMES), choices=SAMPLING_SCHEMES)
    parser.add_argument("--samples", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 3], help="pool pairs (s, s + 1)")
    parser.add_argument("--out", default="bench/results/pool_sampling.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, _, _ = load_fit_data(Path(args.run))
    truth = read_volume(Path(args.run) / "truth.tif")
    rows = []
    for samples in args.samples:
        for scheme in args.schemes:
            errors, seconds = {b: [] for b in BUDGETS}, []
            for seed in args.seeds:
                a, pool, ta = predicted(data, truth, scheme, samples, seed)
                b, _, tb = predicted(data, truth, scheme, samples, seed + 1)
                seconds += [ta, tb]
                for budget in BUDGETS:
                    errors[budget].append(sampling_error(a, b, pool, budget))
            row = {"scheme": scheme, "samples": samples, "trace_s": seconds,
                   "segments": len(pool.rays), "pairs": args.seeds}
            for budget in BUDGETS:
                for group in ("mirror_views", "direct_view"):
                    values = [e[group] for e in errors[budget] if e[group] is not None]
                    row[f"{group}_{budget:g}x"] = values
                    row[f"{group}_{budget:g}x_mean"] = statistics.fmean(values) if values else None
                row[f"pixels_{budget:g}x"] = {g: errors[budget][0][f"{g}_pixels"]
                                              for g in ("mirror_views", "direct_view")}
            rows.append(row)
            print(f"S = {samples:3d} {scheme:7s}: error RMS / photon σ, mirror views "
                  f"{row['mirror_views_1x_mean']:.3f} at 1×, {row['mirror_views_10x_mean']:.3f} at 10×; "
                  f"direct view "
                  f"{row['direct_view_10x_mean'] or float('nan'):.3f} at 10×; tracing "
                  f"{statistics.median(seconds):.1f} s, {row['segments']:,} segments", flush=True)
    save_json(args.out, {"command": "python " + " ".join(sys.argv), "run": args.run, "step_mm": STEP_MM,
                         "budgets": list(BUDGETS), "rows": rows,
                         "machine": machine_info(torch.device("cpu"))})


if __name__ == "__main__":
    main()
