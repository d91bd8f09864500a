"""Density fields: differentiable maps from points in mm to a non-negative density.

Every field is a :class:`Field`: ``field(points_mm)`` maps ``(..., 3)`` points ``(x, y, z)`` in
millimetres to ``(...)`` densities ≥ 0 (atoms/mm³ when the run gives photons per atom, else
relative units). A field lives on an axis-aligned box; the box is normalised to ``[0, 1]^3``
in one place (:meth:`Field.forward`), and points outside the box (or NaN) get density 0
through a mask, never a NaN.

Kinds (:class:`FieldConfig` ``kind``):

- ``"hashgrid"`` (:class:`HashGridField`): multiresolution hash encoding
  (:mod:`recon.encoding`, tcnn or torch backend) followed by a small ReLU MLP;
- ``"voxel"`` (:class:`VoxelField`): a dense grid of voxel values, trilinearly interpolated —
  the classical baseline;
- ``"siren"`` (:class:`SirenField`): a sine-activated MLP (Sitzmann et al., NeurIPS 2020,
  arXiv:2006.09661), the network of the public SLAC pipeline (3 × 256, ω₀ = 30).

Density activation: ``density = density_scale * act(raw)``. ``act`` is ``softplus`` by default:
it never overflows, keeps a gradient everywhere, and approaches 0 smoothly so empty space is
representable; ``"exp"`` (truncated exponential, as in instant-ngp: ``exp(min(raw, 15))`` with
that same derivative) gives multiplicative updates over a large dynamic range at the risk of
sharper steps. ``density_scale`` is ``FieldConfig.init_density``, and every field starts at
``act(raw) ≈ 1``, i.e. a density ≈ ``init_density`` everywhere in the box: the fit can start at
the data's mean density (total atoms / box volume) and the optimiser works on O(1) numbers.

Voxel grids follow the project convention: arrays ``(Z, Y, X)``; voxel ``(k, j, i)`` has its
centre at ``origin_mm + (i, j, k) * voxel_size_mm``; a grid of ``n`` voxels along an axis tiles
the box exactly, so ``voxel_size = extent / n`` and ``origin = box_min + voxel_size / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recon.encoding import BACKENDS, HashGridConfig, make_encoding
from recon.errors import ConfigError, ShapeError
from recon.volume import Volume, grid_points

__all__ = [
    "ACTIVATIONS",
    "FIELD_KINDS",
    "Field",
    "FieldConfig",
    "HashGridField",
    "SirenField",
    "VoxelField",
    "box_grid",
    "make_field",
]

FIELD_KINDS = ("hashgrid", "voxel", "siren")
ACTIVATIONS = ("softplus", "exp")
_EXP_MAX = 15.0  # truncated exponential: exp(min(raw, 15)), instant-ngp's bound
_PROBE_POINTS = 4096  # points used to centre the initial output


@dataclass(frozen=True)
class FieldConfig:
    """Which field, and its sizes. Defaults suit a ~1 mm cloud in a 2.4 mm box.

    Attributes:
        kind: ``"hashgrid"``, ``"voxel"`` or ``"siren"``.
        encoding: hash grid of a ``"hashgrid"`` field (see :class:`HashGridConfig`).
        hidden_layers: hidden ReLU layers of the hash-grid MLP (instant-ngp's density network
            has one; each more costs ~20 % throughput on CPU).
        hidden_width: width of those layers.
        voxel_resolution: voxels per axis of a ``"voxel"`` field, one int (cube) or
            ``(nx, ny, nz)``; 128 gives 19 µm voxels in a 2.4 mm box, about one object-space
            pixel (17.5 µm).
        siren_hidden_layers: sine layers of a ``"siren"`` field (all ``siren_width`` wide).
        siren_width: their width.
        siren_omega0: ω₀, the frequency factor of every sine layer.
        activation: ``"softplus"`` or ``"exp"`` (truncated exponential).
        init_density: ``density_scale``, the density every field starts at (same unit as the
            density, e.g. atoms/mm³; > 0).
    """

    kind: str = "hashgrid"
    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_layers: int = 1
    hidden_width: int = 64
    voxel_resolution: int | tuple[int, int, int] = 128
    siren_hidden_layers: int = 3
    siren_width: int = 256
    siren_omega0: float = 30.0
    activation: str = "softplus"
    init_density: float = 1.0

    def __post_init__(self) -> None:
        where = "FieldConfig"
        if self.kind not in FIELD_KINDS:
            raise ConfigError(f"{where}: kind must be one of {FIELD_KINDS}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"{where}: activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if not isinstance(self.encoding, HashGridConfig):
            raise ConfigError(f"{where}: encoding must be a HashGridConfig, got {self.encoding!r}")
        if not (math.isfinite(self.init_density) and self.init_density > 0):
            raise ConfigError(f"{where}: init_density must be > 0, got {self.init_density}")
        if self.hidden_layers < 0 or self.hidden_width < 1:
            raise ConfigError(
                f"{where}: need hidden_layers ≥ 0 and hidden_width ≥ 1, got "
                f"{self.hidden_layers} and {self.hidden_width}"
            )
        if self.siren_hidden_layers < 1 or self.siren_width < 1 or not self.siren_omega0 > 0:
            raise ConfigError(
                f"{where}: need siren_hidden_layers ≥ 1, siren_width ≥ 1 and siren_omega0 > 0, "
                f"got {self.siren_hidden_layers}, {self.siren_width}, {self.siren_omega0}"
            )
        _voxel_shape(self.voxel_resolution)  # validates

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        data = asdict(self)
        if isinstance(self.voxel_resolution, tuple):
            data["voxel_resolution"] = list(self.voxel_resolution)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FieldConfig:
        """Build from a dict (e.g. ``config.json``); unknown keys are a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"FieldConfig: unknown keys {unknown}; expected some of {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("encoding"), dict):
            data["encoding"] = HashGridConfig.from_dict(data["encoding"])
        if isinstance(data.get("voxel_resolution"), list):
            data["voxel_resolution"] = tuple(data["voxel_resolution"])
        return cls(**data)


