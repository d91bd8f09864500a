"""Calibration benchmark: recovery of a perturbed mirror dome, and what calibration buys a fit.

Stage 1 (always): the default dome is perturbed (mirror tilts σ 0.5° about each in-plane axis,
shifts σ 50 µm per axis); a point-source target set is simulated through it (N positions,
exact Poisson photon counts, read noise, dark frames); ``recon calibrate``'s library path
(spot detection → bundle adjustment of the mirrors) runs from the nominal system with known and
with unknown positions. Reported: RMS over mirrors of the tilt error (°) and of the offset along
the normal (µm; the in-plane shift does not change the reflection), the reprojection RMS (px) over
all views and over the mirror views, the standard errors the calibration reports, time.

Stage 2 (``--stage fsc``): a run simulated through the perturbed dome (1e6 atoms, 200 photons per
atom, as data/run042; the phantom is ``--phantom``, by default a sphere, a box and a Gaussian
under 150 µm fringes, whose sharp edges spread its power over all frequencies so that the FSC
crossing measures the fit rather than the phantom's spectrum) is fitted with the nominal, the
calibrated and the true system, and self-calibrated (``--refine mirrors`` from the nominal
system); each density is compared with the truth by FSC (threshold 0.5, sphere mask,
recon.analysis.resolution.compare_volumes). All fits use the same settings (``--fit-steps``, default 1500 as
``recon fit``).

    python bench/calibration_accuracy.py [--positions 20] [--seed 1] [--stage recovery|fsc|all]
        [--fit-steps 1500] [--phantom FILE.toml|NAME] [--work DIR] [--out bench/results/calibration.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# This script's own name would shadow the `calibration` package: drop its folder from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from calibration.bundle import CalibrationConfig, Observations, calibrate, measure_spots  # noqa: E402
from calibration.perturb import mirror_errors, perturb_system  # noqa: E402
from calibration.target import read_target_spec  # noqa: E402
from optics.system import load_system, save_system  # noqa: E402

NOMINAL = "data/systems/magis_dome.toml"


def _views(run_dir: Path, system):
    """The views of a target set as :func:`measure_spots` takes them, and their saturated pixels."""
    from recon.io.run import load_run

    run = load_run(run_dir)
    names = {system.path_name(k): k for k in range(system.n_paths)}
    views = [(v.name, names[v.name], v.roi, v.electrons.numpy(), v.mask.numpy()) for v in run.views]
    return views, int(sum(int(v.saturated.sum()) for v in run.views))


def _rms(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return math.sqrt(sum(v * v for v in values) / max(len(values), 1))


def _calibration_row(label, result, obs, truth, seconds) -> dict:
    err = mirror_errors(result.system, truth)
    res = result.residual_uv
    seen = obs.observed
    mirror_seen = seen.clone()
    mirror_seen[:, [j for j, p in enumerate(obs.paths) if p == 0]] = False
    rms_all = float(torch.sqrt((res**2).sum() / (2 * seen.sum())))
    rms_mirror = float(torch.sqrt((res**2 * mirror_seen.unsqueeze(-1)).sum() / (2 * mirror_seen.sum())))
    return {
        "case": label,
        "tilt_rms_deg": err.tilt_rms_deg,
        "normal_shift_rms_um": err.shift_rms_um,
        "normal_shift_rms_relative_um": err.shift_rms_relative_um,
        "reprojection_rms_px_all_views": rms_all,
        "reprojection_rms_px_mirror_views": rms_mirror,
        "reprojection_rms_px_per_view": result.after_rms_px,
        "iterations": result.iterations,
        "time_s": round(seconds, 1),
        "tilt_standard_error_rms_deg": result.uncertainty["tilt_rms_deg"],
        "normal_shift_standard_error_rms_um": result.uncertainty["normal_shift_rms_um"],
        "reduced_chi2": result.uncertainty["reduced_chi2"],
        "mirrors": err.to_dict()["mirrors"],
        "standard_errors": result.uncertainty["mirrors"],
    }


def stage_recovery(args, work: Path) -> tuple[dict, Path, Path]:
    from recon.simulation.target import simulate_calibration_target

    nominal = load_system(NOMINAL, dtype=torch.float64)
    truth = perturb_system(nominal, tilt_deg=args.tilt_deg, shift_um=args.shift_um, seed=args.seed)
    true_path = work / "true_system.toml"
    save_system(truth, true_path)
    t0 = time.perf_counter()
    simulate_calibration_target(
        NOMINAL,
        work / "cal",
        points=args.positions,
        true_system_path=true_path,
        photons=args.photons,
        seed=args.seed + 100,
        overwrite=True,
    )
    t_sim = time.perf_counter() - t0
    spec = read_target_spec(work / "cal")
    views, saturated = _views(work / "cal", nominal)
    spot_e = {name: float(e.reshape(e.shape[0], -1).sum(-1).mean()) for name, _, _, e, _ in views}
    peak_e = {name: float(e.max()) for name, _, _, e, _ in views}
    t0 = time.perf_counter()
    obs = measure_spots(
        views,
        nominal,
        positions_mm=spec.positions_mm,
        bead_sigma_mm=spec.bead_sigma_mm,
    )
    t_det = time.perf_counter() - t0
    base = mirror_errors(nominal, truth)
    rows = [
        {
            "case": "nominal (uncalibrated)",
            "tilt_rms_deg": base.tilt_rms_deg,
            "normal_shift_rms_um": base.shift_rms_um,
            "normal_shift_rms_relative_um": base.shift_rms_relative_um,
        }
    ]
    t0 = time.perf_counter()
    known = calibrate(nominal, obs, CalibrationConfig(n_aperture=args.aperture_samples))
    rows.append(_calibration_row("known positions", known, obs, truth, time.perf_counter() - t0))
    rows[0]["reprojection_rms_px_per_view"] = known.before_rms_px
    calibrated_path = work / "calibrated.toml"
    save_system(known.system, calibrated_path)
    blind = Observations(obs.paths, obs.names, obs.uv, obs.sigma, obs.observed, None)
    t0 = time.perf_counter()
    unknown = calibrate(
        nominal, blind, CalibrationConfig(n_aperture=args.aperture_samples, known_positions=False)
    )
    row = _calibration_row("unknown positions", unknown, blind, truth, time.perf_counter() - t0)
    row["position_error_rms_um"] = 1e3 * float(
        ((unknown.positions_mm - spec.positions_mm) ** 2).sum(-1).mean().sqrt()
    )
    rows.append(row)
    summary = {
        "positions": args.positions,
        "photons_per_exposure": args.photons,
        "bead_sigma_um": spec.bead_sigma_mm * 1e3,
        "perturbation": {
            "tilt_deg_sigma_per_axis": args.tilt_deg,
            "shift_um_sigma_per_axis": args.shift_um,
            "seed": args.seed,
        },
        "median_centroid_sigma_px": {
            name: float(obs.sigma[:, j].median()) for j, name in enumerate(obs.names)
        },
        "spots_left_out": list(obs.skipped),
        "saturated_pixels": saturated,
        "mean_photoelectrons_per_spot": spot_e,
        "peak_pixel_photoelectrons": peak_e,
        "simulate_s": round(t_sim, 1),
        "detect_s": round(t_det, 1),
        "rows": rows,
    }
    return summary, true_path, calibrated_path


def _fsc(density_path: Path, truth_path: Path) -> dict:
    """FSC(0.5) of a fitted density against the truth: first crossing, interpolated crossing, curve."""
    from recon.analysis.grids import resample_like
    from recon.analysis.resolution import compare_volumes, fsc_report
    from recon.io.volume import read_volume

    fit = read_volume(density_path)
    truth = resample_like(read_volume(truth_path), fit)
    result = compare_volumes(
        fit, truth, threshold="0.5", mask="sphere", directional=False, labels=("fit", "truth")
    )
    rep = fsc_report(result)
    return {
        "fsc_0.5_um": rep["resolution_um"],
        "fsc_0.5_interpolated_um": rep["resolution_interpolated_um"],
        "fsc_curve": [round(float(v), 4) for v in result.curve.fsc],
        "frequency_per_mm": [round(float(v), 4) for v in result.curve.frequency_per_mm],
    }


def stage_fsc(args, work: Path, true_path: Path, calibrated_path: Path) -> dict:
    from recon.fitting.config import load_fit_config
    from recon.fitting.data import load_fit_data
    from recon.jobs.fit import run_fit_job
    from recon.simulation.simulate import simulate_run

    run_dir = work / "run"
    t0 = time.perf_counter()
    simulate_run(true_path, args.phantom, run_dir, atoms=1e6, photons_per_atom=200.0, seed=42, overwrite=True)
    t_sim = time.perf_counter() - t0
    data, name, _ = load_fit_data(run_dir)
    truth = load_system(true_path, dtype=torch.float64)
    systems = {
        "nominal": load_system(NOMINAL),
        "calibrated": load_system(calibrated_path),
        "true": load_system(true_path),
    }
    rows = []
    for label, system in systems.items():
        cfg = load_fit_config(None, steps=args.fit_steps, seed=0, field="hashgrid")  # as measured
        t0 = time.perf_counter()
        run_fit_job(replace(data, system=system), cfg, work / f"fit_{label}", run_name=name, overwrite=True)
        fit_s = round(time.perf_counter() - t0, 1)
        rows.append({"system": label, **_fsc(work / f"fit_{label}" / "density.tif", run_dir / "truth.tif"),
                     "fit_s": fit_s})
        print(f"  fit with the {label} system: FSC(0.5) {rows[-1]['fsc_0.5_um']} µm, interpolated "
              f"{rows[-1]['fsc_0.5_interpolated_um']} µm ({fit_s} s)", flush=True)
    cfg = load_fit_config(
        None, steps=args.fit_steps, seed=0, field="hashgrid", refine="mirrors",
        refine_warmup=args.fit_steps // 3
    )
    t0 = time.perf_counter()
    run_fit_job(
        replace(data, system=systems["nominal"]), cfg, work / "fit_selfcal", run_name=name, overwrite=True
    )
    refined = load_system(work / "fit_selfcal" / "refined_system.toml", dtype=torch.float64)
    before = mirror_errors(load_system(NOMINAL, dtype=torch.float64), truth)
    after = mirror_errors(refined, truth)
    fit_s = round(time.perf_counter() - t0, 1)
    rows.append(
        {
            "system": "self-calibrated (nominal + --refine mirrors)",
            **_fsc(work / "fit_selfcal" / "density.tif", run_dir / "truth.tif"),
            "fit_s": fit_s,
            "tilt_rms_deg_before": before.tilt_rms_deg,
            "tilt_rms_deg_after": after.tilt_rms_deg,
            "normal_shift_rms_um_before": before.shift_rms_um,
            "normal_shift_rms_um_after": after.shift_rms_um,
            "mirrors": [
                {"name": n, "tilt_deg_before": tb, "tilt_deg_after": ta,
                 "normal_shift_um_before": sb, "normal_shift_um_after": sa}
                for n, tb, ta, sb, sa in zip(before.names, before.tilt_deg, after.tilt_deg,
                                             before.normal_shift_um, after.normal_shift_um, strict=True)
            ],
        }
    )
    return {
        "phantom": args.phantom,
        "fit_steps": args.fit_steps,
        "simulate_run_s": round(t_sim, 1),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--positions", type=int, default=20)
    parser.add_argument("--photons", type=float, default=2e8)
    parser.add_argument("--tilt-deg", type=float, default=0.5)
    parser.add_argument("--shift-um", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--aperture-samples", type=int, default=512)
    parser.add_argument(
        "--stage",
        choices=("recovery", "fsc", "all"),
        default="recovery",
        help="recovery (stage 1), fsc (stage 2, reusing --work of stage 1) or all",
    )
    parser.add_argument("--fit-steps", type=int, default=1500)
    parser.add_argument(
        "--phantom",
        default="data/phantoms/shapes_with_fringes.toml",
        help="stage 2's phantom: broadband (sharp edges), so the FSC crossing measures the fit",
    )
    parser.add_argument("--work", default=None, help="keep intermediate files here")
    parser.add_argument("--out", default="bench/results/calibration.json")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_calib_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = Path(args.out)
    result = json.loads(out.read_text()) if args.stage == "fsc" and out.is_file() else {}
    if args.stage in ("recovery", "all"):
        recovery, true_path, calibrated_path = stage_recovery(args, work)
        result = {
            "benchmark": "calibration",
            "command": "python bench/calibration_accuracy.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out",)),
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
            },
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "recovery": recovery,
        }
        print(
            f"calibration of the perturbed dome from {args.positions} positions "
            f"({args.photons:g} photons each):"
        )
        print(
            f"{'case':<24}{'tilt RMS °':>12}{'(σ) °':>9}{'shift RMS µm':>14}{'shift−mean µm':>15}"
            f"{'(σ) µm':>8}{'RMS px all':>12}{'RMS px mirrors':>16}{'time s':>8}"
        )
        for r in recovery["rows"]:
            print(
                f"{r['case']:<24}{r['tilt_rms_deg']:>12.4f}"
                f"{r.get('tilt_standard_error_rms_deg', math.nan):>9.4f}"
                f"{r['normal_shift_rms_um']:>14.2f}{r['normal_shift_rms_relative_um']:>15.2f}"
                f"{r.get('normal_shift_standard_error_rms_um', math.nan):>8.2f}"
                f"{r.get('reprojection_rms_px_all_views', math.nan):>12.4f}"
                f"{r.get('reprojection_rms_px_mirror_views', math.nan):>16.4f}"
                f"{r.get('time_s', math.nan):>8.1f}"
            )
        print("(σ): RMS over mirrors of the standard errors the calibration reports; shift−mean: the "
              "offsets less their mean (what unknown positions can determine)")
    else:
        true_path, calibrated_path = work / "true_system.toml", work / "calibrated.toml"
        if not calibrated_path.is_file():
            raise SystemExit(
                f"--stage fsc needs {calibrated_path} from --stage recovery with the same --work"
            )
    if args.stage in ("fsc", "all"):
        result["fsc"] = stage_fsc(args, work, true_path, calibrated_path)
        result["fsc"]["command"] = "python bench/calibration_accuracy.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out",)
        )
        print(f"FSC(0.5) against the truth, fits of {args.fit_steps} steps:")
        for r in result["fsc"]["rows"]:
            print(f"  {r['system']:<46}{r['fsc_0.5_um']:>8.1f} µm  (interpolated "
                  f"{r['fsc_0.5_interpolated_um']:.1f} µm)")
        self_cal = result["fsc"]["rows"][-1]
        print(f"self-calibration: tilt RMS {self_cal['tilt_rms_deg_before']:.3f}° → "
              f"{self_cal['tilt_rms_deg_after']:.3f}°, offset RMS "
              f"{self_cal['normal_shift_rms_um_before']:.1f} → "
              f"{self_cal['normal_shift_rms_um_after']:.1f} µm; per mirror (tilt ° before → after):")
        for m in self_cal["mirrors"]:
            print(f"  {m['name']}: {m['tilt_deg_before']:.3f} → {m['tilt_deg_after']:.3f}")
    result[f"{args.stage}_total_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out} (work files in {work})")


if __name__ == "__main__":
    main()
