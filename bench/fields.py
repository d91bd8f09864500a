"""Every field kind side by side on data/run042: resolution and atom number against fit time.

Each field is fitted with ``recon fit``'s defaults for its kind (EM for the voxel grid, Adam at
lr 1e-2 → 1e-3 and 256 pixels a step for the neural fields) through the same traced pool (fit
seed 0's), one torch thread, with the clock stopped while snapshots are taken; at each snapshot
time the field is sampled on the truth's grid and compared with it (FSC-0.5, atom number).
A neural fit is stopped at ``--cap-s`` unless its held-out stop comes first. Fit seeds change the
field's initialisation, the held-out pixels and (EM) the subsets; the noise is the shipped run's.

Without ``--variants`` each kind runs at its defaults. The fields issue's sweep: ``--variants
bench/configs/fields_sweep.toml`` adds each kind's variants (tables of FIT.toml keys on top of the
defaults; the file says why these), run on the tuning seed (fit seed 0, data/run042's own noise);
``--best-from`` that sweep's JSON then keeps, per kind, the variant with the best FSC-0.5 at the
cap among those whose atom number is then within 5 % (:func:`best_variants`), to be reported on
other fit seeds and on phantom runs simulated by ``recon simulate`` (never tuned on).

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

    python bench/fields.py [--run data/run042] [--kinds voxel hashgrid siren fourier gauss]
        [--fit-seeds 1 2] [--variants bench/configs/fields_sweep.toml] [--best-from SWEEP.json]
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
from dataclasses import replace
from pathlib import Path

import numpy as np
import tomllib
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import fit_with_snapshots, fsc_resolution_um, load_case, machine_info, save_json  # noqa: E402

from recon.errors import ConfigError  # noqa: E402
from recon.fitting.config import FIELD_KINDS, FitConfig, resolved  # noqa: E402
from recon.fitting.projector import grid_density  # noqa: E402
from recon.simulation.named import interferometer  # noqa: E402
from recon.simulation.phantom_file import load_phantom  # noqa: E402

#: The name of a kind's own settings (recon fit's defaults for it).
DEFAULT = "default"


def atoms_error(volume: np.ndarray, truth) -> float:
    """Relative error of the atom number on the truth's grid (both sums × the voxel's volume)."""
    return float(volume.astype(np.float64).sum() / truth.data.astype(np.float64).sum() - 1)


def truth_phantom(run_dir: Path):
    """The run's analytic phantom rebuilt from its ``phantom.json``, or None (no file, a phantom not
    of the registry, or parameters that the rebuilt phantom does not reproduce).

    data/run042's interferometer is rebuilt from its recorded parameters; another registry phantom
    (``recon simulate --phantom NAME``) from its defaults, and kept only if its parameters are the
    recorded ones.
    """
    path = Path(run_dir) / "phantom.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    params = info.get("params")
    if info.get("phantom") == "interferometer":
        phantom = interferometer(info["atoms_total"], sigma_mm=params["sigma_mm"],
                                 period_mm=params["period_mm"], phase_rad=params["phase_rad"],
                                 direction=params["direction"],
                                 clumps=len(params["clumps"]), seed=params["seed"],
                                 center_mm=params["center_mm"])
    else:
        try:
            phantom = load_phantom(str(info.get("phantom")), atoms=float(info["atoms_total"]))
        except ConfigError:  # not a registry phantom: no analytic gradient
            return None
    same = json.loads(json.dumps(phantom.params)) == params
    return phantom if same else None


def gradient_points(phantom, truth, box, n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3) float64 points inside the box, mm, where the cloud is.

    Drawn from the phantom's envelope Gaussian where its parameters give one (``sigma_mm`` and
    ``center_mm``), else from the truth volume: voxels drawn in proportion to their atoms, each
    point uniform within its voxel.
    """
    rng = np.random.default_rng(seed)
    lo, hi = box.min_mm.double().numpy(), box.max_mm.double().numpy()
    if "sigma_mm" not in phantom.params or "center_mm" not in phantom.params:
        data = np.asarray(truth.data, dtype=np.float64)
        flat = np.clip(data, 0, None).ravel()
        index = rng.choice(flat.size, size=n, p=flat / flat.sum())
        z, y, x = np.unravel_index(index, data.shape)
        size = np.asarray(truth.voxel_size_mm)
        centres = np.asarray(truth.origin_mm) + np.stack([x, y, z], axis=1) * size
        points = centres + (rng.random((n, 3)) - 0.5) * size
        return torch.from_numpy(np.clip(points, lo + 1e-9, hi - 1e-9))
    sigma, centre = np.asarray(phantom.params["sigma_mm"]), np.asarray(phantom.params["center_mm"])
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


