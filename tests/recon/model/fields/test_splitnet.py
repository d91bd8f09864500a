"""SplitNet: four activations multiplied per neuron, LSUV's unit-variance branches, its options."""

import pytest
import torch

from recon.errors import ConfigError
from recon.model.fields.config import FieldConfig
from recon.model.fields.splitnet import LSUV_POINTS, SplitNetField, split_activation
from tests.recon.model.fields.small import BOX, points_in_box


def test_a_layer_multiplies_tanh_sigmoid_sine_and_cosine_of_its_four_branches():
    field = SplitNetField(*BOX, hidden_layers=1, hidden_width=3, omega=2.5, seed=1).double()
    u = torch.tensor([[0.2, 0.9, 0.4], [0.7, 0.1, 0.5]], dtype=torch.float64)
    z = field.layers[0](2 * u - 1)  # (2, 12): branches a, b, c, d of 3 neurons each
    a, b, c, d = z[:, 0:3], z[:, 3:6], z[:, 6:9], z[:, 9:12]
    h = torch.tanh(a) * torch.sigmoid(b) * torch.sin(2.5 * c) * torch.cos(2.5 * d)
    assert torch.allclose(split_activation(z, 2.5), h)
    assert torch.allclose(field.raw(u), field.head(h).squeeze(-1))


def test_lsuv_gives_every_branch_unit_variance_on_fresh_points():
    field = SplitNetField(*BOX, hidden_layers=3, hidden_width=32, seed=4)
    u = torch.rand(2 * LSUV_POINTS, 3, generator=torch.Generator().manual_seed(77))
    h = 2 * u - 1
    with torch.no_grad():
        for layer in field.layers:
            z = layer(h)
            sd = z.reshape(len(h), 4, 32).transpose(0, 1).reshape(4, -1).std(dim=1)
            assert torch.allclose(sd, torch.ones(4), atol=0.05), sd  # points LSUV never saw
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
            h = split_activation(z, field.omega)


def test_the_weights_lsuv_starts_from_are_orthonormal():
    from recon.model.fields.splitnet import _orthonormal

    gen = torch.Generator().manual_seed(0)
    tall, wide = _orthonormal(12, 3, gen), _orthonormal(8, 20, gen)  # columns, rows orthonormal
    assert torch.allclose(tall.T @ tall, torch.eye(3), atol=1e-5)
    assert torch.allclose(wide @ wide.T, torch.eye(8), atol=1e-5)


def test_starts_at_the_init_density_and_is_deterministic():
    a = SplitNetField(*BOX, hidden_layers=2, hidden_width=16, init_density=2.0, seed=3)
    b = SplitNetField(*BOX, hidden_layers=2, hidden_width=16, init_density=2.0, seed=3)
    x = points_in_box(2000, seed=1)
    with torch.no_grad():
        assert float(a(x).mean()) == pytest.approx(2.0, rel=0.05)
        assert torch.equal(a(x), b(x))


def test_gradients_match_finite_differences():
    field = SplitNetField(*BOX, hidden_layers=2, hidden_width=3, omega=1.5, seed=2).double()
    pts = (torch.rand(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5)
    pts.requires_grad_(True)
    torch.autograd.gradcheck(lambda x: field(x), (pts,))


def test_options_are_checked():
    with pytest.raises(ConfigError, match="splitnet_omega"):
        FieldConfig(kind="splitnet", splitnet_omega=0.0)
    with pytest.raises(ValueError, match="omega must be > 0"):
        SplitNetField(*BOX, omega=-1.0)
    with pytest.raises(ValueError, match="hidden_layers"):
        SplitNetField(*BOX, hidden_layers=0)
