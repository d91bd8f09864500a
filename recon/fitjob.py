"""`recon fit` end to end: run directory → fit → output directory (nothing half-written)."""

from __future__ import annotations

import json
import math
import platform
import resource
import shutil
import time
from pathlib import Path

import torch

from recon.errors import ReconError
from recon.fit import FitConfig, FitData, config_dict, run_fit
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

__all__ = ["field_factory", "load_fit_data", "prepare_out_dir", "run_fit_job", "versions"]


def load_fit_data(run_dir: Path) -> tuple[FitData, str]:
    """Read a run directory into what the fit needs; returns the data and the run's name.

    The read noise used by the loss includes the noise of a subtracted dark frame:
    σ_eff = σ √(1 + 1/dark_pages).
    """
    from recon.fit import ViewData
    from recon.run import load_run

    run = load_run(run_dir)
    views = tuple(ViewData(v.name, v.camera, v.roi, v.electrons, v.mask) for v in run.views)
    sigma = run.system.cameras[0].sensor.read_noise_e
    pages = min(v.dark_pages for v in run.views)
    sigma_eff = sigma * math.sqrt(1 + 1 / pages) if pages > 0 else sigma
    return FitData(run.system, views, run.photons_per_atom, sigma_eff), run.name


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
    from recon.atomic import remove_stale_temporaries

    if out.exists() and not out.is_dir():
        raise ReconError(f"fit: --out {out} is a file, not a directory; choose another --out")
    if resume:
        for where in (_partial_dir(out), out):
            if (where / "checkpoint.pt").is_file():
                remove_stale_temporaries(where)  # left by a writer killed mid-write
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
        from recon.atomic import output_error

        raise output_error(out, err, "fit: cannot write") from None
    work = _partial_dir(out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return work


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
    if work != out and work.exists() and not (work / "checkpoint.pt").is_file():
        shutil.rmtree(work, ignore_errors=True)


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
) -> dict:
    """Fit ``data`` and write the whole output directory; returns the metrics."""
    work = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    if resume:  # refuse a wrong checkpoint before anything is written
        from recon.checkpoint import check_resumable

        check_resumable(work / "checkpoint.pt", cfg, data)
    try:
        if resume:
            saved_cfg = work / "config.json"
            try:
                saved = json.loads(saved_cfg.read_text())["fit"] if saved_cfg.exists() else {}
            except (OSError, ValueError, KeyError, TypeError):
                saved = {}
            if saved and saved.get("steps") and cfg.steps < saved.get("steps", 0):
                cfg.steps = saved["steps"]
        write_json(work / "config.json", {"fit": config_dict(cfg), "run": run_name, "versions": versions()})
        t0 = time.perf_counter()
        result = run_fit(data, cfg, work, make_field=field_factory, resume=resume, progress=progress)
    except BaseException:
        _discard_unless_resumable(work, out)
        raise
    fit_time = time.perf_counter() - t0
    field_module, pool, state, device = result["field"], result["pool"], result["state"], result["device"]
    if progress:
        progress.log("writing outputs: density.tif, renders/, metrics.json, report.html")
    shape, origin, voxel = density_grid(data, cfg.voxel_size_mm)
    grid = sample_field(field_module, shape, origin, voxel, device)
    meta = {
        "run": run_name,
        "field": cfg.field,
        "backend": getattr(field_module, "backend", "torch"),
        "steps": state.step,
    }
    volume = save_density(work, grid, origin, voxel, data.density_unit, meta)
    predicted = predict_views(
        volume,
        pool,
        result["photons_per_atom"],
        model=cfg.model,
        attenuation=cfg.attenuation,
        step_mm=min(cfg.step_mm, 0.02),
    )
    views = residual_stats(data, pool, predicted)
    images = write_renders(work, data, pool, predicted, volume, state.losses)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    metrics = {
        "run": run_name,
        "density_unit": data.density_unit,
        **cloud_metrics(volume),
        "final_loss": float(sum(state.losses[-50:]) / max(len(state.losses[-50:]), 1)),
        "steps": state.step,
        "time_s": round(fit_time, 2),
        "fit_loop_s": round(state.elapsed_s, 2),
        "rays_per_s": round(state.rays_rendered / max(state.elapsed_s, 1e-9), 1),
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_kind": "GPU allocated" if device.type == "cuda" else "process max RSS",
        "backend": getattr(field_module, "backend", "torch"),
        "device": str(device),
        "voxel_size_mm": voxel[0],
        "grid": list(shape),
        "views": views,
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
    return [
        f"atoms {metrics['atoms']:.4g} ({metrics['density_unit']}), centroid (µm) "
        f"{', '.join(fmt(v) for v in c)}, widths σ (µm) {', '.join(fmt(v) for v in w)}",
        f"{metrics['steps']} steps in {metrics['time_s']:.1f} s, {metrics['rays_per_s']:,.0f} rays/s, "
        f"backend {metrics['backend']} on {metrics['device']}, final loss {metrics['final_loss']:.4f}",
    ]
