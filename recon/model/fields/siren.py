"""SIREN: a sine-activated MLP (Sitzmann et al., NeurIPS 2020, arXiv:2006.09661)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recon.model.fields.base import Field, field_generator, init_linear

__all__ = ["SirenField"]


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
        gen = field_generator(seed, 2)
        self.layers = nn.ModuleList()
        fan_in = 3
        for i in range(hidden_layers):
            layer = nn.Linear(fan_in, width)
            bound = 1 / fan_in if i == 0 else math.sqrt(6 / fan_in) / self.omega0
            init_linear(layer, gen, bound, 1 / math.sqrt(fan_in))
            self.layers.append(layer)
            fan_in = width
        self.head = nn.Linear(fan_in, 1)
        init_linear(self.head, gen, math.sqrt(6 / fan_in) / self.omega0, 1 / math.sqrt(fan_in))
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
