"""Time EM's start on run042: the data's Gaussian fitted with the compiled kernel and with torch.

The start `recon fit` makes (``EMSolver.start``): the 3D Gaussian of greatest likelihood, L-BFGS
on up to 65 536 of the training pixels of the fit's pool (the bright pixels' samples boosted as the
fit boosts them), with its shot-noise limit (``fisher=True``). Fitted side by side in one process,
one thread, ``--repeats`` times each, alternating: ``backend="numba"`` (the per-pixel line
integrals and their derivatives of ``recon.fitting.gaussian_kernel``) and ``backend="torch"`` (the
closed form with autograd and forward-mode slopes, the specification). Both are run once untimed
first (numba's compilation or cache load, torch's lazy imports). Reports the least time of each,
their ratio, and how far apart the two Gaussians and their shot-noise limits are.

    python bench/gaussian_start.py [--repeats 3] [--out bench/results/gaussian_start.json]
"""

from __future__ import annotations

import argparse
import time

import numba
import torch
from benchlib import load_case, machine_info, save_json

from recon.fitting.config import FitConfig
from recon.fitting.gaussian import fit_gaussian
from recon.fitting.holdout import split_held_out
from recon.fitting.loop import estimate_atoms
from recon.fitting.raypool import boost_for_fit, rays_per_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/gaussian_start.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    cfg = FitConfig()
    case = load_case()
    data = case.data
    pool = boost_for_fit(case.pool, data, cfg, rays_per_sample(data, cfg.defocused_rays))
    usable = (pool.observed_frames > 0).nonzero(as_tuple=True)[0]
    train, _ = split_held_out(pool, usable, cfg.holdout, cfg.seed)
    box = data.system.volume
    atoms = estimate_atoms(data, pool) * float((box.max_mm - box.min_mm).prod())

    def fit(backend: str, **kwargs):
        return fit_gaussian(pool, train, box.min_mm.tolist(), box.max_mm.tolist(), atoms=atoms,
                            photons_per_atom=data.photons_per_atom, seed=cfg.seed, fisher=True,
                            backend=backend, **kwargs)

    for backend in ("numba", "torch"):  # compile or load the kernel, import what torch imports lazily
        fit(backend, max_pixels=256, iterations=2)
    seconds = {"numba": [], "torch": []}
    fitted = {}
    for _ in range(args.repeats):
        for backend in seconds:
            t0 = time.perf_counter()
            fitted[backend] = fit(backend)
            seconds[backend].append(time.perf_counter() - t0)
    numba_fit, torch_fit = fitted["numba"], fitted["torch"]
    best = {k: min(v) for k, v in seconds.items()}
    report = {
        "run": "data/run042",
        "pixels_fitted_at_most": 65536,
        "segments_in_pool": len(pool.rays),
        "numba_s": best["numba"],
        "torch_s": best["torch"],
        "speedup": best["torch"] / best["numba"],
        "seconds": seconds,
        "gaussian": {"atoms": numba_fit.atoms, "mean_mm": numba_fit.mean_mm.tolist(),
                     "sd_mm": torch.diagonal(numba_fit.cov_mm2).sqrt().tolist()},
        "max_difference": {
            "mean_um": 1e3 * float((numba_fit.mean_mm - torch_fit.mean_mm).abs().max()),
            "cov_relative": float(((numba_fit.cov_mm2 - torch_fit.cov_mm2).abs()).max()
                                  / torch_fit.cov_mm2.abs().max()),
            "atoms_relative": abs(numba_fit.atoms / torch_fit.atoms - 1),
            "shot_noise_relative": max(abs(a / b - 1) for a, b in zip(numba_fit.shot_noise_sd,
                                                                    torch_fit.shot_noise_sd, strict=True)),
        },
        "machine": machine_info(torch.device("cpu")),
    }
    diff = report["max_difference"]
    print(f"EM start on run042 ({len(pool.rays)} segments in the pool, one thread): "
          f"numba {best['numba']:.2f} s, torch {best['torch']:.2f} s ({report['speedup']:.1f}×); "
          "the Gaussians differ by "
          f"{diff['mean_um']:.1e} µm in the centre, {diff['cov_relative']:.1e} in the covariance, "
          f"{diff['atoms_relative']:.1e} in the atoms, {diff['shot_noise_relative']:.1e} in the "
          "shot-noise limit")
    save_json(args.out, report)


if __name__ == "__main__":
    main()
