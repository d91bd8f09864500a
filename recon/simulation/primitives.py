"""The shapes phantoms are made of, each normalised exactly through its characteristic function.

A primitive maps points ``(..., 3)`` (``(x, y, z)`` in mm) to a density of unit mass over all
space; its characteristic function ``φ(q) = ∫ f(x) e^{i q·x} dx`` gives the exact normalisation
of fringe-modulated sums (:class:`Fringes`). Hard edges (``edge_mm = 0``) are not
differentiable at the surface; everything else is differentiable with respect to the points.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Box",
    "Donut",
    "Fringes",
    "Gaussian",
    "Primitive",
    "Sphere",
    "as_vec3",
    "fields_table",
    "tensor_like",
]


def fields_table(primitive) -> dict:
    """A primitive's dataclass fields as a phantom-file table: arrays as lists, numbers as numbers."""
    out = {}
    for f in dataclasses.fields(primitive):
        value = getattr(primitive, f.name)
        number = int if f.type == "int" else float
        out[f.name] = as_vec3(value) if isinstance(value, np.ndarray) else number(value)
    return out


def tensor_like(value, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``like``'s dtype and device."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def as_vec3(value) -> list[float]:
    """``value`` (scalar, sequence or array) as a flat list of floats."""
    return [float(v) for v in np.asarray(value, dtype=float).reshape(-1)]


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

    @property
    def precision_mm2(self) -> np.ndarray:
        """(3, 3) the inverse covariance, mm⁻² (the matrix :meth:`density` uses)."""
        return self._precision

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (...) of points (..., 3) mm; integral 1, mm⁻³."""
        d = points - tensor_like(self.center_mm, points)
        q = torch.einsum("...i,ij,...j->...", d, tensor_like(self._precision, points), d)
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

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """A box outside which the density is below e⁻³² ≈ 1e-14 of the peak (±8σ per axis)."""
        half = 8.0 * np.sqrt(np.diag(self.covariance_mm2))
        return self.center_mm - half, self.center_mm + half

    def table(self) -> dict:
        """The primitive as a phantom-file table."""
        cov = self.covariance_mm2
        if np.allclose(cov, np.diag(np.diag(cov)), rtol=0, atol=1e-15):
            return {"center_mm": as_vec3(self.center_mm), "sigma_mm": as_vec3(np.sqrt(np.diag(cov)))}
        return {"center_mm": as_vec3(self.center_mm), "covariance_mm2": [as_vec3(row) for row in cov]}


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
        r = torch.linalg.vector_norm(points - tensor_like(self.center_mm, points), dim=-1)
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
        """The primitive as a phantom-file table (its fields, in order)."""
        return fields_table(self)


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
        lo, hi = tensor_like(self.min_mm, points), tensor_like(self.max_mm, points)
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
        """The primitive as a phantom-file table (its fields, in order)."""
        return fields_table(self)


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

    @property
    def precision_mm2(self) -> np.ndarray:
        """(3, 3) the inverse covariance, mm⁻² (the matrix :meth:`density` uses)."""
        return self._precision

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density (...) of points (..., 3) mm; integral 1, mm⁻³."""
        d = points - tensor_like(self.center_mm, points)
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
        """The primitive as a phantom-file table (its fields, in order)."""
        return fields_table(self)


Primitive = Gaussian | Sphere | Box | Donut


@dataclass(frozen=True, eq=False)
class Fringes:
    """A sin² modulation ``sin²(θ(s))``, ``θ = k s + ½ κ s² − φ``, ``s = n·(x − o)``, ``k = π / period_mm``.

    ``period_mm`` is the period of the density pattern (distance between adjacent maxima) at the
    origin o; a chirp κ (``chirp_per_mm2``, rad/mm²) makes the local wave number ``k + κ s`` vary
    linearly along n, so the local period is ``π / (k + κ s)`` (κ = 0: plain fringes).
    The mean of the modulation under a unit-mass primitive f is exactly
    ``½ (1 − Re[e^{−2iψ} φ_f(2k n)])`` with ``ψ = φ + k n·o`` (κ = 0); for a Gaussian of covariance
    Σ centred at o this is ``½ (1 − e^{−2k² nᵀΣn} cos 2φ)``. With a chirp, only under a Gaussian:
    ``s ~ N(m, v)`` (m = n·(c − o), v = nᵀΣn), and ``E[e^{i(a s + b s²)}] = e^{i(am + bm²)}
    (1 − 2ibv)^{−½} exp(−(a + 2bm)² v / (2(1 − 2ibv)))`` with a = 2k, b = κ.

    Attributes:
        direction: (3,) unit wave-vector direction (default +y).
        period_mm: period of the density fringes at the origin, mm.
        phase_rad: φ, rad.
        origin_mm: (3,) point o where the phase is counted, mm.
        chirp_per_mm2: κ, the wave number's change per mm along n, rad/mm².
    """

    direction: np.ndarray
    period_mm: float = 0.2
    phase_rad: float = 0.0
    origin_mm: np.ndarray = (0.0, 0.0, 0.0)
    chirp_per_mm2: float = 0.0

    def __post_init__(self) -> None:
        n = np.asarray(self.direction, dtype=float).reshape(3)
        norm = float(np.linalg.norm(n))
        if not (norm > 0 and self.period_mm > 0 and math.isfinite(self.chirp_per_mm2)):
            raise ValueError("Fringes: direction must be non-zero, period_mm > 0 and chirp_per_mm2 finite")
        object.__setattr__(self, "direction", n / norm)
        object.__setattr__(self, "origin_mm", np.asarray(self.origin_mm, dtype=float).reshape(3))
        object.__setattr__(self, "chirp_per_mm2", float(self.chirp_per_mm2))

    @property
    def k(self) -> float:
        """Wave number k = π / period at the origin, rad/mm."""
        return math.pi / self.period_mm

    def modulation(self, points: torch.Tensor) -> torch.Tensor:
        """sin²(k s + ½ κ s² − φ), s = n·(x − o), of points (..., 3) mm, in [0, 1]."""
        s = ((points - tensor_like(self.origin_mm, points)) * tensor_like(self.direction, points)).sum(-1)
        if self.chirp_per_mm2 == 0.0:
            return torch.sin(self.k * s - self.phase_rad) ** 2
        return torch.sin((self.k + 0.5 * self.chirp_per_mm2 * s) * s - self.phase_rad) ** 2

    def mean_under(self, prim: Primitive) -> float:
        """``∫ f(x) sin²(…) dx`` for a unit-mass primitive f (a Gaussian where there is a chirp).

        Raises:
            ValueError: a chirp over a primitive other than a Gaussian (no closed form here).
        """
        if self.chirp_per_mm2 == 0.0:
            psi = self.phase_rad + self.k * float(self.direction @ self.origin_mm)
            phi = prim.characteristic(2 * self.k * self.direction)
            return 0.5 * (1.0 - (np.exp(-2j * psi) * phi).real)
        if not isinstance(prim, Gaussian):
            raise ValueError(f"Fringes: a chirp needs Gaussian components, got a {prim.kind}")
        m = float(self.direction @ (prim.center_mm - self.origin_mm))
        v = float(self.direction @ prim.covariance_mm2 @ self.direction)
        a, b = 2 * self.k, self.chirp_per_mm2
        d = 1 - 2j * b * v
        mean = np.exp(1j * (a * m + b * m * m) - (a + 2 * b * m) ** 2 * v / (2 * d)) / np.sqrt(d)
        return 0.5 * (1.0 - (np.exp(-2j * self.phase_rad) * mean).real)

    def table(self) -> dict:
        """The modulation as a phantom-file table."""
        return {
            "period_mm": float(self.period_mm),
            "phase_rad": float(self.phase_rad),
            "direction": as_vec3(self.direction),
            "origin_mm": as_vec3(self.origin_mm),
            **({"chirp_per_mm2": self.chirp_per_mm2} if self.chirp_per_mm2 else {}),
        }
