"""A campaign's manifest: every shot's state, saved atomically after every change.

``CAMPAIGN/manifest.json`` (schema ``recon.campaign/1``) holds the settings the campaign is
fitted with and, per shot, its run directory, state (``pending``, ``running``, ``done``,
``failed``), attempts, the one-line reason of its last failure, the worker and seconds of its
last attempt, and the density its EM started from (``start``; empty: the data's Gaussian). It is
replaced atomically (write, fsync, rename), so a driver killed at any moment leaves the previous
or the next manifest, never a torn one. A rerun treats ``running`` shots as
interrupted: they run again (the fit writes its output directory whole or not at all, so the
caller can tell a shot that finished before the kill, see :mod:`recon.jobs.batch`).

The file is read as untrusted JSON: anything but the expected keys and types is refused with one
line naming the fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from optics.atomic import atomic_write_json
from recon.errors import ConfigError, DataError

__all__ = ["MANIFEST_NAME", "SCHEMA", "STATES", "Manifest", "ShotState"]

MANIFEST_NAME = "manifest.json"
SCHEMA = "recon.campaign/1"
STATES = ("pending", "running", "done", "failed")


@dataclass
class ShotState:
    """One shot's entry in the manifest."""

    name: str
    run: str
    state: str = "pending"
    attempts: int = 0
    reason: str = ""
    worker: str = ""
    seconds: float = 0.0
    start: str = ""


def _shot(item, where: str) -> ShotState:
    if not isinstance(item, dict):
        raise DataError(f"{where}: a shot entry is not a table")
    kinds = {
        "name": str,
        "run": str,
        "state": str,
        "attempts": int,
        "reason": str,
        "worker": str,
        "seconds": (int, float),
    }
    for key, kind in kinds.items():
        value = item.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{where}: shot entry key {key!r} is missing or of the wrong type")
    if item["state"] not in STATES or item["attempts"] < 0 or not math.isfinite(item["seconds"]):
        raise DataError(
            f"{where}: shot {item['name']!r} has state {item['state']!r} / attempts "
            f"{item['attempts']} / seconds {item['seconds']}"
        )
    start = item.get("start", "")
    if not isinstance(start, str):
        raise DataError(f"{where}: shot entry key 'start' is not a string")
    return ShotState(**{key: item[key] for key in kinds}, start=start)


class Manifest:
    """The manifest of the campaign directory ``root``.

    Args:
        root: the campaign directory.
        settings: what the shots are fitted with (JSON-serialisable): a campaign is only continued
            with the same settings.
        shots: (name, run directory) of every shot, in order.
    """

    def __init__(self, root: Path, settings: dict, shots: list[tuple[str, str]]):
        self.root, self.path = Path(root), Path(root) / MANIFEST_NAME
        self.settings = settings
        self.shots = {name: ShotState(name, run) for name, run in shots}

    @classmethod
    def open(cls, root: Path, settings: dict, shots: list[tuple[str, str]]) -> Manifest:
        """The manifest of ``root``: read and continued if it exists (same settings), else new.

        Shots not yet in it are added as pending, interrupted (``running``) ones become pending.

        Raises:
            DataError: a damaged manifest.
            ConfigError: a manifest written with other settings.
        """
        manifest = cls(root, settings, shots)
        if not manifest.path.exists():
            return manifest
        where = str(manifest.path)
        try:
            data = json.loads(manifest.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise DataError(
                f"{where} is not readable JSON ({err}); remove it (the shots' outputs stay) "
                "to start the campaign's bookkeeping afresh"
            ) from None
        if not (
            isinstance(data, dict) and data.get("schema") == SCHEMA and isinstance(data.get("shots"), list)
        ):
            raise DataError(f"{where} is not a {SCHEMA} manifest; choose another --out")
        if data.get("settings") != json.loads(json.dumps(settings)):
            raise ConfigError(
                f"batch: {root} was fitted with other settings ({data.get('settings')}); "
                "rerun with the same ones, or choose another --out"
            )
        old = {}
        for item in data["shots"]:
            entry = _shot(item, where)
            if entry.state == "running":
                entry.state = "pending"
            old[entry.name] = entry
        for name, entry in manifest.shots.items():
            if name in old:
                kept = old.pop(name)
                kept.run = entry.run
                manifest.shots[name] = kept
        manifest.shots.update(old)  # shots no longer in the source keep their entries
        return manifest

    def names(self, *states: str) -> list[str]:
        """The shots in any of ``states``, in order."""
        return [name for name, entry in self.shots.items() if entry.state in states]

    def counts(self) -> dict[str, int]:
        """Shots per state."""
        out = dict.fromkeys(STATES, 0)
        for entry in self.shots.values():
            out[entry.state] += 1
        return out

    def update(self, name: str, **changes) -> None:
        """Change a shot's entry and save the manifest."""
        entry = self.shots[name]
        for key, value in changes.items():
            setattr(entry, key, value)
        if entry.state not in STATES:
            raise ValueError(f"Manifest.update: state must be one of {STATES}, got {entry.state!r}")
        self.save()

    def save(self) -> None:
        """Write the manifest atomically."""
        atomic_write_json(
            self.path,
            {
                "schema": SCHEMA,
                "settings": self.settings,
                "shots": [asdict(entry) for entry in self.shots.values()],
            },
        )
