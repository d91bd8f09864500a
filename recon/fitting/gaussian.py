"""The data's own 3D Gaussian: EM's start and the shot-noise limit of a shot's figures.

:func:`fit_gaussian_and_gains` fits the 3D Gaussian of greatest likelihood (ten parameters, and
one gain per camera where asked) to the photon counts of a set of pooled pixels: its line integrals
along the pooled segments are exact (a difference of erfs), summed per pixel with their
derivatives by the compiled kernel of :mod:`recon.fitting.gaussian_kernel` (torch's closed form,
:func:`_gaussian_line_integrals`, is the specification and the CUDA path). At its optimum the
Fisher information of the counts gives the Cramér–Rao bound of the atoms, centre and widths
(``Gaussian.shot_noise_sd``). EM starts from this Gaussian (:mod:`recon.fitting.start`), and
:mod:`recon.fitting.sensitivity` fits it with one gain per camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recon.fitting.em import shifted_counts
from recon.fitting.gaussian_kernel import P6_INDEX, GaussianPixelSums, SegmentGeometry, gaussian_pixel_sums
from recon.fitting.raypool import RayPool

__all__ = ["FISHER_STRIDE", "SD_RANGE", "Gaussian", "fit_gaussian", "fit_gaussian_and_gains"]

# The Gaussian's Fisher information is summed over every this-many-th of its sampled pixels (each
# weighing this many times more): an unbiased estimate in a quarter of the time.
FISHER_STRIDE = 4


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
        return (self._peak() * torch.exp(-0.5 * ((d @ inv) * d).sum(-1))).to(points_mm.dtype)

    def on_grid(self, shape_zyx: tuple[int, int, int], origin_mm, voxel_size_mm) -> torch.Tensor:
        """(Z, Y, X) float64 density at the centres of a grid (those of :func:`recon.io.volume.grid_points`).

        The same values as calling the Gaussian on the grid's points, with its quadratic form
        summed from three planes of pair terms (xy, xz, yz) by broadcasting: no (Z, Y, X, 3) array.
        """
        x, y, z = (torch.arange(n, dtype=torch.float64) * float(s) + float(o) - float(m) for n, s, o, m in
                   zip(shape_zyx[::-1], voxel_size_mm, origin_mm, self.mean_mm.tolist(), strict=True))
        inv = torch.linalg.inv(self.cov_mm2.double().cpu())
        xy = inv[0, 0] * x * x + (2 * inv[0, 1]) * y[:, None] * x + inv[1, 1] * (y * y)[:, None]  # (Y, X)
        xz = (2 * inv[0, 2]) * z[:, None] * x + inv[2, 2] * (z * z)[:, None]  # (Z, X)
        yz = (2 * inv[1, 2]) * z[:, None] * y  # (Z, Y)
        return self._peak() * torch.exp(-0.5 * (xy[None] + xz[:, None, :] + yz[:, :, None]))

    def _peak(self) -> float:
        """The density at the centre, atoms/mm³."""
        return self.atoms / math.sqrt((2 * math.pi) ** 3 * float(torch.linalg.det(self.cov_mm2)))


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
    on_cpu = rays.pixel.device.type == "cpu"
    if backend == "numba" and not on_cpu:
        raise ValueError(f"fit_gaussian: the numba backend runs on the CPU, and this pool is on "
                         f"{rays.pixel.device}; pass backend='torch' (or 'auto')")
    compiled = backend == "numba" or (backend == "auto" and on_cpu)
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
        if compiled:  # every pixel in one pass (the Fisher slopes come from light_and_slopes)
            p6, norm = _kernel_parameters(*gaussian[1:])
            light = norm * GaussianPixelSums.apply(p6, gaussian[0], geometry)[0]
        else:  # only the segments of every stride-th pixel
            some = slice(None) if stride == 1 else (rays.pixel % stride == 0)
            light = torch.zeros(-(-len(chosen) // stride), dtype=torch.float64, device=rays.pixel.device)
            part = emission[some] * _gaussian_line_integrals(*gaussian, *(t[some] for t in segments))
            light = light.index_add(0, torch.div(rays.pixel[some], stride, rounding_mode="floor"), part)
        if n_groups:
            light = light * gains(log_gain)[pixel_group[::stride]]
        return light

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
        """λ (σ² apart) of every FISHER_STRIDE-th chosen pixel and ∂λ/∂θ (P, len θ) at θ.

        θ packed as :func:`_split_theta` reads it.
        """
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
            p6, norm = _kernel_parameters(chol, total)
            log_scale = torch.log(norm)
            if n_groups:
                log_scale = log_scale + torch.where(fixed, torch.zeros_like(log_gain), log_gain)
            return torch.cat([p6, mean, log_scale.reshape(-1)])

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


def _kernel_parameters(chol: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P = Σ⁻¹'s six entries in the kernel's order, the normalisation ``total / ((2π)^1.5 det L)``)."""
    inv_chol = torch.linalg.inv(chol)
    return (inv_chol.T @ inv_chol)[P6_INDEX], total / ((2 * math.pi) ** 1.5 * torch.diagonal(chol).prod())


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
