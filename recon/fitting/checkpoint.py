"""Checkpoints of a fit: written atomically, checked against the configuration on load.

A checkpoint holds everything a fit needs to continue exactly where it stopped: the field's
parameters, the optimiser's state (Adam moments, step counts), the fit's random generator, the
global torch (and CUDA) random states, the progress (:class:`~recon.fitting.checkpoint.FitState`: step,
losses, …), the configuration and a fingerprint of the data. Resuming with the same settings on
the same device therefore reproduces the numbers of an uninterrupted fit.

It is written with :func:`optics.atomic.atomic_path` (temporary name, flush, rename), so a fit
killed at any moment — SIGINT, SIGTERM or SIGKILL — leaves the previous complete checkpoint or
the new one, never a broken one. Parameters that are not finite are never written: the
checkpoint on disk is always the last good state.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import warnings
from dataclasses import asdict, dataclass, fields
from dataclasses import field as dc_field
from pathlib import Path

import torch

from optics.atomic import atomic_write_bytes
from optics.limits import check_types
from optics.system import system_to_dict
from recon.errors import ConfigError, DataError, FitError
from recon.fitting.config import FitConfig

__all__ = [
    "FitState",
    "check_resumable",
    "data_fingerprint",
    "load_checkpoint",
    "not_a_file",
    "read_checkpoint",
    "save_checkpoint",
]


@dataclass
class FitState:
    """What a checkpoint holds besides the modules."""

    step: int = 0
    losses: list = dc_field(default_factory=list)
    elapsed_s: float = 0.0
    rays_rendered: int = 0
    batch_pixels: int = 0  # pixels per step now (0: the config's; smaller after running out of memory)
    heldout: list = dc_field(default_factory=list)  # [step, held-out deviance] of every check
    stop_rule: dict = dc_field(default_factory=dict)  # StopRule.state_dict()
    stopped: str = ""  # why the loop ended: "held-out" (converged), "steps", "passes"; "" while running


_FORMAT = "recon.checkpoint/1"


# Settings that change what the parameters mean; a checkpoint only resumes under the same ones.
_MUST_MATCH = ("field", "solver", "model", "field_options", "seed", "subsets", "holdout",
               "camera_sensitivity")


def _finite(module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.state_dict().values() if p.is_floating_point())


def data_fingerprint(data) -> str:
    """A key of the data a fit runs on (:class:`~recon.fitting.data.FitData`).

    A readable summary (views, pixels, shots, signal) and a BLAKE2b hash of everything that
    decides the result: every view's name, camera, region, usable photoelectrons (after the
    dark frame; masked pixels count as 0) and mask, the photons per atom, the read noise, and
    the instrument's full description. A view flipped left–right, a mirror moved by 0.2 mm or
    another ``photons_per_atom`` give another key.
    """
    pixels = sum(int(v.electrons[0].numel()) for v in data.views)
    shots = sum(int(v.electrons.shape[0]) for v in data.views)
    signal = sum(float((v.electrons.double() * v.mask).sum()) for v in data.views)
    digest = hashlib.blake2b(digest_size=8)
    settings = {"photons_per_atom": data.photons_per_atom, "read_noise_e": data.read_noise_e,
                "system": system_to_dict(data.system)}
    digest.update(json.dumps(settings, sort_keys=True, default=repr).encode())
    for view in data.views:
        digest.update(json.dumps([view.name, int(view.camera), [int(c) for c in view.roi]]).encode())
        usable = torch.where(view.mask, view.electrons, torch.zeros_like(view.electrons))
        for array in (usable.float().contiguous(), view.mask.contiguous()):
            digest.update(str(tuple(array.shape)).encode())
            digest.update(array.numpy().tobytes())
    summary = f"{len(data.views)} views, {pixels} px, {shots} shots, {signal:.9e} e"
    return f"{summary}, content {digest.hexdigest()}"


def check_resumable(path: str | os.PathLike, cfg, data=None) -> dict:
    """Check, before anything is written, that the checkpoint at ``path`` resumes ``cfg`` on ``data``.

    Returns:
        The checkpoint's contents.

    Raises:
        DataError: missing, corrupt, written under another configuration or for other data.
    """
    payload = read_checkpoint(path)
    saved = payload["config"]
    current = asdict(cfg)
    defaults = asdict(type(cfg)())  # a checkpoint older than a setting was written at its default
    for key in _MUST_MATCH:
        if saved.get(key, defaults.get(key)) != current.get(key):
            raise DataError(f"checkpoint {path} was written with {key}={saved.get(key)!r}, not "
                            f"{current.get(key)!r}; resume with the same settings or start a new --out")
    saved_key = payload.get("data_key")
    data_key = None if data is None else data_fingerprint(data)
    if data_key is not None and saved_key is not None and saved_key != data_key:
        raise DataError(f"checkpoint {path} was written for other data ({saved_key}; now {data_key}); "
                        "resume with the same run or start a new --out")
    return payload


def save_checkpoint(
    path: str | os.PathLike, field_module, optimizer, generator, cfg, state, *, data_key: str | None = None,
    best_field: dict | None = None,
) -> None:
    """Write the field, optimiser, random states, config and progress to ``path`` atomically.

    Args:
        path: the checkpoint file.
        field_module: the field (``nn.Module``).
        optimizer: its optimiser.
        generator: the fit's ``torch.Generator`` (batches, jitter).
        cfg: the :class:`~recon.fitting.config.FitConfig`.
        state: the :class:`~recon.fitting.checkpoint.FitState`.
        data_key: :func:`data_fingerprint` of the data; a resume against other data is refused.
        best_field: the field's ``state_dict`` at the best held-out check so far (restored by
            :func:`load_checkpoint`'s caller from ``read_checkpoint(path)["best_field"]``).

    Raises:
        FitError: the field holds NaN or inf; nothing is written, the previous checkpoint stays.
    """
    if not _finite(field_module):
        raise FitError(
            f"fit: the field's parameters became NaN or inf by step {state.step}; not overwriting "
            f"{path}, which keeps the last good state. Lower lr (--config) or check the data"
        )
    payload = {
        "format": _FORMAT,
        "field": field_module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "config": asdict(cfg),
        "state": asdict(state),
        "data_key": data_key,
        "best_field": best_field,
    }
    buffer = io.BytesIO()  # serialised in memory, so that a full disk is an OSError of the write
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def not_a_file(path: Path) -> str | None:
    """What stands at ``path`` if something that is not a regular file does (None: a file, or nothing).

    Never opens it (a FIFO would block the reader).
    """
    if path.is_file() or not (path.exists() or path.is_symlink()):
        return None
    if path.is_dir():
        return "a directory"
    if not path.exists():
        return "a broken symbolic link"
    return "a FIFO, socket or device"


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file, with one-line errors for missing or corrupt files.

    A checkpoint may come from anyone, so it is read with ``weights_only=True``: tensors, numbers,
    strings, lists and dicts only. A pickle that names any other object (code to run) is refused
    before anything in it is built.

    Raises:
        DataError: the file is missing, unreadable, truncated or not a recon checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        kind = not_a_file(path)
        if kind:
            raise DataError(f"checkpoint {path} is {kind}, not a checkpoint file; move it away and fit again "
                            "without --resume")
        raise DataError(f"checkpoint {path} does not exist; run the fit without --resume first")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # damaged, foreign, or tampered with: refused before anything ran
        raise DataError(f"checkpoint {path} is corrupt or not recon's: it holds something other than tensors "
                        "and settings (UnpicklingError), and nothing in it was run. Delete it and fit again "
                        "without --resume") from None
    except Exception as err:  # torch raises many types for truncated files
        raise DataError(f"checkpoint {path} is corrupt ({type(err).__name__}); delete it and fit again "
                        "without --resume") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise DataError(f"checkpoint {path} is not a recon checkpoint ({_FORMAT}); delete it and fit "
                        "again without --resume")
    missing = [k for k in ("field", "optimizer", "generator", "config", "state") if k not in payload]
    if missing or not isinstance(payload["config"], dict) or not isinstance(payload["state"], dict):
        raise DataError(f"checkpoint {path} is incomplete (no {', '.join(missing) or 'config/state'}); "
                        "delete it and fit again without --resume")
    _check_settings_and_state(path, payload["config"], payload["state"])
    return payload


def _check_settings_and_state(path: Path, config: dict, state: dict) -> None:
    """Every setting and progress record of a checkpoint has its type (a one-line DataError if not)."""
    fix = "; delete it and fit again without --resume"
    try:
        for cls, values, what in ((FitConfig, config, "settings"), (FitState, state, "progress")):
            known = {f.name for f in fields(cls)}
            check_types(cls, {k: v for k, v in values.items() if k in known}, f"checkpoint {path} ({what})",
                        fix=fix)
    except ConfigError as err:
        raise DataError(str(err)) from None

    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    lists = {"losses": lambda v: number(v),
             "heldout": lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(number(x) for x in v)}
    for key, ok in lists.items():
        value = state.get(key, [])
        if not isinstance(value, list) or not all(ok(v) for v in value):
            raise DataError(f"checkpoint {path} (progress): key '{key}' is not a list of "
                            f"{'numbers' if key == 'losses' else '[step, deviance] pairs'}{fix}")
    rule = state.get("stop_rule", {})
    if not all(number(rule.get(k, 0)) for k in ("best", "best_step", "waited")):
        raise DataError(f"checkpoint {path} (progress): key 'stop_rule' holds a value that is not a "
                        f"number{fix}")
    pixels = rule.get("best_pixels")
    if pixels is not None and not (isinstance(pixels, torch.Tensor) and pixels.dim() == 1
                                   and pixels.is_floating_point() and bool(torch.isfinite(pixels).all())):
        raise DataError(f"checkpoint {path} (progress): 'stop_rule' key 'best_pixels' is not a finite 1-D "
                        f"float tensor{fix}")


def load_checkpoint(path, field_module, optimizer, generator, cfg, *, data=None,
                    best_field: dict | None = None):
    """Restore a fit from ``path`` into the given objects and return its FitState.

    ``best_field``, when given, is filled with the field's parameters at the best held-out check
    (empty when the checkpoint holds none), checked to load into ``field_module``.

    Also restores the global torch (and CUDA) random states when the checkpoint holds them.

    Raises:
        DataError: missing, corrupt, written under another configuration or for other data.
    """
    payload = check_resumable(path, cfg, data)
    for key in ("field", "best_field"):  # a field that loads must be a field a fit could have made
        values = payload.get(key)
        if isinstance(values, dict) and any(isinstance(v, torch.Tensor) and v.is_floating_point()
                                            and not torch.isfinite(v).all() for v in values.values()):
            raise DataError(f"checkpoint {path} holds NaN or inf in its {key.replace('_', ' ')}; delete it "
                            "and fit again without --resume")
    try:
        if best_field is not None and payload.get("best_field"):
            field_module.load_state_dict(payload["best_field"])
            best_field.update(payload["best_field"])
        field_module.load_state_dict(payload["field"])
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"])
        if payload.get("torch_rng") is not None:
            torch.set_rng_state(payload["torch_rng"])
        cuda_rng = payload.get("cuda_rng")
        if cuda_rng is not None and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        state = FitState(**payload["state"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"checkpoint {path} does not fit this field ({str(err).splitlines()[0]}); "
                        "resume with the same settings or start a new --out") from None
    return state
