"""Building a field from its configuration: :func:`make_field`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recon.errors import ConfigError
from recon.model.encoding import BACKENDS
from recon.model.fields.base import Field
from recon.model.fields.config import FieldConfig
from recon.model.fields.fourier import FourierFeatureField
from recon.model.fields.gauss import GaussianMLPField
from recon.model.fields.hashgrid import HashGridField
from recon.model.fields.mulfagrid import MulFAGridField
from recon.model.fields.siren import SirenField
from recon.model.fields.splitnet import SplitNetField
from recon.model.fields.tensorf import TensoRFField
from recon.model.fields.voxel import VoxelField

__all__ = ["make_field"]


def make_field(
    cfg: FieldConfig,
    box_min_mm: Sequence[float],
    box_max_mm: Sequence[float],
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    seed: int = 0,
) -> Field:
    """Build the field that ``cfg`` describes, on ``device``, deterministically from ``seed``.

    Args:
        cfg: kind and sizes.
        box_min_mm: (3,) lower corner of the box ``(x, y, z)``, mm.
        box_max_mm: (3,) upper corner, mm.
        backend: hash-grid backend, ``"auto"``, ``"torch"`` or ``"tcnn"`` (hashgrid only; the
            other kinds are pure torch and accept ``"auto"`` or ``"torch"``).
        device: where the field lives (``None`` = CPU).
        seed: initialisation seed; the same seed gives the same parameters on every device.

    Returns:
        The field, with ``field.config = cfg`` and ``field.backend`` the backend used.

    Raises:
        ConfigError: unknown backend, or ``"tcnn"`` for a non-hashgrid field.
        BackendUnavailableError: ``backend="tcnn"`` cannot be met (reason and remedy).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"make_field: backend must be one of {BACKENDS}, got {backend!r}")
    common = {"activation": cfg.activation, "init_density": cfg.init_density, "device": device}
    if cfg.kind == "hashgrid":
        out: Field = HashGridField(box_min_mm, box_max_mm, encoding=cfg.encoding,
                                   hidden_layers=cfg.hidden_layers, hidden_width=cfg.hidden_width,
                                   backend=backend, seed=seed, **common)
    elif backend == "tcnn":
        raise ConfigError(
            f"make_field: backend 'tcnn' applies to hashgrid fields only; a {cfg.kind!r} field "
            "runs on torch: pass --backend auto or --backend torch"
        )
    elif cfg.kind == "voxel":
        out = VoxelField(box_min_mm, box_max_mm, resolution=cfg.voxel_resolution, **common)
    elif cfg.kind == "fourier":
        out = FourierFeatureField(box_min_mm, box_max_mm, encoding=cfg.fourier_encoding,
                                  features=cfg.fourier_features, scale=cfg.fourier_scale,
                                  frequencies=cfg.fourier_frequencies, hidden_layers=cfg.mlp_hidden_layers,
                                  hidden_width=cfg.mlp_width, seed=seed, **common)
    elif cfg.kind == "gauss":
        out = GaussianMLPField(box_min_mm, box_max_mm, hidden_layers=cfg.mlp_hidden_layers,
                               hidden_width=cfg.mlp_width, a=cfg.gauss_a, seed=seed, **common)
    elif cfg.kind == "splitnet":
        out = SplitNetField(box_min_mm, box_max_mm, hidden_layers=cfg.mlp_hidden_layers,
                            hidden_width=cfg.mlp_width, omega=cfg.splitnet_omega, seed=seed, **common)
    elif cfg.kind == "tensorf":
        out = TensoRFField(box_min_mm, box_max_mm, rank=cfg.tensorf_rank, resolution=cfg.tensorf_resolution,
                           seed=seed, **common)
    elif cfg.kind == "mulfagrid":
        out = MulFAGridField(box_min_mm, box_max_mm, resolution=cfg.mulfagrid_resolution,
                             channels=cfg.mulfagrid_channels, width=cfg.mulfagrid_width,
                             layers=cfg.mulfagrid_layers, frequencies=cfg.mulfagrid_frequencies,
                             filter_scale=cfg.mulfagrid_filter_scale, seed=seed, **common)
    else:
        out = SirenField(box_min_mm, box_max_mm, hidden_layers=cfg.siren_hidden_layers,
                         width=cfg.siren_width, omega0=cfg.siren_omega0, seed=seed, **common)
    out.config = cfg
    return out
