"""The output directory of a fit: owned while it is written, renamed into place only when complete.

A new fit writes into a temporary sibling directory (``.NAME.partial``) that is renamed onto
``NAME`` when everything is written, so an interrupted fit never leaves a half-filled output;
``--resume`` continues from the checkpoint of an interrupted fit in that directory, else from
the finished one.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from optics.atomic import output_error, remove_stale_temporaries
from recon.errors import ReconError
from recon.fitting.checkpoint import read_checkpoint
from recon.fitting.config import FitConfig
from recon.fitting.data import HALF_SEED_OFFSET

__all__ = ["discard_unless_resumable", "finish_out_dir", "prepare_out_dir", "saved_fit_settings"]


def prepare_out_dir(out: Path, *, overwrite: bool, resume: bool) -> Path:
    """Check the output directory and return where to write (the final place when resuming).

    A new fit writes into a temporary sibling directory (``.NAME.partial``) that is renamed onto
    ``out`` when everything is written, so an interrupted fit never leaves a half-filled ``out``.
    ``--resume`` continues from the checkpoint of an interrupted fit in that directory, else from
    the one in ``out`` (a finished fit, continued with more steps).
    """
    if out.exists() and not out.is_dir():
        raise ReconError(f"fit: --out {out} is a file, not a directory; choose another --out")
    if resume:
        where = _resume_dir(out)
        if where is not None:
            remove_stale_temporaries(where)  # left by a writer killed mid-write
            for sub in ("half1", "half2"):
                if (where / sub).is_dir():
                    remove_stale_temporaries(where / sub)
            return where
        raise ReconError(
            f"fit: --resume needs {out}/checkpoint.pt, which does not exist; run without --resume first"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReconError(
            f"fit: output directory {out} exists and is not empty; pass --overwrite or choose another --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = parent / f".{out.name}.write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:

        raise output_error(out, err, "fit: cannot write") from None
    work = _partial_dir(out)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return work


def _resume_dir(out: Path) -> Path | None:
    """Where ``--resume`` continues: an interrupted fit's temporary directory, else ``out``."""
    for where in (_partial_dir(out), out):
        if any((where / sub / "checkpoint.pt").is_file() for sub in (".", "half1")):
            return where
    return None


def saved_fit_settings(out: Path) -> dict:
    """The settings of the checkpoint that ``--resume`` would continue ({} if none is readable).

    The checkpoint, not config.json, is the record: a resumed attempt that failed (a NaN loss)
    has rewritten config.json but left the last good checkpoint as it was. A split-halves fit's
    settings are those of its first half, less the half's seed offset.
    """
    where = _resume_dir(out)
    if where is None:
        return {}
    half = not (where / "checkpoint.pt").is_file()
    try:
        saved = read_checkpoint(where / ("half1" if half else ".") / "checkpoint.pt")["config"]
    except (ReconError, KeyError, TypeError):
        return {}  # the resume itself reports what is wrong with the checkpoint
    if not isinstance(saved, dict):
        return {}
    known = {f.name for f in dataclasses.fields(FitConfig)}
    settings = {k: v for k, v in saved.items() if k in known}
    if half and isinstance(settings.get("seed"), int):
        settings["seed"] -= HALF_SEED_OFFSET
    return settings


def _partial_dir(out: Path) -> Path:
    parent = out.parent if str(out.parent) else Path(".")
    return parent / f".{out.name}.partial"


def finish_out_dir(work: Path, out: Path) -> None:
    """Move a completed temporary output directory onto ``out`` (the old one goes only after)."""
    if work == out:
        return
    if out.exists():
        old = work.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)


def discard_unless_resumable(work: Path, out: Path) -> None:
    """After a failed fit: remove its temporary directory unless it holds a checkpoint to resume."""
    resumable = any((work / sub / "checkpoint.pt").is_file() for sub in (".", "half1"))
    if work != out and work.exists() and not resumable:
        shutil.rmtree(work, ignore_errors=True)
