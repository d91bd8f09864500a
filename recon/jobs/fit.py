"""`recon fit` end to end: run directory → fit(s) → output directory (nothing half-written).

:func:`fit` is the Python API of the command (``recon.fit``): it resolves the settings (defaults,
``--config`` TOML, explicit options, and on ``--resume`` the interrupted fit's own settings),
reads the run and calls :func:`run_fit_job`, which runs the fit (or the two split-half fits)
and writes the output directory: density.tif, views.npz, renders/, metrics.json, report.html, and the FSC
against a simulated run's truth.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from optics.atomic import atomic_write_json
from optics.camera import rois_overlap
from optics.system import System, save_system
from recon.analysis.fringes import fit_fringes
from recon.analysis.inspect import fit_blockers, inspect_run
from recon.analysis.moments import cloud_metrics, face_fraction, face_warning, truth_errors
from recon.analysis.resolution import load_truth
from recon.environment import versions
from recon.errors import ConfigError, DataError, FitError, OutputError, ReconError
from recon.fitting.budget import MemoryPlan, check_memory, estimate_memory
from recon.fitting.checkpoint import check_resumable
from recon.fitting.config import (
    FitConfig,
    check_grid_sizes,
    config_dict,
    field_factory,
    load_fit_config,
    plan_line,
    resolved,
)
from recon.fitting.data import HALF_SEED_OFFSET, FitData, density_grid, fit_data, split_fit_data
from recon.fitting.fringe_bound import fringe_bound
from recon.fitting.loop import FitResult, StopOnSignals, run_fit
from recon.fitting.outdir import (
    OutputLock,
    discard_unless_resumable,
    finish_out_dir,
    prepare_out_dir,
    resolve_out,
    resume_dir,
    saved_fit_settings,
)
from recon.fitting.prediction import predict_fit, residual_stats, view_images
from recon.fitting.projector import Projector
from recon.fitting.raypool import RayPool
from recon.fitting.uncertainty import refit_uncertainty
from recon.io.run import Run, load_run
from recon.io.viewimages import save_view_images
from recon.io.volume import Volume, write_volume
from recon.jobs.analyze import fringe_record, truth_fringes
from recon.jobs.compare import fsc_halves, fsc_truth
from recon.model.fields.base import sample_field
from recon.reporting.fringe_figures import write_fringe_figure
from recon.reporting.renders import write_renders
from recon.reporting.report import write_report

__all__ = ["FitOutcome", "fit", "run_fit_job", "save_density", "shot_noise_limit", "unconverged_warning",
           "worthless_result"]


@dataclasses.dataclass(frozen=True)
class FitOutcome:
    """What :func:`fit` did: the metrics it wrote, where, and with which settings."""

    metrics: dict
    out: Path
    config: FitConfig


def fit(
    views: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    split_halves: bool = False,
    split: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    make_progress: Callable[[FitConfig], object] | None = None,
    pool_cache: str | os.PathLike | None = None,
    command: str | None = None,
    **settings,
) -> FitOutcome:
    """Fit a run and write its output directory (``recon fit``).

    Args:
        views: the run directory (run.toml + TIFF frames).
        out: output directory (default ``fits/<run name>``).
        config: a fit TOML (keys of :class:`~recon.fitting.config.FitConfig`).
        split_halves: fit two independent halves and report their FSC (0.143).
        split: how to halve: ``auto``, ``thinning`` or ``frames``.
        resume: continue the interrupted (or finished) fit in ``out`` with the settings it was
            written with, unless given again here.
        overwrite: replace an existing ``out``.
        make_progress: builds the progress display from the resolved settings (None: silent).
        pool_cache: directory of the ray-pool cache (:mod:`recon.fitting.poolcache`); None traces
            every pool.
        command: the command line that asked for the fit, recorded in config.json and the report.
        **settings: :class:`~recon.fitting.config.FitConfig` fields given explicitly (None
            values are ignored); they win over the TOML and the resumed fit's settings.

    Raises:
        ReconError: bad settings, a bad run, or an output directory that cannot be used.
    """
    cfg = load_fit_config(config, **settings)
    if split != "auto" and not split_halves:
        raise ConfigError(f"fit: --split {split} only applies with --split-halves; add --split-halves")
    if split_halves and cfg.uncertainty_splits:
        raise ConfigError("fit: --uncertainty and --split-halves cannot be combined (the uncertainty splits "
                          "the photons itself); run them as two fits")
    if split_halves and cfg.refine:
        raise ConfigError("fit: --refine and --split-halves cannot be combined; refine first, then fit the "
                          "halves with the refined system")
    run = load_run(views)
    out = resolve_out(Path(out) if out is not None else Path("fits") / run.name)
    _check_out_keeps_the_run(out, run)
    _check_views_do_not_overlap(run)
    stats = inspect_run(run)  # the checks of `recon inspect`, before any long work
    blockers = fit_blockers(stats)
    if blockers:
        raise DataError(f"fit: {blockers[0]}; check the run with `recon inspect {views}`")
    data, truth = fit_data(run)
    if truth is not None:  # a truth that cannot be compared with is refused before the fit, not after
        load_truth(truth, where="fit")
    if split_halves:  # refused now, before an output directory exists
        split_fit_data(data, split, cfg.seed)
    if resume:  # what was not given now is what the interrupted fit ran with
        cfg = load_fit_config(config, base=saved_fit_settings(out), **settings)
    check_grid_sizes(data, cfg)  # before tracing: a grid too large to hold is refused now
    memory = estimate_memory(data, resolved(cfg, data), threads=torch.get_num_threads())
    check_memory(memory, cfg)  # and a fit whose peak would not fit in memory
    progress = make_progress(cfg) if make_progress else None
    warnings = [f"view {s.name}: {w}" for s in stats for w in s.warnings]
    for line in warnings:
        if progress:
            progress.log(f"warning: {line}")
    metrics = run_fit_job(data, cfg, out, run_name=run.name, overwrite=overwrite, resume=resume,
                          progress=progress, truth_path=truth, split_halves=split if split_halves else None,
                          warnings=warnings, pool_cache=pool_cache, command=command, memory=memory)
    return FitOutcome(metrics, out, cfg)




def _check_out_keeps_the_run(out: Path, run: Run) -> None:
    """Refuse an output directory that is, or holds, the run it fits (it would be replaced)."""
    out_abs, inputs = out.resolve(), [run.path.resolve(), run.system_path.resolve()]
    for path in inputs:
        if path == out_abs or out_abs in path.parents:
            raise ConfigError(f"fit: --out {out} holds the run's own files ({path}), which the fit's output "
                              "would replace; choose an --out outside the run directory")


def _check_views_do_not_overlap(run: Run) -> None:
    """Refuse two views of one camera that share pixels: each pixel would be fitted twice."""
    for i, a in enumerate(run.views):
        for b in run.views[i + 1:]:
            if a.camera == b.camera and rois_overlap(a.roi, b.roi):
                raise DataError(f"fit: views '{a.name}' and '{b.name}' of {run.path} share pixels of "
                                f"camera {a.camera} (rois {list(a.roi)} and {list(b.roi)}), which would "
                                "count twice; make their regions disjoint in run.toml")


def _fit_jobs(data: FitData, cfg: FitConfig, work: Path, split_halves: str | None):
    """The fits to run as ``(data, config, directory)``, and the split (None: one fit of all data).

    Split half i (1, 2) is fitted with seed ``seed + i · HALF_SEED_OFFSET`` in ``work/half{i}``.
    """
    if split_halves is None:
        return [(data, cfg, work)], None
    halves, how = split_fit_data(data, split_halves, cfg.seed)
    return [(half, dataclasses.replace(cfg, seed=cfg.seed + HALF_SEED_OFFSET * i), work / f"half{i}")
            for i, half in enumerate(halves, 1)], how


def _combined_pool(results: list[FitResult], how: str) -> RayPool:
    """The ray pool of half 1 with the measured counts of both halves (the whole data)."""
    a, b = results[0].pool, results[1].pool
    frames = a.n_frames + b.n_frames if how == "frames" else a.n_frames
    if how == "frames" and b.censored_frames is not None:  # the same pixels: the same bounds
        if a.censored_frames is None:
            a = dataclasses.replace(a, censored_frames=b.censored_frames, censor_bound=b.censor_bound,
                                    censor_shift=b.censor_shift, censor_var=b.censor_var)
        else:
            a = dataclasses.replace(a, censored_frames=a.censored_frames + b.censored_frames)
    return dataclasses.replace(a, summed_electrons=a.summed_electrons + b.summed_electrons, n_frames=frames,
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


def _write_refinement(work: Path, refined: System, record: dict, cfg: FitConfig, progress) -> None:
    """Write the self-calibrated system and what changed (``refined_system.toml``, ``refinement.json``)."""
    save_system(refined, work / "refined_system.toml", header=(
        f"Self-calibrated by `recon fit --refine {cfg.refine}`: refined jointly with the density after "
        f"{cfg.refine_warmup} density-only steps of {cfg.steps}, prior toward the run's system"))
    atomic_write_json(work / "refinement.json", record)
    if progress and "mirrors" in record["changes"]:
        tilts = [m["tilt_deg"] for m in record["changes"]["mirrors"]]
        progress.log(f"refined mirrors: tilt changes up to {max(tilts):.4f}°; written to refined_system.toml")


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
    warnings: list[str] = (),
    pool_cache: str | os.PathLike | None = None,
    command: str | None = None,
    memory: MemoryPlan | None = None,
) -> dict:
    """Fit ``data`` and write the whole output directory; returns the metrics.

    The output directory is this process's while it runs (:class:`~recon.fitting.outdir.OutputLock`);
    SIGINT or SIGTERM stop it with a message saying what was kept, and a result that is
    non-finite, zero or explains none of the signal is an error, not a success.

    Args:
        data: the run's data.
        cfg: fit settings.
        out: output directory.
        run_name: name of the run (for the report).
        overwrite: replace an existing ``out``.
        resume: continue from the checkpoint(s) in ``out``.
        progress: progress display (see :func:`recon.fitting.loop.run_fit`).
        truth_path: the true density (simulated runs): the fit is compared with it by FSC
            (``fsc-truth/``) and metrics.json holds the resolution.
        split_halves: None for one fit of all the data; ``auto``, ``thinning`` or ``frames`` to
            fit two independent halves (:func:`split_fit_data`), write ``half1.tif``,
            ``half2.tif`` and their average as ``density.tif``, and their FSC (``fsc-halves/``).
        warnings: remarks on the data (from ``recon inspect``'s checks) recorded in metrics.json.
        pool_cache: directory of the ray-pool cache; None traces every pool.
        command: the command line, recorded in config.json (None: not recorded).
        memory: the fit's estimated memory (:func:`recon.fitting.budget.estimate_memory`), said
            after the plan and recorded in metrics.json beside the measured peak.

    Raises:
        FitError: the fit failed or its result is worthless (nothing is written then).
        FitInterrupted: SIGINT or SIGTERM (what was kept is in the message).
    """
    before = ("fit stopped before its first step; the checkpoint is as it was: run the same command with "
              "--resume to continue") if resume else "fit stopped before its first step; nothing was kept"
    with OutputLock(out), StopOnSignals(before) as stop:
        try:
            return _fit_and_write(data, cfg, out, stop, run_name=run_name, overwrite=overwrite, resume=resume,
                                  progress=progress, truth_path=truth_path, split_halves=split_halves,
                                  warnings=warnings, pool_cache=pool_cache, command=command, memory=memory)
        except OutputError as err:  # a full disk: say what is kept and how to go on
            kept = resume_dir(out)
            if kept is None:
                raise
            raise OutputError(f"{err}; the last checkpoint is kept in {kept}: make room and run the same "
                              "command with --resume") from None


def _fit_and_write(data: FitData, cfg: FitConfig, out: Path, stop: StopOnSignals, *, run_name: str,
                   overwrite: bool, resume: bool, progress, truth_path: Path | None, split_halves: str | None,
                   warnings: list[str], pool_cache: str | os.PathLike | None, command: str | None,
                   memory: MemoryPlan | None) -> dict:
    """:func:`run_fit_job` holding the output lock; ``stop`` says what a signal leaves behind."""
    work = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    concrete = resolved(cfg, data)  # what run_fit makes of step_mm = 0 and the voxel field's grid
    if resume:  # a resumed fit goes at least as far as the interrupted one was to
        cfg = dataclasses.replace(cfg, steps=max(cfg.steps, int(saved_fit_settings(out).get("steps", 0))))
    jobs, how = _fit_jobs(data, cfg, work, split_halves)
    if resume:  # refuse a wrong checkpoint before anything is written

        for job_data, job_cfg, where in jobs:
            if (where / "checkpoint.pt").is_file():
                check_resumable(where / "checkpoint.pt", resolved(job_cfg, job_data), job_data)
    try:
        if progress:
            progress.log(plan_line(cfg, data))
            if memory is not None:
                progress.log(memory.line())
        chosen = {"step_mm": concrete.step_mm, "voxel_size_mm": density_grid(data, cfg.voxel_size_mm)[2][0]}
        if cfg.field == "voxel":
            chosen["voxel_resolution"] = concrete.field_options["voxel_resolution"]
        atomic_write_json(work / "config.json", {"fit": config_dict(cfg), "run": run_name, "command": command,
                                                 "resolved": chosen,
                                                 "truth": str(truth_path.resolve()) if truth_path else None,
                                                 "split_halves": split_halves, "versions": versions()})
        t0 = time.perf_counter()
        results = []
        for i, (job_data, job_cfg, where) in enumerate(jobs, 1):
            where.mkdir(exist_ok=True)
            if progress and how is not None:
                progress.log(f"half {i}/2 ({how} split)")
            results.append(run_fit(job_data, job_cfg, where, make_field=field_factory,
                                   resume=resume and (where / "checkpoint.pt").is_file(), progress=progress,
                                   pool_cache=pool_cache))
            if i < len(jobs):  # a signal before the next half's first step keeps this one
                stop.message = (f"fit stopped after half {i} of {len(jobs)}, which is complete in its "
                                f"checkpoint ({where / 'checkpoint.pt'}): run the same command with --resume "
                                "to continue")
    except BaseException:
        discard_unless_resumable(work, out)
        raise
    stop.message = ("fit stopped while writing its outputs; the fit is complete in its checkpoint: run the "
                    "same command with --resume to write them")
    if results[0].refined_system is not None:
        _write_refinement(work, results[0].refined_system, results[0].refinement, cfg, progress)
    shape, origin, voxel = density_grid(data, cfg.voxel_size_mm)
    pool = results[0].pool if how is None else _combined_pool(results, how)
    fit_time = time.perf_counter() - t0
    device = results[0].device
    states = [r.state for r in results]
    backend = getattr(results[0].field, "backend", "torch")
    t_out = time.perf_counter()

    def done(what: str) -> None:  # one progress line per output, with the seconds it took
        nonlocal t_out
        now = time.perf_counter()
        if progress:
            progress.log(f"{what} ({now - t_out:.1f} s)")
        t_out = now

    if progress:
        progress.log("writing outputs: density.tif, views.npz, renders/, metrics.json, report.html")
    t_outputs = t_out
    meta = {"run": run_name, "field": cfg.field, "solver": cfg.solver_kind, "backend": backend,
            "steps": states[0].step}
    grids = [sample_field(r.field, shape, origin, voxel, device) for r in results]
    extra: dict = {}
    if how is not None:
        halves = [save_density(work, g, origin, voxel, data.density_unit, {**meta, "half": i},
                               name=f"half{i}.tif") for i, g in enumerate(grids, 1)]
        report = fsc_halves(*halves, work)
        extra["split_halves"] = {"split": how, "fsc": _fsc_metrics(report)}
        done("wrote half1.tif, half2.tif, fsc-halves/")
    volume = save_density(work, sum(grids) / len(grids), origin, voxel, data.density_unit, meta)
    done("wrote density.tif")
    if how is None and results[0].predicted is not None:  # EM's or the grid solver's, after its final gain
        predicted = results[0].predicted.float().cpu()
    else:
        predicted = predict_fit([r.field for r in results], volume, pool,
                                data.photons_per_atom or 4 * math.pi, model=cfg.model,
                                attenuation=cfg.attenuation,
                                step_mm=_prediction_step(concrete.step_mm, voxel[0], cfg.em))
        done("predicted the views")
    moments = cloud_metrics(volume)
    views = residual_stats(data, pool, predicted)
    losses = [sum(v) / len(v) for v in zip(*(s.losses for s in states), strict=True)]
    views_images = view_images(data, pool, predicted)
    save_view_images(work / "views.npz", views_images, pool.read_noise_e)
    images = write_renders(work, views_images, pool.read_noise_e, volume, losses)
    done(f"wrote views.npz, renders/ ({len(images)} pictures)")
    if truth_path is not None:
        truth = load_truth(truth_path, where="fit")
        extra["fsc_truth"] = _fsc_metrics(fsc_truth(volume, truth, work))
        extra["against_truth"] = truth_errors(moments, cloud_metrics(truth))
        done("wrote fsc-truth/")
    if cfg.fringes:
        extra["fringes"] = _fringes(volume, truth_path, work / "renders" / "fringes.png", images,
                                    pool=pool, data=data, step_mm=concrete.step_mm)
        done("fitted the fringes")
    if cfg.uncertainty_splits and how is None:
        extra["uncertainty"] = refit_uncertainty(data, cfg, work / "uncertainty", (shape, origin, voxel),
                                                 pool_cache=pool_cache,
                                                 say=progress.log if progress else lambda text: None)
        done(f"refitted {cfg.uncertainty_splits} thinning split(s) for the uncertainty")
    refits_s = extra["uncertainty"]["seconds"] if "uncertainty" in extra else 0.0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    loop_s = sum(s.elapsed_s for s in states)
    metrics = {
        "run": run_name,
        "density_unit": data.density_unit,
        **moments,
        "final_loss": float(sum(losses[-50:]) / max(len(losses[-50:]), 1)),
        "steps": states[0].step,
        "solver": meta["solver"],
        **_convergence(results),
        "time_s": round(fit_time, 2),
        "outputs_s": round(time.perf_counter() - t_outputs - refits_s, 2),  # the splits' fits apart
        "fit_loop_s": round(loop_s, 2),
        "rays_per_s": round(sum(s.rays_rendered for s in states) / max(loop_s, 1e-9), 1),
        "peak_memory_mb": round(peak_mb, 1),
        "peak_memory_estimate_mb": (None if memory is None or device.type == "cuda"  # a host RSS estimate
                                    else round(memory.peak / 2**20, 1)),
        "peak_memory_kind": "GPU allocated" if device.type == "cuda" else "process max RSS",
        "backend": backend,
        "device": str(device),
        "voxel_size_mm": voxel[0],
        "grid": list(shape),
        "views": views,
        "atoms_near_faces": round(face_fraction(volume), 5),
        **extra,
        "versions": versions(),
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    }
    if data.density_unit != "atoms/mm^3":
        metrics["atoms_note"] = "relative units: the run gives no photons per atom"
    if results[0].camera_sensitivity is not None:
        metrics["camera_sensitivity"] = [r.camera_sensitivity.to_json() for r in results] if how else \
            results[0].camera_sensitivity.to_json()
    start = results[0].start_gaussian if how is None else None
    if start is not None and start.shot_noise_sd is not None:
        metrics["shot_noise_limit"] = shot_noise_limit(start)
    if warnings:
        metrics["warnings"] = list(warnings)
    faces = face_warning(metrics["atoms_near_faces"])
    if faces:
        metrics.setdefault("warnings", []).append(faces)
        if progress:
            progress.log(f"warning: {faces}")
    problem = worthless_result(metrics)
    remark = None if problem else unconverged_warning(metrics)
    if remark:
        metrics.setdefault("warnings", []).append(remark)
        if progress:
            progress.log(f"warning: {remark}")
    if problem:
        shutil.rmtree(work, ignore_errors=True)  # nothing in it is worth resuming
        if metrics.get("solver") == "em":  # no step size or regulariser to blame: the data
            hint = ("EM found no light the views explain: check the run with `recon inspect` (each view's "
                    "signal to noise; a view that barely sees the object) and its photons_per_atom")
        else:
            hint = (f"The fit diverged or is over-regularised: check lr ({cfg.lr:g}), tv_weight "
                    f"({cfg.tv_weight:g}) and sparsity_weight ({cfg.sparsity_weight:g}) in --config, and the "
                    "run with `recon inspect`")
        raise FitError(f"fit: {problem}; nothing was written. {hint}")
    atomic_write_json(work / "metrics.json", metrics)
    write_report(work, metrics, images)
    finish_out_dir(work, out)
    return metrics


def _fringes(volume: Volume, truth_path: Path | None, picture: Path, images: list[Path], *, pool: RayPool,
             data: FitData, step_mm: float) -> dict:
    """metrics.json's ``fringes``: the density's fringe fit (its picture added to ``images``), or why none.

    A density the fringe model cannot describe leaves the fit as it is; the record says why.
    Detected fringes also get their shot-noise limit (``shot_noise_limit``: the Cramér–Rao sd of
    the phase at the origin, the period and the contrast at the fitted model, through this pool's
    pixels, every :data:`BOUND_STRIDE`-th of them; :mod:`recon.fitting.fringe_bound`).
    """
    try:
        found = fit_fringes(volume)
    except ReconError as err:
        return {"detected": False, "why_not": str(err)}
    write_fringe_figure(volume, found, picture)
    images.append(picture)
    record = fringe_record(found, truth_fringes(truth_path))
    if found.detected:
        box = data.system.volume
        projector = Projector(pool, box.min_mm.tolist(), box.max_mm.tolist(), volume.shape,
                              photons_per_atom=data.photons_per_atom or 4 * math.pi, step_mm=step_mm)
        bound = fringe_bound(found.params, pool, projector, stride=BOUND_STRIDE)
        finite = {k: v for k, v in bound.items() if isinstance(v, float) and math.isfinite(v)}
        record["shot_noise_limit"] = {k: finite.get(k)
                                      for k in ("phase_at_origin_rad", "period_mm", "contrast")}
    return record


#: Every how many pixels the fringes' shot-noise limit is computed from (its information is summed
#: over pixels; a fourth of them estimates it at a fourth of the cost, as EM's start does).
BOUND_STRIDE = 4


def _prediction_step(step_mm: float, voxel_mm: float, em: bool) -> float:
    """Strata of the predicted views, mm.

    The fit's (EM: its projector's), or for a neural field, whose detail may be finer than its
    jittered strata, at most the output voxel or 0.02 mm.
    """
    return step_mm if em else min(step_mm, max(0.02, voxel_mm))


def _convergence(results: list[FitResult]) -> dict:
    """Whether each fit converged (its held-out deviance stopped falling) and its checks, for metrics.json."""
    fits = []
    for r in results:
        state, rule = r.state, r.stop_rule
        fits.append({"converged": r.converged, "stopped_by": state.stopped or "signal",
                     "best_step": rule.best_step if state.heldout else state.step,
                     "heldout_deviance": rule.best if state.heldout else None,
                     "held_out_pixels": r.held_out_pixels, "max_steps": r.max_steps,
                     "final_gain": r.final_gain,
                     "checks": [[int(k), round(float(d), 6)] for k, d in state.heldout]})
    return {"converged": all(f["converged"] for f in fits), "convergence": fits}


def _chi2(metrics: dict) -> tuple[int, float, float]:
    """Pixels, and χ² of the fit and of a flat image at each view's mean, summed over the views."""
    rows = [v for v in metrics["views"] if v["pixels"] > 0 and math.isfinite(v["flat_residual_rms"])]
    n = sum(v["pixels"] for v in rows)
    return (n, sum(v["pixels"] * v["residual_rms"] ** 2 for v in rows),
            sum(v["pixels"] * v["flat_residual_rms"] ** 2 for v in rows))


