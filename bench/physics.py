"""Physics of every shot against the truth: bias, RMS error and coverage of the reported error bars.

A campaign of ``--shots`` simulated shots (``recon simulate --campaign``: one fringed cloud whose
centre drifts by a random walk and whose atom number fluctuates, independent noise per shot)
through data/run042's instrument, fitted by ``recon batch`` with ``recon fit``'s defaults, and
each shot's density analysed by ``recon analyze``'s fringe fit (:mod:`recon.analysis.fringes`).
Per figure (atoms, centroid x/y/z, widths x/y/z from results.csv; fringe period, direction, phase
at the origin and contrast from the fringe fit) over the shots: the bias and RMS error against
each shot's truth, the median reported sd, and the **coverage** — the fraction of shots whose
reported ±1 sd interval holds the truth (68 % for honest error bars). The sds are what the
project reports today: the shot-noise limit (Cramér–Rao of the data's Gaussian) for atoms,
centroid and widths, and the fringe fit's formal least-squares sds. Also the Cramér–Rao bound of
the fringe figures for shot 0's truth through its pixels (:mod:`recon.fitting.fringe_bound`), the
shot-noise reference for the phase. With ``--config`` fitting ``uncertainty_splits = K`` (and
``fringes = true`` for the fringe figures), also each figure's sd from the fit's thinning splits
(:mod:`recon.fitting.uncertainty`) and the coverage of its 68 % interval, ± t_K sd.

    python bench/physics.py [--shots 30] [--workers 2] [--work /tmp/recon_physics]
                            [--photons-per-atom 200] [--config FIT.toml] [--phantom fringes]
                            [--out bench/results/physics.json]

The phantom: the named ``fringes`` phantom as it is (a Gaussian of σ 0.5 mm × sin² fringes of
200 µm along y, phase 0 at its centre: the fringe model holds the truth), 1e6 atoms, 200 photons
per atom; walk 20 µm per axis and shot, atoms' spread 3 %, walk seed 7; the simulation at 4
samples per pixel and 20 µm strata. The simulated shots and the fits are kept in ``--work`` and
reused by a rerun (``recon batch`` skips finished shots).

``--phantom`` another registry phantom or phantom file, for the fringe model's failures: fringes
not along an axis (``bench/configs/physics_oblique.toml``) and a chirp, the phase quadratic along
the wave vector (``bench/configs/physics_chirp.toml``), whose truth is the fringes' tangent at the
cloud's centre (:func:`recon.analysis.fringes.phantom_fringes`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchlib import machine_info, save_json  # noqa: E402
from recon.analysis.fringes import fit_fringes, fringe_errors, phantom_fringes  # noqa: E402
from recon.fitting.config import FitConfig, field_factory, resolved  # noqa: E402
from recon.fitting.data import load_fit_data  # noqa: E402
from recon.fitting.fringe_bound import fringe_bound  # noqa: E402
from recon.fitting.projector import Projector  # noqa: E402
from recon.fitting.raypool import build_ray_pool, rays_per_sample  # noqa: E402
from recon.io.volume import read_volume  # noqa: E402
from recon.simulation.campaign import simulate_campaign  # noqa: E402

SYSTEM = ROOT / "data" / "run042" / "system.toml"
POOL_CACHE = Path(os.environ.get("RECON_POOL_CACHE", Path.home() / ".cache" / "recon" / "pools"))
SIM = {"atoms": 1e6, "photons_per_atom": 200.0, "seed": 7, "drift_um": 20.0, "atom_spread": 0.03,
       "samples": 4, "step_mm": 0.02}


def _stats(errors: list[float], sds: list[float], split_sds: list[float], factor: float | None) -> dict:
    """Bias, RMS error, median reported sd and coverage of ±1 sd over the shots.

    With the fits' thinning-split sds (``recon fit --uncertainty K``): their median and the coverage
    of their 68 % interval, ± ``factor`` (Student's t_K) × sd.
    """
    rows = [(e, s, q) for e, s, q in zip(errors, sds, split_sds, strict=True) if math.isfinite(e)]
    if not rows:
        return {"shots": 0}
    e, s, q = (np.array([r[i] for r in rows], dtype=float) for i in range(3))
    known, split = np.isfinite(s), np.isfinite(q)
    out = {"shots": len(e), "bias": float(e.mean()), "rms": float(np.sqrt((e ** 2).mean())),
           "sd_of_errors": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
           "reported_sd_median": float(np.median(s[known])) if known.any() else None,
           "coverage": float((np.abs(e[known]) <= s[known]).mean()) if known.any() else None}
    if factor is not None and split.any():
        out.update(split_sd_median=float(np.median(q[split])),
                   split_sd_rms=float(np.sqrt((q[split] ** 2).mean())),
                   split_coverage=float((np.abs(e[split]) <= factor * q[split]).mean()),
                   split_shots=int(split.sum()))
    return out


def _float(row: dict, key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _shot_errors(row: dict, fit, truth: dict, split: dict) -> dict:
    """Each figure's (error against the truth, reported sd, thinning-split sd) for one shot.

    nan where none is reported; ``split`` is the shot's metrics.json ``uncertainty["sd"]`` ({} if none).
    """
    def error(key: str, scale: float = 1.0) -> float:
        return scale * (_float(row, key) - _float(row, f"truth_{key}"))

    def q(name: str) -> float:
        value = split.get(name)
        return math.nan if value is None else float(value)

    errors = fringe_errors(fit.to_json(), truth)
    out = {"atoms": (error("atoms"), _float(row, "atoms_sd"), q("atoms")),
           "period_um": (1e3 * (fit.period_mm - truth["period_mm"]), 1e3 * fit.sd["period_mm"],
                         q("period_um")),
           "direction_deg": (errors["direction_deg"], math.nan, math.nan),
           "phase_rad": (errors["phase_rad"], fit.sd["phase_at_origin_rad"], q("phase_at_origin_rad")),
           "contrast": (fit.contrast - 1.0, fit.sd["contrast"], q("contrast"))}  # sin² fringes: contrast 1
    for axis in "xyz":
        out[f"centroid_{axis}_um"] = (error(f"centroid_{axis}_mm", 1e3),
                                      _float(row, f"centroid_{axis}_sd_um"), q(f"centroid_{axis}_um"))
        out[f"width_{axis}_um"] = (error(f"width_{axis}_mm", 1e3), _float(row, f"width_{axis}_sd_um"),
                                   q(f"width_{axis}_um"))
    return out


def _phase_bound(run: Path) -> dict:
    """The Cramér–Rao sds of the fringe figures for one shot's truth, through its instrument and pixels.

    The truth's own fringe model (``fit_fringes`` of its truth.tif) on EM's grid, projected by the
    fit's projector over the shot's pool (:func:`recon.fitting.fringe_bound.fringe_bound`).
    """
    data, _, _ = load_fit_data(run)
    cfg = resolved(FitConfig(), data)
    pool = build_ray_pool(data, samples=cfg.pool_samples, seed=cfg.seed,
                          rays_per_sample=rays_per_sample(data, cfg.defocused_rays), cache_dir=POOL_CACHE,
                          sampling=cfg.pool_sampling)
    box = data.system.volume
    shape = field_factory(cfg, box.min_mm.tolist(), box.max_mm.tolist(), 1.0, "cpu").grid.shape[2:]
    projector = Projector(pool, box.min_mm.tolist(), box.max_mm.tolist(), shape,
                          photons_per_atom=data.photons_per_atom, step_mm=cfg.step_mm)
    truth = fit_fringes(read_volume(run / "truth.tif"))
    bound = fringe_bound(truth.params, pool, projector)
    return {"shot": run.name, "grid": list(shape), **{k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in bound.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/recon_physics"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "physics.json")
    parser.add_argument("--photons-per-atom", type=float, default=SIM["photons_per_atom"],
                        help="photons per atom of the simulated shots (run042's budget: 200)")
    parser.add_argument("--config", type=Path, default=None,
                        help="fit settings for every shot (e.g. uncertainty_splits = 2, fringes = true); "
                             "their campaign is kept apart: WORK/campaign-<its name>")
    parser.add_argument("--phantom", default="fringes",
                        help="a registry phantom or a phantom file (e.g. bench/configs/physics_chirp.toml)")
    args = parser.parse_args()
    work = args.work.resolve()
    shots = work / "shots"
    campaign = work / ("campaign" if args.config is None else f"campaign-{args.config.stem}")
    sim = {**SIM, "photons_per_atom": args.photons_per_atom}
    phantom = Path(args.phantom)
    definition = phantom.read_text() if phantom.suffix == ".toml" else None
    report = {"benchmark": "physics", "shots": args.shots, "system": str(SYSTEM.relative_to(ROOT)),
              "phantom": args.phantom, "phantom_file": definition, "simulation": sim,
              "fit_config": None if args.config is None else args.config.read_text()}
    recorded = shots / "simulation.json"  # the shots in --work are reused only if simulated alike
    alike = {**sim, "phantom": args.phantom, "phantom_file": definition}
    if (not (shots / "truth.csv").exists() or len(list(shots.glob("shot_*"))) != args.shots
            or not recorded.exists() or json.loads(recorded.read_text()) != alike):
        start = time.perf_counter()
        simulate_campaign(SYSTEM, args.phantom, shots, args.shots, overwrite=True, **sim)
        recorded.write_text(json.dumps(alike))
        for old in work.glob("campaign*"):  # fits of other shots must not be reused
            shutil.rmtree(old, ignore_errors=True)
        report["simulate_s"] = round(time.perf_counter() - start, 1)
        print(f"simulated {args.shots} shots in {report['simulate_s']} s", flush=True)
    start = time.perf_counter()
    command = [sys.executable, "-m", "recon.cli", "batch", str(shots), "--out", str(campaign), "--workers",
               str(args.workers), "--threads", "1", "--quiet",
               *(["--config", str(args.config)] if args.config else [])]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"recon batch failed ({proc.returncode}): {proc.stderr[-1500:]}")
    report["batch_s"] = round(time.perf_counter() - start, 1)
    with open(campaign / "results.csv", newline="") as f:
        rows = {r["shot"]: r for r in csv.DictReader(f)}
    per_shot, factors = [], set()
    for name, row in sorted(rows.items()):
        truth = phantom_fringes(json.loads((shots / name / "phantom.json").read_text())["params"])
        fit = fit_fringes(read_volume(campaign / "shots" / name / "density.tif"))
        noise = json.loads((campaign / "shots" / name / "metrics.json").read_text()).get("uncertainty") or {}
        if noise:
            factors.add(noise["interval_factor"])
        per_shot.append({"shot": name, "detected": fit.detected,
                         **_shot_errors(row, fit, truth, noise.get("sd") or {})})
    factor = factors.pop() if len(factors) == 1 else None
    report["bound"] = _phase_bound(shots / "shot_0000")
    figures = [k for k in per_shot[0] if k not in ("shot", "detected")]
    report["figures"] = {k: _stats(*([r[k][i] for r in per_shot] for i in range(3)), factor) for k in figures}
    report["split_interval_factor"] = factor
    report["detected"] = sum(r["detected"] for r in per_shot)
    report["per_shot"] = per_shot
    report["machine"] = machine_info()
    save_json(args.out, report)
    bound = report["bound"]
    print(f"Cramér–Rao bound at shot 0's truth: phase at the origin {bound['phase_at_origin_rad']:.4g} rad, "
          f"period {1e3 * bound['period_mm']:.4g} µm, contrast {bound['contrast']:.4g}")
    print(f"{'figure':<16}{'bias':>10}{'RMS':>10}{'sd(err)':>10}{'reported sd':>13}{'coverage':>10}"
          f"{'split sd':>10}{'coverage':>10}")
    for k, s in report["figures"].items():
        cov = "—" if s.get("coverage") is None else f"{100 * s['coverage']:.0f} %"
        sd = "—" if s.get("reported_sd_median") is None else f"{s['reported_sd_median']:.4g}"
        q = "—" if s.get("split_sd_median") is None else f"{s['split_sd_median']:.4g}"
        qc = "—" if s.get("split_coverage") is None else f"{100 * s['split_coverage']:.0f} %"
        print(f"{k:<16}{s['bias']:>10.4g}{s['rms']:>10.4g}{s['sd_of_errors']:>10.4g}{sd:>13}{cov:>10}{q:>10}{qc:>10}")


if __name__ == "__main__":
    main()
