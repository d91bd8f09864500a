"""The voxel field: a dense grid of voxel values, trilinearly interpolated (the classical baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recon.errors import ShapeError
from recon.model.fields.base import Field, inverse_activation, raw_for_unit_density
from recon.model.fields.config import voxel_shape

__all__ = ["VoxelField"]


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
        zyx = voxel_shape(resolution)
        self.grid = nn.Parameter(torch.full((1, 1, *zyx), raw_for_unit_density(activation)))
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
        self.grid.copy_(inverse_activation(relative, self.activation)[None, None])
