"""Volumes: the grid convention, trilinear interpolation, and the ImageJ TIFF round trip and its errors."""

import json

import numpy as np
import pytest
import tifffile
import torch

from recon.errors import DataError, ShapeError
from recon.io.volume import Volume, grid_points, interpolate, read_volume, write_volume

F64 = torch.float64
ORIGIN, VOXEL = (1.0, -2.0, 0.5), (0.1, 0.2, 0.05)  # (x, y, z) mm, deliberately anisotropic


def _volume(shape=(3, 4, 5), seed=0, **kw):
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    return Volume(data, ORIGIN, VOXEL, **kw)


# --------------------------------------------------------------------------- the grid


def test_voxel_kji_has_its_centre_at_origin_plus_ijk_times_spacing():
    shape = (3, 4, 5)  # (Z, Y, X)
    pts = grid_points(shape, ORIGIN, VOXEL, dtype=F64)
    assert pts.shape == (3, 4, 5, 3) and pts.dtype == F64
    for k, j, i in [(0, 0, 0), (2, 3, 4), (1, 2, 0), (0, 1, 3)]:
        expected = torch.tensor(ORIGIN, dtype=F64) + torch.tensor([i, j, k], dtype=F64) * torch.tensor(VOXEL)
        assert torch.allclose(pts[k, j, i], expected, atol=1e-12), (k, j, i)
    assert torch.equal(_volume(shape).points(F64), pts)


def test_bounds_are_the_first_and_last_voxel_centres():
    lo, hi = _volume((3, 4, 5)).bounds_mm
    assert lo == ORIGIN
    assert hi == pytest.approx((1.0 + 4 * 0.1, -2.0 + 3 * 0.2, 0.5 + 2 * 0.05))


@pytest.mark.parametrize("kwargs, match", [
    ({"data": np.zeros((4, 4))}, "must be 3-D"),
    ({"origin_mm": (0.0, 0.0)}, "3 entries"),
    ({"voxel_size_mm": (0.1, 0.1)}, "3 entries"),
    ({"voxel_size_mm": (0.1, 0.0, 0.1)}, "must be positive"),
])
def test_a_malformed_volume_is_a_shape_error(kwargs, match):
    args = {"data": np.zeros((2, 2, 2)), "origin_mm": (0.0, 0.0, 0.0), "voxel_size_mm": (0.1, 0.1, 0.1)}
    with pytest.raises(ShapeError, match=match):
        Volume(**{**args, **kwargs})


# --------------------------------------------------------------------------- interpolate


def test_interpolation_is_exact_at_voxel_centres():
    vol = _volume((3, 4, 5))
    got = interpolate(vol, vol.points(F64))
    assert got.shape == (3, 4, 5) and got.dtype == F64
    assert torch.allclose(got, torch.from_numpy(vol.data).double(), atol=1e-6)


def test_interpolation_is_trilinear_between_centres():
    vol = _volume((3, 4, 5), seed=1)
    rng = np.random.default_rng(2)
    # Inside the hull of the centres: a linear function on the grid is reproduced exactly.
    lo, hi = (np.array(b) for b in vol.bounds_mm)
    pts = torch.from_numpy(lo + (hi - lo) * rng.random((200, 3)))
    a, b = np.array([0.3, -1.2, 2.0]), 0.7
    linear = Volume((vol.points(F64).numpy() @ a + b).astype(np.float32), ORIGIN, VOXEL)
    assert torch.allclose(interpolate(linear, pts), pts @ torch.from_numpy(a) + b, atol=1e-5)
    # The centre of a cell is the mean of its eight corners; a face centre the mean of four.
    corner = torch.tensor(ORIGIN, dtype=F64)
    step = torch.tensor(VOXEL, dtype=F64)
    cell = interpolate(vol, (corner + 1.5 * step)[None])[0]
    assert float(cell) == pytest.approx(float(vol.data[1:3, 1:3, 1:3].mean()), abs=1e-6)
    face = interpolate(vol, (corner + step * torch.tensor([1.5, 2.5, 0.0], dtype=F64))[None])[0]
    assert float(face) == pytest.approx(float(vol.data[0, 2:4, 1:3].mean()), abs=1e-6)


