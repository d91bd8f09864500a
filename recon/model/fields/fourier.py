"""Fourier-feature MLP (Tancik et al., NeurIPS 2020, arXiv:2006.10739) and NeRF's positional encoding.

A ReLU MLP sees the position through a fixed map γ of sines and cosines, which lets it fit
frequencies a plain coordinate MLP cannot (its neural tangent kernel becomes stationary, with a
bandwidth set by the frequencies). Two maps, ``FieldConfig.fourier_encoding``:

- ``"gaussian"`` (Tancik et al.'s Gaussian random features): with ``u ∈ [0, 1]³`` the position
  in the box, ``γ(u) = [cos(2π B u), sin(2π B u)]`` (2m features), the rows of ``B`` (m × 3)
  drawn once from ``N(0, σ² I)`` (m = ``fourier_features``, σ = ``fourier_scale``, in cycles
  per box edge) and kept in the state dict. The paper sets every amplitude ``a_j = 1``, as here;
  it leaves σ to a sweep per task (σ = 10 by default here: periods down to ≈ a tenth of the box
  at 1 σ, 240 µm in data/run042's 2.4 mm box, and finer in the tails).
- ``"positional"`` (NeRF, Mildenhall et al. 2020): with ``p = 2u − 1 ∈ [−1, 1]³``,
  ``γ(p) = [p, sin(2⁰πp), cos(2⁰πp), …, sin(2^{L−1}πp), cos(2^{L−1}πp)]`` per axis
  (3 + 6L features, L = ``fourier_frequencies``; NeRF keeps p itself, as here).

The MLP: ``mlp_hidden_layers`` ReLU layers of ``mlp_width`` (Tancik et al.: 4 × 256) and a linear
head, torch's default initialisation (:func:`recon.model.fields.base.relu_mlp`), the head's
bias set so that the density starts at ``init_density`` on average over the box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from recon.model.fields.base import Field, field_generator, relu_mlp
from recon.model.fields.config import FOURIER_ENCODINGS

__all__ = ["FourierFeatureField"]


class FourierFeatureField(Field):
    """Fourier features of the position, then a ReLU MLP (module docstring).

    ``state_dict`` keys: ``box_min_mm``, ``box_max_mm``, ``density_scale``, ``frequencies``
    (the m × 3 matrix B of ``"gaussian"``; (L,) the multiples of π of ``"positional"``),
    ``mlp.{i}.weight``, ``mlp.{i}.bias``.
    """

    kind = "fourier"

    def __init__(
        self,
        box_min_mm: Sequence[float],
        box_max_mm: Sequence[float],
        *,
        encoding: str = "gaussian",
        features: int = 256,
        scale: float = 10.0,
        frequencies: int = 10,
        hidden_layers: int = 4,
        hidden_width: int = 256,
        activation: str = "softplus",
        init_density: float = 1.0,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(box_min_mm, box_max_mm, activation=activation, init_density=init_density)
        if encoding not in FOURIER_ENCODINGS:
            raise ValueError(f"FourierFeatureField: encoding must be one of {FOURIER_ENCODINGS}, "
                             f"got {encoding!r}")
        self.encoding = encoding
        if encoding == "gaussian":
            b = torch.randn(features, 3, generator=field_generator(seed, 3), dtype=torch.float64) * scale
            width_in = 2 * features
        else:
            b = 2.0 ** torch.arange(frequencies, dtype=torch.float64)
            width_in = 3 + 6 * frequencies
        self.register_buffer("frequencies", b.float())
        self.mlp = relu_mlp(width_in, hidden_layers, hidden_width, field_generator(seed, 4))
        self.to(device if device is not None else "cpu")
        self._centre_output(self.mlp[-1].bias, seed)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) positions in [0, 1]³ -> (N, width_in) γ(u) (module docstring)."""
        b = self.frequencies.to(u.dtype)
        if self.encoding == "gaussian":
            angle = 2 * math.pi * (u @ b.T)  # (N, m)
            return torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)
        p = 2 * u - 1
        angle = math.pi * p[:, :, None] * b  # (N, 3, L)
        return torch.cat([p, torch.sin(angle).flatten(1), torch.cos(angle).flatten(1)], dim=-1)

    def raw(self, u: torch.Tensor) -> torch.Tensor:
        """(N, 3) in [0, 1]^3 -> (N,) pre-activation output."""
        return self.mlp(self.features(u)).squeeze(-1)

    def extra_repr(self) -> str:
        """Adds the encoding and its size to the base description."""
        shape = tuple(self.frequencies.shape)
        return f"{super().extra_repr()}, encoding={self.encoding!r}, frequencies={shape}"
