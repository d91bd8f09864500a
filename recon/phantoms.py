"""Phantoms: densities with known truth, for simulated runs and tests.

A phantom maps points ``(..., 3)`` — ``(x, y, z)`` in mm, world frame — to densities ``(...)``
in atoms/mm³, normalised **over all space** to the requested atom number ``atoms``: exactly and
analytically, through the characteristic function of each primitive (the Fourier transform
``φ(q) = ∫ f(x) e^{i q·x} dx`` of a unit-mass primitive ``f``), which also gives the exact
normalisation of fringe-modulated sums. Only the part inside the reconstruction box is observed;
:func:`truth_volume` samples that part, and ``Volume.meta["atoms_in_grid"]`` says how many atoms
it holds.

Registry (:data:`PHANTOMS`; cloud shapes from REFERENCE §1, after magis-slac/gradoptics):

``gaussian``  σ 0.5 mm (or any covariance).
``fringes``   Gaussian σ 0.5 mm × sin²(k·n·(x − c) − φ), wave vector along +y by default.
              *Period* is the distance between adjacent maxima of the density, i.e. the period
              of sin² (π/k, half the period of sin): 200 µm → k = π/0.2 mm⁻¹, bright and dark
              bands 100 µm wide.
``donut``     transverse σ 0.5 mm with a hole of Gaussian width 0.2 mm, longitudinal σ 0.2 mm.
``spike``     bulk (σr 0.5, σz 0.2 mm, 70 %) plus a thin spike (σr 0.1 mm, 30 %) along +z,
              longitudinal size and offset scaled to fit the ±1.2 mm box (see :func:`spike`).
``clouds``    several small Gaussian clouds, placed by the seed.
``sphere``    uniform sphere, radius 0.8 mm, smooth (logistic) edge 20 µm.
``box``       uniform box ±0.5 mm, smooth edge 20 µm.
``doe``       the opaque "DOE" test object (``data/meshes/doe.stl``), voxelised (needs pyvista).

Phantom files (TOML, loaded by :func:`load_phantom`; ``data/phantoms/*.toml``)::

    name = "two_clouds"                  # optional (default: the file name)
    description = "..."                  # optional
    model = "emission"                   # optional: emission | emission-absorption
    [[gaussian]]
    center_mm = [0.3, 0.0, 0.0]          # default [0, 0, 0]
    sigma_mm = 0.2                       # scalar or [sx, sy, sz]; default 0.5
    # covariance_mm2 = [[..], [..], [..]] instead of sigma_mm
    weight = 1.0                         # share of the atoms (relative; default 1)
    # amplitude = 1.0                    # or: relative peak density (not both kinds in a file)
    [[sphere]]                           # center_mm, radius_mm (required), edge_mm (default 0)
    [[box]]                              # min_mm, max_mm (required), edge_mm (default 0)
    [[donut]]                            # center_mm, sigma_r_mm, hole_mm, sigma_z_mm, power
    [fringes]                            # optional: modulates the whole sum by sin²
    period_mm = 0.2                      # required
    phase_rad = 0.0                      # default 0
    axis = "y"                           # x | y | z, or direction = [dx, dy, dz]; default y
    origin_mm = [0.0, 0.0, 0.0]          # where the phase is counted from; default 0

Hard edges (``edge_mm = 0``) are not differentiable at the surface; everything else is
differentiable with respect to the points.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recon.errors import ConfigError, DataError
from recon.volume import Volume

__all__ = [
    "PHANTOMS",
    "Box",
    "Donut",
    "Fringes",
    "Gaussian",
    "Phantom",
    "PrimitivePhantom",
    "Sphere",
    "VolumePhantom",
    "box",
    "clouds",
    "donut",
    "doe",
    "fringes",
    "gaussian",
    "load_phantom",
    "phantom_from_definition",
    "sphere",
    "spike",
    "truth_volume",
]

MODELS = ("emission", "emission-absorption")


def _t(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _vec(value) -> list[float]:
    return [float(v) for v in np.asarray(value, dtype=float).reshape(-1)]


# --------------------------------------------------------------------------------------------
# Primitives: unit-mass densities with analytic characteristic functions.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Gaussian:
    """Normalised 3-D Gaussian.

    Attributes:
        center_mm: (3,) mean, mm.
        covariance_mm2: (3, 3) covariance, mm², symmetric positive definite.
    """

    center_mm: np.ndarray
    covariance_mm2: np.ndarray

    kind = "gaussian"

    @classmethod
    def isotropic(cls, center_mm=(0.0, 0.0, 0.0), sigma_mm=0.5) -> Gaussian:
        """A Gaussian with standard deviations ``sigma_mm`` (scalar or per axis ``(x, y, z)``)."""
        s = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,))
        return cls(np.asarray(center_mm, dtype=float), np.diag(s**2))

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", np.asarray(self.center_mm, dtype=float).reshape(3))
        cov = np.asarray(self.covariance_mm2, dtype=float).reshape(3, 3)
        object.__setattr__(self, "covariance_mm2", cov)
        chol = np.linalg.cholesky(cov)  # raises LinAlgError when not positive definite
        object.__setattr__(self, "_precision", np.linalg.inv(cov))
        object.__setattr__(self, "_norm", 1.0 / ((2 * math.pi) ** 1.5 * float(np.prod(np.diag(chol)))))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (...) of points (..., 3) mm; integral 1, mm⁻³."""
        d = points - _t(self.center_mm, points)
        q = torch.einsum("...i,ij,...j->...", d, _t(self._precision, points), d)
        return self._norm * torch.exp(-0.5 * q)

    def characteristic(self, q: np.ndarray) -> complex:
        """``∫ f(x) exp(i q·x) dx`` for q (3,) mm⁻¹."""
        q = np.asarray(q, dtype=float)
        return complex(np.exp(1j * q @ self.center_mm - 0.5 * q @ self.covariance_mm2 @ q))

    def peak(self) -> float:
        """Largest density, mm⁻³."""
        return self._norm

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """A box holding all but ~1e-4 of the mass (±4σ per axis)."""
        half = 4.0 * np.sqrt(np.diag(self.covariance_mm2))
        return self.center_mm - half, self.center_mm + half

    def table(self) -> dict:
        """The primitive as a phantom-file table."""
        cov = self.covariance_mm2
        if np.allclose(cov, np.diag(np.diag(cov)), rtol=0, atol=1e-15):
            return {"center_mm": _vec(self.center_mm), "sigma_mm": _vec(np.sqrt(np.diag(cov)))}
        return {"center_mm": _vec(self.center_mm), "covariance_mm2": [_vec(row) for row in cov]}


