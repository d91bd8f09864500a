"""Fuzzed run.toml tables and text: only the documented ConfigError, never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from recon.errors import ConfigError
from recon.io.runspec import RunSpec, read_run_spec
from tests.fuzzing import FUZZ, assert_one_line, mutated

VALID = {
    "schema": "recon.run/1",
    "system": "system.toml",
    "photons_per_atom": 200.0,
    "exposure_s": 0.001,
    "description": "fuzz",
    "frames": "full.tif",
    "dark": "full_dark.tif",
    "views": [
        {"name": "direct", "camera": 0, "roi": [987, 737, 27, 27], "frames": "views/direct.tif",
         "dark": "views/direct_dark.tif"},
        {"name": "m1", "camera": 0, "roi": [10, 20, 30, 40]},
    ],
    "truth": {"volume": "truth.tif", "phantom": "phantom.json"},
}


@FUZZ
@given(mutated(VALID))
def test_mutated_run_tables_only_raise_config_error(data):
    try:
        spec = RunSpec.from_dict(data, source="run.toml")
        assert isinstance(spec, RunSpec)
        if all(v.camera == 0 for v in spec.views):  # a region off the sensor is a ConfigError too
            spec.validate_against((2001, 1501))
    except ConfigError as err:
        assert_one_line(err)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))))
def test_arbitrary_run_toml_content_only_raises_config_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "run.toml").write_bytes(content)
        try:
            read_run_spec(tmp)
        except ConfigError as err:
            assert_one_line(err)


def test_a_schema_with_a_line_break_is_refused_in_one_line():
    """Found by the run.toml fuzz test on a fresh clone: the schema was quoted as written."""
    import pytest

    with pytest.raises(ConfigError) as err:
        RunSpec.from_dict({"schema": "\n", "views": []})
    assert_one_line(str(err.value))
    assert "'\\n'" in str(err.value)
