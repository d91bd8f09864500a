"""The fit's three solvers, each with one :meth:`step`: EM, Adam, and Adam through a voxel grid.

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
- :class:`GridSolver`: an Adam step on the data term of an ordered subset of the training pixels,
  the field evaluated once a step at the voxel centres of a grid that tiles the box and that grid
  projected by EM's operator (:class:`~recon.fitting.projector.Projector`): the gradient of the
  loss with respect to the grid is the adjoint's back-projection, which autograd carries into the
  field. A step's cost is set by the grid's voxels and the subset's segments, not by a neural
  field evaluated at every sample of every ray.

All keep their optimiser state in ``optimizer`` (what the checkpoint saves and restores).
"""

from __future__ import annotations

import functools
import math

import torch

from recon.errors import FitError
from recon.fitting.checkpoint import FitState
from recon.fitting.config import FitConfig
from recon.fitting.em import OSEM, measured_over_predicted, partition
from recon.fitting.gaussian import Gaussian, fit_gaussian
from recon.fitting.memory import free_cached_memory, smaller_batch
from recon.fitting.projector import Projector, project, voxel_centres
from recon.fitting.raypool import RayPool
from recon.fitting.refine import Refinement
from recon.fitting.start import pool_view_directions, start_floor, start_grid, taper_axes, warm_grid
from recon.io.volume import Volume
from recon.model.loss import data_loss, tv_regulariser
from recon.model.render import render_pixels

__all__ = ["FIT_TO_GRID_LR", "FIT_TO_GRID_STEPS", "RUN_POINTS", "AdamSolver", "EMSolver", "GridSolver",
           "NonFiniteStep", "cosine_lr", "fit_to_grid", "regularisers", "voxel_means"]


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
        gain, lam = _gain_to_measured(self.projector, self.optimizer.values(), self.pool, self.train)
        self.field.grid.mul_(gain)
        return gain, gain * lam


def _gain_to_measured(projector: Projector, values: torch.Tensor, pool: RayPool, train: torch.Tensor
                      ) -> tuple[float, torch.Tensor]:
    """(the gain that makes the training pixels' light the measured light, λ of every pooled pixel).

    One forward pass of ``values`` over every pixel serves both (:func:`measured_over_predicted`);
    the solvers' :meth:`finish`.
    """
    lam = projector.forward(values, torch.arange(pool.n_pixels, device=train.device))
    return measured_over_predicted(lam[train], pool, train), lam


def cosine_lr(cfg: FitConfig, step: int, max_steps: int) -> float:
    """Adam's learning rate at ``step``: a cosine from ``lr`` at step 0 to ``lr_final`` at the step limit."""
    frac = min(step / max(max_steps - 1, 1), 1.0)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))


def regularisers(field, cfg: FitConfig, box, generator: torch.Generator, mean_density: float):
    """``tv_weight`` × the total variation plus ``sparsity_weight`` × the mean density (over the data's).

    Both at 4096 points drawn uniformly in the box (:func:`recon.model.loss.tv_regulariser`); 0
    without regularisers (nothing is drawn).
    """
    if not (cfg.tv_weight > 0 or cfg.sparsity_weight > 0):
        return 0.0
    device = field.device
    pts = box.min_mm.to(device) + torch.rand(4096, 3, generator=generator).to(device) * box.size_mm.to(device)
    term = 0.0
    if cfg.tv_weight > 0:
        term = term + cfg.tv_weight * tv_regulariser(field, pts, cfg.step_mm, mean_density)
    if cfg.sparsity_weight > 0:
        term = term + cfg.sparsity_weight * field(pts).mean() / mean_density
    return term


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
        return cosine_lr(self.cfg, step, self.max_steps)

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
        loss = loss + regularisers(self.field, cfg, self.box, gen, self.mean_density)
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


#: Voxel centres the grid solver evaluates the field at in one call (its activations held at once).
RUN_POINTS = 1 << 16


