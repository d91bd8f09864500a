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

**The start** (:mod:`recon.fitting.start`): the data's own 3D Gaussian (:func:`fit_gaussian`)
plus a small tapered floor, or another shot's density moved onto that Gaussian (a warm start).

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
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numba
import torch

from recon.fitting.gaussian_kernel import P6_INDEX, GaussianPixelSums, SegmentGeometry, gaussian_pixel_sums
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

__all__ = ["FISHER_STRIDE", "OSEM", "Gaussian", "best_gain", "completed_counts", "data_gain", "fit_gaussian",
           "fit_gaussian_and_gains", "measured_over_predicted", "partition", "shifted_counts", "view_weights"]

# The Gaussian's Fisher information is summed over every this-many-th of its sampled pixels (each
# weighing this many times more): an unbiased estimate in a quarter of the time.
FISHER_STRIDE = 4


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


@dataclass(frozen=True)
class Gaussian:
    """A 3D Gaussian cloud: ``atoms`` in total, centre ``mean_mm`` (x, y, z), covariance ``cov_mm2``."""

    mean_mm: torch.Tensor  # (3,)
    cov_mm2: torch.Tensor  # (3, 3)
    atoms: float
    #: The shot-noise limit of (atoms, centre x, y, z in mm, σ x, y, z in mm) for this Gaussian:
    #: the standard deviations of the Cramér–Rao bound (:func:`fit_gaussian_and_gains` with
    #: ``fisher=True``), or None.
    shot_noise_sd: tuple[float, ...] | None = None

    def __call__(self, points_mm: torch.Tensor) -> torch.Tensor:
        """(..., 3) points, mm -> (...) density, atoms/mm³."""
        d = points_mm.double() - self.mean_mm.to(points_mm.device)
        inv = torch.linalg.inv(self.cov_mm2).to(points_mm.device)
        norm = self.atoms / math.sqrt((2 * math.pi) ** 3 * float(torch.linalg.det(self.cov_mm2)))
        return (norm * torch.exp(-0.5 * ((d @ inv) * d).sum(-1))).to(points_mm.dtype)

    def on_grid(self, shape_zyx: tuple[int, int, int], origin_mm, voxel_size_mm) -> torch.Tensor:
        """(Z, Y, X) float64 density at the centres of a grid (those of :func:`recon.io.volume.grid_points`).

        The same values as calling the Gaussian on the grid's points, with its quadratic form
        summed from three planes of pair terms (xy, xz, yz) by broadcasting: no (Z, Y, X, 3) array.
        """
        x, y, z = (torch.arange(n, dtype=torch.float64) * float(s) + float(o) - float(m) for n, s, o, m in
                   zip(shape_zyx[::-1], voxel_size_mm, origin_mm, self.mean_mm.tolist(), strict=True))
        inv = torch.linalg.inv(self.cov_mm2.double().cpu())
        norm = self.atoms / math.sqrt((2 * math.pi) ** 3 * float(torch.linalg.det(self.cov_mm2)))
        xy = inv[0, 0] * x * x + (2 * inv[0, 1]) * y[:, None] * x + inv[1, 1] * (y * y)[:, None]  # (Y, X)
        xz = (2 * inv[0, 2]) * z[:, None] * x + inv[2, 2] * (z * z)[:, None]  # (Z, X)
        yz = (2 * inv[1, 2]) * z[:, None] * y  # (Z, Y)
        return norm * torch.exp(-0.5 * (xy[None] + xz[:, None, :] + yz[:, :, None]))


SD_RANGE = (1e-4, 1e2)  # the start Gaussian's σ along an axis, in units of the box's half-size


def _gaussian_line_integrals(mean, chol, atoms, origins, directions, t_near, t_far):
    """``∫ atoms · N(o + t d; mean, chol cholᵀ) dt`` over each segment ``[t_near, t_far]``, exactly.

    With ``P = Σ⁻¹``, ``a = dᵀPd``, ``b = dᵀP(o − μ)``, ``c = (o − μ)ᵀP(o − μ)`` the exponent is
    ``−a (t + b/a)²/2 − (c − b²/a)/2``: a 1D Gaussian in t, whose integral is a difference of erfs.
    """
    inv_chol = torch.linalg.inv(chol)
    u = directions @ inv_chol.T  # L⁻¹ d
    v = (origins - mean) @ inv_chol.T  # L⁻¹ (o − μ)
    a = (u * u).sum(-1)
    b = (u * v).sum(-1)
    c = (v * v).sum(-1)
    s = torch.sqrt(a / 2)
    norm = atoms / ((2 * math.pi) ** 1.5 * torch.diagonal(chol).prod())
    span = torch.erf(s * (t_far + b / a)) - torch.erf(s * (t_near + b / a))
    return norm * torch.exp(-0.5 * (c - b * b / a)) * math.sqrt(math.pi) / (2 * s) * span


