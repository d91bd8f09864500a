"""The ray pool: every pixel of every view traced once through the static optics, kept sorted by pixel.

The optics are static during a density fit, so every pixel's rays are traced once, for a pool
of sub-pixel and aperture samples, and kept as segments sorted by pixel and sample (CSR). Each
fit step gathers the segments of a batch of pixels from it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from optics.design import view_regions
from recon.errors import ConfigError
from recon.fitting.data import FitData
from recon.fitting.poolcache import (
    PoolCacheError,
    array_digest,
    cache_limit_bytes,
    load_pool_segments,
    mark_used,
    pool_key,
    pool_path,
    prune_cache,
    save_pool_segments,
)
from recon.model.forward import sees_the_box, trace_in_chunks
from recon.model.loss import Censored
from recon.model.render import RayBatch

__all__ = ["BOOST_SEED_OFFSET", "PROGRESS_EVERY_S", "RayPool", "boost_factors", "boost_for_fit",
           "boost_pool", "build_ray_pool", "check_views_reach_the_box", "check_views_see_the_box",
           "defocused_views", "rays_per_sample"]


#: Seconds between the tracing's progress lines within a view (each view also ends with one).
PROGRESS_EVERY_S = 5.0

#: Added to the fit's seed for the generator of a boosted pool's extra rays (:func:`boost_pool`),
#: so that they are drawn apart from the pool's own.
BOOST_SEED_OFFSET = 7_919

@dataclass(frozen=True)
class RayPool:
    """Pre-traced segments of every pixel sample, sorted by pixel and sample (CSR).

    Attributes:
        rays: segments; ``rays.pixel`` is the key ``pixel · samples + sample``.
        offsets: (n_pixels · samples + 1,) segments of key k are ``offsets[k]:offsets[k+1]``.
        summed_electrons: (n_pixels,) photoelectrons summed over usable frames.
        n_frames: (n_pixels,) usable frames per pixel.
        view_of_pixel: (n_pixels,) view index of each pixel.
        read_noise_e: read noise of the (first) camera, e⁻.
        censored_frames: (n_pixels,) frames clipped at 0 ADU per pixel (censored values,
            :class:`recon.model.loss.Censored`), or None when there are none.
        censor_bound: (n_pixels,) float64 k, the largest shifted count of a clipped frame, or None.
        censor_shift: (n_pixels,) the dark subtraction beyond the offset, e⁻, or None.
        censor_var: (n_pixels,) one frame's read variance σ_f² (+1e-3), or None.
        key: the pool cache's key of these segments (:func:`~recon.fitting.poolcache.pool_key`),
            or None when the pool was built without the cache; a boosted pool keeps its
            instrument pool's key.
        boost: a digest of the boost factors (:func:`boost_pool`), or None for a pool as traced.
    """

    rays: RayBatch
    offsets: torch.Tensor
    summed_electrons: torch.Tensor
    n_frames: torch.Tensor
    view_of_pixel: torch.Tensor
    read_noise_e: float
    samples: int
    censored_frames: torch.Tensor | None = None
    censor_bound: torch.Tensor | None = None
    censor_shift: torch.Tensor | None = None
    censor_var: torch.Tensor | None = None
    key: str | None = None
    boost: str | None = None
    #: :meth:`strata` per stratum length (derived, never saved; a replaced pool starts empty).
    _strata: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def strata(self, step_mm: float) -> torch.Tensor:
        """(R,) strata of each segment as the renderer samples it: ``ceil(length / step_mm)``, at least 1.

        In the rays' dtype (a segment 3.0 mm long has 100 strata of 0.03 mm in float32 where a
        float64 division gives 101), computed once per pool and stratum length.
        """
        key = float(step_mm)
        if key not in self._strata:
            length = (self.rays.t_far - self.rays.t_near).detach().clamp_min(0.0)
            self._strata[key] = torch.ceil(length / key).clamp_min(1)
        return self._strata[key]

    @property
    def observed_frames(self) -> torch.Tensor:
        """(n_pixels,) usable plus censored frames per pixel: a pixel with any is usable."""
        return self.n_frames if self.censored_frames is None else self.n_frames + self.censored_frames

    def censored(self, pixels: torch.Tensor) -> Censored | None:
        """``pixels``' frames clipped at the black level (for :func:`recon.model.loss.data_loss`), or None."""
        if self.censored_frames is None:
            return None
        return Censored(self.censored_frames[pixels], self.censor_bound[pixels], self.censor_shift[pixels],
                        self.censor_var[pixels])

    @property
    def n_pixels(self) -> int:
        """Number of pixels."""
        return self.summed_electrons.shape[0]

    def chunks(self, pixels: torch.Tensor, step_mm: float, max_samples: int = 1 << 19) -> list[torch.Tensor]:
        """``pixels`` split, in order, into runs of about ``max_samples`` strata each.

        A segment of length L holds ``ceil(L / step_mm)`` strata (as the renderer samples it); a
        run holds the pixels whose preceding strata fall in one multiple of ``max_samples``, so at
        most ``max_samples`` plus one pixel's. Rendering a field run by run then holds a bounded
        number of samples' activations at once, however many segments its pixels have.
        """
        if not len(pixels):
            return []
        keys = pixels * self.samples
        first, last = self.offsets[keys], self.offsets[keys + self.samples]
        strata = self.strata(step_mm)
        total = torch.cat([strata.new_zeros(1, dtype=torch.float64), strata.double().cumsum(0)])
        cost = total[last] - total[first]  # each pixel's strata
        run = torch.div(cost.cumsum(0) - cost, max_samples, rounding_mode="floor")
        ends = (run[1:] != run[:-1]).nonzero(as_tuple=True)[0] + 1
        return list(pixels.tensor_split(ends.cpu()))

    def gather(self, pixels: torch.Tensor, sample: torch.Tensor | None = None) -> RayBatch:
        """Segments of ``pixels`` (B,), with ``pixel`` renumbered 0 … B − 1.

        Args:
            pixels: (B,) pixel indices (may repeat).
            sample: (B,) one pooled sample per pixel to use (weights scaled by ``samples``);
                None uses every pooled sample.
        """
        if sample is None:
            keys = pixels.unsqueeze(1) * self.samples + torch.arange(self.samples, device=pixels.device)
            owner = torch.arange(len(pixels), device=pixels.device).repeat_interleave(self.samples)
            scale = 1.0
        else:
            keys, owner, scale = (
                pixels * self.samples + sample,
                torch.arange(len(pixels), device=pixels.device),
                float(self.samples),
            )
        keys = keys.reshape(-1)
        start = self.offsets[keys]
        count = self.offsets[keys + 1] - start
        local = torch.repeat_interleave(owner, count)
        first = torch.cumsum(count, 0) - count
        index = torch.repeat_interleave(start - first, count) + torch.arange(
            int(count.sum()), device=pixels.device
        )
        batch = self.rays.select(index)
        weights = batch.weights * scale if scale != 1.0 else batch.weights
        return RayBatch(
            batch.origins, batch.directions, weights, batch.t_near, batch.t_far, local, batch.path
        )


