"""OME-Zarr (NGFF 0.4) volumes: placed in millimetres by napari, Fiji's MoBIE/BigDataViewer and others.

A volume TIFF carries its origin where only ``recon`` (and ImageJ's own calibration) reads it;
OME-Zarr's ``coordinateTransformations`` give every level of a multiscale pyramid its voxel
size (``scale``) and the position of its first voxel's centre (``translation``), in the units
of its ``axes`` (millimetre), so the volume lands where it is in the box.

Layout (Zarr format 2, written without the zarr package: JSON and chunk files):
``NAME.ome.zarr/.zgroup``, ``.zattrs`` (``multiscales``; ``recon``: the unit of the values and
the volume's metadata), and per level ``k/`` a ``.zarray`` and zlib-compressed float32 chunks
of :data:`CHUNK` voxels, keys ``z/y/x``. Level 0 is the volume; level k + 1 is level k averaged
over blocks of 2 × 2 × 2 voxels (an odd last voxel dropped), its first centre half a voxel of
level k further in, until an edge would hold fewer than :data:`MIN_EDGE` voxels.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np

from recon.errors import ConfigError, OutputError
from recon.io.volume import Volume

__all__ = ["CHUNK", "MIN_EDGE", "pyramid", "write_ome_zarr"]

#: Voxels per chunk along each axis.
CHUNK = 64
#: A pyramid level stops before an edge would hold fewer voxels than this.
MIN_EDGE = 16


def pyramid(volume: Volume, levels: int = 4) -> list[Volume]:
    """The volume and up to ``levels − 1`` halvings of it (2 × 2 × 2 means), each placed in mm."""
    out = [volume]
    while len(out) < levels and min(out[-1].shape) // 2 >= MIN_EDGE:
        last = out[-1]
        nz, ny, nx = (n // 2 for n in last.shape)
        data = last.data[: 2 * nz, : 2 * ny, : 2 * nx].astype(np.float64)
        data = data.reshape(nz, 2, ny, 2, nx, 2).mean(axis=(1, 3, 5)).astype(np.float32)
        voxel = tuple(2 * float(v) for v in last.voxel_size_mm)
        origin = tuple(float(o) + 0.5 * float(v)
                       for o, v in zip(last.origin_mm, last.voxel_size_mm, strict=True))
        out.append(Volume(data, origin, voxel, unit=last.unit, meta=last.meta))
    return out


def _write_array(directory: Path, data: np.ndarray) -> None:
    directory.mkdir()
    shape = data.shape
    chunks = tuple(min(CHUNK, n) for n in shape)
    (directory / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": "<f4",
        "compressor": {"id": "zlib", "level": 1}, "fill_value": 0.0, "order": "C", "filters": None,
        "dimension_separator": "/"}, indent=1))
    for k in range(0, shape[0], chunks[0]):
        for j in range(0, shape[1], chunks[1]):
            for i in range(0, shape[2], chunks[2]):
                block = np.zeros(chunks, dtype="<f4")  # edge chunks are stored whole, padded
                part = data[k : k + chunks[0], j : j + chunks[1], i : i + chunks[2]]
                block[: part.shape[0], : part.shape[1], : part.shape[2]] = part
                key = directory / str(k // chunks[0]) / str(j // chunks[1]) / str(i // chunks[2])
                key.parent.mkdir(parents=True, exist_ok=True)
                key.write_bytes(zlib.compress(block.tobytes(), 1))


def write_ome_zarr(path: str | os.PathLike, volume: Volume, *, levels: int = 4,
                   overwrite: bool = False) -> Path:
    """Write ``volume`` as an OME-Zarr multiscale image at ``path`` (a directory), atomically.

    Raises:
        ConfigError: ``path`` exists and ``overwrite`` is False, or does not end in ``.zarr``.
        OutputError: it cannot be written (the partial directory is removed).
    """
    path = Path(path)
    if not path.name.endswith(".zarr"):
        raise ConfigError(f"export: an OME-Zarr path ends in .zarr (density.ome.zarr), got {path.name!r}")
    if path.exists() and not overwrite:
        raise ConfigError(f"export: {path} exists; pass --overwrite or choose another --out")
    levels_ = pyramid(volume, levels)
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in "zyx"]
    datasets = [{"path": str(k), "coordinateTransformations": [
        {"type": "scale", "scale": [float(v) for v in reversed(level.voxel_size_mm)]},
        {"type": "translation", "translation": [float(o) for o in reversed(level.origin_mm)]}]}
        for k, level in enumerate(levels_)]
    attrs = {"multiscales": [{"version": "0.4", "name": path.name.removesuffix(".zarr").removesuffix(".ome"),
                              "axes": axes, "datasets": datasets, "type": "mean (2 × 2 × 2 blocks)"}],
             "recon": {"unit": volume.unit, "meta": volume.meta}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise OutputError(f"export: cannot write beside {path} ({err.strerror or err})") from None
    try:
        (tmp / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
        (tmp / ".zattrs").write_text(json.dumps(attrs, indent=1, default=str))
        for k, level in enumerate(levels_):
            _write_array(tmp / str(k), np.ascontiguousarray(level.data, dtype=np.float32))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"export: cannot write {path} ({err.strerror or err})") from None
    return path
