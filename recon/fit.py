"""Fitting a density field to a run through the differentiable forward model.

The optics are static during a density fit, so every pixel's rays are traced once, for a pool
of sub-pixel and aperture samples, and kept as segments sorted by pixel (CSR). Each step draws
a batch of pixels across all views, renders their expected photoelectrons with every pooled
sample, and takes an Adam step on the data term (Poisson by default) plus regularisers.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import torch

from optics.system import System
from optics.trace import sample_pixel_samples, trace_pixels
from recon.errors import ConfigError, FitError
from recon.loss import LOSSES, data_loss, tv_regulariser
from recon.render import RENDER_MODELS, RayBatch, compact_rays, render_pixels

__all__ = [
    "FitConfig",
    "FitData",
    "FitInterrupted",
    "FitState",
    "RayPool",
    "ViewData",
    "build_ray_pool",
    "cloud_moments",
    "load_fit_config",
    "run_fit",
]


@dataclass
class FitConfig:
    """Settings of a fit (every field documented; all can come from ``--config FIT.toml``).

    Attributes:
        field: ``hashgrid``, ``voxel`` or ``siren``.
        backend: hash-grid backend, ``auto``, ``torch`` or ``tcnn``.
        device: ``auto``, ``cpu`` or ``cuda``.
        steps: optimisation steps.
        batch_pixels: pixels per step, drawn across all views.
        pool_samples: sub-pixel × aperture samples traced per pixel, S.
        samples_per_step: of those, how many each step renders per pixel (drawn at random, the
            weights scaled by S / samples_per_step so the estimate stays unbiased); 0 (the
            default) renders all S: the prediction of a pixel from fewer samples is unbiased but noisy,
            and the Poisson likelihood of a noisy prediction is minimised by a *lower* one
            (−log is convex), which biased the atom number of data/run042 by −8 % with one
            sample of four (bench/fit_run042.py). A fixed pool is noisy too, for a defocused
            view most: where counts are below the read-noise variance the Poisson fit acts
            like least squares with errors in the regressor and shrinks the total (−5 % with
            all of four samples, −0.4 % with all of eight), hence ``pool_samples = 8``.
        step_mm: stratum length along rays, mm.
        lr: initial learning rate of Adam.
        lr_final: learning rate at the last step (cosine decay).
        loss: ``poisson`` (default), ``gaussian`` or ``mse``.
        tv_weight: weight of the total-variation regulariser.
        sparsity_weight: weight of the mean-density (L1) regulariser.
        model: ``emission`` (atom clouds) or ``emission-absorption`` (opaque objects).
        attenuation: κ per unit density for ``emission-absorption``, mm⁻¹.
        voxel_size_mm: voxel size of density.tif; 0 chooses the object-space pixel.
        seed: seed of every random choice (same seed, same device → same numbers).
        checkpoint_every: steps between checkpoints.
        log_every: steps between progress lines when output is not a terminal.
        field_options: extra options of the field (see :mod:`recon.fields`).
        refine: optical parameter groups refined jointly with the density (self-calibration),
            e.g. ``"mirrors"`` or ``"mirrors,pose,focus"``; empty: the optics stay fixed.
        refine_warmup: density-only steps before the refinement starts.
        refine_lr: Adam learning rate of the optical parameters (in units of their prior σ).
    """

    field: str = "hashgrid"
    backend: str = "auto"
    device: str = "auto"
    steps: int = 1500
    batch_pixels: int = 256
    pool_samples: int = 8
    samples_per_step: int = 0
    step_mm: float = 0.03
    lr: float = 1e-2
    lr_final: float = 1e-3
    loss: str = "poisson"
    tv_weight: float = 0.0
    sparsity_weight: float = 0.0
    model: str = "emission"
    attenuation: float = 1.0
    voxel_size_mm: float = 0.0
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 100
    field_options: dict = dc_field(default_factory=dict)
    refine: str = ""
    refine_warmup: int = 300
    refine_lr: float = 2e-3

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        checks = [
            (self.field in ("hashgrid", "voxel", "siren"), "field", "hashgrid, voxel or siren"),
            (self.backend in ("auto", "torch", "tcnn"), "backend", "auto, torch or tcnn"),
            (self.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda"),
            (self.steps >= 1, "steps", "≥ 1"),
            (self.batch_pixels >= 1, "batch_pixels", "≥ 1"),
            (self.pool_samples >= 1, "pool_samples", "≥ 1"),
            (0 <= self.samples_per_step <= self.pool_samples, "samples_per_step",
             "in 0 … pool_samples (0: all)"),
            (self.step_mm > 0, "step_mm", "> 0"),
            (self.lr > 0 and self.lr_final > 0, "lr", "> 0 (lr and lr_final)"),
            (self.loss in LOSSES, "loss", ", ".join(LOSSES)),
            (self.model in RENDER_MODELS, "model", ", ".join(RENDER_MODELS)),
            (self.tv_weight >= 0 and self.sparsity_weight >= 0, "tv_weight", "≥ 0"),
            (self.voxel_size_mm >= 0, "voxel_size_mm", "≥ 0 (0 = automatic)"),
            (self.checkpoint_every >= 1, "checkpoint_every", "≥ 1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"fit config: '{key}' must be {expected}, got {getattr(self, key)!r}")
        if self.refine:
            from calibration.model import parse_fit_groups

            groups = parse_fit_groups(self.refine, where="fit --refine")
            if "distortion" in groups:
                raise ConfigError("fit --refine: distortion cannot be refined during a fit; calibrate it "
                                  "with `recon calibrate --fit distortion`, or pass mirrors,pose,focus")
            if not 0 <= self.refine_warmup < self.steps or self.refine_lr <= 0:
                raise ConfigError(f"fit config: 'refine_warmup' must be in 0 … steps − 1 ({self.steps - 1}) "
                                  f"and 'refine_lr' > 0, got {self.refine_warmup} and {self.refine_lr}")


def load_fit_config(path: str | os.PathLike | None, *, base: dict | None = None, **overrides) -> FitConfig:
    """Read a fit TOML (keys = :class:`FitConfig` fields) and apply non-None ``overrides``.

    ``base`` (the settings saved with a fit being resumed) stands in for the defaults: the TOML's
    keys replace its values, and the overrides replace both.
    """
    data: dict = dict(base or {})
    if path is not None:
        data.update(_read_fit_toml(Path(path)))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        cfg = FitConfig(**data)
    except TypeError as err:
        raise ConfigError(f"fit config: {err}") from None
    cfg.validate()
    return cfg


def _read_fit_toml(path: Path) -> dict:
    """The keys of a fit TOML, checked against :class:`FitConfig`'s fields and types."""
    from optics.tomlio import read_toml

    if not path.is_file():
        raise ConfigError(f"fit config {path} does not exist; pass an existing TOML file")
    data = read_toml(path, "fit config")
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(known))}")
    _check_config_types(data, str(path))
    return data


