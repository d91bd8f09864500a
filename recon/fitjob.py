"""`recon fit` end to end: run directory → fit → output directory (nothing half-written)."""

from __future__ import annotations

import dataclasses
import math
import platform
import resource
import shutil
import time
from pathlib import Path

import torch

from recon.errors import ReconError
from recon.fit import FitConfig, FitData, RayPool, config_dict, run_fit
from recon.outputs import (
    cloud_metrics,
    density_grid,
    predict_views,
    residual_stats,
    sample_field,
    save_density,
    write_json,
    write_renders,
    write_report,
)
from recon.resolution import format_um, fsc_halves, fsc_truth

__all__ = [
    "SPLITS",
    "field_factory",
    "load_fit_data",
    "prepare_out_dir",
    "run_fit_job",
    "split_fit_data",
    "summary_lines",
    "versions",
]


def load_fit_data(run_dir: Path) -> tuple[FitData, str, Path | None]:
    """Read a run directory into what the fit needs.

    The read noise used by the loss includes the noise of a subtracted dark frame:
    σ_eff = σ √(1 + 1/dark_pages).

    Returns:
        The data, the run's name, and the truth volume of a simulated run (None for real runs).
    """
    from recon.fit import ViewData
    from recon.run import load_run

    run = load_run(run_dir)
    views = tuple(ViewData(v.name, v.camera, v.roi, v.electrons, v.mask) for v in run.views)
    sigma = run.system.cameras[0].sensor.read_noise_e
    pages = min(v.dark_pages for v in run.views)
    sigma_eff = sigma * math.sqrt(1 + 1 / pages) if pages > 0 else sigma
    truth = run.truth_volume
    truth = truth if truth is not None and truth.is_file() else None
    return FitData(run.system, views, run.photons_per_atom, sigma_eff), run.name, truth


#: How ``--split-halves`` divides the data.
SPLITS = ("auto", "thinning", "frames")


def split_fit_data(data: FitData, how: str, seed: int) -> tuple[tuple[FitData, FitData], str]:
    """Two statistically independent halves of the data, for split-halves FSC.

    ``thinning`` splits the photoelectrons of every pixel binomially
    (:func:`recon.noise.binomial_split`): each half holds every view and pixel with half the
    photons, so it is fitted with half the photons per atom and read noise σ/√2, and each half
    map estimates the full density. ``frames`` gives the even shots to one half and the odd to
    the other (every view needs two or more). ``auto``: ``frames`` when every view has two or
    more shots, else ``thinning``.

    Returns:
        The halves and the split actually used.
    """
    from recon.errors import ConfigError
    from recon.fit import ViewData
    from recon.noise import binomial_split

    if how not in SPLITS:
        raise ConfigError(f"fit: --split must be one of {', '.join(SPLITS)}, got {how!r}")
    shots = min(v.counts.shape[0] for v in data.views)
    if how == "auto":
        how = "frames" if shots >= 2 else "thinning"
    if how == "frames":
        if shots < 2:
            name = min(data.views, key=lambda v: v.counts.shape[0]).name
            raise ConfigError(f"fit: --split frames needs two or more shots in every view, view '{name}' "
                              "has one; use --split thinning")
        halves = tuple(
            dataclasses.replace(data, views=tuple(
                ViewData(v.name, v.camera, v.roi, v.counts[start::2], v.mask[start::2]) for v in data.views))
            for start in (0, 1)
        )
        return halves, how
    gen = torch.Generator().manual_seed(seed)
    sigma = float(data.read_noise_e if data.read_noise_e is not None
                  else data.system.cameras[0].sensor.read_noise_e)
    split_views: tuple[list, list] = ([], [])
    for v in data.views:
        usable = torch.where(v.mask, v.counts, torch.zeros_like(v.counts))
        a, b = binomial_split(usable, gen, read_noise_e=sigma)
        for side, counts in zip(split_views, (a, b), strict=True):
            side.append(ViewData(v.name, v.camera, v.roi, counts, v.mask))
    y_half = (data.photons_per_atom or 4 * math.pi) / 2
    halves = tuple(
        dataclasses.replace(data, views=tuple(side), photons_per_atom=y_half,
                            read_noise_e=sigma / math.sqrt(2))
        for side in split_views
    )
    return halves, how


