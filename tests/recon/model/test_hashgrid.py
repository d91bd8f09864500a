"""Hash-grid geometry and layout: tcnn's formulas, the project default, config checks."""

import pytest

from recon.errors import ConfigError
from recon.model.hashgrid import HashGridConfig, hashgrid_levels
from recon.model.hashgrid_torch import TorchHashGrid


def test_layout_matches_tcnn_formula_for_tcnn_defaults():
    cfg = HashGridConfig.tcnn_defaults()
    levels = hashgrid_levels(cfg)
    # scale_l = 16 * 2^l - 1, res_l = 16 * 2^l; T_l = min(res^3 rounded up to 8, 2^19).
    assert [lv.resolution for lv in levels[:4]] == [16, 32, 64, 128]
    sizes = [4096, 32768, 262144] + [524288] * 13
    assert [lv.table_size for lv in levels] == sizes
    assert [lv.offset for lv in levels] == [sum(sizes[:i]) for i in range(16)]
    assert [lv.dense for lv in levels] == [True] * 3 + [False] * 13
    enc = TorchHashGrid(cfg)
    assert enc.n_params == enc.params.numel() == sum(sizes) * 2 == 14_229_504
    assert enc.n_output_dims == 32


def test_layout_of_project_default():
    cfg = HashGridConfig()
    levels = hashgrid_levels(cfg)
    assert [lv.resolution for lv in levels] == [16, 23, 31, 43, 59, 81, 111, 153]
    sizes = [4096, 12168, 29792, 79512, 205384, 262144, 262144, 262144]
    assert [lv.table_size for lv in levels] == sizes
    assert [lv.offset for lv in levels] == [sum(sizes[:i]) for i in range(8)]
    assert [lv.dense for lv in levels] == [True] * 5 + [False] * 3
    # Far from integers: float32 rounding on host or device cannot change a resolution.
    assert all(lv.scale == round(lv.scale) or abs(lv.scale - round(lv.scale)) > 0.02
               for lv in levels)


def test_config_validation_and_tcnn_dict():
    with pytest.raises(ConfigError, match="n_features_per_level"):
        HashGridConfig(n_features_per_level=3)
    with pytest.raises(ConfigError, match="per_level_scale"):
        HashGridConfig(per_level_scale=0.5)
    cfg = HashGridConfig()
    assert cfg.to_tcnn() == {"otype": "HashGrid", "n_levels": 8, "n_features_per_level": 2,
                             "log2_hashmap_size": 18, "base_resolution": 16,
                             "per_level_scale": 1.38, "interpolation": "Linear"}
    assert HashGridConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        HashGridConfig.from_dict({"n_level": 4})
