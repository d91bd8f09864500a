"""Analytic and voxel phantoms: densities with known truth for simulation and tests.

Densities are functions of points ``(..., 3)`` (x, y, z in mm) returning atoms/mm³, normalised
over all space to the requested atom number (REFERENCE §1 shapes, from gradoptics). Only the
part inside the reconstruction box is observed; ``truth.tif`` holds that part, and fits are
compared with it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.errors import ConfigError
from recon.volume import Volume, interpolate

__all__ = ["PHANTOMS", "Phantom", "load_phantom", "truth_volume"]


@dataclass(frozen=True)
class Phantom:
    """A density with known truth.

    Attributes:
        name: registry name or file name.
        density: maps (..., 3) points (mm) to (...) densities.
        params: the parameters, JSON-serialisable (written into simulated runs).
        atoms: atoms over all space (the normalisation).
        model: ``emission`` (atom clouds) or ``emission-absorption`` (opaque objects).
    """

    name: str
    density: Callable[[torch.Tensor], torch.Tensor]
    params: dict = field(default_factory=dict)
    atoms: float = 1.0
    model: str = "emission"


def _gauss(points, center, sigma):
    """Normalised anisotropic Gaussian (integral 1) of points (..., 3)."""
    c = torch.as_tensor(center, dtype=points.dtype, device=points.device)
    s = torch.as_tensor(sigma, dtype=points.dtype, device=points.device).expand(3)
    q = (((points - c) / s) ** 2).sum(-1)
    return torch.exp(-0.5 * q) / ((2 * math.pi) ** 1.5 * s.prod())


def gaussian(atoms: float, *, sigma=0.5, center=(0.0, 0.0, 0.0)) -> Phantom:
    """Gaussian cloud (REFERENCE §1: σ = 0.5 mm)."""
    return Phantom(
        "gaussian",
        lambda p: atoms * _gauss(p, center, sigma),
        {"sigma_mm": sigma, "center_mm": list(center)},
        atoms,
    )


def fringes(atoms: float, *, sigma=0.5, period_mm=0.2, phase=0.0, center=(0.0, 0.0, 0.0)) -> Phantom:
    """Gaussian × sin²(k·y − φ): fringes along y with ``period_mm`` between maxima.

    sin² has period π/k, so k = π/period; a 200 µm period has 100 µm bright and dark bands.
    Normalisation: ∫ G sin²(k y − φ) = ½ (1 − exp(−2 k² σ_y²) cos 2φ).
    """
    k = math.pi / period_mm
    sy = sigma if np.isscalar(sigma) else sigma[1]
    norm = 0.5 * (1 - math.exp(-2 * k * k * sy * sy) * math.cos(2 * phase))

    def density(p):
        y = p[..., 1] - center[1]
        return atoms * _gauss(p, center, sigma) * torch.sin(k * y - phase) ** 2 / norm

    return Phantom(
        "fringes",
        density,
        {
            "sigma_mm": sigma,
            "period_mm": period_mm,
            "phase_rad": phase,
            "center_mm": list(center),
            "fringe_axis": "y",
        },
        atoms,
    )


def donut(atoms: float, *, sigma_r=0.5, hole_mm=0.2, sigma_z=0.2, center=(0.0, 0.0, 0.0)) -> Phantom:
    """Ring cloud: (1 − exp(−r²/2h²)) · exp(−r²/2σr²) · exp(−z²/2σz²), axis along z.

    Normalisation: ∫ over the plane = 2π σr⁴/(σr² + h²), times √(2π) σz.
    """
    norm = 2 * math.pi * sigma_r**4 / (sigma_r**2 + hole_mm**2) * math.sqrt(2 * math.pi) * sigma_z

    def density(p):
        d = p - torch.as_tensor(center, dtype=p.dtype, device=p.device)
        r2 = d[..., 0] ** 2 + d[..., 1] ** 2
        ring = (1 - torch.exp(-r2 / (2 * hole_mm**2))) * torch.exp(-r2 / (2 * sigma_r**2))
        return atoms * ring * torch.exp(-(d[..., 2] ** 2) / (2 * sigma_z**2)) / norm

    return Phantom(
        "donut",
        density,
        {
            "sigma_r_mm": sigma_r,
            "hole_mm": hole_mm,
            "sigma_z_mm": sigma_z,
            "center_mm": list(center),
            "axis": "z",
        },
        atoms,
    )


def spike(atoms: float, *, weight=0.7, spike_sigma_z=0.4, offset_mm=0.5) -> Phantom:
    """Bulk (σr 0.5, σz 0.2 mm, weight 0.7) plus a thin spike (σr 0.1 mm) along z.

    gradoptics uses a spike of σz 1 mm offset by 1 mm; in the 2.4 mm box that would lie mostly
    outside, so the spike is shortened to σz 0.4 mm and offset 0.5 mm (our choice).
    """

    def density(p):
        bulk = _gauss(p, (0.0, 0.0, 0.0), (0.5, 0.5, 0.2))
        thin = _gauss(p, (0.0, 0.0, offset_mm), (0.1, 0.1, spike_sigma_z))
        return atoms * (weight * bulk + (1 - weight) * thin)

    return Phantom(
        "spike", density, {"weight": weight, "spike_sigma_z_mm": spike_sigma_z, "offset_mm": offset_mm}, atoms
    )


def clouds(atoms: float) -> Phantom:
    """Three small clouds (σ 0.15–0.25 mm) at different depths: separation and depth checks."""
    spec = [((-0.5, -0.3, 0.2), 0.2, 0.4), ((0.45, 0.1, -0.3), 0.15, 0.3), ((0.0, 0.5, 0.4), 0.25, 0.3)]

    def density(p):
        return atoms * sum(w * _gauss(p, c, s) for c, s, w in spec)

    return Phantom(
        "clouds",
        density,
        {"clouds": [{"center_mm": list(c), "sigma_mm": s, "weight": w} for c, s, w in spec]},
        atoms,
    )


def sphere(atoms: float, *, radius=0.8, edge_mm=0.02, center=(0.0, 0.0, 0.0)) -> Phantom:
    """Uniform sphere with a smooth (logistic) edge of width ``edge_mm``.

    Normalisation: ∫ logistic((R − r)/w) dV = (4π/3) R³ (1 + π² w²/R²) (Sommerfeld expansion,
    exact to the exponentially small terms).
    """
    norm = 4 / 3 * math.pi * radius**3 * (1 + (math.pi * edge_mm / radius) ** 2)

    def density(p):
        r = (p - torch.as_tensor(center, dtype=p.dtype, device=p.device)).norm(dim=-1)
        return atoms * torch.sigmoid((radius - r) / edge_mm) / norm

    return Phantom(
        "sphere", density, {"radius_mm": radius, "edge_mm": edge_mm, "center_mm": list(center)}, atoms
    )


def from_volume(volume: Volume, *, name: str, scale: float = 1.0, model: str = "emission") -> Phantom:
    """A phantom that interpolates a voxel volume (trilinear, zero outside)."""
    total = float(volume.data.sum() * np.prod(volume.voxel_size_mm))
    return Phantom(
        name, lambda p: scale * interpolate(volume, p), {"volume": name, "scale": scale}, total * scale, model
    )


def doe(atoms: float) -> Phantom:
    """The opaque "DOE" test object (data/meshes/doe.stl), voxelised at 20 µm, inside = 20 /mm.

    Rendered with ``emission-absorption`` (attenuation 1 /mm per unit density): opaque within
    ~50 µm of its surface. ``atoms`` is ignored (relative units).
    """
    import pyvista as pv

    from recon.mesh import voxelize_mesh

    mesh_path = Path(__file__).resolve().parents[1] / "data" / "meshes" / "doe.stl"
    mesh = pv.read(str(mesh_path))
    vox = 0.02
    shape = (30, 90, 126)  # z, y, x: 0.6 × 1.8 × 2.52 mm around the 0.4 × 1.6 × 2.3 mm word
    origin = tuple(-(n - 1) / 2 * vox for n in shape[::-1])
    volume = voxelize_mesh(mesh, shape, origin, (vox,) * 3, supersample=2)
    return from_volume(volume, name="doe", scale=20.0, model="emission-absorption")


PHANTOMS: dict[str, Callable[[float], Phantom]] = {
    "gaussian": gaussian,
    "fringes": fringes,
    "donut": donut,
    "spike": spike,
    "clouds": clouds,
    "sphere": sphere,
    "doe": doe,
}

_PRIMITIVE_KEYS = {
    "gaussian": {"center_mm", "sigma_mm", "weight"},
    "sphere": {"center_mm", "radius_mm", "edge_mm", "weight"},
    "box": {"min_mm", "max_mm", "weight"},
}


def _vec3(value, key, source) -> list[float]:
    if np.isscalar(value) and not isinstance(value, (str, bool)):
        return [float(value)] * 3
    if isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    raise ConfigError(f"{source}: key '{key}' must be a number or a list of 3 numbers, got {value!r}")


def _from_toml(path: Path, atoms: float) -> Phantom:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    unknown = set(data) - set(_PRIMITIVE_KEYS) - {"fringes", "name"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown key '{sorted(unknown)[0]}'; allowed: gaussian, sphere, box, fringes, name"
        )
    parts = []
    for kind, keys in _PRIMITIVE_KEYS.items():
        for i, item in enumerate(data.get(kind, [])):
            where = f"{kind}[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: '{kind}' must be an array of tables ([[{kind}]])")
            bad = set(item) - keys
            if bad:
                raise ConfigError(
                    f"{path}: key '{where}.{sorted(bad)[0]}' is not known; allowed: {', '.join(sorted(keys))}"
                )
            weight = float(item.get("weight", 1.0))
            if weight <= 0:
                raise ConfigError(f"{path}: key '{where}.weight' must be > 0, got {weight}")
            if kind == "gaussian":
                c = _vec3(item.get("center_mm", 0.0), f"{where}.center_mm", path)
                s = _vec3(item.get("sigma_mm", 0.5), f"{where}.sigma_mm", path)
                if min(s) <= 0:
                    raise ConfigError(f"{path}: key '{where}.sigma_mm' must be > 0, got {s}")
                parts.append((weight, lambda p, c=c, s=s: _gauss(p, c, s)))
            elif kind == "sphere":
                c = _vec3(item.get("center_mm", 0.0), f"{where}.center_mm", path)
                r = float(item.get("radius_mm", 0.5))
                w = float(item.get("edge_mm", 0.01))
                if r <= 0 or w <= 0:
                    raise ConfigError(f"{path}: keys '{where}.radius_mm' and 'edge_mm' must be > 0")
                parts.append((weight, lambda p, s=sphere(1.0, radius=r, edge_mm=w, center=c): s.density(p)))
            else:
                lo = _vec3(item.get("min_mm"), f"{where}.min_mm", path)
                hi = _vec3(item.get("max_mm"), f"{where}.max_mm", path)
                if any(h <= m for m, h in zip(lo, hi, strict=True)):
                    raise ConfigError(f"{path}: key '{where}.max_mm' must exceed min_mm on every axis")
                vol = float(np.prod(np.subtract(hi, lo)))

                def box_density(p, lo=lo, hi=hi, vol=vol):
                    inside = (p >= torch.as_tensor(lo, dtype=p.dtype)) & (
                        p <= torch.as_tensor(hi, dtype=p.dtype)
                    )
                    return inside.all(-1).to(p.dtype) / vol

                parts.append((weight, box_density))
    if not parts:
        raise ConfigError(f"{path}: no primitives; add [[gaussian]], [[sphere]] or [[box]] tables")
    total_weight = sum(w for w, _ in parts)
    fr = data.get("fringes")
    if fr is not None:
        bad = set(fr) - {"period_mm", "phase_rad", "axis"}
        if bad:
            raise ConfigError(
                f"{path}: key 'fringes.{sorted(bad)[0]}' is not known; allowed: axis, period_mm, phase_rad"
            )
        period = float(fr.get("period_mm", 0.2))
        axis = {"x": 0, "y": 1, "z": 2}.get(fr.get("axis", "y"))
        if period <= 0 or axis is None:
            raise ConfigError(f"{path}: fringes need period_mm > 0 and axis x, y or z")
        k, phase = math.pi / period, float(fr.get("phase_rad", 0.0))
    else:
        k = None

    def density(p):
        rho = sum(w * f(p) for w, f in parts) / total_weight
        if k is not None:
            # 2 sin² averages to 1 over an envelope much wider than the period: the total is kept
            # up to a relative error exp(−2k²σ²) for a Gaussian envelope of width σ.
            rho = rho * 2 * torch.sin(k * p[..., axis] - phase) ** 2
        return atoms * rho

    return Phantom(data.get("name", path.stem), density, {"file": str(path), "definition": data}, atoms)


def load_phantom(name_or_path: str | os.PathLike, *, atoms: float) -> Phantom:
    """A phantom by registry name or from a TOML file of primitives.

    Names: ``gaussian``, ``fringes``, ``donut``, ``spike``, ``clouds``, ``sphere``, ``doe``.

    Raises:
        ConfigError: unknown name, missing file, or an invalid file (naming the key).
    """
    if atoms <= 0 or not math.isfinite(atoms):
        raise ConfigError(f"phantom: atoms must be a positive number, got {atoms}")
    text = str(name_or_path)
    if text in PHANTOMS:
        return PHANTOMS[text](atoms)
    path = Path(text)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"phantom file {path} does not exist")
        return _from_toml(path, atoms)
    raise ConfigError(f"phantom: unknown phantom '{text}'; use one of {', '.join(PHANTOMS)} or a .toml file")


@torch.no_grad()
def truth_volume(phantom: Phantom, box_min, box_max, voxel_size_mm: float, *, supersample: int = 2) -> Volume:
    """The phantom's voxel averages on a grid tiling the box (``supersample``³ points a voxel)."""
    lo, hi = np.asarray(box_min, float), np.asarray(box_max, float)
    n = np.maximum(np.floor((hi - lo) / voxel_size_mm + 1e-9).astype(int), 1)  # x, y, z
    origin = (lo + hi) / 2 - (n - 1) / 2 * voxel_size_mm
    sub = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    offsets = torch.stack(torch.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3) * voxel_size_mm
    out = np.zeros(tuple(n[::-1]), dtype=np.float64)
    xs = [torch.as_tensor(origin[i] + voxel_size_mm * np.arange(n[i])) for i in range(3)]
    for k in range(n[2]):
        y, x = torch.meshgrid(xs[1], xs[0], indexing="ij")
        pts = torch.stack([x, y, torch.full_like(x, float(xs[2][k]))], -1)  # (Y, X, 3)
        vals = phantom.density((pts.unsqueeze(-2) + offsets).reshape(-1, 3)).reshape(*pts.shape[:2], -1)
        out[k] = vals.mean(-1).numpy()
    unit = "atoms/mm^3" if phantom.model == "emission" else "relative"
    return Volume(
        out.astype(np.float32),
        tuple(float(v) for v in origin),
        (voxel_size_mm,) * 3,
        unit,
        {"phantom": phantom.name},
    )
