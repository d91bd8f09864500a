"""The README stays true: the tests its promises name exist, and its figures are those of the bench JSON."""

import json
import math
import pathlib
import re
import statistics

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_test_the_readme_names_exists():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What happens when things go wrong")[1].split("\n## ")[0]
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", section))
    assert len(named) >= 10
    defined = {m for p in (ROOT / "tests").rglob("test_*.py")
               for m in re.findall(r"^def (test_[a-z0-9_]+)", p.read_text(encoding="utf-8"), re.M)}
    assert named <= defined, sorted(named - defined)


def _json(name: str) -> dict:
    return json.loads((ROOT / "bench" / "results" / name).read_text(encoding="utf-8"))


def _signed(value: float, spec: str) -> str:
    """``+1.2`` / ``−0.8``: the README's signed numbers (a true minus sign)."""
    text = format(abs(value), spec)
    return ("−" if value < 0 and float(text) != 0 else "+") + text


#: The physics benches' figures as their README tables name them: (label, unit, format).
_FIGURES = {"atoms": ("atoms", "", ".0f"), "centroid_x_um": ("centroid x", " µm", ".2f"),
            "centroid_y_um": ("centroid y", " µm", ".2f"), "centroid_z_um": ("centroid z", " µm", ".2f"),
            "width_z_um": ("width σ z", " µm", ".2f"), "period_um": ("fringe period", " µm", ".3f"),
            "phase_rad": ("fringe phase at the origin", " rad", ".4f"),
            "contrast": ("fringe contrast − 1", "", ".3f")}


