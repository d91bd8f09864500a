"""Fringes from fitted densities: `recon analyze`'s period, direction, phase and contrast against the truth.

For every phantom with fringes the expected views are rendered once through data/run042's
instrument (as ``bench/accuracy.py`` does: 8 samples per pixel, 20 µm strata, its own rays),
Poisson and read noise drawn per noise seed, and each (fit seed, noise seed) fitted with
``recon fit``'s defaults (:func:`recon.fitting.loop.run_fit`); the fitted field is sampled on the
grid of the density.tif ``recon fit`` writes and its fringes fitted by
:func:`recon.analysis.fringes.fit_fringes` twice: with the default robust (soft-L1) loss and
by plain least squares. Per case and loss: the period's error (%), the direction's angle to the
truth (°), the phase at the origin's error (rad), the contrast, and the reported formal sds.

    python bench/fringes.py [--phantoms run042,fringes_oblique] [--fit-seeds 1,2] [--noise-seeds 10]
                            [--out bench/results/fringes.json] [--fresh]

The robust loss's scale (``ROBUST_SCALE``) was chosen on data/run042's own default fit (fit seed
0, noise seed 42 as shipped); the defaults here report on other seeds, and on a phantom it was not
chosen on (``fringes_oblique``: a plain Gaussian × sin² cloud with fringes of 150 µm along no axis,
15° from the x–y plane: the dome has no view within 35° of z, so fringes along z lie in its missing
cone).
The JSON is written after every case; a rerun goes on from the cases already there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accuracy import PHOTONS, RUN, _noisy, _on, _pool_for, _with_electrons
from benchlib import machine_info, save_json, using_pool

from recon.analysis.fringes import fit_fringes, fringe_errors, phantom_fringes
from recon.fitting.config import FitConfig, field_factory
from recon.fitting.data import density_grid, load_fit_data
from recon.fitting.loop import run_fit
from recon.simulation.phantom_file import load_phantom
from recon.simulation.simulate import expected_views, simulation_regions
from recon.simulation.truth import truth_volume

# name: (registry phantom, options)
PHANTOMS = {
    "run042": ("interferometer", {}),
    "fringes_oblique": ("fringes", {"sigma_mm": 0.4, "period_mm": 0.15, "phase_rad": 1.1,
                                    "direction": (0.62, 0.74, 0.26), "center_mm": (0.05, -0.04, 0.03)}),
}
LOSSES = {"robust": {}, "least_squares": {"robust_scale": None}}


def _errors(fit, truth: dict) -> dict:
    errors = fringe_errors(fit.to_json(), truth)
    return {"period_pct": 100 * errors["period"], "direction_deg": errors["direction_deg"],
            "phase_rad": errors["phase_rad"], "contrast": fit.contrast,
            "phase_sd_formal": fit.sd["phase_at_origin_rad"],
            "period_sd_formal_pct": 100 * fit.sd["period_mm"] / truth["period_mm"], "detected": fit.detected}


def _summary(cases: list[dict]) -> list[dict]:
    rows = []
    for phantom in dict.fromkeys(c["phantom"] for c in cases):
        for loss in LOSSES:
            got = [c[loss] for c in cases if c["phantom"] == phantom and loss in c]
            if not got:
                continue
            row = {"phantom": phantom, "loss": loss, "fits": len(got)}
            for key in ("period_pct", "direction_deg", "phase_rad", "contrast", "phase_sd_formal"):
                values = [g[key] for g in got]
                row[key] = {"mean": statistics.fmean(values),
                            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
            row["phase_rms_rad"] = math.sqrt(statistics.fmean(g["phase_rad"] ** 2 for g in got))
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", default=",".join(PHANTOMS))
    parser.add_argument("--fit-seeds", default="1,2")
    parser.add_argument("--noise-seeds", default="10")
    parser.add_argument("--out", default="bench/results/fringes.json")
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() and not args.fresh else {}
    cases = report.get("cases", [])
    done = {(c["phantom"], c["fit_seed"], c["noise_seed"]) for c in cases}
    base, _, _ = load_fit_data(RUN)
    box = base.system.volume
    regions = [r for r in simulation_regions(base.system) if r.name in {v.name for v in base.views}]
    voxel = density_grid(base, FitConfig().voxel_size_mm)[2][0]
    work = Path(tempfile.mkdtemp(prefix="bench_fringes_"))
    pools: dict = {}
    for name in args.phantoms.split(","):
        todo = [(f, n) for f in map(int, args.fit_seeds.split(","))
                for n in map(int, args.noise_seeds.split(",")) if (name, f, n) not in done]
        if not todo:
            continue
        source, options = PHANTOMS[name]
        phantom = load_phantom(source, atoms=1e6, options=options or None)
        truth = phantom_fringes(phantom.params)
        expected = expected_views(base.system, phantom, regions, photons_per_atom=PHOTONS, samples=8,
                                  step_mm=0.02, seed=1000)
        grid = truth_volume(phantom, box.min_mm.tolist(), box.max_mm.tolist(), voxel)  # density.tif's grid
        for fit_seed, noise_seed in todo:
            data = _with_electrons(base, _noisy(expected, 1.0, float(base.read_noise_e), noise_seed))
            data = dataclasses.replace(data, photons_per_atom=PHOTONS)
            t0 = time.perf_counter()
            with using_pool(_pool_for(pools, base, data, fit_seed)):
                result = run_fit(data, FitConfig(seed=fit_seed, device="cpu"),
                                 work / f"{name}-{fit_seed}-{noise_seed}", make_field=field_factory)
            density = _on(grid, result.field)
            case = {"phantom": name, "fit_seed": fit_seed, "noise_seed": noise_seed,
                    "fit_s": round(time.perf_counter() - t0, 1), "truth": truth}
            for loss, kwargs in LOSSES.items():
                t1 = time.perf_counter()
                case[loss] = {**_errors(fit_fringes(density, **kwargs), truth),
                              "seconds": round(time.perf_counter() - t1, 1)}
            cases.append(case)
            save_json(out, {"command": "python bench/fringes.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "fresh")),
                "tuned_on": {"phantom": "run042", "fit_seed": 0, "noise_seed": 42},
                "cases": cases, "rows": _summary(cases), "machine": machine_info(torch.device("cpu"))})
            r, q = case["robust"], case["least_squares"]
            print(f"{name} fit {fit_seed} noise {noise_seed}: robust period {r['period_pct']:+.2f} %, "
                  f"direction {r['direction_deg']:.2f}°, phase {r['phase_rad']:+.4f} rad, "
                  f"C {r['contrast']:.3f}; least squares {q['period_pct']:+.2f} %, "
                  f"{q['direction_deg']:.2f}°, {q['phase_rad']:+.4f} rad", flush=True)
    for row in _summary(cases):
        print(f"{row['phantom']:<15} {row['loss']:<14} fits {row['fits']}: period "
              f"{row['period_pct']['mean']:+.2f} ± {row['period_pct']['sd']:.2f} %, direction "
              f"{row['direction_deg']['mean']:.2f} ± {row['direction_deg']['sd']:.2f}°, phase "
              f"{row['phase_rad']['mean']:+.4f} ± {row['phase_rad']['sd']:.4f} rad (formal sd "
              f"{row['phase_sd_formal']['mean']:.4f}), contrast {row['contrast']['mean']:.3f}")


if __name__ == "__main__":
    main()
