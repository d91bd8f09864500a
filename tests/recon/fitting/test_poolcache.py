"""The ray-pool cache: the same pool back, other keys for other instruments, nothing altered trusted."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cli import _pool_cache_dir
from recon.fitting.data import load_fit_data
from recon.fitting.poolcache import PoolCacheError, load_pool_segments, pool_key, save_pool_segments
from recon.fitting.raypool import RayPool, build_ray_pool
from tests.micro import LogLines, make_micro_case


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    case = make_micro_case(tmp_path_factory.mktemp("poolcache"))
    return load_fit_data(case["run"])[0]


def _same(a: RayPool, b: RayPool) -> bool:
    def equal(x, y):
        return torch.equal(x, y) if torch.is_tensor(x) else x == y

    rays = all(equal(getattr(a.rays, f), getattr(b.rays, f)) for f in a.rays.__dataclass_fields__)
    rest = [f for f in RayPool.__dataclass_fields__ if f not in ("rays", "key")]  # key: None without a cache
    return rays and all(equal(getattr(a, f), getattr(b, f)) for f in rest)


def _build(data, cache, log=None, seed=0):
    return build_ray_pool(data, samples=2, seed=seed, cache_dir=cache, progress=log.log if log else None)


def _cache_file(cache: Path) -> Path:
    (file,) = cache.glob("pool-*.npz")
    return file


def test_a_second_build_reads_the_same_pool_from_the_cache(data, tmp_path):
    first_log, second_log = LogLines(), LogLines()
    traced = _build(data, tmp_path, first_log)
    assert any("traced view" in line for line in first_log.lines)
    assert any("saved to the cache" in line for line in first_log.lines)
    again = _build(data, tmp_path, second_log)
    assert not any("traced view" in line for line in second_log.lines)
    assert any("read from the cache" in line for line in second_log.lines)
    assert _same(traced, again)
    assert _same(traced, _build(data, None))  # the cache changes nothing


def test_the_key_follows_everything_the_tracing_depends_on(data):
    def key(d=data, **kw):
        args = {"samples": 2, "seed": 0, "rays_per_sample": None, "chunk_pixels": 65536, "sampling": "sobol",
                **kw}
        return pool_key(d, **args)

    base = key()
    assert key() == base
    system = data.system
    camera = system.cameras[0]
    lens = dataclasses.replace(camera.lens, focal_length_mm=camera.lens.focal_length_mm + 0.0002)
    cameras = (dataclasses.replace(camera, lens=lens), *system.cameras[1:])
    refocused = dataclasses.replace(system, cameras=cameras)
    box = dataclasses.replace(system.volume, min_mm=system.volume.min_mm - 0.0002)
    moved = [dataclasses.replace(data, system=refocused),
             dataclasses.replace(data, system=dataclasses.replace(system, volume=box))]
    view = data.views[0]
    roi = (view.roi[0] + 1, *view.roi[1:])
    shifted = dataclasses.replace(data, views=(dataclasses.replace(view, roi=roi), *data.views[1:]))
    others = [key(seed=1), key(samples=3), key(rays_per_sample=[2] * len(data.views)), key(chunk_pixels=1000),
              key(sampling="random"), key(moved[0]), key(moved[1]), key(shifted)]
    assert len({base, *others}) == 1 + len(others)
    frames = dataclasses.replace(data, views=(dataclasses.replace(view, electrons=view.electrons * 2),
                                              *data.views[1:]))
    assert key(frames) == base  # the frames are not traced


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "garbage", "another key", "pickle"])
def test_a_damaged_or_foreign_file_is_traced_anew_and_replaced(data, tmp_path, damage):
    reference = _build(data, tmp_path)
    file = _cache_file(tmp_path)
    raw = bytearray(file.read_bytes())
    marker = tmp_path / "ran"
    if damage == "flip a byte":
        raw[len(raw) // 2] ^= 0xFF
        file.write_bytes(bytes(raw))
    elif damage == "truncate":
        file.write_bytes(bytes(raw[: len(raw) // 3]))
    elif damage == "garbage":
        file.write_bytes(os.urandom(4096))
    elif damage == "another key":
        with np.load(file) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays["meta"]))
        arrays["meta"] = np.array(json.dumps({**meta, "key": "0" * 40}))
        np.savez(file, **arrays)
    else:  # an object array whose unpickling would run code
        class Boom:
            def __reduce__(self):
                return (Path.touch, (marker,))

        with np.load(file) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["origins"] = np.array([Boom()], dtype=object)
        np.savez(file, **arrays)
    log = LogLines()
    again = _build(data, tmp_path, log)
    assert any("tracing anew" in line for line in log.lines), log.lines
    assert any("traced view" in line for line in log.lines)
    assert _same(reference, again)
    assert not marker.exists()
    assert _same(reference, _build(data, tmp_path))  # the file was replaced by a good one


def test_a_file_whose_checksum_matches_but_breaks_the_invariants_is_refused(data, tmp_path):
    pool = _build(data, None)
    keys = pool.n_pixels * pool.samples
    key = pool_key(data, samples=2, seed=0, rays_per_sample=None, chunk_pixels=65536, sampling="sobol")
    good = tmp_path / "good.npz"
    save_pool_segments(good, key, pool.rays, pool.offsets)
    n_paths = data.system.n_paths
    rays, offsets = load_pool_segments(good, key, keys=keys, dtype=data.system.dtype, n_paths=n_paths)
    assert torch.equal(offsets, pool.offsets) and torch.equal(rays.weights, pool.rays.weights)
    bad_offsets = pool.offsets.clone()
    bad_offsets[5], bad_offsets[6] = bad_offsets[6] + 1, bad_offsets[5]
    unsorted = dataclasses.replace(pool.rays, pixel=pool.rays.pixel.flip(0))
    t_far = pool.rays.t_far.clone().index_fill_(0, torch.tensor([3]), np.nan)
    nan = dataclasses.replace(pool.rays, t_far=t_far)
    far_path = dataclasses.replace(pool.rays, path=pool.rays.path + n_paths)
    cases = [(pool.rays, bad_offsets, "offsets"), (unsorted, pool.offsets, "sorted"),
             (nan, pool.offsets, "non-finite"), (far_path, pool.offsets, "light path")]
    for rays, offsets, what in cases:
        save_pool_segments(tmp_path / "bad.npz", key, rays, offsets)
        with pytest.raises(PoolCacheError, match=what):
            load_pool_segments(tmp_path / "bad.npz", key, keys=keys, dtype=data.system.dtype, n_paths=n_paths)
    with pytest.raises(PoolCacheError, match="float64"):
        load_pool_segments(good, key, keys=keys, dtype=torch.float64, n_paths=n_paths)
    with pytest.raises(PoolCacheError, match="another pool"):
        load_pool_segments(good, "f" * 40, keys=keys, dtype=data.system.dtype, n_paths=n_paths)


def test_a_cache_that_cannot_be_written_is_said_and_the_fit_goes_on(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = LogLines()
    pool = _build(data, blocker / "pools", log)
    assert any("cannot write" in line for line in log.lines)
    assert _same(pool, _build(data, None))


def test_the_cli_cache_directory(monkeypatch, tmp_path):
    assert _pool_cache_dir(str(tmp_path)) == tmp_path
    assert _pool_cache_dir("off") is None
    monkeypatch.setenv("RECON_POOL_CACHE", "OFF")
    assert _pool_cache_dir(None) is None
    monkeypatch.delenv("RECON_POOL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _pool_cache_dir(None) == tmp_path / "recon" / "pools"


def _file(folder: Path, name: str, size: int, age_s: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * size)
    when = 1.7e9 - age_s
    os.utime(path, (when, when))
    return path


def test_the_cache_is_pruned_least_recently_used_first_down_to_its_limit(tmp_path):
    """Only the cache's own files count and go, oldest use first; what the fit uses stays."""
    from recon.fitting.poolcache import prune_cache

    old_pool = _file(tmp_path, "pool-a.npz", 400, age_s=300)
    old_sens = _file(tmp_path, "sensitivity-a.npz", 400, age_s=200)
    newer = _file(tmp_path, "pool-b.npz", 400, age_s=100)
    in_use = _file(tmp_path, "pool-c.npz", 400, age_s=400)  # the oldest, but the running fit's
    other = _file(tmp_path, "notes.txt", 10_000, age_s=500)  # not the cache's: neither counted nor removed
    assert prune_cache(tmp_path, keep=[in_use], limit_bytes=10_000) == []
    assert prune_cache(tmp_path, keep=[in_use], limit_bytes=900) == [old_pool, old_sens]
    assert newer.exists() and in_use.exists() and other.exists()
    assert prune_cache(tmp_path, keep=[in_use, newer], limit_bytes=1) == []  # what is kept may exceed it