def fit_gaussian(pool: RayPool, pixels: torch.Tensor, box_min_mm, box_max_mm, *, atoms: float,
                 photons_per_atom: float, max_pixels: int = 65536, iterations: int = 40,
                 seed: int = 0, fisher: bool = False, backend: str = "auto") -> Gaussian:
    """The 3D Gaussian of greatest likelihood for the data of ``pixels`` (the EM start).

    :func:`fit_gaussian_and_gains` without gains (its docstring has the details).
    """
    return fit_gaussian_and_gains(pool, pixels, box_min_mm, box_max_mm, atoms=atoms,
                                  photons_per_atom=photons_per_atom, max_pixels=max_pixels,
                                  iterations=iterations, seed=seed, fisher=fisher, backend=backend)[0]


def fit_gaussian_and_gains(pool: RayPool, pixels: torch.Tensor, box_min_mm, box_max_mm, *, atoms: float,
                           photons_per_atom: float, groups: torch.Tensor | None = None, reference: int = 0,
                           max_pixels: int = 65536, iterations: int = 40, seed: int = 0, fisher: bool = False,
                           backend: str = "auto") -> tuple[Gaussian, torch.Tensor | None]:
    """The 3D Gaussian of greatest likelihood for the data of ``pixels``, and one gain per group.

    With ``groups`` (one index per pool pixel, e.g. its camera), the prediction of a pixel of
    group g is ``gains[g]`` times the Gaussian's; ``gains[reference]`` is 1 (the gains and the
    total are otherwise degenerate) and the others are fitted with the Gaussian. Returns
    (Gaussian, (G,) float64 gains), or (Gaussian, None) without groups.

    Ten parameters (centre, Cholesky factor of the covariance, total) fitted by L-BFGS to the
    shifted-Poisson likelihood of :func:`recon.model.loss.data_loss` (censored frames included),
    its line integrals along the pooled segments computed exactly
    (:func:`_gaussian_line_integrals`). A Gaussian's shape along the axis no view looks across (the
    dome's z) is fixed by the tilted views' projections, whereas the voxel EM never corrects the
    start within the missing cone (module docstring).

    At most ``max_pixels`` pixels are used, drawn with probabilities in proportion to their
    signal plus the read-noise variance (every pixel where that would exceed 1), each weighted
    by the inverse of its probability so that the sum estimates the likelihood of all of them.

    With ``fisher``, also the shot-noise limit of the Gaussian's atoms, centre and widths
    (``Gaussian.shot_noise_sd``): the Cramér–Rao bound, the inverse of the Fisher information of
    the photon counts at the fitted parameters (summed over the pixels as the weights estimate
    it; camera gains, when fitted, are nuisance parameters), mapped to those quantities by the
    delta method. It is what photon counting and read noise allow for a Gaussian cloud seen by
    these pixels; None where the information is singular.

    Args:
        pool: the ray pool.
        pixels: (P,) the pixels to fit (the training pixels).
        box_min_mm: (3,) the box's lower corner, mm; L-BFGS starts at the box's centre, with σ a
            sixth of its extent along each axis.
        box_max_mm: (3,) its upper corner, mm.
        atoms: the starting total.
        photons_per_atom: Y.
        groups: (n_pixels,) long, each pool pixel's group (e.g. its camera); None: no gains.
        reference: the group whose gain stays 1.
        max_pixels: the expected number of pixels used.
        iterations: L-BFGS iterations.
        seed: seed of the pixel draw.
        fisher: also compute the shot-noise limit (``Gaussian.shot_noise_sd``).
        backend: how the line integrals are summed: ``numba`` (the compiled kernel of
            :mod:`recon.fitting.gaussian_kernel`, value and derivatives in one pass; CPU only),
            ``torch`` (:func:`_gaussian_line_integrals` with autograd, the specification the kernel
            is tested against; any device), or ``auto`` (numba for a pool on the CPU).
    """
    if backend not in ("auto", "numba", "torch"):
        raise ValueError(f"fit_gaussian: backend must be auto, numba or torch, not {backend!r}")
    lo = torch.as_tensor(box_min_mm, dtype=torch.float64)
    hi = torch.as_tensor(box_max_mm, dtype=torch.float64)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    _, frames, var = shifted_counts(pool, pixels, torch.float64)
    rate = (pool.summed_electrons[pixels].double() / frames.clamp_min(1)).clamp_min(0) + var
    prob = (max_pixels * rate / rate.sum()).clamp(max=1.0).cpu()
    gen = torch.Generator().manual_seed(seed)
    keep = (torch.rand(len(prob), generator=gen, dtype=torch.float64) < prob).nonzero(as_tuple=True)[0]
    chosen = pixels[keep.to(pixels.device)]
    weight = (1 / prob[keep]).to(pool.summed_electrons.device)
    shifted, k, _ = shifted_counts(pool, chosen, torch.float64)
    censored = pool.censored(chosen)  # frames clipped at the black level: log P(N ≤ bound)
    c_frames = None if censored is None else censored.used()
    rays = pool.gather(chosen)
    emission = rays.weights.double() * photons_per_atom / (4 * math.pi)
    compiled = backend == "numba" or (backend == "auto" and rays.pixel.device.type == "cpu")
    if compiled:
        geometry = SegmentGeometry(rays.origins, rays.directions, rays.t_near, rays.t_far, emission,
                                   rays.pixel, len(chosen))
    else:
        segments = tuple(t.double() for t in (rays.origins, rays.directions, rays.t_near, rays.t_far))

    shift = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # centre + half · tanh(shift)
    log_sd = torch.log(half / 3).clone().requires_grad_(True)
    off = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # below-diagonal of the Cholesky factor
    log_atoms = torch.zeros((), dtype=torch.float64, requires_grad=True)
    n_groups = int(groups.max()) + 1 if groups is not None and len(groups) else 0
    log_gain = torch.zeros(n_groups, dtype=torch.float64, requires_grad=True)
    fixed = torch.zeros(n_groups, dtype=torch.bool)
    if n_groups:
        fixed[reference] = True
        pixel_group = groups.to(rays.pixel.device)[chosen]

    def unpack():
        return _gaussian_of(centre, half, atoms, shift, log_sd, off, log_atoms)

    params = [shift, log_sd, off, log_atoms] + ([log_gain] if n_groups else [])
    optim = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def gains(log_gain) -> torch.Tensor:  # the reference group's stays 1
        return torch.exp(torch.where(fixed, torch.zeros_like(log_gain), log_gain))

    def predicted(shift, log_sd, off, log_atoms, log_gain, stride: int = 1):
        """The chosen pixels' expected photoelectrons per frame from the Gaussian (σ² apart).

        Of every ``stride``-th chosen pixel: (P / stride,).
        """
        gaussian = _gaussian_of(centre, half, atoms, shift, log_sd, off, log_atoms)
        if compiled:  # every pixel's sum in one pass (the stride only thins what is returned)
            mean, chol, total = gaussian
            inv_chol = torch.linalg.inv(chol)
            precision = inv_chol.T @ inv_chol
            sums, _ = GaussianPixelSums.apply(precision[P6_INDEX], mean, geometry)
            light = total / ((2 * math.pi) ** 1.5 * torch.diagonal(chol).prod()) * sums
        else:
            light = torch.zeros(len(chosen), dtype=torch.float64, device=rays.pixel.device).index_add(
                0, rays.pixel, emission * _gaussian_line_integrals(*gaussian, *segments))
        if n_groups:
            light = light * gains(log_gain)[pixel_group]
        return light[::stride]

    def closure():
        optim.zero_grad()
        lam = predicted(shift, log_sd, off, log_atoms, log_gain) + var
        terms = k * lam - shifted * torch.log(lam)
        if censored is not None:
            terms = terms + 0.5 * c_frames * censored.deviance(lam - var)
        nll = (weight * terms).sum() / weight.sum()
        nll.backward()
        return nll

    def light_and_slopes(theta):
        """λ (σ² apart) of every FISHER_STRIDE-th chosen pixel and ∂λ/∂θ (P, len θ) at θ (:func:`_theta`)."""
        if not compiled:  # forward-mode differentiation of the torch prediction
            def light(t):
                return predicted(*_split_theta(t), stride=FISHER_STRIDE)

            unit = torch.eye(len(theta), dtype=theta.dtype)
            with torch.no_grad():
                lam = light(theta)
            columns = [torch.func.jvp(light, (theta,), (unit[j],))[1] for j in range(len(theta))]
            return lam, torch.stack(columns, 1)

        def parts(t):  # P's six entries, the centre, and the log of each group's scale of the sums
            shift, log_sd, off, log_atoms, log_gain = _split_theta(t)
            mean, chol, total = _gaussian_of(centre, half, atoms, shift, log_sd, off, log_atoms)
            inv_chol = torch.linalg.inv(chol)
            log_scale = torch.log(total / ((2 * math.pi) ** 1.5 * torch.diagonal(chol).prod()))
            if n_groups:
                log_scale = log_scale + torch.where(fixed, torch.zeros_like(log_gain), log_gain)
            return torch.cat([(inv_chol.T @ inv_chol)[P6_INDEX], mean, log_scale.reshape(-1)])

        z, dz = parts(theta), torch.autograd.functional.jacobian(parts, theta)
        sums, jac = (torch.from_numpy(a[::FISHER_STRIDE]) for a in gaussian_pixel_sums(
            z[:6].numpy(), z[6:9].numpy(), geometry))
        group = pixel_group[::FISHER_STRIDE] if n_groups else torch.zeros(len(sums), dtype=torch.long)
        scale = torch.exp(z[9:])[group]
        lam = scale * sums  # λ = scale · S(P, μ): the kernel's derivatives chained to θ
        return lam, scale[:, None] * (jac @ dz[:9]) + lam[:, None] * dz[9:][group]

    optim.step(closure)
    frames_read = k if censored is None else k + c_frames
    params = (shift, log_sd, off, log_atoms, log_gain)  # the information from every FISHER_STRIDE-th pixel
    frames_weight = FISHER_STRIDE * (weight * frames_read)[::FISHER_STRIDE]
    shot_noise = (_shot_noise_sd(light_and_slopes, params, fixed, frames_weight, var, centre, half, atoms)
                  if fisher else None)
    with torch.no_grad():
        mean, chol, total = unpack()
        fitted = gains(log_gain).detach() if n_groups else None
    return Gaussian(mean.detach(), (chol @ chol.T).detach(), float(total), shot_noise), fitted