def _check_config_types(data: dict, source: str) -> None:
    """Raise ConfigError naming the key when a value of a fit TOML has the wrong type."""
    kinds = {f.name: str(f.type) for f in fields(FitConfig)}
    for key, value in data.items():
        kind = kinds[key]
        if kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        elif kind == "str":
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, dict)
        if not ok:
            expected = {"int": "an integer", "float": "a finite number", "str": "a string"}.get(
                kind, "a table"
            )
            raise ConfigError(f"{source}: key '{key}' must be {expected}, got {value!r}; fix the fit config")


@dataclass(frozen=True)
class ViewData:
    """Measured data of one view.

    Attributes:
        name: view name.
        camera: camera index in the system.
        roi: (x0, y0, width, height), full-sensor px.
        counts: (K, h, w) photoelectrons after dark subtraction, float32.
        mask: (K, h, w) usable pixels (not saturated, not dead).
    """

    name: str
    camera: int
    roi: tuple[int, int, int, int]
    counts: torch.Tensor
    mask: torch.Tensor

    def pixel_coords(self) -> torch.Tensor:
        """(h·w, 2) full-sensor (u, v) of the view's pixels, row-major."""
        x0, y0, w, h = self.roi
        v, u = torch.meshgrid(
            torch.arange(h, dtype=torch.float32) + y0,
            torch.arange(w, dtype=torch.float32) + x0,
            indexing="ij",
        )
        return torch.stack([u, v], -1).reshape(-1, 2)


