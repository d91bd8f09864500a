"""Fuzzed phantom files: what loads has a finite density; anything else is a one-line ConfigError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tomli_w
import torch
from hypothesis import given
from hypothesis import strategies as st

from recon.errors import ConfigError
from recon.simulation.phantom_file import load_phantom, phantom_from_definition
from tests.fuzzing import FUZZ, assert_one_line, mutated

VALID = {
    "name": "fuzz",
    "model": "emission",
    "sphere": [{"center_mm": [-0.5, 0.3, 0.0], "radius_mm": 0.35, "edge_mm": 0.02, "amplitude": 1.0}],
    "box": [{"min_mm": [0.2, 0.1, -0.15], "max_mm": [0.7, 0.4, 0.15], "edge_mm": 0.02, "amplitude": 1.0}],
    "gaussian": [{"center_mm": [0.0, -0.5, 0.2], "sigma_mm": [0.2, 0.1, 0.1], "amplitude": 2.0}],
    "donut": [{"center_mm": [0.0, 0.0, 0.0], "sigma_r_mm": 0.5, "hole_mm": 0.2, "sigma_z_mm": 0.2,
               "amplitude": 1.0}],
    "fringes": {"period_mm": 0.15, "phase_rad": 0.0, "axis": "y"},
}
POINTS = torch.linspace(-1.0, 1.0, 27).reshape(9, 3)


@FUZZ
@given(mutated(VALID))
def test_mutated_phantom_tables_load_or_raise_config_error(table):
    try:
        phantom = phantom_from_definition(table, atoms=1e6, source="fuzz.toml")
    except ConfigError as err:
        assert_one_line(err)
        return
    assert torch.isfinite(phantom.density(POINTS)).all()


@FUZZ
@given(mutated(VALID, n_max=2), st.floats(-1e20, 1e20))
def test_mutated_phantom_files_load_or_raise_config_error(table, atoms):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.toml"
        path.write_text(tomli_w.dumps(table))
        try:
            phantom = load_phantom(str(path), atoms=atoms)
        except ConfigError as err:
            assert_one_line(err)
            return
    assert torch.isfinite(phantom.density(POINTS)).all()
