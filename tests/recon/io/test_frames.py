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


def test_png_frames_are_one_greyscale_shot_of_8_or_16_bits(tmp_path):
    from PIL import Image

    page = make_frames(ROIS["direct"], k=1)[0]
    Image.fromarray(page.astype(np.uint16)).save(tmp_path / "f16.png")
    out = read_frames(tmp_path / "f16.png", sensor=SENSOR)
    assert out.shape == (1, *page.shape) and out.dtype == np.uint16 and np.array_equal(out[0], page)
    eight = (page % 256).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "f8.png")
    out = read_frames(tmp_path / "f8.png", sensor=SensorSpec(1.0, 0.0, 8))
    assert out.dtype == np.uint8 and np.array_equal(out[0], eight)


def test_bad_pngs_are_one_line_errors(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert_raises(DataError, "RGB PNG (colour, palette or 1-bit)", read_frames, tmp_path / "rgb.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).convert("P").save(tmp_path / "p.png")
    assert_raises(DataError, "P PNG", read_frames, tmp_path / "p.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "rgb.png").read_bytes()[:40])
    assert_raises(DataError, "cannot read", read_frames, tmp_path / "cut.png")
    tifffile.imwrite(tmp_path / "tiff.png", np.zeros((4, 5), np.uint16))
    assert_raises(DataError, "is a TIFF image, not a PNG", read_frames, tmp_path / "tiff.png")


def test_a_12_bit_sensors_values_at_the_top_of_16_bit_files_are_shifted_down(tmp_path):
    values = np.arange(0, 4096, 7, dtype=np.uint16)[:400].reshape(1, 20, 20)
    tifffile.imwrite(tmp_path / "low.tif", values, photometric="minisblack")
    tifffile.imwrite(tmp_path / "high.tif", values << 4, photometric="minisblack")
    low, high = (read_frames(tmp_path / f"{n}.tif", sensor=SENSOR) for n in ("low", "high"))
    assert np.array_equal(low, values) and np.array_equal(high, values)
    odd = (values << 4) | 1  # one bit below the sensor's: not a shifted 12-bit value
    tifffile.imwrite(tmp_path / "odd.tif", odd, photometric="minisblack")
    assert_raises(DataError, "beyond the 12-bit range", read_frames, tmp_path / "odd.tif", sensor=SENSOR)