def _polylog3_neg_exp(x: float) -> float:
    """``Li₃(−e^{−x})`` for x > 0 (alternating series)."""
    n = int(min(20000, math.ceil(45.0 / x) + 5))
    k = np.arange(1, n + 1, dtype=float)
    return float(np.sum((-1.0) ** k * np.exp(-k * x) / k**3))


@dataclass(frozen=True, eq=False)
class Sphere:
    """Uniform sphere, with an optional smooth edge.

    With ``edge_mm = w > 0`` the profile is the logistic ``σ((R − r)/w)`` (the density falls
    from 88 % to 12 % over ±2w around r = R); its mass is exactly
    ``4π [R³/3 + π² w² R/3 + 2 w³ Li₃(−e^{−R/w})]`` (Fermi–Dirac integral).

    Attributes:
        center_mm: (3,) centre, mm.
        radius_mm: radius R, mm.
        edge_mm: logistic edge width w, mm (0: hard edge).
    """

    center_mm: np.ndarray
    radius_mm: float
    edge_mm: float = 0.0

    kind = "sphere"

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", np.asarray(self.center_mm, dtype=float).reshape(3))
        r, w = float(self.radius_mm), float(self.edge_mm)
        if not (r > 0 and w >= 0):
            raise ValueError("Sphere: radius_mm must be > 0 and edge_mm ≥ 0")
        if w == 0:
            mass = 4.0 / 3.0 * math.pi * r**3
        else:
            mass = 4 * math.pi * (r**3 / 3 + math.pi**2 * w**2 * r / 3 + 2 * w**3 * _polylog3_neg_exp(r / w))
        object.__setattr__(self, "_norm", 1.0 / mass)

    def _profile(self, r: torch.Tensor) -> torch.Tensor:
        if self.edge_mm == 0:
            return (r <= self.radius_mm).to(r.dtype)
        return torch.sigmoid((self.radius_mm - r) / self.edge_mm)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (...) of points (..., 3) mm; integral 1, mm⁻³."""
        r = torch.linalg.vector_norm(points - _t(self.center_mm, points), dim=-1)
        return self._norm * self._profile(r)

    def characteristic(self, q: np.ndarray) -> complex:
        """``∫ f(x) exp(i q·x) dx`` for q (3,) mm⁻¹ (radial quadrature when the edge is smooth)."""
        q = np.asarray(q, dtype=float)
        qn = float(np.linalg.norm(q))
        phase = np.exp(1j * q @ self.center_mm)
        big_r = self.radius_mm
        if self.edge_mm == 0:
            u = qn * big_r
            if u < 1e-3:
                return complex(phase * (1 - u**2 / 10))
            return complex(phase * 3 * (math.sin(u) - u * math.cos(u)) / u**3)
        r = np.linspace(0.0, big_r + 40 * self.edge_mm, 40001)
        prof = 1.0 / (1.0 + np.exp(-(big_r - r) / self.edge_mm))
        radial = np.sinc(qn * r / math.pi)  # sin(qr)/(qr)
        integral = np.trapezoid(4 * math.pi * r**2 * prof * radial, r)
        return complex(phase * integral * self._norm)

    def peak(self) -> float:
        """Largest density, mm⁻³."""
        return self._norm * (1.0 if self.edge_mm == 0 else 1 / (1 + math.exp(-self.radius_mm / self.edge_mm)))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The sphere's bounding box (edge included to 8w)."""
        half = self.radius_mm + 8 * self.edge_mm
        return self.center_mm - half, self.center_mm + half

    def table(self) -> dict:
        """The primitive as a phantom-file table."""
        return {
            "center_mm": _vec(self.center_mm),
            "radius_mm": float(self.radius_mm),
            "edge_mm": float(self.edge_mm),
        }


@dataclass(frozen=True, eq=False)
class Box:
    """Uniform axis-aligned box, with an optional smooth edge.

    With ``edge_mm = w > 0`` each axis has the profile ``σ((x − a)/w) − σ((x − b)/w)``, the box
    convolved with a logistic kernel of scale w: its mass is exactly the box volume.

    Attributes:
        min_mm: (3,) lower corner ``(x, y, z)``, mm.
        max_mm: (3,) upper corner, mm.
        edge_mm: logistic edge width, mm (0: hard edge).
    """

    min_mm: np.ndarray
    max_mm: np.ndarray
    edge_mm: float = 0.0

    kind = "box"

    def __post_init__(self) -> None:
        lo = np.asarray(self.min_mm, dtype=float).reshape(3)
        hi = np.asarray(self.max_mm, dtype=float).reshape(3)
        if not (np.all(hi > lo) and self.edge_mm >= 0):
            raise ValueError("Box: max_mm must exceed min_mm on every axis and edge_mm be ≥ 0")
        object.__setattr__(self, "min_mm", lo)
        object.__setattr__(self, "max_mm", hi)
        object.__setattr__(self, "_norm", 1.0 / float(np.prod(hi - lo)))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (...) of points (..., 3) mm; integral 1, mm⁻³."""
        lo, hi = _t(self.min_mm, points), _t(self.max_mm, points)
        if self.edge_mm == 0:
            inside = ((points >= lo) & (points <= hi)).all(-1)
            return self._norm * inside.to(points.dtype)
        w = self.edge_mm
        prof = torch.sigmoid((points - lo) / w) - torch.sigmoid((points - hi) / w)  # (..., 3)
        return self._norm * prof.prod(-1)

    def characteristic(self, q: np.ndarray) -> complex:
        """``∫ f(x) exp(i q·x) dx`` for q (3,) mm⁻¹."""
        q = np.asarray(q, dtype=float)
        size = self.max_mm - self.min_mm
        mid = (self.max_mm + self.min_mm) / 2
        out = np.exp(1j * q @ mid) * np.prod(np.sinc(q * size / (2 * math.pi)))
        if self.edge_mm > 0:
            a = math.pi * self.edge_mm * q
            out *= np.prod(np.where(np.abs(a) < 1e-8, 1.0, a / np.sinh(np.where(a == 0, 1.0, a))))
        return complex(out)

    def peak(self) -> float:
        """Largest density, mm⁻³ (at the centre)."""
        c = torch.as_tensor((self.min_mm + self.max_mm) / 2, dtype=torch.float64)
        return float(self.density(c))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The box (edge included to 8w)."""
        return self.min_mm - 8 * self.edge_mm, self.max_mm + 8 * self.edge_mm

    def table(self) -> dict:
        """The primitive as a phantom-file table."""
        return {"min_mm": _vec(self.min_mm), "max_mm": _vec(self.max_mm), "edge_mm": float(self.edge_mm)}