def _gaussian_of(centre, half, atoms, shift, log_sd, off, log_atoms):
    """(mean, Cholesky factor, atoms) of :func:`fit_gaussian_and_gains`' parameters.

    The centre ``centre + half · tanh(shift)`` (inside the box), the factor's diagonal
    ``exp(log_sd)`` and its below-diagonal ``off`` scaled by the column's, the total
    ``atoms · exp(log_atoms)``. The diagonal is held within :data:`SD_RANGE` × the box's half-size:
    along an axis the views do not constrain, a line search can step ``log_sd`` far enough for
    ``exp`` to give 0 and the factor to be singular.
    """
    rows, cols = torch.tril_indices(3, 3, -1)
    sd = torch.exp(torch.clamp(log_sd, math.log(SD_RANGE[0]) + torch.log(half),
                               math.log(SD_RANGE[1]) + torch.log(half)))
    chol = torch.diag(sd).index_put((rows, cols), off * sd[cols])
    return centre + half * torch.tanh(shift), chol, atoms * torch.exp(log_atoms)


def _split_theta(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(shift, log_sd, off, log_atoms, log_gain) of :func:`fit_gaussian_and_gains`' packed parameters."""
    a, b, c, d, e = theta.split([3, 3, 3, 1, len(theta) - 10])
    return a, b, c, d.reshape(()), e


def _shot_noise_sd(light_and_slopes, params, fixed, frames, var: float, centre, half, atoms
                   ) -> tuple[float, ...] | None:
    """Standard deviations of (atoms, centre x, y, z, σ x, y, z) at the Cramér–Rao bound.

    ``cov = J I⁻¹ Jᵀ``: I the Fisher information of the free parameters (the reference camera's
    gain is not one), ``Σ_i frames_i ∂λ_i ∂λ_iᵀ / (λ_i + σ²)`` for counts of mean and variance
    ``frames_i (λ_i + σ²)`` (the shifted-Poisson model; a frame clipped at the black level counts as
    read), λ and ∂λ/∂θ from ``light_and_slopes(θ)`` (θ the parameters packed as
    :func:`_split_theta` reads them); J the Jacobian of those quantities.
    """
    theta = torch.cat([t.detach().reshape(-1) for t in params])
    free = torch.cat([torch.ones(10, dtype=torch.bool), ~fixed]).nonzero(as_tuple=True)[0].tolist()

    def quantities(t):
        mean, chol, total = _gaussian_of(centre, half, atoms, *_split_theta(t)[:4])
        return torch.cat([total.reshape(1), mean, torch.diagonal(chol @ chol.T).sqrt()])

    lam, slopes = light_and_slopes(theta)
    slopes = slopes[:, free]  # (P, F) ∂λ/∂θ
    information = slopes.T @ (slopes * (frames / (lam + var))[:, None])
    jacobian = torch.autograd.functional.jacobian(quantities, theta)[:, free]
    try:
        factor = torch.linalg.cholesky(information)
    except RuntimeError:  # not positive definite: no bound to give
        return None
    solved = torch.cholesky_solve(jacobian.T, factor)  # I⁻¹ Jᵀ
    variance = (jacobian * solved.T).sum(1)
    if not bool(torch.isfinite(variance).all()) or bool((variance < 0).any()):
        return None
    return tuple(float(v) for v in variance.sqrt())


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