class GridSolver:
    """Adam on any field seen through a voxel grid, the data term projected by EM's operator.

    Each step evaluates the field at the voxel centres of ``grid``
    (:func:`recon.fitting.projector.voxel_centres`), takes
    its expected photoelectrons over one ordered subset of the training pixels by the projector
    (:func:`recon.fitting.projector.project`: the trilinear interpolation of those values at the
    stratum midpoints, as EM sees a voxel density), and makes an Adam step on the data term
    (``cfg.loss``) plus the regularisers; the gradient with respect to the grid is the adjoint's
    back-projection of the loss's derivative, which autograd carries into the field's parameters.
    Subsets are EM's (:func:`recon.fitting.em.partition` with the fit's seed, ``cfg.subsets`` of
    them: a pass is ``subsets`` steps), visited in turn; the learning rate follows
    :func:`cosine_lr` to the step limit.

    What the fit then determines is the field's values at those voxel centres: the held-out
    checks (:meth:`grid`) and the final gain and prediction (:meth:`finish`) project the same
    grid, and ``density.tif`` (the output grid) holds the field at the same points.

    Args:
        field: the field (any kind, emission model).
        pool: the ray pool, on the field's device.
        train: (P,) the training pixels.
        cfg: the fit's settings (``subsets``, ``seed``, ``step_mm``, ``lr``, ``lr_final``, ``loss``,
            ``tv_weight``, ``sparsity_weight``).
        photons_per_atom: Y.
        mean_density: the data's mean density (scales the regularisers).
        box: the system's volume (regulariser points are drawn in it).
        grid: the output grid, ``(shape (Z, Y, X), origin_mm (x, y, z), voxel_mm (dx, dy, dz))`` of
            :func:`recon.fitting.data.density_grid`: voxel ``(k, j, i)`` centred at ``origin +
            (i, j, k) · voxel``, the projector's grid tiling those voxels (density 0 beyond them).
        generator: the fit's generator (regulariser points; checkpointed).
        max_steps: the step limit.
    """

    name = "grid"

    def __init__(self, field, pool: RayPool, train: torch.Tensor, cfg: FitConfig, *, photons_per_atom: float,
                 mean_density: float, box, grid, generator: torch.Generator, max_steps: int) -> None:
        self.field, self.pool, self.train, self.cfg = field, pool, train, cfg
        self.mean_density, self.box, self.gen, self.max_steps = mean_density, box, generator, max_steps
        shape, origin, voxel = grid
        self.grid_voxel_mm = tuple(float(v) for v in voxel)
        lo = [o - v / 2 for o, v in zip(origin, voxel, strict=True)]
        hi = [a + n * v for a, n, v in zip(lo, shape[::-1], voxel, strict=True)]
        self.projector = Projector(pool, lo, hi, shape, photons_per_atom=photons_per_atom,
                                   step_mm=cfg.step_mm)
        self.points = voxel_centres(self.projector).to(dtype=field.dtype, device=train.device)
        self.shape = tuple(int(n) for n in shape)
        self.subsets = [self.projector.locality_order(part)
                        for part in partition(train, cfg.subsets, cfg.seed, cfg.subset_block)]
        self.optimizer = torch.optim.Adam(field.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)

    @torch.no_grad()
    def grid(self) -> torch.Tensor:
        """(Z, Y, X) the field at the voxel centres, not differentiable (in runs of :data:`RUN_POINTS`)."""
        return torch.cat([self.field(run) for run in self.points.split(RUN_POINTS)]).reshape(self.shape)

    def step(self, state: FitState) -> tuple[float, int]:
        """One Adam step on the next subset; returns (its loss, segments projected).

        The loss's gradient with respect to the grid comes first (the adjoint); the field is then
        evaluated again run by run with autograd and each run's part of that gradient carried into
        the parameters: the field's activations are held for one run at a time, not for every
        voxel at once (less memory, and faster on a CPU).
        """
        cfg, pool = self.cfg, self.pool
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(cfg, state.step, self.max_steps)
        pixels = self.subsets[state.step % len(self.subsets)]
        values = self.grid().requires_grad_(True)
        data = data_loss(project(self.projector, values, pixels), pool.summed_electrons[pixels],
                         pool.n_frames[pixels], pool.read_noise_e, kind=cfg.loss,
                         censored=pool.censored(pixels))
        self.optimizer.zero_grad(set_to_none=True)
        regulariser = regularisers(self.field, cfg, self.box, self.gen, self.mean_density)
        loss = float(data.detach()) + float(regulariser)
        if not math.isfinite(loss):  # before any change: the field and the optimiser are as they were
            raise NonFiniteStep(f"the loss became {loss}",
                                f"Lower lr (now {cfg.lr}, in --config) and {{then}}, or check the data")
        (slope,) = torch.autograd.grad(data, values)
        for run, part in zip(self.points.split(RUN_POINTS), slope.reshape(-1).split(RUN_POINTS), strict=True):
            self.field(run).backward(part)
        if torch.is_tensor(regulariser):
            regulariser.backward()
        self.optimizer.step()
        return loss, self.projector.segments(pixels)

    @torch.no_grad()
    def finish(self) -> tuple[float, torch.Tensor]:
        """Scale the field so that its light over the training pixels is the measured light, as EM does.

        Adam's ``log_gain`` wanders with the steps (the total is one direction among millions);
        :func:`recon.fitting.em.measured_over_predicted` is the likelihood's own condition on it.
        Returns the gain and the expected photoelectrons of every pooled pixel after it.
        """
        gain, lam = _gain_to_measured(self.projector, self.grid(), self.pool, self.train)
        self.field.log_gain += math.log(gain)
        return gain, gain * lam


