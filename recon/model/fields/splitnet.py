r"""SplitNet: an MLP whose every hidden layer splits its neurons among several activations.

Kilianovskyi, "Split Activation Networks for Neural Fields" (master thesis, Ukrainian Catholic
University), as its public code builds it: a hidden layer maps ``h`` to four pre-activations of
the layer's width, ``[a, b, c, d] = W h + β`` (W of shape (4·width, fan_in)), and returns their
activations multiplied neuron by neuron,

.. math::

    h' = \tanh(a) \odot \sigma(b) \odot \sin(ω c) \odot \cos(ω d),

so that each neuron combines a saturating, a gating and two periodic responses; ``mlp_hidden_layers``
such layers of ``mlp_width`` on the position ``p = 2u − 1 ∈ [−1, 1]³`` (``u`` in the box's unit cube)
and a linear head.

**LSUV initialisation** (Mishkin & Matas, "All you need is a good init", ICLR 2016): each
layer's W starts orthonormal (rows orthonormal where 4·width ≤ fan_in, else columns), β = 0; then,
layer by layer on a batch of points drawn uniformly in the box, each branch's rows are rescaled
until its pre-activation has unit variance over the batch (LSUV's criterion, applied to each of the
four branches, whose activations differ), at most ten rescalings to a tolerance of 1 %. The head
keeps torch's default bounds; its bias is set so that the density starts at ``init_density`` on
average over the box.

Choices the thesis leaves open, made here: ``ω = 1`` by default (``splitnet_omega``; its plain
layer has no frequency factor, its variants try others); no positional encoding (the thesis also
tries Gaussian Fourier features in front); the LSUV batch holds 4096 points from the field's
seed; the unit-variance target is on the branches' pre-activations (the product of four
bounded responses cannot itself have unit variance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recon.model.fields.base import Field, field_generator, init_linear

__all__ = ["LSUV_POINTS", "SplitNetField", "split_activation"]

#: Points of the batch LSUV scales the layers on.
LSUV_POINTS = 4096

_LSUV_TOLERANCE = 0.01
_LSUV_ITERATIONS = 10


def split_activation(z: torch.Tensor, omega: float) -> torch.Tensor:
    """(N, 4·w) pre-activations ``[a, b, c, d]`` -> (N, w) ``tanh(a) σ(b) sin(ω c) cos(ω d)``."""
    a, b, c, d = z.chunk(4, dim=-1)
    return torch.tanh(a) * torch.sigmoid(b) * torch.sin(omega * c) * torch.cos(omega * d)


class SplitNetField(Field):
    """Split-activation MLP on the position (module docstring).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``,
    ``layers.{i}.weight`` (4·width, fan_in), ``layers.{i}.bias``, ``head.weight``, ``head.bias``.
    """

    kind = "splitnet"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        hidden_layers: int = 4,
        hidden_width: int = 256,
        omega: float = 1.0,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation, init_density=init_density)
        if not (math.isfinite(omega) and omega > 0):
            raise ValueError(f"SplitNetField: omega must be > 0, got {omega}")
        if hidden_layers < 1 or hidden_width < 1:
            raise ValueError(f"SplitNetField: need hidden_layers ≥ 1 and hidden_width ≥ 1, got "
                             f"{hidden_layers} and {hidden_width}")
        self.omega = float(omega)
        gen = field_generator(seed, 7)
        self.layers = nn.ModuleList()
        fan_in = 3
        for _ in range(hidden_layers):
            layer = nn.Linear(fan_in, 4 * hidden_width)
            with torch.no_grad():
                layer.weight.copy_(_orthonormal(4 * hidden_width, fan_in, gen))
                layer.bias.zero_()
            self.layers.append(layer)
            fan_in = hidden_width
        self.head = nn.Linear(fan_in, 1)
        init_linear(self.head, gen, 1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self._lsuv(torch.rand(LSUV_POINTS, 3, generator=gen, dtype=torch.float64))
        self.to(device if device is not None else "cpu")
        self._centre_output(self.head.bias, seed)

    @torch.no_grad()
    def _lsuv(self, u: torch.Tensor) -> None:
        """Rescale each layer's four branches to unit pre-activation variance on the points u (N, 3)."""
        h = (2 * u - 1).to(self.head.weight.dtype)
        for layer in self.layers:
            width = layer.out_features // 4
            for _ in range(_LSUV_ITERATIONS):
                sd = layer(h).reshape(len(h), 4, width).transpose(0, 1).reshape(4, -1).std(dim=1)
                if bool(((sd - 1).abs() <= _LSUV_TOLERANCE).all()):
                    break
                layer.weight.mul_((1 / sd.clamp_min(1e-12)).repeat_interleave(width)[:, None])
            h = split_activation(layer(h), self.omega)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) pre-activation output."""
        h = 2 * u - 1
        for layer in self.layers:
            h = split_activation(layer(h), self.omega)
        return self.head(h).squeeze(-1)

    def extra_repr(self) -> str:
        """Adds ω to the base description."""
        return f"{super().extra_repr()}, omega={self.omega:g}"


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """(rows, cols) with orthonormal rows (rows ≤ cols) or columns (rows > cols), from ``gen``."""
    q, r = torch.linalg.qr(torch.randn(max(rows, cols), min(rows, cols), generator=gen))
    q = q * torch.sign(torch.diagonal(r))  # a unique factorisation: Haar-distributed q
    return q if rows >= cols else q.T
