"""The encoding registry: :func:`make_encoding` picks the hash grid's backend.

``auto`` uses tiny-cuda-nn when it imports and a GPU is there, else torch; an explicit
``tcnn`` that cannot be met raises with the reason and the remedy, never a silent downgrade.
"""

from __future__ import annotations

import torch

from recon.errors import BackendUnavailableError, ConfigError
from recon.model.hashgrid import HashGridConfig
from recon.model.hashgrid_tcnn import TcnnHashGrid, tcnn_status
from recon.model.hashgrid_torch import TorchHashGrid

__all__ = ["BACKENDS", "make_encoding"]


BACKENDS = ("auto", "torch", "tcnn")


def make_encoding(
    cfg: HashGridConfig,
    *,
    backend: str = "auto",
    device: torch.device | str | None = None,
    n_input_dims: int = 3,
    seed: int = 0,
) -> TorchHashGrid | TcnnHashGrid:
    """Build a hash-grid encoding with the requested backend.

    Args:
        cfg: the grid configuration.
        backend: ``"torch"``; ``"tcnn"`` (CUDA, tinycudann); or ``"auto"``: tcnn when the
            device is CUDA and tinycudann imports, else torch.
        device: where the parameters live (``None`` = CPU).
        n_input_dims: 2 or 3.
        seed: initialisation seed (same parameters on every backend and device).

    Returns:
        A module mapping (N, d) positions in [0, 1]^d to (N, n_levels * F) features, with the
        flat parameters as ``params`` and the backend used as ``backend``.

    Raises:
        ConfigError: unknown backend.
        BackendUnavailableError: ``backend="tcnn"`` cannot be met here (reason and remedy).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"make_encoding: backend must be one of {BACKENDS}, got {backend!r}")
    device = torch.device(device if device is not None else "cpu")
    if backend == "auto":
        backend = "tcnn" if device.type == "cuda" and tcnn_status()[0] else "torch"
    if backend == "tcnn":
        if device.type != "cuda":
            raise BackendUnavailableError(
                f"make_encoding: backend 'tcnn' needs a CUDA device, got device {device}; "
                "pass --backend torch for the CPU, or --device cuda on a GPU machine"
            )
        return TcnnHashGrid(cfg, n_input_dims=n_input_dims, seed=seed, device=device)
    return TorchHashGrid(cfg, n_input_dims=n_input_dims, seed=seed, device=device)
