"""The hash-grid field: checkpoint keys, gradcheck with respect to the points."""

import torch

from recon.model.fields.hashgrid import HashGridField
from recon.model.fields.registry import make_field
from tests.recon.model.fields.small import BOX, SMALL_HASH, points_in_box, small_config


def test_hashgrid_checkpoint_keys():
    field = make_field(small_config("hashgrid"), *BOX, backend="torch")
    assert list(field.state_dict()) == [
        "log_gain", "box_min_mm", "box_max_mm", "density_scale", "encoding.params",
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    assert field.backend == "torch" and field.config.kind == "hashgrid"


def test_hashgrid_field_gradcheck_wrt_points_float64():
    field = HashGridField(*BOX, encoding=SMALL_HASH, hidden_layers=1, hidden_width=8,
                          backend="torch", seed=3).double()
    with torch.no_grad():
        field.encoding.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
    points = points_in_box(4, seed=8).double().mul(0.9).requires_grad_()
    assert torch.autograd.gradcheck(field, (points,))
