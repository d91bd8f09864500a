"""Density fields: differentiable maps from points in mm to a non-negative density.

Every field is a :class:`Field`: ``field(points_mm)`` maps ``(..., 3)`` points ``(x, y, z)`` in
millimetres to ``(...)`` densities ≥ 0 (atoms/mm³ when the run gives photons per atom, else
relative units). A field lives on an axis-aligned box; the box is normalised to ``[0, 1]^3``
in one place (:meth:`Field.forward`), and points outside the box (or NaN) get density 0
through a mask, never a NaN.

Kinds (:class:`FieldConfig` ``kind``):

- ``"hashgrid"`` (:class:`HashGridField`): multiresolution hash encoding
  (:mod:`recon.model.encoding`, tcnn or torch backend) followed by a small ReLU MLP;
- ``"voxel"`` (:class:`VoxelField`): a dense grid of voxel values, trilinearly interpolated —
  the classical baseline;
- ``"siren"`` (:class:`SirenField`): a sine-activated MLP (Sitzmann et al., NeurIPS 2020,
  arXiv:2006.09661), the network of the public SLAC pipeline (3 × 256, ω₀ = 30).
- ``"fourier"`` and ``"gauss"``: Fourier-feature and Gaussian-activation MLPs
  (:mod:`recon.model.fields.fourier`, :mod:`recon.model.fields.gauss`);
- ``"splitnet"`` (:class:`SplitNetField`): an MLP whose neurons multiply tanh, sigmoid, sine
  and cosine responses, LSUV-initialised (:mod:`recon.model.fields.splitnet`);
- ``"tensorf"`` (:class:`TensoRFField`): TensoRF's vector–matrix factorisation of the density
  (:mod:`recon.model.fields.tensorf`).

Density activation: ``density = density_scale * act(raw)``. ``act`` is ``softplus`` by default:
it never overflows, keeps a gradient everywhere, and approaches 0 smoothly so empty space is
representable; ``"exp"`` (truncated exponential, as in instant-ngp: ``exp(min(raw, 15))`` with
that same derivative) gives multiplicative updates over a large dynamic range at the risk of
sharper steps; ``"linear"`` (``max(raw, 0)``) makes the density linear in the parameters, as the
EM solver needs (:mod:`recon.fitting.em`; its updates keep ``raw ≥ 0``). ``density_scale`` is
``FieldConfig.init_density``, and every field starts at ``act(raw) ≈ 1``, i.e. a density ≈
``init_density`` everywhere in the box: the fit can start at the data's mean density (total
atoms / box volume) and the optimiser works on O(1) numbers.

Voxel grids follow the project convention: arrays ``(Z, Y, X)``; voxel ``(k, j, i)`` has its
centre at ``origin_mm + (i, j, k) * voxel_size_mm``; a grid of ``n`` voxels along an axis tiles
the box exactly, so ``voxel_size = extent / n`` and ``origin = box_min + voxel_size / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recon.errors import ConfigError, ShapeError
from recon.io.volume import Volume, grid_points
from recon.model.fields.config import ACTIVATIONS, FieldConfig

__all__ = [
    "Field",
    "box_grid",
    "field_generator",
    "init_linear",
    "inverse_activation",
    "raw_for_unit_density",
    "relu_mlp",
    "sample_field",
]


_EXP_MAX = 15.0  # truncated exponential: exp(min(raw, 15)), instant-ngp's bound


_PROBE_POINTS = 4096  # points used to centre the initial output


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
    if activation == "linear":
        return raw.clamp_min(0.0)
    return F.softplus(raw) if activation == "softplus" else _TruncExp.apply(raw)


def raw_for_unit_density(activation: str) -> float:
    """``act⁻¹(1)``: the raw output at which ``act(raw) = 1``."""
    return {"softplus": math.log(math.e - 1.0), "exp": 0.0}.get(activation, 1.0)


def inverse_activation(values: torch.Tensor, activation: str) -> torch.Tensor:
    """``act⁻¹``, for values > 0 (callers floor them)."""
    if activation == "softplus":  # log(expm1(v)), stable for large v
        return torch.where(values > 20, values, torch.log(torch.expm1(values.clamp(max=20))))
    return values if activation == "linear" else torch.log(values)


def field_generator(seed: int, stream: int) -> torch.Generator:
    """An explicit CPU generator per (seed, purpose); parameters are drawn on the CPU."""
    return torch.Generator(device="cpu").manual_seed(int(seed) * 1009 + stream)


def init_linear(layer: nn.Linear, gen: torch.Generator, weight_bound: float,
                 bias_bound: float) -> None:
    """Initialise a linear layer uniformly in ±``weight_bound`` and ±``bias_bound`` from ``gen``."""
    with torch.no_grad():
        layer.weight.uniform_(-weight_bound, weight_bound, generator=gen)
        layer.bias.uniform_(-bias_bound, bias_bound, generator=gen)


def relu_mlp(width_in: int, hidden_layers: int, hidden_width: int, gen: torch.Generator) -> nn.Sequential:
    """Linear/ReLU layers and a linear head to one output, drawn from ``gen``.

    torch's default bounds (``U(±1/√fan_in)`` for weights and hidden biases), the head's bias 0
    (the field centres it: :meth:`Field._centre_output`).
    """
    layers: list[nn.Module] = []
    width = width_in
    for _ in range(hidden_layers):
        linear = nn.Linear(width, hidden_width)
        init_linear(linear, gen, 1 / math.sqrt(width), 1 / math.sqrt(width))
        layers += [linear, nn.ReLU(inplace=True)]
        width = hidden_width
    head = nn.Linear(width, 1)
    init_linear(head, gen, 1 / math.sqrt(width), 0.0)
    layers.append(head)
    return nn.Sequential(*layers)


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
            A :class:`~recon.io.volume.Volume` with float32 data ``(Z, Y, X)``; voxel ``(k, j, i)``
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
        gen = field_generator(seed, 99)
        u = torch.rand(_PROBE_POINTS, 3, generator=gen, dtype=torch.float64)
        raw = self.raw(u.to(device=self.device, dtype=self.dtype))
        bias += raw_for_unit_density(self.activation) - raw.mean()

    def extra_repr(self) -> str:
        """Box, activation and scale, for ``print(field)``."""
        lo, hi = self.box_mm
        return (f"box_min_mm={lo}, box_max_mm={hi}, activation={self.activation!r}, "
                f"density_scale={float(self.density_scale):g}")


@torch.no_grad()
def sample_field(field_module, shape, origin, voxel, device, chunk: int = 262144) -> np.ndarray:
    """Evaluate a field at the voxel centres of a grid: (Z, Y, X) float32 (not differentiable)."""
    pts = grid_points(shape, origin, voxel, device=device).reshape(-1, 3)
    out = torch.cat([field_module(pts[i : i + chunk]).float() for i in range(0, len(pts), chunk)])
    return out.reshape(shape).cpu().numpy()
