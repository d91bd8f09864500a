"""Fuzzed TIFF files and arrays: only the documented DataError."""

from __future__ import annotations

import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from recon.errors import DataError
from recon.io.frames import read_frames
from recon.io.sensor import SensorSpec
from recon.io.volume import read_volume
from tests.fuzzing import FUZZ, assert_one_line

SENSOR = SensorSpec(width_px=2001, height_px=1501, bit_depth=16, offset_adu=100.0, gain_e_per_adu=1.0)


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
            assert_one_line(err)
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


def _bomb(tmp_path, side: int) -> Path:
    """A small uncompressed TIFF whose header is edited to declare side × side pixels."""
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.full((9, 11), 100, dtype=np.uint16))
    raw = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for name in ("ImageWidth", "ImageLength"):
            tag = tif.pages[0].tags[name]
            fmt = "<H" if tag.dtype == 3 else "<I"
            raw[tag.valueoffset:tag.valueoffset + struct.calcsize(fmt)] = struct.pack(fmt, side)
    path.write_bytes(bytes(raw))
    return path


def test_a_header_declaring_gigabytes_in_a_small_file_is_refused_before_reading(tmp_path):
    """Found by the fuzz test above: a damaged header made the reader allocate 24 GB."""
    path = _bomb(tmp_path, 60000)  # 7.2 GB of uint16 declared in a file of a few hundred bytes
    for read in (lambda: read_frames(path, what="view a", sensor=SENSOR), lambda: read_volume(path)):
        with pytest.raises(DataError) as info:
            read()
        message = str(info.value)
        assert "declares 7.2 GB of pixels in a file of" in message and "re-export it" in message
        assert_one_line(info.value)
