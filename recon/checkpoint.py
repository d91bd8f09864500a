"""Checkpoints of a fit: written atomically, checked against the configuration on load."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from recon.atomic import atomic_path
from recon.errors import DataError

__all__ = ["load_checkpoint", "save_checkpoint"]

_FORMAT = "recon.checkpoint/1"
# Settings that change what the parameters mean; a checkpoint only resumes under the same ones.
_MUST_MATCH = ("field", "model", "field_options", "seed")


def save_checkpoint(path: str | os.PathLike, field_module, optimizer, generator, cfg, state) -> None:
    """Write the field, optimiser, random state, config and progress to ``path`` atomically."""
    payload = {
        "format": _FORMAT,
        "field": field_module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "config": asdict(cfg),
        "state": asdict(state),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file, with one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; run the fit without --resume first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for truncated files
        raise DataError(f"checkpoint {path} is corrupt ({type(err).__name__}); delete it and fit again "
                        "without --resume") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise DataError(f"checkpoint {path} is not a recon checkpoint ({_FORMAT})")
    return payload


def load_checkpoint(path, field_module, optimizer, generator, cfg):
    """Restore a fit from ``path`` into the given objects and return its FitState.

    Raises:
        DataError: missing, corrupt, or written under another configuration.
    """
    from recon.fit import FitState

    payload = read_checkpoint(path)
    saved = payload["config"]
    current = asdict(cfg)
    for key in _MUST_MATCH:
        if saved.get(key) != current.get(key):
            raise DataError(f"checkpoint {path} was written with {key}={saved.get(key)!r}, not "
                            f"{current.get(key)!r}; resume with the same settings or start a new --out")
    try:
        field_module.load_state_dict(payload["field"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise DataError(f"checkpoint {path} does not fit this field ({str(err).splitlines()[0]}); "
                        "resume with the same settings or start a new --out") from None
    generator.set_state(payload["generator"])
    return FitState(**payload["state"])
