"""`recon export`: a fit's (or any) density volume as OME-Zarr, placed in millimetres by napari and others."""

from __future__ import annotations

import os
from pathlib import Path

from recon.errors import ConfigError
from recon.io.omezarr import write_ome_zarr
from recon.io.volume import read_volume
from recon.jobs.mesh import density_path

__all__ = ["export"]


def export(source: str | os.PathLike, out: str | os.PathLike | None = None, *, levels: int = 4,
           overwrite: bool = False) -> Path:
    """Write ``source`` (a fit output directory's density.tif, or a volume TIFF) as OME-Zarr.

    ``out`` defaults to ``density.ome.zarr`` beside the TIFF. ``levels``: the multiscale
    pyramid's levels (:func:`recon.io.omezarr.pyramid`). Returns the path written.

    Raises:
        ConfigError: no such fit or volume; ``levels`` out of 1 … 10; ``out`` exists (without
            ``overwrite``) or does not end in ``.zarr``.
        DataError: the TIFF is not a volume.
    """
    path = density_path(Path(source))
    if not 1 <= levels <= 10:
        raise ConfigError(f"export: --levels must be in 1 … 10, got {levels}")
    where = Path(out) if out is not None else path.with_name(f"{path.stem}.ome.zarr")
    return write_ome_zarr(where, read_volume(path), levels=levels, overwrite=overwrite)
