"""Every field kind side by side on data/run042: resolution and atom number against fit time.

Each field is fitted with ``recon fit``'s defaults for its kind (EM for the voxel grid, Adam at
lr 1e-2 → 1e-3 and 256 pixels a step for the neural fields) through the same traced pool (fit
seed 0's), one torch thread, with the clock stopped while snapshots are taken; at each snapshot
time the field is sampled on the truth's grid and compared with it (FSC-0.5, atom number).
A neural fit is stopped at ``--cap-s`` unless its held-out stop comes first. Fit seeds change the
field's initialisation, the held-out pixels and (EM) the subsets; the noise is the shipped run's.

No field's settings were tuned here: this is the defaults' comparison, the first step of the
fields issue's (whose sweep per field and other phantoms are to come).

Gradient quality (the fields issue: noisy gradients are a known failure of neural fields, and
meshes' normals and any physics built on ∇ρ use them): at the end of each fit, at ``--gradient-points``
points drawn from the run's envelope (the analytic phantom of ``phantom.json``, rebuilt and checked
against the parameters it records), the field's ∇ρ by autodiff and by central differences
(step ``--gradient-step-um``) against the truth's analytic ∇ρ, exact and blurred by a Gaussian of
sd ``--gradient-blur-um`` (the truth volume's, spectrally): the relative
RMS error ``√(Σ|g − g_true|²/Σ|g_true|²)`` of each and the ``|g_true|``-weighted mean cosine
between the directions. The truth holds clumps (12–35 µm) and fringes finer than any field here
resolves, so no field gets near 0 against the exact gradient (nor would the truth's own 20 µm
voxelisation); the blurred truth asks what a resolution-limited field can give (its gradients
are several times smaller: the clumps' steep flanks are gone).

    python bench/fields.py [--kinds voxel hashgrid siren fourier gauss] [--fit-seeds 1 2]
        [--cap-s 120] [--snapshots 15 30 60 120] [--gradient-points 4096] [--gradient-step-um 5]
        [--gradient-blur-um 10]
        [--out bench/results/fields.json]

Resumable: cases already in the JSON are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import fit_with_snapshots, fsc_resolution_um, load_case, machine_info, save_json  # noqa: E402

from recon.fitting.config import FIELD_KINDS, FitConfig, resolved  # noqa: E402
from recon.fitting.projector import grid_density  # noqa: E402
from recon.simulation.named import interferometer  # noqa: E402


def atoms_error(volume: np.ndarray, truth) -> float:
    """Relative error of the atom number on the truth's grid (both sums × the voxel's volume)."""
    return float(volume.astype(np.float64).sum() / truth.data.astype(np.float64).sum() - 1)


def truth_phantom(run_dir: Path):
    """The run's analytic phantom rebuilt from its ``phantom.json``, or None (no file, another kind,
    or parameters that the rebuilt phantom does not reproduce)."""
    path = Path(run_dir) / "phantom.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    if info.get("phantom") != "interferometer":
        return None
    params = info["params"]
    phantom = interferometer(info["atoms_total"], sigma_mm=params["sigma_mm"], period_mm=params["period_mm"],
                             phase_rad=params["phase_rad"], direction=params["direction"],
                             clumps=len(params["clumps"]), seed=params["seed"], center_mm=params["center_mm"])
    same = json.loads(json.dumps(phantom.params)) == params
    return phantom if same else None


def gradient_points(phantom, box, n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3) float64 points drawn from the phantom's envelope Gaussian, inside the box, mm."""
    rng = np.random.default_rng(seed)
    sigma, centre = np.asarray(phantom.params["sigma_mm"]), np.asarray(phantom.params["center_mm"])
    lo, hi = box.min_mm.double().numpy(), box.max_mm.double().numpy()
    out = np.empty((0, 3))
    while len(out) < n:
        draw = centre + sigma * rng.standard_normal((2 * n, 3))
        out = np.concatenate([out, draw[((draw > lo) & (draw < hi)).all(1)]])
    return torch.from_numpy(out[:n])


def exact_gradient(phantom, points: torch.Tensor) -> torch.Tensor:
    """(N, 3) the analytic phantom's ∇ρ at ``points`` (autodiff in float64)."""
    x = points.clone().requires_grad_(True)
    return torch.autograd.grad(phantom.density(x).sum(), x)[0]


