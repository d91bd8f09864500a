"""Multiresolution hash encoding: tiny-cuda-nn's ``HashGrid`` and its pure-PyTorch twin.

Two implementations share one configuration, one grid geometry and one parameter layout, so a
``state_dict`` moves between them unchanged (both hold the flat parameter vector as
``params``):

- :class:`TorchHashGrid`, pure PyTorch (CPU or CUDA). It is the specification: it follows
  tiny-cuda-nn's grid geometry, hash and parameter layout exactly (REFERENCE.md §4; tcnn
  ``include/tiny-cuda-nn/encodings/grid.h``).
- :class:`TcnnHashGrid`, a thin wrapper of ``tinycudann.Encoding`` (CUDA only, optional,
  imported lazily inside its constructor).

:func:`make_encoding` picks one (``backend="auto"|"torch"|"tcnn"``); an explicit request that
cannot be met raises :class:`~recon.errors.BackendUnavailableError` naming the reason and the
remedy, never a silent downgrade. :func:`tcnn_status` and :func:`available_backends` report,
without raising, what this machine can use (for ``recon doctor``).

Geometry of level ``l`` (``s`` = per_level_scale, ``N0`` = base_resolution, ``d`` input dims),
as tcnn computes it, in float32:

- ``scale_l = exp2(l * log2(s)) * N0 - 1``; ``res_l = ceil(scale_l) + 1`` vertices per axis;
- ``T_l = min(round_up_to_8(res_l ** d), 2 ** log2_hashmap_size)`` table entries;
- parameters: one flat vector ``[sum_l T_l * F]``; entry ``e`` of level ``l``, feature ``j`` is
  ``params[(offset_l + e) * F + j]`` with ``offset_l = sum_{m<l} T_m`` (feature fastest);
- ``p = x * scale_l + 0.5``, ``g = floor(p)``, ``w = p - g``, corners ``g + delta``;
- entry ``(sum_k c_k * res_l ** k) mod T_l`` (x fastest) when ``res_l ** d <= T_l``, else
  ``((c_0 * 1) ^ (c_1 * 2654435761) ^ (c_2 * 805459861)) mod T_l`` in 32-bit unsigned arithmetic;
- output level-major: ``out[:, l * F + j] = sum_corners prod_k (w_k | 1 - w_k) * theta``.

The dense index is taken modulo ``T_l`` *without clamping*: when ``scale_l`` is an integer
(``per_level_scale = 2``) or has a fractional part of at least 0.5, inputs near 1 read one
vertex past the last, which aliases into the next row exactly as in tcnn.

Known differences from tcnn: tcnn evaluates ``p`` with a fused multiply-add, the torch twin
does not (``p`` may differ in the last float32 ulp, which moves a sample across a cell face
only when it lies within ~1e-7 of it); tcnn's default parameter precision is fp16 (the tcnn
wrapper keeps fp32 master parameters); both wrappers clamp inputs to ``[0, 1]`` (raw tcnn
wraps outside values around in unsigned arithmetic) — :mod:`recon.fields` never sends them.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from recon.errors import BackendUnavailableError, ConfigError, ShapeError

__all__ = [
    "BACKENDS",
    "HashGridConfig",
    "HashGridLevel",
    "TCNN_INSTALL_HINT",
    "TcnnHashGrid",
    "TorchHashGrid",
    "available_backends",
    "hashgrid_levels",
    "init_hashgrid_params",
    "make_encoding",
    "tcnn_status",
]

BACKENDS = ("auto", "torch", "tcnn")
TCNN_INSTALL_HINT = (
    "pass --backend torch (same results, slower), or install tiny-cuda-nn from source on a "
    "CUDA machine: pip install "
    "git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch"
)

# tcnn's hash primes for dims 0..2 (grid.h); as signed int32 so that torch's int32 products
# wrap modulo 2**32 exactly like tcnn's uint32 arithmetic.
_PRIMES = (1, 2654435761, 805459861)
_PRIMES_I32 = tuple(p - (1 << 32) if p >= (1 << 31) else p for p in _PRIMES)
_INIT_RANGE = 1e-4  # tcnn: generate_random_uniform(-1e-4, 1e-4)


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of a hash grid, with tiny-cuda-nn's key names.

    tiny-cuda-nn's own defaults are ``n_levels=16, n_features_per_level=2,
    log2_hashmap_size=19, base_resolution=16, per_level_scale=2.0``
    (:meth:`tcnn_defaults`); with ``per_level_scale=2`` the finest of 16 levels has 524 288
    vertices per axis, far beyond anything a 2.4 mm box needs. The project's defaults are
    chosen for a ~1 mm atom cloud in a 2.4 mm box, where the object-space pixel is 17.5 µm and
    the details of interest are ~0.1 mm (REFERENCE.md §1):

    - ``base_resolution=16``: coarsest cell 150 µm, the cloud spans ~7 cells;
    - ``n_levels=8`` with ``per_level_scale=1.38``: resolutions 16 … 153 vertices per axis,
      finest cell 2.4 mm / 152 ≈ 16 µm, about one object-space pixel. Eight levels rather than
      16 halve the cost on CPU (cost grows linearly with the level count); the level scales
      stay ≥ 0.02 away from integers so float32 rounding cannot change a resolution;
    - ``log2_hashmap_size=18``: levels up to 64³ vertices are stored densely (no collisions);
      the three finest levels hash into 262 144 entries each, more than the ~1.3e5 cells of the
      finest level that a 1 mm cloud occupies. 2.3 M parameters in all (9 MB in float32), which
      keeps the optimiser step cheap on CPU;
    - ``n_features_per_level=2`` (tcnn: 1, 2, 4 or 8).

    Attributes:
        n_levels: number of resolution levels.
        n_features_per_level: features per level, 1, 2, 4 or 8.
        log2_hashmap_size: log2 of the largest table size per level (entries).
        base_resolution: ``N0``, vertices per axis of the coarsest level.
        per_level_scale: ``s``, growth factor of the resolution per level.
    """

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 18
    base_resolution: int = 16
    per_level_scale: float = 1.38

    def __post_init__(self) -> None:
        where = "HashGridConfig"
        if self.n_features_per_level not in (1, 2, 4, 8):
            raise ConfigError(
                f"{where}: n_features_per_level must be 1, 2, 4 or 8 (tiny-cuda-nn), "
                f"got {self.n_features_per_level}"
            )
        if not 1 <= self.n_levels <= 32:
            raise ConfigError(f"{where}: n_levels must be in 1..32, got {self.n_levels}")
        if not 1 <= self.log2_hashmap_size <= 30:
            raise ConfigError(
                f"{where}: log2_hashmap_size must be in 1..30, got {self.log2_hashmap_size}"
            )
        if self.base_resolution < 2:
            raise ConfigError(f"{where}: base_resolution must be ≥ 2, got {self.base_resolution}")
        if not (math.isfinite(self.per_level_scale) and self.per_level_scale >= 1.0):
            raise ConfigError(
                f"{where}: per_level_scale must be ≥ 1, got {self.per_level_scale}"
            )

    @classmethod
    def tcnn_defaults(cls) -> HashGridConfig:
        """tiny-cuda-nn's own defaults (16 levels, F = 2, T = 2^19, N0 = 16, s = 2)."""
        return cls(n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
                   base_resolution=16, per_level_scale=2.0)

    @property
    def n_output_dims(self) -> int:
        """Width of the encoding, ``n_levels * n_features_per_level``."""
        return self.n_levels * self.n_features_per_level

    def to_tcnn(self) -> dict:
        """The ``encoding_config`` dict for ``tinycudann.Encoding``."""
        return {
            "otype": "HashGrid",
            "n_levels": int(self.n_levels),
            "n_features_per_level": int(self.n_features_per_level),
            "log2_hashmap_size": int(self.log2_hashmap_size),
            "base_resolution": int(self.base_resolution),
            "per_level_scale": float(self.per_level_scale),
            "interpolation": "Linear",
        }

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HashGridConfig:
        """Build from a dict; unknown keys are a :class:`~recon.errors.ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"HashGridConfig: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**data)


@dataclass(frozen=True)
class HashGridLevel:
    """Geometry of one level of a hash grid (tcnn's arithmetic).

    Attributes:
        level: level number ``l``.
        scale: ``scale_l`` as tcnn computes it in float32 (held as a Python float).
        resolution: ``res_l = ceil(scale_l) + 1`` vertices per axis.
        table_size: entries in this level's table, ``T_l``.
        offset: first entry of this level in the flat table (entries, not parameters).
        dense: whether the level is indexed densely (``res_l ** d <= T_l``) or hashed.
    """

    level: int
    scale: float
    resolution: int
    table_size: int
    offset: int
    dense: bool


def hashgrid_levels(cfg: HashGridConfig, n_input_dims: int = 3) -> tuple[HashGridLevel, ...]:
    """Per-level geometry of ``cfg`` exactly as tiny-cuda-nn lays it out.

    Args:
        cfg: the grid configuration.
        n_input_dims: ``d``, 2 or 3.

    Returns:
        One :class:`HashGridLevel` per level; parameters total
        ``(levels[-1].offset + levels[-1].table_size) * cfg.n_features_per_level``.
    """
    if n_input_dims not in (2, 3):
        raise ConfigError(f"hashgrid_levels: n_input_dims must be 2 or 3, got {n_input_dims}")
    f32 = np.float32
    log2_scale = np.log2(f32(cfg.per_level_scale))  # std::log2(float) -> float
    max_size = 1 << cfg.log2_hashmap_size
    levels = []
    offset = 0
    for level in range(cfg.n_levels):
        # exp2f(level * log2_per_level_scale) * base_resolution - 1.0f, all float32
        scale = f32(np.exp2(f32(level) * log2_scale)) * f32(cfg.base_resolution) - f32(1.0)
        resolution = int(math.ceil(float(scale))) + 1
        dense_size = resolution**n_input_dims
        table_size = min((dense_size + 7) // 8 * 8, max_size)
        levels.append(HashGridLevel(level, float(scale), resolution, table_size, offset,
                                    dense_size <= table_size))
        offset += table_size
    if offset >= 1 << 31:
        raise ConfigError(
            f"hashgrid_levels: {offset} table entries exceed 2^31; lower log2_hashmap_size"
        )
    return tuple(levels)


def init_hashgrid_params(
    n_params: int, *, seed: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Initial parameters as tcnn draws them, uniform in ±1e-4, from an explicit CPU generator.

    The numbers depend only on ``seed`` and ``n_params`` (drawn on the CPU, then moved), so
    every device and both backends start from the same parameters.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    values = torch.rand(n_params, generator=gen, dtype=torch.float64)
    return (values * (2 * _INIT_RANGE) - _INIT_RANGE).to(dtype)


# --------------------------------------------------------------------------------------------
# Pure-PyTorch implementation
# --------------------------------------------------------------------------------------------

_COMPLEX_UNITS_ON_CPU = True  # False runs the CUDA code path on the CPU (tests)


class _Plan:
    """Everything the autograd function needs about a grid, precomputed once per module."""

    def __init__(self, cfg: HashGridConfig, n_input_dims: int) -> None:
        self.levels = hashgrid_levels(cfg, n_input_dims)
        self.d = n_input_dims
        self.n_corners = 1 << n_input_dims
        self.n_features = cfg.n_features_per_level
        self.n_entries = self.levels[-1].offset + self.levels[-1].table_size
        self.n_params = self.n_entries * self.n_features
        # Dense levels: entry of corner delta = base + sum_k delta_k res^k (+ level offset).
        self.corner_offsets = []
        self.needs_wrap = []
        for lv in self.levels:
            res = lv.resolution
            offs = [sum(((c >> k) & 1) * res**k for k in range(self.d))
                    for c in range(self.n_corners)]
            self.corner_offsets.append(offs)
            top = math.floor(lv.scale + 0.5) + 1  # largest corner coordinate for x in [0, 1]
            self.needs_wrap.append(sum(top * res**k for k in range(self.d)) >= lv.table_size)
        self._dense_offsets: dict = {}

    def dense_offsets(self, level: int, device: torch.device) -> torch.Tensor:
        """(2^d, 1) int32 ``corner offset + level offset`` of a dense level (cached per device)."""
        key = (level, str(device))
        if key not in self._dense_offsets:
            offs = [o + self.levels[level].offset for o in self.corner_offsets[level]]
            self._dense_offsets[key] = torch.tensor(offs, dtype=torch.int32, device=device)[:, None]
        return self._dense_offsets[key]


def _corner_entries(gi: torch.Tensor, lv: HashGridLevel, plan: _Plan, out: torch.Tensor) -> None:
    """Global table entries of the 2^d corners of each sample's cell.

    Args:
        gi: (d, N) int32 cell coordinates ``floor(p)``.
        lv: the level.
        plan: the grid plan.
        out: (2^d, N) int32, written in place; row ``c`` holds corner ``delta_k = (c >> k) & 1``.
    """
    d = plan.d
    if lv.dense:
        res = lv.resolution
        base = gi[0] + gi[1] * res
        if d == 3:
            base.add_(gi[2], alpha=res * res)
        offs = plan.dense_offsets(lv.level, gi.device)  # (C, 1): corner offset + level offset
        torch.add(base[None, :], offs, out=out)
        if plan.needs_wrap[lv.level]:
            # index mod T_l (the index is < 2 T_l); only cells at the top faces can reach past
            # the table, so fix just those samples instead of every entry.
            limit = lv.offset + lv.table_size
            near = (base >= limit - plan.corner_offsets[lv.level][-1] - lv.offset).nonzero()
            if len(near):
                cols = near[:, 0]
                sub = out[:, cols]
                sub -= (sub >= limit).to(torch.int32) * lv.table_size
                out[:, cols] = sub
        return
    # Hashed level: xor of the per-axis products, int32 arithmetic wraps modulo 2^32.
    h0 = gi[0]
    out[0].copy_(h0)
    torch.add(h0, 1, out=out[1])
    m = 2
    for k in range(1, d):
        hk = gi[k] * _PRIMES_I32[k]
        torch.bitwise_xor(out[:m], hk + _PRIMES_I32[k], out=out[m:2 * m])
        out[:m].bitwise_xor_(hk)
        m *= 2
    assert lv.table_size & (lv.table_size - 1) == 0  # hashed tables hold 2^T entries
    out.bitwise_and_(lv.table_size - 1)
    out.add_(lv.offset)


def _corner_weights_(w: torch.Tensor, out: torch.Tensor) -> None:
    """Multilinear weights ``prod_k (w_k if delta_k else 1 - w_k)``, written into ``out``.

    The product runs over ``k = 0 … d − 1`` in that order, as in tcnn.

    Args:
        w: (d, N) fractional positions in [0, 1).
        out: (2^d, N), row ``c`` for corner ``delta_k = (c >> k) & 1``.
    """
    torch.sub(1, w[0], out=out[0])
    out[1].copy_(w[0])
    m = 2
    for k in range(1, w.shape[0]):
        torch.mul(out[:m], w[k], out=out[m:2 * m])
        out[:m].mul_(1 - w[k])
        m *= 2


def _corner_weights(w: torch.Tensor) -> torch.Tensor:
    """Differentiable twin of :func:`_corner_weights_`: (d, N) -> (2^d, N)."""
    out = torch.stack([1 - w[0], w[0]])
    for k in range(1, w.shape[0]):
        out = torch.cat([out * (1 - w[k]), out * w[k]])
    return out


class _Units:
    """How the flat parameters are gathered and scattered.

    Gathers read whole table entries as raw bits: the parameters are viewed as int64 (int32
    when an entry holds fewer than 8 bytes), ``K`` units per entry, so one ``index_select``
    moves all features of a corner without arithmetic (a plain copy, bit-exact, and on the CPU
    much faster than gathering complex or float pairs).

    Scatters (the backward) on the CPU add pairs of features as one complex number: half as
    many index operations, and ``scatter_add_`` on a 1-D tensor is a serial loop whose cost is
    per index. Elsewhere (CUDA), or for one feature per level, feature by feature as reals.
    Arithmetic is always done on real feature planes (complex products are slow on CPU).
    """

    def __init__(self, n_features: int, dtype: torch.dtype, device: torch.device) -> None:
        self.complex = _COMPLEX_UNITS_ON_CPU and n_features % 2 == 0 and device.type == "cpu"
        self.per_entry = n_features // 2 if self.complex else n_features
        entry_bytes = n_features * torch.empty(0, dtype=dtype).element_size()
        self.bits = torch.int64 if entry_bytes % 8 == 0 else torch.int32
        self.bits_per_entry = entry_bytes // torch.empty(0, dtype=self.bits).element_size()

    def gather(self, params: torch.Tensor, entries: torch.Tensor,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """(P,) real parameters, (C, N) int32 entries -> (C, N, F) features.

        ``out``: optional (C·N·K,) buffer of the unit dtype to gather into (reused across
        levels); a new tensor otherwise.
        """
        k = self.bits_per_entry
        table = params.view(self.bits)
        index = entries if k == 1 else (
            entries[..., None] * k + torch.arange(k, dtype=entries.dtype, device=entries.device))
        if out is None:
            out = table.index_select(0, index.reshape(-1))
        else:
            torch.index_select(table, 0, index.reshape(-1), out=out)
        n_feat = k * table.element_size() // params.element_size()
        return out.view(params.dtype).view(*entries.shape, n_feat)

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        """(P,) real parameters or gradients -> (P / 2,) complex or (P,) real view (no copy)."""
        return torch.view_as_complex(flat.view(-1, 2)) if self.complex else flat

    def index(self, entries: torch.Tensor) -> torch.Tensor:
        """(C, N) table entries -> (C, N, K) scatter-unit indices, K units per entry."""
        k = self.per_entry
        if k == 1:
            return entries[..., None]
        return entries[..., None] * k + torch.arange(k, dtype=entries.dtype,
                                                     device=entries.device)

    def of_real(self, values: torch.Tensor) -> torch.Tensor:
        """(C, N, F) contiguous real -> (C, N, K) unit view (no copy)."""
        return torch.view_as_complex(values.view(*values.shape[:-1], -1, 2)) if self.complex \
            else values


class _HashGridFunction(torch.autograd.Function):
    """Gather-interpolate forward, scatter backward, for all levels at once."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, params: torch.Tensor, plan: _Plan) -> torch.Tensor:
        n = x.shape[0]
        n_levels = len(plan.levels)
        n_feat = plan.n_features
        units = _Units(n_feat, params.dtype, params.device)
        xt = x.t().contiguous()  # (d, N)
        entries = torch.empty(n_levels, plan.n_corners, n, dtype=torch.int32, device=x.device)
        weights = torch.empty(n_levels, plan.n_corners, n, dtype=x.dtype, device=x.device)
        out = torch.empty(n, n_levels, n_feat, dtype=params.dtype, device=x.device)
        need_x_grad = ctx.needs_input_grad[0]
        saved_w, saved_f = [], []
        buffer = None if need_x_grad else torch.empty(  # gathered bits, reused across levels
            plan.n_corners * n * units.bits_per_entry, dtype=units.bits, device=x.device)
        for lv in plan.levels:
            p = torch.mul(xt, lv.scale).add_(0.5)  # (d, N), = x * scale + 0.5 (no FMA)
            g = torch.floor(p)
            w = p.sub_(g)  # (d, N) fractional position
            weight = weights[lv.level]  # (C, N)
            _corner_entries(g.to(torch.int32), lv, plan, entries[lv.level])
            _corner_weights_(w, weight)
            feats = units.gather(params, entries[lv.level], buffer)  # (C, N, F)
            for j in range(n_feat):  # real planes; complex products and out= are slower
                out[:, lv.level, j] = (feats[..., j] * weight).sum(0)
            if need_x_grad:
                saved_w.append(w)
                saved_f.append(feats)
        ctx.plan = plan
        ctx.units = units
        ctx.saved_w, ctx.saved_f = saved_w, saved_f
        ctx.save_for_backward(entries, weights)
        return out.view(n, n_levels * n_feat)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        entries, weights = ctx.saved_tensors
        plan, units = ctx.plan, ctx.units
        n_levels, n_corners, n = entries.shape
        n_feat = plan.n_features
        grad_out = grad_out.reshape(n, n_levels, n_feat)
        grad_params = grad_x = None

        if ctx.needs_input_grad[1]:
            grad_params = torch.zeros(plan.n_params, dtype=grad_out.dtype, device=grad_out.device)
            grad_table = units.view(grad_params)

            # One value and one index buffer for all levels: fresh multi-MB buffers per level
            # cost more in page faults than the products themselves.
            vals = grad_out.new_empty(n_corners, n, n_feat)  # (C, N, F)
            idx = torch.empty(n_corners, n, units.per_entry, dtype=torch.long, device=vals.device)

            def values(level: int) -> tuple[torch.Tensor, torch.Tensor]:
                for j in range(n_feat):  # contiguous operands keep the product vectorised
                    torch.mul(weights[level], grad_out[:, level, j].contiguous(),
                              out=vals[..., j])
                # int64 indices: scatter_add_ with them beats index_add_ with int32 on the CPU
                idx.copy_(units.index(entries[level]))
                return idx.view(-1), units.of_real(vals).reshape(-1)

            # Serial scatter, level by level: deterministic on the CPU. (Worker threads for the
            # serial gathers and scatters were measured and gave nothing on 2 cores.)
            for lv in plan.levels:
                grad_table.scatter_add_(0, *values(lv.level))

        if ctx.needs_input_grad[0]:
            grad_x = torch.zeros(plan.d, n, dtype=grad_out.dtype, device=grad_out.device)
            for lv in plan.levels:
                feats = ctx.saved_f[lv.level]  # (C, N, F)
                dl_dweight = (feats * grad_out[None, :, lv.level]).sum(-1)  # (C, N)
                with torch.enable_grad():
                    w = ctx.saved_w[lv.level].detach().requires_grad_(True)
                    (dl_dw,) = torch.autograd.grad(_corner_weights(w), w, dl_dweight)
                grad_x.add_(dl_dw, alpha=lv.scale)  # dw/dx = scale_l
            grad_x = grad_x.t()
        return grad_x, grad_params, None


class TorchHashGrid(nn.Module):
    """Multiresolution hash encoding in pure PyTorch, tcnn's twin (CPU or CUDA).

    Attributes:
        params: (n_params,) flat parameters in tcnn's layout (see the module docstring).
        levels: per-level geometry (:func:`hashgrid_levels`).
        backend: ``"torch"``.
    """

    backend = "torch"

    def __init__(
        self,
        cfg: HashGridConfig,
        *,
        n_input_dims: int = 3,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(
                f"TorchHashGrid: dtype must be torch.float32 or torch.float64, got {dtype}"
            )
        self.cfg = cfg
        self.n_input_dims = n_input_dims
        self._plan = _Plan(cfg, n_input_dims)
        self.levels = self._plan.levels
        self.n_output_dims = cfg.n_output_dims
        self.params = nn.Parameter(
            init_hashgrid_params(self._plan.n_params, seed=seed, dtype=dtype).to(device)
        )

    @property
    def n_params(self) -> int:
        """Number of parameters, tcnn's ``n_params()``."""
        return self._plan.n_params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode positions.

        Args:
            x: (N, d) positions in [0, 1]^d (clamped into it); converted to the parameters'
                dtype. Differentiable with respect to ``x`` (once) and ``params``.

        Returns:
            (N, n_levels * n_features_per_level) features, level-major.
        """
        if x.ndim != 2 or x.shape[1] != self.n_input_dims:
            raise ShapeError(
                f"TorchHashGrid.forward: x must have shape (N, {self.n_input_dims}), "
                f"got {tuple(x.shape)}"
            )
        x = x.to(self.params.dtype).clamp(0.0, 1.0)
        return _HashGridFunction.apply(x, self.params, self._plan)

    def extra_repr(self) -> str:
        """Configuration and level resolutions, for ``print(module)``."""
        return (f"n_input_dims={self.n_input_dims}, {self.cfg}, n_params={self.n_params}, "
                f"resolutions={[lv.resolution for lv in self.levels]}")


# --------------------------------------------------------------------------------------------
# tiny-cuda-nn
# --------------------------------------------------------------------------------------------


def tcnn_status() -> tuple[bool, str]:
    """Whether tiny-cuda-nn can be used here, and why (never raises).

    Returns:
        ``(available, reason)``; ``reason`` is the exact cause when unavailable (no CUDA device,
        not installed, or the import's error text — tinycudann raises ``EnvironmentError``,
        not only ``ImportError``, when it finds no usable GPU), else the version and device.
    """
    installed = importlib.util.find_spec("tinycudann") is not None
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        note = "tinycudann is installed" if installed else "tinycudann is not installed"
        return False, (f"no CUDA device (torch {torch.__version__}, {build}; "
                       f"torch.cuda.is_available() is False); {note}")
    if not installed:
        return False, "tinycudann is not installed (ImportError: No module named 'tinycudann')"
    try:
        import tinycudann  # noqa: F401
    except ImportError as err:
        return False, f"tinycudann failed to import (ImportError: {err})"
    except Exception as err:  # EnvironmentError (= OSError) without a usable GPU, and others
        return False, f"tinycudann failed to load ({type(err).__name__}: {err})"
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("tinycudann")
    except PackageNotFoundError:
        ver = "unknown version"
    return True, f"tinycudann {ver} on {torch.cuda.get_device_name()}"


def available_backends() -> dict[str, tuple[bool, str]]:
    """Every concrete backend with ``(available, reason)``, for ``recon doctor``."""
    cuda = torch.cuda.is_available()
    torch_reason = f"pure PyTorch {torch.__version__}, " + ("cpu and cuda" if cuda else "cpu")
    return {"torch": (True, torch_reason), "tcnn": tcnn_status()}


def _import_tcnn():
    """Import tinycudann or raise BackendUnavailableError with the reason and the remedy."""
    ok, reason = tcnn_status()
    if not ok:
        raise BackendUnavailableError(
            f"make_encoding: backend 'tcnn' is unavailable: {reason}; {TCNN_INSTALL_HINT}"
        )
    import tinycudann

    return tinycudann


class TcnnHashGrid(nn.Module):
    """tiny-cuda-nn's ``HashGrid`` with the torch twin's interface and parameter name.

    The flat fp32 master parameters live in ``params`` (same length and layout as
    :class:`TorchHashGrid`); the wrapped ``tinycudann.Encoding`` is not a registered submodule
    and reads ``params`` (cast to its precision) on every call, so the ``state_dict`` is
    ``{"params": ...}`` for both backends. Output is float32.

    Raises:
        BackendUnavailableError: tinycudann or CUDA is missing (reason and remedy in the text).
    """

    backend = "tcnn"

    def __init__(
        self,
        cfg: HashGridConfig,
        *,
        n_input_dims: int = 3,
        seed: int = 0,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = "cuda",
    ) -> None:
        super().__init__()
        tcnn = _import_tcnn()
        device = torch.device(device if device is not None else "cuda")
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"TcnnHashGrid: tiny-cuda-nn runs on CUDA only, got device {device}; "
                "pass --backend torch for the CPU"
            )
        self.cfg = cfg
        self.n_input_dims = n_input_dims
        self.levels = hashgrid_levels(cfg, n_input_dims)
        n_params = (self.levels[-1].offset + self.levels[-1].table_size) * cfg.n_features_per_level
        with torch.cuda.device(device):
            encoding = tcnn.Encoding(n_input_dims, cfg.to_tcnn(), seed=seed, dtype=dtype)
        if encoding.params.numel() != n_params or encoding.n_output_dims != cfg.n_output_dims:
            raise BackendUnavailableError(
                f"TcnnHashGrid: this tinycudann has {encoding.params.numel()} parameters and "
                f"{encoding.n_output_dims} outputs, the layout expects {n_params} and "
                f"{cfg.n_output_dims}; its grid layout differs, use --backend torch"
            )
        self.n_output_dims = cfg.n_output_dims
        self.params = nn.Parameter(
            init_hashgrid_params(n_params, seed=seed, dtype=torch.float32).to(device)
        )
        object.__setattr__(self, "_encoding", encoding)  # hidden: its only parameter is ours
        encoding.params = self.params

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return self.params.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode (N, d) CUDA positions in [0, 1]^d -> (N, n_levels * F) float32 features."""
        if x.ndim != 2 or x.shape[1] != self.n_input_dims:
            raise ShapeError(
                f"TcnnHashGrid.forward: x must have shape (N, {self.n_input_dims}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            return x.new_zeros(0, self.n_output_dims, dtype=torch.float32)
        encoding = self._encoding
        if encoding.params is not self.params:  # re-link after .to() replaced the Parameter
            encoding.params = self.params
        return encoding(x.float().clamp(0.0, 1.0).contiguous()).float()

    def extra_repr(self) -> str:
        """Configuration, for ``print(module)``."""
        return f"n_input_dims={self.n_input_dims}, {self.cfg}, n_params={self.n_params}"


def make_encoding(
    cfg: HashGridConfig,
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    n_input_dims: int = 3,
    seed: int = 0,
) -> TorchHashGrid | TcnnHashGrid:
    """Build a hash-grid encoding with the requested backend.

    Args:
        cfg: the grid configuration.
        backend: ``"torch"``; ``"tcnn"`` (CUDA, tinycudann); or ``"auto"``: tcnn when the
            device is CUDA and tinycudann imports, else torch.
        device: where the parameters live (``None`` = CPU).
        n_input_dims: 2 or 3.
        seed: initialisation seed (same parameters on every backend and device).

    Returns:
        A module mapping (N, d) positions in [0, 1]^d to (N, n_levels * F) features, with the
        flat parameters as ``params`` and the backend used as ``backend``.

    Raises:
        ConfigError: unknown backend.
        BackendUnavailableError: ``backend="tcnn"`` cannot be met here (reason and remedy).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"make_encoding: backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device if device is not None else "cpu")
    if backend == "auto":
        backend = "tcnn" if device.type == "cuda" and tcnn_status()[0] else "torch"
    if backend == "tcnn":
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"make_encoding: backend 'tcnn' needs a CUDA device, got device {device}; "
                "pass --backend torch for the CPU, or --device cuda on a GPU machine"
            )
        return TcnnHashGrid(cfg, n_input_dims=n_input_dims, seed=seed, device=device)
    return TorchHashGrid(cfg, n_input_dims=n_input_dims, seed=seed, device=device)
