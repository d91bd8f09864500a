"""Atomic file output: write to a temporary name in the same directory, then rename.

Lives in `optics` (which depends on nothing) so that the system-file writer, `calibration` and
`recon` all use this one implementation.

A reader (or a process killed at any moment, even by SIGKILL) sees either the previous complete
file or the new complete one under the final name, never a half-written one: the data go to a
hidden temporary file beside the target (``.NAME.XXXX.tmp``), are flushed to disk, and the file
is renamed onto the target (``os.replace``, atomic on POSIX within one file system). A crash
can leave such a hidden temporary file behind; :func:`remove_stale_temporaries` clears them.

Errors of the file system (a parent that is a regular file, no permission, a full disk) become
one-line errors (:class:`~optics.errors.OutputError`) naming the path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from optics.errors import OutputError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "output_error",
    "remove_stale_temporaries",
]


def output_error(path: str | os.PathLike, err: OSError, what: str = "cannot write") -> OutputError:
    """The one-line error for an OSError met while writing ``path``."""
    reason = err.strerror or type(err).__name__
    where = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    blocker = Path(err.filename) if err.filename else None
    if isinstance(err, (FileExistsError, NotADirectoryError)) and blocker is not None:
        while not blocker.exists() and blocker != blocker.parent:
            blocker = blocker.parent
        if blocker.exists() and not blocker.is_dir():
            reason, where = f"{blocker} is a file, not a directory", ""
    return OutputError(f"{what} {path}: {reason}{where}; choose another output path or fix its directory")


def check_writable(path: str | os.PathLike) -> None:
    """Check, before long work, that ``path`` could be created; nothing is left on disk.

    The nearest existing ancestor must be a directory in which a file can be made (a probe file
    is created and removed there; no directory is created).

    Raises:
        OutputError: naming ``path`` and the reason.
    """
    import errno

    path = Path(path).absolute()
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(ancestor))
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise output_error(path, err) from None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: some file systems cannot sync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file is removed if the block raises, so a crash never leaves a half-written
    file under the final name.

    Args:
        path: the final file.
        suffix: ending of the temporary name (writers that choose the format from the
            extension need e.g. ``".tmp.stl"``).

    Raises:
        OutputError: the directory cannot be created or written, or writing fails (disk full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise output_error(path, err) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as err:
            raise output_error(path, err) from None
        try:
            # mkstemp creates 0600 files; give the result the permissions of an ordinary new file.
            umask = os.umask(0)
            os.umask(umask)
            if tmp_path.exists():
                os.chmod(tmp_path, 0o666 & ~umask)
                _fsync(tmp_path)
            os.replace(tmp_path, path)
        except OSError as err:
            raise output_error(path, err) from None
        _fsync_directory(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_ready(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically; NaN and inf become null."""
    atomic_write_text(path, json.dumps(_json_ready(data), indent=2) + "\n")


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary files a killed writer left in ``directory`` (not recursive).

    Only names of the form ``.NAME.XXXXXXXX.tmp`` (or ``.tmp.EXT``) made by :func:`atomic_path`
    are touched: a user's hidden files, even with ``.tmp`` in their names, are left alone.

    Returns:
        The files removed.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if _TEMPORARY.match(p.name) and p.is_file():
            p.unlink()
            removed.append(p)
    return removed


# ``.NAME.`` + tempfile.mkstemp's random characters (8 in CPython) + ``.tmp`` (and the writer's extension)
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{6,}\.tmp(\.[A-Za-z0-9]+)?$")