def _voxel_shape(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    """Voxels per axis ``(nx, ny, nz)`` -> array shape ``(Z, Y, X)``."""
    if isinstance(resolution, int | np.integer):
        resolution = (int(resolution),) * 3
    resolution = tuple(resolution)
    if len(resolution) != 3 or not all(isinstance(n, int | np.integer) and n >= 1
                                       for n in resolution):
        raise ConfigError(
            f"FieldConfig: voxel_resolution must be a positive int or (nx, ny, nz), "
            f"got {resolution!r}"
        )
    nx, ny, nz = (int(n) for n in resolution)
    return nz, ny, nx


def _check_box(box_min_mm, box_max_mm) -> tuple[tuple[float, ...], tuple[float, ...]]:
    lo = tuple(float(v) for v in box_min_mm)
    hi = tuple(float(v) for v in box_max_mm)
    if len(lo) != 3 or len(hi) != 3:
        raise ShapeError(f"Field: box corners must have 3 entries (x, y, z), got {lo} and {hi}")
    if not all(math.isfinite(a) and math.isfinite(b) and b > a for a, b in zip(lo, hi, strict=True)):
        raise ConfigError(f"Field: need box_min_mm < box_max_mm on every axis, got {lo} and {hi}")
    return lo, hi


def box_grid(
    box_min_mm: Sequence[float],
    box_max_mm: Sequence[float],
    shape: int | Sequence[int] | None = None,
    *,
    voxel_size_mm: float | Sequence[float] | None = None,
) -> tuple[tuple[int, int, int], tuple[float, float, float], tuple[float, float, float]]:
    """A grid of voxels that tiles a box exactly.

    Args:
        box_min_mm: (3,) lower corner ``(x, y, z)``, mm.
        box_max_mm: (3,) upper corner, mm.
        shape: ``(Z, Y, X)`` voxel counts, or one int for all axes.
        voxel_size_mm: instead of ``shape``: wanted voxel size, one value or ``(dx, dy, dz)``;
            each axis gets ``n = max(1, round(extent / size))`` voxels and the size is then
            adjusted to ``extent / n`` so the voxels tile the box.

    Returns:
        ``(shape (Z, Y, X), origin_mm (x, y, z), voxel_size_mm (dx, dy, dz))`` with the centre of
        voxel ``(k, j, i)`` at ``origin_mm + (i, j, k) * voxel_size_mm`` and
        ``origin_mm = box_min_mm + voxel_size_mm / 2``.
    """
    lo, hi = _check_box(box_min_mm, box_max_mm)
    extent = [b - a for a, b in zip(lo, hi, strict=True)]
    if (shape is None) == (voxel_size_mm is None):
        raise ConfigError("box_grid: give exactly one of shape and voxel_size_mm")
    if shape is not None:
        zyx = (int(shape),) * 3 if isinstance(shape, int | np.integer) else tuple(int(n) for n in shape)
        if len(zyx) != 3 or min(zyx) < 1:
            raise ShapeError(f"box_grid: shape must be (Z, Y, X) of positive ints, got {shape}")
        counts = zyx[::-1]  # (nx, ny, nz)
    else:
        sizes = (voxel_size_mm,) * 3 if np.ndim(voxel_size_mm) == 0 else tuple(voxel_size_mm)
        if len(sizes) != 3 or not all(float(s) > 0 for s in sizes):
            raise ConfigError(f"box_grid: voxel_size_mm must be > 0, got {voxel_size_mm}")
        counts = tuple(max(1, round(e / float(s))) for e, s in zip(extent, sizes, strict=True))
    spacing = tuple(e / n for e, n in zip(extent, counts, strict=True))
    origin = tuple(a + s / 2 for a, s in zip(lo, spacing, strict=True))
    return (counts[2], counts[1], counts[0]), origin, spacing


class _TruncExp(torch.autograd.Function):
    """``exp(min(x, 15))`` whose derivative is also ``exp(min(x, 15))`` (never zero)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = torch.exp(x.clamp(max=_EXP_MAX))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return grad * out


def _activate(raw: torch.Tensor, activation: str) -> torch.Tensor:
    return F.softplus(raw) if activation == "softplus" else _TruncExp.apply(raw)


def _raw_for_unit_density(activation: str) -> float:
    """``act⁻¹(1)``: the raw output at which ``act(raw) = 1``."""
    return math.log(math.e - 1.0) if activation == "softplus" else 0.0


def _inverse_activation(values: torch.Tensor, activation: str) -> torch.Tensor:
    """``act⁻¹``, for values > 0 (callers floor them)."""
    if activation == "softplus":  # log(expm1(v)), stable for large v
        return torch.where(values > 20, values, torch.log(torch.expm1(values.clamp(max=20))))
    return torch.log(values)


def _generator(seed: int, stream: int) -> torch.Generator:
    """An explicit CPU generator per (seed, purpose); parameters are drawn on the CPU."""
    return torch.Generator(device="cpu").manual_seed(int(seed) * 1009 + stream)


def _init_linear(layer: nn.Linear, gen: torch.Generator, weight_bound: float,
                 bias_bound: float) -> None:
    with torch.no_grad():
        layer.weight.uniform_(-weight_bound, weight_bound, generator=gen)
        layer.bias.uniform_(-bias_bound, bias_bound, generator=gen)


class Field(nn.Module):
    """A non-negative density on an axis-aligned box; the base of every field.

    Subclasses implement :meth:`raw`, the pre-activation output at normalised positions.

    Buffers (in the ``state_dict``): ``box_min_mm`` and ``box_max_mm`` (3,), ``density_scale``
    (scalar). Parameter ``log_gain`` (scalar, 0 at init): the density is
    ``density_scale · exp(log_gain) · act(raw)``. The global gain gets the gradient of every
    pixel at once, so the total (the atom number, which a Poisson fit matches to the total
    signal) converges in a few steps instead of drifting with the shape parameters — without it
    the atom number of data/run042 varied by ±5 % between fits. Attributes: ``kind``,
    ``backend`` (the backend actually used), ``activation``,
    ``config`` (the :class:`FieldConfig` it was built from, when built by :func:`make_field`).
    """

    kind = ""
    backend = "torch"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        activation: str = "softplus",
        init_density: float = 1.0,
    ) -> None:
        super().__init__()
        lo, hi = _check_box(box_min_mm, box_max_mm)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"Field: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not (math.isfinite(init_density) and init_density > 0):
            raise ConfigError(f"Field: init_density must be > 0, got {init_density}")
        self.activation = activation
        self.config: FieldConfig | None = None
        self.register_buffer("box_min_mm", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("box_max_mm", torch.tensor(hi, dtype=torch.float32))
        self.register_buffer("density_scale", torch.tensor(float(init_density)))
        self.log_gain = nn.Parameter(torch.zeros(()))

    @property
    def box_mm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(box_min_mm, box_max_mm)`` as tuples ``(x, y, z)``."""
        return tuple(self.box_min_mm.tolist()), tuple(self.box_max_mm.tolist())

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the field's computations (points are converted to it)."""
        return self.box_min_mm.dtype

    @property
    def device(self) -> torch.device:
        """Device of the field's parameters and buffers."""
        return self.box_min_mm.device

    def normalize(self, points_mm: torch.Tensor) -> torch.Tensor:
        """Map points in mm to the unit cube: box_min -> 0, box_max -> 1.

        Args:
            points_mm: (..., 3) points ``(x, y, z)``, mm.

        Returns:
            (..., 3) normalised positions (outside ``[0, 1]`` for points outside the box).
        """
        extent = self.box_max_mm - self.box_min_mm
        return (points_mm.to(self.dtype) - self.box_min_mm) / extent

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """Pre-activation output at (N, 3) normalised positions in [0, 1]^3 -> (N,)."""
        raise NotImplementedError

    def forward(self, points_mm: torch.Tensor) -> torch.Tensor:
        """Density at points.

        Args:
            points_mm: (..., 3) points ``(x, y, z)``, mm, any float dtype (converted to the
                field's dtype) on the field's device.

        Returns:
            (...) density ≥ 0, exactly 0 outside the box (and at NaN points). Differentiable
            with respect to the parameters and to ``points_mm`` (once; the hash grid and the
            voxel grid are not differentiable across cell faces).
        """
        if points_mm.ndim == 0 or points_mm.shape[-1] != 3:
            raise ShapeError(
                f"{type(self).__name__}.forward: points_mm must have shape (..., 3), "
                f"got {tuple(points_mm.shape)}"
            )
        batch = points_mm.shape[:-1]
        u = self.normalize(points_mm.reshape(-1, 3))  # (N, 3)
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)  # (N,), False for NaN
        u = torch.where(inside[:, None], u, torch.full_like(u, 0.5))
        gain = self.density_scale * torch.exp(self.log_gain.to(self.dtype))
        density = gain * _activate(self.raw(u), self.activation)
        return torch.where(inside, density, torch.zeros_like(density)).reshape(batch)

    @torch.no_grad()
    def sample_grid(
        self,
        shape: int | Sequence[int] | None = None,
        *,
        voxel_size_mm: float | Sequence[float] | None = None,
        chunk: int = 1 << 18,
        unit: str = "relative",
    ) -> Volume:
        """Density at the voxel centres of a grid that tiles the box (not differentiable).

        Args:
            shape: ``(Z, Y, X)`` voxel counts or one int; or
            voxel_size_mm: wanted voxel size (adjusted to tile the box, see :func:`box_grid`).
            chunk: points evaluated per call.
            unit: the density unit recorded in the volume.

        Returns:
            A :class:`~recon.volume.Volume` with float32 data ``(Z, Y, X)``; voxel ``(k, j, i)``
            is centred at ``origin_mm + (i, j, k) * voxel_size_mm``.
        """
        zyx, origin, spacing = box_grid(*self.box_mm, shape, voxel_size_mm=voxel_size_mm)
        nz, ny, nx = zyx
        data = np.empty(zyx, dtype=np.float32)
        planes = max(1, chunk // (ny * nx))  # z-planes per call; points are made per slab
        for k in range(0, nz, planes):
            slab = (min(planes, nz - k), ny, nx)
            slab_origin = (origin[0], origin[1], origin[2] + k * spacing[2])
            points = grid_points(slab, slab_origin, spacing, dtype=self.dtype,
                                 device=self.device)
            data[k:k + slab[0]] = self(points).float().cpu().numpy()
        return Volume(data=data, origin_mm=origin, voxel_size_mm=spacing, unit=unit,
                      meta={"field": self.kind, "backend": self.backend})

    @torch.no_grad()
    def _centre_output(self, bias: torch.Tensor, seed: int) -> None:
        """Shift the output bias so that ``act(raw)`` averages 1 over the box at init."""
        gen = _generator(seed, 99)
        u = torch.rand(_PROBE_POINTS, 3, generator=gen, dtype=torch.float64)
        raw = self.raw(u.to(device=self.device, dtype=self.dtype))
        bias += _raw_for_unit_density(self.activation) - raw.mean()

    def extra_repr(self) -> str:
        """Box, activation and scale, for ``print(field)``."""
        lo, hi = self.box_mm
        return (f"box_min_mm={lo}, box_max_mm={hi}, activation={self.activation!r}, "
                f"density_scale={float(self.density_scale):g}")


class HashGridField(Field):
    """Hash encoding + ReLU MLP (instant-ngp's density network).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``,
    ``encoding.params`` (tcnn's flat layout, identical for both backends), ``mlp.{i}.weight``,
    ``mlp.{i}.bias`` (``nn.Sequential`` of Linear/ReLU).
    """

    kind = "hashgrid"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        encoding: HashGridConfig | None = None,
        hidden_layers: int = 1,
        hidden_width: int = 64,
        activation: str = "softplus",
        init_density: float = 1.0,
        backend: str = "auto",
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation,
                         init_density=init_density)
        device = torch.device(device if device is not None else "cpu")
        self.encoding = make_encoding(encoding or HashGridConfig(), backend=backend,
                                      device=device, seed=seed)
        self.backend = self.encoding.backend
        layers: list[nn.Module] = []
        width = self.encoding.n_output_dims
        gen = _generator(seed, 1)
        for _ in range(hidden_layers):
            linear = nn.Linear(width, hidden_width)
            _init_linear(linear, gen, 1 / math.sqrt(width), 1 / math.sqrt(width))  # torch's
            layers += [linear, nn.ReLU(inplace=True)]
            width = hidden_width
        head = nn.Linear(width, 1)
        _init_linear(head, gen, 1 / math.sqrt(width), 0.0)
        layers.append(head)
        self.mlp = nn.Sequential(*layers)
        self.to(device)
        self._centre_output(head.bias, seed)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) pre-activation output."""
        features = self.encoding(u).to(self.dtype)  # (N, n_levels * F)
        return self.mlp(features).squeeze(-1)


class VoxelField(Field):
    """A dense grid of raw values, trilinearly interpolated (the classical baseline).

    Voxels tile the box (:func:`box_grid`); interpolation is ``grid_sample`` with
    ``align_corners=False``, so the value at a voxel centre is that voxel's value, and
    ``padding_mode="border"`` holds the outermost value out to the box faces.

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``, ``grid``
    (1, 1, Z, Y, X).
    """

    kind = "voxel"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        resolution: int | tuple[int, int, int] = 128,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation,
                         init_density=init_density)
        zyx = _voxel_shape(resolution)
        self.grid = nn.Parameter(torch.full((1, 1, *zyx), _raw_for_unit_density(activation)))
        self.to(device if device is not None else "cpu")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(Z, Y, X)``."""
        return tuple(self.grid.shape[2:])

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) trilinear interpolation of the grid."""
        coords = (2 * u - 1).to(self.grid.dtype).view(1, -1, 1, 1, 3)  # grid_sample: (x, y, z)
        out = F.grid_sample(self.grid, coords, mode="bilinear", padding_mode="border",
                            align_corners=False)  # (1, 1, N, 1, 1)
        return out.view(-1)

    @torch.no_grad()
    def set_density(self, density: torch.Tensor) -> None:
        """Set the voxel values so that the field equals ``density`` at the voxel centres.

        Args:
            density: (Z, Y, X) densities ≥ 0 on this field's grid; values below
                ``1e-6 * density_scale`` are raised to it (the activation never reaches 0).
        """
        density = torch.as_tensor(density, dtype=self.grid.dtype, device=self.grid.device)
        if tuple(density.shape) != self.shape:
            raise ShapeError(
                f"VoxelField.set_density: density must have shape {self.shape} (Z, Y, X), "
                f"got {tuple(density.shape)}"
            )
        relative = (density / self.density_scale).clamp(min=1e-6)
        self.grid.copy_(_inverse_activation(relative, self.activation)[None, None])


class SirenField(Field):
    """Sine-activated MLP, ``h ← sin(ω₀ (W h + b))``, on coordinates in ``[-1, 1]^3``.

    Initialisation of Sitzmann et al. (NeurIPS 2020): first layer weights ``U(-1/3, 1/3)``
    (fan-in 3), later layers and the linear head ``U(-√(6/n)/ω₀, √(6/n)/ω₀)``; biases as in
    ``nn.Linear`` (``U(-1/√n, 1/√n)``).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``,
    ``layers.{i}.weight``, ``layers.{i}.bias``, ``head.weight``, ``head.bias``.
    """

    kind = "siren"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        hidden_layers: int = 3,
        width: int = 256,
        omega0: float = 30.0,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation,
                         init_density=init_density)
        self.omega0 = float(omega0)
        gen = _generator(seed, 2)
        self.layers = nn.ModuleList()
        fan_in = 3
        for i in range(hidden_layers):
            layer = nn.Linear(fan_in, width)
            bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / self.omega0
            _init_linear(layer, gen, bound, 1 / math.sqrt(fan_in))
            self.layers.append(layer)
            fan_in = width
        self.head = nn.Linear(fan_in, 1)
        _init_linear(self.head, gen, math.sqrt(6 / fan_in) / self.omega0, 1 / math.sqrt(fan_in))
        self.to(device if device is not None else "cpu")
        self._centre_output(self.head.bias, seed)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) pre-activation output."""
        h = 2 * u - 1
        for layer in self.layers:
            h = torch.sin(self.omega0 * layer(h))
        return self.head(h).squeeze(-1)

    def extra_repr(self) -> str:
        """Adds ω₀ to the base description."""
        return f"{super().extra_repr()}, omega0={self.omega0:g}"


