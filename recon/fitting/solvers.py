"""The fit's two solvers, each with one :meth:`step`: EM on a voxel grid, and Adam on any field.

The fit loop (:func:`recon.fitting.loop.run_fit`) owns what both share (the held-out checks, the
checkpoints, the signals); a solver owns how a step changes the field:

- :class:`EMSolver`: ordered-subsets EM (:class:`recon.fitting.em.OSEM`) from the data's own
  Gaussian (:meth:`EMSolver.start`), and at the end the gain that makes the kept field's light
  over the training pixels the measured light, with the prediction of every pixel it came from
  (:meth:`EMSolver.finish`).
- :class:`AdamSolver`: an Adam step on the data term plus regularisers over a batch of training
  pixels, with a cosine learning rate, the optics refined jointly after a warm-up (``--refine``,
  :mod:`recon.fitting.refine`), and a batch halved where it runs out of memory
  (:mod:`recon.fitting.memory`).

Both keep their optimiser state in ``optimizer`` (what the checkpoint saves and restores).
"""

from __future__ import annotations

import functools
import math

import torch

from recon.errors import FitError
from recon.fitting.checkpoint import FitState
from recon.fitting.config import FitConfig
from recon.fitting.em import OSEM, Gaussian, fit_gaussian, measured_over_predicted
from recon.fitting.memory import free_cached_memory, smaller_batch
from recon.fitting.projector import Projector
from recon.fitting.raypool import RayPool
from recon.fitting.refine import Refinement
from recon.fitting.start import pool_view_directions, start_floor, start_grid, taper_axes, warm_grid
from recon.io.volume import Volume
from recon.model.loss import data_loss, tv_regulariser
from recon.model.render import render_pixels

__all__ = ["AdamSolver", "EMSolver", "NonFiniteStep"]


class NonFiniteStep(FitError):
    """A step whose loss or field became non-finite (nothing was changed by it on disk).

    ``what`` says what became non-finite, ``advice`` what to change, with ``{then}`` where the loop
    says how to go on (it also adds the step and what its checkpoint kept).
    """

    def __init__(self, what: str, advice: str):
        super().__init__(what)
        self.what, self.advice = what, advice


class EMSolver:
    """OSEM updates of a linear :class:`~recon.model.fields.voxel.VoxelField` (:mod:`recon.fitting.em`).

    Args:
        field: the field; its grid is updated in place.
        pool: the ray pool, on the field's device.
        train: (P,) the training pixels.
        cfg: the fit's settings (``subsets``, ``subset_block``, ``em_power``, ``seed``, ``step_mm``).
        photons_per_atom: Y.
        cache_dir: the pool cache's folder, where the subsets' sensitivities are kept for the
            next shot through the same instrument (:class:`~recon.fitting.em.OSEM`); None: not kept.
        log: called with a line of text (what the cache did).
    """

    name = "em"

    def __init__(self, field, pool: RayPool, train: torch.Tensor, cfg: FitConfig, *,
                 photons_per_atom: float, cache_dir=None, log=None) -> None:
        self.field, self.pool, self.train = field, pool, train
        self.optimizer = OSEM(field, pool, train, subsets=cfg.subsets, seed=cfg.seed,
                              photons_per_atom=photons_per_atom, step_mm=cfg.step_mm, power=cfg.em_power,
                              block=cfg.subset_block, cache_dir=cache_dir, log=log)

    @property
    def projector(self) -> Projector:
        """EM's projector, reused by the held-out checks."""
        return self.optimizer.projector

    @property
    def sensitivities_read(self) -> bool:
        """Whether the subsets' sensitivities came from the cache (the first pass then costs no more)."""
        return self.optimizer.sensitivities_read

    @staticmethod
    def start(field, pool: RayPool, train: torch.Tensor, box, *, mean_density: float, photons_per_atom: float,
              seed: int, previous: Volume | None = None) -> tuple[str, Gaussian]:
        """Set ``field``'s grid to EM's start (the data's Gaussian plus a floor).

        With ``previous`` (``em_start``: another shot's density), the start is that density
        moved onto the Gaussian's centre and scaled to its atoms (:func:`~recon.fitting.start.warm_grid`).
        Returns a line saying so, and the Gaussian with its shot-noise limit (``fisher=True``).
        """
        axes = taper_axes(pool_view_directions(pool))
        volume_mm3 = float((box.max_mm - box.min_mm).prod())
        gaussian = fit_gaussian(pool, train, box.min_mm.tolist(), box.max_mm.tolist(),
                                atoms=mean_density * volume_mm3, photons_per_atom=photons_per_atom, seed=seed,
                                fisher=True)
        floor = start_floor(gaussian, box.min_mm.tolist(), box.max_mm.tolist())
        make = start_grid if previous is None else functools.partial(warm_grid, previous)
        grid = make(gaussian, mean_density, field.shape, box.min_mm.tolist(), box.max_mm.tolist(), axes,
                    floor=floor)
        with torch.no_grad():
            field.grid.copy_(grid[None, None])
        sd = ", ".join(f"{1e3 * float(v):.0f}" for v in torch.diagonal(gaussian.cov_mm2).sqrt())
        what = ("the data's Gaussian" if previous is None
                else "em_start's density moved onto the data's Gaussian")
        return (f"EM start: {what} ({gaussian.atoms:.3g} atoms, σ {sd} µm) + {100 * floor:.2g}% "
                "uniform" + (f", tapered to 0 at the {'/'.join('xyz'[a] for a in axes)} faces"
                             if axes else "")), gaussian

    def step(self, state: FitState) -> tuple[float, int]:
        """One OSEM update; returns (the subset's deviance before it, segments projected)."""
        loss, n_rays = self.optimizer.update(state.step)
        if not math.isfinite(loss) or not torch.isfinite(self.field.grid).all():
            raise NonFiniteStep("the EM update became non-finite",
                                "Check the data (`recon inspect`) and the run's photons_per_atom, "
                                "then {then}")
        return loss, n_rays

    @torch.no_grad()
    def finish(self) -> tuple[float, torch.Tensor]:
        """Scale the field so that its light over the training pixels is the measured light.

        The subset gains leave the total wandering from one update to the next
        (:func:`recon.fitting.em.data_gain`). Returns the gain and the expected photoelectrons
        of every pooled pixel after it (one forward pass serves both).
        """
        op = self.projector
        lam = op.forward(self.optimizer.values(), torch.arange(self.pool.n_pixels, device=self.train.device))
        gain = measured_over_predicted(lam[self.train], self.pool, self.train)
        self.field.grid.mul_(gain)
        return gain, gain * lam


