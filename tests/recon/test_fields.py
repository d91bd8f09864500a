"""Density fields: non-negativity, the box mask, shapes, seeds, checkpoints, voxel grids."""

import json
import math

import numpy as np
import pytest
import torch

from recon.encoding import HashGridConfig, tcnn_status
from recon.errors import BackendUnavailableError, ConfigError, ShapeError
from recon.fields import (
    FIELD_KINDS,
    FieldConfig,
    HashGridField,
    SirenField,
    VoxelField,
    box_grid,
    make_field,
)
from recon.volume import Volume

BOX = ((-1.2, -1.0, -0.8), (1.2, 1.0, 0.8))  # mm, deliberately not a cube
SMALL_HASH = HashGridConfig(n_levels=3, log2_hashmap_size=10, base_resolution=4,
                            per_level_scale=1.9)


def small_config(kind, **kw):
    """Fields small enough for fast tests (the defaults are exercised by the bench)."""
    return FieldConfig(kind=kind, encoding=SMALL_HASH, voxel_resolution=(6, 5, 4),
                       siren_hidden_layers=2, siren_width=16, **kw)


def points_in_box(n, seed=0, box=BOX):
    lo, hi = torch.tensor(box[0]), torch.tensor(box[1])
    return lo + (hi - lo) * torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=FIELD_KINDS)
def kind(request):
    return request.param


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


def test_deterministic_given_seed_and_checkpointable(kind):
    cfg = small_config(kind)
    a = make_field(cfg, *BOX, seed=11)
    b = make_field(cfg, *BOX, seed=11)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    points = points_in_box(100, seed=4)
    with torch.no_grad():  # a "trained" state: perturb, save, load into a fresh field
        for p in a.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(9)))
    c = make_field(cfg, *BOX, seed=12)
    c.load_state_dict(a.state_dict())
    assert torch.equal(a(points), c(points))
    assert {"box_min_mm", "box_max_mm", "density_scale"} <= set(a.state_dict())


def test_different_seeds_differ():
    for kind in ("hashgrid", "siren"):
        a = make_field(small_config(kind), *BOX, seed=0).state_dict()
        b = make_field(small_config(kind), *BOX, seed=1).state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a)


def test_hashgrid_checkpoint_keys():
    field = make_field(small_config("hashgrid"), *BOX, backend="torch")
    assert list(field.state_dict()) == [
        "log_gain", "box_min_mm", "box_max_mm", "density_scale", "encoding.params",
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    assert field.backend == "torch" and field.config.kind == "hashgrid"


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


def test_hashgrid_field_gradcheck_wrt_points_float64():
    field = HashGridField(*BOX, encoding=SMALL_HASH, hidden_layers=1, hidden_width=8,
                          backend="torch", seed=3).double()
    with torch.no_grad():
        field.encoding.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    points = points_in_box(4, seed=8).double().mul(0.9).requires_grad_()
    assert torch.autograd.gradcheck(field, (points,))


def test_truncated_exp_keeps_gradient_beyond_clamp():
    field = VoxelField(*BOX, resolution=2, activation="exp")
    with torch.no_grad():
        field.grid.fill_(40.0)
    density = field(torch.zeros(1, 3))
    density.sum().backward()
    assert float(density.detach()) == pytest.approx(math.exp(15.0), rel=1e-6)
    assert float(field.grid.grad.sum()) == pytest.approx(math.exp(15.0), rel=1e-5)


# ------------------------------------------------------------------------------- voxel grids


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


def test_sample_grid_of_every_kind(kind):
    field = make_field(small_config(kind, init_density=2.0), *BOX)
    volume = field.sample_grid(voxel_size_mm=0.4, chunk=50)
    assert volume.shape == (4, 5, 6) and volume.data.dtype == np.float32
    assert np.all(volume.data > 0)
    assert volume.meta["field"] == kind


# ----------------------------------------------------------------------------- configuration


def test_field_config_roundtrip_and_validation():
    cfg = FieldConfig(kind="voxel", voxel_resolution=(8, 9, 10), activation="exp",
                      init_density=5.0, encoding=SMALL_HASH)
    again = FieldConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert FieldConfig.from_dict(FieldConfig().to_dict()) == FieldConfig()
    with pytest.raises(ConfigError, match="unknown keys"):
        FieldConfig.from_dict({"kind": "voxel", "resolution": 3})
    with pytest.raises(ConfigError, match="kind"):
        FieldConfig(kind="nerf")
    with pytest.raises(ConfigError, match="activation"):
        FieldConfig(activation="relu")
    with pytest.raises(ConfigError, match="init_density"):
        FieldConfig(init_density=0.0)
    with pytest.raises(ConfigError, match="voxel_resolution"):
        FieldConfig(voxel_resolution=(4, 4))


def test_box_validation():
    with pytest.raises(ConfigError, match="box_min_mm < box_max_mm"):
        make_field(small_config("voxel"), (0, 0, 0), (1, 0, 1))
    with pytest.raises(ShapeError):
        make_field(small_config("voxel"), (0, 0), (1, 1))


def test_backend_requests():
    with pytest.raises(ConfigError, match="hashgrid fields only"):
        make_field(small_config("voxel"), *BOX, backend="tcnn")
    with pytest.raises(ConfigError, match="backend must be one of"):
        make_field(small_config("siren"), *BOX, backend="gpu")
    assert make_field(small_config("siren"), *BOX, backend="auto").backend == "torch"


@pytest.mark.skipif(tcnn_status()[0], reason="tinycudann is usable here")
def test_hashgrid_tcnn_unavailable_is_an_error_not_a_downgrade():
    with pytest.raises(BackendUnavailableError, match="--backend torch"):
        make_field(small_config("hashgrid"), *BOX, backend="tcnn")


def test_siren_sitzmann_initialisation():
    field = SirenField(*BOX, hidden_layers=3, width=64, omega0=30.0, seed=0)
    first, second = field.layers[0].weight, field.layers[1].weight
    assert first.abs().max() <= 1 / 3
    assert second.abs().max() <= math.sqrt(6 / 64) / 30
    assert field.head.weight.abs().max() <= math.sqrt(6 / 64) / 30
    assert len(field.layers) == 3


def test_double_precision_field():
    field = make_field(small_config("hashgrid"), *BOX).double()
    density = field(points_in_box(10).double())
    assert density.dtype == torch.float64 and (density > 0).all()
