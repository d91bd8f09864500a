"""The hash-grid field: multiresolution hash encoding followed by a small ReLU MLP (instant-ngp)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recon.model.encoding import make_encoding
from recon.model.fields.base import Field, field_generator, relu_mlp
from recon.model.hashgrid import HashGridConfig

__all__ = ["HashGridField"]


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
        gen = field_generator(seed, 1)
        self.mlp = relu_mlp(self.encoding.n_output_dims, hidden_layers, hidden_width, gen)
        self.to(device)
        self._centre_output(self.mlp[-1].bias, seed)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) pre-activation output."""
        features = self.encoding(u).to(self.dtype)  # (N, n_levels * F)
        return self.mlp(features).squeeze(-1)
