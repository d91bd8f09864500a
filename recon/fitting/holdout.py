"""Held-out pixels: the data a fit never trains on, and the rule that stops it at the noise.

A fit of photon-limited data first learns the cloud and then, if it goes on, the photon noise of
the pixels it is fitted to. Pixels it never sees cannot be fitted that way: their deviance
(:func:`recon.model.loss.data_loss`, the shifted-Poisson deviance per pixel and frame) falls
while the fit learns structure the data hold and rises once it learns noise. So a fraction of
each view's usable pixels is held out (:func:`split_held_out`, stratified per view so every view
keeps its share), their deviance is measured every few steps (:func:`heldout_deviance`), and
:class:`StopRule` ends the fit once it has not improved for ``patience`` checks; the fit returns
the field of the best check. A fit stopped that way *converged*; one that reached its step limit
first did not, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recon.fitting.projector import Projector, predict_pixels
from recon.fitting.raypool import RayPool
from recon.model.loss import pixel_deviance

__all__ = ["StopRule", "heldout_deviance", "heldout_pixel_deviances", "paired_difference", "per_frame",
           "split_held_out"]


def split_held_out(pool: RayPool, usable: torch.Tensor, fraction: float, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split usable pixels into (train, held), holding out ``fraction`` of each view's pixels.

    The choice depends only on ``seed`` and the pool's views, so a resumed fit holds out the same
    pixels. A view with fewer than two usable pixels keeps them all for training.

    Args:
        pool: the ray pool (for each pixel's view).
        usable: (P,) indices of usable pixels (CPU).
        fraction: in [0, 0.5]; 0 holds out nothing.
        seed: seed of the choice.

    Returns:
        (train, held): sorted pixel indices (CPU), disjoint, together ``usable``.
    """
    if fraction <= 0:
        return usable.sort().values, usable.new_zeros(0)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    views = pool.view_of_pixel[usable]
    held = []
    for v in torch.unique(views).tolist():
        mine = usable[views == v]
        n_held = int(round(fraction * len(mine))) if len(mine) >= 2 else 0
        held.append(mine[torch.randperm(len(mine), generator=gen)[:n_held]])
    held_px = torch.cat(held).sort().values
    keep = torch.ones(pool.n_pixels, dtype=torch.bool)
    keep[held_px] = False
    train = usable[keep[usable]].sort().values
    return train, held_px


@torch.no_grad()
def heldout_deviance(field, pool: RayPool, held: torch.Tensor, *, photons_per_atom: float, step_mm: float,
                     model: str = "emission", attenuation: float = 1.0,
                     projector: Projector | None = None, grid: torch.Tensor | None = None) -> float:
    """Shifted-Poisson deviance per pixel and frame of the ``held`` pixels (stratum midpoints).

    Deterministic (no jitter), so that successive checks differ only by the field. ``projector``:
    EM's or the grid solver's, reused (:func:`recon.fitting.projector.predict_pixels`); ``grid``:
    the values that ``projector`` projects in place of the field (the grid solver's field at its
    voxel centres).
    """
    return per_frame(*heldout_pixel_deviances(field, pool, held, photons_per_atom=photons_per_atom,
                                              step_mm=step_mm, model=model, attenuation=attenuation,
                                              projector=projector, grid=grid))


def per_frame(deviance: torch.Tensor, count: torch.Tensor) -> float:
    """The deviance per pixel and frame of per-pixel deviances and frame counts (0 with no frame)."""
    total = float(count.sum())
    return float(deviance.sum()) / total if total > 0 else 0.0


