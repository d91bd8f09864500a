"""The fit loop: EM or Adam steps on the training pixels, stopped by the held-out pixels.

A fraction of each view's pixels is held out (:mod:`recon.fitting.holdout`). Each step is an
ordered-subsets EM update of a voxel density (:mod:`recon.fitting.em`, the default) or an Adam
step on the data term (Poisson by default) plus regularisers over a batch of training pixels,
rendered with every pooled sample of :mod:`recon.fitting.raypool`. Every ``check_every`` steps
the held-out deviance is measured; the fit stops when it has not improved for ``patience``
checks (it *converged*), or after ``max_passes`` passes or ``steps`` steps (it did not), and
returns the field of the best check; an EM fit's is then scaled so that its light over all the
training pixels is the measured light (:func:`recon.fitting.em.data_gain`). The loop checkpoints
(:mod:`recon.fitting.checkpoint`), stops cleanly on SIGINT/SIGTERM, refuses a non-finite loss,
and halves an Adam batch that runs out of memory (:mod:`recon.fitting.memory`).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch

from recon.errors import BackendUnavailableError, FitError
from recon.fitting.checkpoint import FitState, data_fingerprint, load_checkpoint, save_checkpoint
from recon.fitting.config import FitConfig
from recon.fitting.data import FitData
from recon.fitting.em import (
    OSEM,
    START_FLOOR,
    data_gain,
    fit_gaussian,
    pool_view_directions,
    start_grid,
    taper_axes,
)
from recon.fitting.holdout import StopRule, heldout_deviance, split_held_out
from recon.fitting.memory import free_cached_memory, smaller_batch
from recon.fitting.raypool import (
    RayPool,
    build_ray_pool,
    check_views_reach_the_box,
    check_views_see_the_box,
    rays_per_sample,
)
from recon.fitting.refine import Refinement
from recon.model.loss import data_loss, tv_regulariser
from recon.model.render import render_pixels

__all__ = ["FitInterrupted", "StopOnSignals", "estimate_atoms", "resolve_device", "run_fit", "step_limit"]


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by SIGINT or SIGTERM after writing its checkpoint (the message says where).

    Attributes:
        exit_status: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells report.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


class StopOnSignals:
    """While the block runs, SIGINT and SIGTERM raise :class:`FitInterrupted` with ``message``.

    For the parts of a fit job outside the fit loop (reading, tracing, writing outputs), where
    there is no state to save: the signal stops the job at once, saying what was kept. The loop
    installs its own handlers, which save a checkpoint first, and restores these after it.
    ``message`` may be changed as the job moves on. A no-op outside the main thread.
    """

    def __init__(self, message: str):
        self.message = message
        self._old: dict = {}

    def _raise(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        raise FitInterrupted(f"{self.message} ({name})", signum)

    def __enter__(self) -> StopOnSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._raise)
            except ValueError:  # not in the main thread
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


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
    per_pass = cfg.subsets if cfg.em else n_train / max(cfg.batch_pixels, 1)
    return max(1, min(cfg.steps, math.ceil(cfg.max_passes * per_pass)))


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
) -> dict:
    """Fit, checkpoint, and return the final state; writing outputs is :mod:`recon.jobs.fit`'s job.

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

    Returns:
        Dict with the field, the pool, the state and the device.

    Raises:
        FitError: no usable pixel or no signal; the loss became NaN/inf (the checkpoint on disk,
            the last good state, is kept); out of memory even at one pixel per step.
        ConfigError: a view none of whose pixels sees the box.
        FitInterrupted: SIGINT or SIGTERM, after the checkpoint was written.

    A step that runs out of memory is retried with half the pixels (:mod:`recon.fitting.memory`).
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    log = progress.log if progress else (lambda text: None)
    t0 = time.perf_counter()
    check_views_reach_the_box(data)
    pool = build_ray_pool(data, samples=cfg.pool_samples, seed=cfg.seed,
                          rays_per_sample=rays_per_sample(data, cfg.defocused_rays), cache_dir=pool_cache,
                          progress=log)
    usable = (pool.n_frames > 0).nonzero(as_tuple=True)[0]
    if len(usable) == 0:
        raise FitError(
            "fit: no usable pixels (all masked or saturated); check the frames with `recon inspect`"
        )
    if pool.summed_electrons[usable].abs().sum() == 0:
        raise FitError("fit: every usable pixel is zero; the frames hold no signal (check dark/offset)")
    check_views_see_the_box(data, pool)
    log(f"pool: {len(pool.rays)} segments for {pool.n_pixels} pixels ({time.perf_counter() - t0:.1f} s)")
    mean_density = estimate_atoms(data, pool)
    y = data.photons_per_atom or 4 * math.pi
    box = data.system.volume
    start = mean_density * (cfg.em_init if cfg.em else 1.0)
    field_module = make_field(cfg, box.min_mm.tolist(), box.max_mm.tolist(), start, device)
    # A --refine fit moves the optics, so held-out pixels traced through the static ones say
    # nothing about it: it runs its steps with every pixel.
    train, held = split_held_out(pool, usable, 0.0 if cfg.refine else cfg.holdout, cfg.seed)
    if cfg.em and not resume:  # EM starts from the data's Gaussian (recon.fitting.em, "The start")
        axes = taper_axes(pool_view_directions(pool))
        volume_mm3 = float((box.max_mm - box.min_mm).prod())
        gaussian = fit_gaussian(pool, train, box.min_mm.tolist(), box.max_mm.tolist(),
                                atoms=mean_density * volume_mm3, photons_per_atom=y, seed=cfg.seed)
        grid = start_grid(gaussian, mean_density, field_module.shape, box.min_mm.tolist(),
                          box.max_mm.tolist(), axes)
        with torch.no_grad():
            field_module.grid.copy_(grid[None, None])
        sd = ", ".join(f"{1e3 * float(v):.0f}" for v in torch.diagonal(gaussian.cov_mm2).sqrt())
        log(f"EM start: the data's Gaussian ({gaussian.atoms:.3g} atoms, σ {sd} µm) + "
            f"{START_FLOOR:.1%} uniform" + (f", tapered to 0 at the {'/'.join('xyz'[a] for a in axes)} "
                                             "faces" if axes else ""))
    pool_dev = RayPool(
        pool.rays.to(device),
        pool.offsets.to(device),
        pool.summed_electrons.to(device),
        pool.n_frames.to(device),
        pool.view_of_pixel.to(device),
        pool.read_noise_e,
        pool.samples,
    )
    train, held = train.to(device), held.to(device)
    if cfg.em:
        optim = OSEM(field_module, pool_dev, train, subsets=cfg.subsets, seed=cfg.seed,
                     photons_per_atom=y, step_mm=cfg.step_mm)
    else:
        optim = torch.optim.Adam(field_module.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
    max_steps = step_limit(cfg, len(train))
    check_every = cfg.check_every or (max(1, cfg.subsets // 8) if cfg.em else 100)
    rule = StopRule(patience=cfg.patience)
    best: dict = {}
    refine = Refinement.start(data, cfg, len(train), device) if cfg.refine else None
    if refine is not None and resume:
        raise FitError("fit: --resume cannot continue a --refine fit (the optical parameters are not in "
                       "the checkpoint); start the fit again without --resume")
    state = FitState()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    ckpt_path = out_dir / "checkpoint.pt"
    data_key = data_fingerprint(data)
    saved_step = None
    if resume:
        state = load_checkpoint(ckpt_path, field_module, optim, gen, cfg, data=data, best_field=best)
        if state.stop_rule:
            rule.load_state_dict(state.stop_rule)
        if state.stopped in ("steps", "passes") and state.step < max_steps:
            state.stopped = ""  # resumed with a higher limit: go on
        saved_step = state.step
        log(f"resumed from step {state.step}")
    if not state.batch_pixels:
        state.batch_pixels = cfg.batch_pixels

    def checkpoint() -> None:
        nonlocal saved_step
        state.stop_rule = rule.state_dict()
        save_checkpoint(ckpt_path, field_module, optim, gen, cfg, state, data_key=data_key,
                        best_field=best or None)
        saved_step = state.step

    def lr_at(step: int) -> float:
        frac = min(step / max(max_steps - 1, 1), 1.0)
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))

    def forward_backward(batch_pixels: int, refining: bool) -> tuple[float, int]:
        """One step's loss and gradients on a fresh batch; returns (loss, segments rendered).

        ``refining``: trace the batch through the learnable optics (self-calibration) instead of
        gathering it from the static pool, and add the optics' prior.
        """
        pick = torch.randint(len(train), (min(batch_pixels, len(train)),), generator=gen)
        pixels = train[pick.to(device)]
        if refining:
            pixels, batch = refine.batch(pixels, cfg.samples_per_step or cfg.pool_samples, gen)
        elif 0 < cfg.samples_per_step < cfg.pool_samples:
            pixels = pixels.repeat(cfg.samples_per_step)
            sample = torch.randint(cfg.pool_samples, (len(pixels),), generator=gen).to(device)
            batch = pool_dev.gather(pixels, sample)
        else:
            batch = pool_dev.gather(pixels)
        pred = render_pixels(
            field_module,
            batch,
            len(pixels),
            photons_per_atom=y,
            step_mm=cfg.step_mm,
            model=cfg.model,
            attenuation=cfg.attenuation,
            generator=gen,
        )
        loss = data_loss(
            pred,
            pool_dev.summed_electrons[pixels],
            pool_dev.n_frames[pixels],
            pool_dev.read_noise_e,
            kind=cfg.loss,
        )
        if cfg.tv_weight > 0 or cfg.sparsity_weight > 0:
            pts = box.min_mm.to(device) + torch.rand(4096, 3, generator=gen).to(device) * box.size_mm.to(
                device
            )
            if cfg.tv_weight > 0:
                loss = loss + cfg.tv_weight * tv_regulariser(field_module, pts, cfg.step_mm, mean_density)
            if cfg.sparsity_weight > 0:
                loss = loss + cfg.sparsity_weight * field_module(pts).mean() / mean_density
        if refining:
            loss = loss + refine.module.prior_term()
        if not torch.isfinite(loss):
            # Nothing is written: the checkpoint on disk is the last good state.
            if saved_step is not None:
                kept = f"the last good checkpoint (step {saved_step}) is {ckpt_path}"
                then = "rerun with --resume"
            else:
                kept = f"no checkpoint was written yet (checkpoint_every = {cfg.checkpoint_every})"
                then = "fit again"
            raise FitError(
                f"fit: the loss became {loss.item()} at step {state.step + 1}; {kept}. Lower lr "
                f"(now {cfg.lr}, in --config) and {then}, or check the data"
            )
        optim.zero_grad(set_to_none=True)
        if refining:
            refine.optim.zero_grad(set_to_none=True)
        loss.backward()
        return float(loss.detach()), len(batch)

    interrupted = {"flag": False, "signum": signal.SIGINT}

    def on_signal(signum, frame):
        interrupted["flag"], interrupted["signum"] = True, signum

    old_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not in the main thread
            pass

    def check() -> None:
        """Measure the held-out deviance; keep the field if it is the best; stop when the rule says."""
        deviance = heldout_deviance(field_module, pool_dev, held, photons_per_atom=y, step_mm=cfg.step_mm,
                                    projector=optim.projector if cfg.em else None,
                                    model=cfg.model, attenuation=cfg.attenuation)
        state.heldout.append([state.step, deviance])
        if rule.update(state.step, deviance):
            best.clear()
            best.update({k: v.detach().clone() for k, v in field_module.state_dict().items()})
        if on_check is not None:
            on_check(state.step, field_module, deviance)
        if rule.done:
            state.stopped = "held-out"
        if progress:
            progress.log(f"step {state.step}: held-out deviance {deviance:.5f} (best {rule.best:.5f} at step "
                         f"{rule.best_step})")

    def em_step() -> tuple[float, int]:
        loss, n_rays = optim.update(state.step)
        if not math.isfinite(loss) or not torch.isfinite(field_module.grid).all():
            raise FitError(f"fit: the EM update became non-finite at step {state.step + 1}; check the data "
                           "(`recon inspect`) and the run's photons_per_atom")
        return loss, n_rays

    if progress:
        progress.start(max_steps, state.step)
    t_start = time.perf_counter() - state.elapsed_s
    try:
        while state.step < max_steps and not state.stopped:
            if interrupted["flag"]:
                checkpoint()
                raise FitInterrupted(
                    f"fit stopped at step {state.step}/{max_steps}; checkpoint saved to {ckpt_path}; "
                    "run the same command with --resume to continue",
                    interrupted["signum"],
                )
            refining = refine is not None and state.step >= cfg.refine_warmup
            if cfg.em:
                loss, n_rays = em_step()
            else:
                for group in optim.param_groups:
                    group["lr"] = lr_at(state.step)
                try:
                    loss, n_rays = forward_backward(state.batch_pixels, refining)
                except RuntimeError as err:  # out of memory: halve the batch and go on (else re-raised)
                    state.batch_pixels = smaller_batch(err, state.batch_pixels, device=device, warn=log)
                    loss = None
                if loss is None:  # outside the except block, so the failed step's tensors are freed
                    optim.zero_grad(set_to_none=True)
                    free_cached_memory(device)
                    continue
                optim.step()
                if refining:
                    refine.optim.step()
            state.step += 1
            state.rays_rendered += n_rays
            state.losses.append(loss)
            if len(held) and (state.step % check_every == 0 or state.step == max_steps):
                check()
            state.elapsed_s = time.perf_counter() - t_start
            if progress:
                progress.update(
                    state.step, state.losses[-1], state.rays_rendered / max(state.elapsed_s, 1e-9)
                )
            if state.step >= max_steps and not state.stopped:
                state.stopped = "steps" if max_steps == cfg.steps else "passes"
            if state.step % cfg.checkpoint_every == 0 or state.stopped:
                checkpoint()
    finally:
        if progress:
            progress.stop()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    if best:
        field_module.load_state_dict(best)  # the field of the best held-out check
    gain = None
    if cfg.em:  # the total of the last subset's update → the light all training pixels hold
        gain = data_gain(field_module, pool_dev, train, photons_per_atom=y, step_mm=cfg.step_mm,
                         projector=optim.projector)
        with torch.no_grad():
            field_module.grid.mul_(gain)
        log(f"final gain (the measured over the predicted light of the {len(train)} training pixels): "
            f"{gain:.5f}")
    refined = record = None
    if refine is not None:
        refined, record, pool = refine.finish(data, cfg, log)
    return {
        "field": field_module,
        "pool": pool,
        "refined_system": refined,
        "refinement": record,
        "state": state,
        "device": device,
        "mean_density": mean_density,
        "photons_per_atom": y,
        "stop_rule": rule,
        "held_out_pixels": int(len(held)),
        "max_steps": max_steps,
        "final_gain": gain,
    }
