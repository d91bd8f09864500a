"""Fewer EM passes: the held-out deviance against passes for the EM update variants, side by side.

For every phantom the expected views are rendered once through the instrument of data/run042
(as ``bench/accuracy.py`` does: its own ray samples and step, no inverse crime), Poisson and read
noise drawn per noise seed, the pool traced per fit seed. Every variant fits the same data with
the same pool and start; only the update differs:

- ``osem``: today's default (32 random subsets of single pixels, ω = 1);
- ``block64``: subsets drawn as blocks of 64 consecutive pixels (:func:`recon.fitting.em.partition`);
- ``powerW``: the over-relaxed update ``x ← x·ratio^ω`` with ω = W (``em_power``);
- ``powerW-block64``: both.

Per case it records the held-out deviance at every check (against passes over the training
pixels), where the stop rule stopped and which check it kept, the EM loop's seconds (one torch
thread; the variants of a case run one after another in one process), and the kept field's
errors against the truth (FSC-0.5, atoms, widths). The summary per variant: mean ± sd over the
cases of the updates made, the loop's seconds relative to ``osem`` on the same case, and the
differences from ``osem`` of the kept check's held-out deviance and FSC-0.5.

JSON is written after every case and a rerun skips the cases already there (``--fresh`` starts
over), so it can run in the background and be resumed.

    python bench/em_acceleration.py [--phantoms two_clouds,gaussian] [--fit-seeds 1,2]
        [--noise-seeds 10,11] [--variants osem,block64,power1.5,power2,power2-block64]
        [--out bench/results/em_acceleration.json]

Tuning (choosing the variant and ω) used phantom run042 with fit seed 0 and noise seed 42 only
(``--phantoms run042 --fit-seeds 0 --noise-seeds 42 --out …``); the defaults report on other
phantoms and seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accuracy import PHANTOMS, PHOTONS, RUN, _errors, _noisy, _on, _pool_for, _with_electrons
from benchlib import machine_info, save_json, using_pool

from recon.analysis.moments import cloud_metrics
from recon.fitting.config import FitConfig, field_factory
from recon.fitting.data import load_fit_data
from recon.fitting.loop import run_fit
from recon.simulation.phantom_file import load_phantom
from recon.simulation.simulate import expected_views, simulation_regions
from recon.simulation.truth import truth_volume


def variant_settings(name: str) -> dict:
    """FitConfig overrides of a variant name (``osem``, ``block64``, ``power1.5``, ``power2-block64`` …)."""
    settings: dict = {}
    for part in name.split("-"):
        if part == "osem":
            continue
        if part.startswith("block"):
            settings["subset_block"] = int(part[5:])
        elif part.startswith("power"):
            settings["em_power"] = float(part[5:])
        else:
            raise SystemExit(f"em_acceleration: unknown variant part {part!r} in {name!r}")
    return settings


def _stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(cases: list[dict], variants: list[str]) -> list[dict]:
    """Per variant: updates, loop seconds relative to osem, kept check's deviance and FSC against osem's."""
    by_case: dict[tuple, dict] = {}
    for c in cases:
        by_case.setdefault((c["phantom"], c["fit_seed"], c["noise_seed"]), {})[c["variant"]] = c
    rows = []
    for v in variants:
        runs = [group[v] for group in by_case.values() if v in group]
        paired = [(group[v], group["osem"]) for group in by_case.values() if v in group and "osem" in group]
        rows.append({
            "variant": v, "cases": len(runs),
            "updates": _stats([r["steps"] for r in runs]),
            "best_update": _stats([r["best_step"] for r in runs]),
            "loop_s": _stats([r["loop_s"] for r in runs]),
            "loop_s_vs_osem": _stats([a["loop_s"] / b["loop_s"] for a, b in paired]),
            "best_deviance_minus_osem": _stats([a["best_deviance"] - b["best_deviance"] for a, b in paired]),
            "fsc05_um": _stats([r["errors"]["fsc05_um"] for r in runs]),
            "fsc05_um_minus_osem": _stats([a["errors"]["fsc05_um"] - b["errors"]["fsc05_um"]
                                           for a, b in paired]),
            "atoms_pct": _stats([r["errors"]["atoms_pct"] for r in runs]),
            "widths_pct_max_abs": _stats([max(abs(w) for w in r["errors"]["widths_pct"]) for r in runs]),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantoms", default="two_clouds,gaussian")
    parser.add_argument("--fit-seeds", default="1,2")
    parser.add_argument("--noise-seeds", default="10,11")
    parser.add_argument("--variants", default="osem,block64,power1.5,power2,power2-block64")
    parser.add_argument("--out", default="bench/results/em_acceleration.json")
    parser.add_argument("--fresh", action="store_true", help="ignore the cases already in --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = args.variants.split(",")
    for v in variants:
        variant_settings(v)
    out = Path(args.out)
    report = {"cases": []}
    if out.is_file() and not args.fresh:
        report = json.loads(out.read_text())
    done = {(c["phantom"], c["fit_seed"], c["noise_seed"], c["variant"]) for c in report["cases"]}
    base, _, _ = load_fit_data(RUN)
    system = base.system
    box = system.volume
    regions = [r for r in simulation_regions(system) if r.name in {v.name for v in base.views}]
    sigma = float(base.read_noise_e)
    pools: dict = {}
    work = Path(tempfile.mkdtemp(prefix="bench_em_acceleration_"))
    for pname in args.phantoms.split(","):
        seeds = [(f, n) for f in map(int, args.fit_seeds.split(","))
                 for n in map(int, args.noise_seeds.split(","))]
        todo = [(f, n, v) for f, n in seeds for v in variants if (pname, f, n, v) not in done]
        if not todo:
            continue
        source, atoms, options = PHANTOMS[pname]
        phantom = load_phantom(source, atoms=atoms, options=options or None)
        t0 = time.perf_counter()
        expected = expected_views(system, phantom, regions, photons_per_atom=PHOTONS, samples=8,
                                  step_mm=0.02, seed=1000)
        print(f"{pname}: expected views rendered in {time.perf_counter() - t0:.0f} s", flush=True)
        truth = truth_volume(phantom, box.min_mm.tolist(), box.max_mm.tolist(), 0.02)
        truth_m = cloud_metrics(truth)
        for fit_seed, noise_seed, variant in todo:
            data = _with_electrons(base, _noisy(expected, 1.0, sigma, noise_seed))
            pool = _pool_for(pools, base, data, fit_seed)
            cfg = FitConfig(seed=fit_seed, device="cpu", voxel_size_mm=0.02, **variant_settings(variant))
            with using_pool(pool):
                result = run_fit(data, cfg, work / f"{pname}-{fit_seed}-{noise_seed}-{variant}",
                                 make_field=field_factory)
            state = result.state
            case = {"phantom": pname, "fit_seed": fit_seed, "noise_seed": noise_seed, "variant": variant,
                    "settings": variant_settings(variant), "steps": state.step, "stopped_by": state.stopped,
                    "best_step": result.stop_rule.best_step, "best_deviance": result.stop_rule.best,
                    "loop_s": round(state.elapsed_s, 2),
                    "checks": [{"step": int(k), "passes": k / cfg.subsets, "deviance": d}
                               for k, d in state.heldout],
                    "errors": _errors(_on(truth, result.field), truth, truth_m)}
            report["cases"].append(case)
            report["summary"] = summarise(report["cases"], variants)
            report["machine"] = machine_info(torch.device("cpu"))
            report["command"] = "python bench/em_acceleration.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "fresh")
            save_json(out, report)
            print(f"  {pname} fit {fit_seed} noise {noise_seed} {variant}: {state.step} updates "
                  f"(best {result.stop_rule.best_step}, deviance {result.stop_rule.best:.5f}), "
                  f"{state.elapsed_s:.1f} s, FSC-0.5 {case['errors']['fsc05_um']:.1f} µm, "
                  f"atoms {case['errors']['atoms_pct']:+.2f} %", flush=True)
    report["summary"] = summarise(report["cases"], variants)
    save_json(out, report)
    print(f"{'variant':<18}{'cases':>6}{'updates':>14}{'loop vs osem':>16}{'Δ deviance':>18}{'Δ FSC µm':>16}")
    for r in report["summary"]:
        def ms(s, f=".1f"):
            return "—" if s["mean"] is None else f"{s['mean']:{f}} ± {s['sd']:{f}}"
        print(f"{r['variant']:<18}{r['cases']:>6}{ms(r['updates']):>14}{ms(r['loop_s_vs_osem'], '.2f'):>16}"
              f"{ms(r['best_deviance_minus_osem'], '.4f'):>18}{ms(r['fsc05_um_minus_osem']):>16}")


if __name__ == "__main__":
    main()