def defocused_views(data: FitData, margin_px: int = 4) -> list[bool]:
    """For each view: is the defocus blur of the box centre wider than the box's image?

    Such a view (the direct view of the dome: a blur of 371 px against a box of about 170 px)
    resolves nothing inside the box, and each of its pixels integrates over a wide cone, which a
    few rays sample poorly. The blur and the box's image are those of the instrument's paths
    (:func:`optics.design.view_regions`) whose regions overlap the view's.
    """
    regions = {cam: view_regions(data.system, cam, margin_px) for cam in {v.camera for v in data.views}}
    out = []
    for view in data.views:
        x0, y0, w, h = view.roi
        wide = False
        for r in regions[view.camera]:
            rx, ry, rw, rh = r.roi
            if rx < x0 + w and x0 < rx + rw and ry < y0 + h and y0 < ry + rh:
                box_px = max(rw, rh) - r.blur_px - 2 * margin_px
                wide = wide or r.blur_px > box_px
        out.append(wide)
    return out


def rays_per_sample(data: FitData, defocused: int) -> list[int]:
    """Rays per pooled sample of each view: ``defocused`` for :func:`defocused_views`, else 1."""
    return [defocused if wide else 1 for wide in defocused_views(data)]


def build_ray_pool(
    data: FitData,
    *,
    samples: int,
    seed: int,
    rays_per_sample: Sequence[int] | None = None,
    chunk_pixels: int = 65536,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    sampling: str = "sobol",
) -> RayPool:
    """Trace every pixel of every view once (static optics) and sort the segments by pixel.

    ``rays_per_sample[v]`` = m (default 1) rays are traced for each of the ``samples`` pooled
    samples of view v's pixels (S·m samples, each weighing 1/(S·m)), and ray s is filed as pooled
    sample s // m: the pooled samples of a pixel still sum to its prediction, and one of them
    scaled by S (a random-sample step) is still unbiased, while a wide defocus cone is sampled m
    times more densely. ``sampling`` says how a pixel's samples are drawn (``sobol``, as
    ``recon fit`` by default, or ``random``: :func:`optics.sampling.sample_pixel_samples`).

    With ``cache_dir`` the segments are read from the pool cache when this instrument, these
    views and settings were traced before (:mod:`recon.fitting.poolcache`), and written there
    after tracing otherwise; a cache that cannot be read or written is said and ignored.
    """
    sums, frames, view_ids, censored, bounds, shifts, variances = [], [], [], [], [], [], []
    for vi, view in enumerate(data.views):
        electrons = view.electrons.reshape(view.electrons.shape[0], -1)
        mask = view.mask.reshape(view.mask.shape[0], -1)
        sums.append((electrons * mask).sum(0))
        frames.append(mask.sum(0))
        view_ids.append(torch.full((electrons.shape[1],), vi, dtype=torch.long))
        clipped = view.censored
        var = data.system.cameras[view.camera].sensor.read_noise_e ** 2 + 1e-3  # one frame's
        variances.append(torch.full((electrons.shape[1],), var, dtype=torch.float64))
        if clipped is None:
            censored.append(torch.zeros_like(frames[-1]))
            bounds.append(torch.full((electrons.shape[1],), -1.0, dtype=torch.float64))
            shifts.append(torch.zeros(electrons.shape[1], dtype=torch.float64))
        else:
            censored.append(clipped.reshape(len(mask), -1).sum(0))
            bounds.append(torch.floor(view.censor_e.reshape(-1).double() + var))
            shifts.append(view.censor_shift.reshape(-1).double())
    n_pixels = sum(len(v) for v in view_ids)
    say = progress or (lambda text: None)
    segments = None
    if cache_dir is not None:
        key = pool_key(data, samples=samples, seed=seed, rays_per_sample=rays_per_sample,
                       chunk_pixels=chunk_pixels, sampling=sampling)
        where = pool_path(cache_dir, key)
        limit = cache_limit_bytes()  # a malformed limit is refused before any tracing
        try:
            segments = load_pool_segments(where, key, keys=n_pixels * samples, dtype=data.system.dtype,
                                          n_paths=data.system.n_paths)
            mark_used(where)
            say(f"pool: read from the cache {where}")
        except PoolCacheError as err:
            if where.exists():
                say(f"pool cache: {err}; tracing anew")
    if segments is None:
        segments = _trace_segments(data, samples, seed, rays_per_sample, chunk_pixels, say, sampling)
        if cache_dir is not None:
            try:
                save_pool_segments(where, key, *segments)
                say(f"pool: saved to the cache {where}")
                for gone in prune_cache(cache_dir, keep=[where], limit_bytes=limit):
                    say(f"pool cache: removed {gone.name}, the least recently used (over "
                        f"{limit / 1e9:.3g} GB, RECON_POOL_CACHE_MAX_GB)")
            except OSError as err:
                say(f"warning: pool cache: cannot write {where} ({err.strerror or err}); going on without it")
    rays, offsets = segments
    read_noise = data.read_noise_e
    if read_noise is None:
        read_noise = data.system.cameras[0].sensor.read_noise_e
    pool = RayPool(rays, offsets, torch.cat(sums), torch.cat(frames), torch.cat(view_ids), float(read_noise),
                   samples, key=key if cache_dir is not None else None)
    if any(bool(c.any()) for c in censored):
        pool = dataclasses.replace(pool, censored_frames=torch.cat(censored), censor_bound=torch.cat(bounds),
                                   censor_shift=torch.cat(shifts), censor_var=torch.cat(variances))
    return pool


