"""The configuration of a field: :class:`FieldConfig` (kind and sizes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from optics.limits import check_types
from recon.errors import ConfigError
from recon.model.hashgrid import HashGridConfig

__all__ = ["ACTIVATIONS", "FIELD_KINDS", "FOURIER_ENCODINGS", "FieldConfig", "voxel_shape"]


FIELD_KINDS = ("hashgrid", "voxel", "siren", "fourier", "gauss", "tensorf", "splitnet", "mulfagrid")

#: The position maps of a ``"fourier"`` field (:mod:`recon.model.fields.fourier`).
FOURIER_ENCODINGS = ("gaussian", "positional")


ACTIVATIONS = ("softplus", "exp", "linear")

#: The options that are one int or (nx, ny, nz) (lists in JSON and TOML).
_RESOLUTIONS = ("voxel_resolution", "tensorf_resolution", "mulfagrid_resolution")


@dataclass(frozen=True)
class FieldConfig:
    """Which field, and its sizes. Defaults suit a ~1 mm cloud in a 2.4 mm box.

    Attributes:
        kind: ``"hashgrid"``, ``"voxel"``, ``"siren"``, ``"fourier"`` (Fourier features + ReLU
            MLP, :mod:`recon.model.fields.fourier`), ``"gauss"`` (Gaussian-activation MLP,
            :mod:`recon.model.fields.gauss`), ``"tensorf"`` (TensoRF's vector–matrix
            factorisation, :mod:`recon.model.fields.tensorf`), ``"splitnet"`` (split-activation
            MLP, :mod:`recon.model.fields.splitnet`) or ``"mulfagrid"`` (a feature grid with a
            learned interpolation kernel, :mod:`recon.model.fields.mulfagrid`).
        encoding: hash grid of a ``"hashgrid"`` field (see :class:`HashGridConfig`).
        hidden_layers: hidden ReLU layers of the hash-grid MLP (instant-ngp's density network
            has one; each more costs ~20 % throughput on CPU).
        hidden_width: width of those layers.
        voxel_resolution: voxels per axis of a ``"voxel"`` field, one int (cube) or
            ``(nx, ny, nz)``; 128 gives 19 µm voxels in a 2.4 mm box. ``recon fit`` gives a voxel
            field without one density.tif's grid (:func:`recon.fitting.config.voxel_field_shape`).
        siren_hidden_layers: sine layers of a ``"siren"`` field (all ``siren_width`` wide).
        siren_width: their width.
        siren_omega0: ω₀, the frequency factor of every sine layer.
        mlp_hidden_layers: hidden layers of a ``"fourier"``, ``"gauss"`` or ``"splitnet"`` field's MLP.
        mlp_width: their width.
        fourier_encoding: ``"gaussian"`` (random features) or ``"positional"`` (NeRF's).
        fourier_features: m, the random frequencies of ``"gaussian"`` (2m features).
        fourier_scale: σ of those frequencies, cycles per box edge.
        fourier_frequencies: L, the octaves of ``"positional"`` (3 + 6L features).
        gauss_a: a, the width of the Gaussian activation ``exp(−x²/(2a²))``.
        splitnet_omega: ω, the frequency of a ``"splitnet"`` field's sine and cosine branches.
        tensorf_rank: R, the components per mode of a ``"tensorf"`` field.
        tensorf_resolution: its samples per axis along every vector and matrix, one int or
            ``(nx, ny, nz)``.
        mulfagrid_resolution: vertices per axis of a ``"mulfagrid"`` field's grid, one int or
            ``(nx, ny, nz)``.
        mulfagrid_channels: C, its features per vertex.
        mulfagrid_width: H, the width of its kernel's filter network.
        mulfagrid_layers: L, that network's multiplicative filter layers.
        mulfagrid_frequencies: F, the octaves of the Fourier features the network starts from.
        mulfagrid_filter_scale: s, the scale of its filters' frequencies, cycles per box edge.
        activation: ``"softplus"``, ``"exp"`` (truncated exponential) or ``"linear"`` (``max(raw, 0)``:
            the density linear in the parameters, for the EM solver).
        init_density: ``density_scale``, the density every field starts at (same unit as the
            density, e.g. atoms/mm³; > 0).
    """

    kind: str = "hashgrid"
    encoding: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_layers: int = 1
    hidden_width: int = 64
    voxel_resolution: int | tuple[int, int, int] = 128
    siren_hidden_layers: int = 3
    siren_width: int = 256
    siren_omega0: float = 30.0
    mlp_hidden_layers: int = 4
    mlp_width: int = 256
    fourier_encoding: str = "gaussian"
    fourier_features: int = 256
    fourier_scale: float = 10.0
    fourier_frequencies: int = 10
    gauss_a: float = 0.1
    splitnet_omega: float = 1.0
    tensorf_rank: int = 16
    tensorf_resolution: int | tuple[int, int, int] = 128
    mulfagrid_resolution: int | tuple[int, int, int] = 64
    mulfagrid_channels: int = 4
    mulfagrid_width: int = 16
    mulfagrid_layers: int = 2
    mulfagrid_frequencies: int = 4
    mulfagrid_filter_scale: float = 4.0
    activation: str = "softplus"
    init_density: float = 1.0

    def __post_init__(self) -> None:
        where = "FieldConfig"
        if self.kind not in FIELD_KINDS:
            raise ConfigError(f"{where}: kind must be one of {FIELD_KINDS}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"{where}: activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if not isinstance(self.encoding, HashGridConfig):
            raise ConfigError(f"{where}: encoding must be a HashGridConfig, got {self.encoding!r}")
        if not (math.isfinite(self.init_density) and self.init_density > 0):
            raise ConfigError(f"{where}: init_density must be > 0, got {self.init_density}")
        if self.hidden_layers < 0 or self.hidden_width < 1:
            raise ConfigError(
                f"{where}: need hidden_layers ≥ 0 and hidden_width ≥ 1, got "
                f"{self.hidden_layers} and {self.hidden_width}"
            )
        if self.siren_hidden_layers < 1 or self.siren_width < 1 or not self.siren_omega0 > 0:
            raise ConfigError(
                f"{where}: need siren_hidden_layers ≥ 1, siren_width ≥ 1 and siren_omega0 > 0, "
                f"got {self.siren_hidden_layers}, {self.siren_width}, {self.siren_omega0}"
            )
        if self.mlp_hidden_layers < 1 or self.mlp_width < 1:
            raise ConfigError(f"{where}: need mlp_hidden_layers ≥ 1 and mlp_width ≥ 1, got "
                              f"{self.mlp_hidden_layers} and {self.mlp_width}")
        if self.fourier_encoding not in FOURIER_ENCODINGS:
            raise ConfigError(f"{where}: fourier_encoding must be 'gaussian' or 'positional', got "
                              f"{self.fourier_encoding!r}")
        if not (1 <= self.fourier_features <= 65536 and 1 <= self.fourier_frequencies <= 30
                and math.isfinite(self.fourier_scale) and self.fourier_scale > 0):
            raise ConfigError(f"{where}: need fourier_features in 1 … 65536, fourier_frequencies in "
                              f"1 … 30 and fourier_scale > 0, got {self.fourier_features}, "
                              f"{self.fourier_frequencies}, {self.fourier_scale}")
        if not (math.isfinite(self.gauss_a) and self.gauss_a > 0):
            raise ConfigError(f"{where}: gauss_a must be > 0, got {self.gauss_a}")
        voxel_shape(self.voxel_resolution)  # validates
        if not (math.isfinite(self.splitnet_omega) and self.splitnet_omega > 0):
            raise ConfigError(f"{where}: splitnet_omega must be > 0, got {self.splitnet_omega}")
        if not 1 <= self.tensorf_rank <= 256:
            raise ConfigError(f"{where}: tensorf_rank must be in 1 … 256, got {self.tensorf_rank}")
        if min(voxel_shape(self.tensorf_resolution)) < 2:
            raise ConfigError(f"{where}: tensorf_resolution needs at least 2 samples per axis, got "
                              f"{self.tensorf_resolution}")
        if min(voxel_shape(self.mulfagrid_resolution)) < 2:
            raise ConfigError(f"{where}: mulfagrid_resolution needs at least 2 vertices per axis, got "
                              f"{self.mulfagrid_resolution}")
        if not (1 <= self.mulfagrid_channels <= 256 and 1 <= self.mulfagrid_width <= 1024
                and 1 <= self.mulfagrid_layers <= 16 and 1 <= self.mulfagrid_frequencies <= 16
                and math.isfinite(self.mulfagrid_filter_scale) and self.mulfagrid_filter_scale > 0):
            raise ConfigError(f"{where}: need mulfagrid_channels in 1 … 256, mulfagrid_width in 1 … 1024, "
                              f"mulfagrid_layers and mulfagrid_frequencies in 1 … 16 and "
                              f"mulfagrid_filter_scale > 0, got {self.mulfagrid_channels}, "
                              f"{self.mulfagrid_width}, {self.mulfagrid_layers}, "
                              f"{self.mulfagrid_frequencies}, {self.mulfagrid_filter_scale}")

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        data = asdict(self)
        for key in _RESOLUTIONS:
            if isinstance(data[key], tuple):
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FieldConfig:
        """Build from a dict (e.g. ``config.json``); unknown keys are a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"FieldConfig: unknown keys {unknown}; expected some of {sorted(known)}")
        check_types(cls, data, "FieldConfig")
        data = dict(data)
        if isinstance(data.get("encoding"), dict):
            data["encoding"] = HashGridConfig.from_dict(data["encoding"])
        for key in _RESOLUTIONS:
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return cls(**data)


def voxel_shape(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    """Voxels per axis ``(nx, ny, nz)`` -> array shape ``(Z, Y, X)``."""
    if isinstance(resolution, int | np.integer):
        resolution = (int(resolution),) * 3
    resolution = tuple(resolution)
    if len(resolution) != 3 or not all(isinstance(n, int | np.integer) and n >= 1
                                       for n in resolution):
        raise ConfigError(
            f"FieldConfig: voxel_resolution must be a positive int or (nx, ny, nz), "
            f"got {resolution!r}"
        )
    nx, ny, nz = (int(n) for n in resolution)
    return nz, ny, nx
