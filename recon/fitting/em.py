r"""Ordered-subsets expectation maximisation (OSEM) of a voxel density on the ray pool.

In the emission model the expected photoelectrons of pixel i are linear in the voxel values x:
:math:`λ_i = (A x)_i`, with A the pooled rays' quadrature (stratum midpoints, trilinear
interpolation: :func:`recon.model.render.render_pixels` of a :class:`~recon.model.fields.voxel.VoxelField`
with the ``linear`` activation). For the shifted-Poisson model of :mod:`recon.model.loss`, with
:math:`K_i` frames summing to :math:`S_i` photoelectrons and read-noise variance σ², the EM update
(Shepp & Vardi 1982; for the shifted model Snyder et al. 1993) is

.. math::

    x_j ← x_j \frac{\sum_i w_i A_{ij} (S_i + K_i σ^2)_+ / (λ_i + σ^2)}{\sum_i w_i A_{ij} K_i}

with :math:`w_i = 1` the EM of the likelihood itself. It keeps x ≥ 0 and needs no step size.
Ordered subsets (Hudson & Larkin 1994) apply it with a fraction of the pixels at a time, so that
one pass over the data makes ``n`` updates. Both sums are backprojections :math:`A^T v` by the
projector's adjoint (:class:`recon.fitting.projector.Projector`, compiled kernels on the CPU). The
denominator of each subset is computed once and kept; voxels that no training pixel sees are set
to 0 once every subset has been visited (nothing supports a density there).

**View weights.** Each view's pixels are weighted by its signal fraction
:math:`w_v = \sum_{i∈v} S_i / \sum_{i∈v} (S_i + K_i σ^2)`, relative to the largest
(:func:`view_weights`): a view whose light is spread over many read-noise-dominated pixels (the
defocused direct view of the dome: 0.087 against 0.31–0.40 for the mirror views) says little
per pixel, yet with :math:`w_i = 1` its ratios of about 1 ± noise hold every voxel back. The
weighted update is the EM of the likelihood with each view's log-likelihood weighted by
:math:`w_v`; consistent data are still its fixed point.

**The start** (:mod:`recon.fitting.start`): the data's own 3D Gaussian
(:func:`~recon.fitting.gaussian.fit_gaussian`) plus a small tapered floor, or another shot's density
moved onto that Gaussian (a warm start).

After the first pass each update first scales x by the subset's best global gain
(:func:`best_gain`, Newton's method on the one parameter), which holds the total at the data's
while the shape converges (not in the first pass, so that a faint start, ``em_init`` < 1, is
lifted by the updates rather than at once).

Iterating to convergence fits the photon noise; the fit loop stops it with the held-out pixels
(:mod:`recon.fitting.holdout`) and scales the field it keeps by :func:`data_gain`, which makes its
light over all the training pixels the measured light: the subset gains leave the total
wandering from one update to the next (by about ±1 % on run042), the sum over every pixel does not.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numba
import torch

from recon.fitting.poolcache import (
    PoolCacheError,
    array_digest,
    load_sensitivities,
    mark_used,
    pool_path,
    prune_cache,
    save_sensitivities,
    sensitivity_path,
    tracing_code_version,
)
from recon.fitting.projector import Projector, predict_pixels, voxel_values
from recon.fitting.raypool import RayPool
from recon.model.loss import data_loss, shift_variance
from recon.threads import numba_threads

__all__ = ["OSEM", "best_gain", "completed_counts", "data_gain", "measured_over_predicted", "partition",
           "shifted_counts", "view_weights"]


def best_gain(lam: torch.Tensor, shifted: torch.Tensor, frames: torch.Tensor, var: float,
              iterations: int = 30) -> float:
    """The factor g that maximises the shifted-Poisson likelihood of ``g·λ``.

    The log-likelihood ``Σ s_i log(g λ_i + σ²) − K_i (g λ_i + σ²)`` (``s_i = (S_i + K_i σ²)_+``)
    is concave in g; Newton's method from g = 1, kept positive. 1 where nothing is predicted.
    """
    lam, shifted, frames = lam.double(), shifted.double(), frames.double()
    total = float((frames * lam).sum())
    if not total > 0:
        return 1.0
    g = 1.0
    for _ in range(iterations):
        q = lam / (g * lam + var)
        slope = float((q * shifted).sum()) - total
        curvature = float((q * q * shifted).sum())
        if curvature <= 0:
            break
        step = slope / curvature
        g = g + step if g + step > 0 else g / 2
        if abs(step) < 1e-9 * g:
            break
    return g


def shifted_counts(pool: RayPool, pixels: torch.Tensor, dtype: torch.dtype):
    """``(S + K σ²)_+``, K and σ² of ``pixels``, as :func:`recon.model.loss.data_loss` shifts them."""
    var = shift_variance(pool.read_noise_e)
    k = pool.n_frames[pixels].to(dtype)
    return (pool.summed_electrons[pixels] + k * var).clamp_min(0.0), k, var


def completed_counts(pool: RayPool, pixels: torch.Tensor, lam: torch.Tensor):
    """:func:`shifted_counts` with each censored frame completed by ``E[N | N ≤ k; λ + σ_f²]``.

    The E-step of censored data (:mod:`recon.model.loss`): the shifted counts and frames of
    ``pixels`` as if every frame clipped at the black level had been read, at the prediction
    ``lam`` (per frame). Frames whose bound is negative stay out.
    """
    shifted, k, var = shifted_counts(pool, pixels, lam.dtype)
    censored = pool.censored(pixels)
    if censored is None:
        return shifted, k, var
    frames = censored.used().to(lam.dtype)
    expected = (censored.electrons(lam) + var).clamp_min(0.0).to(lam.dtype)  # a frame's shifted count
    return shifted + frames * expected, k + frames, var


@torch.no_grad()
def data_gain(field, pool: RayPool, pixels: torch.Tensor, *, photons_per_atom: float,
              step_mm: float, projector: Projector | None = None) -> float:
    """The gain that makes the field's light over ``pixels`` the measured light: ``Σ S / Σ K λ``.

    Photon counting, every pooled sample rendered. OSEM's total moves with the subset of the last
    update; the likelihood's best gain (:func:`best_gain`) over all pixels would weight the bright
    pixels most, so a shape that puts too little light in the faint tails (as an early stop
    leaves it) gets too low a total from it; the sum of the counts holds every photon at equal
    weight, whatever the shape. 1 where nothing is predicted; 0 where the counts sum to less than 0.
    ``projector``: EM's, reused (:func:`recon.fitting.projector.predict_pixels`).
    """
    lam = predict_pixels(field, pool, pixels, photons_per_atom=photons_per_atom, step_mm=step_mm,
                         projector=projector)
    return measured_over_predicted(lam, pool, pixels)


def measured_over_predicted(lam: torch.Tensor, pool: RayPool, pixels: torch.Tensor) -> float:
    """``Σ S / Σ K λ`` over ``pixels`` given their predictions λ (:func:`data_gain`).

    Censored frames count with their expected value at λ (:func:`completed_counts`).
    """
    lam = lam.double().clamp_min(0.0)
    frames = pool.n_frames[pixels].double()
    measured = float(pool.summed_electrons[pixels].double().sum())
    censored = pool.censored(pixels)
    if censored is not None:  # each censored frame with its expected photoelectrons
        clipped = censored.used()
        measured += float((clipped * censored.electrons(lam)).sum())
        frames = frames + clipped
    predicted = float((frames * lam).sum())
    if not predicted > 0:
        return 1.0
    return max(measured, 0.0) / predicted


def view_weights(pool: RayPool) -> torch.Tensor:
    """(V,) each view's signal fraction ``Σ S / Σ (S + K σ²)`` over its pixels, relative to the largest.

    A view with no signal above the read noise gets 1 % of the largest weight (it still says where
    the atoms are not).
    """
    views = int(pool.view_of_pixel.max()) + 1
    view = pool.view_of_pixel.cpu()
    var = shift_variance(pool.read_noise_e)
    signal = torch.zeros(views, dtype=torch.float64).index_add_(0, view, pool.summed_electrons.double().cpu())
    noise = torch.zeros(views, dtype=torch.float64).index_add_(0, view, pool.n_frames.double().cpu() * var)
    signal = signal.clamp_min(0)
    fraction = signal / (signal + noise)
    if not float(fraction.max()) > 0:
        return torch.ones(views, dtype=torch.float64)
    return (fraction / fraction.max()).clamp_min(0.01)


def partition(train: torch.Tensor, subsets: int, seed: int, block: int = 1) -> list[torch.Tensor]:
    """The training pixels in ``subsets`` ordered subsets at random, each sorted; each pixel in one.

    ``block`` > 1 draws blocks of that many consecutive training pixels (a stretch of an image
    row) rather than single pixels: the rays of neighbouring pixels cross neighbouring voxels, so
    a subset's projections read and write the grid with fewer cache misses, while each subset
    still holds every view. The partition depends only on the seed (and the pixels).
    """
    gen = torch.Generator().manual_seed(int(seed) * 104729 + 3)
    block = max(1, int(block))
    if block == 1:
        order = torch.randperm(len(train), generator=gen).to(train.device)
        n = max(1, min(int(subsets), len(train)))
        return [part.sort().values for part in train[order].tensor_split(n)]
    blocks = -(-len(train) // block)
    n = max(1, min(int(subsets), blocks))
    rank = torch.empty(blocks, dtype=torch.long)
    rank[torch.randperm(blocks, generator=gen)] = torch.arange(blocks)
    which = (rank * n // blocks)[torch.arange(len(train)) // block].to(train.device)
    return [train[which == s].sort().values for s in range(n)]


#: The modules whose code decides EM's sensitivities (besides the pool's, which its key covers).
_SENSITIVITY_CODE = ("recon/fitting/em.py", "recon/fitting/projector.py",
                     "recon/fitting/projector_kernels.py", "recon/model/render.py")


class OSEM:
    """OSEM updates of a :class:`~recon.model.fields.voxel.VoxelField` (``linear`` activation).

    Args:
        field: the field; its ``grid`` is updated in place.
        pool: the ray pool (on the field's device).
        train: (P,) pixels the updates use, on the pool's device.
        subsets: number of ordered subsets (≥ 1); each pixel is in exactly one.
        seed: seed of the random partition into subsets.
        photons_per_atom: Y.
        step_mm: stratum length along segments, mm.
        backend: the :class:`~recon.fitting.projector.Projector`'s backend.
        block: consecutive training pixels kept in one subset (:func:`partition`).
        power: the update's exponent ω: ``x ← g·x·(Aᵀ(w r)/Aᵀ(w K))^ω`` (1: EM; above 1 the
            over-relaxed EM of Lewitt & Muehllehner 1986, with the same fixed points and positivity).
        cache_dir: the pool cache's folder (the pool built with it): the subsets' sensitivities
            Aᵀ(w K), a third of the first pass's work, are read from there when the same pool,
            partition, w K and projector had them computed before (a key hashing all of these), and
            written there after the first pass otherwise; a file that fails its checks is
            computed anew and replaced. None: neither.
        log: called with a line of text (what the cache did).

    Both sums of the update are back-projections by the projector's adjoint; the prediction is
    its forward map. The object has ``state_dict``/``load_state_dict`` like an optimiser (the
    partition depends only on the seed, so a resumed fit makes the same updates; the kept
    denominators are recomputed).
    """

    def __init__(self, field, pool: RayPool, train: torch.Tensor, *, subsets: int, seed: int,
                 photons_per_atom: float, step_mm: float, backend: str = "auto", power: float = 1.0,
                 block: int = 1, cache_dir: str | os.PathLike | None = None, log=None) -> None:
        self.field, self.pool, self.power = field, pool, float(power)
        self.projector = Projector(pool, *field.box_mm, field.shape, photons_per_atom=photons_per_atom,
                                   step_mm=step_mm, backend=backend)
        # each subset's pixels in the order its projections run fastest (the same pixels as partition's)
        self.subsets = [self.projector.locality_order(p) for p in partition(train, subsets, seed, block)]
        self._sensitivity: dict[int, torch.Tensor] = {}
        self._visited: set[int] = set()  # the subsets updated since this object was made
        self.sensitivities_read = False  # whether the sensitivities came from the cache
        weights = view_weights(pool).to(pool.summed_electrons.device, field.grid.dtype)
        self.weights = weights[pool.view_of_pixel]
        self._log = log or (lambda text: None)
        self._cache = self._read_sensitivities(cache_dir)

    def _sensitivity_key(self) -> str:
        """What the subsets' sensitivities Aᵀ(w K) depend on, hashed.

        The pool's segments (its key and boost) and weights, the partition, w K of every subset's
        pixels, the projector, the code.
        """
        pool, op = self.pool, self.projector
        wk = [self.weights[p] * completed_counts(pool, p, torch.zeros(len(p), dtype=self.weights.dtype))[1]
              for p in self.subsets]
        description = {
            "pool": pool.key, "boost": pool.boost, "weights": array_digest(pool.rays.weights),
            "subsets": array_digest(*self.subsets), "wk": array_digest(*wk),
            "projector": [repr(op), op.box_min_mm, op.box_max_mm, op.emission, str(self.field.grid.dtype),
                          numba_threads() if op.backend == "numba" else 1],
            "code": tracing_code_version(_SENSITIVITY_CODE), "numba": numba.__version__,
            "torch": torch.__version__,
        }
        return hashlib.blake2b(json.dumps(description, sort_keys=True).encode(), digest_size=20).hexdigest()

    def _read_sensitivities(self, cache_dir) -> tuple[Path, str] | None:
        """Where the sensitivities are kept, and their key; read them if they are there and sound.

        None where there is no cache (no folder, a pool traced without the cache, or the grid on
        another device than the CPU).
        """
        if cache_dir is None or self.pool.key is None or self.field.grid.device.type != "cpu":
            return None
        where, key = sensitivity_path(cache_dir, self.pool.key), self._sensitivity_key()
        try:
            grids = load_sensitivities(where, key, count=len(self.subsets), shape=tuple(self.field.shape),
                                       dtype=self.field.grid.dtype)
        except PoolCacheError as err:
            if where.exists():
                self._log(f"EM sensitivities: {err}; computing them anew")
            return where, key
        mark_used(where)
        self._sensitivity = dict(enumerate(grids))
        self.sensitivities_read = True
        self._log(f"EM sensitivities: read from the cache {where}")
        return None  # nothing to write

    def _write_sensitivities(self) -> None:
        """Keep the sensitivities for the next shot through the instrument (once, after the first pass)."""
        if self._cache is None:
            return
        where, key = self._cache
        self._cache = None
        try:
            save_sensitivities(where, key, [self._sensitivity[s] for s in range(len(self.subsets))])
        except OSError as err:  # it only costs the next shot the first pass's time
            self._log(f"warning: EM sensitivities: cannot write {where} ({err.strerror or err}); going on")
            return
        for gone in prune_cache(where.parent, keep=[where, pool_path(where.parent, self.pool.key)]):
            self._log(f"pool cache: removed {gone.name}, the least recently used (RECON_POOL_CACHE_MAX_GB)")

    def _backproject(self, pixels: torch.Tensor, need_sensitivity: bool, fit_gain: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None, float, float, int]:
        """A^T (w r), A^T (w K) over ``pixels`` at the subset's best gain; also gain, deviance, segments."""
        pool, op = self.pool, self.projector
        lam = op.forward(self.values(), pixels).clamp_min(0.0)
        shifted, k, var = completed_counts(pool, pixels, lam)
        gain = best_gain(lam, shifted, k, var) if fit_gain else 1.0
        dev = float(data_loss(gain * lam, pool.summed_electrons[pixels], pool.n_frames[pixels].to(lam.dtype),
                              pool.read_noise_e, censored=pool.censored(pixels)))
        w = self.weights[pixels]
        back = op.adjoint(w * shifted / (gain * lam + var), pixels)
        sens = op.adjoint(w * k, pixels) if need_sensitivity else None
        return back, sens, gain, dev, op.segments(pixels)

    @torch.no_grad()
    def update(self, step: int) -> tuple[float, int]:
        """One OSEM update with subset ``step mod n``; returns (its deviance before, segments)."""
        s = step % len(self.subsets)
        back, sens, gain, dev, segments = self._backproject(self.subsets[s], s not in self._sensitivity,
                                                            fit_gain=step >= len(self.subsets))
        grid = self.field.grid[0, 0]
        if s not in self._sensitivity:
            self._sensitivity[s] = sens
        if s not in self._visited:
            self._visited.add(s)
            if len(self._visited) == len(self.subsets):  # voxels no pixel sees: no evidence, 0
                grid.masked_fill_(sum(self._sensitivity[k] for k in range(len(self.subsets))) <= 0, 0.0)
                self._write_sensitivities()
        sens = self._sensitivity[s]
        seen = sens > 0
        sens = sens.clamp_min(1e-30)
        if self.power == 1.0:
            new = gain * grid * back / sens
        else:
            new = gain * grid * (back / sens).pow(self.power)
        grid.copy_(torch.where(seen, new, gain * grid))
        return dev, segments

    def values(self) -> torch.Tensor:
        """(Z, Y, X) the density at the voxel centres: what the projector acts on."""
        return voxel_values(self.field)

    def state_dict(self) -> dict:
        """Nothing to keep beyond the field: the updates depend only on it and the step."""
        return {"kind": "osem", "subsets": len(self.subsets)}

    def load_state_dict(self, state: dict) -> None:
        """Check that a checkpoint was written by OSEM with the same number of subsets."""
        if state.get("kind") != "osem" or int(state.get("subsets", -1)) != len(self.subsets):
            raise ValueError(f"the checkpoint's optimiser is {state.get('kind', 'adam')!r} with "
                             f"{state.get('subsets')} subsets, not osem with {len(self.subsets)}")