@torch.no_grad()
def heldout_pixel_deviances(field, pool: RayPool, held: torch.Tensor, *, photons_per_atom: float,
                            step_mm: float, model: str = "emission", attenuation: float = 1.0,
                            projector: Projector | None = None, grid: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ``held`` pixel's deviance over its frames and the frames it counts (:func:`pixel_deviance`).

    :func:`heldout_deviance` is the ratio of their sums. Arguments as its.
    """
    if grid is not None:
        pred = projector.forward(grid, held)
    else:
        pred = predict_pixels(field, pool, held, photons_per_atom=photons_per_atom, step_mm=step_mm,
                              model=model, attenuation=attenuation, projector=projector)
    return pixel_deviance(pred, pool.summed_electrons[held], pool.n_frames[held], pool.read_noise_e,
                          censored=pool.censored(held))


def paired_difference(deviance: torch.Tensor, reference: torch.Tensor, count: torch.Tensor
                      ) -> tuple[float, float]:
    """How much worse ``deviance`` is than ``reference`` on the same pixels: (mean, its standard error).

    The mean is the difference of the two checks' deviances per pixel and frame, Σ(d − r)/Σc; its
    standard error that of a ratio of sums over pixels drawn at random (the delta method):
    √(Σ(d − r − m c)²)/Σc. The pixels are the same in both, so the error is that of their
    difference, far below either deviance's own.
    """
    cpu = ("cpu", torch.float64)  # the reference is kept on the CPU; a check may run on a GPU
    diff = deviance.detach().to(*cpu) - reference.detach().to(*cpu)
    count = count.detach().to(*cpu)
    total = float(count.sum())
    if not total > 0:
        return 0.0, 0.0
    mean = float(diff.sum()) / total
    return mean, float(((diff - mean * count) ** 2).sum().sqrt()) / total


@dataclass
class StopRule:
    """Stop once the held-out deviance has not improved by ``tolerance`` (relative) for ``patience`` checks.

    With ``significance`` s > 0 an improvement must also be significant: the new check's deviance
    below the best one's by more than s standard errors of their difference pixel by pixel
    (:func:`paired_difference`; both checks see the same held-out pixels, so that error is far
    below either deviance's own). Checks that only match the best within that error
    count as no improvement, so the field kept is the earliest that no later check beats
    significantly (a one-standard-error rule, after Breiman et al. 1984), and the fit stops
    ``patience`` checks later.

    Attributes:
        patience: checks without an improvement before the fit stops.
        tolerance: relative improvement that counts (deviance noise is ≈ 1/√pixels).
        significance: standard errors an improvement must exceed (0: ``tolerance`` alone).
        best: the lowest deviance so far (inf before the first check).
        best_step: the step at which it was measured.
        waited: checks since then.
        best_pixels: the best check's deviance of each held-out pixel (kept with ``significance``).
    """

    patience: int = 3
    tolerance: float = 1e-4
    significance: float = 0.0
    best: float = math.inf
    best_step: int = 0
    waited: int = 0
    best_pixels: torch.Tensor | None = None

    def update(self, step: int, deviance: float, pixels: torch.Tensor | None = None,
               counts: torch.Tensor | None = None) -> bool:
        """Record a check; True when it is a new best (the caller keeps that field).

        ``pixels``, ``counts``: the check's deviance of each held-out pixel and the frames it
        counts (:func:`heldout_pixel_deviances`), needed with ``significance``.
        """
        better = deviance < self.best * (1 - self.tolerance) or not math.isfinite(self.best)
        if better and self.significance > 0 and pixels is not None and self.best_pixels is not None:
            mean, error = paired_difference(pixels, self.best_pixels, counts)
            better = mean < -self.significance * error
        if better:
            self.best, self.best_step, self.waited = deviance, step, 0
            if self.significance > 0 and pixels is not None:
                self.best_pixels = pixels.detach().to("cpu", torch.float64).clone()
            return True
        self.waited += 1
        return False

    @property
    def done(self) -> bool:
        """True once ``patience`` checks in a row brought no improvement."""
        return self.waited >= self.patience

    def state_dict(self) -> dict:
        """Plain data for a checkpoint (and the best check's per-pixel deviances, a tensor, if kept)."""
        state = {"best": self.best, "best_step": self.best_step, "waited": self.waited}
        if self.best_pixels is not None:
            state["best_pixels"] = self.best_pixels
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.waited = int(state["waited"])
        pixels = state.get("best_pixels")
        self.best_pixels = None if pixels is None else torch.as_tensor(pixels, dtype=torch.float64).clone()
