r"""MulFAGrid: a grid whose interpolation kernel is a multiplicative Fourier filter network.

Zhao, Fan, Liao & Yan, "Grounding and Enhancing Grid-based Models for Neural Fields", CVPR 2024
(arXiv:2403.20002). The paper reads every grid model as ``f(x) = Σ_i g_i φ(x, x_i)``, features
``g_i`` at the vertices ``x_i`` weighted by a kernel, and MulFAGrid learns that kernel: Fourier
features of the position passed through the multiplicative filters of Fathony, Sahu, Willmott &
Kolter, "Multiplicative Filter Networks", ICLR 2021 (MFN), with filters that depend on the
vertex, so that the kernel adapts over the grid, normalised over the vertices it sums.

The formulation implemented here, for a density on a box. Features ``G`` (C per vertex) on a
regular grid of ``n_x × n_y × n_z`` vertices spanning the box from face to face; a point with
grid coordinates ``p = u · (n − 1)`` (``u ∈ [0, 1]³`` its normalised position) lies in the cell
with lower vertex ``b = min(⌊p⌋, n − 2)``, with offset ``δ = p − b ∈ [0, 1]³``. For each of the
cell's eight vertices ``v = b + c`` (``c ∈ {0, 1}³``), with ``e = δ − c ∈ [−1, 1]³`` the point's
offset from it and ``u_v = v / (n − 1)`` the vertex's own normalised position:

.. math::

    z_0 &= \big[\sin(2^k π e), \cos(2^k π e)\big]_{k = 0 … F − 1}   \qquad (6F \text{ features}) \\
    z_{l+1} &= (W_l z_l + b_l) ⊙ \sin(Ω_l u_v + ψ_l), \qquad l = 0 … L − 1 \\
    s(x, v) &= w_L · z_L \\
    φ(x, v) &= \mathrm{tri}(e)\, \exp s(x, v), \qquad \mathrm{tri}(e) = \textstyle\prod_a (1 − |e_a|) \\
    f(x) &= h · \frac{\sum_v φ(x, v)\, G_v}{\sum_v φ(x, v)} + η

and ``raw = f``, ``density = density_scale · act(raw)`` (:mod:`recon.model.fields.base`).

Choices the paper leaves open (or that this project makes), stated: (1) the kernel is the
trilinear weight times ``exp`` of the filter network's output and normalised over the cell's
vertices, so it is positive, a partition of unity, zero beyond the cell, and exactly trilinear
interpolation where the network's output is constant (the public reference normalises a raw
network output, which can vanish or change sign; ours cannot); (2) the filters take the vertex's
normalised position (``u_v``), the Fourier features the point's offset from the vertex; (3) one
dense 3D grid (not three planes) with C features and a linear head ``h`` to the density,
``η`` a fixed shift that starts the density at ``init_density`` on average; (4) initialisation
as MFN's: filter frequencies ``Ω`` uniform in ``±2π·s/√L`` (``s`` = ``mulfagrid_filter_scale``,
cycles per box edge) and phases ``ψ`` uniform in ``±π``; linear layers uniform in
``±1/√fan_in``, the kernel's last layer ``w_L`` in ``±0.01/√H`` so that the kernel starts close
to trilinear and still passes gradients to every layer; the grid features ``0.1 · N(0, 1)``.
A vertex is interpolated exactly: at ``x = x_v`` only ``v`` has a non-zero weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recon.model.fields.base import Field, field_generator, init_linear
from recon.model.fields.config import voxel_shape

__all__ = ["MulFAGridField"]

#: The eight corner offsets c of a cell, (8, 3) as (x, y, z).
_CORNERS = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)])


class MulFAGridField(Field):
    """A feature grid interpolated by a learned, position-adaptive kernel (module docstring).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``, ``shift``, ``grid``
    (C, n_z, n_y, n_x), ``layers.{l}.weight|bias`` (the ``W_l``, ``b_l``), ``filters.{l}.weight|bias``
    (the ``Ω_l``, ``ψ_l``), ``kernel_head.weight`` (``w_L``), ``head.weight|bias`` (``h``).
    """

    kind = "mulfagrid"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        resolution: int | tuple[int, int, int] = 64,
        channels: int = 4,
        width: int = 16,
        layers: int = 2,
        frequencies: int = 4,
        filter_scale: float = 4.0,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation, init_density=init_density)
        nz, ny, nx = voxel_shape(resolution)
        if min(nx, ny, nz) < 2:
            raise ValueError(f"MulFAGridField: need at least 2 vertices per axis, got {(nx, ny, nz)} "
                             "(x, y, z)")
        if channels < 1 or width < 1 or layers < 1 or frequencies < 1 or not filter_scale > 0:
            raise ValueError("MulFAGridField: channels, width, layers and frequencies must be ≥ 1 and "
                             f"filter_scale > 0, got {channels}, {width}, {layers}, {frequencies}, "
                             f"{filter_scale}")
        self.resolution = (nx, ny, nz)
        self.channels, self.width, self.n_layers = int(channels), int(width), int(layers)
        self.frequencies, self.filter_scale = int(frequencies), float(filter_scale)
        gen = field_generator(seed, 7)
        self.grid = nn.Parameter(0.1 * torch.randn(channels, nz, ny, nx, generator=gen))
        self.layers = nn.ModuleList()
        self.filters = nn.ModuleList()
        fan_in = 6 * frequencies
        omega = 2 * math.pi * filter_scale / math.sqrt(layers)
        for _ in range(layers):
            layer = nn.Linear(fan_in, width)
            init_linear(layer, gen, 1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            self.layers.append(layer)
            filt = nn.Linear(3, width)
            init_linear(filt, gen, omega, math.pi)
            self.filters.append(filt)
            fan_in = width
        self.kernel_head = nn.Linear(width, 1, bias=False)  # a constant would cancel in the normalisation
        with torch.no_grad():
            self.kernel_head.weight.uniform_(-0.01 / math.sqrt(width), 0.01 / math.sqrt(width), generator=gen)
        self.head = nn.Linear(channels, 1)
        init_linear(self.head, gen, 1 / math.sqrt(channels), 0.0)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("_octaves", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32),
                             persistent=False)
        self.to(device if device is not None else "cpu")
        self._centre_output(self.shift, seed)

    def kernel_weights(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell's vertices and their normalised kernel weights at (N, 3) positions u in [0, 1]^3.

        Returns:
            (N, 8) long flat vertex indices into the grid (``(z · n_y + y) · n_x + x``), and (N, 8)
            weights ``φ(x, v) / Σ_v φ(x, v)`` (each row sums to 1).
        """
        n = torch.tensor(self.resolution, device=u.device)
        p = u.clamp(0.0, 1.0) * (n - 1).to(u.dtype)
        base = torch.minimum(p.floor().long(), n - 2)  # (N, 3)
        delta = p - base.to(p.dtype)
        corners = _CORNERS.to(u.device)
        vertex = base[:, None, :] + corners  # (N, 8, 3)
        e = delta[:, None, :] - corners.to(p.dtype)  # the point's offset from each vertex, in [−1, 1]
        tri = (1 - e.abs()).prod(-1)  # (N, 8)
        angles = e[..., None] * self._octaves.to(p.dtype)  # (N, 8, 3, F)
        z = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (N, 8, 6F)
        u_v = vertex.to(p.dtype) / (n - 1).to(p.dtype)
        for layer, filt in zip(self.layers, self.filters, strict=True):
            z = layer(z) * torch.sin(filt(u_v))
        phi = tri * torch.exp(self.kernel_head(z).squeeze(-1))
        weights = phi / phi.sum(-1, keepdim=True)
        flat = (vertex[..., 2] * n[1] + vertex[..., 1]) * n[0] + vertex[..., 0]
        return flat, weights

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) the head of the kernel-weighted vertex features, plus the shift."""
        flat, weights = self.kernel_weights(u)
        features = self.grid.reshape(self.channels, -1)[:, flat]  # (C, N, 8)
        mixed = (features * weights).sum(-1).T  # (N, C)
        return self.head(mixed).squeeze(-1) + self.shift

    def extra_repr(self) -> str:
        """Adds the grid and kernel sizes to the base description."""
        return (f"{super().extra_repr()}, resolution={self.resolution}, channels={self.channels}, "
                f"width={self.width}, layers={self.n_layers}, frequencies={self.frequencies}, "
                f"filter_scale={self.filter_scale:g}")
