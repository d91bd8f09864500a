"""TensoRF's VM field: the sum of vector × matrix products, their interpolation, and its sizes."""

import pytest
import torch

from recon.errors import ConfigError
from recon.model.fields.config import FieldConfig
from recon.model.fields.tensorf import TENSORF_MODES, TensoRFField
from tests.recon.model.fields.small import BOX, points_in_box


def _dense(field: TensoRFField) -> torch.Tensor:
    """The raw tensor at the factors' own samples, (nz, ny, nx), built from outer products."""
    nx, ny, nz = field.resolution
    out = torch.zeros(nz, ny, nx, dtype=torch.float64)
    for ((a, b), c), plane, line in zip(TENSORF_MODES, field.planes, field.lines, strict=True):
        m, v = plane[0].double(), line[0, :, :, 0].double()  # (R, n_b, n_a), (R, n_c)
        full = torch.einsum("rba,rc->rabc", m, v).sum(0)  # indexed by (axis a, axis b, axis c)
        order = {a: 0, b: 1, c: 2}
        out += full.permute(order[2], order[1], order[0])  # to (z, y, x)
    return out + float(field.shift)


def test_at_the_factors_samples_the_field_is_the_sum_of_outer_products():
    field = TensoRFField(*BOX, rank=3, resolution=(5, 4, 6), seed=1).double()
    nx, ny, nz = field.resolution
    k, j, i = torch.meshgrid(torch.arange(nz), torch.arange(ny), torch.arange(nx), indexing="ij")
    u = torch.stack([i / (nx - 1), j / (ny - 1), k / (nz - 1)], dim=-1).reshape(-1, 3).double()
    assert torch.allclose(field.raw(u), _dense(field).reshape(-1), atol=1e-12)


def test_between_samples_it_interpolates_linearly_along_each_axis():
    field = TensoRFField(*BOX, rank=2, resolution=4, seed=3).double()
    u0 = torch.tensor([[0.1, 0.4, 0.7]], dtype=torch.float64)
    for axis in range(3):  # along any one axis a component is linear between samples: f(mid) = mean
        step = torch.zeros(1, 3, dtype=torch.float64)
        step[0, axis] = 0.05
        ends = field.raw(torch.cat([u0, u0 + 2 * step]))
        assert torch.allclose(field.raw(u0 + step), ends.mean(), atol=1e-12)


def test_one_rank_one_mode_is_separable():
    """Only the z vector and the xy matrix of one component set: raw(x, y, z) = v(z) M(x, y) + s."""
    field = TensoRFField(*BOX, rank=1, resolution=8, seed=0).double()
    with torch.no_grad():
        for plane, line in zip(field.planes[1:], field.lines[1:], strict=True):
            plane.zero_()
            line.zero_()
    u = torch.rand(15, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    zs, xys = u[:5, 2], u[5:15, :2]  # every (z, (x, y)) pair: the table v(z_i) M(x_j, y_j) has rank 1
    grid = torch.cat([xys.repeat(5, 1), zs.repeat_interleave(10)[:, None]], dim=1)
    table = (field.raw(grid) - field.shift).reshape(5, 10)
    assert torch.linalg.matrix_rank(table, atol=1e-10) == 1 and table.abs().max() > 1e-3


def test_gradients_match_finite_differences():
    field = TensoRFField(*BOX, rank=2, resolution=(4, 3, 5), seed=4).double()
    pts = points_in_box(6, seed=1).double()
    names = [name for name, _ in field.named_parameters()]

    def density(*values):  # the field as a function of its factors (and scale)
        return torch.func.functional_call(field, dict(zip(names, values, strict=True)), (pts,))

    torch.autograd.gradcheck(density, tuple(p.detach().clone().requires_grad_() for p in field.parameters()))
    pts.requires_grad_(True)
    torch.autograd.gradcheck(lambda x: field(x), (pts,))


def test_starts_at_the_init_density_on_average_and_counts_its_parameters():
    field = TensoRFField(*BOX, rank=16, resolution=(32, 24, 16), init_density=3.0, seed=0)
    with torch.no_grad():
        d = field(points_in_box(4096, seed=5))
    assert float(d.mean()) == pytest.approx(3.0, rel=0.05)
    n = {"x": 32, "y": 24, "z": 16}
    expected = 16 * ((n["x"] * n["y"] + n["z"]) + (n["x"] * n["z"] + n["y"]) + (n["y"] * n["z"] + n["x"]))
    assert sum(p.numel() for p in [*field.planes, *field.lines]) == expected
    assert float(field.planes[0].std()) == pytest.approx(0.1, rel=0.05)  # the paper's 0.1 × N(0, 1)


def test_sizes_are_checked():
    with pytest.raises(ConfigError, match="tensorf_rank"):
        FieldConfig(kind="tensorf", tensorf_rank=0)
    with pytest.raises(ConfigError, match="tensorf_resolution"):
        FieldConfig(kind="tensorf", tensorf_resolution=(8, 1, 8))
    with pytest.raises(ValueError, match="rank must be"):
        TensoRFField(*BOX, rank=0)
    cfg = FieldConfig(kind="tensorf", tensorf_resolution=(8, 6, 4))
    assert FieldConfig.from_dict(cfg.to_dict()) == cfg
