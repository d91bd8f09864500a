"""What a fit will hold in memory at its peak, said before anything is traced; a fit that cannot fit refused.

A fit's memory goes through three phases after the libraries (torch, numba, matplotlib) and
the run's frames are loaded, and its peak is the largest of them:

- **tracing** the ray pool: the segments traced so far, their concatenation and the copy sorted
  by pixel (:data:`TRACE_POOL_FACTOR` times the pool), and the rays of the chunk being traced
  (:data:`TRACE_RAY_BYTES` each; the direct view of the dome traces 4 rays per sample);
- **fitting**: the pool with the projector's arrays and what the allocator keeps of the tracing
  (:data:`POOL_FACTOR` times it) and the solver's state: EM's start or its per-subset
  sensitivities (:func:`em_voxel_bytes` per voxel of the field), or a neural
  field's parameters with Adam's moments and the activations of a run of samples
  (:func:`neural_bytes`);
- **writing the outputs**: the pool and the output grid with its FFTs for the FSC, moments and
  projections (:data:`OUTPUT_VOXEL_BYTES` per voxel).

The pool's segments are not known before tracing: :func:`probe_segments` traces a lattice of
a few hundred pixels of every view and scales its segments to the view's pixels.

The coefficients were set from fits measured here (process max RSS, one torch thread) on
data/run042 (128³, 160³ and 192³ EM grids, a 137³ output, the hash grid's and SIREN's defaults)
and data/mot4 (a 256³ output); ``bench/memory_estimate.py`` compares the estimate with the
measured peak, also on cases not used to set them. A neural field's term (:func:`neural_bytes`)
rests on one fit per kind.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from recon.errors import ConfigError
from recon.fitting.config import FitConfig, field_config, voxel_field_shape
from recon.fitting.data import FitData, density_grid
from recon.fitting.raypool import boost_factors, rays_per_sample
from recon.fitting.solvers import RUN_POINTS
from recon.model.fields.config import voxel_shape
from recon.model.fields.tensorf import TENSORF_MODES
from recon.model.forward import trace_in_chunks
from recon.model.hashgrid import hashgrid_levels

__all__ = ["LIBRARIES_BYTES", "MemoryPlan", "available_memory", "check_memory", "em_voxel_bytes",
           "estimate_memory", "grid_solver_voxel_bytes", "neural_bytes", "probe_segments"]

GB = 2**30  # as the report prints a peak in MB (2²⁰ bytes) / 1024
#: The interpreter with torch, numba, matplotlib and scipy imported (321 MB measured).
LIBRARIES_BYTES = 330 * 2**20
#: A pooled segment: origins and directions (3 + 3 float32), weight, entry, exit (float32),
#: pixel key and path (int64).
SEGMENT_BYTES = 52
#: The pool's bytes held while tracing: the traced parts, their concatenation, the sorted copy.
TRACE_POOL_FACTOR = 2.7
#: Bytes per ray of the chunk being traced (the optics' intermediate tensors).
TRACE_RAY_BYTES = 166
#: The pool's bytes held while fitting (the projector's strata and lengths, the allocator's leftovers).
POOL_FACTOR = 1.6
#: Bytes per voxel of the output grid while the outputs are written (the density, the FSC's FFTs).
OUTPUT_VOXEL_BYTES = 120


#: Bytes per voxel of EM's start (the Gaussian evaluated at the voxel centres in float64: the
#: points, their offsets, the quadratic form and its exponential).
EM_START_VOXEL_BYTES = 205


def em_voxel_bytes(subsets: int, threads: int = 1) -> int:
    """Bytes per voxel of EM's field at its largest.

    The start (:data:`EM_START_VOXEL_BYTES`), or later a float32 sensitivity per subset, a
    back-projection grid per thread and about 40 bytes of grids (the field, the update, the kept
    field), whichever is more.
    """
    return max(EM_START_VOXEL_BYTES, 4 * subsets + 4 * threads + 40)


def grid_solver_voxel_bytes(threads: int = 1) -> int:
    """Bytes per voxel of the grid solver's output grid (float32).

    Its centres (x, y, z), the field's values, their slope, the projection's padded copy, and an
    adjoint grid per thread.
    """
    return 12 + 4 * (3 + threads)


def neural_bytes(cfg: FitConfig, samples_per_step: float, run_samples: int = 1 << 19) -> float:
    """Bytes of a neural field's fit: its parameters, and the larger of a step's and a prediction's samples.

    The parameters with their gradient and Adam's two moments, 16 bytes each; a step's samples
    (``samples_per_step``) with what autograd keeps of them, or a prediction's run of
    ``run_samples`` (:meth:`recon.fitting.raypool.RayPool.chunks`), whichever holds more. Per
    sample: a hash grid's corner indices, weights and features, about 12 bytes per level and
    corner (its backward recomputes them: a step keeps no more than a prediction), plus 4 per
    unit of MLP width and hidden layer; a coordinate MLP's activations (SIREN's, measured; the Fourier-feature
    and Gaussian MLPs' taken the same), 23 bytes per unit of width and layer in a step and two
    layers' in a prediction. Set from data/run042's fits (``bench/memory_estimate.py``).
    """
    fc = field_config(cfg)
    if cfg.field == "hashgrid":
        levels = hashgrid_levels(fc.encoding)
        params = sum(level.table_size for level in levels) * fc.encoding.n_features_per_level
        per_sample = 12 * 8 * len(levels) + 4 * fc.hidden_width * fc.hidden_layers
        samples = per_sample * max(samples_per_step, run_samples)
    elif cfg.field == "tensorf":  # three modes of R vectors and matrices
        n = voxel_shape(fc.tensorf_resolution)[::-1]  # (nx, ny, nz)
        params = fc.tensorf_rank * sum(n[a] * n[b] + n[c] for (a, b), c in TENSORF_MODES)
        # per sample and mode about 6 R float32 values (the matrix's, the vector's and their product's
        # R each, and what autograd and the stacking copy of them): a rough estimate, not measured
        # (bench/memory_estimate.py has no TensoRF case)
        samples = 4 * 6 * fc.tensorf_rank * 3 * max(samples_per_step, run_samples)
    elif cfg.field == "mulfagrid":  # the grid, and per sample 8 vertices' kernel networks
        params = fc.mulfagrid_channels * math.prod(voxel_shape(fc.mulfagrid_resolution))
        # per sample and vertex the Fourier features and, per layer, the linear map, the filter and
        # their product (H each) with what autograd keeps of them, float32: an estimate, not measured
        per_vertex = 6 * fc.mulfagrid_frequencies * 2 + 4 * fc.mulfagrid_width * fc.mulfagrid_layers + 8
        samples = 4 * 8 * per_vertex * max(samples_per_step, run_samples)
    else:  # a coordinate MLP: SIREN's, or a Fourier-feature, Gaussian or split-activation one
        width, layers = ((fc.siren_width, fc.siren_hidden_layers) if cfg.field == "siren"
                         else (fc.mlp_width, fc.mlp_hidden_layers))
        branches = 4 if cfg.field == "splitnet" else 1  # SplitNet's layers are four times as wide
        params = branches * width**2 * layers
        samples = max(23 * branches * width * (layers + 1) * samples_per_step,
                      2 * 4 * branches * width * run_samples)
    return 16 * params + samples


def probe_segments(data: FitData, samples: int, rays_per_sample, pixels_per_view: int = 256,
                   seed: int = 0, boost_e: float = 0.0, boost_max: int = 1) -> int:
    """About how many segments the pool of ``data`` will hold: a lattice of each view's pixels traced.

    Every k-th pixel of the view's region of interest (row-major, at most ``pixels_per_view``),
    with its ``samples × rays_per_sample[v]`` rays, its segments scaled by the view's pixels and,
    with ``boost_e`` > 0, by the mean of its pixels' :func:`~recon.fitting.raypool.boost_factors`.
    """
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for view, m in zip(data.views, rays_per_sample, strict=True):
        uv = view.pixel_coords()
        some = uv[:: max(1, len(uv) // pixels_per_view)]
        found = sum(len(rays.pixel) for _, rays in trace_in_chunks(
            data.system, some, camera=view.camera, samples=samples * int(m), generator=gen,
            chunk_pixels=len(some), per_sample=True))
        mask = view.mask.reshape(view.mask.shape[0], -1)
        summed = (view.electrons.reshape(mask.shape) * mask).sum(0)
        boost = boost_factors(summed, mask.sum(0), boost_e, boost_max).double().mean()
        total += found * len(uv) / len(some) * float(boost)
    return int(round(total))


@dataclass(frozen=True)
class MemoryPlan:
    """A fit's memory at its peak, by phase (bytes), and what it rests on."""

    libraries: float
    frames: float
    segments: int
    tracing: float  # the tracing beyond libraries and frames
    fitting: float  # the fit beyond them
    outputs: float  # the outputs beyond them

    @property
    def peak(self) -> float:
        """The largest phase, with the libraries and the frames."""
        return self.libraries + self.frames + max(self.tracing, self.fitting, self.outputs)

    @property
    def phase(self) -> str:
        """The phase of the peak."""
        return max((self.tracing, "tracing"), (self.fitting, "the fit"), (self.outputs, "the outputs"))[1]

    def line(self) -> str:
        """``memory ≈ 1.4 GB at its peak (tracing): tracing 1.4 GB for ≈ 4.1 M segments, the fit 1.3, …``."""
        base = self.libraries + self.frames
        return (f"memory ≈ {self.peak / GB:.2g} GB at its peak ({self.phase}): tracing "
                f"{(base + self.tracing) / GB:.2g} GB for ≈ {self.segments / 1e6:.3g} M segments, the fit "
                f"{(base + self.fitting) / GB:.2g}, the outputs {(base + self.outputs) / GB:.2g}")