class AdamSolver:
    """Adam steps on the data term (``cfg.loss``) plus regularisers, over batches of training pixels.

    Args:
        field: the field (any kind).
        pool: the ray pool, on the field's device.
        train: (P,) the training pixels.
        cfg: the fit's settings.
        photons_per_atom: Y.
        mean_density: the data's mean density (scales the regularisers).
        box: the system's volume (regulariser points are drawn in it).
        generator: the fit's generator (batches, jitter, regulariser points; checkpointed).
        max_steps: the step limit (the cosine learning rate reaches ``lr_final`` there).
        refine: the learnable optics (``--refine``) or None.
        warn: where a halved batch is said.
    """

    name = "adam"
    projector = None

    def __init__(self, field, pool: RayPool, train: torch.Tensor, cfg: FitConfig, *, photons_per_atom: float,
                 mean_density: float, box, generator: torch.Generator, max_steps: int,
                 refine: Refinement | None, warn) -> None:
        self.field, self.pool, self.train, self.cfg = field, pool, train, cfg
        self.y, self.mean_density, self.box, self.gen = photons_per_atom, mean_density, box, generator
        self.max_steps, self.refine, self.warn = max_steps, refine, warn
        self.device = train.device
        self.optimizer = torch.optim.Adam(field.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)

    def lr_at(self, step: int) -> float:
        """The cosine schedule from ``lr`` at step 0 to ``lr_final`` at the step limit."""
        cfg = self.cfg
        frac = min(step / max(self.max_steps - 1, 1), 1.0)
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))

    def step(self, state: FitState) -> tuple[float, int] | None:
        """One Adam step; returns (loss, segments rendered), or None where the batch ran out of memory.

        Then ``state.batch_pixels`` is halved and nothing was changed: the loop calls again.
        """
        refining = self.refine is not None and state.step >= self.cfg.refine_warmup
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(state.step)
        try:
            loss, n_rays = self._forward_backward(state.batch_pixels, refining)
        except RuntimeError as err:  # out of memory: halve the batch (else re-raised)
            state.batch_pixels = smaller_batch(err, state.batch_pixels, device=self.device, warn=self.warn)
            loss = None
        if loss is None:  # outside the except block, so the failed step's tensors are freed
            self.optimizer.zero_grad(set_to_none=True)
            free_cached_memory(self.device)
            return None
        self.optimizer.step()
        if refining:
            self.refine.optim.step()
        return loss, n_rays

    def _forward_backward(self, batch_pixels: int, refining: bool) -> tuple[float, int]:
        """One step's loss and gradients on a fresh batch; returns (loss, segments rendered).

        ``refining``: trace the batch through the learnable optics (self-calibration) instead of
        gathering it from the static pool, and add the optics' prior.
        """
        cfg, pool, gen, device, train = self.cfg, self.pool, self.gen, self.device, self.train
        pick = torch.randint(len(train), (min(batch_pixels, len(train)),), generator=gen)
        pixels = train[pick.to(device)]
        if refining:
            pixels, batch = self.refine.batch(pixels, cfg.samples_per_step or cfg.pool_samples, gen)
        elif 0 < cfg.samples_per_step < cfg.pool_samples:
            pixels = pixels.repeat(cfg.samples_per_step)
            sample = torch.randint(cfg.pool_samples, (len(pixels),), generator=gen).to(device)
            batch = pool.gather(pixels, sample)
        else:
            batch = pool.gather(pixels)
        pred = render_pixels(self.field, batch, len(pixels), photons_per_atom=self.y, step_mm=cfg.step_mm,
                             model=cfg.model, attenuation=cfg.attenuation, generator=gen)
        loss = data_loss(pred, pool.summed_electrons[pixels], pool.n_frames[pixels], pool.read_noise_e,
                         kind=cfg.loss, censored=pool.censored(pixels))
        if cfg.tv_weight > 0 or cfg.sparsity_weight > 0:
            box = self.box
            pts = (box.min_mm.to(device)
                   + torch.rand(4096, 3, generator=gen).to(device) * box.size_mm.to(device))
            if cfg.tv_weight > 0:
                loss = loss + cfg.tv_weight * tv_regulariser(self.field, pts, cfg.step_mm, self.mean_density)
            if cfg.sparsity_weight > 0:
                loss = loss + cfg.sparsity_weight * self.field(pts).mean() / self.mean_density
        if refining:
            loss = loss + self.refine.module.prior_term()
        if not torch.isfinite(loss):  # before any change: the field and the optimiser are as they were
            raise NonFiniteStep(f"the loss became {loss.item()}",
                                f"Lower lr (now {cfg.lr}, in --config) and {{then}}, or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        if refining:
            self.refine.optim.zero_grad(set_to_none=True)
        loss.backward()
        return float(loss.detach()), len(batch)

    def finish(self) -> tuple[None, None]:
        """Nothing to do: Adam fits the field's gain with it (``log_gain``)."""
        return None, None
