"""MulFAGrid: its kernel is a positive partition of unity over a cell, trilinear where its network is flat."""

import pytest
import torch
import torch.nn.functional as F

from recon.errors import ConfigError
from recon.model.fields.config import FieldConfig
from recon.model.fields.mulfagrid import MulFAGridField
from tests.recon.model.fields.small import BOX, points_in_box


def _field(seed=0, **kw):
    options = {"resolution": (5, 4, 6), "channels": 3, "width": 8, "layers": 2, "frequencies": 3, **kw}
    return MulFAGridField(*BOX, seed=seed, **options).double()


def _unit(n, seed):
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _with_kernel_head(field, scale):
    with torch.no_grad():
        field.kernel_head.weight.normal_(0.0, scale, generator=torch.Generator().manual_seed(9))
    return field


def test_the_kernel_weights_are_a_partition_of_unity_over_the_cells_vertices():
    field = _with_kernel_head(_field(), 1.0)  # far from trilinear
    u = _unit(200, 1)
    flat, weights = field.kernel_weights(u)
    assert flat.shape == weights.shape == (200, 8)
    assert bool((weights >= 0).all())
    assert torch.allclose(weights.sum(-1), torch.ones(200, dtype=torch.float64))
    nx, ny, nz = field.resolution
    x, y, z = flat % nx, (flat // nx) % ny, flat // (nx * ny)
    p = u * torch.tensor([nx - 1, ny - 1, nz - 1], dtype=torch.float64)
    for axis, index in enumerate((x, y, z)):  # every vertex is a corner of the point's cell
        assert bool(((index - p[:, axis : axis + 1]).abs() < 1).all())


def test_with_a_flat_kernel_network_it_is_trilinear_interpolation_of_the_features():
    field = _field(seed=2)
    with torch.no_grad():
        field.kernel_head.weight.zero_()
    u = _unit(100, 3)
    nx, ny, nz = field.resolution
    grid = field.grid[None]  # (1, C, nz, ny, nx)
    coords = (2 * u - 1).reshape(1, -1, 1, 1, 3)
    features = F.grid_sample(grid, coords, mode="bilinear", align_corners=True).reshape(field.channels, -1).T
    expected = field.head(features).squeeze(-1) + field.shift
    assert torch.allclose(field.raw(u), expected, atol=1e-12)


def test_a_vertex_is_its_own_features_whatever_the_kernel():
    field = _with_kernel_head(_field(seed=4), 2.0)
    nx, ny, nz = field.resolution
    vertices = torch.tensor([[0, 0, 0], [nx - 1, ny - 1, nz - 1], [2, 1, 3], [1, 3, 5]])
    u = vertices.double() / torch.tensor([nx - 1, ny - 1, nz - 1], dtype=torch.float64)
    raw = field.raw(u)
    for (x, y, z), value in zip(vertices.tolist(), raw, strict=True):
        assert torch.allclose(value, field.head(field.grid[:, z, y, x])[0] + field.shift, atol=1e-12)


def test_the_kernel_adapts_over_the_grid():
    """The same offset within two cells gets other weights (the filters see the vertex), and not trilinear."""
    field = _with_kernel_head(_field(seed=5, filter_scale=2.0), 1.0)
    nx, ny, nz = field.resolution
    step = torch.tensor([1 / (nx - 1), 1 / (ny - 1), 1 / (nz - 1)], dtype=torch.float64)
    offset = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64)
    a = (torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64) + offset) * step
    b = (torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64) + offset) * step
    (_, wa), (_, wb) = field.kernel_weights(a[None]), field.kernel_weights(b[None])
    assert (wa - wb).abs().max() > 1e-3
    corners = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)]).double()
    trilinear = (1 - (offset - corners).abs()).prod(-1)
    assert (wa[0] - trilinear).abs().max() > 1e-3


def test_gradcheck_in_float64():
    field = _field(seed=6, resolution=3, channels=2, width=4, frequencies=1)
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in BOX)
    points = lo + (hi - lo) * _unit(5, 7)
    names = [name for name, _ in field.named_parameters()]
    assert {"grid", "kernel_head.weight", "filters.0.weight", "layers.1.bias", "head.weight"} <= set(names)
    for name, p in field.named_parameters():  # every parameter's gradient against finite differences
        def density(value, name=name):
            return torch.func.functional_call(field, {name: value}, (points,))
        assert torch.autograd.gradcheck(density, (p.detach().clone().requires_grad_(),), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(field, (points.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


def test_parameters_and_bad_options():
    field = MulFAGridField(*BOX, resolution=(8, 6, 4), channels=4, width=16, layers=2, frequencies=4)
    n = dict(field.named_parameters())
    assert n["grid"].shape == (4, 4, 6, 8)
    assert n["layers.0.weight"].shape == (16, 24) and n["layers.1.weight"].shape == (16, 16)
    assert n["filters.0.weight"].shape == (16, 3) and n["kernel_head.weight"].shape == (1, 16)
    for bad in ({"mulfagrid_resolution": 1}, {"mulfagrid_channels": 0}, {"mulfagrid_layers": 0},
                {"mulfagrid_frequencies": 17}, {"mulfagrid_filter_scale": 0.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            FieldConfig(kind="mulfagrid", **bad)
    density = field(points_in_box(64, seed=1))
    assert density.shape == (64,) and bool((density >= 0).all())
