"""Properties every field has: non-negative, zero outside the box, shapes, gradients, the gain, grids."""

import math

import numpy as np
import pytest
import torch

from recon.errors import ConfigError, ShapeError
from recon.model.fields.base import box_grid
from recon.model.fields.registry import make_field
from tests.recon.model.fields.small import BOX, points_in_box, small_config


@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_density_nonnegative_even_for_very_negative_raw(kind, activation):
    field = make_field(small_config(kind, activation=activation), *BOX, seed=1)
    with torch.no_grad():  # drive the raw output far below zero everywhere
        for name, p in field.named_parameters():
            if name.endswith("bias") or name == "grid":
                p.fill_(-200.0)
    density = field(points_in_box(2000))
    assert torch.isfinite(density).all() and (density >= 0).all()


def test_initial_density_is_init_density(kind):
    field = make_field(small_config(kind, init_density=3.5e4), *BOX, seed=2)
    with torch.no_grad():
        density = field(points_in_box(4000, seed=5))
    assert float(density.mean()) == pytest.approx(3.5e4, rel=0.02)
    assert float(density.min()) > 0


def test_zero_outside_box_and_at_nan_with_finite_gradients(kind):
    field = make_field(small_config(kind), *BOX, seed=3)
    lo, hi = BOX
    outside = torch.tensor([
        [hi[0] + 1e-3, 0, 0], [lo[0] - 1e-3, 0, 0], [0, hi[1] + 0.5, 0], [0, lo[1] - 2, 0],
        [0, 0, hi[2] + 1e-4], [0, 0, lo[2] - 10], [float("nan"), 0, 0], [0, float("inf"), 0],
    ])
    inside = points_in_box(3, seed=1)
    density = field(torch.cat([outside, inside]))
    assert torch.equal(density[:8], torch.zeros(8))
    assert (density[8:] > 0).all()
    field(outside).sum().backward()
    for p in field.parameters():
        assert p.grad is None or (torch.isfinite(p.grad).all() and not p.grad.any())


def test_box_corners_are_inside(kind):
    field = make_field(small_config(kind), *BOX)
    corners = torch.tensor(BOX)
    assert (field(corners) > 0).all()
    torch.testing.assert_close(field.normalize(corners), torch.tensor([[0.0] * 3, [1.0] * 3]))


@pytest.mark.parametrize("batch", [(0,), (1,), (5,), (), (2, 3)])
def test_output_shapes(kind, batch):
    field = make_field(small_config(kind), *BOX)
    points = points_in_box(math.prod(batch)).reshape(*batch, 3)
    assert field(points).shape == batch


def test_bad_points_shape_raises(kind):
    field = make_field(small_config(kind), *BOX)
    with pytest.raises(ShapeError, match=r"\(\.\.\., 3\)"):
        field(torch.zeros(4, 2))


def test_log_gain_scales_the_whole_density(kind):
    field = make_field(small_config(kind), *BOX, seed=2)
    pts = points_in_box(500, seed=3)
    before = field(pts).detach()
    with torch.no_grad():
        field.log_gain.fill_(math.log(2.0))
    assert torch.allclose(field(pts), 2 * before, rtol=1e-5)


def test_gradients_reach_every_parameter(kind):
    field = make_field(small_config(kind), *BOX, seed=5)
    field(points_in_box(3000, seed=6)).square().mean().backward()
    for name, p in field.named_parameters():
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradcheck_in_float64_wrt_points_and_parameters(kind):
    """Autodiff's ∇ρ against central differences at points inside the box, and the parameters'
    gradient against the central difference along a random direction in parameter space."""
    field = make_field(small_config(kind), *BOX, seed=3).double()
    centre = torch.tensor(BOX, dtype=torch.float64).mean(0)
    points = centre + 0.8 * (points_in_box(6, seed=4).double() - centre)  # away from the faces
    assert torch.autograd.gradcheck(field, (points.requires_grad_(),), eps=1e-6, atol=1e-6, rtol=1e-4)
    params = [p for p in field.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    weights = torch.randn(len(points), generator=gen, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return (weights * field(points.detach())).sum()

    grads = torch.autograd.grad(loss(), params)
    along = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction, strict=True):
            p.add_(eps * d)
        up = float(loss())
        for p, d in zip(params, direction, strict=True):
            p.sub_(2 * eps * d)
        down = float(loss())
    assert along == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_box_grid_tiles_the_box():
    shape, origin, spacing = box_grid(*BOX, (4, 5, 6))
    assert shape == (4, 5, 6)
    np.testing.assert_allclose(spacing, (2.4 / 6, 2.0 / 5, 1.6 / 4))
    np.testing.assert_allclose(origin, np.array(BOX[0]) + np.array(spacing) / 2)
    shape, _, spacing = box_grid(*BOX, voxel_size_mm=0.2)
    assert shape == (8, 10, 12)
    np.testing.assert_allclose(spacing, (0.2, 0.2, 0.2))
    shape, _, spacing = box_grid(*BOX, voxel_size_mm=0.7)  # 2.4/0.7 -> 3 voxels of 0.8 mm
    assert shape == (2, 3, 3) and spacing[0] == pytest.approx(0.8)
    with pytest.raises(ConfigError):
        box_grid(*BOX)


def test_sample_grid_of_every_kind(kind):
    field = make_field(small_config(kind, init_density=2.0), *BOX)
    volume = field.sample_grid(voxel_size_mm=0.4, chunk=50)
    assert volume.shape == (4, 5, 6) and volume.data.dtype == np.float32
    assert np.all(volume.data > 0)
    assert volume.meta["field"] == kind


def test_box_validation():
    with pytest.raises(ConfigError, match="box_min_mm < box_max_mm"):
        make_field(small_config("voxel"), (0, 0, 0), (1, 0, 1))
    with pytest.raises(ShapeError):
        make_field(small_config("voxel"), (0, 0), (1, 1))


def test_double_precision_field():
    field = make_field(small_config("hashgrid"), *BOX).double()
    density = field(points_in_box(10).double())
    assert density.dtype == torch.float64 and (density > 0).all()