def _worse_than_flat(metrics: dict) -> str | None:
    """Where the views hold structure, a fit whose residuals are no smaller than a flat image's."""
    n, chi2_fit, chi2_flat = _chi2(metrics)
    structure = n > 0 and chi2_flat > n * (1 + 5 * math.sqrt(2 / n))  # a flat image leaves signal
    if structure and not chi2_fit < chi2_flat:
        return (f"its residuals (RMS {math.sqrt(chi2_fit / n):.3g} σ) are no smaller than those of a flat "
                f"image (RMS {math.sqrt(chi2_flat / n):.3g} σ)")
    return None


def worthless_result(metrics: dict) -> str | None:
    """Why a fit's result must not be reported as a success (None: it may).

    Non-finite atoms, centroid or widths; no atoms; or a prediction that explains none of the
    measured signal: it is off the measured total by more than a factor 2 and its residuals are
    no smaller than those of a flat image at each view's mean (χ² over the views' pixels), where
    the views hold structure at all.
    """
    atoms = metrics["atoms"]
    if atoms == 0 or (math.isfinite(atoms) and atoms < 0):  # before the centroid, which then has no value
        return "the fitted density is zero everywhere"
    figures = [atoms, *metrics["centroid_mm"], *metrics["width_mm"]]
    if not all(math.isfinite(v) for v in figures):
        return f"the result is not finite (atoms {atoms:.4g}, centroid {metrics['centroid_mm']})"
    measured = sum(v["measured_e"] for v in metrics["views"])
    predicted = sum(v["predicted_e"] for v in metrics["views"])
    worse = _worse_than_flat(metrics)
    if worse and measured > 0 and not 0.5 <= predicted / measured <= 2.0:
        return (f"the result explains none of the signal: it predicts {predicted:.3g} of the {measured:.3g} "
                f"measured photoelectrons, and {worse}")
    return None


