"""Fourier features: γ exactly as Tancik et al. and NeRF write it, B kept in the checkpoint."""

import math

import pytest
import torch

from recon.errors import ConfigError
from recon.model.fields.config import FieldConfig
from recon.model.fields.fourier import FourierFeatureField
from tests.recon.model.fields.small import BOX, roughness


def test_gaussian_features_are_cos_and_sin_of_2pi_b_u():
    field = FourierFeatureField(*BOX, encoding="gaussian", features=5, scale=3.0, hidden_layers=1,
                                hidden_width=8, seed=4)
    b = field.frequencies.double()
    assert b.shape == (5, 3) and 1.0 < float(b.std()) < 6.0  # N(0, 3²) draws
    u = torch.tensor([[0.1, 0.7, 0.25]], dtype=torch.float64)
    got = field.features(u)[0]
    for j in range(5):
        angle = 2 * math.pi * float(b[j] @ u[0])
        assert float(got[j]) == pytest.approx(math.cos(angle), abs=1e-6)
        assert float(got[5 + j]) == pytest.approx(math.sin(angle), abs=1e-6)
    again = FourierFeatureField(*BOX, encoding="gaussian", features=5, scale=3.0, hidden_layers=1,
                                hidden_width=8, seed=4)
    assert torch.equal(again.frequencies, field.frequencies)
    assert "frequencies" in field.state_dict()  # B travels with the checkpoint


def test_positional_features_are_nerfs_octaves_of_the_centred_position():
    field = FourierFeatureField(*BOX, encoding="positional", frequencies=3, hidden_layers=1, hidden_width=8)
    u = torch.tensor([[0.75, 0.5, 0.0]], dtype=torch.float64)
    got = field.features(u)[0]
    p = [0.5, 0.0, -1.0]  # 2u − 1
    assert got.shape == (3 + 6 * 3,) and got[:3].tolist() == p
    sines, cosines = got[3:12].reshape(3, 3), got[12:].reshape(3, 3)  # (axis, octave)
    for axis in range(3):
        for k in range(3):
            assert float(sines[axis, k]) == pytest.approx(math.sin(2**k * math.pi * p[axis]), abs=1e-6)
            assert float(cosines[axis, k]) == pytest.approx(math.cos(2**k * math.pi * p[axis]), abs=1e-6)


def test_a_larger_scale_gives_a_field_that_varies_faster():
    """σ sets the bandwidth: the density along a line wiggles more for a larger σ (same seed)."""
    fields = [FourierFeatureField(*BOX, features=64, scale=scale, hidden_layers=2, hidden_width=64, seed=0)
              for scale in (30.0, 1.0)]
    assert roughness(fields[0]) > 3 * roughness(fields[1])


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="fourier_encoding"):
        FieldConfig(kind="fourier", fourier_encoding="wavelet")
    with pytest.raises(ConfigError, match="fourier_scale > 0"):
        FieldConfig(kind="fourier", fourier_scale=0.0)
    with pytest.raises(ConfigError, match="mlp_hidden_layers"):
        FieldConfig(kind="gauss", mlp_hidden_layers=0)
