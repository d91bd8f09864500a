"""Writing a run directory (simulated runs, calibration target sets) atomically: run.toml, frames, truth."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from optics.atomic import output_error
from recon.errors import ConfigError, ShapeError
from recon.io.runspec import SCHEMA, RunSpec
from recon.io.volume import write_volume

__all__ = ["write_run"]


def _as_numpy(array: object) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype in (torch.uint16, torch.uint32):  # numpy() of these needs a recent torch
            array = array.to(torch.int64)
        array = array.numpy()
    array = np.asarray(array)
    if array.dtype.kind in "iu" and array.size and array.dtype.itemsize > 2:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= np.iinfo(np.uint16).max:
            array = array.astype(np.uint16)
        elif lo >= 0 and hi <= np.iinfo(np.uint32).max:
            array = array.astype(np.uint32)
    return array


def _write_tiff(path: Path, array: np.ndarray) -> None:
    """Frames as TIFF: ImageJ-compatible (T pages) for uint8/uint16/float32, else plain."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.dtype in (np.uint8, np.uint16, np.float32):
        tifffile.imwrite(path, array, imagej=True, compression="zlib", metadata={"axes": "TYX"})
    else:
        tifffile.imwrite(path, array, compression="zlib", photometric="minisblack")


def _relative(rel: str, what: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ConfigError(f"write_run: {what} '{rel}' must be a relative path inside the run directory")
    return p


def write_run(
    run_dir: str | os.PathLike,
    spec: RunSpec | Mapping,
    files: Mapping[str, object] | None = None,
    *,
    frames: Mapping[str, object] | None = None,
    darks: Mapping[str, object] | None = None,
    volumes: Mapping[str, object] | None = None,
    extra_files: Mapping[str, bytes | str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a whole run directory: into a temporary sibling, renamed into place when complete.

    Args:
        run_dir: the run directory to create.
        spec: a :class:`RunSpec`, or the run.toml tables as a dict (``schema`` may be left out).
        files: relative path → array written as TIFF (e.g. full-sensor frames, or view frames
            the spec names itself).
        frames: view name → (K, h, w) or (h, w) ADU of that view (numpy or torch; uint16 from
            :func:`~recon.io.sensor.simulate_adu`, or float32 for ``noise="none"``). Written to the
            view's ``frames`` path, or ``views/<name>.tif`` (filled into the spec) when it has none.
        darks: view name → (K, h, w) or (h, w) dark ADU; written to the view's ``dark`` path or
            ``views/<name>_dark.tif``.
        volumes: relative path → :class:`~recon.io.volume.Volume` (e.g. ``truth.tif``).
        extra_files: relative path → bytes or text (e.g. ``system.toml``, ``phantom.json``).
        overwrite: replace an existing run directory (the old one is removed only after the new
            one is in place).

    Returns:
        The run directory.

    Raises:
        ConfigError: the directory exists (without ``overwrite``), the spec is invalid, a view
            name is unknown, or run.toml names a file that nothing writes.
        ShapeError: an array does not match its view's ROI.
    """
    import tomli_w


    run_dir = Path(run_dir)
    if run_dir.exists() and not overwrite:
        raise ConfigError(f"write_run: {run_dir} exists; pass --overwrite or choose another --out")
    if not isinstance(spec, RunSpec):
        spec = RunSpec.from_dict({"schema": SCHEMA, **dict(spec)}, source="write_run spec")
    names = [v.name for v in spec.views]
    arrays: dict[str, np.ndarray] = {}
    for rel, array in (files or {}).items():
        arrays[str(_relative(rel, "file"))] = _as_numpy(array)
    views = list(spec.views)
    for table, key, suffix in ((frames, "frames", ""), (darks, "dark", "_dark")):
        for name, array in (table or {}).items():
            if name not in names:
                raise ConfigError(f"write_run: {key} given for view '{name}', which the spec does not have")
            i = names.index(name)
            rel = getattr(views[i], key) or f"views/{name}{suffix}.tif"
            views[i] = replace(views[i], **{key: rel})
            arrays[str(_relative(rel, key))] = _as_numpy(array)
    spec = replace(spec, views=tuple(views))
    spec.validate(source="write_run spec")
    written = set(arrays) | {str(_relative(r, "volume")) for r in (volumes or {})}
    written |= {str(_relative(r, "file")) for r in (extra_files or {})}
    referenced = [(f"view {v.name} frames", v.frames) for v in spec.views]
    referenced += [(f"view {v.name} dark", v.dark) for v in spec.views]
    referenced += [("frames", spec.frames), ("dark", spec.dark)]
    if spec.truth is not None:
        referenced += [("truth volume", spec.truth.volume), ("truth phantom", spec.truth.phantom)]
    for what, rel in referenced:
        if rel is not None and str(_relative(rel, what)) not in written:
            raise ConfigError(
                f"write_run: run.toml names {what} '{rel}' but nothing writes it; pass the data"
            )
    for v in spec.views:
        for what, rel in (("frames", v.frames), ("dark", v.dark)):
            if rel is None:
                continue
            shape = arrays[str(PurePosixPath(rel))].shape
            if len(shape) not in (2, 3) or tuple(shape[-2:]) != v.shape:
                raise ShapeError(
                    f"write_run: {what} of view '{v.name}' have shape {tuple(shape)}, but its roi is "
                    f"{v.shape[0]}×{v.shape[1]} (h×w); pass (K, h, w) or (h, w) arrays"
                )

    parent = run_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.partial-", dir=parent))
    except OSError as err:

        raise output_error(run_dir, err) from None
    old: Path | None = None
    try:
        for rel, array in arrays.items():
            _write_tiff(work / rel, array)
        for rel, volume in (volumes or {}).items():
            write_volume(work / rel, volume)
        for rel, payload in (extra_files or {}).items():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload.encode("utf-8") if isinstance(payload, str) else payload)
        (work / "run.toml").write_text(tomli_w.dumps(spec.to_dict()), encoding="utf-8")
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700 directories
        if run_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.old-", dir=parent))
            os.replace(run_dir, old / "run")
        try:
            os.replace(work, run_dir)
        except OSError:
            if old is not None:  # put the previous run back
                os.replace(old / "run", run_dir)
            raise
    except OSError as err:  # disk full, permissions: one line, nothing left behind

        raise output_error(run_dir, err) from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return run_dir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