def shot_noise_limit(gaussian) -> dict:
    """metrics.json's ``shot_noise_limit``: the Cramér–Rao standard deviations of a Gaussian cloud.

    Those of the data's 3D Gaussian (EM's start, :func:`recon.fitting.gaussian.fit_gaussian_and_gains`):
    what photon counting and read noise allow for the atoms, centre and widths of a Gaussian
    cloud seen by the training pixels, a floor under any estimator's errors, not the error bars
    of the fitted density's moments.
    """
    atoms, *rest = gaussian.shot_noise_sd
    return {"model": "the data's 3D Gaussian (Cramér–Rao bound of its parameters)",
            "atoms_sd": atoms, "atoms_relative_sd": atoms / gaussian.atoms,
            "centroid_sd_um": [1e3 * v for v in rest[:3]], "width_sd_um": [1e3 * v for v in rest[3:]]}


def unconverged_warning(metrics: dict) -> str | None:
    """A loud remark for a plausible result that a flat image would still beat (not converged)."""
    worse = _worse_than_flat(metrics)
    return None if worse is None else (f"the fit has not converged: {worse}; fit longer (--steps) before "
                                       "trusting it")


def save_density(
    out_dir: Path, data_grid: np.ndarray, origin, voxel, unit: str, meta: dict, *, name: str = "density.tif"
) -> Volume:
    """Write ``out_dir/name`` (default density.tif; uncompressed: noise hardly deflates); returns it."""
    volume = Volume(data_grid.astype(np.float32), tuple(origin), tuple(voxel), unit, meta)
    write_volume(out_dir / name, volume, compress=False)
    return volume