def versions() -> dict:
    """Versions of the program and its main dependencies."""
    from importlib import metadata

    out = {"recon": __import__("recon").__version__, "python": platform.python_version()}
    for pkg in ("torch", "numpy", "tifffile", "pyvista", "tinycudann"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


HALF_SEED_OFFSET = 1000  # half i of a split-halves fit uses seed + i · HALF_SEED_OFFSET


def field_factory(cfg: FitConfig, box_min, box_max, mean_density: float, device):
    """Build the field of a fit config (density starts at the data's mean density)."""
    from recon.fields import FieldConfig, make_field

    options = {"kind": cfg.field, "init_density": float(mean_density), **cfg.field_options}
    if "encoding" in options and isinstance(options["encoding"], dict):
        from recon.encoding import HashGridConfig

        options["encoding"] = HashGridConfig.from_dict(options["encoding"])
    return make_field(
        FieldConfig.from_dict(options), box_min, box_max, backend=cfg.backend, device=device, seed=cfg.seed
    )


def prepare_out_dir(out: Path, *, overwrite: bool, resume: bool) -> Path:
    """Check the output directory and return where to write (the final place when resuming).

    A new fit writes into a temporary sibling directory (``.NAME.partial``) that is renamed onto
    ``out`` when everything is written, so an interrupted fit never leaves a half-filled ``out``.
    ``--resume`` continues from the checkpoint of an interrupted fit in that directory, else from
    the one in ``out`` (a finished fit, continued with more steps).
    """
    from optics.atomic import remove_stale_temporaries

    if out.exists() and not out.is_dir():
        raise ReconError(f"fit: --out {out} is a file, not a directory; choose another --out")
    if resume:
        where = _resume_dir(out)
        if where is not None:
            remove_stale_temporaries(where)  # left by a writer killed mid-write
            for sub in ("half1", "half2"):
                if (where / sub).is_dir():
                    remove_stale_temporaries(where / sub)
            return where
        raise ReconError(
            f"fit: --resume needs {out}/checkpoint.pt, which does not exist; run without --resume first"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReconError(
            f"fit: output directory {out} exists and is not empty; pass --overwrite or choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        from optics.atomic import output_error

        raise output_error(out, err, "fit: cannot write") from None
    work = _partial_dir(out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return work


def _resume_dir(out: Path) -> Path | None:
    """Where ``--resume`` continues: an interrupted fit's temporary directory, else ``out``."""
    for where in (_partial_dir(out), out):
        if any((where / sub / "checkpoint.pt").is_file() for sub in (".", "half1")):
            return where
    return None


def saved_fit_settings(out: Path) -> dict:
    """The settings of the checkpoint that ``--resume`` would continue ({} if none is readable).

    The checkpoint, not config.json, is the record: a resumed attempt that failed (a NaN loss)
    has rewritten config.json but left the last good checkpoint as it was. A split-halves fit's
    settings are those of its first half, less the half's seed offset.
    """
    from recon.checkpoint import read_checkpoint

    where = _resume_dir(out)
    if where is None:
        return {}
    half = not (where / "checkpoint.pt").is_file()
    try:
        saved = read_checkpoint(where / ("half1" if half else ".") / "checkpoint.pt")["config"]
    except (ReconError, KeyError, TypeError):
        return {}  # the resume itself reports what is wrong with the checkpoint
    if not isinstance(saved, dict):
        return {}
    known = {f.name for f in dataclasses.fields(FitConfig)}
    settings = {k: v for k, v in saved.items() if k in known}
    if half and isinstance(settings.get("seed"), int):
        settings["seed"] -= HALF_SEED_OFFSET
    return settings


def _partial_dir(out: Path) -> Path:
    parent = out.parent if str(out.parent) else Path(".")
    return parent / f".{out.name}.partial"


def finish_out_dir(work: Path, out: Path) -> None:
    """Move a completed temporary output directory onto ``out`` (the old one goes only after)."""
    if work == out:
        return
    if out.exists():
        old = work.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)


def _discard_unless_resumable(work: Path, out: Path) -> None:
    """After a failed fit: remove its temporary directory unless it holds a checkpoint to resume."""
    resumable = any((work / sub / "checkpoint.pt").is_file() for sub in (".", "half1"))
    if work != out and work.exists() and not resumable:
        shutil.rmtree(work, ignore_errors=True)


def _fit_jobs(data: FitData, cfg: FitConfig, work: Path, split_halves: str | None):
    """The fits to run as ``(data, config, directory)``, and the split (None: one fit of all data).

    Split half i (1, 2) is fitted with seed ``seed + i · HALF_SEED_OFFSET`` in ``work/half{i}``.
    """
    if split_halves is None:
        return [(data, cfg, work)], None
    halves, how = split_fit_data(data, split_halves, cfg.seed)
    return [(half, dataclasses.replace(cfg, seed=cfg.seed + HALF_SEED_OFFSET * i), work / f"half{i}")
            for i, half in enumerate(halves, 1)], how


def _combined_pool(results: list[dict], how: str) -> RayPool:
    """The ray pool of half 1 with the measured counts of both halves (the whole data)."""
    a, b = results[0]["pool"], results[1]["pool"]
    frames = a.n_frames + b.n_frames if how == "frames" else a.n_frames
    return dataclasses.replace(a, summed_counts=a.summed_counts + b.summed_counts, n_frames=frames,
                               read_noise_e=a.read_noise_e * (math.sqrt(2) if how == "thinning" else 1.0))


def _fsc_metrics(report: dict) -> dict:
    """The figures of an FSC report that metrics.json carries."""
    d = report.get("directional") or {}
    return {
        "threshold": report["threshold"],
        "resolution_um": report["resolution_um"],
        "resolution_interpolated_um": report["resolution_interpolated_um"],
        "reached_nyquist": report["reached_nyquist"],
        "nyquist_um": report["nyquist_um"],
        "resolution_xyz_um": [d.get(f"resolution_{a}_um") for a in "xyz"] if d else None,
        "sphericity": d.get("sphericity"),
    }


def run_fit_job(
    data: FitData,
    cfg: FitConfig,
    out: Path,
    *,
    run_name: str,
    overwrite: bool = False,
    resume: bool = False,
    progress=None,
    truth_path: Path | None = None,
    split_halves: str | None = None,
) -> dict:
    """Fit ``data`` and write the whole output directory; returns the metrics.

    Args:
        data: the run's data.
        cfg: fit settings.
        out: output directory.
        run_name: name of the run (for the report).
        overwrite: replace an existing ``out``.
        resume: continue from the checkpoint(s) in ``out``.
        progress: progress display (see :func:`recon.fit.run_fit`).
        truth_path: the true density (simulated runs): the fit is compared with it by FSC
            (``fsc-truth/``) and metrics.json holds the resolution.
        split_halves: None for one fit of all the data; ``auto``, ``thinning`` or ``frames`` to
            fit two independent halves (:func:`split_fit_data`), write ``half1.tif``,
            ``half2.tif`` and their average as ``density.tif``, and their FSC (``fsc-halves/``).
    """
    work = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    if resume:
        cfg.steps = max(cfg.steps, int(saved_fit_settings(out).get("steps", 0)))
    jobs, how = _fit_jobs(data, cfg, work, split_halves)
    if resume:  # refuse a wrong checkpoint before anything is written
        from recon.checkpoint import check_resumable

        for job_data, job_cfg, where in jobs:
            if (where / "checkpoint.pt").is_file():
                check_resumable(where / "checkpoint.pt", job_cfg, job_data)
    try:
        write_json(work / "config.json", {"fit": config_dict(cfg), "run": run_name,
                                          "split_halves": split_halves, "versions": versions()})
        t0 = time.perf_counter()
        results = []
        for i, (job_data, job_cfg, where) in enumerate(jobs, 1):
            where.mkdir(exist_ok=True)
            if progress and how is not None:
                progress.log(f"half {i}/2 ({how} split)")
            results.append(run_fit(job_data, job_cfg, where, make_field=field_factory,
                                   resume=resume and (where / "checkpoint.pt").is_file(), progress=progress))
    except BaseException:
        _discard_unless_resumable(work, out)
        raise
    shape, origin, voxel = density_grid(data, cfg.voxel_size_mm)
    pool = results[0]["pool"] if how is None else _combined_pool(results, how)
    fit_time = time.perf_counter() - t0
    device = results[0]["device"]
    states = [r["state"] for r in results]
    backend = getattr(results[0]["field"], "backend", "torch")
    if progress:
        progress.log("writing outputs: density.tif, renders/, metrics.json, report.html")
    meta = {"run": run_name, "field": cfg.field, "backend": backend, "steps": states[0].step}
    grids = [sample_field(r["field"], shape, origin, voxel, device) for r in results]
    extra: dict = {}
    if how is not None:
        halves = [save_density(work, g, origin, voxel, data.density_unit, {**meta, "half": i},
                               name=f"half{i}.tif") for i, g in enumerate(grids, 1)]
        report = fsc_halves(*halves, work)
        extra["split_halves"] = {"split": how, "fsc": _fsc_metrics(report)}
    volume = save_density(work, sum(grids) / len(grids), origin, voxel, data.density_unit, meta)
    predicted = predict_views(
        volume,
        pool,
        data.photons_per_atom or 4 * math.pi,
        model=cfg.model,
        attenuation=cfg.attenuation,
        step_mm=min(cfg.step_mm, 0.02),
    )
    views = residual_stats(data, pool, predicted)
    losses = [sum(v) / len(v) for v in zip(*(s.losses for s in states), strict=True)]
    images = write_renders(work, data, pool, predicted, volume, losses)
    if truth_path is not None:
        extra["fsc_truth"] = _fsc_metrics(fsc_truth(volume, truth_path, work))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    loop_s = sum(s.elapsed_s for s in states)
    metrics = {
        "run": run_name,
        "density_unit": data.density_unit,
        **cloud_metrics(volume),
        "final_loss": float(sum(losses[-50:]) / max(len(losses[-50:]), 1)),
        "steps": states[0].step,
        "time_s": round(fit_time, 2),
        "fit_loop_s": round(loop_s, 2),
        "rays_per_s": round(sum(s.rays_rendered for s in states) / max(loop_s, 1e-9), 1),
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": "GPU allocated" if device.type == "cuda" else "process max RSS",
        "backend": backend,
        "device": str(device),
        "voxel_size_mm": voxel[0],
        "grid": list(shape),
        "views": views,
        **extra,
        "versions": versions(),
    }
    if data.density_unit != "atoms/mm^3":
        metrics["atoms_note"] = "relative units: the run gives no photons per atom"
    write_json(work / "metrics.json", metrics)
    write_report(work, metrics, images)
    finish_out_dir(work, out)
    return metrics


def summary_lines(metrics: dict) -> list[str]:
    """A few lines for the terminal."""
    c = metrics["centroid_mm"]
    w = metrics["width_mm"]
    fmt = (lambda v: f"{v * 1000:.1f}") if all(math.isfinite(x) for x in c + w) else str
    lines = [
        f"atoms {metrics['atoms']:.4g} ({metrics['density_unit']}), centroid (µm) "
        f"{', '.join(fmt(v) for v in c)}, widths σ (µm) {', '.join(fmt(v) for v in w)}",
        f"{metrics['steps']} steps in {metrics['time_s']:.1f} s, {metrics['rays_per_s']:,.0f} rays/s, "
        f"backend {metrics['backend']} on {metrics['device']}, final loss {metrics['final_loss']:.4f}",
    ]
    for key, what in (("fsc_truth", "against the truth"), ("split_halves", "between the split halves")):
        if key in metrics:
            f = metrics[key].get("fsc", metrics[key])
            line = (f"resolution {what} (FSC {f['threshold']}): {format_um(f['resolution_um'])}, "
                    f"interpolated {format_um(f['resolution_interpolated_um'])}")
            if f["reached_nyquist"]:
                line += f" (reached Nyquist, {f['nyquist_um']:.4g} µm)"
            if f["resolution_xyz_um"]:
                line += f"; x/y/z {' / '.join(format_um(v) for v in f['resolution_xyz_um'])}"
            lines.append(line)
    return lines