#: Adam steps of :func:`fit_to_grid` and its learning rate (a cosine to a hundredth of it), chosen
#: by probes on data/run042's EM density (fit seed 0): fewer steps left the default hash grid a
#: misfit that cost resolution against the truth; these cost none there.
FIT_TO_GRID_STEPS = 3000
FIT_TO_GRID_LR = 1e-2


def fit_to_grid(field, points: torch.Tensor, target: torch.Tensor, *, generator: torch.Generator,
                steps: int = FIT_TO_GRID_STEPS, lr: float = FIT_TO_GRID_LR, batch: int = RUN_POINTS) -> float:
    """Fit ``field`` to densities ``target`` (N,) at ``points`` (N, 3) by least squares; returns the misfit.

    The field's gain first matched to the target's mean (over one batch), then Adam on batches of
    ``batch`` points drawn with ``generator``, the learning rate a cosine from
    ``lr`` to ``lr / 100`` over ``steps``; the loss is the squared difference over the target's
    mean square. Returns the RMS of the residual over every point relative to the target's RMS
    (0: the field holds the target exactly at the points). The grid solver's start from EM's
    density (``grid_start = "em"``).
    """
    scale = float(target.double().square().mean().sqrt()) or 1.0
    with torch.no_grad():  # first the gain that gives the field the target's mean
        pick = torch.randint(len(points), (min(batch, len(points)),), generator=generator).to(points.device)
        now, want = float(field(points[pick]).double().mean()), float(target[pick].double().mean())
        if now > 0 and want > 0:
            field.log_gain += math.log(want / now)
    optimizer = torch.optim.Adam(field.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr / 100 + 0.495 * lr * (1 + math.cos(math.pi * step / max(steps - 1, 1)))
        pick = torch.randint(len(points), (min(batch, len(points)),), generator=generator).to(points.device)
        loss = ((field(points[pick]) - target[pick]) / scale).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        squares = sum(float((field(run) - want).double().square().sum())
                      for run, want in zip(points.split(batch), target.split(batch), strict=True))
    return math.sqrt(squares / max(len(points), 1)) / scale


@torch.no_grad()
def voxel_means(density, points: torch.Tensor, voxel_mm, finer_mm: float) -> torch.Tensor:
    """(N,) the mean of ``density`` over the voxels of size ``voxel_mm`` (dx, dy, dz) centred at ``points``.

    At ``s³`` points a voxel (the centres of its ``s × s × s`` sub-voxels), ``s`` the fewest that
    make a sub-voxel no larger than ``finer_mm`` along any axis (the detail of ``density``: EM's
    voxel); ``s = 1`` is the value at the centre. The grid solver's start: EM's density as the
    output grid holds it, without the aliasing that point samples of a finer grid would carry.
    """
    sub = max(1, max(math.ceil(v / finer_mm - 1e-9) for v in voxel_mm))
    steps = [(torch.arange(sub, dtype=torch.float64) + 0.5) / sub - 0.5] * 3
    offsets = torch.stack(torch.meshgrid(*steps, indexing="ij"), -1).reshape(-1, 3)
    offsets = (offsets * torch.tensor(voxel_mm, dtype=torch.float64)).to(points.dtype)
    total = torch.zeros(len(points), dtype=torch.float64, device=points.device)
    for run in range(0, len(points), RUN_POINTS):
        part = points[run:run + RUN_POINTS]
        total[run:run + len(part)] = sum(density(part + shift.to(part.device)).double() for shift in offsets)
    return (total / len(offsets)).to(points.dtype)
