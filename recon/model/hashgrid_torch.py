"""The pure-PyTorch hash grid: the specification of tcnn's encoding, with a hand-written backward pass."""

from __future__ import annotations

import math

import torch
from torch import nn

from recon.errors import ConfigError, ShapeError
from recon.model.hashgrid import (
    PRIMES_I32,
    HashGridConfig,
    HashGridLevel,
    hashgrid_levels,
    init_hashgrid_params,
)

__all__ = ["TorchHashGrid"]


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
        hk = gi[k] * PRIMES_I32[k]
        torch.bitwise_xor(out[:m], hk + PRIMES_I32[k], out=out[m:2 * m])
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
        # p = fmaf(scale, x, 0.5f) as tcnn: float32 positions are multiplied and added in float64
        # (the product is exact) and rounded once; float64 positions as they are.
        wide = xt.double() if xt.dtype == torch.float32 else None
        for lv in plan.levels:
            if wide is None:
                p = torch.mul(xt, lv.scale).add_(0.5)  # (d, N)
            else:
                p = torch.mul(wide, lv.scale).add_(0.5).to(xt.dtype)
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
