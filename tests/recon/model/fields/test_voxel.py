"""The voxel field: its values at voxel centres; the truncated exponential's gradient."""

import math

import numpy as np
import pytest
import torch

from recon.errors import ShapeError
from recon.io.volume import Volume
from recon.model.fields.voxel import VoxelField
from tests.recon.model.fields.small import BOX


def test_truncated_exp_keeps_gradient_beyond_clamp():
    field = VoxelField(*BOX, resolution=2, activation="exp")
    with torch.no_grad():
        field.grid.fill_(40.0)
    density = field(torch.zeros(1, 3))
    density.sum().backward()
    assert float(density.detach()) == pytest.approx(math.exp(15.0), rel=1e-6)
    assert float(field.grid.grad.sum()) == pytest.approx(math.exp(15.0), rel=1e-5)


def test_voxel_field_reproduces_its_values_at_voxel_centres():
    field = VoxelField(*BOX, resolution=(6, 5, 4), init_density=100.0)
    assert field.shape == (4, 5, 6)
    values = 100.0 * torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(0)) + 1.0
    field.set_density(values)
    volume = field.sample_grid((4, 5, 6), unit="atoms/mm^3")
    assert isinstance(volume, Volume) and volume.unit == "atoms/mm^3"
    assert volume.shape == (4, 5, 6)
    np.testing.assert_allclose(volume.data, values.numpy(), rtol=1e-4)
    np.testing.assert_allclose(volume.origin_mm, np.array(BOX[0]) + np.array((0.2, 0.2, 0.2)))
    # trilinear in the raw values: midway between two centres along x, the mean raw value
    mid = torch.tensor(volume.origin_mm) + torch.tensor([0.5 * 0.4, 0.0, 0.0])
    raw = torch.log(torch.expm1(values[0, 0, :2] / 100.0))  # softplus⁻¹
    expected = 100.0 * torch.nn.functional.softplus(raw.mean())
    torch.testing.assert_close(field(mid[None]).detach()[0], expected, rtol=1e-4, atol=0.0)
    with pytest.raises(ShapeError):
        field.set_density(torch.ones(4, 5))