@dataclass(frozen=True, eq=False)
class Donut:
    r"""Ring cloud around the z axis (after gradoptics ``AtomCloudDonut``).

    .. math::

        f(x) \propto \big(1 - e^{-r^2/2h^2}\big)^p \, e^{-r^2/2\sigma_r^2} \, e^{-z^2/2\sigma_z^2}

    with r the distance from the axis through the centre. The density is 0 on the axis; for
    σr 0.5, h 0.2 mm, p 2 it peaks at r ≈ 0.46 mm and reaches half the peak at r ≈ 0.26 mm.
    Expanding the power gives a signed sum of Gaussians, whence the exact normalisation
    ``√(2π) σz · 2π Σ_j C(p, j) (−1)^j s_j²`` with ``1/s_j² = 1/σr² + j/h²``.

    Attributes:
        center_mm: (3,) centre, mm.
        sigma_r_mm: transverse Gaussian width σr, mm.
        hole_mm: Gaussian width h of the hole, mm.
        sigma_z_mm: longitudinal Gaussian width σz, mm.
        power: p, integer ≥ 1 (gradoptics' "power of the push-away beam", 2).
    """

    center_mm: np.ndarray
    sigma_r_mm: float = 0.5
    hole_mm: float = 0.2
    sigma_z_mm: float = 0.2
    power: int = 2

    kind = "donut"

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_mm", np.asarray(self.center_mm, dtype=float).reshape(3))
        if not (self.sigma_r_mm > 0 and self.hole_mm > 0 and self.sigma_z_mm > 0):
            raise ValueError("Donut: sigma_r_mm, hole_mm and sigma_z_mm must be > 0")
        if int(self.power) != self.power or self.power < 1:
            raise ValueError("Donut: power must be an integer ≥ 1")
        p = int(self.power)
        j = np.arange(p + 1)
        coef = np.array([math.comb(p, int(i)) * (-1.0) ** int(i) for i in j])
        s2 = 1.0 / (1.0 / self.sigma_r_mm**2 + j / self.hole_mm**2)
        mass = math.sqrt(2 * math.pi) * self.sigma_z_mm * 2 * math.pi * float(np.sum(coef * s2))
        object.__setattr__(self, "_terms", (coef, s2))
        object.__setattr__(self, "_norm", 1.0 / mass)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (...) of points (..., 3) mm; integral 1, mm⁻³."""
        d = points - _t(self.center_mm, points)
        r2 = d[..., 0] ** 2 + d[..., 1] ** 2
        ring = (-torch.expm1(-r2 / (2 * self.hole_mm**2))) ** int(self.power)
        envelope = torch.exp(-r2 / (2 * self.sigma_r_mm**2) - d[..., 2] ** 2 / (2 * self.sigma_z_mm**2))
        return self._norm * ring * envelope

    def characteristic(self, q: np.ndarray) -> complex:
        """``∫ f(x) exp(i q·x) dx`` for q (3,) mm⁻¹."""
        q = np.asarray(q, dtype=float)
        coef, s2 = self._terms
        q_perp2 = q[0] ** 2 + q[1] ** 2
        radial = 2 * math.pi * float(np.sum(coef * s2 * np.exp(-0.5 * s2 * q_perp2)))
        axial = math.sqrt(2 * math.pi) * self.sigma_z_mm * math.exp(-0.5 * self.sigma_z_mm**2 * q[2] ** 2)
        return complex(np.exp(1j * q @ self.center_mm) * radial * axial * self._norm)

    def peak(self) -> float:
        """Largest density, mm⁻³."""
        r = np.linspace(0.0, 6 * self.sigma_r_mm, 20001)
        ring = (1 - np.exp(-(r**2) / (2 * self.hole_mm**2))) ** int(self.power)
        return self._norm * float(np.max(ring * np.exp(-(r**2) / (2 * self.sigma_r_mm**2))))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """±4σ transversally and longitudinally."""
        half = np.array([4 * self.sigma_r_mm, 4 * self.sigma_r_mm, 4 * self.sigma_z_mm])
        return self.center_mm - half, self.center_mm + half

    def table(self) -> dict:
        """The primitive as a phantom-file table."""
        return {
            "center_mm": _vec(self.center_mm),
            "sigma_r_mm": float(self.sigma_r_mm),
            "hole_mm": float(self.hole_mm),
            "sigma_z_mm": float(self.sigma_z_mm),
            "power": int(self.power),
        }


Primitive = Gaussian | Sphere | Box | Donut


@dataclass(frozen=True, eq=False)
class Fringes:
    """A sin² modulation ``sin²(k n·(x − o) − φ)`` with ``k = π / period_mm``.

    ``period_mm`` is the period of the density pattern (distance between adjacent maxima).
    The mean of the modulation under a unit-mass primitive f is exactly
    ``½ (1 − Re[e^{−2iψ} φ_f(2k n)])`` with ``ψ = φ + k n·o``; for a Gaussian of covariance Σ
    centred at o this is ``½ (1 − e^{−2k² nᵀΣn} cos 2φ)``.

    Attributes:
        direction: (3,) unit wave-vector direction (default +y).
        period_mm: period of the density fringes, mm.
        phase_rad: φ, rad.
        origin_mm: (3,) point o where the phase is counted, mm.
    """

    direction: np.ndarray
    period_mm: float = 0.2
    phase_rad: float = 0.0
    origin_mm: np.ndarray = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        n = np.asarray(self.direction, dtype=float).reshape(3)
        norm = float(np.linalg.norm(n))
        if not (norm > 0 and self.period_mm > 0):
            raise ValueError("Fringes: direction must be non-zero and period_mm > 0")
        object.__setattr__(self, "direction", n / norm)
        object.__setattr__(self, "origin_mm", np.asarray(self.origin_mm, dtype=float).reshape(3))

    @property
    def k(self) -> float:
        """Wave number k = π / period, rad/mm."""
        return math.pi / self.period_mm

    def modulation(self, points: torch.Tensor) -> torch.Tensor:
        """sin²(k n·(x − o) − φ) of points (..., 3) mm, in [0, 1]."""
        s = ((points - _t(self.origin_mm, points)) * _t(self.direction, points)).sum(-1)
        return torch.sin(self.k * s - self.phase_rad) ** 2

    def mean_under(self, prim: Primitive) -> float:
        """``∫ f(x) sin²(…) dx`` for a unit-mass primitive f."""
        psi = self.phase_rad + self.k * float(self.direction @ self.origin_mm)
        phi = prim.characteristic(2 * self.k * self.direction)
        return 0.5 * (1.0 - (np.exp(-2j * psi) * phi).real)

    def table(self) -> dict:
        """The modulation as a phantom-file table."""
        return {
            "period_mm": float(self.period_mm),
            "phase_rad": float(self.phase_rad),
            "direction": _vec(self.direction),
            "origin_mm": _vec(self.origin_mm),
        }


# --------------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------------


class Phantom:
    """A density with known truth.

    Attributes:
        name: registry name, file name or volume name.
        total_atoms: atoms over all space (the normalisation), atoms.
        params: JSON-serialisable parameters (written into simulated runs).
        bounds_mm: ``((x0, y0, z0), (x1, y1, z1))``, a box holding (nearly) all the atoms, mm.
        model: ``"emission"`` (atom clouds) or ``"emission-absorption"`` (opaque objects).
    """

    name: str
    total_atoms: float
    params: dict
    bounds_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    model: str = "emission"

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density ``(...)`` at points ``(..., 3)`` (x, y, z mm), atoms/mm³, in the points' dtype."""
        raise NotImplementedError

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`density`."""
        return self.density(points)

    @property
    def atoms(self) -> float:
        """Alias of :attr:`total_atoms`."""
        return self.total_atoms

    @property
    def definition(self) -> dict | None:
        """The phantom as a phantom file (TOML tables), or None when it has no such form."""
        return None

    def to_dict(self) -> dict:
        """Everything about the phantom, JSON-serialisable (for ``phantom.json``)."""
        out = {
            "name": self.name,
            "model": self.model,
            "atoms_total": float(self.total_atoms),
            "params": self.params,
            "bounds_mm": [list(b) for b in self.bounds_mm],
        }
        if self.definition is not None:
            out["definition"] = self.definition
        return out

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}(name={self.name!r}, total_atoms={self.total_atoms:g}, model={self.model!r})"


class PrimitivePhantom(Phantom):
    r"""A weighted sum of primitives, optionally modulated by fringes, holding ``atoms`` atoms.

    .. math::

        \rho(x) = A \, \frac{\sum_i w_i f_i(x) \; m(x)}{\sum_i w_i \int f_i m}

    with unit-mass primitives f_i, weights w_i ≥ 0 and m = sin²(…) (or 1 without fringes).

    Args:
        name: phantom name.
        components: sequence of (weight, primitive); weights ≥ 0, not all 0.
        atoms: total atom number A (over all space).
        fringes: optional modulation of the whole sum.
        model: rendering model.
        params: parameters to record (default: the definition).
    """

    def __init__(
        self,
        name: str,
        components: Sequence[tuple[float, Primitive]],
        *,
        atoms: float,
        fringes: Fringes | None = None,
        model: str = "emission",
        params: dict | None = None,
    ) -> None:
        if not components:
            raise ConfigError(f"phantom {name}: no primitives")
        weights = np.array([float(w) for w, _ in components])
        if np.any(weights < 0) or not np.any(weights > 0):
            raise ConfigError(f"phantom {name}: weights must be ≥ 0 and not all 0, got {weights.tolist()}")
        if model not in MODELS:
            raise ConfigError(f"phantom {name}: model must be one of {', '.join(MODELS)}, got {model!r}")
        means = np.array([1.0 if fringes is None else fringes.mean_under(p) for _, p in components])
        mass = float(np.sum(weights * means))
        if not mass > 1e-12 * float(weights.sum()):
            raise ConfigError(f"phantom {name}: the fringes leave no atoms (all mass on dark fringes)")
        self.name = name
        self.total_atoms = float(atoms)
        self.model = model
        self.fringes = fringes
        self.primitives = tuple(p for _, p in components)
        self.weights = tuple(float(w) for w in weights)
        self._scale = self.total_atoms / mass
        self.component_atoms = tuple(float(a) for a in self.total_atoms * weights * means / mass)
        lows, highs = zip(*(p.bounds() for p in self.primitives), strict=True)
        self.bounds_mm = (
            tuple(float(v) for v in np.min(lows, axis=0)),
            tuple(float(v) for v in np.max(highs, axis=0)),
        )
        self.params = params if params is not None else self.definition

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density ``(...)`` at points ``(..., 3)`` (x, y, z mm), atoms/mm³."""
        rho = sum(w * p.density(points) for w, p in zip(self.weights, self.primitives, strict=True) if w > 0)
        if self.fringes is not None:
            rho = rho * self.fringes.modulation(points)
        return self._scale * rho

    @property
    def definition(self) -> dict:
        """The phantom as phantom-file tables (``load_phantom`` reads it back)."""
        out: dict = {"name": self.name}
        if self.model != "emission":
            out["model"] = self.model
        for w, p in zip(self.weights, self.primitives, strict=True):
            out.setdefault(p.kind, []).append({**p.table(), "weight": w})
        if self.fringes is not None:
            out["fringes"] = self.fringes.table()
        return out