@dataclass(frozen=True)
class FitData:
    """Everything a fit needs from a run."""

    system: System
    views: tuple[ViewData, ...]
    photons_per_atom: float | None
    read_noise_e: float | None = None  # effective read noise; None: the sensor's

    @property
    def density_unit(self) -> str:
        """Unit of the fitted density."""
        return "atoms/mm^3" if self.photons_per_atom else "relative"


@dataclass(frozen=True)
class RayPool:
    """Pre-traced segments of every pixel sample, sorted by pixel and sample (CSR).

    Attributes:
        rays: segments; ``rays.pixel`` is the key ``pixel · samples + sample``.
        offsets: (n_pixels · samples + 1,) segments of key k are ``offsets[k]:offsets[k+1]``.
        summed_counts: (n_pixels,) photoelectrons summed over usable frames.
        n_frames: (n_pixels,) usable frames per pixel.
        view_of_pixel: (n_pixels,) view index of each pixel.
        read_noise_e: read noise of the (first) camera, e⁻.
    """

    rays: RayBatch
    offsets: torch.Tensor
    summed_counts: torch.Tensor
    n_frames: torch.Tensor
    view_of_pixel: torch.Tensor
    read_noise_e: float
    samples: int

    @property
    def n_pixels(self) -> int:
        """Number of pixels."""
        return self.summed_counts.shape[0]

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


