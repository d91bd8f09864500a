"""Fuzzing the system-file loader: malformed input gives a one-line ConfigError, never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optics.errors import ConfigError
from optics.system import System, load_system, system_from_dict
from tests.fuzzing import mutated
from tests.optics.helpers import system_dict

MIRRORS = [
    {"name": "m1", "center_mm": [0.0, 0.0, 20.0], "normal": [0.0, 0.0, -1.0], "shape": "circle",
     "radius_mm": 3.0, "reflectivity": 0.95},
    {"name": "m2", "center_mm": [5.0, 0.0, 20.0], "normal": [-0.2, 0.0, -1.0], "shape": "rectangle",
     "size_mm": [2.0, 3.0], "u_axis": [1.0, 0.0, 0.0], "reflectivity": 0.9},
]
WINDOWS = [{"name": "w", "center_mm": [0.0, 0.0, -100.0], "normal": [0.0, 0.0, 1.0], "thickness_mm": 6.0,
            "refractive_index": 1.46, "aperture_radius_mm": 30.0}]
VALID = system_dict(mirrors=MIRRORS, windows=WINDOWS)
VALID_ROTATION = system_dict(mirrors=MIRRORS[:1])
VALID_ROTATION["cameras"][0]["pose"] = {"position_mm": [0.0, 0.0, -351.9],
                                        "rotation": [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]}
VALID_ROTATION["cameras"][0]["lens"] = {"model": "telecentric", "f_number": 8.0, "magnification": 0.2,
                                        "working_distance_mm": 110.0}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_config_error(data) -> None:
    try:
        system = system_from_dict(data, source="fuzz.toml")
    except ConfigError as err:
        msg = str(err)
        assert msg.startswith("fuzz.toml") and "\n" not in msg, msg
    else:
        assert isinstance(system, System)


@FUZZ
@given(mutated(VALID))
def test_mutated_system_tables_only_raise_config_error(data):
    _only_config_error(data)


@FUZZ
@given(mutated(VALID_ROTATION))
def test_mutated_rotation_and_telecentric_tables_only_raise_config_error(data):
    _only_config_error(data)


def _load_file(content: bytes) -> None:
    """Load ``content`` as a system file: it loads, or fails with a one-line ConfigError naming it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.toml"
        path.write_bytes(content)
        try:
            load_system(path)
        except ConfigError as err:
            assert "\n" not in str(err) and str(path) in str(err)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))))
def test_arbitrary_file_content_only_raises_config_error(content):
    _load_file(content)


@settings(max_examples=40, deadline=None)
@given(mutated(VALID, n_max=2))
def test_mutated_files_round_trip_through_toml(data):
    """The same mutations written as real TOML files (where TOML can hold them)."""
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):  # e.g. a NaN or a mixed array that tomli_w refuses
        return
    _load_file(text.encode("utf-8"))