def make_field(
    cfg: FieldConfig,
    box_min_mm: Sequence[float],
    box_max_mm: Sequence[float],
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    seed: int = 0,
) -> Field:
    """Build the field that ``cfg`` describes, on ``device``, deterministically from ``seed``.

    Args:
        cfg: kind and sizes.
        box_min_mm: (3,) lower corner of the box ``(x, y, z)``, mm.
        box_max_mm: (3,) upper corner, mm.
        backend: hash-grid backend, ``"auto"``, ``"torch"`` or ``"tcnn"`` (hashgrid only; the
            other kinds are pure torch and accept ``"auto"`` or ``"torch"``).
        device: where the field lives (``None`` = CPU).
        seed: initialisation seed; the same seed gives the same parameters on every device.

    Returns:
        The field, with ``field.config = cfg`` and ``field.backend`` the backend used.

    Raises:
        ConfigError: unknown backend, or ``"tcnn"`` for a non-hashgrid field.
        BackendUnavailableError: ``backend="tcnn"`` cannot be met (reason and remedy).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"make_field: backend must be one of {BACKENDS}, got {backend!r}")
    common = {"activation": cfg.activation, "init_density": cfg.init_density, "device": device}
    if cfg.kind == "hashgrid":
        out: Field = HashGridField(box_min_mm, box_max_mm, encoding=cfg.encoding,
                                   hidden_layers=cfg.hidden_layers, hidden_width=cfg.hidden_width,
                                   backend=backend, seed=seed, **common)
    elif backend == "tcnn":
        raise ConfigError(
            f"make_field: backend 'tcnn' applies to hashgrid fields only; a {cfg.kind!r} field "
            "runs on torch: pass --backend auto or --backend torch"
        )
    elif cfg.kind == "voxel":
        out = VoxelField(box_min_mm, box_max_mm, resolution=cfg.voxel_resolution, **common)
    else:
        out = SirenField(box_min_mm, box_max_mm, hidden_layers=cfg.siren_hidden_layers,
                         width=cfg.siren_width, omega0=cfg.siren_omega0, seed=seed, **common)
    out.config = cfg
    return out
