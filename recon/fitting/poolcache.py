"""A disk cache of traced ray pools: the next shot through the same instrument skips the tracing.

The segments of a :class:`~recon.fitting.raypool.RayPool` depend only on the instrument, the
views' regions, the pool's samples and seed, and the tracing code — not on the frames. They are
saved as one uncompressed ``.npz`` of plain arrays, named by a key that hashes all of these
(:func:`pool_key`): the system's full description, each view's camera and region, samples, seed,
rays per sample, the pixel chunking, the source of every module the tracing runs, and the torch
and numba versions. A changed instrument or code gets another key, so a stale file is never read.

A file is never trusted: it is read without pickles (``allow_pickle=False``), and its key,
format, array shapes and dtypes, a BLAKE2b checksum of every array's bytes, and the pool's
invariants (offsets from 0 to the segment count, segments sorted by pixel sample and counted by
the offsets, finite geometry) are checked (:func:`load_pool_segments`). One that fails says why
and is traced anew and replaced. Files are written to a temporary name and renamed, so a reader
never sees half a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np
import torch

from optics.system import system_to_dict
from recon.errors import ConfigError
from recon.model.render import RayBatch

__all__ = ["DEFAULT_MAX_GB", "POOL_CACHE_FORMAT", "PoolCacheError", "SENSITIVITY_FORMAT", "array_digest",
           "cache_limit_bytes", "load_pool_segments", "load_sensitivities", "mark_used", "pool_key",
           "pool_path", "prune_cache", "save_pool_segments", "save_sensitivities", "sensitivity_path",
           "tracing_code_version"]

POOL_CACHE_FORMAT = 1

# Every module whose code decides the traced segments.
_TRACING_CODE = ("optics", "recon/model/forward.py", "recon/model/render.py", "recon/fitting/raypool.py")
_FLOATS = ("origins", "directions", "weights", "t_near", "t_far")
_INTS = ("pixel", "path")


class PoolCacheError(Exception):
    """A cached pool that cannot be used (the message says why); the caller traces anew."""


@functools.cache
def tracing_code_version(entries: tuple[str, ...] = _TRACING_CODE) -> str:
    """A hash of the source of every module the tracing runs (:data:`_TRACING_CODE`), or of ``entries``."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.blake2b(digest_size=16)
    for entry in entries:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def pool_key(data, *, samples: int, seed: int, rays_per_sample: Sequence[int] | None,
             chunk_pixels: int, sampling: str) -> str:
    """The cache key of the pool :func:`~recon.fitting.raypool.build_ray_pool` traces for these arguments."""
    description = {
        "format": POOL_CACHE_FORMAT,
        "code": tracing_code_version(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "dtype": str(data.system.dtype),
        "system": system_to_dict(data.system),
        "views": [[int(v.camera), [int(c) for c in v.roi]] for v in data.views],
        "samples": int(samples),
        "seed": int(seed),
        "rays_per_sample": None if rays_per_sample is None else [int(m) for m in rays_per_sample],
        "chunk_pixels": int(chunk_pixels),
        "sampling": str(sampling),
    }
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.blake2b(digest_size=20)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def save_pool_segments(path: str | os.PathLike, key: str, rays: RayBatch, offsets: torch.Tensor) -> None:
    """Write a pool's segments (``rays``, ``offsets``) under ``key``, atomically."""
    path = Path(path)
    arrays = {name: getattr(rays, name).detach().cpu().numpy() for name in _FLOATS + _INTS}
    arrays["offsets"] = offsets.cpu().numpy()
    meta = {"format": POOL_CACHE_FORMAT, "key": key, "segments": len(rays), "checksum": _checksum(arrays)}
    _write_npz(path, meta, arrays)


def _write_npz(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """``meta`` (as JSON) and ``arrays`` in one uncompressed ``.npz`` at ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_pool_segments(path: str | os.PathLike, key: str, *, keys: int, dtype: torch.dtype,
                       n_paths: int) -> tuple[RayBatch, torch.Tensor]:
    """Read and check the segments saved under ``key``: ``(rays, offsets)``.

    Args:
        path: the cache file.
        key: the key it must hold (:func:`pool_key`).
        keys: the pool's pixel samples (``pixels · samples``); ``offsets`` has ``keys + 1`` entries.
        dtype: the floating dtype of the segments (the system's).
        n_paths: the instrument's light paths (direct + mirrors).

    Raises:
        PoolCacheError: missing, unreadable, written for another key, or failing a check.
    """
    path = Path(path)
    if not path.is_file():
        raise PoolCacheError(f"no cached pool {path.name}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {name: npz[name] for name in (*_FLOATS, *_INTS, "offsets")}
    except Exception as err:  # a damaged or foreign file of any kind: trace anew
        raise PoolCacheError(f"cannot read {path} ({type(err).__name__}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != POOL_CACHE_FORMAT or meta.get("key") != key:
        raise PoolCacheError(f"{path} holds another pool (format or key differ)")
    segments = meta.get("segments")
    real = np.dtype(str(dtype).removeprefix("torch."))
    expect = {"origins": ((segments, 3), real), "directions": ((segments, 3), real),
              **{name: ((segments,), real) for name in ("weights", "t_near", "t_far")},
              "pixel": ((segments,), np.int64), "path": ((segments,), np.int64),
              "offsets": ((keys + 1,), np.int64)}
    for name, (shape, kind) in expect.items():
        if arrays[name].shape != shape or arrays[name].dtype != kind:
            raise PoolCacheError(f"{path}: {name} is {arrays[name].dtype}{list(arrays[name].shape)}, not "
                                 f"{np.dtype(kind)}{list(shape)}")
    if meta.get("checksum") != _checksum(arrays):
        raise PoolCacheError(f"{path}: its arrays do not match their checksum (altered or damaged)")
    pixel, offsets = arrays["pixel"], arrays["offsets"]
    if offsets[0] != 0 or offsets[-1] != segments or (np.diff(offsets) < 0).any():
        raise PoolCacheError(f"{path}: offsets do not run from 0 to the {segments} segments")
    if segments and (pixel[0] < 0 or pixel[-1] >= keys or (np.diff(pixel) < 0).any()
                     or not np.array_equal(np.bincount(pixel, minlength=keys), np.diff(offsets))):
        raise PoolCacheError(f"{path}: segments are not sorted by pixel sample as the offsets count them")
    if segments and ((arrays["path"] < 0).any() or (arrays["path"] >= n_paths).any()):
        raise PoolCacheError(f"{path}: a segment's light path is not one of the instrument's {n_paths}")
    if not all(np.isfinite(arrays[name]).all() for name in _FLOATS):
        raise PoolCacheError(f"{path}: segments hold non-finite values")
    rays = RayBatch(*(torch.from_numpy(arrays[name]) for name in _FLOATS + _INTS))
    return rays, torch.from_numpy(offsets)


# --------------------------------------------------------------------------- EM's sensitivities

SENSITIVITY_FORMAT = 1


def pool_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """The file of the pool of key ``key`` in the cache."""
    return Path(cache_dir) / f"pool-{key}.npz"


def sensitivity_path(cache_dir: str | os.PathLike, pool: str) -> Path:
    """The file of EM's sensitivities on the pool of key ``pool``: one per pool, replaced when stale."""
    return Path(cache_dir) / f"sensitivity-{pool}.npz"


def array_digest(*arrays) -> str:
    """A BLAKE2b digest of arrays or tensors (dtype, shape and bytes of each, in order)."""
    digest = hashlib.blake2b(digest_size=20)
    for a in arrays:
        a = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
        digest.update(f"{a.dtype.str}:{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def save_sensitivities(path: str | os.PathLike, key: str, grids: list[torch.Tensor]) -> None:
    """Write EM's per-subset sensitivities (``grids``, one (Z, Y, X) each) under ``key``, atomically."""
    path = Path(path)
    arrays = {f"grid{i:04d}": g.detach().cpu().numpy() for i, g in enumerate(grids)}  # no stacked copy
    meta = {"format": SENSITIVITY_FORMAT, "key": key, "count": len(grids), "checksum": _checksum(arrays)}
    _write_npz(path, meta, arrays)


def load_sensitivities(path: str | os.PathLike, key: str, *, count: int, shape: tuple[int, int, int],
                       dtype: torch.dtype) -> list[torch.Tensor]:
    """Read and check the ``count`` sensitivities of ``shape`` and ``dtype`` saved under ``key``.

    Raises:
        PoolCacheError: missing, unreadable, written for another key, or failing a check (shape,
            dtype, checksum, a value negative or not finite).
    """
    path = Path(path)
    if not path.is_file():
        raise PoolCacheError(f"no cached sensitivities {path.name}")
    names = [f"grid{i:04d}" for i in range(count)]
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != SENSITIVITY_FORMAT:
                raise PoolCacheError(f"{path} is not a sensitivity file of format {SENSITIVITY_FORMAT}")
            if meta.get("key") != key:
                raise PoolCacheError(f"{path} holds other sensitivities (their key differs)")
            if meta.get("count") != count or sorted(npz.files) != sorted([*names, "meta"]):
                raise PoolCacheError(f"{path} holds {meta.get('count')} sensitivities, not {count}")
            arrays = {name: npz[name] for name in names}
    except PoolCacheError:
        raise
    except Exception as err:  # a damaged or foreign file of any kind: compute anew
        raise PoolCacheError(f"cannot read {path} ({type(err).__name__}: {err})") from None
    real = np.dtype(str(dtype).removeprefix("torch."))
    for grid in arrays.values():
        if grid.shape != tuple(shape) or grid.dtype != real:
            raise PoolCacheError(f"{path}: a grid is {grid.dtype}{list(grid.shape)}, not {real}{list(shape)}")
    if meta.get("checksum") != _checksum(arrays):
        raise PoolCacheError(f"{path}: its arrays do not match their checksum (altered or damaged)")
    if not all(np.isfinite(g).all() and (g >= 0).all() for g in arrays.values()):
        raise PoolCacheError(f"{path}: a sensitivity is negative or not finite")
    return [torch.from_numpy(arrays[name]) for name in names]


# --------------------------------------------------------------------------- size

#: The cache's size limit when ``RECON_POOL_CACHE_MAX_GB`` does not set it, GB.
DEFAULT_MAX_GB = 20.0
_CACHE_FILES = ("pool-*.npz", "sensitivity-*.npz")


def cache_limit_bytes() -> int:
    """The pool cache's size limit: ``$RECON_POOL_CACHE_MAX_GB`` (GB, > 0), else :data:`DEFAULT_MAX_GB`.

    Raises:
        ConfigError: the variable is set but not a positive number.
    """
    text = os.environ.get("RECON_POOL_CACHE_MAX_GB")
    if text is None:
        return int(DEFAULT_MAX_GB * 1e9)
    try:
        gb = float(text)
    except ValueError:
        gb = float("nan")
    if not gb > 0 or gb == float("inf"):
        raise ConfigError(f"RECON_POOL_CACHE_MAX_GB={text!r} is not a positive number of GB; set it to "
                          "e.g. 20, or unset it")
    return int(gb * 1e9)


def mark_used(path: str | os.PathLike) -> None:
    """Note that a cache file was just used (its modification time), so that pruning keeps it longest."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache still serves; it is only pruned by its owner
        pass


def prune_cache(cache_dir: str | os.PathLike, keep: Sequence[str | os.PathLike] = (),
                limit_bytes: int | None = None) -> list[Path]:
    """Delete the least recently used cache files until the cache holds at most ``limit_bytes``.

    Only the cache's own files (``pool-*.npz``, ``sensitivity-*.npz``) count and go, the least
    recently used (written or read, :func:`mark_used`) first; ``keep`` (what the running fit
    uses) never goes, even if it alone is over the limit. Files another process removes or a
    file that cannot be removed are passed over. Returns the files deleted.
    """
    limit = cache_limit_bytes() if limit_bytes is None else int(limit_bytes)
    kept = {Path(k).resolve() for k in keep}
    files = []
    for pattern in _CACHE_FILES:
        for path in Path(cache_dir).glob(pattern):
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total <= limit:
            break
        if path.resolve() in kept:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        deleted.append(path)
    return deleted