def test_reading_a_pool_marks_it_used_and_saving_one_prunes_the_cache(data, tmp_path, monkeypatch):
    """A pool read is the most recently used; a new pool over the limit removes the least recently used."""
    cache = tmp_path / "cache"
    _build(data, cache)
    (first,) = cache.glob("pool-*.npz")
    os.utime(first, (1.6e9, 1.6e9))
    _build(data, cache)
    assert first.stat().st_mtime > 1.6e9 + 1  # read: marked as used
    os.utime(first, (1.6e9, 1.6e9))
    monkeypatch.setenv("RECON_POOL_CACHE_MAX_GB", str(first.stat().st_size * 1.5 / 1e9))
    log = LogLines()
    _build(data, cache, log=log, seed=1)  # another pool: both do not fit, the first goes
    assert not first.exists() and len(list(cache.glob("pool-*.npz"))) == 1
    assert any("removed" in line and "least recently used" in line for line in log.lines)


@pytest.mark.parametrize("value", ["0", "-3", "lots", "inf", "nan"])
def test_a_malformed_cache_limit_is_refused_before_tracing(data, tmp_path, monkeypatch, value):
    from recon.errors import ConfigError

    monkeypatch.setenv("RECON_POOL_CACHE_MAX_GB", value)
    with pytest.raises(ConfigError, match="RECON_POOL_CACHE_MAX_GB=.*positive number of GB"):
        _build(data, tmp_path)
    assert not list(tmp_path.glob("pool-*"))
