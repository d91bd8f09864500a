"""The fit loop: a solver's steps on the training pixels, stopped by the held-out pixels.

A fraction of each view's pixels is held out (:mod:`recon.fitting.holdout`). Each step is made by
a solver (:mod:`recon.fitting.solvers`): an ordered-subsets EM update of a voxel density (the
default) or an Adam step on the data term plus regularisers over a batch of training pixels,
rendered with every pooled sample of :mod:`recon.fitting.raypool`. Every ``check_every`` steps
the held-out deviance is measured; the fit stops when it has not improved for ``patience``
checks (it *converged*), or after ``max_passes`` passes or ``steps`` steps (it did not), and
keeps the field of the best check, which the solver then finishes (EM: the gain that makes its
light over all the training pixels the measured light). The loop checkpoints
(:mod:`recon.fitting.checkpoint`), stops cleanly on SIGINT/SIGTERM and refuses a non-finite
step; it returns a :class:`FitResult`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from optics.system import System
from recon.errors import BackendUnavailableError, DataError, FitError
from recon.fitting.checkpoint import FitState, data_fingerprint, load_checkpoint, save_checkpoint
from recon.fitting.config import FitConfig, resolved
from recon.fitting.data import FitData, density_grid
from recon.fitting.gaussian import Gaussian
from recon.fitting.holdout import StopRule, heldout_pixel_deviances, per_frame, split_held_out
from recon.fitting.raypool import (
    RayPool,
    boost_for_fit,
    build_ray_pool,
    check_views_reach_the_box,
    check_views_see_the_box,
    rays_per_sample,
)
from recon.fitting.refine import Refinement
from recon.fitting.sensitivity import (
    CameraSensitivity,
    estimate_camera_sensitivity,
    fits_sensitivity,
    scaled_pool,
)
from recon.fitting.solvers import (
    AdamSolver,
    EMSolver,
    GridSolver,
    NonFiniteStep,
    fit_to_grid,
    voxel_means,
)
from recon.io.volume import read_volume

__all__ = ["EM_START_KEYS", "FIRST_PASS_FACTOR", "FitInterrupted", "FitResult", "StopOnSignals",
           "check_interval", "estimate_atoms", "pace_line", "resolve_device", "run_fit", "step_limit"]


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by SIGINT or SIGTERM after writing its checkpoint (the message says where).

    Attributes:
        exit_status: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells report.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


class _OnSignals:
    """While the block runs, SIGINT and SIGTERM call :meth:`_handle`; the old handlers come back after.

    A no-op outside the main thread (signals can only be handled there).
    """

    def __init__(self) -> None:
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        raise NotImplementedError

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class StopOnSignals(_OnSignals):
    """While the block runs, SIGINT and SIGTERM raise :class:`FitInterrupted` with ``message``.

    For the parts of a fit job outside the fit loop (reading, tracing, writing outputs), where
    there is no state to save: the signal stops the job at once, saying what was kept. The loop
    installs its own handlers, which save a checkpoint first, and restores these after it.
    ``message`` may be changed as the job moves on. A no-op outside the main thread.
    """

    def __init__(self, message: str):
        super().__init__()
        self.message = message

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        raise FitInterrupted(f"{self.message} ({name})", signum)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "fit: --device cuda asked for, but torch sees no CUDA device; pass --device cpu (or auto)"
        )
    return torch.device(name)


def estimate_atoms(data: FitData, pool: RayPool) -> float:
    """Rough number of atoms (or relative total) from the total signal and the collected fraction.

    Uses the pooled weights: a uniform unit density in the box would produce ``Σ w · length``
    photoelectrons per unit emission, so the total signal over that gives the mean density.
    """
    y = data.photons_per_atom or 4 * math.pi
    w_len = (pool.rays.weights * (pool.rays.t_far - pool.rays.t_near)).sum().item()
    signal = (pool.summed_electrons / pool.n_frames.clamp_min(1)).sum().item()
    mean_density = max(signal, 1.0) / max(w_len * y / (4 * math.pi), 1e-30)
    return mean_density


def step_limit(cfg: FitConfig, n_train: int) -> int:
    """The most steps a fit makes: ``steps``, or ``max_passes`` passes over ``n_train`` pixels if fewer."""
    per_pass = cfg.subsets if cfg.ordered_subsets else n_train / max(cfg.batch_pixels, 1)
    return max(1, min(cfg.steps, math.ceil(cfg.max_passes * per_pass)))


def check_interval(cfg: FitConfig) -> int:
    """Steps between held-out checks when ``check_every = 0``.

    EM: ``subsets // 8`` (four updates of its 32 subsets; an update changes the map little); the
    grid solver: a pass (``subsets`` steps; a check costs the field on every voxel); Adam: 100.
    """
    if cfg.em:
        return max(1, cfg.subsets // 8)
    return cfg.subsets if cfg.solver_kind == "grid" else 100


#: An EM update of the first pass back-projects twice (the subset's sensitivity too): about this
#: many times a later update (one forward and one adjoint pass, the adjoint the dearer).
FIRST_PASS_FACTOR = 1.5


def pace_line(seconds: float, *, step: int, per_pass: float, steps_left: int, em: bool,
              sensitivities: bool = True) -> str:
    """What a step's time says about the fit's cost: per pass, and at most in all.

    ``seconds``: the time of step ``step`` (not the first, which loads the compiled kernels).
    ``sensitivities``: EM's first pass computes the subsets' sensitivities (False: they were read
    from the cache, and the first pass costs what the later ones do).
    """
    what = "update" if em else "step"
    dearer = em and sensitivities and step <= per_pass
    later = seconds / FIRST_PASS_FACTOR if dearer else seconds
    passes = (f"this first pass (with EM's sensitivities) ≈ {_duration(seconds * per_pass)}, later passes ≈ "
              f"{_duration(later * per_pass)}" if dearer else f"a pass ≈ {_duration(seconds * per_pass)}")
    return (f"{what} {step}: {seconds:.2f} s; {passes} ({per_pass:.0f} {what}s each); the held-out stop "
            f"usually ends a fit within a few passes, the step limit in ≤ {_duration(later * steps_left)}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


@dataclass
class FitResult:
    """What :func:`run_fit` returns: the fitted field and what the outputs are written from.

    Attributes:
        field: the field of the best held-out check (an EM field scaled by ``final_gain``).
        pool: the ray pool (traced again through the refined optics after ``--refine``).
        state: the loop's progress (steps, losses, held-out checks, why it stopped, time).
        stop_rule: the held-out stop rule (its best deviance and step).
        device: where the fit ran.
        mean_density: the data's mean density over the box (the fields' scale).
        photons_per_atom: Y.
        held_out_pixels: the number of held-out pixels.
        max_steps: the step limit.
        final_gain: EM's final gain (:meth:`~recon.fitting.solvers.EMSolver.finish`); None for Adam.
        predicted: EM's expected photoelectrons of every pooled pixel after that gain; None for Adam.
        refined_system: the self-calibrated system (``--refine``), else None.
        refinement: the record of what the refinement changed, else None.
        camera_sensitivity: the fitted per-camera light factors (already in ``pool``'s weights),
            else None (:mod:`recon.fitting.sensitivity`).
        start_gaussian: EM's start, the data's 3D Gaussian with its shot-noise limit
            (:class:`~recon.fitting.gaussian.Gaussian`); None for Adam or a resumed fit.
    """

    field: torch.nn.Module
    pool: RayPool
    state: FitState
    stop_rule: StopRule
    device: torch.device
    mean_density: float
    photons_per_atom: float
    held_out_pixels: int
    max_steps: int
    final_gain: float | None = None
    predicted: torch.Tensor | None = None
    refined_system: System | None = None
    refinement: dict | None = None
    camera_sensitivity: CameraSensitivity | None = None
    start_gaussian: Gaussian | None = None

    @property
    def converged(self) -> bool:
        """Whether the held-out deviance stopped falling (the fit stopped by its rule)."""
        return self.state.stopped == "held-out"


class _Signals(_OnSignals):
    """While the block runs, SIGINT and SIGTERM are noted (``signum``), not raised.

    The loop stops before its next step, after a checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None

    def _handle(self, signum, frame) -> None:
        self.signum = signum


def _device_pool(pool: RayPool, device: torch.device) -> RayPool:
    return dataclasses.replace(
        pool, rays=pool.rays.to(device), offsets=pool.offsets.to(device),
        summed_electrons=pool.summed_electrons.to(device), n_frames=pool.n_frames.to(device),
        view_of_pixel=pool.view_of_pixel.to(device),
        **{name: None if getattr(pool, name) is None else getattr(pool, name).to(device)
           for name in ("censored_frames", "censor_bound", "censor_shift", "censor_var")})


def _traced_pool(data: FitData, cfg: FitConfig, pool_cache, log) -> RayPool:
    """The run's ray pool, checked to hold usable pixels with signal that see the box."""
    t0 = time.perf_counter()
    check_views_reach_the_box(data)
    per_sample = rays_per_sample(data, cfg.defocused_rays)
    pool = build_ray_pool(data, samples=cfg.pool_samples, seed=cfg.seed, rays_per_sample=per_sample,
                          cache_dir=pool_cache, progress=log, sampling=cfg.pool_sampling)
    pool = boost_for_fit(pool, data, cfg, per_sample, progress=log)
    usable = pool.observed_frames > 0
    if not usable.any():
        raise FitError("fit: no usable pixels (all masked or saturated); check the frames with "
                       "`recon inspect`")
    if pool.summed_electrons[usable].abs().sum() == 0:
        raise FitError("fit: every usable pixel is zero; the frames hold no signal (check dark/offset)")
    check_views_see_the_box(data, pool)
    log(f"pool: {len(pool.rays)} segments for {pool.n_pixels} pixels ({time.perf_counter() - t0:.1f} s)")
    return pool


@dataclass
class _Prepared:
    """What :func:`_prepare` sets up for the steps: the pool, the field, the split and the solver."""

    pool: RayPool  # the host pool (its weights scaled by fitted camera factors)
    pool_dev: RayPool  # the same on the fit's device
    field: torch.nn.Module
    train: torch.Tensor  # on the device
    held: torch.Tensor
    solver: EMSolver | AdamSolver | GridSolver
    generator: torch.Generator
    mean_density: float
    photons_per_atom: float
    max_steps: int
    sensitivity: CameraSensitivity | None
    start: Gaussian | None


def _prepare(data: FitData, cfg: FitConfig, *, make_field: Callable, resume: bool, pool_cache, log,
             device: torch.device, grid_start=None) -> _Prepared:
    """The pool, the field, the held-out split, the camera factors, EM's start and the solver.

    In this order: each draws from the seeded generators in turn. ``grid_start``: a field the
    grid solver's field is first fitted to at its voxel centres (``grid_start = "em"``).
    """
    pool = _traced_pool(data, cfg, pool_cache, log)
    usable = (pool.observed_frames > 0).nonzero(as_tuple=True)[0]
    mean_density = estimate_atoms(data, pool)
    y = data.photons_per_atom or 4 * math.pi
    box = data.system.volume
    field = make_field(cfg, box.min_mm.tolist(), box.max_mm.tolist(),
                       mean_density * (cfg.em_init if cfg.em else 1.0), device)
    # A --refine fit moves the optics, so held-out pixels traced through the static ones say
    # nothing about it: it runs its steps with every pixel.
    train, held = split_held_out(pool, usable, 0.0 if cfg.refine else cfg.holdout, cfg.seed)
    sensitivity = None
    if fits_sensitivity(cfg.camera_sensitivity, data):  # also on resume: it depends only on the data
        if cfg.refine:
            raise FitError("fit: --refine traces through its own optics and cannot apply fitted camera "
                           "sensitivities; set camera_sensitivity = \"fixed\" in FIT.toml")
        volume_mm3 = float((box.max_mm - box.min_mm).prod())
        sensitivity = estimate_camera_sensitivity(data, pool, train, atoms=mean_density * volume_mm3,
                                                  photons_per_atom=y, seed=cfg.seed)
        pool = scaled_pool(pool, data, sensitivity)
        log(sensitivity.describe())
    start = None  # EM's start: the data's Gaussian (recon.fitting.em, "The start"), with its shot-noise limit
    if cfg.em and not resume:
        previous = read_volume(cfg.em_start) if cfg.em_start else None
        line, start = EMSolver.start(field, pool, train, box, mean_density=mean_density, photons_per_atom=y,
                                     seed=cfg.seed, previous=previous)
        log(line)
    pool_dev = _device_pool(pool, device)
    train, held = train.to(device), held.to(device)
    max_steps = step_limit(cfg, len(train))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    if cfg.refine and resume:
        raise FitError("fit: --resume cannot continue a --refine fit (the optical parameters are not in "
                       "the checkpoint); start the fit again without --resume")
    if cfg.em:
        solver = EMSolver(field, pool_dev, train, cfg, photons_per_atom=y, cache_dir=pool_cache, log=log)
        held = solver.projector.locality_order(held)  # the checks' projections, in their fastest order
    elif cfg.solver_kind == "grid":
        solver = GridSolver(field, pool_dev, train, cfg, photons_per_atom=y, mean_density=mean_density,
                            box=box, grid=density_grid(data, cfg.voxel_size_mm), generator=gen,
                            max_steps=max_steps)
        held = solver.projector.locality_order(held)
        if grid_start is not None:  # EM's density averaged over each output voxel
            voxel = solver.grid_voxel_mm
            nz, ny, nx = grid_start.shape  # EM's voxel field
            finer = min(float(e) / n for e, n in zip(box.size_mm, (nx, ny, nz), strict=True))
            target = voxel_means(grid_start, solver.points, voxel, finer)
            misfit = fit_to_grid(field, solver.points, target, generator=gen)
            log(f"grid start: the field fitted to EM's density over the {len(target):,} output voxels, "
                f"RMS misfit {100 * misfit:.2g} % of the density's RMS")
    else:
        refine = Refinement.start(data, cfg, len(train), device) if cfg.refine else None
        solver = AdamSolver(field, pool_dev, train, cfg, photons_per_atom=y, mean_density=mean_density,
                            box=box, generator=gen, max_steps=max_steps, refine=refine, warn=log)
    return _Prepared(pool, pool_dev, field, train, held, solver, gen, mean_density, y, max_steps, sensitivity,
                     start)


class _Steps:
    """The solver's steps with what the loop keeps around them: held-out checks, the best field, checkpoints.

    :meth:`run` makes steps until the stop rule, the step limit or a signal; a NaN/inf step or a
    signal raise, the checkpoint on disk being the last good state.
    """

    def __init__(self, prep: _Prepared, data: FitData, cfg: FitConfig, out_dir: Path, *, on_check, log):
        self.prep, self.cfg, self.log, self.on_check = prep, cfg, log, on_check
        self.rule = StopRule(patience=cfg.patience, significance=cfg.stop_significance)
        self.best: dict = {}  # the field's parameters at the best held-out check
        self.state = FitState()
        self.path = out_dir / "checkpoint.pt"
        self.data_key = data_fingerprint(data)
        self.saved_step: int | None = None
        self.check_every = cfg.check_every or check_interval(cfg)

    def resume(self, data: FitData) -> None:
        """Continue from the checkpoint: the field, the solver, the generator, the checks and the rule."""
        p = self.prep
        self.state = load_checkpoint(self.path, p.field, p.solver.optimizer, p.generator, self.cfg, data=data,
                                     best_field=self.best)
        if self.state.stop_rule:
            self.rule.load_state_dict(self.state.stop_rule)
            kept = self.rule.best_pixels
            if kept is not None and len(kept) != len(p.held):
                raise DataError(f"checkpoint {self.path}: its stop rule holds {len(kept)} held-out pixels, "
                                f"this fit has {len(p.held)}; start a new --out")
        if self.state.stopped in ("steps", "passes") and self.state.step < p.max_steps:
            self.state.stopped = ""  # resumed with a higher limit: go on
        self.saved_step = self.state.step
        self.log(f"resumed from step {self.state.step}")

    def checkpoint(self) -> None:
        p = self.prep
        self.state.stop_rule = self.rule.state_dict()
        save_checkpoint(self.path, p.field, p.solver.optimizer, p.generator, self.cfg, self.state,
                        data_key=self.data_key, best_field=self.best or None)
        self.saved_step = self.state.step

    def check(self) -> None:
        """Measure the held-out deviance; keep the field if it is the best; stop when the rule says."""
        p, cfg, state, rule = self.prep, self.cfg, self.state, self.rule
        pixels, counts = heldout_pixel_deviances(
            p.field, p.pool_dev, p.held, photons_per_atom=p.photons_per_atom, step_mm=cfg.step_mm,
            projector=p.solver.projector, model=cfg.model, attenuation=cfg.attenuation,
            grid=p.solver.grid() if isinstance(p.solver, GridSolver) else None)
        deviance = per_frame(pixels, counts)
        state.heldout.append([state.step, deviance])
        if rule.update(state.step, deviance, pixels, counts):
            self.best.clear()
            self.best.update({k: v.detach().clone() for k, v in p.field.state_dict().items()})
        if self.on_check is not None:
            self.on_check(state.step, p.field, deviance)
        if rule.done:
            state.stopped = "held-out"
        self.log(f"step {state.step}: held-out deviance {deviance:.5f} (best {rule.best:.5f} at step "
                 f"{rule.best_step})")

    def _step(self) -> tuple[float, int] | None:
        """One solver step; a NaN/inf step becomes a FitError that says what was kept."""
        try:
            return self.prep.solver.step(self.state)
        except NonFiniteStep as err:  # nothing written: the checkpoint on disk is the last good state
            if self.saved_step is not None:
                kept = f"the last good checkpoint (step {self.saved_step}) is {self.path}"
                then = "rerun with --resume"
            else:
                kept = f"no checkpoint was written yet (checkpoint_every = {self.cfg.checkpoint_every})"
                then = "fit again"
            raise FitError(f"fit: {err.what} at step {self.state.step + 1}; {kept}. "
                           f"{err.advice.format(then=then)}") from None

    def run(self, progress) -> None:
        """Steps until the stop rule, the step limit (``state.stopped`` says which) or a signal."""
        p, cfg, state = self.prep, self.cfg, self.state
        max_steps = p.max_steps
        if progress:
            progress.start(max_steps, state.step)
        first_step = state.step
        per_pass = cfg.subsets if cfg.ordered_subsets else max(1.0, len(p.train) / max(cfg.batch_pixels, 1))
        t_start = time.perf_counter() - state.elapsed_s
        try:
            with _Signals() as signals:
                while state.step < max_steps and not state.stopped:
                    if signals.signum is not None:
                        self.checkpoint()
                        raise FitInterrupted(f"fit stopped at step {state.step}/{max_steps}; checkpoint "
                                             f"saved to {self.path}; run the same command with --resume to "
                                             "continue", signals.signum)
                    t_step = time.perf_counter()
                    done = self._step()
                    if done is None:  # out of memory: the batch was halved, the step is made again
                        continue
                    loss, n_rays = done
                    state.step += 1
                    if state.step == first_step + 2:  # say early what the fit will cost
                        self.log(pace_line(time.perf_counter() - t_step, step=state.step, per_pass=per_pass,
                                           steps_left=max_steps - state.step, em=cfg.em,
                                           sensitivities=not getattr(p.solver, "sensitivities_read", False)))
                    state.rays_rendered += n_rays
                    state.losses.append(loss)
                    if len(p.held) and (state.step % self.check_every == 0 or state.step == max_steps):
                        self.check()
                    state.elapsed_s = time.perf_counter() - t_start
                    if progress:
                        progress.update(state.step, loss, state.rays_rendered / max(state.elapsed_s, 1e-9))
                    if state.step >= max_steps and not state.stopped:
                        state.stopped = "steps" if max_steps == cfg.steps else "passes"
                    if state.step % cfg.checkpoint_every == 0 or state.stopped:
                        self.checkpoint()
        finally:
            if progress:
                progress.stop()


#: What the grid solver's EM start (``grid_start = "em"``) takes from the fit's settings; the rest
#: (the field, the solver, subsets, steps, passes, checks, patience, learning rates) are EM's defaults.
EM_START_KEYS = ("device", "holdout", "pool_samples", "pool_sampling", "defocused_rays", "step_mm",
                 "voxel_size_mm", "seed", "camera_sensitivity", "em_init", "em_start", "em_power",
                 "subset_block", "memory_gb", "checkpoint_every", "log_every")


class _Prefixed:
    """A progress display that only passes its log lines on, each after ``prefix``."""

    def __init__(self, log: Callable, prefix: str) -> None:
        self._log, self._prefix = log, prefix

    def log(self, text: str) -> None:
        self._log(self._prefix + text)

    def start(self, *args) -> None:
        pass

    def update(self, *args) -> None:
        pass

    def stop(self) -> None:
        pass


def _em_fit(data: FitData, cfg: FitConfig, out_dir: Path, *, make_field: Callable, pool_cache,
            log) -> FitResult:
    """EM's fit of ``data`` (``recon fit``'s defaults but :data:`EM_START_KEYS` of ``cfg``): the grid start.

    Its checkpoint lives in ``out_dir/em-start`` while it runs and is removed after; a signal
    stops it with nothing to resume.
    """
    em_cfg = dataclasses.replace(FitConfig(), **{key: getattr(cfg, key) for key in EM_START_KEYS})
    where = out_dir / "em-start"
    try:
        return run_fit(data, em_cfg, where, make_field=make_field, pool_cache=pool_cache,
                       progress=_Prefixed(log, "EM start: "))
    except FitInterrupted as err:
        raise FitInterrupted("fit stopped during its EM start (grid_start = \"em\"), before the field's "
                             "steps: nothing to resume; run the same command again", err.exit_status - 128) \
            from None
    finally:
        shutil.rmtree(where, ignore_errors=True)


def run_fit(
    data: FitData,
    cfg: FitConfig,
    out_dir: Path,
    *,
    make_field: Callable,
    resume: bool = False,
    progress=None,
    on_check: Callable | None = None,
    pool_cache: str | os.PathLike | None = None,
) -> FitResult:
    """Fit, checkpoint, and return the result; writing outputs is :mod:`recon.jobs.fit`'s job.

    Args:
        data: the measured views and the system.
        cfg: fit settings.
        out_dir: output directory (checkpoint.pt lives there).
        make_field: ``make_field(cfg, box_min, box_max, mean_density, device) -> nn.Module``.
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: object with ``start(total)``, ``update(step, loss, rays_per_s)``,
            ``log(text)`` and ``stop()`` methods.
        on_check: called as ``on_check(step, field, deviance)`` after every held-out check
            (benchmarks use it to follow the fit against a known truth).
        pool_cache: directory of the ray-pool cache (:mod:`recon.fitting.poolcache`); None traces.

    Raises:
        FitError: no usable pixel or no signal; the loss became NaN/inf (the checkpoint on disk,
            the last good state, is kept); out of memory even at one pixel per step.
        ConfigError: a view none of whose pixels sees the box.
        FitInterrupted: SIGINT or SIGTERM, after the checkpoint was written.
    """
    cfg = resolved(cfg, data)  # step_mm = 0: from the fit's voxel
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    log = progress.log if progress else (lambda text: None)
    grid_start = None
    if cfg.solver_kind == "grid" and cfg.grid_start == "em" and not resume:
        grid_start = _em_fit(data, cfg, out_dir, make_field=make_field, pool_cache=pool_cache, log=log).field
    prep = _prepare(data, cfg, make_field=make_field, resume=resume, pool_cache=pool_cache, log=log,
                    device=device, grid_start=grid_start)
    steps = _Steps(prep, data, cfg, out_dir, on_check=on_check, log=log)
    if resume:
        steps.resume(data)
    if not steps.state.batch_pixels:
        steps.state.batch_pixels = cfg.batch_pixels
    steps.run(progress)
    if steps.best:
        prep.field.load_state_dict(steps.best)  # the field of the best held-out check
    gain, predicted = prep.solver.finish()
    if gain is not None:
        log(f"final gain (the measured over the predicted light of the {len(prep.train)} training "
            f"pixels): {gain:.5f}")
    result = FitResult(prep.field, prep.pool, steps.state, steps.rule, device, prep.mean_density,
                       prep.photons_per_atom, int(len(prep.held)), prep.max_steps, final_gain=gain,
                       predicted=predicted, camera_sensitivity=prep.sensitivity, start_gaussian=prep.start)
    if cfg.refine:
        result.refined_system, result.refinement, result.pool = prep.solver.refine.finish(data, cfg,
                                                                                           log)
        result.predicted = None
    return result