def blurred_gradient(truth, points: torch.Tensor, blur_mm: float) -> torch.Tensor:
    """(N, 3) ∇ρ at ``points`` of the truth volume blurred by an isotropic Gaussian of sd ``blur_mm``.

    Spectrally: the volume's FFT times ``exp(−2π² s² |f|²)`` and ``2πi f`` per axis, trilinearly
    sampled at the points (the truth's voxelisation, a box of its 20 µm voxels, adds a blur of
    sd 5.8 µm).
    """
    data = np.asarray(truth.data, dtype=np.float64)  # (Z, Y, X)
    spectrum = np.fft.rfftn(data)
    dx, dy, dz = truth.voxel_size_mm
    fz, fy = np.fft.fftfreq(data.shape[0], dz), np.fft.fftfreq(data.shape[1], dy)
    fx = np.fft.rfftfreq(data.shape[2], dx)
    kz, ky, kx = np.meshgrid(fz, fy, fx, indexing="ij")
    spectrum *= np.exp(-2 * math.pi**2 * blur_mm**2 * (kx**2 + ky**2 + kz**2))
    lo = np.asarray(truth.origin_mm) - 0.5 * np.asarray(truth.voxel_size_mm)
    hi = lo + np.asarray(truth.voxel_size_mm) * np.asarray(data.shape[::-1])
    out = []
    for k in (kx, ky, kz):
        grid = torch.from_numpy(np.fft.irfftn(2j * math.pi * k * spectrum, s=data.shape, axes=(0, 1, 2)))
        out.append(grid_density(grid, lo.tolist(), hi.tolist())(points))
    return torch.stack(out, dim=1)


def gradient_quality(field, phantom, truth, points: torch.Tensor, step_mm: float, blur_mm: float) -> dict:
    """The field's ∇ρ by autodiff and by central differences against the truth's, at ``points``.

    Against the analytic phantom's exact gradient and the truth volume's blurred by ``blur_mm``.
    """
    x = points.to(field.dtype).clone().requires_grad_(True)
    auto = torch.autograd.grad(field(x).sum(), x)[0].double()
    with torch.no_grad():
        def at(p):
            return field(p.to(field.dtype)).double()
        eye = torch.eye(3, dtype=points.dtype) * step_mm
        central = torch.stack([(at(points + e) - at(points - e)) / (2 * step_mm) for e in eye], dim=1)
    out = {"points": len(points), "step_mm": step_mm, "blur_mm": blur_mm}
    for against, true in (("exact", exact_gradient(phantom, points)),
                          ("blurred", blurred_gradient(truth, points, blur_mm))):
        norm = true.norm(dim=1)
        for name, g in (("autodiff", auto), ("central", central)):
            cosine = torch.nn.functional.cosine_similarity(g, true, dim=1, eps=1e-30)
            out[f"{name}_rel_rms_{against}"] = float(((g - true).square().sum() / true.square().sum()).sqrt())
            out[f"{name}_cosine_{against}"] = float((norm * cosine).sum() / norm.sum())
    return out


def run_case(case, kind: str, seed: int, cap_s: float, schedule: list[float], gradients=None) -> dict:
    cfg = resolved(FitConfig(field=kind, seed=seed, device="cpu"), case.data)
    with tempfile.TemporaryDirectory(prefix="bench_fields_") as tmp:
        result = fit_with_snapshots(case, cfg, schedule=list(schedule), cap_s=cap_s, out_dir=Path(tmp),
                                    log=None)
    quality = None if gradients is None else gradient_quality(result["field"], *gradients)
    rows = []
    for snap in result["snapshots"]:
        fsc = fsc_resolution_um(snap.volume, case.truth)
        rows.append({"time_s": round(snap.time_s, 2), "step": snap.step, "fsc05_um": fsc.get("resolution_um"),
                     "atoms_error": atoms_error(snap.volume, case.truth)})
    return {"kind": kind, "fit_seed": seed, "steps": result["steps"],
            "fit_time_s": round(result["fit_time_s"], 2), "stopped_at_cap": result["stopped_at_cap"],
            "snapshots": rows, "gradient": quality}


def at_time(case: dict, t: float) -> dict:
    """The field at fit time ``t``: the first snapshot taken at or after it (snapshots are taken
    after the step that crosses a scheduled time), or the final one for a fit that ended before."""
    later = [s for s in case["snapshots"] if s["time_s"] >= t - 1e-6]
    return later[0] if later else case["snapshots"][-1]


