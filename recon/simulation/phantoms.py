"""Phantoms: densities with known truth, for simulated runs and tests.

A phantom maps points ``(..., 3)`` — ``(x, y, z)`` in mm, world frame — to densities ``(...)``
in atoms/mm³, normalised **over all space** to the requested atom number ``atoms``: exactly and
analytically, through the characteristic function of each primitive (the Fourier transform
``φ(q) = ∫ f(x) e^{i q·x} dx`` of a unit-mass primitive ``f``), which also gives the exact
normalisation of fringe-modulated sums. Only the part inside the reconstruction box is observed;
:func:`truth_volume` samples that part, and ``Volume.meta["atoms_in_grid"]`` says how many atoms
it holds.

Named phantoms (:data:`recon.simulation.named.PHANTOMS`; cloud shapes from REFERENCE §1, after
magis-slac/gradoptics):

``gaussian``  σ 0.5 mm (or any covariance).
``fringes``   Gaussian σ 0.5 mm × sin²(k·n·(x − c) − φ), wave vector along +y by default.
              *Period* is the distance between adjacent maxima of the density, i.e. the period
              of sin² (π/k, half the period of sin): 200 µm → k = π/0.2 mm⁻¹, bright and dark
              bands 100 µm wide.
``donut``     transverse σ 0.5 mm with a hole of Gaussian width 0.2 mm, longitudinal σ 0.2 mm.
``spike``     bulk (σr 0.5, σz 0.2 mm, 70 %) plus a thin spike (σr 0.1 mm, 30 %) along +z,
              longitudinal size and offset scaled to fit the ±1.2 mm box (see :func:`spike`).
``clouds``    several small Gaussian clouds, placed by the seed.
``interferometer`` an elongated envelope × tilted fringes (180 µm) plus 40 clumps of 12–35 µm:
              no empty Fourier shell out to 1/(40 µm); the sample run ``data/run042``.
``sphere``    uniform sphere, radius 0.8 mm, smooth (logistic) edge 20 µm.
``box``       uniform box ±0.5 mm, smooth edge 20 µm.
``doe``       the opaque "DOE" test object (``data/meshes/doe.stl``), voxelised (needs pyvista).

Phantom files (TOML, loaded by :func:`recon.simulation.phantom_file.load_phantom`; ``data/phantoms/*.toml``)::

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
    chirp_per_mm2 = 0.0                  # κ: the wave number k + κ s along the direction; default 0

Hard edges (``edge_mm = 0``) are not differentiable at the surface; everything else is
differentiable with respect to the points.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from recon.errors import ConfigError
from recon.io.volume import Volume
from recon.simulation.phantom_kernels import gaussian_mixture_integrals
from recon.simulation.primitives import Fringes, Gaussian, Primitive, tensor_like
from recon.threads import numba_threads

__all__ = ["MODELS", "Phantom", "PrimitivePhantom", "ShiftedPhantom", "Vec3", "VolumePhantom"]


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
        try:
            means = np.array([1.0 if fringes is None else fringes.mean_under(p) for _, p in components])
        except ValueError as err:
            raise ConfigError(f"phantom {name}: {err}; drop the chirp or use Gaussians only") from None
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
        """Density ``(...)`` at points ``(..., 3)`` (x, y, z mm), atoms/mm³.

        A primitive with a ``support()`` box (a Gaussian's ±8σ, where it is below 1e-14 of its
        peak) that does not hold all the points is evaluated only at the points inside it: a
        cloud of small clumps costs what its clumps cover, not clumps × points.
        """
        flat = points.reshape(-1, 3)
        rho = torch.zeros(flat.shape[0], dtype=points.dtype, device=points.device)
        by_x = xs = sorted_points = None  # the points sorted along x, made when a primitive needs culling
        span = (flat.amin(0), flat.amax(0)) if len(flat) else None
        for w, p in zip(self.weights, self.primitives, strict=True):
            if w <= 0:
                continue
            box = p.support() if hasattr(p, "support") and span is not None else None
            if box is not None:
                low, high = tensor_like(box[0], flat), tensor_like(box[1], flat)
            if box is None or bool((low <= span[0]).all() & (high >= span[1]).all()):
                rho = rho + w * p.density(flat)
                continue
            if by_x is None:
                xs, by_x = torch.sort(flat[:, 0].detach().contiguous())
                sorted_points = flat[by_x]  # contiguous slices along x: no scattered reads per primitive
            first = int(torch.searchsorted(xs, low[0]))
            last = int(torch.searchsorted(xs, high[0], right=True))
            near = sorted_points[first:last]
            keep = ((near[:, 1:] >= low[1:]) & (near[:, 1:] <= high[1:])).all(-1)
            if bool(keep.any()):
                rho = rho.index_add(0, by_x[first:last][keep], w * p.density(near[keep]))
        if self.fringes is not None:
            rho = rho * self.fringes.modulation(flat)
        return (self._scale * rho).reshape(points.shape[:-1])

    @functools.cached_property
    def _mixture(self) -> tuple[np.ndarray, ...]:
        """The positive-weight Gaussians (float64): centres, precisions, (weight, norm), support corners."""
        used = [(w, p) for w, p in zip(self.weights, self.primitives, strict=True) if w > 0]
        supports = [p.support() for _, p in used]
        return (
            np.array([p.center_mm for _, p in used]).reshape(-1, 3),
            np.array([p.precision_mm2 for _, p in used]).reshape(-1, 3, 3),
            np.array([(w, p.peak()) for w, p in used]).reshape(-1, 2),
            np.array([lo for lo, _ in supports]).reshape(-1, 3),
            np.array([hi for _, hi in supports]).reshape(-1, 3),
        )

    def integrate_strata(self, rays, counts: torch.Tensor, delta: torch.Tensor, u: torch.Tensor,
                         offset_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor | None:
        """``Σ ρ δ`` over each segment's jittered strata, compiled; None where torch must do it.

        :func:`recon.model.render.line_integrals` calls it with the strata it drew: ``counts``
        (R,) samples per segment, ``delta`` (R,) their length, ``u`` (Σ counts,) the jitter. The
        result is the torch path's bit for bit but where a small clump's exponential (numba's,
        not torch's) differs in its last bit (:mod:`recon.simulation.phantom_kernels`). None
        unless every primitive is a Gaussian and the rays are float32 or float64 on the CPU.
        ``offset_mm``: evaluate ``ρ(x − offset)`` (:class:`ShiftedPhantom`).
        """
        dtype = rays.origins.dtype
        if (
            not all(isinstance(p, Gaussian) for p in self.primitives)
            or dtype not in (torch.float32, torch.float64)
            or rays.origins.device.type != "cpu"
        ):
            return None
        real = np.float32 if dtype == torch.float32 else np.float64
        mixture = [a.astype(real) for a in self._mixture]  # as tensor_like rounds them for torch
        fr = self.fringes
        f_origin = np.zeros(3, real) if fr is None else fr.origin_mm.astype(real)
        f_dir = np.array([0.0, 0.0, 1.0], real) if fr is None else fr.direction.astype(real)
        origins, directions, t_near, delta, u = (np.ascontiguousarray(t.numpy()) for t in
                                                 (rays.origins, rays.directions, rays.t_near, delta, u))
        numba_threads()
        out = gaussian_mixture_integrals(
            origins, directions, t_near, counts.numpy(), delta, u, np.asarray(offset_mm, dtype=real),
            *mixture, f_origin, f_dir, 0.0 if fr is None else fr.k,
            0.0 if fr is None else float(fr.phase_rad), fr is not None, float(self._scale),
            0.0 if fr is None else fr.chirp_per_mm2,
        )
        return torch.from_numpy(out)

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


class ShiftedPhantom(Phantom):
    """Another phantom moved by ``offset_mm``: ``ρ(x) = base(x − offset)``, the same atoms and model.

    A campaign's shots (:mod:`recon.simulation.campaign`) are one cloud drifting from shot to
    shot. ``params`` and :meth:`to_dict` record the base's and the offset; a phantom file cannot
    hold the offset, so :attr:`definition` is None.
    """

    def __init__(self, base: Phantom, offset_mm: Sequence[float]) -> None:
        offset = [float(v) for v in offset_mm]
        if len(offset) != 3 or not all(math.isfinite(v) for v in offset):
            raise ConfigError(f"phantom {base.name}: an offset must be 3 finite numbers (x, y, z mm), "
                              f"got {list(offset_mm)}")
        self.base, self.offset_mm = base, tuple(offset)
        self.name, self.total_atoms, self.model = base.name, base.total_atoms, base.model
        self.bounds_mm = tuple(tuple(b + o for b, o in zip(bound, offset, strict=True))
                               for bound in base.bounds_mm)
        self.params = {"base": base.params, "offset_mm": list(offset)}

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """The base's density at ``points − offset``."""
        return self.base.density(points - tensor_like(self.offset_mm, points))

    def integrate_strata(self, rays, counts: torch.Tensor, delta: torch.Tensor, u: torch.Tensor,
                         offset_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor | None:
        """The base's compiled sums at ``x − offset`` (None where the base has none)."""
        integrate = getattr(self.base, "integrate_strata", None)
        if integrate is None:
            return None
        total = [a + b for a, b in zip(self.offset_mm, offset_mm, strict=True)]
        return integrate(rays, counts, delta, u, offset_mm=total)
