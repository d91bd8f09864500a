"""TIFF frames: flavours, 8-bit sensors, and one-line errors for bad files."""

import numpy as np
import pytest
import tifffile

from recon.errors import DataError
from recon.io.frames import read_frames
from recon.io.sensor import SensorSpec
from tests.recon.io.runs import ROIS, SENSOR, assert_raises, make_frames

FLAVOURS = ["imagej", "ome", "bigtiff", "pages", "appended", "uint32", "int32", "float64"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_tiff_flavours(tmp_path, flavour):
    data = make_frames(ROIS["direct"], k=4)
    path = tmp_path / "f.tif"
    if flavour == "imagej":
        tifffile.imwrite(path, data.reshape(2, 2, 16, 20), imagej=True, metadata={"axes": "TZYX"})
    elif flavour == "ome":
        tifffile.imwrite(path, data, ome=True)
    elif flavour == "bigtiff":
        tifffile.imwrite(path, data, bigtiff=True, photometric="minisblack")
    elif flavour == "pages":
        for page in data:
            tifffile.imwrite(path, page, append=True, metadata=None)
    elif flavour == "appended":
        for page in data:
            tifffile.imwrite(path, page, append=True)  # one series per page
    else:
        tifffile.imwrite(path, data.astype(flavour), photometric="minisblack")
    out = read_frames(path, sensor=SENSOR)
    assert out.shape == (4, 16, 20) and np.array_equal(out, data)


def test_eight_bit_frames_need_an_eight_bit_sensor(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, np.full((2, 4, 4), 200, np.uint8), photometric="minisblack")
    assert read_frames(path, sensor=SensorSpec(1.0, 10.0, 8)).dtype == np.uint8
    assert_raises(DataError, "too narrow for the 12-bit sensor", read_frames, path, sensor=SENSOR)


def test_read_frames_errors(tmp_path):
    path = tmp_path / "f.tif"
    assert_raises(DataError, "does not exist", read_frames, path)
    path.write_bytes(b"definitely not a tiff")
    assert_raises(DataError, "cannot read", read_frames, path)
    tifffile.imwrite(path, np.zeros((5, 6, 3), np.uint8), photometric="rgb")
    assert_raises(DataError, "colour image (3 samples per pixel)", read_frames, path)
    tifffile.imwrite(path, np.zeros((3, 5, 6), np.uint16), photometric="rgb", planarconfig="separate")
    assert_raises(DataError, "photometric='minisblack'", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), np.inf, np.float32), photometric="minisblack")
    assert_raises(DataError, "inf values", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), np.nan, np.float32), photometric="minisblack")
    assert_raises(DataError, "only NaN", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), -5, np.int16), photometric="minisblack")
    assert_raises(DataError, "negative values", read_frames, path)
    tifffile.imwrite(path, np.full((2, 4, 4), 5000, np.uint16), photometric="minisblack")
    assert_raises(DataError, "beyond the 12-bit range (max 4095)", read_frames, path, sensor=SENSOR)
    tifffile.imwrite(path, np.zeros((4, 4), np.uint16))
    tifffile.imwrite(path, np.zeros((5, 5), np.uint16), append=True)
    assert_raises(DataError, "images of different sizes", read_frames, path)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_path_that_is_not_a_regular_file_is_named_as_such(tmp_path, kind):
    import os

    path = tmp_path / "f.tif"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(DataError) as err:
        read_frames(path, what="view direct")
    assert "does not exist" not in str(err.value) and "f.tif" in str(err.value)
