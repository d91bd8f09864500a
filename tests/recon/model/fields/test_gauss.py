"""The Gaussian-activation MLP: ψ(x) = exp(−x²/(2a²)) after every hidden layer, torch's init bounds."""

import math

import pytest
import torch

from recon.errors import ConfigError
from recon.model.fields.config import FieldConfig
from recon.model.fields.gauss import GaussianMLPField
from tests.recon.model.fields.small import BOX, roughness


def test_one_layer_is_its_gaussian_of_the_affine_map():
    field = GaussianMLPField(*BOX, hidden_layers=1, hidden_width=4, a=0.3, seed=2).double()
    u = torch.tensor([[0.2, 0.9, 0.4]], dtype=torch.float64)
    x = field.layers[0](2 * u - 1)  # p = 2u − 1
    expected = field.head(torch.exp(-(x**2) / (2 * 0.3**2))).squeeze(-1)
    assert torch.allclose(field.raw(u), expected)


def test_initial_weights_have_torchs_default_bounds():
    field = GaussianMLPField(*BOX, hidden_layers=2, hidden_width=32, seed=0)
    assert field.layers[0].weight.abs().max() <= 1 / math.sqrt(3)
    assert field.layers[1].weight.abs().max() <= 1 / math.sqrt(32)
    assert len(field.layers) == 2 and field.head.in_features == 32


def test_a_smaller_a_gives_a_field_that_varies_faster():
    sharp, smooth = (GaussianMLPField(*BOX, hidden_layers=2, hidden_width=64, a=a, seed=0)
                     for a in (0.05, 1.0))
    assert roughness(sharp) > 2 * roughness(smooth)


def test_a_must_be_positive():
    with pytest.raises(ConfigError, match="gauss_a"):
        FieldConfig(kind="gauss", gauss_a=0.0)
    with pytest.raises(ValueError, match="a must be > 0"):
        GaussianMLPField(*BOX, a=-1.0)
