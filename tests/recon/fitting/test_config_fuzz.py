"""Fuzzed fit configs (TOML files and settings given directly): only the documented ConfigError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from recon.errors import ConfigError
from recon.fitting.config import load_fit_config
from tests.fuzzing import FUZZ, VALUES, assert_one_line, mutated

VALID = {
    "field": "hashgrid", "steps": 200, "batch_pixels": 64, "pool_samples": 2, "step_mm": 0.05, "lr": 0.01,
    "lr_final": 0.001, "loss": "poisson", "tv_weight": 0.0, "voxel_size_mm": 0.1, "seed": 3,
    "field_options": {"hidden_width": 16, "encoding": {"n_levels": 2, "log2_hashmap_size": 10,
                                                       "base_resolution": 8}},
}


@FUZZ
@given(mutated(VALID))
def test_mutated_fit_toml_only_raises_config_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.toml"
        path.write_text(tomli_w.dumps(data))
        try:
            cfg = load_fit_config(path)
        except ConfigError as err:
            assert_one_line(err)
            return
    cfg.validate()  # what loads is valid


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(VALID) + ["refine", "model", "unknown"]), VALUES, max_size=4))
def test_settings_given_directly_only_raise_config_error(settings):
    try:
        load_fit_config(None, **settings)
    except ConfigError as err:
        assert_one_line(err)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_fit_toml_only_raise_config_error(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.toml"
        path.write_bytes(raw)
        try:
            load_fit_config(path)
        except ConfigError as err:
            assert_one_line(err)