def estimate_memory(data: FitData, cfg: FitConfig, *, threads: int = 1, chunk_pixels: int = 65536,
                    segments: int | None = None) -> MemoryPlan:
    """The :class:`MemoryPlan` of fitting ``data`` with ``cfg`` (resolved: ``step_mm`` > 0).

    ``segments``: the pool's, if known; else :func:`probe_segments` estimates them.
    """
    per_view = rays_per_sample(data, cfg.defocused_rays)
    if segments is None:
        segments = probe_segments(data, cfg.pool_samples, per_view, seed=cfg.seed, boost_e=cfg.pool_boost_e,
                                  boost_max=cfg.pool_boost_max)
    frames = sum(v.electrons.numel() * (v.electrons.element_size() + 1) for v in data.views)
    pixels = sum(v.roi[2] * v.roi[3] for v in data.views)
    pool = segments * SEGMENT_BYTES + 8 * (pixels * cfg.pool_samples + 1)  # and the offsets
    chunk_rays = max(min(chunk_pixels, v.roi[2] * v.roi[3]) * cfg.pool_samples * int(m)
                     for v, m in zip(data.views, per_view, strict=True))
    output_voxels = math.prod(density_grid(data, cfg.voxel_size_mm)[0])
    if cfg.solver_kind == "grid":  # a run of the field's points; the voxel centres, the grids of a step
        solver = neural_bytes(cfg, RUN_POINTS) + output_voxels * grid_solver_voxel_bytes(threads)
        if cfg.grid_start == "em":  # EM's fit comes first, with recon fit's default voxel field
            em = FitConfig()
            voxels = math.prod(voxel_field_shape(em, data))
            solver = max(solver, voxels * em_voxel_bytes(em.subsets, threads))
    elif cfg.field == "voxel":  # EM's state, or the grid with its gradient and Adam's moments
        voxels = math.prod(voxel_field_shape(cfg, data))
        solver = voxels * (em_voxel_bytes(cfg.subsets, threads) if cfg.em else 16)
    else:  # a step's pixels, their segments, and a segment's strata across the box
        strata = float(data.system.volume.size_mm.mean()) / cfg.step_mm
        solver = neural_bytes(cfg, cfg.batch_pixels * segments / max(pixels, 1) * strata)
    return MemoryPlan(LIBRARIES_BYTES, frames, segments,
                      tracing=TRACE_POOL_FACTOR * pool + TRACE_RAY_BYTES * chunk_rays,
                      fitting=POOL_FACTOR * pool + solver,
                      outputs=POOL_FACTOR * pool + OUTPUT_VOXEL_BYTES * output_voxels)


