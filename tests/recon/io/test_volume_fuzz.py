"""Fuzzed volume TIFFs: mutated ImageJ metadata only give a sound Volume or the one-line DataError."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given
from hypothesis import strategies as st

from recon.errors import DataError
from recon.io.volume import Volume, read_volume, write_volume
from tests.fuzzing import FUZZ, SCALARS, VALUES, assert_one_line, mutated

INFO = {"shape": [3, 4, 5], "voxel_size_mm": [0.02, 0.02, 0.03], "origin_mm": [-1.0, 0.0, 0.5],
        "unit": "atoms/mm^3", "meta": {"run": "run042", "steps": 40}}
DATA = np.arange(60, dtype=np.float32).reshape(3, 4, 5)


def _write(path: Path, info, *, spacing=0.03, resolution=(50.0, 50.0), data=DATA) -> None:
    """An ImageJ TIFF as write_volume writes it, with any Info, spacing and resolution."""
    text = info if isinstance(info, str) else json.dumps(info)
    tifffile.imwrite(path, data, imagej=True, resolution=resolution,
                     metadata={"spacing": spacing, "unit": "mm", "axes": "ZYX", "Info": text})


def _read_or_refuse(**kwargs) -> Volume | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.tif"
        try:
            _write(path, **kwargs)
        except (ValueError, TypeError, OverflowError, struct_error()):  # tifffile cannot write it at all
            return None
        try:
            volume = read_volume(path)
        except DataError as err:
            assert_one_line(err)
            return None
    assert volume.data.ndim == 3 and np.isfinite(volume.data).all()
    assert all(math.isfinite(v) and v > 0 for v in volume.voxel_size_mm)
    assert all(math.isfinite(v) for v in volume.origin_mm)
    assert isinstance(volume.unit, str) and isinstance(volume.meta, dict)
    return volume


def struct_error():
    import struct

    return struct.error


def test_the_unmutated_file_reads_back_as_written(tmp_path):
    volume = Volume(DATA, (-1.0, 0.0, 0.5), (0.02, 0.02, 0.03), "atoms/mm^3", {"run": "run042"})
    write_volume(tmp_path / "v.tif", volume)
    back = read_volume(tmp_path / "v.tif")
    assert np.array_equal(back.data, DATA) and back.voxel_size_mm == pytest.approx((0.02, 0.02, 0.03))
    assert back.origin_mm == pytest.approx((-1.0, 0.0, 0.5)) and back.meta == {"run": "run042"}
    assert _read_or_refuse(info=INFO).shape == (3, 4, 5)


@FUZZ
@given(mutated(INFO))
def test_mutated_info_only_reads_or_raises_data_error(info):
    _read_or_refuse(info=info)


@FUZZ
@given(st.one_of(st.text(max_size=40), VALUES.map(json.dumps)))
def test_any_info_text_only_reads_or_raises_data_error(text):
    _read_or_refuse(info=text)


@FUZZ
@given(spacing=SCALARS, x=st.floats(allow_nan=True, allow_infinity=True),
       y=st.floats(-1e9, 1e9))
def test_a_plain_imagej_stack_with_any_spacing_and_resolution_only_reads_or_raises(spacing, x, y):
    """No recon Info: the voxel size comes from the spacing and the resolution tags."""
    _read_or_refuse(info="made by another program", spacing=spacing, resolution=(x, y))
