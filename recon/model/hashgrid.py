"""Multiresolution hash encoding: tiny-cuda-nn's ``HashGrid`` and its pure-PyTorch twin.

Two implementations share one configuration, one grid geometry and one parameter layout, so a
``state_dict`` moves between them unchanged (both hold the flat parameter vector as
``params``):

- :class:`TorchHashGrid`, pure PyTorch (CPU or CUDA). It is the specification: it follows
  tiny-cuda-nn's grid geometry, hash and parameter layout exactly (REFERENCE.md §4; tcnn
  ``include/tiny-cuda-nn/encodings/grid.h``).
- :class:`TcnnHashGrid`, a thin wrapper of ``tinycudann.Encoding`` (CUDA only, optional,
  imported lazily inside its constructor).

:func:`make_encoding` picks one (``backend="auto"|"torch"|"tcnn"``); an explicit request that
cannot be met raises :class:`~recon.errors.BackendUnavailableError` naming the reason and the
remedy, never a silent downgrade. :func:`tcnn_status` and :func:`available_backends` report,
without raising, what this machine can use (for ``recon doctor``).

Geometry of level ``l`` (``s`` = per_level_scale, ``N0`` = base_resolution, ``d`` input dims),
as tcnn computes it, in float32:

- ``scale_l = exp2(l * log2(s)) * N0 - 1``; ``res_l = ceil(scale_l) + 1`` vertices per axis;
- ``T_l = min(round_up_to_8(res_l ** d), 2 ** log2_hashmap_size)`` table entries;
- parameters: one flat vector ``[sum_l T_l * F]``; entry ``e`` of level ``l``, feature ``j`` is
  ``params[(offset_l + e) * F + j]`` with ``offset_l = sum_{m<l} T_m`` (feature fastest);
- ``p = x * scale_l + 0.5``, ``g = floor(p)``, ``w = p - g``, corners ``g + delta``;
- entry ``(sum_k c_k * res_l ** k) mod T_l`` (x fastest) when ``res_l ** d <= T_l``, else
  ``((c_0 * 1) ^ (c_1 * 2654435761) ^ (c_2 * 805459861)) mod T_l`` in 32-bit unsigned arithmetic;
- output level-major: ``out[:, l * F + j] = sum_corners prod_k (w_k | 1 - w_k) * theta``.

The dense index is taken modulo ``T_l`` *without clamping*: when ``scale_l`` is an integer
(``per_level_scale = 2``) or has a fractional part of at least 0.5, inputs near 1 read one
vertex past the last, which aliases into the next row exactly as in tcnn.

``p`` is rounded once, as tcnn's ``fmaf(scale, x, 0.5f)`` does (the torch twin computes it in
float64, where the product of two float32 values is exact, and rounds it to float32); the
level scales are those of tcnn's host code, computed the same on every CPU
(:func:`hashgrid_levels`). Known differences from tcnn: tcnn's default parameter precision is
fp16 (the tcnn wrapper keeps fp32 master parameters); both wrappers clamp inputs to ``[0, 1]`` (raw tcnn
wraps outside values around in unsigned arithmetic) — :mod:`recon.model.fields` never sends them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from optics.limits import check_types
from recon.errors import ConfigError

__all__ = [
    "HashGridConfig",
    "HashGridLevel",
    "PRIMES",
    "PRIMES_I32",
    "hashgrid_levels",
    "init_hashgrid_params",
]


# tcnn's hash primes for dims 0..2 (grid.h); as signed int32 so that torch's int32 products
# wrap modulo 2**32 exactly like tcnn's uint32 arithmetic.
PRIMES = (1, 2654435761, 805459861)


PRIMES_I32 = tuple(p - (1 << 32) if p >= (1 << 31) else p for p in PRIMES)


_INIT_RANGE = 1e-4  # tcnn: generate_random_uniform(-1e-4, 1e-4)


@dataclass(frozen=True)
class HashGridConfig:
    """Hyper-parameters of a hash grid, with tiny-cuda-nn's key names.

    tiny-cuda-nn's own defaults are ``n_levels=16, n_features_per_level=2,
    log2_hashmap_size=19, base_resolution=16, per_level_scale=2.0``
    (:meth:`tcnn_defaults`); with ``per_level_scale=2`` the finest of 16 levels has 524 288
    vertices per axis, far beyond anything a 2.4 mm box needs. The project's defaults are
    chosen for a ~1 mm atom cloud in a 2.4 mm box, where the object-space pixel is 17.5 µm and
    the details of interest are ~0.1 mm (REFERENCE.md §1):

    - ``base_resolution=16``: coarsest cell 150 µm, the cloud spans ~7 cells;
    - ``n_levels=8`` with ``per_level_scale=1.38``: resolutions 16 … 153 vertices per axis,
      finest cell 2.4 mm / 152 ≈ 16 µm, about one object-space pixel. Eight levels rather than
      16 halve the cost on CPU (cost grows linearly with the level count); the level scales
      stay ≥ 0.02 away from integers so float32 rounding cannot change a resolution;
    - ``log2_hashmap_size=18``: levels up to 64³ vertices are stored densely (no collisions);
      the three finest levels hash into 262 144 entries each, more than the ~1.3e5 cells of the
      finest level that a 1 mm cloud occupies. 2.3 M parameters in all (9 MB in float32), which
      keeps the optimiser step cheap on CPU;
    - ``n_features_per_level=2`` (tcnn: 1, 2, 4 or 8).

    Attributes:
        n_levels: number of resolution levels.
        n_features_per_level: features per level, 1, 2, 4 or 8.
        log2_hashmap_size: log2 of the largest table size per level (entries).
        base_resolution: ``N0``, vertices per axis of the coarsest level.
        per_level_scale: ``s``, growth factor of the resolution per level.
    """

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 18
    base_resolution: int = 16
    per_level_scale: float = 1.38

    def __post_init__(self) -> None:
        where = "HashGridConfig"
        if self.n_features_per_level not in (1, 2, 4, 8):
            raise ConfigError(
                f"{where}: n_features_per_level must be 1, 2, 4 or 8 (tiny-cuda-nn), "
                f"got {self.n_features_per_level}"
            )
        if not 1 <= self.n_levels <= 32:
            raise ConfigError(f"{where}: n_levels must be in 1..32, got {self.n_levels}")
        if not 1 <= self.log2_hashmap_size <= 30:
            raise ConfigError(
                f"{where}: log2_hashmap_size must be in 1..30, got {self.log2_hashmap_size}"
            )
        if self.base_resolution < 2:
            raise ConfigError(f"{where}: base_resolution must be ≥ 2, got {self.base_resolution}")
        if not (math.isfinite(self.per_level_scale) and self.per_level_scale >= 1.0):
            raise ConfigError(
                f"{where}: per_level_scale must be ≥ 1, got {self.per_level_scale}"
            )

    @classmethod
    def tcnn_defaults(cls) -> HashGridConfig:
        """tiny-cuda-nn's own defaults (16 levels, F = 2, T = 2^19, N0 = 16, s = 2)."""
        return cls(n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
                   base_resolution=16, per_level_scale=2.0)

    @property
    def n_output_dims(self) -> int:
        """Width of the encoding, ``n_levels * n_features_per_level``."""
        return self.n_levels * self.n_features_per_level

    def to_tcnn(self) -> dict:
        """The ``encoding_config`` dict for ``tinycudann.Encoding``."""
        return {
            "otype": "HashGrid",
            "n_levels": int(self.n_levels),
            "n_features_per_level": int(self.n_features_per_level),
            "log2_hashmap_size": int(self.log2_hashmap_size),
            "base_resolution": int(self.base_resolution),
            "per_level_scale": float(self.per_level_scale),
            "interpolation": "Linear",
        }

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HashGridConfig:
        """Build from a dict; unknown keys are a :class:`~recon.errors.ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"HashGridConfig: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        check_types(cls, data, "HashGridConfig")
        return cls(**data)


@dataclass(frozen=True)
class HashGridLevel:
    """Geometry of one level of a hash grid (tcnn's arithmetic).

    Attributes:
        level: level number ``l``.
        scale: ``scale_l`` as tcnn computes it in float32 (held as a Python float).
        resolution: ``res_l = ceil(scale_l) + 1`` vertices per axis.
        table_size: entries in this level's table, ``T_l``.
        offset: first entry of this level in the flat table (entries, not parameters).
        dense: whether the level is indexed densely (``res_l ** d <= T_l``) or hashed.
    """

    level: int
    scale: float
    resolution: int
    table_size: int
    offset: int
    dense: bool


def _f32(value: float) -> float:
    """``value`` rounded to the nearest float32 (ties to even), as a Python float."""
    return float(np.float32(value))


def hashgrid_levels(cfg: HashGridConfig, n_input_dims: int = 3) -> tuple[HashGridLevel, ...]:
    """Per-level geometry of ``cfg`` exactly as tiny-cuda-nn lays it out.

    Args:
        cfg: the grid configuration.
        n_input_dims: ``d``, 2 or 3.

    Returns:
        One :class:`HashGridLevel` per level; parameters total
        ``(levels[-1].offset + levels[-1].table_size) * cfg.n_features_per_level``.
    """
    if n_input_dims not in (2, 3):
        raise ConfigError(f"hashgrid_levels: n_input_dims must be 2 or 3, got {n_input_dims}")
    # tcnn's host code: std::log2(float), exp2f, float products, each result rounded to float32.
    # Each step is computed in float64 by Python's math (one libm, the same on every CPU: numpy's
    # float32 log2/exp2 use SIMD code whose last bit depends on the CPU) and rounded once to
    # float32; products of float32 values are exact in float64, so those are correctly rounded.
    log2_scale = _f32(math.log2(_f32(cfg.per_level_scale)))
    max_size = 1 << cfg.log2_hashmap_size
    levels = []
    offset = 0
    for level in range(cfg.n_levels):
        # exp2f(level * log2_per_level_scale) * base_resolution - 1.0f, all float32
        scale = _f32(_f32(_f32(2.0 ** _f32(level * log2_scale)) * cfg.base_resolution) - 1.0)
        resolution = int(math.ceil(scale)) + 1
        dense_size = resolution**n_input_dims
        table_size = min((dense_size + 7) // 8 * 8, max_size)
        levels.append(HashGridLevel(level, float(scale), resolution, table_size, offset,
                                    dense_size <= table_size))
        offset += table_size
    if offset >= 1 << 31:
        raise ConfigError(
            f"hashgrid_levels: {offset} table entries exceed 2^31; lower log2_hashmap_size"
        )
    return tuple(levels)


def init_hashgrid_params(
    n_params: int, *, seed: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Initial parameters as tcnn draws them, uniform in ±1e-4, from an explicit CPU generator.

    The numbers depend only on ``seed`` and ``n_params`` (drawn on the CPU, then moved), so
    every device and both backends start from the same parameters.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    values = torch.rand(n_params, generator=gen, dtype=torch.float64)
    return (values * (2 * _INIT_RANGE) - _INIT_RANGE).to(dtype)