def _trace_segments(data: FitData, samples: int, seed: int, rays_per_sample: Sequence[int] | None,
                    chunk_pixels: int, say: Callable[[str], None], sampling: str
                    ) -> tuple[RayBatch, torch.Tensor]:
    """The pool's segments sorted by pixel sample and their offsets (:func:`build_ray_pool`)."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[RayBatch] = []
    base = 0
    per_view = [int(m) for m in rays_per_sample] if rays_per_sample is not None else [1] * len(data.views)
    total = sum(v.roi[2] * v.roi[3] * samples * m for v, m in zip(data.views, per_view, strict=True))
    traced, t0, said = 0, time.perf_counter(), time.perf_counter()

    def pace() -> str:
        """Rays traced so far, their rate and the time left at that rate."""
        spent = time.perf_counter() - t0
        rate = traced / max(spent, 1e-9)
        return (f"{traced / max(total, 1):.0%} of {total:.3g} rays, {rate:.3g} rays/s, about "
                f"{(total - traced) / max(rate, 1e-9):.0f} s left")

    say(f"tracing {total:.3g} rays ({samples} a pixel) of {len(data.views)} views into the ray pool")
    for vi, view in enumerate(data.views):
        uv = view.pixel_coords()
        m = per_view[vi]
        for where, rays in trace_in_chunks(data.system, uv, camera=view.camera, samples=samples * m,
                                           generator=gen, chunk_pixels=chunk_pixels, per_sample=True,
                                           sampling=sampling):
            traced += (where.stop - where.start) * samples * m
            if time.perf_counter() - said > PROGRESS_EVERY_S and traced < total:
                said = time.perf_counter()
                say(f"tracing view {view.name}: {pace()}")
            rays = dataclasses.replace(rays, pixel=rays.pixel + (base + where.start) * samples * m)
            if m > 1:  # key pixel·S·m + s → pixel·S + s // m (the weights already hold 1/(S·m))
                pixel, sample = rays.pixel // (samples * m), rays.pixel % (samples * m)
                rays = RayBatch(rays.origins, rays.directions, rays.weights, rays.t_near, rays.t_far,
                                pixel * samples + sample // m, rays.path)
            parts.append(rays)
        base += len(uv)
        say(f"traced view {view.name}: {len(uv)} pixels ({pace()})")
    rays = RayBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in RayBatch.__dataclass_fields__))
    order = torch.argsort(rays.pixel, stable=True)
    rays = rays.select(order)
    counts = torch.bincount(rays.pixel, minlength=base * samples)
    offsets = torch.zeros(base * samples + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    return rays, offsets


def boost_factors(summed_electrons: torch.Tensor, n_frames: torch.Tensor, bright_e: float,
                  most: int) -> torch.Tensor:
    """How many times its pooled samples each pixel is given (:func:`boost_pool`): ``ceil(mean / bright_e)``.

    ``mean`` is the pixel's measured photoelectrons per usable frame (``summed_electrons /
    n_frames``, as :class:`RayPool` holds them), the factor clamped to 1 … ``most``; ``bright_e``
    ≤ 0 gives every pixel 1 (no boost).
    """
    if bright_e <= 0:
        return torch.ones(summed_electrons.shape, dtype=torch.long)
    mean = summed_electrons.double().cpu() / n_frames.double().cpu().clamp_min(1)
    return torch.ceil(mean / bright_e).clamp(1, most).long()


def boost_pool(pool: RayPool, data: FitData, factors: torch.Tensor, *, seed: int,
               rays_per_sample: Sequence[int] | None = None, sampling: str = "sobol",
               chunk_pixels: int = 65536, progress: Callable[[str], None] | None = None) -> RayPool:
    """``pool`` with m_p = ``factors[p]`` times the rays in pixel p: samples where the light is.

    A pixel's prediction from S pooled samples has a quadrature error whose variance grows as the
    square of its light, while the photon noise grows only as the light: the brightest pixels
    carry the largest pool error for their noise, the same at every step, and the fit explains it
    with structure. A pixel with m_p > 1 gets S·k·(m_p − 1) rays more (k the view's rays per
    sample), traced with their own generator (the fit's seed + :data:`BOOST_SEED_OFFSET`) and the
    pool's sampling; ray j of them is filed as pooled sample j // (k·(m_p − 1)), and every ray of
    the pixel, old and new, weighs 1/m_p of what it weighed alone. Each pooled sample then holds
    m_p times the rays and still 1/S of the pixel's prediction, so a pooled sample scaled by S (a
    random-sample step) stays unbiased; the keys stay sorted (CSR).

    The extra rays depend on the shot's light, so they are not cached: the instrument's pool
    comes from the cache and only they are traced each shot. The boosted pool keeps the
    instrument pool's ``key`` and records a digest of ``factors`` in ``boost`` (what EM's cached
    sensitivities are checked against, with the segments' weights).
    """
    factors = factors.to(torch.long).cpu()
    if factors.shape != (pool.n_pixels,):
        raise ValueError(f"boost_pool: {tuple(factors.shape)} factors for {pool.n_pixels} pixels")
    if not bool((factors > 1).any()):
        return pool
    say = progress or (lambda text: None)
    t0 = time.perf_counter()
    samples = pool.samples
    per_view = [int(m) for m in rays_per_sample] if rays_per_sample is not None else [1] * len(data.views)
    gen = torch.Generator().manual_seed(seed + BOOST_SEED_OFFSET)
    parts: list[RayBatch] = []
    first = 0
    for vi, view in enumerate(data.views):
        n = view.roi[2] * view.roi[3]
        mine = factors[first:first + n]
        uv = view.pixel_coords()
        for m in torch.unique(mine[mine > 1]).tolist():
            local = (mine == m).nonzero(as_tuple=True)[0]
            extra = samples * per_view[vi] * (m - 1)  # new rays per pixel
            chunk = max(1, chunk_pixels * samples // extra)  # rays a chunk: at most the pool's own
            for where, rays in trace_in_chunks(data.system, uv[local], camera=view.camera, samples=extra,
                                               generator=gen, chunk_pixels=chunk, per_sample=True,
                                               sampling=sampling):
                pixel = first + local[where.start + rays.pixel // extra]
                slot = (rays.pixel % extra) // (per_view[vi] * (m - 1))
                parts.append(RayBatch(rays.origins, rays.directions, rays.weights * ((m - 1) / m),
                                      rays.t_near, rays.t_far, pixel * samples + slot, rays.path))
        first += n
    new = RayBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in RayBatch.__dataclass_fields__))
    new = new.select(torch.argsort(new.pixel, stable=True))
    old = pool.rays
    share = factors[torch.div(old.pixel, samples, rounding_mode="floor")].to(old.weights.dtype)
    old = dataclasses.replace(old, weights=old.weights / share)
    # merge two sorted runs: a pixel sample's old segments first, then its new ones
    at_old = torch.arange(len(old)) + torch.searchsorted(new.pixel, old.pixel, side="left")
    at_new = torch.arange(len(new)) + torch.searchsorted(old.pixel, new.pixel, side="right")
    merged = {}
    for f in RayBatch.__dataclass_fields__:
        a, b = getattr(old, f), getattr(new, f)
        out = a.new_empty((len(a) + len(b), *a.shape[1:]))
        out[at_old], out[at_new] = a, b
        merged[f] = out
    counts = torch.bincount(new.pixel, minlength=len(pool.offsets) - 1)
    offsets = pool.offsets.clone()
    offsets[1:] += torch.cumsum(counts, 0)
    boosted = int((factors > 1).sum())
    say(f"pool: {len(new)} segments more for the {boosted} brightest pixels (up to {int(factors.max())}× "
        f"their samples, {time.perf_counter() - t0:.1f} s)")
    return dataclasses.replace(pool, rays=RayBatch(**merged), offsets=offsets, boost=array_digest(factors))


def boost_for_fit(pool: RayPool, data: FitData, cfg, rays_per_sample: Sequence[int],
                  progress: Callable[[str], None] | None = None) -> RayPool:
    """:func:`boost_pool` of ``pool`` by a fit's settings, its factors from the pool's own light.

    ``cfg`` is a :class:`~recon.fitting.config.FitConfig` (its ``pool_boost_e``, ``pool_boost_max``,
    ``seed`` and ``pool_sampling``); the fit's pool and a refined fit's re-traced one both use it.
    """
    factors = boost_factors(pool.summed_electrons, pool.n_frames, cfg.pool_boost_e, cfg.pool_boost_max)
    return boost_pool(pool, data, factors, seed=cfg.seed, rays_per_sample=rays_per_sample,
                      sampling=cfg.pool_sampling, progress=progress)


def check_views_reach_the_box(data: FitData) -> None:
    """Before tracing: raise ConfigError for a view none of a lattice of whose pixels sees the box.

    The quick form of :func:`check_views_see_the_box` (:func:`recon.model.forward.sees_the_box`
    on 32 × 32 pixels of each view), so that a mirror facing away, a missing mirror or a wrong
    roi is refused in a second, not after minutes of tracing.
    """
    for view in data.views:
        if not sees_the_box(data.system, view.roi, camera=view.camera, grid=32, samples=4):
            raise ConfigError(
                f"fit: no pixel of view '{view.name}' (roi {list(view.roi)}) sees the box through any "
                "mirror or directly; fix its roi in run.toml or the mirrors/volume of the system file"
            )


def check_views_see_the_box(data: FitData, pool: RayPool) -> None:
    """Raise ConfigError for a view none of whose pixels has a ray through the box."""
    per_pixel = torch.bincount(torch.div(pool.rays.pixel, pool.samples, rounding_mode="floor"),
                               minlength=pool.n_pixels)
    per_view = torch.bincount(pool.view_of_pixel, weights=per_pixel.double(), minlength=len(data.views))
    for vi, view in enumerate(data.views):
        if per_view[vi] == 0:
            raise ConfigError(
                f"fit: no pixel of view '{view.name}' (roi {list(view.roi)}) sees the box through any "
                "mirror or directly; fix its roi in run.toml or the mirrors/volume of the system file"
            )
