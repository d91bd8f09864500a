"""Fuzzed target.toml tables: only the documented one-line ConfigError, never another exception."""

from __future__ import annotations

from hypothesis import given

from calibration.target import parse_target_spec
from optics.errors import ConfigError
from tests.fuzzing import FUZZ, assert_one_line, mutated

VALID = {
    "schema": "recon.calibration_target/1",
    "description": "fuzz",
    "bead_sigma_mm": 0.01,
    "photons": 2e8,
    "positions": [{"exposure": 0, "position_mm": [0.1, -0.2, 0.3]},
                  {"exposure": 1, "position_mm": [-0.4, 0.0, 0.2]}],
}


@FUZZ
@given(mutated(VALID))
def test_mutated_target_tables_only_raise_config_error(table):
    try:
        spec = parse_target_spec(table, source="target.toml")
    except ConfigError as err:
        assert_one_line(err)
        return
    assert len(spec.exposures) == len(table["positions"])