def test_interpolation_is_zero_a_voxel_or_more_outside_the_grid():
    vol = Volume(np.ones((3, 4, 5), np.float32), ORIGIN, VOXEL)
    lo, hi = (torch.tensor(b, dtype=F64) for b in vol.bounds_mm)
    step = torch.tensor(VOXEL, dtype=F64)
    centre = (lo + hi) / 2
    outside = []
    for axis in range(3):
        for point in (lo - step, hi + step, hi + 10 * step):
            p = centre.clone()
            p[axis] = point[axis]
            outside.append(p)
    assert torch.allclose(interpolate(vol, torch.stack(outside)), torch.zeros(9, dtype=F64), atol=1e-12)
    # Between the last centre and one voxel beyond, the value falls linearly to zero.
    p = centre.clone()
    p[0] = hi[0] + 0.5 * step[0]
    assert float(interpolate(vol, p[None])[0]) == pytest.approx(0.5, abs=1e-6)


def test_interpolation_keeps_the_batch_shape_and_dtype():
    vol = _volume()
    pts = vol.points(torch.float32)[:2, :3, :1]
    got = interpolate(vol, pts)
    assert got.shape == (2, 3, 1) and got.dtype == torch.float32
    assert interpolate(vol, torch.tensor(ORIGIN)).shape == ()


def test_a_single_slice_is_zero_away_from_its_plane():
    vol = Volume(np.ones((1, 4, 5), np.float32), ORIGIN, VOXEL)
    x, y, z = ORIGIN
    got = interpolate(vol, torch.tensor([[x, y, z], [x, y, z + 1.0], [x, y, z - 5.0]], dtype=F64))
    assert float(got[0]) == pytest.approx(1.0)
    assert torch.equal(got[1:], torch.zeros(2, dtype=F64))


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("compress", [True, False])
def test_write_then_read_gives_the_volume_back(tmp_path, compress):
    import tifffile

    meta = {"phantom": "gaussian", "atoms": 1e6, "nested": {"a": [1, 2, 3]}}
    vol = _volume(unit="atoms/mm^3", meta=meta)
    path = tmp_path / "density.tif"
    write_volume(path, vol, compress=compress)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == (tifffile.COMPRESSION.ADOBE_DEFLATE if compress else
                                            tifffile.COMPRESSION.NONE)
    back = read_volume(path)
    assert back.data.dtype == np.float32 and np.array_equal(back.data, vol.data)
    assert back.origin_mm == ORIGIN and back.voxel_size_mm == VOXEL
    assert back.unit == "atoms/mm^3" and back.meta == meta
    assert [p.name for p in tmp_path.iterdir()] == ["density.tif"]  # no temporary left behind


def test_written_data_is_float32_whatever_it_was(tmp_path):
    data = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    write_volume(tmp_path / "v.tif", Volume(data, ORIGIN, VOXEL))
    back = read_volume(tmp_path / "v.tif")
    assert back.data.dtype == np.float32 and np.array_equal(back.data, data.astype(np.float32))
    assert back.unit == "relative" and back.meta == {}


def test_the_file_is_an_imagej_stack_with_its_voxel_size_in_mm(tmp_path):
    path = tmp_path / "v.tif"
    write_volume(path, _volume((3, 4, 5)))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and len(tif.pages) == 3
        page = tif.pages[0]
        assert page.shape == (4, 5) and page.dtype == np.float32
        (xn, xd), (yn, yd) = page.tags["XResolution"].value, page.tags["YResolution"].value
        assert xn / xd == pytest.approx(1 / 0.1) and yn / yd == pytest.approx(1 / 0.2)  # pixels per mm
        ij = tif.imagej_metadata
        assert ij["unit"] == "mm" and ij["spacing"] == pytest.approx(0.05)
        info = json.loads(ij["Info"])
        assert info["format"] == "recon.volume/1" and info["axes"] == "ZYX"
        assert info["origin_mm"] == list(ORIGIN) and info["voxel_size_mm"] == list(VOXEL)
        # ImageJ's calibrated position of voxel i is (i − xorigin) · dx: voxel 0 at the origin, in mm
        for axis, o, d in zip("xyz", ORIGIN, VOXEL, strict=True):
            assert (0 - ij[f"{axis}origin"]) * d == pytest.approx(o)
            assert (3 - ij[f"{axis}origin"]) * d == pytest.approx(o + 3 * d)


def test_a_plain_imagej_stack_reads_its_voxel_size_from_the_tags(tmp_path):
    path = tmp_path / "fiji.tif"
    data = np.ones((2, 3, 4), np.float32)
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.05, 1 / 0.02),
                     metadata={"spacing": 0.3, "unit": "mm", "axes": "ZYX"})
    vol = read_volume(path)
    assert vol.voxel_size_mm == pytest.approx((0.05, 0.02, 0.3))
    assert vol.origin_mm == (0.0, 0.0, 0.0) and vol.unit == "relative" and vol.shape == (2, 3, 4)


