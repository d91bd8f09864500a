"""FieldConfig: round trip through a dict and validation."""

import json

import pytest

from recon.errors import ConfigError
from recon.model.fields.config import FieldConfig
from tests.recon.model.fields.small import SMALL_HASH


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