def load_variants(path: Path | None, kinds: list[str]) -> dict[str, dict[str, dict]]:
    """Per kind, its variants' FIT.toml overrides: ``{kind: {"default": {}, name: {...}}}``.

    Each variant is checked now (a FitConfig is built from it), not after a sweep has begun.
    """
    tables = {} if path is None else tomllib.loads(Path(path).read_text())
    unknown = sorted(set(tables) - set(FIELD_KINDS))
    if unknown:
        raise SystemExit(f"{path}: unknown field kinds {unknown}; expected some of {list(FIELD_KINDS)}")
    out = {}
    for kind in kinds:
        out[kind] = {DEFAULT: {}}
        for name, overrides in tables.get(kind, {}).items():
            if "field" in overrides or "seed" in overrides:
                raise SystemExit(f"{path}: [{kind}.{name}] may not set 'field' or 'seed'")
            try:
                FitConfig(field=kind, **overrides)  # ConfigError names a bad value
            except TypeError as err:
                raise SystemExit(f"{path}: [{kind}.{name}]: {err}; its keys must be FIT.toml keys") from None
            out[kind][name] = overrides
    return out


#: The largest |atom-number error| at the cap of a variant that may be chosen as a kind's best.
BEST_ATOMS_PCT = 5.0


def best_variants(sweep: dict) -> dict[str, str]:
    """Per kind, the variant of a sweep JSON with the least mean FSC-0.5 at its last snapshot time
    among those whose atom number is then within :data:`BEST_ATOMS_PCT` (all of them where none
    is; a variant that resolved nothing never wins; the default where none resolved)."""
    last = max(sweep["snapshots_s"])
    rows = [r for r in sweep["summary"] if r["time_s"] == last]
    best: dict[str, str] = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        close = [r for r in mine
                 if r["atoms_pct_mean"] is not None and abs(r["atoms_pct_mean"]) <= BEST_ATOMS_PCT]

        def score(row) -> float:
            fsc = row["fsc05_um_mean"]
            return fsc if fsc is not None and math.isfinite(fsc) else math.inf

        pick = min(close or mine, key=score)
        best[kind] = pick.get("variant", DEFAULT) if math.isfinite(score(pick)) else DEFAULT
    return best


def best_of(variants: dict[str, dict[str, dict]], sweep_path: Path) -> dict[str, dict[str, dict]]:
    """``variants`` (:func:`load_variants`) cut to each kind's best in the sweep JSON at ``sweep_path``.

    Raises:
        SystemExit: a best variant that ``variants`` does not hold (another variants file).
    """
    best = best_variants(json.loads(Path(sweep_path).read_text()))
    chosen = {kind: best.get(kind, DEFAULT) for kind in variants}
    missing = [kind for kind, name in chosen.items() if name not in variants[kind]]
    if missing:
        raise SystemExit(f"--best-from {sweep_path}: the best variants of {missing} are not in the "
                         "variants file; pass the sweep's own --variants")
    return {kind: {name: variants[kind][name]} for kind, name in chosen.items()}


def case_name(kind: str, variant: str, seed: int) -> str:
    return f"{kind}-seed{seed}" if variant == DEFAULT else f"{kind}[{variant}]-seed{seed}"


