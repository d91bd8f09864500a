"""Gaussian-activation MLP (Ramasinghe & Lucey, ECCV 2022, arXiv:2111.15135; Chng et al., GARF, ECCV 2022).

Every hidden layer is ``h ← ψ(W h + b)`` with ``ψ(x) = exp(−x² / (2a²))``: a non-periodic
activation whose width ``a`` (``FieldConfig.gauss_a``) sets the bandwidth the network fits, so
the position needs no Fourier encoding; the input is ``p = 2u − 1 ∈ [−1, 1]³`` for the position
``u ∈ [0, 1]³`` in the box. ``mlp_hidden_layers`` such layers of ``mlp_width`` and a linear head.

Choices the papers leave open, made here: ``a = 0.1`` by default (the value common in the
authors' and others' public coordinate-MLP code; smaller is sharper and noisier); ``a`` fixed,
not learned; weights and biases with torch's default bounds ``U(±1/√fan_in)`` (the papers
prescribe no special initialisation); the head's bias set so that the density starts at
``init_density`` on average over the box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recon.model.fields.base import Field, field_generator, init_linear

__all__ = ["GaussianMLPField"]


class GaussianMLPField(Field):
    """Gaussian-activated MLP on the position (module docstring).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``,
    ``layers.{i}.weight``, ``layers.{i}.bias``, ``head.weight``, ``head.bias``.
    """

    kind = "gauss"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        hidden_layers: int = 4,
        hidden_width: int = 256,
        a: float = 0.1,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation, init_density=init_density)
        if not a > 0:
            raise ValueError(f"GaussianMLPField: a must be > 0, got {a}")
        self.a = float(a)
        gen = field_generator(seed, 5)
        self.layers = nn.ModuleList()
        fan_in = 3
        for _ in range(hidden_layers):
            layer = nn.Linear(fan_in, hidden_width)
            init_linear(layer, gen, 1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            self.layers.append(layer)
            fan_in = hidden_width
        self.head = nn.Linear(fan_in, 1)
        init_linear(self.head, gen, 1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.to(device if device is not None else "cpu")
        self._centre_output(self.head.bias, seed)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) pre-activation output."""
        h = 2 * u - 1
        scale = -0.5 / self.a**2
        for layer in self.layers:
            h = torch.exp(scale * layer(h).square())
        return self.head(h).squeeze(-1)

    def extra_repr(self) -> str:
        """Adds a to the base description."""
        return f"{super().extra_repr()}, a={self.a:g}"
