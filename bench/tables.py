"""Markdown tables of the saved benchmark results (what the README's Performance section shows).

    python bench/tables.py [--results bench/results]

Reads field_throughput.json, time_to_resolution.json, scaling.json and fit_run042.json when
present and prints one Markdown table each, with the machine line of each file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _machine(report: dict) -> str:
    m = report.get("machine", {})
    load = m.get("load_average")
    load_txt = f", load average {load[0]:.1f}" if load else ""
    return (f"_{m.get('device_name', m.get('device', '?'))}, torch "
            f"{m.get('versions', {}).get('torch', m.get('torch', '?'))}, "
            f"{m.get('torch_threads', m.get('threads', '?'))} threads{load_txt}, "
            f"{m.get('date_utc', '')}_")


def throughput(report: dict) -> str:
    lines = ["| field | part | backend | device | threads | fwd+bwd M samples/s (median / best) "
             "| per CPU-second | forward M/s |", "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        amp = " (AMP)" if r.get("amp") else ""
        lines.append(
            f"| {r['kind']} | {r.get('part', 'field')} | {r['backend']}{amp} | {r['device']} | "
            f"{r.get('threads', '')} | {r['fwd_bwd_samples_per_s_median'] / 1e6:.2f} / "
            f"{r['fwd_bwd_samples_per_s_best'] / 1e6:.2f} | "
            f"{r.get('fwd_bwd_samples_per_cpu_s', float('nan')) / 1e6:.2f} | "
            f"{r['fwd_samples_per_s_median'] / 1e6:.2f} |")
    return "\n".join(lines)


def resolution(report: dict) -> str:
    out = []
    for name, m in report["methods"].items():
        snaps = m["snapshots"]
        out.append(f"**{name}** ({m['steps']} steps, {m['fit_time_s']:.0f} s of fit time"
                   f"{', stopped at the cap' if m.get('stopped_at_cap') and name != 'default' else ''})")
        out.append("")
        out.append("| fit time s | step | FSC 0.5 resolution µm (interpolated) | shell µm |")
        out.append("|---|---|---|---|")
        for s in snaps:
            out.append(f"| {s['time_s']:.1f} | {s['step']} | {s['resolution_um']:.1f} | "
                       f"{s['shell_resolution_um']:.1f} |")
        out.append("")
    out.append(crossover(report["methods"]))
    summary = report.get("summary", {})
    out.append("")
    out.append("| summary (as saved by the run) | value |")
    out.append("|---|---|")
    for k, v in summary.items():
        out.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(out)


def _first(snaps: list[dict], ok) -> dict | None:
    return next((s for s in snaps if ok(s)), None)


def _when(snap: dict | None) -> str:
    return f"{snap['time_s']:.1f}" if snap else "never"


def crossover(methods: dict) -> str:
    """Side-by-side times from one run: when does each method reach another's best value?

    For the FSC-0.5 resolution (lower is better) and the FSC in the fringe shell (higher is
    better): the best value a method reached, and the fit time the default needed for it.
    """
    if "default" not in methods:
        return ""
    ours = methods["default"]["snapshots"]
    lines = ["| method | best FSC-0.5 resolution µm (at s) | default reached it at s | "
             "best FSC at fringe (at s) | default reached it at s |", "|---|---|---|---|---|"]
    for name, m in methods.items():
        snaps = m["snapshots"]
        best_res = min(snaps, key=lambda s: s["resolution_um"])
        best_fr = max(snaps, key=lambda s: s.get("fsc_at_fringe", -1))
        res, fringe = best_res["resolution_um"], best_fr.get("fsc_at_fringe", 2.0)
        hit_res = _first(ours, lambda s, res=res: s["resolution_um"] <= res)
        hit_fr = _first(ours, lambda s, fringe=fringe: s.get("fsc_at_fringe", -1) >= fringe)
        lines.append(
            f"| {name} | {best_res['resolution_um']:.1f} ({best_res['time_s']:.1f}) | "
            f"{_when(hit_res)} | {best_fr.get('fsc_at_fringe', float('nan')):.3f} "
            f"({best_fr['time_s']:.1f}) | {_when(hit_fr)} |")
    return "\n".join(lines)


def scaling(report: dict) -> str:
    lines = ["| views | pixel fraction | hash levels (finest vertices/axis) | pixels | segments | "
             "pool s | step ms | peak RSS MB | peak GPU MB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        gpu = f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") is not None else "–"
        lines.append(f"| {r['views']} | {r['pixel_fraction']:.2f} | {r['levels']} "
                     f"({r['finest_resolution']}) | {r['pixels']} | {r['segments']} | "
                     f"{r['pool_s']:.1f} | {1e3 * r['step_s']:.0f} | {r['peak_rss_mb']:.0f} | {gpu} |")
    lines.append(f"\nmemory floor (torch imported): {report['rows'][0]['rss_floor_mb']:.0f} MB")
    return "\n".join(lines)


def fit(report: dict) -> str:
    lines = ["| quantity | fit | truth | error |", "|---|---|---|---|"]
    for name, e in report["errors"].items():
        lines.append(f"| {name} | {e['fit']:.4g} | {e['truth']:.4g} | {e['error']:.2f} {e['unit']} |")
    m = report["metrics"]
    lines.append(f"\nwall time {report['wall_s']:.0f} s, {m['steps']} steps, fit {m['time_s']:.0f} s, "
                 f"{m['rays_per_s']:,.0f} segments/s, peak memory {m['peak_memory_mb']:.0f} MB "
                 f"({m['device']}, {report['machine'].get('threads')} threads)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    for name, fn in (("fit_run042", fit), ("field_throughput", throughput),
                     ("time_to_resolution", resolution), ("scaling", scaling)):
        path = args.results / f"{name}.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        print(f"### {name}\n")
        if "machine" in report and "device_name" in report["machine"]:
            print(_machine(report) + "\n")
        print(fn(report) + "\n")


if __name__ == "__main__":
    main()