def run_case(case, kind: str, variant: str, overrides: dict, seed: int, cap_s: float, schedule: list[float],
             gradients=None) -> dict:
    cfg = resolved(replace(FitConfig(field=kind, device="cpu", **overrides), seed=seed), case.data)
    with tempfile.TemporaryDirectory(prefix="bench_fields_") as tmp:
        result = fit_with_snapshots(case, cfg, schedule=list(schedule), cap_s=cap_s, out_dir=Path(tmp),
                                    log=None)
    quality = None if gradients is None else gradient_quality(result["field"], *gradients)
    rows = []
    for snap in result["snapshots"]:
        fsc = fsc_resolution_um(snap.volume, case.truth)
        rows.append({"time_s": round(snap.time_s, 2), "step": snap.step, "fsc05_um": fsc.get("resolution_um"),
                     "atoms_error": atoms_error(snap.volume, case.truth)})
    n_params = None if result["field"] is None else sum(p.numel() for p in result["field"].parameters())
    return {"kind": kind, "variant": variant, "overrides": overrides, "fit_seed": seed,
            "n_params": n_params, "steps": result["steps"],
            "fit_time_s": round(result["fit_time_s"], 2), "stopped_at_cap": result["stopped_at_cap"],
            "snapshots": rows, "gradient": quality}


def at_time(case: dict, t: float) -> dict:
    """The field at fit time ``t``: the first snapshot taken at or after it (snapshots are taken
    after the step that crosses a scheduled time), or the final one for a fit that ended before."""
    later = [s for s in case["snapshots"] if s["time_s"] >= t - 1e-6]
    return later[0] if later else case["snapshots"][-1]


def summary(cases: dict, times: list[float]) -> list[dict]:
    rows = []
    for kind, variant in dict.fromkeys((c["kind"], c.get("variant", DEFAULT)) for c in cases.values()):
        mine = [c for c in cases.values() if c["kind"] == kind and c.get("variant", DEFAULT) == variant]
        for t in times:
            snaps = [at_time(c, t) for c in mine]
            fsc = [s["fsc05_um"] for s in snaps if s["fsc05_um"] is not None and math.isfinite(s["fsc05_um"])]
            atoms = [100 * s["atoms_error"] for s in snaps]
            rows.append({"kind": kind, "variant": variant, "time_s": t, "fits": len(snaps),
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
    parser.add_argument("--variants", type=Path, default=None,
                        help="TOML of each kind's variants (bench/configs/fields_sweep.toml)")
    parser.add_argument("--best-from", type=Path, default=None,
                        help="a sweep's JSON: run only each kind's best variant in it")
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
    variants = load_variants(args.variants, args.kinds)
    if args.best_from is not None:
        variants = best_of(variants, args.best_from)
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"cases": {}}
    report.update({"run": args.run, "cap_s": args.cap_s, "snapshots_s": args.snapshots, "pool_seed": 0,
                   "settings": ("recon fit's defaults per kind; no tuning" if args.variants is None else
                                f"recon fit's defaults per kind and the variants of {args.variants}"
                                + ("" if args.best_from is None else
                                   f", each kind's best in {args.best_from}")),
                   "variants": variants, "fit_seeds": args.fit_seeds})
    case = None
    for kind in args.kinds:
        for variant, overrides in variants[kind].items():
            for seed in args.fit_seeds:
                name = case_name(kind, variant, seed)
                if name in report["cases"]:
                    continue
                if case is None:
                    case = load_case(args.run)
                    phantom = truth_phantom(Path(args.run))
                    points = None if phantom is None else gradient_points(
                        phantom, case.truth, case.data.system.volume, args.gradient_points)
                    gradients = None if phantom is None else (phantom, case.truth, points,
                                                              args.gradient_step_um / 1000,
                                                              args.gradient_blur_um / 1000)
                report["cases"][name] = run_case(case, kind, variant, overrides, seed, args.cap_s,
                                                 args.snapshots, gradients)
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
        label = row["kind"] + ("" if row.get("variant", DEFAULT) == DEFAULT else f"[{row['variant']}]")
        print(f"{label:32s} {row['time_s']:6.0f} s  FSC-0.5 {fsc:>14s} µm  atoms "
              f"{row['atoms_pct_mean']:+.2f} ± {row['atoms_pct_sd'] or 0:.2f} %  ({row['fits']} fits){grad}")
    print("(each time: the first snapshot at or after it; a fit that stopped earlier keeps its final field)")


if __name__ == "__main__":
    main()