def summary(cases: dict, times: list[float]) -> list[dict]:
    rows = []
    for kind in dict.fromkeys(c["kind"] for c in cases.values()):
        mine = [c for c in cases.values() if c["kind"] == kind]
        for t in times:
            snaps = [at_time(c, t) for c in mine]
            fsc = [s["fsc05_um"] for s in snaps if s["fsc05_um"] is not None and math.isfinite(s["fsc05_um"])]
            atoms = [100 * s["atoms_error"] for s in snaps]
            rows.append({"kind": kind, "time_s": t, "fits": len(snaps),
                         "fsc05_um_mean": statistics.fmean(fsc) if fsc else None,
                         "fsc05_um_sd": statistics.stdev(fsc) if len(fsc) > 1 else None,
                         "atoms_pct_mean": statistics.fmean(atoms) if atoms else None,
                         "atoms_pct_sd": statistics.stdev(atoms) if len(atoms) > 1 else None})
        grads = [c["gradient"] for c in mine if c.get("gradient")]
        for key in (f"{name}_{what}_{against}" for name in ("autodiff", "central")
                    for what in ("rel_rms", "cosine") for against in ("exact", "blurred")):
            values = [g[key] for g in grads]
            rows[-1][f"gradient_{key}_mean"] = statistics.fmean(values) if values else None
            rows[-1][f"gradient_{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="data/run042")
    parser.add_argument("--kinds", nargs="+", default=list(FIELD_KINDS), choices=FIELD_KINDS)
    parser.add_argument("--fit-seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--cap-s", type=float, default=120.0)
    parser.add_argument("--snapshots", nargs="+", type=float, default=[15.0, 30.0, 60.0, 120.0])
    parser.add_argument("--gradient-points", type=int, default=4096)
    parser.add_argument("--gradient-step-um", type=float, default=5.0)
    parser.add_argument("--gradient-blur-um", type=float, default=10.0,
                        help="sd of the truth's blur (10 µm: a transfer of 0.5 at a 53 µm period, "
                             "about EM's FSC-0.5)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/fields.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"cases": {}}
    report.update({"run": args.run, "cap_s": args.cap_s, "snapshots_s": args.snapshots,
                   "settings": "recon fit's defaults per kind; no tuning", "pool_seed": 0})
    case = None
    for kind in args.kinds:
        for seed in args.fit_seeds:
            name = f"{kind}-seed{seed}"
            if name in report["cases"]:
                continue
            if case is None:
                case = load_case(args.run)
                phantom = truth_phantom(Path(args.run))
                points = None if phantom is None else gradient_points(phantom, case.data.system.volume,
                                                                       args.gradient_points)
                gradients = None if phantom is None else (phantom, case.truth, points,
                                                          args.gradient_step_um / 1000,
                                                          args.gradient_blur_um / 1000)
            report["cases"][name] = run_case(case, kind, seed, args.cap_s, args.snapshots, gradients)
            report["machine"] = machine_info(torch.device("cpu"))
            report["summary"] = summary(report["cases"], args.snapshots)
            save_json(args.out, report)
            last = report["cases"][name]["snapshots"][-1]
            print(f"{name}: {report['cases'][name]['steps']} steps, {last['time_s']:.0f} s: FSC-0.5 "
                  f"{last['fsc05_um']} µm, atoms {100 * last['atoms_error']:+.2f} %", flush=True)
    report["summary"] = summary(report["cases"], args.snapshots)
    save_json(args.out, report)
    for row in report["summary"]:
        mean, sd = row["fsc05_um_mean"], row["fsc05_um_sd"] or 0.0
        fsc = "—" if mean is None else f"{mean:.1f} ± {sd:.1f}"
        grad = ("" if row.get("gradient_autodiff_rel_rms_blurred_mean") is None else
                f"  ∇ρ error (blurred truth) autodiff {row['gradient_autodiff_rel_rms_blurred_mean']:.3f}, "
                f"central {row['gradient_central_rel_rms_blurred_mean']:.3f}")
        print(f"{row['kind']:9s} {row['time_s']:6.0f} s  FSC-0.5 {fsc:>14s} µm  atoms "
              f"{row['atoms_pct_mean']:+.2f} ± {row['atoms_pct_sd'] or 0:.2f} %  ({row['fits']} fits){grad}")
    print("(each time: the first snapshot at or after it; a fit that stopped earlier keeps its final field)")


if __name__ == "__main__":
    main()
