"""The shots of a campaign: run directories found under a folder, or listed in a manifest file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from recon.errors import ConfigError

__all__ = ["MAX_SHOTS", "Shot", "find_shots"]

#: The most shots one campaign holds.
MAX_SHOTS = 1_000_000
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Shot:
    """One shot: its name (unique in the campaign, safe as a directory name) and run directory."""

    name: str
    run: Path


def _name(relative: Path) -> str:
    """``a/b c/run7`` → ``a__b_c__run7``: one path component, only ``[A-Za-z0-9._-]``."""
    parts = [_SAFE.sub("_", part).strip(".") or "_" for part in relative.parts]
    return "__".join(parts) or "_"


def _from_folder(folder: Path) -> list[Shot]:
    if (folder / "run.toml").is_file():
        raise ConfigError(
            f"batch: {folder} is one run (it holds run.toml); pass the folder that holds the "
            "shots' run directories, or fit it with `recon fit --views`"
        )
    runs = sorted(p.parent for p in folder.rglob("run.toml") if p.is_file())
    return [Shot(_name(run.relative_to(folder)), run) for run in runs]


def _from_list(path: Path) -> list[Shot]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"batch: cannot read the shot list {path}: {err}") from None
    shots = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        run = Path(entry).expanduser()
        run = run if run.is_absolute() else path.parent / run
        if not (run / "run.toml").is_file():
            raise ConfigError(
                f"batch: line {number} of {path} names {entry!r}, which holds no run.toml; "
                "list one run directory per line"
            )
        shots.append(Shot(_name(Path(entry)), run))
    return shots


def find_shots(source: str | Path) -> list[Shot]:
    """The campaign's shots, in order.

    ``source`` is either a folder (every directory below it that holds a run.toml is one shot,
    sorted by path; its name is its path below the folder, with ``/`` written ``__``) or a text
    file listing one run directory per line (relative to the file; ``#`` starts a comment).

    Raises:
        ConfigError: no such folder or file, no shot, a listed directory that is no run, or two
            shots with one name.
    """
    source = Path(source)
    if source.is_dir():
        shots = _from_folder(source)
    elif source.is_file():
        shots = _from_list(source)
    else:
        raise ConfigError(
            f"batch: {source} does not exist; pass a folder of run directories or a file listing them"
        )
    if not shots:
        raise ConfigError(
            f"batch: no run directory (with run.toml) found in {source}; simulate some with "
            "`recon simulate --campaign N`"
        )
    if len(shots) > MAX_SHOTS:
        raise ConfigError(f"batch: {len(shots)} shots in {source}, more than {MAX_SHOTS}; split the campaign")
    seen: dict[str, Path] = {}
    for shot in shots:
        if shot.name in seen:
            raise ConfigError(
                f"batch: {seen[shot.name]} and {shot.run} both make the shot name {shot.name!r}; rename one"
            )
        seen[shot.name] = shot.run
    return shots
