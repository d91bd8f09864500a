"""SIREN: Sitzmann's initialisation."""

import math

from recon.model.fields.siren import SirenField
from tests.recon.model.fields.small import BOX


def test_siren_sitzmann_initialisation():
    field = SirenField(*BOX, hidden_layers=3, width=64, omega0=30.0, seed=0)
    first, second = field.layers[0].weight, field.layers[1].weight
    assert first.abs().max() <= 1 / 3
    assert second.abs().max() <= math.sqrt(6 / 64) / 30
    assert field.head.weight.abs().max() <= math.sqrt(6 / 64) / 30
    assert len(field.layers) == 3
