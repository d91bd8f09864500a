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

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from recon.errors import ConfigError, DataError
from recon.io.volume import Volume
from recon.simulation.primitives import Box, Donut, Fringes, Gaussian, Primitive, Sphere, as_vec3, tensor_like
from recon.simulation.voxelize import voxelize_mesh

__all__ = [
    "MODELS",
    "PHANTOMS",
    "Phantom",
    "PrimitivePhantom",
    "Vec3",
    "VolumePhantom",
    "box",
    "clouds",
    "doe",
    "donut",
    "fringes",
    "gaussian",
    "sphere",
    "spike",
]


MODELS = ("emission", "emission-absorption")


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
    """A phantom that interpolates a voxel :class:`~recon.io.volume.Volume` trilinearly.

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
            self._cache[key] = tensor_like(np.asarray(self.volume.data), like)[None, None]
        return self._cache[key]

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Density ``(...)`` at points ``(..., 3)`` (x, y, z mm), volume units × scale."""
        import torch.nn.functional as F

        vol = self.volume
        origin = tensor_like(vol.origin_mm, points)
        spacing = tensor_like(vol.voxel_size_mm, points)
        size = tensor_like(vol.shape[::-1], points)  # x, y, z
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
    params = {"sigma_mm": sigma_mm, "center_mm": as_vec3(center_mm)}
    if covariance_mm2 is not None:
        params = {"covariance_mm2": [as_vec3(r) for r in g.covariance_mm2], "center_mm": as_vec3(center_mm)}
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
        "direction": as_vec3(fr.direction),
        "center_mm": as_vec3(center_mm),
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
    spike_sigma_r_mm: float = 0.1, spike_sigma_z_mm: float = 0.4,
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
        "center_mm": as_vec3(c),
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
            {"center_mm": as_vec3(c), "sigma_mm": float(s), "share": float(w / shares.sum())}
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


    mesh_path = Path(__file__).resolve().parents[2] / "data" / "meshes" / "doe.stl"
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