class VolumePhantom(Phantom):
    """A phantom that interpolates a voxel :class:`~recon.volume.Volume` trilinearly.

    Values sit at voxel centres (``torch.nn.functional.grid_sample``, zero padding);
    the density falls linearly to 0 over one voxel beyond the outermost centres and is 0 further
    out. That interpolant integrates to exactly ``Σ values · voxel volume``, which is the
    phantom's atom number unless ``atoms`` rescales it. Differentiable with respect to the points.

    Args:
        volume: the voxelised object (any unit; e.g. a mesh's inside fraction).
        atoms: rescale the values so the total is ``atoms``; None keeps the values as atoms/mm³.
        name: phantom name.
        model: rendering model (``emission-absorption`` for opaque objects).
        params: extra parameters to record.

    Raises:
        ConfigError: ``atoms`` is given but the volume holds no mass, or the values are negative.
    """

    def __init__(
        self,
        volume: Volume,
        *,
        atoms: float | None = None,
        name: str = "volume",
        model: str = "emission",
        params: dict | None = None,
    ) -> None:
        if model not in MODELS:
            raise ConfigError(f"phantom {name}: model must be one of {', '.join(MODELS)}, got {model!r}")
        data = np.asarray(volume.data, dtype=np.float64)
        if not np.all(np.isfinite(data)) or float(data.min(initial=0.0)) < 0:
            raise ConfigError(f"phantom {name}: the volume must hold finite values ≥ 0")
        mass = float(data.sum() * np.prod(volume.voxel_size_mm))
        if atoms is not None and not mass > 0:
            raise ConfigError(f"phantom {name}: the volume holds no mass, cannot scale it to {atoms:g} atoms")
        self.volume = volume
        self.scale = 1.0 if atoms is None else float(atoms) / mass
        self.name = name
        self.model = model
        self.total_atoms = mass * self.scale
        first, last = volume.bounds_mm
        vox = np.asarray(volume.voxel_size_mm, dtype=float)
        self.bounds_mm = (
            tuple(float(v) for v in np.asarray(first) - vox),
            tuple(float(v) for v in np.asarray(last) + vox),
        )
        self.params = {
            "volume": name,
            "shape_zyx": list(volume.shape),
            "origin_mm": [float(v) for v in volume.origin_mm],
            "voxel_size_mm": [float(v) for v in volume.voxel_size_mm],
            "scale": self.scale,
            **(params or {}),
        }
        self._cache: dict = {}

    def _data(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = _t(np.asarray(self.volume.data), like)[None, None]
        return self._cache[key]

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density ``(...)`` at points ``(..., 3)`` (x, y, z mm), volume units × scale."""
        import torch.nn.functional as F

        vol = self.volume
        origin = _t(vol.origin_mm, points)
        spacing = _t(vol.voxel_size_mm, points)
        size = _t(vol.shape[::-1], points)  # x, y, z
        index = (points - origin) / spacing  # (..., 3) continuous voxel index, centres at integers
        # align_corners=False: grid −1 and +1 are the outer faces of the first and last voxels.
        grid = (2.0 * index + 1.0) / size - 1.0
        out = F.grid_sample(
            self._data(points),
            grid.reshape(1, -1, 1, 1, 3),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        return self.scale * out.reshape(points.shape[:-1])


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

Vec3 = tuple[float, float, float]


def gaussian(
    atoms: float,
    *,
    sigma_mm: float | Sequence[float] = 0.5,
    covariance_mm2: Sequence[Sequence[float]] | None = None,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Gaussian cloud (REFERENCE §1: σ 0.5 mm).

    Args:
        atoms: total atom number.
        sigma_mm: standard deviation, scalar or ``(σx, σy, σz)``, mm.
        covariance_mm2: (3, 3) covariance, mm²; overrides ``sigma_mm``.
        center_mm: (3,) centre, mm.
    """
    if covariance_mm2 is not None:
        g = Gaussian(center_mm, covariance_mm2)
    else:
        g = Gaussian.isotropic(center_mm, sigma_mm)
    params = {"sigma_mm": sigma_mm, "center_mm": _vec(center_mm)}
    if covariance_mm2 is not None:
        params = {"covariance_mm2": [_vec(r) for r in g.covariance_mm2], "center_mm": _vec(center_mm)}
    return PrimitivePhantom("gaussian", [(1.0, g)], atoms=atoms, params=params)


def fringes(
    atoms: float,
    *,
    sigma_mm: float | Sequence[float] = 0.5,
    period_mm: float = 0.2,
    phase_rad: float = 0.0,
    direction: Vec3 = (0.0, 1.0, 0.0),
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Interference fringes: Gaussian × sin²(k n·(x − c) − φ), k = π/period (REFERENCE §1).

    The fringe wave vector points along +y by default; ``period_mm`` (200 µm) is the distance
    between adjacent density maxima, so the bright and dark bands are 100 µm wide. The phase is
    counted from the cloud centre: φ = 0 puts a dark fringe through the centre. Normalisation:
    ``∫ G sin² = ½ (1 − e^{−2k²σ²} cos 2φ)`` (σ along n), exact.

    Args:
        atoms: total atom number.
        sigma_mm: envelope standard deviation, scalar or ``(σx, σy, σz)``, mm.
        period_mm: distance between adjacent density maxima, mm.
        phase_rad: φ, rad.
        direction: (3,) wave-vector direction (normalised here).
        center_mm: (3,) centre of the envelope and origin of the phase, mm.
    """
    fr = Fringes(direction, period_mm, phase_rad, center_mm)
    params = {
        "sigma_mm": sigma_mm,
        "period_mm": float(period_mm),
        "phase_rad": float(phase_rad),
        "direction": _vec(fr.direction),
        "center_mm": _vec(center_mm),
    }
    return PrimitivePhantom(
        "fringes", [(1.0, Gaussian.isotropic(center_mm, sigma_mm))], atoms=atoms, fringes=fr, params=params
    )


def donut(
    atoms: float,
    *,
    sigma_r_mm: float = 0.5,
    hole_mm: float = 0.2,
    sigma_z_mm: float = 0.2,
    power: int = 2,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Ring cloud around z: transverse σ 0.5 mm with a 0.2 mm hole, longitudinal σ 0.2 mm.

    ``(1 − e^{−r²/2h²})^p e^{−r²/2σr²} e^{−z²/2σz²}`` as in gradoptics' ``AtomCloudDonut``
    (p = 2); see :class:`Donut`.

    Args:
        atoms: total atom number.
        sigma_r_mm: transverse width σr, mm.
        hole_mm: Gaussian width of the hole, mm.
        sigma_z_mm: longitudinal width σz, mm.
        power: p, integer ≥ 1.
        center_mm: (3,) centre, mm.
    """
    d = Donut(center_mm, sigma_r_mm, hole_mm, sigma_z_mm, power)
    params = {**d.table()}
    return PrimitivePhantom("donut", [(1.0, d)], atoms=atoms, params=params)


def spike(
    atoms: float,
    *,
    bulk_weight: float = 0.7,
    spike_sigma_r_mm: float = 0.1,
    spike_sigma_z_mm: float = 0.4,
    offset_mm: float = 0.4,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """Bulk cloud plus a thin spike along +z (after gradoptics' ``AtomCloudSpike``).

    Bulk: Gaussian σ (0.5, 0.5, 0.2) mm at the centre with 70 % of the atoms. Spike: Gaussian
    σ (0.1, 0.1, σz) mm at ``center + (0, 0, offset)`` with 30 %. gradoptics uses σz 1 mm and an
    offset of 1 mm; the reconstruction box is only ±1.2 mm, so both are scaled by 0.4 (our
    choice): σz 0.4 mm, offset 0.4 mm, and 98 % of the spike's atoms lie below z = 1.2 mm.

    Args:
        atoms: total atom number.
        bulk_weight: share of the atoms in the bulk, in [0, 1].
        spike_sigma_r_mm: transverse width of the spike, mm.
        spike_sigma_z_mm: longitudinal width of the spike, mm.
        offset_mm: spike centre above the bulk centre along +z, mm.
        center_mm: (3,) bulk centre, mm.
    """
    c = np.asarray(center_mm, dtype=float)
    bulk = Gaussian.isotropic(c, (0.5, 0.5, 0.2))
    thin = Gaussian.isotropic(c + np.array([0.0, 0.0, offset_mm]),
                              (spike_sigma_r_mm, spike_sigma_r_mm, spike_sigma_z_mm))
    if not 0.0 <= bulk_weight <= 1.0:
        raise ConfigError(f"phantom spike: bulk_weight must be in [0, 1], got {bulk_weight}")
    params = {
        "bulk_weight": float(bulk_weight),
        "bulk_sigma_mm": [0.5, 0.5, 0.2],
        "spike_sigma_r_mm": float(spike_sigma_r_mm),
        "spike_sigma_z_mm": float(spike_sigma_z_mm),
        "offset_mm": float(offset_mm),
        "center_mm": _vec(c),
    }
    comps = [(bulk_weight, bulk), (1.0 - bulk_weight, thin)]
    return PrimitivePhantom("spike", comps, atoms=atoms, params=params)


def clouds(
    atoms: float,
    *,
    n: int = 3,
    seed: int = 0,
    spread_mm: float = 0.6,
    sigma_range_mm: tuple[float, float] = (0.1, 0.25),
    min_separation_mm: float = 0.5,
    center_mm: Vec3 = (0.0, 0.0, 0.0),
) -> PrimitivePhantom:
    """``n`` small isotropic Gaussian clouds at depths and places drawn from ``seed``.

    Centres uniform in ``center ± spread_mm`` at least ``min_separation_mm`` apart, σ uniform in
    ``sigma_range_mm``, atom shares uniform in [0.5, 1.5] (normalised). The drawn layout is in
    :attr:`~Phantom.params` (and therefore in the run's phantom file).

    Args:
        atoms: total atom number.
        n: number of clouds.
        seed: seed of the layout.
        spread_mm: half-width of the cube the centres are drawn in, mm.
        sigma_range_mm: (low, high) of the cloud widths, mm.
        min_separation_mm: smallest distance between centres, mm.
        center_mm: (3,) centre of the cube, mm.
    """
    if n < 1:
        raise ConfigError(f"phantom clouds: n must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    c0 = np.asarray(center_mm, dtype=float)
    centres: list[np.ndarray] = []
    for _ in range(10000):
        p = c0 + rng.uniform(-spread_mm, spread_mm, 3)
        if all(np.linalg.norm(p - q) >= min_separation_mm for q in centres):
            centres.append(p)
            if len(centres) == n:
                break
    else:
        raise ConfigError(
            f"phantom clouds: cannot place {n} clouds {min_separation_mm} mm apart within ±{spread_mm} mm; "
            "lower n or min_separation_mm"
        )
    sigmas = rng.uniform(*sigma_range_mm, n)
    shares = rng.uniform(0.5, 1.5, n)
    comps = [
        (float(w), Gaussian.isotropic(c, float(s)))
        for c, s, w in zip(centres, sigmas, shares, strict=True)
    ]
    params = {
        "seed": int(seed),
        "clouds": [
            {"center_mm": _vec(c), "sigma_mm": float(s), "share": float(w / shares.sum())}
            for c, s, w in zip(centres, sigmas, shares, strict=True)
        ],
    }
    return PrimitivePhantom("clouds", comps, atoms=atoms, params=params)


def sphere(
    atoms: float, *, radius_mm: float = 0.8, edge_mm: float = 0.02, center_mm: Vec3 = (0.0, 0.0, 0.0)
) -> PrimitivePhantom:
    """Uniform sphere with a smooth logistic edge (exact normalisation, see :class:`Sphere`).

    Args:
        atoms: total atom number.
        radius_mm: radius, mm.
        edge_mm: logistic edge width, mm (0: hard edge, not differentiable there).
        center_mm: (3,) centre, mm.
    """
    s = Sphere(center_mm, radius_mm, edge_mm)
    return PrimitivePhantom("sphere", [(1.0, s)], atoms=atoms, params=s.table())


def box(
    atoms: float,
    *,
    min_mm: Vec3 = (-0.5, -0.5, -0.5),
    max_mm: Vec3 = (0.5, 0.5, 0.5),
    edge_mm: float = 0.02,
) -> PrimitivePhantom:
    """Uniform box with a smooth logistic edge (mass exactly the box volume, see :class:`Box`).

    Args:
        atoms: total atom number.
        min_mm: (3,) lower corner, mm.
        max_mm: (3,) upper corner, mm.
        edge_mm: logistic edge width, mm (0: hard edge, not differentiable there).
    """
    b = Box(min_mm, max_mm, edge_mm)
    return PrimitivePhantom("box", [(1.0, b)], atoms=atoms, params=b.table())


def doe(atoms: float, *, voxel_size_mm: float = 0.02, density: float = 20.0) -> VolumePhantom:
    """The opaque "DOE" test object (``data/meshes/doe.stl``), voxelised, inside = ``density``.

    Rendered with ``emission-absorption`` (attenuation per unit density set by the renderer):
    opaque within ~50 µm of its surface at the default density. Relative units: ``atoms`` is
    ignored. Needs pyvista (imported here).

    Args:
        atoms: ignored (relative units).
        voxel_size_mm: voxel edge of the voxelisation, mm.
        density: value inside the object.
    """
    del atoms  # relative units
    import pyvista as pv

    from recon.mesh import voxelize_mesh

    mesh_path = Path(__file__).resolve().parents[1] / "data" / "meshes" / "doe.stl"
    if not mesh_path.is_file():
        raise DataError(f"phantom doe: {mesh_path} is missing; restore data/meshes/doe.stl")
    mesh = pv.read(str(mesh_path))
    extent = (2.52, 1.8, 0.6)  # x, y, z around the 2.3 × 1.6 × 0.4 mm word
    n = [int(round(e / voxel_size_mm)) for e in extent]
    origin = tuple(-(k - 1) / 2 * voxel_size_mm for k in n)
    volume = voxelize_mesh(mesh, n[::-1], origin, (voxel_size_mm,) * 3, supersample=2)
    volume = Volume(volume.data * np.float32(density), volume.origin_mm, volume.voxel_size_mm, "relative")
    return VolumePhantom(
        volume,
        name="doe",
        model="emission-absorption",
        params={"mesh": "data/meshes/doe.stl", "density": density},
    )


PHANTOMS: dict[str, Callable[..., Phantom]] = {
    "gaussian": gaussian,
    "fringes": fringes,
    "donut": donut,
    "spike": spike,
    "clouds": clouds,
    "sphere": sphere,
    "box": box,
    "doe": doe,
}


# --------------------------------------------------------------------------------------------
# Phantom files
# --------------------------------------------------------------------------------------------

_PRIMITIVE_KEYS = {
    "gaussian": ("center_mm", "sigma_mm", "covariance_mm2", "weight", "amplitude"),
    "sphere": ("center_mm", "radius_mm", "edge_mm", "weight", "amplitude"),
    "box": ("min_mm", "max_mm", "edge_mm", "weight", "amplitude"),
    "donut": ("center_mm", "sigma_r_mm", "hole_mm", "sigma_z_mm", "power", "weight", "amplitude"),
}
_FRINGE_KEYS = ("period_mm", "phase_rad", "axis", "direction", "origin_mm")
_TOP_KEYS = ("name", "description", "model", "fringes", *_PRIMITIVE_KEYS)


def _unknown(source: str, key: str, allowed: Sequence[str], where: str = "") -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{source}: unknown key '{where}{key}'{hint}; allowed: {', '.join(allowed)}")


def _number(value, key: str, source: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{source}: key '{key}' must be a number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}")
    if nonneg and value < 0:
        raise ConfigError(f"{source}: key '{key}' must be ≥ 0, got {value!r}")
    return float(value)


def _vector3(value, key: str, source: str, *, scalar_ok: bool = False, positive: bool = False) -> np.ndarray:
    if scalar_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        out = np.full(3, _number(value, key, source))
    elif isinstance(value, list) and len(value) == 3:
        out = np.array([_number(v, key, source) for v in value])
    else:
        what = "a number or a list of 3 numbers" if scalar_ok else "a list of 3 numbers [x, y, z]"
        raise ConfigError(f"{source}: key '{key}' must be {what}, got {value!r}")
    if positive and np.any(out <= 0):
        raise ConfigError(f"{source}: key '{key}' must be > 0, got {value!r}")
    return out


def _primitive(kind: str, item: dict, where: str, source: str) -> Primitive:
    def get(key, default=None):
        return item.get(key, default)

    if kind == "gaussian":
        center = _vector3(get("center_mm", [0.0, 0.0, 0.0]), f"{where}.center_mm", source)
        if "covariance_mm2" in item:
            if "sigma_mm" in item:
                raise ConfigError(f"{source}: '{where}' gives both sigma_mm and covariance_mm2; keep one")
            cov = item["covariance_mm2"]
            if not (isinstance(cov, list) and len(cov) == 3):
                raise ConfigError(f"{source}: key '{where}.covariance_mm2' must be 3 rows of 3 numbers")
            m = np.array([_vector3(r, f"{where}.covariance_mm2", source) for r in cov])
            if not np.allclose(m, m.T, rtol=1e-9, atol=1e-12):
                raise ConfigError(f"{source}: key '{where}.covariance_mm2' must be symmetric")
            try:
                return Gaussian(center, m)
            except np.linalg.LinAlgError:
                raise ConfigError(
                    f"{source}: key '{where}.covariance_mm2' is not positive definite; check the matrix"
                ) from None
        sigma = _vector3(get("sigma_mm", 0.5), f"{where}.sigma_mm", source, scalar_ok=True, positive=True)
        return Gaussian.isotropic(center, sigma)
    if kind == "sphere":
        if "radius_mm" not in item:
            raise ConfigError(f"{source}: key '{where}.radius_mm' is missing; add the sphere's radius")
        return Sphere(
            _vector3(get("center_mm", [0.0, 0.0, 0.0]), f"{where}.center_mm", source),
            _number(item["radius_mm"], f"{where}.radius_mm", source, positive=True),
            _number(get("edge_mm", 0.0), f"{where}.edge_mm", source, nonneg=True),
        )
    if kind == "box":
        for key in ("min_mm", "max_mm"):
            if key not in item:
                raise ConfigError(f"{source}: key '{where}.{key}' is missing; add the box corner")
        lo = _vector3(item["min_mm"], f"{where}.min_mm", source)
        hi = _vector3(item["max_mm"], f"{where}.max_mm", source)
        if np.any(hi <= lo):
            raise ConfigError(f"{source}: key '{where}.max_mm' must exceed min_mm on every axis")
        return Box(lo, hi, _number(get("edge_mm", 0.0), f"{where}.edge_mm", source, nonneg=True))
    power = get("power", 2)
    if isinstance(power, bool) or not isinstance(power, int) or power < 1:
        raise ConfigError(f"{source}: key '{where}.power' must be an integer ≥ 1, got {power!r}")
    return Donut(
        _vector3(get("center_mm", [0.0, 0.0, 0.0]), f"{where}.center_mm", source),
        _number(get("sigma_r_mm", 0.5), f"{where}.sigma_r_mm", source, positive=True),
        _number(get("hole_mm", 0.2), f"{where}.hole_mm", source, positive=True),
        _number(get("sigma_z_mm", 0.2), f"{where}.sigma_z_mm", source, positive=True),
        power,
    )


def _fringes(table, source: str) -> Fringes:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'fringes' must be a table ([fringes])")
    for key in table:
        if key not in _FRINGE_KEYS:
            raise _unknown(source, key, _FRINGE_KEYS, "fringes.")
    if "period_mm" not in table:
        raise ConfigError(f"{source}: key 'fringes.period_mm' is missing; add the fringe period in mm")
    if "axis" in table and "direction" in table:
        raise ConfigError(f"{source}: 'fringes' gives both axis and direction; keep one")
    if "direction" in table:
        direction = _vector3(table["direction"], "fringes.direction", source)
        if not np.linalg.norm(direction) > 0:
            raise ConfigError(f"{source}: key 'fringes.direction' must be a non-zero vector")
    else:
        axis = table.get("axis", "y")
        if axis not in ("x", "y", "z"):
            raise ConfigError(f"{source}: key 'fringes.axis' must be 'x', 'y' or 'z', got {axis!r}")
        direction = np.eye(3)["xyz".index(axis)]
    return Fringes(
        direction,
        _number(table["period_mm"], "fringes.period_mm", source, positive=True),
        _number(table.get("phase_rad", 0.0), "fringes.phase_rad", source),
        _vector3(table.get("origin_mm", [0.0, 0.0, 0.0]), "fringes.origin_mm", source),
    )


def phantom_from_definition(
    definition: Mapping, *, atoms: float, source: str = "phantom", name: str | None = None
) -> PrimitivePhantom:
    """A phantom from phantom-file tables (a parsed TOML file, or :attr:`Phantom.definition`).

    Args:
        definition: the tables (see the module docstring).
        atoms: total atom number over all space.
        source: where the tables came from, for error messages (file path).
        name: phantom name when the tables give none.

    Raises:
        ConfigError: unknown or missing keys, wrong types or values, naming the key and source.
    """
    for key in definition:
        if key not in _TOP_KEYS:
            raise _unknown(source, key, _TOP_KEYS)
    model = definition.get("model", "emission")
    if model not in MODELS:
        raise ConfigError(f"{source}: key 'model' must be one of {', '.join(MODELS)}, got {model!r}")
    title = definition.get("name", name or "phantom")
    if not isinstance(title, str):
        raise ConfigError(f"{source}: key 'name' must be a string, got {title!r}")
    components: list[tuple[str, float, Primitive]] = []
    for kind, keys in _PRIMITIVE_KEYS.items():
        items = definition.get(kind, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ConfigError(f"{source}: '{kind}' must be an array of tables ([[{kind}]])")
        for i, item in enumerate(items):
            where = f"{kind}[{i}]"
            for key in item:
                if key not in keys:
                    raise _unknown(source, key, keys, f"{where}.")
            if "weight" in item and "amplitude" in item:
                raise ConfigError(f"{source}: '{where}' gives both weight and amplitude; keep one")
            how = "amplitude" if "amplitude" in item else "weight"
            value = _number(item.get(how, 1.0), f"{where}.{how}", source, nonneg=True)
            try:
                prim = _primitive(kind, item, where, source)
            except ValueError as err:  # a geometric constraint the checks above did not catch
                raise ConfigError(f"{source}: '{where}': {err}") from None
            if how == "amplitude":
                value = value / prim.peak()  # relative peak density → relative atom share
            components.append((how, value, prim))
    if not components:
        raise ConfigError(
            f"{source}: no primitives; add [[gaussian]], [[sphere]], [[box]] or [[donut]] tables"
        )
    if len({how for how, _, _ in components}) > 1:
        raise ConfigError(
            f"{source}: some primitives give 'weight' and others 'amplitude'; use one kind in a file"
        )
    if not any(v > 0 for _, v, _ in components):
        raise ConfigError(f"{source}: every weight is 0; give at least one primitive a positive weight")
    fr = _fringes(definition["fringes"], source) if "fringes" in definition else None
    phantom = PrimitivePhantom(
        title, [(v, p) for _, v, p in components], atoms=atoms, fringes=fr, model=model, params={}
    )
    phantom.params = {"source": str(source), **phantom.definition}
    return phantom


def load_phantom(
    name_or_path: str | os.PathLike,
    *,
    atoms: float,
    seed: int = 0,
    options: Mapping | None = None,
) -> Phantom:
    """A phantom by registry name (:data:`PHANTOMS`) or from a TOML phantom file.

    Args:
        name_or_path: a registry name, or the path of a ``.toml`` phantom file.
        atoms: total atom number over all space (> 0).
        seed: seed of phantoms drawn at random (``clouds``); others ignore it.
        options: keyword arguments of the registry function (e.g. ``{"period_mm": 0.1}``).

    Raises:
        ConfigError: unknown name or option, missing or invalid file (naming the key).
    """
    valid = isinstance(atoms, (int, float)) and not isinstance(atoms, bool)
    if not (valid and math.isfinite(atoms) and atoms > 0):
        raise ConfigError(f"load_phantom: atoms must be a positive number, got {atoms!r}")
    text = str(name_or_path)
    if text in PHANTOMS:
        factory = PHANTOMS[text]
        allowed = [p for p in inspect.signature(factory).parameters if p not in ("atoms", "seed")]
        kwargs = dict(options or {})
        for key in kwargs:
            if key not in allowed:
                raise _unknown(f"phantom {text}", key, allowed or ["(none)"])
        if "seed" in inspect.signature(factory).parameters:
            kwargs["seed"] = seed
        try:
            return factory(float(atoms), **kwargs)
        except (ValueError, TypeError, np.linalg.LinAlgError) as err:
            raise ConfigError(f"phantom {text}: invalid options {kwargs} ({err})") from None
    path = Path(text)
    if path.suffix.lower() == ".toml" or path.exists():
        if options:
            raise ConfigError(f"load_phantom: options apply to registry phantoms, not to the file {path}")
        if not path.is_file():
            raise ConfigError(f"phantom file {path} does not exist; check the path")
        from optics.tomlio import read_toml

        data = read_toml(path, "phantom file")
        return phantom_from_definition(data, atoms=float(atoms), source=str(path), name=path.stem)
    raise ConfigError(
        f"load_phantom: unknown phantom '{text}'; use one of {', '.join(PHANTOMS)} or a .toml phantom file"
    )


# --------------------------------------------------------------------------------------------
# Truth volumes
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def truth_volume(
    phantom: Phantom,
    box_min: Sequence[float],
    box_max: Sequence[float],
    voxel_size_mm: float,
    *,
    supersample: int = 2,
    dtype: torch.dtype = torch.float64,
    chunk_points: int = 1 << 21,
) -> Volume:
    """The phantom's voxel averages on a grid tiling the box.

    The grid has ``floor((max − min)/voxel)`` voxels per axis, centred in the box; each voxel
    value is the mean of ``supersample³`` samples at the centres of its sub-cells (the midpoint
    rule for the voxel average), so ``Σ values · voxel³`` is the atom number inside the grid.

    Args:
        phantom: the phantom.
        box_min: (3,) ``(x, y, z)`` lower corner, mm.
        box_max: (3,) upper corner, mm.
        voxel_size_mm: voxel edge, mm.
        supersample: samples per voxel edge (≥ 1).
        dtype: evaluation dtype (the volume is float32).
        chunk_points: points evaluated at once (bounds memory).

    Returns:
        A float32 Volume in atoms/mm³ (``relative`` for emission–absorption phantoms), with
        ``meta`` holding the phantom name, ``atoms_total`` and ``atoms_in_grid``.

    Raises:
        ConfigError: an empty box, a non-positive voxel size or ``supersample`` < 1.

    Not differentiable (evaluated under ``torch.no_grad``).
    """
    lo, hi = np.asarray(box_min, dtype=float).reshape(3), np.asarray(box_max, dtype=float).reshape(3)
    if not (voxel_size_mm > 0 and np.all(hi > lo) and supersample >= 1):
        raise ConfigError(
            f"truth_volume: need box_max > box_min, voxel_size_mm > 0 and supersample ≥ 1, got "
            f"{lo.tolist()}, {hi.tolist()}, {voxel_size_mm}, {supersample}"
        )
    n = np.maximum(np.floor((hi - lo) / voxel_size_mm + 1e-9).astype(int), 1)  # x, y, z
    origin = (lo + hi) / 2 - (n - 1) / 2 * voxel_size_mm
    sub = ((torch.arange(supersample, dtype=dtype) + 0.5) / supersample - 0.5) * voxel_size_mm
    offsets = torch.stack(torch.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3)  # (S, 3)
    axes = [torch.as_tensor(origin[i] + voxel_size_mm * np.arange(n[i]), dtype=dtype) for i in range(3)]
    out = np.zeros(tuple(n[::-1]), dtype=np.float64)
    slab = max(1, chunk_points // max(1, int(n[0] * n[1]) * len(offsets)))
    y, x = torch.meshgrid(axes[1], axes[0], indexing="ij")
    for k0 in range(0, int(n[2]), slab):
        z = axes[2][k0 : k0 + slab]
        pts = torch.stack(
            [x.expand(len(z), -1, -1), y.expand(len(z), -1, -1), z[:, None, None].expand(-1, *x.shape)], -1
        )  # (slab, Y, X, 3)
        vals = phantom.density(pts.unsqueeze(-2) + offsets)  # (slab, Y, X, S)
        out[k0 : k0 + len(z)] = vals.mean(-1).cpu().numpy()
    unit = "atoms/mm^3" if phantom.model == "emission" else "relative"
    meta = {
        "phantom": phantom.name,
        "atoms_total": float(phantom.total_atoms),
        "atoms_in_grid": float(out.sum() * voxel_size_mm**3),
        "supersample": int(supersample),
    }
    origin_mm = tuple(float(v) for v in origin)
    return Volume(out.astype(np.float32), origin_mm, (float(voxel_size_mm),) * 3, unit, meta)
