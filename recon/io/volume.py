"""Volumes on regular grids and their ImageJ-compatible TIFF files.

Conventions (the same everywhere in the project): arrays are indexed ``(z, y, x)``; physical
coordinates are ``(x, y, z)`` in millimetres; voxel ``(k, j, i)`` has its centre at
``origin_mm + (i, j, k) * voxel_size_mm``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from optics.atomic import atomic_path
from optics.limits import check_number
from recon.errors import ConfigError, DataError, ShapeError

__all__ = ["MAX_TIFF_EXPANSION", "Volume", "check_declared_bytes", "check_tiff_size", "grid_points",
           "interpolate", "quiet_tifffile", "read_volume", "write_volume"]


_FORMAT = "recon.volume/1"


@dataclass(frozen=True)
class Volume:
    """A scalar field sampled on a regular grid.

    Attributes:
        data: (Z, Y, X) float32 values (density: atoms/mm³, or relative units).
        origin_mm: (3,) world position ``(x, y, z)`` of the centre of voxel ``(0, 0, 0)``, mm.
        voxel_size_mm: (3,) voxel edge lengths along ``(x, y, z)``, mm.
        unit: what the values mean, e.g. ``"atoms/mm^3"`` or ``"relative"``.
        meta: extra JSON-serialisable information kept with the file.
    """

    data: np.ndarray
    origin_mm: tuple[float, float, float]
    voxel_size_mm: tuple[float, float, float]
    unit: str = "relative"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if np.ndim(self.data) != 3:
            raise ShapeError(
                f"Volume: data must be 3-D (z, y, x), got shape {np.shape(self.data)}"
            )
        if len(self.origin_mm) != 3 or len(self.voxel_size_mm) != 3:
            raise ShapeError("Volume: origin_mm and voxel_size_mm must have 3 entries (x, y, z)")
        if min(self.voxel_size_mm) <= 0:
            raise ShapeError(f"Volume: voxel sizes must be positive, got {self.voxel_size_mm}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(Z, Y, X)``."""
        return tuple(self.data.shape)

    @property
    def bounds_mm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """Centres of the first and last voxels, ``((x0, y0, z0), (x1, y1, z1))``, mm."""
        last = [o + (n - 1) * s for o, n, s in zip(self.origin_mm, self.shape[::-1],
                                                     self.voxel_size_mm, strict=True)]
        return tuple(self.origin_mm), tuple(last)

    def points(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Voxel centres as a ``(Z, Y, X, 3)`` tensor of ``(x, y, z)`` positions, mm."""
        return grid_points(self.shape, self.origin_mm, self.voxel_size_mm, dtype=dtype)


def grid_points(
    shape: tuple[int, int, int],
    origin_mm: tuple[float, float, float],
    voxel_size_mm: tuple[float, float, float],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return voxel centres of a ``(Z, Y, X)`` grid as ``(Z, Y, X, 3)`` ``(x, y, z)`` mm."""
    axes = [
        torch.arange(n, dtype=dtype, device=device) * s + o
        for n, s, o in zip(shape[::-1], voxel_size_mm, origin_mm, strict=True)
    ]  # x, y, z
    z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    return torch.stack([x, y, z], dim=-1)


@contextlib.contextmanager
def quiet_tifffile():
    """Silence tifffile's log lines while reading (a damaged file becomes one DataError line)."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_volume(path: str | os.PathLike, volume: Volume, *, compress: bool = True) -> None:
    """Write ``volume`` as a float32 ImageJ hyperstack TIFF, atomically; deflate-compressed if ``compress``.

    A fit's density is noise down to the last bits in every voxel, which deflate hardly shrinks:
    :func:`recon.jobs.fit.save_density` stores it as it is; a simulated truth, mostly empty,
    deflates well.

    ImageJ reads the voxel size (mm) from the resolution tags and ``spacing``, and the origin from
    ``xorigin``, ``yorigin``, ``zorigin`` (in voxels: ImageJ's calibrated position of voxel i is
    ``(i − xorigin) · dx``, which makes it ``origin_mm + i · dx``, the centre of voxel i, so Fiji
    shows and measures positions in the box's millimetres); the origin, unit and extra metadata
    also travel as JSON in the ImageJ ``Info`` field, which :func:`read_volume` reads.
    """
    import tifffile

    dx, dy, dz = (float(v) for v in volume.voxel_size_mm)
    info = {
        "format": _FORMAT,
        "axes": "ZYX",
        "origin_mm": [float(v) for v in volume.origin_mm],
        "voxel_size_mm": [dx, dy, dz],
        "shape": list(volume.shape),
        "unit": volume.unit,
        "meta": volume.meta,
    }
    origin = {f"{axis}origin": -float(o) / d for axis, o, d in zip("xyz", volume.origin_mm, (dx, dy, dz),
                                                                  strict=True)}
    data = np.ascontiguousarray(volume.data, dtype=np.float32)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            imagej=True,
            compression="zlib" if compress else None,
            resolution=(1.0 / dx, 1.0 / dy),
            metadata={"spacing": dz, "unit": "mm", "axes": "ZYX", **origin, "Info": json.dumps(info)},
        )


#: A TIFF's pixels may decompress to at most this many times the file's size (deflate's bound is
#: about 1032:1, LZW's about 2730:1): a header that declares more is damaged, or a decompression bomb.
MAX_TIFF_EXPANSION = 4096


def check_tiff_size(tif, path: Path, what: str) -> None:
    """Refuse, before reading a pixel, a TIFF whose declared pixels cannot be real or cannot fit.

    Raises:
        DataError: the series declare more bytes than :data:`MAX_TIFF_EXPANSION` times the file
            size, or more than half of this machine's memory.
    """
    check_declared_bytes(sum(math.prod(int(n) for n in s.shape) * np.dtype(s.dtype).itemsize
                             for s in tif.series), path, what)


def check_declared_bytes(declared: int, path: Path, what: str) -> None:
    """Refuse an image file whose header declares more pixel bytes than it can hold or memory can.

    Raises:
        DataError: more than :data:`MAX_TIFF_EXPANSION` times the file size, or more than half of
            this machine's memory.
    """
    file_size = path.stat().st_size
    if declared > MAX_TIFF_EXPANSION * file_size + (1 << 20):
        raise DataError(f"{what}: {path} declares {declared / 1e9:.3g} GB of pixels in a file of {file_size} "
                        "bytes: it is damaged (or a decompression bomb); re-export it")
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this system: no second check
        return
    if declared > memory / 2:
        raise DataError(f"{what}: {path} holds {declared / 1e9:.3g} GB of pixels, more than half of this "
                        f"machine's memory ({memory / 1e9:.3g} GB); split it into smaller files")


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a volume written by :func:`write_volume` (or any 3-D ImageJ TIFF with voxel sizes).

    Raises:
        DataError: the file is missing, unreadable, not 3-D, or holds NaN/inf.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"read_volume: {path} does not exist; give the path of a volume TIFF")
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tif:
            check_tiff_size(tif, path, "read_volume")
            ij = tif.imagej_metadata or {}
            try:
                data = tif.asarray()
            except (IndexError, ValueError):  # an ImageJ layout tifffile cannot map (one voxel in x)
                data = np.stack([p.asarray() for p in tif.pages])
            page = tif.pages[0]
            xres = page.tags.get("XResolution")
            yres = page.tags.get("YResolution")
    except DataError:
        raise
    except Exception as err:  # tifffile raises many types for corrupt files
        raise DataError(
            f"read_volume: cannot read {path} as TIFF ({err}); is the file complete?"
        ) from None
    info: dict = {}
    if "Info" in ij:
        try:
            info = json.loads(ij["Info"])
        except (TypeError, ValueError, RecursionError):
            info = {}
        if not isinstance(info, dict):  # ImageJ's free-text Info of another program: not ours
            info = {}
    data = np.asarray(data)
    shape = info.get("shape")
    if isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) for n in shape) \
            and math.prod(shape) == data.size:
        data = data.reshape(shape)  # keeps an axis of one voxel, which ImageJ's layout drops
    else:
        data = np.squeeze(data)
    if data.ndim != 3:
        raise DataError(f"read_volume: {path} holds an array of shape {data.shape}, expected 3-D")
    if not np.all(np.isfinite(data)):
        raise DataError(f"read_volume: {path} holds NaN or inf values")
    if "voxel_size_mm" not in info and not ij:
        raise DataError(f"read_volume: {path} carries no voxel size (it is neither a recon volume nor an "
                        "ImageJ stack); set the voxel size in Fiji (Image › Properties) and save it as TIFF")
    if "voxel_size_mm" in info:
        voxel = _triple(info["voxel_size_mm"], "voxel_size_mm", path, low=1e-6, high=1e4)
        origin = _triple(info.get("origin_mm", [0.0, 0.0, 0.0]), "origin_mm", path, low=-1e6, high=1e6)
    else:  # plain ImageJ stack: voxel size from resolution tags, origin at 0
        def _size(tag):
            if tag is None:
                return 1.0
            num, den = tag.value
            return den / num if num else 1.0

        voxel = _triple([_size(xres), _size(yres), ij.get("spacing", 1.0)], "the ImageJ voxel size", path,
                        low=1e-6, high=1e4)
        origin = (0.0, 0.0, 0.0)
    unit, meta = info.get("unit", "relative"), info.get("meta", {})
    if not isinstance(unit, str) or not isinstance(meta, dict):
        raise DataError(f"read_volume: {path}'s metadata holds a unit that is not text or a meta that is not "
                        "a table; rewrite the file with recon (or drop its ImageJ Info)")
    return Volume(
        data=data.astype(np.float32, copy=False),
        origin_mm=origin,
        voxel_size_mm=voxel,
        unit=unit,
        meta=dict(meta),
    )


def _triple(value, key: str, path: Path, *, low: float, high: float) -> tuple[float, float, float]:
    """Three finite numbers in [low, high] (mm) from a volume's metadata; else a one-line DataError.

    Each is checked by :func:`optics.limits.check_number`, as every number of the other files is.
    """
    fix = "rewrite the file with recon or set the voxel size in Fiji (Image › Properties)"
    if not (isinstance(value, list | tuple) and len(value) == 3
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise DataError(f"read_volume: {path}'s {key} is {value!r}, not three numbers; {fix}")
    try:
        return tuple(check_number(v, key, f"read_volume: {path}", low=low, high=high, unit=" mm")
                     for v in value)
    except ConfigError as err:
        raise DataError(f"{err}; {fix}") from None


def interpolate(volume: Volume, points_mm: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of a volume at world points; zero outside the grid.

    Args:
        volume: the volume (values at voxel centres).
        points_mm: (..., 3) points ``(x, y, z)``, mm.

    Returns:
        (...) interpolated values, in the dtype of ``points_mm``.
    """
    import torch.nn.functional as F

    values, origin_mm = np.asarray(volume.data), list(volume.origin_mm)
    for axis, n in enumerate(values.shape):  # (z, y, x)
        if n == 1:  # one voxel thick: it fades to 0 one voxel away, like the faces of any grid
            values = np.pad(values, [(1, 1) if a == axis else (0, 0) for a in range(3)])
            origin_mm[2 - axis] -= volume.voxel_size_mm[2 - axis]
    data = torch.as_tensor(values, device=points_mm.device, dtype=points_mm.dtype)
    origin = torch.tensor(origin_mm, device=points_mm.device, dtype=points_mm.dtype)
    spacing = torch.tensor(volume.voxel_size_mm, device=points_mm.device, dtype=points_mm.dtype)
    size = torch.tensor(values.shape[::-1], device=points_mm.device, dtype=points_mm.dtype)  # x, y, z
    # align_corners=True: −1 and +1 are the centres of the first and last voxels.
    grid = 2.0 * (points_mm - origin) / (spacing * (size - 1).clamp_min(1)) - 1.0
    out = F.grid_sample(data[None, None], grid.reshape(1, -1, 1, 1, 3), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out.reshape(points_mm.shape[:-1])
