"""Fuzzing the run.toml loader and the TIFF frame reader: only documented errors, never a traceback.

run.toml problems are :class:`~recon.errors.ConfigError`; frame files are
:class:`~recon.errors.DataError`; :func:`~recon.run.load_run` raises one of the two.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recon.errors import ConfigError, DataError
from recon.noise import SensorSpec
from recon.run import RunSpec, load_run, read_frames, read_run_spec
from tests.fuzzing import mutated
from tests.micro import make_micro_run

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
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SENSOR = SensorSpec(width_px=2001, height_px=1501, bit_depth=16, offset_adu=100.0, gain_e_per_adu=1.0)


def _one_line(err: Exception) -> None:
    assert "\n" not in str(err) and str(err), repr(err)


@FUZZ
@given(mutated(VALID))
def test_mutated_run_tables_only_raise_config_error(data):
    try:
        spec = RunSpec.from_dict(data, source="run.toml")
    except ConfigError as err:
        _one_line(err)
        return
    assert isinstance(spec, RunSpec)
    spec.validate_against((2001, 1501)) if all(v.camera == 0 for v in spec.views) else None


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))))
def test_arbitrary_run_toml_content_only_raises_config_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "run.toml").write_bytes(content)
        try:
            read_run_spec(tmp)
        except ConfigError as err:
            _one_line(err)


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
            _one_line(err)


def _valid_tiff() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.arange(2 * 9 * 11, dtype=np.uint16).reshape(2, 9, 11) + 100, imagej=True,
                     compression="zlib", metadata={"axes": "TYX"})
    return buf.getvalue()


VALID_TIFF = _valid_tiff()


def _read_only_data_error(content: bytes, sensor=SENSOR) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.tif"
        path.write_bytes(content)
        try:
            frames = read_frames(path, what="fuzz", sensor=sensor)
        except DataError as err:
            _one_line(err)
            assert str(err).startswith("fuzz: ")
        else:
            assert frames.ndim == 3 and frames.dtype.kind in "uif" and frames.size > 0


@FUZZ
@given(st.data())
def test_damaged_tiff_only_raises_data_error(data):
    """A valid TIFF, truncated and with bytes overwritten anywhere (header, IFD, strips)."""
    raw = bytearray(VALID_TIFF[: data.draw(st.integers(0, len(VALID_TIFF)))])
    for _ in range(data.draw(st.integers(0, 6))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _read_only_data_error(bytes(raw))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00", b""]))
def test_random_bytes_only_raise_data_error(tail, head):
    _read_only_data_error(head + tail)


DTYPES = st.sampled_from(["uint8", "uint16", "uint32", "int8", "int16", "int32", "int64", "float16",
                          "float32", "float64", "complex64", "bool"])


@FUZZ
@given(st.data())
def test_arrays_of_any_type_and_shape_only_raise_data_error(data):
    """Whatever tifffile can write (dtypes, 1–4 dimensions, NaN/inf, huge or negative values)."""
    dtype = np.dtype(data.draw(DTYPES))
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    array = data.draw(hnp.arrays(dtype, shape))
    buf = io.BytesIO()
    try:
        tifffile.imwrite(buf, array, photometric="minisblack")
    except Exception:  # noqa: BLE001 - tifffile cannot write this array at all: nothing to read
        return
    sensor = data.draw(st.sampled_from([None, SENSOR]))
    _read_only_data_error(buf.getvalue(), sensor)