def build_ray_pool(
    data: FitData,
    *,
    samples: int,
    seed: int,
    chunk_pixels: int = 65536,
    progress: Callable[[str], None] | None = None,
) -> RayPool:
    """Trace every pixel of every view once (static optics) and sort the segments by pixel."""
    gen = torch.Generator().manual_seed(seed)
    system = data.system
    parts: list[RayBatch] = []
    sums, frames, view_ids = [], [], []
    base = 0
    for vi, view in enumerate(data.views):
        uv = view.pixel_coords()
        counts = view.counts.reshape(view.counts.shape[0], -1)
        mask = view.mask.reshape(view.mask.shape[0], -1)
        sums.append((counts * mask).sum(0))
        frames.append(mask.sum(0))
        view_ids.append(torch.full((len(uv),), vi, dtype=torch.long))
        for start in range(0, len(uv), chunk_pixels):
            chunk = uv[start : start + chunk_pixels]
            sub, ap = sample_pixel_samples(len(chunk), samples, generator=gen)
            traced = trace_pixels(system, chunk, camera=view.camera, subpixel=sub, aperture=ap)
            index = torch.arange(start, start + len(chunk)) + base
            parts.append(compact_rays(traced, index, per_sample=True))
        base += len(uv)
        if progress:
            progress(f"traced view {view.name}: {len(uv)} pixels")
    rays = RayBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in RayBatch.__dataclass_fields__))
    order = torch.argsort(rays.pixel, stable=True)
    rays = rays.select(order)
    counts = torch.bincount(rays.pixel, minlength=base * samples)
    offsets = torch.zeros(base * samples + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    return RayPool(
        rays,
        offsets,
        torch.cat(sums),
        torch.cat(frames),
        torch.cat(view_ids),
        float(data.read_noise_e if data.read_noise_e is not None else system.cameras[0].sensor.read_noise_e),
        samples,
    )


def _check_views_see_the_box(data: FitData, pool: RayPool) -> None:
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


def cloud_moments(density: np.ndarray, origin_mm, voxel_size_mm) -> dict:
    """Total (sum × voxel volume), centroid and widths (standard deviations) of a (Z, Y, X) density."""
    rho = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    total = rho.sum()
    if total <= 0:
        return {"total": 0.0, "centroid_mm": [math.nan] * 3, "width_mm": [math.nan] * 3}
    axes = []
    for axis_len, o, s in zip(rho.shape[::-1], origin_mm, voxel_size_mm, strict=True):
        axes.append(o + s * np.arange(axis_len))
    marg = [rho.sum(axis=(0, 1)), rho.sum(axis=(0, 2)), rho.sum(axis=(1, 2))]  # x, y, z
    centroid = [float((a * m).sum() / total) for a, m in zip(axes, marg, strict=True)]
    width = [
        float(np.sqrt((((a - c) ** 2) * m).sum() / total))
        for a, m, c in zip(axes, marg, centroid, strict=True)
    ]
    return {"total": float(total * np.prod(voxel_size_mm)), "centroid_mm": centroid, "width_mm": width}


@dataclass
class FitState:
    """What a checkpoint holds besides the modules."""

    step: int = 0
    losses: list = dc_field(default_factory=list)
    elapsed_s: float = 0.0
    rays_rendered: int = 0
    batch_pixels: int = 0  # pixels per step now (0: the config's; smaller after running out of memory)


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by SIGINT or SIGTERM after writing its checkpoint (the message says where).

    Attributes:
        exit_status: 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells report.
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit ``cuda`` without CUDA is an error."""
    from recon.errors import BackendUnavailableError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "fit: --device cuda asked for, but torch sees no CUDA device; pass --device cpu (or auto)"
        )
    return torch.device(name)


def estimate_atoms(data: FitData, pool: RayPool) -> float:
    """Rough number of atoms (or relative total) from the total signal and the collected fraction.

    Uses the pooled weights: a uniform unit density in the box would produce ``Σ w · length``
    photoelectrons per unit emission, so the total signal over that gives the mean density.
    """
    y = data.photons_per_atom or 4 * math.pi
    w_len = (pool.rays.weights * (pool.rays.t_far - pool.rays.t_near)).sum().item()
    signal = (pool.summed_counts / pool.n_frames.clamp_min(1)).sum().item()
    mean_density = max(signal, 1.0) / max(w_len * y / (4 * math.pi), 1e-30)
    return mean_density


def run_fit(
    data: FitData,
    cfg: FitConfig,
    out_dir: Path,
    *,
    make_field: Callable,
    resume: bool = False,
    progress=None,
) -> dict:
    """Fit, checkpoint, and return the final state; writing outputs is :mod:`recon.outputs`' job.

    Args:
        data: the measured views and the system.
        cfg: fit settings.
        out_dir: output directory (checkpoint.pt lives there).
        make_field: ``make_field(cfg, box_min, box_max, mean_density, device) -> nn.Module``.
        resume: continue from ``out_dir/checkpoint.pt``.
        progress: object with ``start(total)``, ``update(step, loss, rays_per_s)``,
            ``log(text)`` and ``stop()`` methods.

    Returns:
        Dict with the field, the pool, the state and the device.

    Raises:
        FitError: no usable pixel or no signal; the loss became NaN/inf (the checkpoint on disk,
            the last good state, is kept); out of memory even at one pixel per step.
        ConfigError: a view none of whose pixels sees the box.
        FitInterrupted: SIGINT or SIGTERM, after the checkpoint was written.

    A step that runs out of memory is retried with half the pixels (:mod:`recon.memory`).
    """
    from recon.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint
    from recon.memory import free_cached_memory, smaller_batch

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    log = progress.log if progress else (lambda text: None)
    t0 = time.perf_counter()
    pool = build_ray_pool(data, samples=cfg.pool_samples, seed=cfg.seed, progress=log)
    usable = (pool.n_frames > 0).nonzero(as_tuple=True)[0]
    if len(usable) == 0:
        raise FitError(
            "fit: no usable pixels (all masked or saturated); check the frames with `recon inspect`"
        )
    if pool.summed_counts[usable].abs().sum() == 0:
        raise FitError("fit: every usable pixel is zero; the frames hold no signal (check dark/offset)")
    _check_views_see_the_box(data, pool)
    log(f"pool: {len(pool.rays)} segments for {pool.n_pixels} pixels ({time.perf_counter() - t0:.1f} s)")
    mean_density = estimate_atoms(data, pool)
    box = data.system.volume
    field_module = make_field(cfg, box.min_mm.tolist(), box.max_mm.tolist(), mean_density, device)
    pool_dev = RayPool(
        pool.rays.to(device),
        pool.offsets.to(device),
        pool.summed_counts.to(device),
        pool.n_frames.to(device),
        pool.view_of_pixel.to(device),
        pool.read_noise_e,
        pool.samples,
    )
    usable = usable.to(device)
    optim = torch.optim.Adam(field_module.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
    refine = _start_refinement(data, cfg, len(usable), device) if cfg.refine else None
    if refine is not None and resume:
        raise FitError("fit: --resume cannot continue a --refine fit (the optical parameters are not in "
                       "the checkpoint); start the fit again without --resume")
    state = FitState()
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    ckpt_path = out_dir / "checkpoint.pt"
    data_key = data_fingerprint(data)
    saved_step = None
    if resume:
        state = load_checkpoint(ckpt_path, field_module, optim, gen, cfg, data=data)
        saved_step = state.step
        log(f"resumed from step {state.step}")
    if not state.batch_pixels:
        state.batch_pixels = cfg.batch_pixels

    def checkpoint() -> None:
        nonlocal saved_step
        save_checkpoint(ckpt_path, field_module, optim, gen, cfg, state, data_key=data_key)
        saved_step = state.step

    y = data.photons_per_atom or 4 * math.pi

    def lr_at(step: int) -> float:
        frac = min(step / max(cfg.steps - 1, 1), 1.0)
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))

    def forward_backward(batch_pixels: int, refining: bool) -> tuple[float, int]:
        """One step's loss and gradients on a fresh batch; returns (loss, segments rendered).

        ``refining``: trace the batch through the learnable optics (self-calibration) instead of
        gathering it from the static pool, and add the optics' prior.
        """
        pick = torch.randint(len(usable), (min(batch_pixels, len(usable)),), generator=gen)
        pixels = usable[pick.to(device)]
        if refining:
            pixels, batch = refine.batch(pixels, cfg.samples_per_step or cfg.pool_samples, gen)
        elif 0 < cfg.samples_per_step < cfg.pool_samples:
            pixels = pixels.repeat(cfg.samples_per_step)
            sample = torch.randint(cfg.pool_samples, (len(pixels),), generator=gen).to(device)
            batch = pool_dev.gather(pixels, sample)
        else:
            batch = pool_dev.gather(pixels)
        pred = render_pixels(
            field_module,
            batch,
            len(pixels),
            photons_per_atom=y,
            step_mm=cfg.step_mm,
            model=cfg.model,
            attenuation=cfg.attenuation,
            generator=gen,
        )
        loss = data_loss(
            pred,
            pool_dev.summed_counts[pixels],
            pool_dev.n_frames[pixels],
            pool_dev.read_noise_e,
            kind=cfg.loss,
        )
        if cfg.tv_weight > 0 or cfg.sparsity_weight > 0:
            pts = box.min_mm.to(device) + torch.rand(4096, 3, generator=gen).to(device) * box.size_mm.to(
                device
            )
            if cfg.tv_weight > 0:
                loss = loss + cfg.tv_weight * tv_regulariser(field_module, pts, cfg.step_mm, mean_density)
            if cfg.sparsity_weight > 0:
                loss = loss + cfg.sparsity_weight * field_module(pts).mean() / mean_density
        if refining:
            loss = loss + refine.module.prior_term()
        if not torch.isfinite(loss):
            # Nothing is written: the checkpoint on disk is the last good state.
            if saved_step is not None:
                kept = f"the last good checkpoint (step {saved_step}) is {ckpt_path}"
                then = "rerun with --resume"
            else:
                kept = f"no checkpoint was written yet (checkpoint_every = {cfg.checkpoint_every})"
                then = "fit again"
            raise FitError(
                f"fit: the loss became {loss.item()} at step {state.step + 1}; {kept}. Lower lr "
                f"(now {cfg.lr}, in --config) and {then}, or check the data"
            )
        optim.zero_grad(set_to_none=True)
        if refining:
            refine.optim.zero_grad(set_to_none=True)
        loss.backward()
        return float(loss.detach()), len(batch)

    interrupted = {"flag": False, "signum": signal.SIGINT}

    def on_signal(signum, frame):
        interrupted["flag"], interrupted["signum"] = True, signum

    old_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not in the main thread
            pass
    if progress:
        progress.start(cfg.steps, state.step)
    t_start = time.perf_counter() - state.elapsed_s
    try:
        while state.step < cfg.steps:
            if interrupted["flag"]:
                checkpoint()
                raise FitInterrupted(
                    f"fit stopped at step {state.step}/{cfg.steps}; checkpoint saved to {ckpt_path}; "
                    "run the same command with --resume to continue",
                    interrupted["signum"],
                )
            for group in optim.param_groups:
                group["lr"] = lr_at(state.step)
            refining = refine is not None and state.step >= cfg.refine_warmup
            try:
                loss, n_rays = forward_backward(state.batch_pixels, refining)
            except RuntimeError as err:  # out of memory: halve the batch and go on (else re-raised)
                state.batch_pixels = smaller_batch(err, state.batch_pixels, device=device, warn=log)
                loss = None
            if loss is None:  # outside the except block, so the failed step's tensors are freed
                optim.zero_grad(set_to_none=True)
                free_cached_memory(device)
                continue
            optim.step()
            if refining:
                refine.optim.step()
            state.step += 1
            state.rays_rendered += n_rays
            state.losses.append(loss)
            state.elapsed_s = time.perf_counter() - t_start
            if progress:
                progress.update(
                    state.step, state.losses[-1], state.rays_rendered / max(state.elapsed_s, 1e-9)
                )
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                checkpoint()
    finally:
        if progress:
            progress.stop()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    refined = None
    if refine is not None:
        refined, pool = refine.finish(data, cfg, out_dir, log)
    return {
        "field": field_module,
        "pool": pool,
        "refined_system": refined,
        "state": state,
        "device": device,
        "mean_density": mean_density,
        "photons_per_atom": y,
    }


@dataclass
class _Refinement:
    """Self-calibration inside :func:`run_fit`: the learnable optics, their optimiser, pixel table."""

    module: torch.nn.Module
    optim: torch.optim.Optimizer
    pixel_uv: torch.Tensor
    pixel_camera: torch.Tensor

    def batch(self, pixels: torch.Tensor, samples: int, gen) -> tuple[torch.Tensor, RayBatch]:
        """Trace ``pixels`` through the current optics; returns the pixels in traced order and rays."""
        traced, order = self.module.trace(self.pixel_uv[pixels], self.pixel_camera[pixels], samples,
                                          generator=gen)
        return pixels[order], compact_rays(traced)

    def finish(self, data: FitData, cfg: FitConfig, out_dir: Path, log) -> tuple[System, RayPool]:
        """Write the refined system next to the fit and re-trace the pool through it for the outputs."""
        from dataclasses import replace

        from optics.atomic import atomic_write_text
        from optics.system import save_system

        with torch.no_grad():
            refined = self.module.optics()
        changes = self.module.optics.changes()
        save_system(refined, out_dir / "refined_system.toml", header=(
            f"Self-calibrated by `recon fit --refine {cfg.refine}`: refined jointly with the density after "
            f"{cfg.refine_warmup} density-only steps of {cfg.steps}, prior toward the run's system"))
        atomic_write_text(out_dir / "refinement.json", json.dumps(
            {"refine": cfg.refine, "warmup_steps": cfg.refine_warmup, "lr": cfg.refine_lr,
             "prior": dict(self.module.optics.prior.__dict__), "changes": changes}, indent=2) + "\n")
        if "mirrors" in changes:
            tilts = [m["tilt_deg"] for m in changes["mirrors"]]
            log(f"refined mirrors: tilt changes up to {max(tilts):.4f}°; written to refined_system.toml")
        pool = build_ray_pool(replace(data, system=refined.to(data.system.dtype)), samples=cfg.pool_samples,
                              seed=cfg.seed, progress=log)
        return refined, pool


def _start_refinement(data: FitData, cfg: FitConfig, n_usable: int, device) -> _Refinement:
    """Set up self-calibration: parametrised optics (float64), Adam, the (u, v) and camera of each pixel."""
    from calibration.model import PriorConfig, parse_fit_groups
    from calibration.selfcal import SelfCalibration

    module = SelfCalibration(data.system, parse_fit_groups(cfg.refine, where="fit --refine"),
                             prior=PriorConfig(), n_pixels=n_usable)
    params = [p for p in module.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=cfg.refine_lr)
    uv = torch.cat([v.pixel_coords() for v in data.views]).to(device)
    cams = torch.cat([torch.full((v.roi[2] * v.roi[3],), v.camera, dtype=torch.long) for v in data.views])
    return _Refinement(module, optim, uv, cams.to(device))


def config_dict(cfg: FitConfig) -> dict:
    """JSON-ready dict of a config."""
    return json.loads(json.dumps(asdict(cfg)))