def available_memory() -> tuple[float, str]:
    """(bytes, what) this process may use: the machine's memory, or its container's limit if lower."""
    try:
        total, what = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine has"
    except (ValueError, OSError, AttributeError):
        return math.inf, "unknown"
    for limit in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < total:
            total, what = int(text), "this container may use"
        break
    return float(total), what


def check_memory(plan: MemoryPlan, cfg: FitConfig) -> None:
    """Refuse a fit whose estimated peak exceeds ``cfg.memory_gb`` (0: :func:`available_memory`).

    Raises:
        ConfigError: one line with the estimate, the budget and the settings that lower it.
    """
    if cfg.memory_gb > 0:
        budget, what = cfg.memory_gb * GB, "memory_gb allows"
    else:
        budget, what = available_memory()
    if plan.peak <= budget:
        return
    raise ConfigError(f"fit: needs ≈ {plan.peak / GB:.3g} GB at its peak ({plan.phase}; "
                      f"≈ {plan.segments / 1e6:.3g} M ray segments), more than the {budget / GB:.3g} GB "
                      f"{what}; lower pool_samples or defocused_rays, crop the views' regions, or choose "
                      "coarser voxels (voxel_size_mm, field_options.voxel_resolution) in --config; "
                      "memory_gb sets the budget")
