r"""Interference fringes of a reconstructed cloud: a Gaussian envelope × (1 + C cos(K·(x − μ) + φ)).

The model of the density, fitted by least squares to the voxels of a :class:`~recon.io.volume.Volume`:

.. math::

    ρ(x) = A\, e^{-\frac12 (x-μ)^T Σ^{-1} (x-μ)} \left(1 + C \cos(K·(x-μ) + φ)\right) + b

with A the envelope's peak, μ its centre, Σ its covariance (through its Cholesky factor), C the
contrast, K the wave vector of the density fringes (period ``2π/|K|``: the distance between
adjacent maxima), φ the phase at the envelope's centre, and b a uniform floor. K and −K with
−φ are the same fringes: K is reported with its largest component positive. The phase at a
fixed point p (``phase_at_origin_rad``: p = 0, the instrument's origin) is ``φ + K·(p − μ)``,
which is what an interferometer compares from shot to shot when the cloud moves.

The start: μ and Σ from the density's moments, K at the largest peak of its power spectrum beyond
the envelope's own spectrum (a parabola through the peak's neighbours along each axis refines
the bin), and A, C, φ and b by linear least squares given those (the model is linear in A,
A·C·cos φ, A·C·sin φ and b). Then ``scipy.optimize.least_squares``
(trust-region reflective, C kept in [0, 1]) with the exact Jacobian of the model (torch forward
mode).

Uncertainties (``*_sd``): the least-squares covariance ``s² (JᵀJ)⁻¹`` at the optimum, with s² the
residuals' variance, carried to the reported quantities by the delta method. It treats the
voxels' residuals as independent: right for white noise on the voxels (tested), too small where
the reconstruction's errors are correlated across voxels, as a fit's are. It is labelled
``formal`` for that reason; error bars validated against the truth over many shots are the
physics issue's bench.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from recon.errors import ShapeError
from recon.io.volume import Volume

__all__ = ["FIGURES", "FringeFit", "fit_fringes", "fringe_errors", "fringe_model", "fringe_quantities",
           "phantom_fringes", "split_figures"]

#: The soft-L1 loss's scale, as a fraction of the largest density: clumps and spikes that the
#: smooth model does not hold count less. Chosen on data/run042's own default fit (fit seed 0, the
#: shipped noise), where it brought the period, direction and phase closer to the truth than plain
#: least squares; bench/fringes.py compares both on other seeds and another phantom.
ROBUST_SCALE = 0.05

#: Detected fringes: contrast at least this many (formal) standard deviations above 0, and at
#: least MIN_CONTRAST, with the envelope's centre inside the volume and a period between two
#: voxels and the volume's extent.
DETECTION_SIGMAS = 5.0
MIN_CONTRAST = 0.05

# The parameter vector: log A, μ (3), log of Σ's Cholesky diagonal (3), its below-diagonal
# (scaled by the column's diagonal, 3), C, K (3), φ, b.
_N_PARAMS = 16


@dataclass(frozen=True)
class FringeFit:
    """The fitted fringe model and its formal standard deviations (module docstring).

    Lengths in mm, wave numbers in rad/mm, phases in rad (wrapped to (−π, π]).
    """

    centre_mm: tuple[float, float, float]
    width_mm: tuple[float, float, float]  # the envelope's σ along x, y, z (√ of Σ's diagonal)
    contrast: float
    period_mm: float
    direction: tuple[float, float, float]  # K / |K|, its largest component positive
    wavevector_rad_per_mm: tuple[float, float, float]
    phase_rad: float  # at the envelope's centre
    phase_at_origin_rad: float  # at the point (0, 0, 0) mm
    peak: float  # A, the envelope's peak density
    floor: float  # b
    sd: dict  # the formal sd of each of the above (tuples for vectors)
    residual_rms: float  # of the voxels fitted, in the density's unit
    voxels: int  # how many voxels were fitted
    stride: int  # every stride-th voxel along each axis was fitted
    detected: bool  # fringes found (DETECTION_SIGMAS, MIN_CONTRAST)
    why_not: str  # why not, where not detected ("" where detected)
    params: tuple[float, ...] = ()  # the fitted parameter vector of :func:`fringe_model`

    def to_json(self) -> dict:
        """A JSON-ready dict (``recon analyze``'s fringes.json); a non-finite number becomes null."""
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return None if isinstance(v, float) and not math.isfinite(v) else v

        names = ("centre_mm", "width_mm", "contrast", "period_mm", "direction", "wavevector_rad_per_mm",
                 "phase_rad", "phase_at_origin_rad", "peak", "floor", "residual_rms", "voxels", "stride",
                 "detected", "why_not")
        out = {k: plain(getattr(self, k)) for k in names}
        out["sd"] = {k: plain(v) for k, v in self.sd.items()}
        out["sd_kind"] = "formal (least squares, voxel residuals taken as independent)"
        return out


def _unpack(p: torch.Tensor):
    """(A, μ, L, C, K, φ, b) of the parameter vector."""
    amp = torch.exp(p[0])
    mu = p[1:4]
    diag = torch.exp(p[4:7])
    rows, cols = torch.tril_indices(3, 3, -1)
    chol = torch.diag(diag).index_put((rows, cols), p[7:10] * diag[cols])
    return amp, mu, chol, p[10], p[11:14], p[14], p[15]


def fringe_model(p: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The model density at ``points`` (N, 3) mm for the parameter vector ``p`` (module docstring)."""
    amp, mu, chol, contrast, k, phase, floor = _unpack(p)
    d = points - mu
    white = torch.linalg.solve_triangular(chol, d.T, upper=False)  # L⁻¹ (x − μ)
    envelope = amp * torch.exp(-0.5 * (white * white).sum(0))
    return envelope * (1 + contrast * torch.cos(d @ k + phase)) + floor


def _start(rho: np.ndarray, volume: Volume, points: np.ndarray) -> np.ndarray:
    """The start (module docstring) as a parameter vector."""
    weights = np.clip(rho, 0, None).ravel()
    total = weights.sum()
    mu = (points * weights[:, None]).sum(0) / total
    d = points - mu
    cov = (d * weights[:, None]).T @ d / total
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(3))
    diag = np.diag(chol)
    spectrum = np.fft.fftn(np.clip(rho, 0, None))  # axes (z, y, x)
    freqs = [np.fft.fftfreq(n, s) for n, s in zip(rho.shape, volume.voxel_size_mm[::-1], strict=True)]
    fz, fy, fx = np.meshgrid(*freqs, indexing="ij")
    radius = np.sqrt(fx ** 2 + fy ** 2 + fz ** 2)
    power = np.abs(spectrum) ** 2
    power[radius < 3.0 / (2 * math.pi * float(diag.min()))] = 0  # the envelope's own spectrum
    peak = np.unravel_index(int(np.argmax(power)), power.shape)
    f = []
    for axis, (n, i) in enumerate(zip(rho.shape, peak, strict=True)):  # a parabola through log power
        step = freqs[axis][1] - freqs[axis][0] if n > 1 else 0.0
        lo, hi = list(peak), list(peak)
        lo[axis], hi[axis] = (i - 1) % n, (i + 1) % n
        a, b, c = (math.log(max(power[tuple(j)], 1e-300)) for j in (lo, peak, hi))
        shift = 0.5 * (a - c) / (a - 2 * b + c) if n > 2 and (a - 2 * b + c) < 0 else 0.0
        f.append(freqs[axis][i] + float(np.clip(shift, -0.5, 0.5)) * step)
    k = 2 * math.pi * np.array([f[2], f[1], f[0]])  # (x, y, z)
    # Given K and the moments' envelope e(x), the model is linear in (A, A·C cos φ, A·C sin φ, b):
    # ρ ≈ A e + A C cos φ · e cos(K·d) − A C sin φ · e sin(K·d) + b, solved by least squares.
    white = np.linalg.solve(chol, d.T)
    envelope = np.exp(-0.5 * (white * white).sum(0))
    kd = d @ k
    basis = np.stack([envelope, envelope * np.cos(kd), -envelope * np.sin(kd), np.ones_like(kd)], axis=1)
    (amp, c_cos, c_sin, floor), *_ = np.linalg.lstsq(basis, rho.ravel(), rcond=None)
    amp = max(float(amp), 1e-300)
    contrast = float(np.clip(math.hypot(c_cos, c_sin) / amp, 0.05, 0.95))
    phase = math.atan2(c_sin, c_cos)
    off = [chol[1, 0] / diag[0], chol[2, 0] / diag[0], chol[2, 1] / diag[1]]
    return np.array([math.log(amp), *mu, *np.log(diag), *off, contrast, *k, phase, float(floor)])


def _wrap(phase: float) -> float:
    """``phase`` in (−π, π]."""
    wrapped = math.remainder(phase, 2 * math.pi)
    return float(wrapped + 2 * math.pi if wrapped <= -math.pi else wrapped)


#: The figures a fringe fit reports, in :func:`fringe_quantities`' order, and their lengths.
FIGURES = (("centre_mm", 3), ("width_mm", 3), ("contrast", 1), ("period_mm", 1), ("direction", 3),
           ("wavevector_rad_per_mm", 3), ("phase_rad", 1), ("phase_at_origin_rad", 1), ("peak", 1),
           ("floor", 1))


def split_figures(values) -> dict:
    """``{figure: value}`` of a vector in :data:`FIGURES`' order (tuples of floats for vectors)."""
    out, start = {}, 0
    for name, n in FIGURES:
        part = [float(v) for v in values[start:start + n]]
        out[name] = tuple(part) if n > 1 else part[0]
        start += n
    return out


def fringe_quantities(p: torch.Tensor) -> torch.Tensor:
    """The reported figures of a parameter vector, in one vector (:data:`FIGURES`' order)."""
    amp, mu, chol, contrast, k, phase, floor = _unpack(p)
    cov = chol @ chol.T
    norm = torch.linalg.vector_norm(k)
    return torch.cat([mu, torch.sqrt(torch.diagonal(cov)), contrast[None], (2 * math.pi / norm)[None],
                      k / norm, k, phase[None], (phase - k @ mu)[None], amp[None], floor[None]])


def fit_fringes(volume: Volume, *, threshold: float = 1e-2, max_voxels: int = 250_000,
                robust_scale: float | None = ROBUST_SCALE) -> FringeFit:
    """Fit the fringe model to ``volume`` (module docstring).

    Args:
        volume: the density (a fit's density.tif, or any Volume).
        threshold: only voxels where the start's envelope exceeds this fraction of its peak are
            fitted (the rest hold the floor and noise).
        max_voxels: above this many, every s-th voxel along each axis is fitted (the smallest s
            that brings them below it): the model at those voxels' centres is exact, so this costs
            precision, not accuracy, and little of it where the reconstruction's own resolution
            spans several voxels.
        robust_scale: the residual (as a fraction of the largest density) beyond which a voxel
            counts less (the soft-L1 loss; None: plain least squares).

    Raises:
        ShapeError: a volume with no positive density, too few voxels for the model, or one the
            model cannot be fitted to (moments without an envelope, a model that became non-finite).
    """
    from scipy.optimize import least_squares

    rho = np.asarray(volume.data, dtype=np.float64)
    if not np.isfinite(rho).all() or not (np.clip(rho, 0, None).sum() > 0):
        raise ShapeError("fit_fringes: the volume holds no positive, finite density")
    points = volume.points(torch.float64).reshape(-1, 3).numpy()
    try:
        p0 = _start(rho, volume, points)
    except np.linalg.LinAlgError as err:
        raise ShapeError(f"fit_fringes: the density's moments give no envelope ({err})") from None
    if not np.isfinite(p0).all():
        raise ShapeError("fit_fringes: the density's moments give no envelope (not finite)")
    start = torch.from_numpy(p0)
    with torch.no_grad():
        envelope = fringe_model(torch.cat([start[:10], torch.zeros(6, dtype=start.dtype)]),
                                torch.from_numpy(points))
    keep = (envelope >= threshold * envelope.max()).numpy()
    stride = max(1, math.ceil((keep.sum() / max_voxels) ** (1 / 3)))
    if stride > 1:
        lattice = np.zeros(volume.shape, dtype=bool)
        lattice[::stride, ::stride, ::stride] = True
        keep &= lattice.ravel()
    if keep.sum() <= 4 * _N_PARAMS:
        raise ShapeError(f"fit_fringes: only {int(keep.sum())} voxels hold the cloud; the model has "
                         f"{_N_PARAMS} parameters")
    x = torch.from_numpy(points[keep])
    y = torch.from_numpy(rho.ravel()[keep])
    scale = float(y.abs().max())

    def residual(p: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return ((fringe_model(torch.from_numpy(p), x) - y) / scale).numpy()

    def jacobian(p: np.ndarray) -> np.ndarray:  # in runs of voxels: forward mode holds 16 tangents
        q = torch.from_numpy(p)
        return torch.cat([torch.func.jacfwd(lambda v, part=part: fringe_model(v, part))(q)
                          for part in x.split(1 << 17)]).div_(scale).numpy()

    lower = np.full(_N_PARAMS, -np.inf)
    upper = np.full(_N_PARAMS, np.inf)
    lower[10], upper[10] = 0.0, 1.0
    robust = {"loss": "soft_l1", "f_scale": robust_scale} if robust_scale else {}
    try:
        result = least_squares(residual, p0, jac=jacobian, bounds=(lower, upper), method="trf",
                               x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=200, **robust)
    except (ValueError, np.linalg.LinAlgError) as err:  # a model that became non-finite on the way
        raise ShapeError(f"fit_fringes: the fringe model cannot be fitted to this density ({err})") from None
    p = torch.from_numpy(result.x)
    # The covariance of iteratively reweighted least squares at the solution: each voxel weighted
    # by the loss's ρ'(z) = 1/√(1 + z), z = (r / f)² (1 for plain least squares).
    weight = 1 / np.sqrt(1 + (result.fun / robust_scale) ** 2) if robust_scale else np.ones_like(result.fun)
    jac = jacobian(result.x) * scale * np.sqrt(weight)[:, None]
    weighted = result.fun * scale * np.sqrt(weight)
    dof = max(len(y) - _N_PARAMS, 1)
    s2 = float(weighted @ weighted) / dof
    cov_p = s2 * np.linalg.pinv(jac.T @ jac)
    q = fringe_quantities(p).numpy()
    dq = torch.func.jacfwd(fringe_quantities)(p).numpy()
    sd = np.sqrt(np.clip(np.diag(dq @ cov_p @ dq.T), 0, None))
    figures, sds = split_figures(q), split_figures(sd)
    k = np.asarray(figures["wavevector_rad_per_mm"])
    sign = 1.0 if k[int(np.argmax(np.abs(k)))] >= 0 else -1.0  # K and −K with −φ: the same fringes
    for name in ("direction", "wavevector_rad_per_mm"):
        figures[name] = tuple(sign * v for v in figures[name])
    for name in ("phase_rad", "phase_at_origin_rad"):
        figures[name] = _wrap(sign * figures[name])

    lo = np.asarray(volume.origin_mm) - 0.5 * np.asarray(volume.voxel_size_mm)
    hi = lo + np.asarray(volume.voxel_size_mm) * np.asarray(volume.shape[::-1])
    centre, period, contrast = np.asarray(figures["centre_mm"]), figures["period_mm"], figures["contrast"]
    if not np.all((centre >= lo) & (centre <= hi)):
        why_not = "the envelope's centre left the volume (the density is not one fringed cloud)"
    elif not 2 * max(volume.voxel_size_mm) <= period <= float(np.max(hi - lo)):
        why_not = f"a period of {1e3 * period:.1f} µm, not between two voxels and the volume's extent"
    elif not contrast >= MIN_CONTRAST:
        why_not = f"contrast {contrast:.3f} below {MIN_CONTRAST}"
    elif not contrast > DETECTION_SIGMAS * sds["contrast"]:
        why_not = f"contrast {contrast:.3f} ± {sds['contrast']:.3f}, below {DETECTION_SIGMAS:g} sd"
    else:
        why_not = ""
    return FringeFit(**figures, sd=sds, residual_rms=math.sqrt(s2), voxels=int(len(y)), stride=stride,
                     detected=not why_not, why_not=why_not, params=tuple(float(v) for v in result.x))


def phantom_fringes(params: dict) -> dict | None:
    """The fringe model's period, direction and phase at the origin for a simulated phantom, or None.

    ``params``: a ``phantom.json``'s parameters with ``period_mm``, ``phase_rad``, ``direction``
    and ``center_mm`` (the named ``fringes`` and ``interferometer`` phantoms), a phantom file's
    tables with a ``fringes`` table (its ``origin_mm`` in the place of the centre), or a campaign
    shot's ``{"base": one of those, "offset_mm": (3,)}`` (the cloud moved by the offset): their
    density is modulated by ``sin²(k n·(x − c) − φ₀)``, k = π / period, which is
    ``½ (1 + cos(K·x + φ))`` with ``K = 2k n`` and ``φ = π − 2φ₀ − K·c`` at the origin (taken with
    K's largest component positive, as :func:`fit_fringes` reports it). With a chirp κ
    (``chirp_per_mm2``: the phase ``k s + ½ κ s²``, s = n·(x − c)) no straight fringes are the
    truth; these are the fringes' tangent at c (its local period and phase there), and
    ``chirp_per_mm2`` is added to the result. Where c is the centre of a Gaussian cloud of sd σ
    along n, a straight-fringe fit of the density finds the tangent's period but a phase about
    κσ²/2 ahead (the quadratic term's mean under the envelope's square) and a lower contrast.
    """
    params = _file_fringes(params) or params
    if isinstance(params.get("base"), dict):  # a shot of a campaign: the base phantom, moved
        moved = dict(_file_fringes(params["base"]) or params["base"])
        try:
            centre = np.asarray(moved.get("center_mm", (0.0, 0.0, 0.0)), dtype=float).reshape(3)
            offset = np.asarray(params.get("offset_mm", (0.0, 0.0, 0.0)), dtype=float).reshape(3)
            moved["center_mm"] = centre + offset
        except (TypeError, ValueError):
            return None
        return phantom_fringes(moved)
    try:
        period = float(params["period_mm"])
        n = np.asarray(params["direction"], dtype=float).reshape(3)
        phase0 = float(params["phase_rad"])
        centre = np.asarray(params.get("center_mm", (0.0, 0.0, 0.0)), dtype=float).reshape(3)
        chirp = float(params.get("chirp_per_mm2", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    if not (period > 0 and np.linalg.norm(n) > 0):
        return None
    n = n / np.linalg.norm(n)
    k = 2 * math.pi / period * n
    phase = math.pi - 2 * phase0 - float(k @ centre)
    sign = 1.0 if k[int(np.argmax(np.abs(k)))] >= 0 else -1.0
    out = {"period_mm": period, "direction": [float(v) for v in sign * n],
           "phase_at_origin_rad": _wrap(sign * phase)}
    return {**out, "chirp_per_mm2": chirp} if chirp else out


def _file_fringes(params: dict) -> dict | None:
    """A phantom file's ``fringes`` table in the named phantoms' form, or None where it has none.

    The table's ``origin_mm`` (where its phase is counted) takes the place of ``center_mm``.
    """
    table = params.get("fringes")
    if not isinstance(table, dict):
        return None
    return {"period_mm": table.get("period_mm"), "phase_rad": table.get("phase_rad", 0.0),
            "direction": table.get("direction"), "center_mm": table.get("origin_mm", (0.0, 0.0, 0.0)),
            "chirp_per_mm2": table.get("chirp_per_mm2", 0.0)}


def fringe_errors(record: dict, truth: dict) -> dict:
    """A fringe record's errors against the truth's fringes (:func:`phantom_fringes`).

    ``record``: fringes.json / metrics.json's ``fringes`` (or :meth:`FringeFit.to_json`). Returns
    ``period`` (relative: fit / truth − 1), ``direction_deg`` (the angle between the directions)
    and ``phase_rad`` (fit − truth at the origin, wrapped to (−π, π]).
    """
    dot = sum(a * b for a, b in zip(record["direction"], truth["direction"], strict=True))
    return {"period": record["period_mm"] / truth["period_mm"] - 1,
            "direction_deg": math.degrees(math.acos(min(1.0, abs(dot)))),
            "phase_rad": _wrap(record["phase_at_origin_rad"] - truth["phase_at_origin_rad"])}