@pytest.mark.parametrize("shape", [(1, 3, 4), (3, 1, 4), (2, 3, 1)])
def test_a_volume_one_voxel_thick_round_trips(tmp_path, shape):
    vol = _volume(shape)
    write_volume(tmp_path / "thin.tif", vol)
    back = read_volume(tmp_path / "thin.tif")
    assert back.shape == shape and np.array_equal(back.data, vol.data)


def _one_line_data_error(path, match):
    with pytest.raises(DataError, match=match) as info:
        read_volume(path)
    message = str(info.value)
    assert message.startswith("read_volume: ") and str(path) in message and "\n" not in message


def test_reading_a_missing_file_is_a_data_error(tmp_path):
    _one_line_data_error(tmp_path / "missing.tif", "does not exist; give the path of a volume TIFF")
    (tmp_path / "folder.tif").mkdir()
    _one_line_data_error(tmp_path / "folder.tif", "does not exist")


def test_reading_a_file_that_is_not_a_tiff_is_a_data_error(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("hello, not a TIFF\nsecond line\n")
    _one_line_data_error(path, r"cannot read .* as TIFF \(.*\); is the file complete\?")
    truncated = tmp_path / "cut.tif"
    write_volume(truncated, _volume((3, 16, 16)))
    truncated.write_bytes(truncated.read_bytes()[:60])
    _one_line_data_error(truncated, "cannot read")


def test_reading_a_tiff_that_is_not_a_volume_is_a_data_error(tmp_path):
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.ones((3, 4), np.float32))
    _one_line_data_error(image, r"holds an array of shape \(3, 4\), expected 3-D")
    bad = tmp_path / "nan.tif"
    data = np.ones((2, 3, 4), np.float32)
    data[1, 2, 3] = np.nan
    tifffile.imwrite(bad, data, imagej=True)
    _one_line_data_error(bad, "holds NaN or inf values")


def test_a_tiff_without_any_voxel_size_is_a_data_error(tmp_path):
    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, np.ones((2, 3, 5), np.float32), photometric="minisblack")
    _one_line_data_error(path, "voxel size")


def _with_info(tmp_path, info_text: str):
    """A volume TIFF whose ImageJ Info is ``info_text`` (voxel tags of 0.1 mm)."""
    path = tmp_path / "mutated.tif"
    tifffile.imwrite(path, np.ones((2, 3, 4), np.float32), imagej=True, resolution=(10.0, 10.0),
                     metadata={"spacing": 0.1, "unit": "mm", "axes": "ZYX", "Info": info_text})
    return path


@pytest.mark.parametrize("info, key", [
    ({"voxel_size_mm": "big"}, "voxel_size_mm"),
    ({"voxel_size_mm": 0.1}, "voxel_size_mm"),
    ({"voxel_size_mm": [0.1, 0.1]}, "voxel_size_mm"),
    ({"voxel_size_mm": [0.1, "a", 0.1]}, "voxel_size_mm"),
    ({"voxel_size_mm": [0.1, float("nan"), 0.1]}, "voxel_size_mm"),
    ({"voxel_size_mm": [1e300, 0.1, 0.1]}, "voxel_size_mm"),
    ({"voxel_size_mm": [0.0, 0.1, 0.1]}, "voxel_size_mm"),
    ({"voxel_size_mm": [0.1, 0.1, 0.1], "origin_mm": None}, "origin_mm"),
    ({"voxel_size_mm": [0.1, 0.1, 0.1], "origin_mm": [0, 0, float("inf")]}, "origin_mm"),
    ({"voxel_size_mm": [0.1, 0.1, 0.1], "meta": [1, 2]}, "meta"),
    ({"voxel_size_mm": [0.1, 0.1, 0.1], "unit": 3}, "unit"),
])
def test_metadata_of_the_wrong_type_or_range_is_a_one_line_data_error(tmp_path, info, key):
    import json

    path = _with_info(tmp_path, json.dumps(info))
    with pytest.raises(DataError) as err:
        read_volume(path)
    message = str(err.value)
    assert key in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize("info_text", ["[1, 2, 3]", '"a string"', "not json at all", "null", "[" * 5000])
def test_an_info_that_is_not_a_table_is_another_programs_text(tmp_path, info_text):
    vol = read_volume(_with_info(tmp_path, info_text))  # the ImageJ tags' voxel size, origin 0
    assert vol.voxel_size_mm == pytest.approx((0.1, 0.1, 0.1)) and vol.origin_mm == (0.0, 0.0, 0.0)
