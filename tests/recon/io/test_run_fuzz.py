"""load_run with fuzzed run.toml: only the documented errors."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon.errors import ConfigError, DataError
from recon.io.run import load_run
from tests.fuzzing import assert_one_line, mutated
from tests.micro import make_micro_run


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    return make_micro_run(tmp_path_factory.mktemp("fuzzrun"))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_load_run_with_mutated_run_toml_only_raises_documented_errors(micro_run, data):
    """Whole runs: the micro run with a mutated run.toml (system and frames files stay real)."""
    import tomllib

    valid = tomllib.loads((micro_run / "run.toml").read_text())
    table = data.draw(mutated(valid))
    try:
        text = tomli_w.dumps(table)
    except (TypeError, ValueError):
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(micro_run, run)
        (run / "run.toml").write_text(text)
        try:
            load_run(run)
        except (ConfigError, DataError) as err:
            assert_one_line(err)
