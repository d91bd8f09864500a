"""The output directory of a fit: owned while it is written, renamed into place only when complete.

A new fit writes into a temporary sibling directory (``.NAME.partial``) that is renamed onto
``NAME`` when everything is written, so an interrupted fit never leaves a half-filled output;
``--resume`` continues from the checkpoint of an interrupted fit in that directory, else from
the finished one. While a process writes them, ``NAME`` and ``.NAME.partial`` are its own: it
holds an exclusive lock on ``.NAME.lock`` beside them (:class:`OutputLock`), and a second process
is refused at once. An interrupted fit is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

from optics.atomic import output_error, remove_stale_temporaries
from recon.errors import ReconError
from recon.fitting.checkpoint import not_a_file, read_checkpoint
from recon.fitting.config import FitConfig
from recon.fitting.data import HALF_SEED_OFFSET

__all__ = [
    "OutputLock",
    "discard_unless_resumable",
    "finish_out_dir",
    "interrupted_step",
    "prepare_out_dir",
    "read_config_json",
    "read_json_table",
    "resolve_out",
    "resume_dir",
    "saved_fit_settings",
]


class OutputLock:
    """Exclusive ownership of an output directory by one process, for as long as the block runs.

    An advisory ``fcntl.flock`` on ``.NAME.lock`` in the parent directory, which holds the owner's
    process id; the lock goes with the process (also when it is killed), and the file is removed
    on a clean exit. A process that cannot take the lock is refused with one line naming the owner.
    """

    def __init__(self, out: Path, *, what: str = "fit"):
        self.out, self.what = Path(out), what
        parent = self.out.parent if str(self.out.parent) else Path(".")
        self.path = parent / f".{self.out.name}.lock"
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(self.out, err, f"{self.what}: cannot write") from None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise output_error(self.out, err, f"{self.what}: cannot write") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise output_error(self.out, err, f"{self.what}: cannot lock") from None
                raise ReconError(f"{self.what}: {self.out} is being written by another recon process (pid "
                                 f"{holder}); wait for it to finish or choose another --out") from None
            try:  # the previous owner may have removed the file between our open and our lock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            os.close(self._fd)  # releases the lock
            self._fd = None


def interrupted_step(work: Path) -> int | None:
    """The step of the checkpoint an interrupted fit left in ``work`` (None: none there)."""
    for sub in (".", "half1", "half2"):
        ckpt = work / sub / "checkpoint.pt"
        if ckpt.is_file():
            try:
                return int(read_checkpoint(ckpt)["state"]["step"])
            except (ReconError, KeyError, TypeError, ValueError):
                return -1  # unreadable: still an interrupted fit, not to be replaced silently
    return None


def resolve_out(out: Path) -> Path:
    """The directory a fit given ``--out out`` owns: a link's target, never the working directory.

    A fit replaces its output directory as a whole (:func:`finish_out_dir`), so ``--out`` that is
    a link stands for the directory it points to (the link stays), and the current directory or
    one above it (``--out .``) would replace what the user stands in: both are settled here,
    before any work.

    Raises:
        ReconError: a link to nothing; the current directory or one of its parents.
    """
    if out.is_symlink():
        target = out.resolve()
        if not target.is_dir():
            raise ReconError(f"fit: --out {out} is a link to {target}, which is not a directory; create it "
                             "or choose another --out")
        out = target
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise ReconError(f"fit: --out {out} is the current directory or one above it, and a fit replaces its "
                         "output directory as a whole; pass a directory of its own (e.g. --out fits/run042)")
    return out


def prepare_out_dir(out: Path, *, overwrite: bool, resume: bool) -> Path:
    """Check the output directory and return where to write (the final place when resuming).

    Call it holding the :class:`OutputLock` of ``out``. A new fit writes into a temporary sibling
    directory (``.NAME.partial``) that is renamed onto ``out`` when everything is written, so an
    interrupted fit never leaves a half-filled ``out``. ``--resume`` continues from the checkpoint
    of an interrupted fit in that directory, else from the one in ``out`` (a finished fit,
    continued with more steps).

    Raises:
        ReconError: ``out`` is a file; ``--resume`` finds no checkpoint; an interrupted fit or a
            finished one is in the way of a new fit without ``--overwrite``; ``out`` cannot be written.
    """
    if out.exists() and not out.is_dir():
        raise ReconError(f"fit: --out {out} is a file, not a directory; choose another --out")
    if resume:
        where = resume_dir(out)
        if where is not None:
            remove_stale_temporaries(where)  # left by a writer killed mid-write
            for sub in ("half1", "half2"):
                if (where / sub).is_dir():
                    remove_stale_temporaries(where / sub)
            return where
        for where in (_partial_dir(out), out):
            path = where / "checkpoint.pt"
            kind = not_a_file(path)
            if kind:
                raise ReconError(f"fit: --resume needs {path} to be a checkpoint file, and it is {kind}; "
                                 "move it away and run without --resume")
        raise ReconError(
            f"fit: --resume needs {out}/checkpoint.pt, which does not exist; run without --resume first"
        )
    work = _partial_dir(out)
    step = interrupted_step(work) if work.is_dir() else None
    if step is not None and not overwrite:
        at = f"at step {step}" if step >= 0 else "(its checkpoint is unreadable)"
        raise ReconError(f"fit: {out} holds an interrupted fit {at}; pass --resume to continue or "
                         "--overwrite to start again")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ReconError(
            f"fit: output directory {out} exists and is not empty; pass --overwrite or choose another --out"
        )
    try:
        if work.exists():  # an interrupted fit being replaced, or what a fit that failed early left
            shutil.rmtree(work)
        work.mkdir()
    except OSError as err:
        raise output_error(out, err, "fit: cannot write") from None
    return work


def resume_dir(out: Path) -> Path | None:
    """Where ``--resume`` continues: an interrupted fit's temporary directory, else ``out``."""
    for where in (_partial_dir(out), out):
        if any((where / sub / "checkpoint.pt").is_file() for sub in (".", "half1")):
            return where
    return None


def read_json_table(path: Path) -> dict:
    """A fit directory's JSON file (config.json, metrics.json) as a dict; {} if missing or damaged.

    {} also when it is not a table. The file may come from anyone: it is parsed as JSON, nothing in
    it runs, and each caller checks the type of what it takes.
    """
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return table if isinstance(table, dict) else {}


def read_config_json(fit_dir: Path) -> dict:
    """A fit directory's config.json as a dict ({} when missing or damaged: :func:`read_json_table`)."""
    return read_json_table(Path(fit_dir) / "config.json")


def saved_fit_settings(out: Path) -> dict:
    """The settings of the checkpoint that ``--resume`` would continue ({} if none is readable).

    The checkpoint, not config.json, is the record: a resumed attempt that failed (a NaN loss)
    has rewritten config.json but left the last good checkpoint as it was. A split-halves fit's
    settings are those of its first half, less the half's seed offset.
    """
    where = resume_dir(out)
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
