"""Frames: TIFF or PNG files of ADU, every TIFF page one shot.

TIFF: 8/16/32-bit integers or 32/64-bit floats; multi-page, ImageJ hyperstacks, OME-TIFF,
BigTIFF. PNG (as machine-vision cameras save single shots): one greyscale frame, 8 or 16 bit.

Sensors of fewer bits than their file's integers (a 12-bit camera writing 16-bit files) write
their values either at the low bits (0 … 4095) or at the high bits (multiples of 16 up to 65520).
Values above the sensor's range that are all multiples of ``2^(container bits − sensor bits)``
are the latter and are shifted down; any other value above the range is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recon.errors import DataError
from recon.io.runspec import one_line
from recon.io.sensor import as_sensor_spec
from recon.io.volume import check_declared_bytes, check_tiff_size, quiet_tifffile

__all__ = ["read_frames"]

# PIL image modes of greyscale integer images and the dtype they read as.
_PNG_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I": np.int32}


def _read_tiff(path: Path, what: str) -> list[tuple[np.ndarray, str]]:
    """Every series of a TIFF as (array, axes)."""
    import tifffile

    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            check_tiff_size(tif, path, what)  # a damaged header may declare terabytes
            return [(s.asarray(), s.axes) for s in tif.series]
    except DataError:
        raise
    except Exception as err:  # tifffile raises many kinds for corrupt or truncated files
        raise DataError(
            f"{what}: cannot read {path} as TIFF ({type(err).__name__}: {one_line(err, 100)}); "
            "is the file complete?"
        ) from None


def _read_png(path: Path, what: str) -> list[tuple[np.ndarray, str]]:
    """A greyscale PNG as one (array, "YX"); colour, palette and 1-bit images are refused."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise DataError(f"{what}: {path} is a {img.format} image, not a PNG; save the frames as PNG "
                                "or TIFF")
            if img.mode not in _PNG_MODES:
                raise DataError(f"{what}: {path} is a {img.mode} PNG (colour, palette or 1-bit); save "
                                "greyscale (8- or 16-bit) frames")
            width, height = img.size
            check_declared_bytes(width * height * np.dtype(_PNG_MODES[img.mode]).itemsize, path, what)
            data = np.asarray(img, dtype=_PNG_MODES[img.mode])
    except DataError:
        raise
    except Exception as err:  # Pillow raises many kinds for corrupt, truncated or bomb files
        raise DataError(
            f"{what}: cannot read {path} as PNG ({type(err).__name__}: {one_line(err, 100)}); "
            "is the file complete?"
        ) from None
    return [(data, "YX")]


def read_frames(path: str | os.PathLike, *, what: str = "frames", sensor: object | None = None) -> np.ndarray:
    """Read a TIFF of frames as ``(pages, height, width)`` in its own dtype.

    Every image of the file (all series, all pages, ImageJ T/Z/C axes, OME channels) becomes a
    page. Integers (8–64 bit) and floats (16–64 bit) are accepted; NaN marks dead pixels.

    Args:
        path: the TIFF file.
        what: what the file is (named in errors, e.g. ``view direct``).
        sensor: sensor numbers (``bit_depth``) to check integer values against, or None.

    Raises:
        DataError: missing, unreadable or truncated file, colour or non-image data, no pixels,
            inf values, only NaN, negative integers, or integers the sensor cannot produce (a
            dtype narrower than its bit depth, or values above ``2^bits − 1``).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what}: {path} is a directory, not a TIFF file; check the path in run.toml")
    if path.exists() and not path.is_file():
        raise DataError(f"{what}: {path} is not a regular file (a FIFO, a device or a socket); point "
                        "run.toml at a TIFF file")
    if not path.is_file():
        raise DataError(f"{what}: file {path} does not exist; check the path in run.toml")

    arrays = _read_png(path, what) if path.suffix.lower() == ".png" else _read_tiff(path, what)
    if not arrays:
        raise DataError(
            f"{what}: {path} holds no images (truncated, or not written as TIFF pages?); re-export the frames"
        )
    pages = []
    for data, axes in arrays:
        data = np.asarray(data)
        if "S" in axes:  # samples per pixel: RGB(A), contiguous (…YXS) or planar (…SYX)
            axis = axes.index("S")
            if data.shape[axis] != 1:
                raise DataError(
                    f"{what}: {path} is a colour image ({data.shape[axis]} samples per pixel); save "
                    "monochrome pages (tifffile: photometric='minisblack')"
                )
            data = np.take(data, 0, axis=axis)
        if data.ndim < 2:
            raise DataError(f"{what}: {path} holds an array of shape {data.shape}; expected images")
        if data.size == 0:
            raise DataError(f"{what}: {path} holds an empty image {data.shape}; is the file complete?")
        pages.append(data.reshape(-1, *data.shape[-2:]))
    if len({p.shape[1:] for p in pages}) > 1 or len({p.dtype for p in pages}) > 1:
        raise DataError(
            f"{what}: {path} holds images of different sizes or types "
            f"({', '.join(sorted({f'{p.shape[1]}×{p.shape[2]} {p.dtype}' for p in pages}))}); "
            "one file must hold pages of one view"
        )
    data = pages[0] if len(pages) == 1 else np.concatenate(pages)
    if data.size == 0:
        raise DataError(f"{what}: {path} holds no pixels")
    kind = data.dtype.kind
    if kind not in "uif":
        raise DataError(f"{what}: {path} has pixel type {data.dtype}; expected integers or floats")
    if kind == "f":
        if np.isinf(data).any():
            raise DataError(f"{what}: {path} holds inf values; fix the file (mark dead pixels with NaN)")
        if np.isnan(data).all():
            raise DataError(f"{what}: {path} holds only NaN; the frames hold no data")
    else:
        if kind == "i" and int(data.min()) < 0:
            raise DataError(
                f"{what}: {path} holds negative values ({int(data.min())}); raw frames are counts ≥ 0"
            )
        if sensor is not None:
            spec = as_sensor_spec(sensor)
            bits = data.dtype.itemsize * 8 - (1 if kind == "i" else 0)
            if bits < spec.bit_depth:
                raise DataError(
                    f"{what}: {path} is {data.dtype} ({bits}-bit), too narrow for the "
                    f"{spec.bit_depth}-bit sensor; export the frames with at least {spec.bit_depth} bits"
                )
            top = int(data.max())
            shift = data.dtype.itemsize * 8 - spec.bit_depth
            if top > spec.saturation_adu and shift > 0 and not np.any(data & ((1 << shift) - 1)):
                data = data >> shift  # the sensor's bits at the top of the container
                top = int(data.max())
            if top > spec.saturation_adu:
                raise DataError(
                    f"{what}: {path} holds values up to {top}, beyond the {spec.bit_depth}-bit range "
                    f"(max {spec.saturation_adu}) of the sensor; check bit_depth in the system file "
                    "or the file"
                )
    return data
