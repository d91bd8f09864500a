"""Small field configurations and points shared by the field tests."""

import torch

from recon.model.fields.config import FieldConfig
from recon.model.hashgrid import HashGridConfig

BOX = ((-1.2, -1.0, -0.8), (1.2, 1.0, 0.8))  # mm, deliberately not a cube


SMALL_HASH = HashGridConfig(n_levels=3, log2_hashmap_size=10, base_resolution=4,
                            per_level_scale=1.9)


def small_config(kind, **kw):
    """Fields small enough for fast tests (the defaults are exercised by the bench)."""
    return FieldConfig(kind=kind, encoding=SMALL_HASH, voxel_resolution=(6, 5, 4),
                       siren_hidden_layers=2, siren_width=16, mlp_hidden_layers=2, mlp_width=16,
                       fourier_features=8, mulfagrid_resolution=(5, 4, 3), mulfagrid_channels=2,
                       mulfagrid_width=8, mulfagrid_frequencies=2, **kw)


def points_in_box(n, seed=0, box=BOX):
    lo, hi = torch.tensor(box[0]), torch.tensor(box[1])
    return lo + (hi - lo) * torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))


def roughness(field) -> float:
    """Total variation of the density along the box's x axis, over its range (how fast it wiggles)."""
    line = torch.stack([torch.linspace(-1.1, 1.1, 2001), torch.zeros(2001), torch.zeros(2001)], dim=1)
    with torch.no_grad():
        d = field(line)
    return float(d.diff().abs().sum() / (d.max() - d.min()))