def _figure_rows(bench: dict, keys: tuple, columns: tuple) -> list[str]:
    """A physics bench's table rows: label | bias | RMS | then ``columns`` (coverages as percentages)."""
    rows = []
    for key in keys:
        name, unit, spec = _FIGURES[key]
        f = bench["figures"][key]
        cells = [_signed(f["bias"], spec) + unit, format(f["rms"], spec) + unit]
        cells += [f"{100 * f[c]:.0f} %" if "coverage" in c else format(f[c], spec) + unit for c in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _small(value: float) -> str:
    """``2.1e-7``: two figures, the exponent without its leading zero."""
    return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")


#: The other phantoms with the significance rule of the held-out stop, and without.
STOP_PHANTOMS = ("accuracy_phantoms_stop.json", "accuracy_phantoms_grid.json")


def _phantom(name: str, phantom: str) -> dict:
    """The default row of ``phantom`` in the bench JSON ``name``."""
    return next(r for r in _json(name)["rows"] if r["phantom"] == phantom and r["method"] == "default")


def _phantom_halves(name: str, phantom: str) -> dict:
    """The split-halves row of ``phantom`` in the bench JSON ``name``."""
    return next(r for r in _json(name)["rows"] if r["phantom"] == phantom and r["method"] == "split-halves")


#: The run042 fits on seeds no run had touched: today's grid, and 128³.
FRESH = ("accuracy_fresh_grid.json", "accuracy_fresh_128.json")


def _quoted_numbers() -> list[str]:
    """The figures of the README's results and performance sections that a bench JSON holds, as quoted."""
    fit = _json("fit_run042.json")
    side, m, err = fit["side_by_side"], fit["metrics"], fit["errors"]
    second, summary = fit["second_shot_metrics"], fit["summary"]
    fsc = m["fsc_truth"]
    proj = _json("projector_pass.json")
    acc = _json("accuracy.json")
    default = next(r for r in acc["rows"] if r["method"] == "default" and r["phantom"] == "run042")
    six, pool16 = (_json(name)["rows"][0] for name in ("accuracy_six.json", "accuracy_pool16.json"))
    quoted = [
        f"{side['wall_s']:.1f} s against {side['baseline_wall_s']:.1f} s ({side['speedup']:.1f}× faster; "
        f"{summary['speedup']['min']:.1f}× and {summary['speedup']['max']:.1f}× in the others)",
        f"cache, {summary['second_shot_speedup']['median']:.1f}× faster in the median round for it "
        f"({summary['second_shot_speedup']['min']:.1f}–{summary['second_shot_speedup']['max']:.1f}×)",
        f"peak memory {m['peak_memory_mb'] / 1000:.1f} GB",
        f"after {m['steps']} EM updates",
        f"{side['wall_s']:.1f} s for this tree against {side['baseline_wall_s']:.1f} s for",
        f"({side['speedup']:.1f}×; target 8×;",
        "the three rounds " + ", ".join(f"{v:.1f}×" for v in summary["speedup"]["values"]),
        f"cache, {summary['second_shot_speedup']['median']:.1f}× in its median round (target 15×; "
        + ", ".join(f"{v:.1f}×" for v in summary["second_shot_speedup"]["values"]) + ")",
        f"the second shot took {side['second_shot_wall_s']:.1f} s: {second['fit_loop_s']:.1f} s are EM's "
        f"{m['steps']}",
        f"{second['time_s'] - second['fit_loop_s']:.1f} s the pool read",
        f"{second['outputs_s']:.1f} s the outputs",
        f"{100 * second['outputs_s'] / side['second_shot_wall_s']:.0f} % of the wall time",
        f"| atoms (in the box, truth {fit['truth']['atoms']:.3e}".replace("e+0", "e"),
        f"{_signed(err['atoms']['error'], '.2f')} % |",
        "| centroid x, y, z | " + ", ".join(_signed(err[f"centroid {a} (µm)"]["error"], ".1f")
                                             for a in "xyz"),
        "| width σ x, y, z | " + ", ".join(_signed(err[f"width {a} (µm)"]["error"], ".1f")
                                           for a in "xyz"),
        f"| FSC 0.5 against the truth | {fsc['resolution_um']:.2f} µm (interpolated "
        f"{fsc['resolution_interpolated_um']:.2f} µm) |",
        ", ".join(f"{v:.1f}" for v in fsc["resolution_xyz_um"]) + f" µm (sphericity {fsc['sphericity']:.3f})",
        "{:.2f} s against {:.2f} s ({:.1f}×)".format(*(_json("gaussian_start.json")[k]
                                                       for k in ("numba_s", "torch_s", "speedup"))),
        f"forward {proj['numba_forward_s']:.2f} s and back-projection {proj['numba_adjoint_s']:.2f} s",
        f"against {proj['torch_pass_s_scaled']:.1f} s for the torch render",
        f"{proj['speedup']:.1f}× (target 20×)",
        f"One EM subset ({proj['em_subset_s']['pixels_per_subset']} pixels",
        f"{1e3 * proj['em_subset_s']['locality']['forward']:.0f} and "
        f"{1e3 * proj['em_subset_s']['locality']['adjoint']:.0f} ms in",
        f"per subset {proj['em_subset_s']['forward_ratio']:.2f}× and "
        f"{proj['em_subset_s']['adjoint_ratio']:.2f}× as long",
        f"agree to {_small(proj['max_rel_difference_vs_float64_spec']['numba'])} of the largest pixel",
        f"only to {_small(proj['max_rel_difference_vs_float64_spec']['torch_float32'])}",
        f"the nine took {acc['wall_s']:.0f} s",
        f"six default fits {_json('accuracy_six.json')['wall_s']:.0f} s",
        f"took {_json('accuracy_six.json')['wall_s']:.0f} s with the simulation",
        f"day): {_json('accuracy_six_rerun.json')['wall_s']:.0f} s, the same figures",
        f"FSC-0.5 **{pool16['fsc05_um']['mean']:.1f} ± {pool16['fsc05_um']['sd']:.1f} µm** against "
        f"{six['fsc05_um']['mean']:.1f} ± {six['fsc05_um']['sd']:.1f}, atoms "
        f"{_signed(pool16['atoms_pct']['mean'], '.2f')} ± {pool16['atoms_pct']['sd']:.2f} %",
        *(f"**{fsc['mean']:.1f} ± {fsc['sd']:.1f} µm**" for fsc in
          (_json(name)["rows"][0]["fsc05_um"] for name in ("accuracy_10x.json", "accuracy_pool16_10x.json",
                                                            "accuracy_10x_sim32.json",
                                                            "accuracy_10x_fine.json"))),
        *(f"{fsc['mean']:.1f} ± {fsc['sd']:.1f} (`{name}`)" for name, fsc in
          ((name, _json(name)["rows"][0]["fsc05_um"]) for name in (
              "accuracy_six.json", "accuracy_10x.json", "accuracy_pool16.json", "accuracy_pool16_10x.json",
              "accuracy_fine.json", "accuracy_10x_fine.json", "accuracy_10x_fine16.json",
              "accuracy_10x_em192.json", "accuracy.json", "accuracy_10x_sobol.json", "accuracy_sobol16.json",
              "accuracy_10x_sobol32_sim8.json", "accuracy_sobol.json", "accuracy_10x_grid.json",
              "accuracy_stop.json", "accuracy_10x_stop.json", "accuracy_10x_boost.json"))),
        "**{:.1f} ± {:.1f} µm**, atoms {} ± {:.2f} %".format(
            *(_json("accuracy_10x_grid.json")["rows"][0]["fsc05_um"][k] for k in ("mean", "sd")),
            _signed(_json("accuracy_10x_grid.json")["rows"][0]["atoms_pct"]["mean"], ".2f"),
            _json("accuracy_10x_grid.json")["rows"][0]["atoms_pct"]["sd"]),
        "on the tuning seed (fit seed 0, noise seed 42; `--set",
        "deviances lie within {:.3f} per pixel of their least".format(max(
            c["deviance"] - min(d["deviance"] for d in run["checks"])
            for run in _json(FRESH[0])["runs"] for c in run["checks"] if c["step"] >= 32)),
        ("fringes {:.1f} µm against {:.1f}, two_clouds {:.1f} against {:.1f} with its x width {} % "
         "against {} %").format(
            *(_phantom(n, "fringes")["fsc05_um"]["mean"] for n in STOP_PHANTOMS),
            *(_phantom(n, "two_clouds")["fsc05_um"]["mean"] for n in STOP_PHANTOMS),
            *(_signed(_phantom(n, "two_clouds")["widths_pct"][0]["mean"], ".1f") for n in STOP_PHANTOMS)),
        "**{:.1f} ± {:.1f} µm** against {:.1f} ± {:.1f}, atoms {} ± {:.2f} %; the fresh".format(
            *(_json(n)["rows"][0]["fsc05_um"][k] for n in ("accuracy_stop.json", "accuracy_plain.json")
              for k in ("mean", "sd")),
            _signed(_json("accuracy_stop.json")["rows"][0]["atoms_pct"]["mean"], ".2f"),
            _json("accuracy_stop.json")["rows"][0]["atoms_pct"]["sd"]),
        "**{:.1f} ± {:.1f} µm** against {:.1f} ± {:.1f}, atoms {} ± {:.2f} %; the tuning".format(
            *(_json(n)["rows"][0]["fsc05_um"][k] for n in ("accuracy_fresh_stop.json", FRESH[0])
              for k in ("mean", "sd")),
            _signed(_json("accuracy_fresh_stop.json")["rows"][0]["atoms_pct"]["mean"], ".2f"),
            _json("accuracy_fresh_stop.json")["rows"][0]["atoms_pct"]["sd"]),
        "`accuracy_tune_stop.json`) {:.1f} µm against {:.1f}; 10×".format(
            *(_json(n)["rows"][0]["fsc05_um"]["mean"]
              for n in ("accuracy_tune_stop.json", "accuracy_tune_grid.json"))),
        "`accuracy_10x_stop.json`) {:.1f} ± {:.1f} µm against {:.1f} ± {:.1f}; the same".format(
            *(_json(n)["rows"][0]["fsc05_um"][k]
              for n in ("accuracy_10x_stop.json", "accuracy_10x_grid.json") for k in ("mean", "sd"))),
        *(prefix + ", ".join(f"{r['ratio']['mean']:.2f}× ({r['phantom']})" for r in _json(name)["rows"]
                             if r["method"] == "split-halves")
          for prefix, name in (("over the truth's FSC-0.5 is ", "accuracy_halves_boost.json"),
                               ("711 s): ", "accuracy_halves_stop.json"),
                               ("717 s): ", "accuracy_halves_grid.json"))),
        f"{_json('accuracy_halves_boost.json')['wall_s']:.0f} s with other jobs beside it",
        "agree to {:.1f} µm where they agreed to {:.1f} with the stop before".format(
            *(_phantom_halves(n, "edge")["fsc0143_um"]["mean"]
              for n in ("accuracy_halves_stop.json", "accuracy_halves_grid.json"))),
        f"the fringes ({_phantom_halves('accuracy_halves_stop.json', 'fringes')['ratio']['mean']:.3f}×;",
        "{:.1f} ± {:.1f} µm against {:.1f} ± {:.1f} µm (atoms {} ± {:.2f} % against {} ± {:.2f} %)".format(
            *(_json(n)["rows"][0]["fsc05_um"][k] for n in FRESH for k in ("mean", "sd")),
            *(f(_json(n)["rows"][0]["atoms_pct"]) for n in FRESH
              for f in (lambda a: _signed(a["mean"], ".2f"), lambda a: a["sd"]))),
        "it gives {:.1f} µm against {:.1f} µm on 128³".format(
            *(_json(n)["rows"][0]["fsc05_um"]["mean"] for n in ("accuracy_tune_grid.json",
                                                                "accuracy_tune_sobol.json"))),
        "the same fits give {:.1f} ± {:.1f} µm".format(
            *(_json("accuracy_10x_sobol32_sim8.json")["rows"][0]["fsc05_um"][k] for k in ("mean", "sd"))),
        *(f"{_json(name)['rows'][0]['fsc05_um']['mean']:.1f} µm (`{name}`" for name in (
            "accuracy_10x_tune_random32.json", "accuracy_10x_tune_sobol16.json",
            "accuracy_10x_tune_sobol32.json")),
        "with noise seed 42, {:.1f} µm against {:.1f} µm with random samples".format(
            *(_json(n)["rows"][0]["fsc05_um"]["mean"] for n in ("accuracy_tune_sobol.json",
                                                                "accuracy_tune_random.json"))),
        "on the tuning seeds {:.1f} µm against {:.1f} with 16 random rays".format(
            *(_json(n)["rows"][0]["fsc05_um"]["mean"] for n in ("accuracy_tune_sobol16.json",
                                                                "accuracy_tune_random16.json"))),
        "{:.1f}–{:.1f} s a fit against {:.1f}–{:.1f} s".format(
            *(f(r["fit_s"] for r in _json(name)["runs"])
              for name in ("accuracy_10x_sobol32.json", "accuracy_10x_sobol.json") for f in (min, max))),
        "**{:.1f} ± {:.1f} µm** ({:.1f} ± {:.1f} with 16 random rays)".format(
            *(_json("accuracy_sobol16.json")["rows"][0]["fsc05_um"][k] for k in ("mean", "sd")),
            *(pool16["fsc05_um"][k] for k in ("mean", "sd"))),
        f"**{_json('accuracy_10x_sobol32.json')['rows'][0]['fsc05_um']['mean']:.1f} ± "
        f"{_json('accuracy_10x_sobol32.json')['rows'][0]['fsc05_um']['sd']:.1f}** "
        "(`accuracy_10x_sobol32.json`)",
        f"{_json('accuracy_10x_sobol32.json')['wall_s']:.0f} s with other jobs beside it",
        f"is {_json('accuracy_10x_em192.json')['rows'][0]['power_beyond']['mean']:.0f}× the",
        f"in {_json('accuracy_pool16.json')['wall_s']:.0f} s against "
        f"{_json('accuracy_six.json')['wall_s']:.0f} s",
        f"{acc['wall_s']:.0f} s for its nine fits",
        f"**{default['fsc05_um']['mean']:.1f} ± {default['fsc05_um']['sd']:.1f}**",
        f"**{_signed(default['atoms_pct']['mean'], '.2f')} ± {default['atoms_pct']['sd']:.2f}**",
        "FSC-0.5 {:.1f} ± {:.1f} µm (the oracle's {:.1f} ± {:.1f}; a smooth truth".format(
            *(r["fsc05_um"][k] for r in _json("accuracy_tilted.json")["rows"][:2] for k in ("mean", "sd"))),
        "atoms {} ± {:.2f} %, centroid {} µm, widths {} %".format(
            _signed(_phantom("accuracy_tilted.json", "tilted")["atoms_pct"]["mean"], ".2f"),
            _phantom("accuracy_tilted.json", "tilted")["atoms_pct"]["sd"],
            " / ".join(f"{_signed(c['mean'], '.1f')} ± {c['sd']:.1f}"
                       for c in _phantom("accuracy_tilted.json", "tilted")["centroid_um"]),
            " / ".join(f"{_signed(w['mean'], '.1f')} ± {w['sd']:.1f}"
                       for w in _phantom("accuracy_tilted.json", "tilted")["widths_pct"])),
        "the split halves {:.2f}× the truth's".format(
            _phantom_halves("accuracy_tilted.json", "tilted")["ratio"]["mean"]),
        f"seeds 10, 11, {_json('accuracy_tilted.json')['wall_s']:.0f} s, without the boost)",
        *("{} atoms {} ± {:.2f} %, centroid {} µm, widths {} %".format(
            name, _signed(row["atoms_pct"]["mean"], ".2f"), row["atoms_pct"]["sd"],
            " / ".join(f"{_signed(c['mean'], '.1f')} ± {c['sd']:.1f}" for c in row["centroid_um"]),
            " / ".join(f"{_signed(w['mean'], '.1f')} ± {w['sd']:.1f}" for w in row["widths_pct"]))
          for name, row in ((n, _phantom("accuracy_seeds.json", n))
                            for n in ("faint", "edge", "spike", "donut"))),
        f"the defaults before the boost, {_json('accuracy_seeds.json')['wall_s']:.0f} s): faint",
        "{:.2f}× the truth's {:.1f} µm for that".format(*next(
            (r["ratio"]["mean"], r["truth_fsc05_um"]["mean"])
            for r in acc["rows"] if r["method"] == "split-halves")),
        *_boost_quotes(acc),
    ]
    sampling = {(r["scheme"], r["samples"]): r for r in _json("pool_sampling.json")["rows"]}
    order = [("random", 8), ("sobol", 8), ("random", 16), ("sobol", 16)]
    sobol, sobol10 = (_json(name)["rows"][0] for name in ("accuracy_sobol.json", "accuracy_10x_sobol.json"))
    ten = _json("accuracy_10x.json")["rows"][0]
    quoted += [
        f"**{sampling[order[0]]['mirror_views_1x_mean']:.3f} σ with 8 random samples, "
        f"{sampling[order[1]]['mirror_views_1x_mean']:.3f} σ with 8 Sobol' samples**, "
        f"{sampling[order[2]]['mirror_views_1x_mean']:.3f} σ and "
        f"{sampling[order[3]]['mirror_views_1x_mean']:.3f} σ",
        "at 10× the photons " + ", ".join(f"{sampling[k]['mirror_views_10x_mean']:.3f}" for k in order[:3])
        + f" and {sampling[order[3]]['mirror_views_10x_mean']:.3f} σ",
        ", ".join(f"{sampling[k]['direct_view_10x_mean']:.3f}" for k in order[:3])
        + f" and {sampling[order[3]]['direct_view_10x_mean']:.3f} σ",
        f"FSC-0.5 **{sobol['fsc05_um']['mean']:.1f} ± {sobol['fsc05_um']['sd']:.1f} µm against "
        f"{six['fsc05_um']['mean']:.1f} ± {six['fsc05_um']['sd']:.1f}**, atoms "
        f"{_signed(sobol['atoms_pct']['mean'], '.2f')} ± {sobol['atoms_pct']['sd']:.2f} %",
        f"**{sobol10['fsc05_um']['mean']:.1f} ± {sobol10['fsc05_um']['sd']:.1f} µm against "
        f"{ten['fsc05_um']['mean']:.1f} ± {ten['fsc05_um']['sd']:.1f}**",
    ]
    grid = {r["budget"]: r for r in _json("accuracy_grid_em.json")["rows"]}
    em = [[r["default"]["fsc05_um"] for r in _json(name)["runs"] if r["fit_seed"] == 1]
          for name in ("accuracy_six.json", "accuracy_10x.json")]
    fsc = {b: grid[b]["fsc05_um"] for b in (1.0, 10.0)}
    fit_s = [r["fit_s"] for r in _json("accuracy_grid_em.json")["runs"]]
    em10 = next(r for r in _json("accuracy_10x_fine16.json")["runs"]
                if (r["fit_seed"], r["noise_seed"]) == (1, 10))
    quoted += [
        "| EM (the default), fit seed 1 of `accuracy_six.json` / `accuracy_10x.json` | "
        + " | ".join(f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" for v in em) + " |",
        "| hash grid, grid solver from EM's fit | "
        + " | ".join(f"{f['mean']:.1f} ± {f['sd']:.1f}" for f in fsc.values()) + " |",
        f"Atoms {_signed(grid[1.0]['atoms_pct']['mean'], '.2f')} ± {grid[1.0]['atoms_pct']['sd']:.2f} "
        "% at 1×",
        f"Each fit took {min(fit_s):.0f}–{max(fit_s):.0f} s",
        *(f"after {r['fit_s']:.0f} s: FSC-0.5 {r['default']['fsc05_um']:.1f} µm, held-out deviance "
          f"{min(c['deviance'] for c in r['checks']):.3f} per pixel"
          for r in _json("accuracy_grid_scratch.json")["runs"]),
        *(f"seed 1, noise seed 10, {r['fit_s']:.0f} s) the hash grid reaches "
          f"{r['default']['fsc05_um']:.1f} µm against EM's {em10['default']['fsc05_um']:.1f} µm on the "
          "same data, its held-out deviance "
          f"{min(c['deviance'] for c in r['checks']):.3f} per pixel against EM's "
          f"{min(c['deviance'] for c in em10['checks']):.3f}"
          for r in _json("accuracy_10x_grid_fine16.json")["runs"]),
    ]
    fields = {"hashgrid": "hashgrid (torch)", "voxel": "voxel 128³", "siren": "SIREN 3 × 256",
              "fourier": "Fourier features", "gauss": "Gaussian MLP", "tensorf": "TensoRF",
              "splitnet": "SplitNet", "mulfagrid": "MulFAGrid"}
    for r in _json("field_throughput.json")["results"]:
        part = "field" if r["part"] == "field" else "encoding only"
        m = {k: v / 1e6 for k, v in r.items() if k.endswith(("_per_s_median", "_per_s_best", "_per_cpu_s"))}
        quoted.append(f"| {fields[r['kind']]} | {part} | {r['threads']} | {r['n_params']:,} | "
                      f"{r['param_bytes'] / 1e6:.2f} | {r['saved_bytes_per_sample']:.0f} | "
                      f"{m['fwd_bwd_samples_per_s_median']:.3g} / {m['fwd_bwd_samples_per_s_best']:.3g} | "
                      f"{m['fwd_bwd_samples_per_cpu_s']:.3g} | {m['fwd_samples_per_s_median']:.3g} |")
    mot = _json("mot_4cam.json")["summary"]
    d, f = mot["default"], mot["fixed"]

    def pct(s: dict) -> str:
        return f"{_signed(100 * s['mean'], '.2f')} ± {100 * s['sd']:.2f} %"

    quoted += [
        f"| atoms | {pct(d['atoms_error'])} | {pct(f['atoms_error'])} |",
        f"| largest width error | {100 * d['worst_width_error']['mean']:.1f} ± "
        f"{100 * d['worst_width_error']['sd']:.1f} % | {100 * f['worst_width_error']['mean']:.1f} ± "
        f"{100 * f['worst_width_error']['sd']:.1f} % |",
        f"| largest centroid error | {d['worst_centroid_error_um']['mean']:.0f} ± "
        f"{d['worst_centroid_error_um']['sd']:.0f} µm | {f['worst_centroid_error_um']['mean']:.0f} ± "
        f"{f['worst_centroid_error_um']['sd']:.0f} µm |",
        f"| camera factors, largest error | {100 * d['worst_factor_error']['max']:.1f} % |",
        f"| FSC 0.5 against the truth | {d['fsc05_um']['mean']:.0f} ± {d['fsc05_um']['sd']:.0f} µm | "
        f"{f['fsc05_um']['mean']:.0f} ± {f['fsc05_um']['sd']:.0f} µm |",
        f"| atoms next to the faces | {100 * d['atoms_near_faces']['mean']:.2f} % | "
        f"{100 * f['atoms_near_faces']['mean']:.2f} % |",
        f"{d['wall_s']['mean']:.0f} s a fit and {d['peak_memory_mb']['mean'] / 1000:.1f} GB",
    ]
    names = {"osem": "OSEM (default)", "block64": "block64", "power1.5": "ω = 1.5", "power2": "ω = 2"}
    for row in _json("em_acceleration.json")["summary"]:
        u, dev, dfsc = row["updates"], row["best_deviance_minus_osem"], row["fsc05_um_minus_osem"]
        if row["variant"] == "osem":
            quoted.append(f"| OSEM (default) | {u['mean']:.1f} ± {u['sd']:.1f} | 0 | 0 |")
        else:
            quoted.append(f"| {names[row['variant']]} | {u['mean']:.1f} ± {u['sd']:.1f} | "
                          f"{_signed(dev['mean'], '.4f')} ± {dev['sd']:.4f} | "
                          f"{_signed(dfsc['mean'], '.1f')} ± {dfsc['sd']:.1f} |")
    batch = _json("batch.json")
    cases, series = batch["cases"], batch["cases"]["local-1"]["series"]
    for name, label in (("local-1", "local, 1 worker |"), ("local-2", "local, 2 workers |"),
                        ("ray-1", "Ray, 1 worker (private local Ray, its start-up included) |"),
                        ("ray-2", "Ray, 2 workers |"), ("local-1-warm", "local, 1 worker, `--warm-start` |")):
        c = cases[name]
        quoted.append(f"{label} {c['shots']} | {c['wall_s']:.1f} s | {c['shots_per_hour']}")
        quoted.append(f"{c['fit_seconds_mean']:.2f} s | {c['overhead_per_shot_s']:.2f} s |")
    quoted += [
        f"atoms {series['atoms_rms_pct']:.2f} % (the truth's shot-to-shot spread is "
        f"{series['atoms_truth_spread_pct']:.1f} %)",
        "centroid " + " / ".join(f"{series[f'centroid_{a}_rms_um']:.1f}" for a in "xyz") + " µm (x / y / z)",
        " / ".join(f"{series[f'drift_{a}_rms_um']:.1f}" for a in "xyz") + " µm. A fit",
        f"figures equal the local engine's (2 workers, one thread each) for all "
        f"{cases['ray-1']['identical_to_local_2'].split('/')[0]} shots",
        "steps {steps_mean_warm:.1f} against {steps_mean_cold:.1f}".format(**batch["warm_start"]),
    ]
    labels = {"robust": "robust", "least_squares": "least squares"}
    for row in _json("fringes.json")["rows"]:
        quoted.append(
            f"| {row['phantom']} | {labels[row['loss']]} | {_signed(row['period_pct']['mean'], '.2f')} ± "
            f"{row['period_pct']['sd']:.2f} % | {row['direction_deg']['mean']:.2f} ± "
            f"{row['direction_deg']['sd']:.2f}° | "
            f"{_signed(row['phase_rad']['mean'], '.3f')} ± {row['phase_rad']['sd']:.3f} rad | "
            f"{row['phase_sd_formal']['mean']:.3f} rad | {row['contrast']['mean']:.2f} |")
    physics = _json("physics.json")
    quoted += _figure_rows(physics, ("atoms", "centroid_x_um", "centroid_z_um", "width_z_um", "period_um",
                                     "phase_rad", "contrast"),
                           ("sd_of_errors", "reported_sd_median", "coverage"))
    bound, figures = physics["bound"], physics["figures"]
    quoted.append(f"is {bound['phase_at_origin_rad']:.4f} rad for the phase at the origin, "
                  f"{1e3 * bound['period_mm']:.3f} µm for the period and {bound['contrast']:.4f} for the "
                  "contrast")
    phase_ratio = figures["phase_rad"]["rms"] / bound["phase_at_origin_rad"]
    quoted.append(f"RMS error is {phase_ratio:.2f}× that bound")
    quoted.append(f"its period's {figures['period_um']['rms'] / (1e3 * bound['period_mm']):.1f}×")
    split = _json("physics_uncertainty.json")
    quoted += _figure_rows(split, ("atoms", "centroid_y_um", "width_z_um", "phase_rad"),
                           ("split_sd_rms", "split_coverage", "coverage"))
    quoted.append(f"the campaign took {split['batch_s']:.0f} s")
    quoted.append(f"± {split['split_interval_factor']:.2f} sd for two splits")
    low = _json("physics_low.json")
    quoted += _figure_rows(low, ("atoms", "centroid_z_um", "phase_rad", "contrast"),
                           ("sd_of_errors", "reported_sd_median", "coverage"))
    low_bound = low["bound"]["phase_at_origin_rad"]
    quoted.append(f"({low_bound:.4f} rad; the fitted phase's RMS error is "
                  f"{low['figures']['phase_rad']['rms'] / low_bound:.2f}× that bound")
    quoted.append(f"simulated in {low['simulate_s']:.0f} s, fitted by `recon batch` in "
                  f"{low['batch_s']:.0f} s")
    browser = _json("report_browser.json")
    quoted.append(f"{browser['bytes'] / 2**20:.2f} MB, {browser['images']} images, "
                  f"{'no problems' if not browser['problems'] else 'problems'}; its screenshot")
    dome = _json("batch_dome.json")
    cold, warm = dome["cases"]["local-1"], dome["cases"]["local-1-warm"]
    quoted += [
        "EM's steps to the held-out stop from {steps_mean_cold:.1f} to {steps_mean_warm:.1f}".format(
            **dome["warm_start"]),
        f"atoms {warm['series']['atoms_rms_pct']:.2f} % RMS against {cold['series']['atoms_rms_pct']:.2f} %",
        f"(its first shot, fitted cold in both cases, took {warm['first_shot_s']:.1f} s against "
        f"{cold['first_shot_s']:.1f} s)",
        "drift " + " / ".join(f"{warm['series'][f'drift_{a}_rms_um']:.1f}" for a in "xyz") + " µm against "
        + " / ".join(f"{cold['series'][f'drift_{a}_rms_um']:.1f}" for a in "xyz") + " µm",
    ]
    cover = {k: round(100 * v) for k, v in series["shot_noise_limit_coverage"].items()}
    low = {key: min(cover[f"{key}_{a}"] for a in "xyz") for key in ("centroid", "width")}
    high = {key: max(cover[f"{key}_{a}"] for a in "xyz") for key in ("centroid", "width")}
    quoted.append(f"holds the truth in {cover['atoms']} % of the shots for the atoms, {low['centroid']}–"
                  f"{high['centroid']} % for the centroid and {low['width']}–{high['width']} % for the "
                  "widths")
    return quoted + _fields_rows(_json("fields.json"))


def _fields_rows(bench: dict) -> list[str]:
    """The rows of the README's "Fields side by side" table, from bench/fields.py's summary."""

    def pm(row, key, spec=",.1f"):
        mean = row[f"{key}_mean"]
        return "—" if mean is None else f"{mean:{spec}} ± {row[f'{key}_sd'] or 0:{spec}}"

    rows = []
    for kind in dict.fromkeys(r["kind"] for r in bench["summary"]):
        at = {r["time_s"]: r for r in bench["summary"] if r["kind"] == kind}
        steps = ", ".join(str(c["steps"]) for c in bench["cases"].values() if c["kind"] == kind)
        late = at[120.0]
        atoms = _signed(late["atoms_pct_mean"], ".2f") + f" ± {late['atoms_pct_sd'] or 0:.2f} %"
        grads = [f"{late[f'gradient_{m}_{what}_exact_mean']:.2f}" for what in ("rel_rms", "cosine")
                 for m in ("autodiff", "central")]
        rows.append(f"| {kind} | {steps} | {pm(at[30.0], 'fsc05_um')} | {pm(late, 'fsc05_um')} | {atoms} | "
                    f"{grads[0]} / {grads[1]} | {grads[2]} / {grads[3]} |")
    return rows


def _fsc(row: dict | None) -> str:
    """A summary row's FSC-0.5: ``mean ± sd`` µm (no sd for one fit), or — where nothing resolved."""
    if row is None or row["fsc05_um_mean"] is None:
        return "—"
    sd = "" if row["fsc05_um_sd"] is None else f" ± {row['fsc05_um_sd']:,.0f}"
    return f"{row['fsc05_um_mean']:,.0f}{sd}"


def _atoms(row: dict) -> str:
    sd = "" if row["atoms_pct_sd"] is None else f" ± {row['atoms_pct_sd']:.1f}"
    return _signed(row["atoms_pct_mean"], ".1f") + sd + " %"


def _summary_at(bench: dict, kind: str, variant: str, t: float) -> dict | None:
    rows = [r for r in bench["summary"] if r["kind"] == kind and r.get("variant", "default") == variant
            and r["time_s"] == t]
    return rows[0] if rows else None


def _fields_sweep_rows(sweep: dict) -> list[str]:
    """The rows of the README's sweep table (bench/results/fields_sweep.json, the tuning seed)."""
    rows = []
    for case in sweep["cases"].values():
        kind, variant = case["kind"], case["variant"]
        early, late = (_summary_at(sweep, kind, variant, t) for t in (30.0, 120.0))
        rows.append(f"| {kind} | {variant} | {case['n_params']:,} | {case['steps']} | {_fsc(early)} | "
                    f"{_fsc(late)} | {_atoms(late)} |")
    return rows


#: The report runs of the fields' sweep: (README column, bench JSON).
_FIELD_RUNS = (("run042", "fields_best_run042.json"), ("fringes", "fields_fringes.json"),
               ("clumps", "fields_clumps.json"))


def _fields_best_rows() -> list[str]:
    """The rows of the README's table of each kind's best variant on the report seeds and runs."""
    runs = [(name, _json(path)) for name, path in _FIELD_RUNS]
    rows = []
    for case in dict((c["kind"], c) for c in runs[0][1]["cases"].values()).values():
        kind, variant = case["kind"], case["variant"]
        cells = []
        for _, bench in runs:
            early, late = (_summary_at(bench, kind, variant, t) for t in (30.0, 120.0))
            cells.append(f"{_fsc(early)} / {_fsc(late)} | {_atoms(late)}")
        late = _summary_at(runs[0][1], kind, variant, 120.0)
        grads = " / ".join(f"{late[f'gradient_{m}_cosine_exact_mean']:.2f}" for m in ("autodiff", "central"))
        rows.append(f"| {kind} ({variant}) | " + " | ".join(cells) + f" | {grads} |")
    return rows


#: The physics campaign of a fringe model's failure beside the one it holds: (column, JSON).
_FRINGE_SETS = (("straight", "physics.json"), ("chirped", "physics_chirp.json"))


def _fringe_set_rows() -> list[str]:
    """The rows of "When the fringe model does not hold": each figure's bias / RMS error per campaign."""
    sets = [_json(name)["figures"] for _, name in _FRINGE_SETS]
    labels = {**_FIGURES, "direction_deg": ("fringe direction (angle)", "°", ".3f"),
              "width_y_um": ("width σ y", " µm", ".2f")}
    rows = []
    for key in ("atoms", "centroid_y_um", "width_y_um", "period_um", "direction_deg", "phase_rad",
                "contrast"):
        name, unit, spec = labels[key]
        cells = [f"{_signed(f[key]['bias'], spec)} / {format(f[key]['rms'], spec)}{unit}" for f in sets]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def test_the_chirped_fringes_table_and_figures_are_the_benchs():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    chirp = _json("physics_chirp.json")
    figures, straight = chirp["figures"], _json("physics.json")["figures"]
    phase, bound = figures["phase_rad"], chirp["bound"]["phase_at_origin_rad"]
    atoms_se = figures["atoms"]["sd_of_errors"] / math.sqrt(chirp["shots"])
    quotes = _fringe_set_rows() + [
        f"gives a phase {phase['bias']:.3f} rad ahead of the tangent's in every shot",
        f"a bias {phase['bias'] / (3.0 * 0.5**2 / 2):.2f} times κσ²/2 = 0.375 rad",
        f"RMS error is {phase['rms'] / bound:.0f} times its Cramér–Rao bound",
        f"its scatter is {phase['sd_of_errors']:.4f} rad sd, against "
        f"{straight['phase_rad']['sd_of_errors']:.4f} rad for straight fringes",
        f"the centre's period ({100 * figures['period_um']['bias'] / 200:+.2f} %)",
        f"{100 * figures['atoms']['bias'] / 1e6:+.2f} % high "
        f"({figures['atoms']['bias'] / atoms_se:.1f} standard errors",
        f"against {100 * straight['atoms']['bias'] / 1e6:+.3f} % for straight fringes",
    ]
    assert all(e["phase_rad"][0] > 0 for e in chirp["per_shot"])  # "in every shot"
    missing = [q for q in quotes if q not in readme]
    assert not missing, missing


def _fields_sweep_quotes(sweep: dict) -> list[str]:
    """The prose of the sweep: the best variants' size and steps against the defaults'."""
    best = {c["kind"]: c["variant"] for c in _json(_FIELD_RUNS[0][1])["cases"].values()}
    cases = {(c["kind"], c["variant"]): c for c in sweep["cases"].values()}
    fewer, more = [], []
    for kind in ("siren", "fourier", "gauss", "splitnet"):
        default, chosen = cases[(kind, "default")], cases[(kind, best[kind])]
        fewer.append(default["n_params"] / chosen["n_params"])
        more.append(chosen["steps"] / default["steps"])
    return [f"the best variants: {min(fewer):.0f} to {max(fewer):.0f} times fewer parameters, "
            f"{min(more):.1f} to {max(more):.0f} times the steps in 120 s"]


def _fields_best_quotes() -> list[str]:
    """The recommendation's figures that no table row holds: EM's fit times, the MLPs' extremes."""
    runs = [_json(path) for _, path in _FIELD_RUNS]
    cases = [c for bench in runs for c in bench["cases"].values()]
    em_times = [c["fit_time_s"] for c in cases if c["kind"] == "voxel"]
    mlp = ("siren", "fourier", "gauss", "splitnet")
    late = [r for bench in runs for r in bench["summary"] if r["time_s"] == 120.0]
    mlp_fsc = min(r["fsc05_um_mean"] for r in late if r["kind"] in mlp)
    mlp_atoms = max(abs(r["atoms_pct_mean"]) for r in late if r["kind"] in mlp)
    on_run042 = [r for r in runs[0]["summary"] if r["time_s"] == 120.0 and r["kind"] in mlp]
    mlp_cosine = max(r[f"gradient_{m}_cosine_exact_mean"] for r in on_run042 for m in ("autodiff", "central"))
    for bench in runs:  # "the finest on all three clouds"
        rows = [r for r in bench["summary"] if r["time_s"] == 120.0]
        em = next(r for r in rows if r["kind"] == "voxel")
        assert all(em["fsc05_um_mean"] < r["fsc05_um_mean"] for r in rows if r is not em)
    return [f"after {min(em_times):.0f}–{max(em_times):.0f} s of fitting",
            f"none gets below {mlp_fsc:.0f} µm on any cloud, their atoms are off by up to {mlp_atoms:.1f} %",
            f"(cosine {mlp_cosine:.2f} at most)"]


def test_the_fields_sweep_tables_are_the_benchs():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    sweep = _json("fields_sweep.json")
    rows = (_fields_sweep_rows(sweep) + _fields_best_rows() + _fields_sweep_quotes(sweep)
            + _fields_best_quotes())
    missing = [r for r in rows if r not in readme]
    assert not missing, missing


def _boost_quotes(acc: dict) -> list[str]:
    """The figures of "Samples where the light is": the tuning runs, the report seeds at 1× and 10×."""
    tune = {name: _json(f"accuracy_10x_tune_{name}.json")["rows"][0]["fsc05_um"]["mean"]
            for name in ("boost0", "boost50", "boost20", "boost10", "boost10_max32", "boost20_max32",
                         "boost20_voxel125")}
    one = {v: _json(f"accuracy_tune_boost{v}.json")["rows"][0]["fsc05_um"]["mean"] for v in (0, 5, 10, 20)}
    assert f"{one[5]:.1f}" == f"{one[10]:.1f}"  # "35.3 at 10 and at 5 e⁻"
    rows = {r["method"]: r for r in acc["rows"]}
    ten_json = _json("accuracy_10x_boost.json")
    ten = {r["method"]: r for r in ten_json["rows"]}
    tenth = {r["method"]: r for r in _json("accuracy_01x_boost.json")["rows"]}
    before, before10, fresh, fresh_before = (_json(n)["rows"][0] for n in (
        "accuracy_stop.json", "accuracy_10x_stop.json", "accuracy_fresh_boost.json",
        "accuracy_fresh_stop.json"))
    above = [r["default"]["fsc05_um"] for r in ten_json["runs"] if r["default"]["fsc05_um"] > 40]

    def pm(row, key="fsc05_um"):
        return f"{row[key]['mean']:.1f} ± {row[key]['sd']:.1f}"

    def atoms(row):
        return f"{_signed(row['atoms_pct']['mean'], '.2f')} ± {row['atoms_pct']['sd']:.2f} %"

    return [
        f"at 10× the photons {tune['boost0']:.1f} µm without the boost",
        f"{tune['boost50']:.1f} at 50 e⁻, {tune['boost20']:.1f} at 20 e⁻, **{tune['boost10']:.1f} at 10 e⁻**",
        f"gave {tune['boost10_max32']:.1f} and {tune['boost20_max32']:.1f} at 10 and 20 e⁻",
        f"density.tif at 12.5 µm {tune['boost20_voxel125']:.1f}",
        f"at 1× {one[0]:.1f} µm without the boost (`accuracy_tune_boost0.json`), {one[20]:.1f} at 20 e⁻, "
        f"{one[10]:.1f} at 10 and at 5 e⁻",
        f"**{pm(rows['default'])} µm at 1×** against {pm(before)} without",
        f"atoms {atoms(rows['default'])}, widths within",
        f"**{pm(ten['default'])} µm at 10×** against {pm(before10)}",
        f"atoms {atoms(ten['default'])}",
        f"oracle-stopped {pm(ten['oracle-em'])}",
        f"the noiseless fit gives {rows['noiseless']['fsc05_um']['mean']:.1f} µm",
        "`bench/results/accuracy_six_boost.json`, the same figures) "
        f"{_json('accuracy_six_boost.json')['wall_s']:.0f} s",
        f"fresh ones: {pm(fresh)} µm, every fit at the grid's last shell",
        "`accuracy_01x_boost.json`, the report seeds) {} µm against the oracle's {}, atoms {}".format(
            pm(tenth["default"]), pm(tenth["oracle-em"]), atoms(tenth["default"])),
        f"every fit reaches {fresh['fsc05_um']['mean']:.1f} µm at 1×, atoms {atoms(fresh)} "
        f"({pm(fresh_before)} µm and {atoms(fresh_before)} without",
        f"({min(above):.1f}–{max(above):.1f} µm)",
        f"{['none', 'one', 'two', 'three', 'four', 'five', 'six'][len(above)]} of the six above it",
    ]


def test_the_readme_quotes_the_bench_json_at_its_rounding():
    """A re-measured bench that leaves the README stale fails here, and so does a number typed by hand."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # lines joined
    missing = [q for q in _quoted_numbers() if q not in readme]
    assert not missing, missing


def test_the_phantoms_table_is_accuracy_phantoms_boosts():
    """The rows of "Other phantoms, today's defaults": FSC, atoms, widths, meshes as the JSON has them."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for row in _json("accuracy_phantoms_boost.json")["rows"]:
        if row["method"] != "default":
            continue
        widths = " / ".join(_signed(w["mean"], ".1f") for w in row["widths_pct"])
        quoted = (f"| {row['fsc05_um']['mean']:.1f} | {_signed(row['atoms_pct']['mean'], '.2f')} | ",
                  f" | {widths} | {row['mesh_components'][0]} ({row['mesh_components_raw'][0]:,}) |")
        assert all(q in readme for q in quoted), (row["phantom"], quoted)


def test_the_six_seed_phantoms_table_and_its_verdict_are_accuracy_phantoms_seeds():
    """Each row of "Every phantom over six fits" as the JSON has it, and which phantoms meet the targets."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())

    def both(x: dict, spec: str) -> str:
        return f"{_signed(x['mean'], spec)} ± {x['sd']:{spec}}"

    meeting = []
    for row in _json("accuracy_phantoms_seeds.json")["rows"]:
        if row["method"] != "default":
            continue
        mesh = row["mesh_components"]
        quoted = (f" | {row['fsc05_um']['mean']:.1f} ± {row['fsc05_um']['sd']:.1f} | "
                  f"{both(row['atoms_pct'], '.2f')} | "
                  + " / ".join(both(c, ".1f") for c in row["centroid_um"]) + " | "
                  + " / ".join(both(w, ".1f") for w in row["widths_pct"])
                  + f" | {row['atoms_sd_over_fit_seeds_pct']:.2f} | "
                  + (f"{min(mesh)}" if min(mesh) == max(mesh) else f"{min(mesh)}–{max(mesh)}") + " |")
        assert quoted in readme, (row["phantom"], quoted)
        assert all(row["mesh_watertight"])
        centroid = 10.0 if row["phantom"] == "faint" else 5.0
        if (abs(row["atoms_pct"]["mean"]) <= 1 and row["atoms_sd_over_fit_seeds_pct"] <= 0.3
                and all(abs(c["mean"]) <= centroid for c in row["centroid_um"])
                and all(abs(w["mean"]) <= 2 for w in row["widths_pct"])):
            meeting.append(row["phantom"])
    assert f"met on six of the eight phantoms ({', '.join(meeting)})" in readme, meeting


def test_the_split_halves_the_readme_calls_within_15_percent_are():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "**within 15 % on every phantom**" in readme
    ratios = [r["ratio"]["mean"] for r in _json("accuracy_halves_boost.json")["rows"]
              if r["method"] == "split-halves"]
    assert len(ratios) == 8 and all(0.85 <= r <= 1.15 for r in ratios), ratios


def test_the_view_weights_the_readme_quotes_are_run042s():
    """The direct view's weight and the mirror views' range, from data/run042's own counts."""
    import torch

    from recon.fitting.data import load_fit_data
    from recon.fitting.em import view_weights
    from recon.fitting.raypool import RayPool

    data, _, _ = load_fit_data(ROOT / "data" / "run042")
    summed = torch.cat([(v.electrons * v.mask).sum(0).reshape(-1) for v in data.views])
    frames = torch.cat([v.mask.sum(0).reshape(-1) for v in data.views]).float()
    view = torch.cat([torch.full((v.roi[2] * v.roi[3],), i) for i, v in enumerate(data.views)])
    weights = view_weights(RayPool(None, None, summed, frames, view, float(data.read_noise_e), 1))
    direct = [v.name for v in data.views].index("direct")
    mirrors = torch.cat([weights[:direct], weights[direct + 1:]])
    quoted = (f"the direct view {float(weights[direct]):.2f}, the mirror views "
              f"{float(mirrors.min()):.2f}–{float(mirrors.max()):.0f})")
    assert quoted in " ".join((ROOT / "README.md").read_text(encoding="utf-8").split()), quoted


def test_every_bench_json_but_the_three_the_readme_names_records_the_load_average():
    named = {"calibration.json", "doe_mesh.json", "regenerate_run042.json"}
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        records = "load_average" in path.read_text(encoding="utf-8")
        assert records != (path.name in named), path.name


def test_the_readme_lists_every_fit_setting_with_its_default():
    """The FIT.toml table: one row per FitConfig field, its default as TOML writes it."""
    import dataclasses

    from recon.fitting.config import FitConfig

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| `([^`]*)` \|", readme, re.M)
    defaults = {}
    for f in dataclasses.fields(FitConfig):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        defaults[f.name] = json.dumps(value) if isinstance(value, str | dict | bool) else repr(value)
    assert dict(rows) == defaults


def test_the_readme_fit_toml_example_loads(tmp_path):
    from recon.fitting.config import load_fit_config

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = readme.split("**Fit settings**")[1].split("```toml\n")[1].split("```")[0]
    (tmp_path / "FIT.toml").write_text(example, encoding="utf-8")
    cfg = load_fit_config(tmp_path / "FIT.toml")
    assert (cfg.field, cfg.steps, cfg.lr, cfg.em) == ("hashgrid", 3000, 0.005, False)
    assert cfg.field_options["encoding"]["n_levels"] == 8


def test_the_readme_system_show_table_is_what_the_command_prints():
    from typer.testing import CliRunner

    from recon.cli import app

    res = CliRunner().invoke(app, ["system", "show", str(ROOT / "data" / "systems" / "magis_dome.toml")],
                             terminal_width=250, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    rows = {}
    for line in res.output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 10:
            rows[cells[0]] = [c.replace("-", "−") for c in cells]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    direct = rows["direct"]
    assert "| " + " | ".join(direct[:9]) + " |" in readme
    for first in ("r1m01", "r2m01"):  # a ring's row quotes its first mirror's region as an example
        r = rows[first]
        assert f"e.g. {r[3]} | {r[4]} | {r[5]} | {r[6]} | {r[7]} |" in readme, r
    total = float(re.search(r"total collected: ([0-9.]+) %", res.output).group(1))
    assert f"Total collected: {total:.2f} % of 4π" in readme
