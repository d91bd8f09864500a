"""Simulated campaigns: many shots of one cloud that drifts and fluctuates, each with its truth.

A campaign of N shots (``recon simulate --campaign N``) is N simulated runs of the same phantom
through the same instrument. From shot to shot the cloud's centre takes a Gaussian random walk
(``drift_um`` per axis and shot, starting at the phantom's own place) and its atom number
fluctuates independently by ``atom_spread`` (relative sd, at least 1 % of the nominal kept), as a
launched cloud does from one launch to the next. Shot i is simulated with seed ``seed + i``; the
walk is drawn from ``seed`` alone, so the truth of a campaign is reproducible from its seed.

The campaign directory holds ``shot_0000/ … shot_<N-1>/`` (runs as ``recon simulate`` writes
them, each with its truth.tif and phantom.json, which records the offset) and ``truth.csv``
(shot, atoms, offset x/y/z in mm). It is written into a temporary sibling directory and renamed
into place when every shot is done: an interrupted simulation leaves no half campaign.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from optics.atomic import atomic_write_text, check_writable
from optics.limits import check_number, check_seed
from recon.errors import ConfigError
from recon.simulation.simulate import simulate_run

__all__ = ["ATOM_SPREAD", "CAMPAIGN_MAX_SHOTS", "DRIFT_UM", "campaign_truth", "shot_name",
           "simulate_campaign"]

#: The random walk's step per axis and shot (sd), µm ...
DRIFT_UM = 20.0
#: ... and the atom number's relative shot-to-shot sd.
ATOM_SPREAD = 0.03
#: The most shots one call simulates.
CAMPAIGN_MAX_SHOTS = 100_000


def shot_name(index: int) -> str:
    """The directory name of shot ``index``: ``shot_0007``."""
    return f"shot_{index:04d}"


def campaign_truth(shots: int, *, atoms: float, seed: int, drift_um: float = DRIFT_UM,
                   atom_spread: float = ATOM_SPREAD) -> list[dict]:
    """Each shot's truth: ``{"shot", "atoms", "offset_mm"}``, a random walk from offset 0.

    Shot 0 sits at the phantom's place; shot i+1 is shot i moved by N(0, drift²) per axis. The
    atoms are ``atoms · (1 + atom_spread · z)``, z standard normal, clipped at 1 % of ``atoms``.
    """
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, drift_um * 1e-3, size=(shots, 3))
    steps[0] = 0.0
    walk = np.cumsum(steps, axis=0)
    counts = atoms * np.maximum(1.0 + atom_spread * rng.normal(size=shots), 0.01)
    return [{"shot": shot_name(i), "atoms": float(counts[i]), "offset_mm": [float(v) for v in walk[i]]}
            for i in range(shots)]


def _truth_csv(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["shot", "atoms", "offset_x_mm", "offset_y_mm", "offset_z_mm"])
    for row in rows:
        writer.writerow([row["shot"], f"{row['atoms']:.6g}", *(f"{v:.6f}" for v in row["offset_mm"])])
    return text.getvalue()


def simulate_campaign(system_path, phantom_name: str, out, shots: int, *, atoms: float = 1e6,
                      drift_um: float = DRIFT_UM, atom_spread: float = ATOM_SPREAD, seed: int = 0,
                      overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                      **simulate_options) -> dict:
    """Simulate ``shots`` runs of a drifting, fluctuating cloud into the campaign directory ``out``.

    Args:
        system_path: the instrument (system file).
        phantom_name: a registry phantom or a phantom file.
        out: the campaign directory to write (``shot_0000/`` … and ``truth.csv``).
        shots: how many shots (≥ 1).
        atoms: the nominal atom number.
        drift_um: the random walk's step per axis and shot, µm (≥ 0).
        atom_spread: the atom number's relative sd (≥ 0, < 1).
        seed: the walk's seed; shot i's noise uses ``seed + i``.
        overwrite: replace an existing ``out``.
        progress: called with (shots done, shots) after each shot.
        **simulate_options: passed to :func:`~recon.simulation.simulate.simulate_run`
            (photons_per_atom, frames, noise, samples, step_mm, …).

    Returns:
        ``{"shots", "out", "truth"}`` (truth: :func:`campaign_truth`'s rows).

    Raises:
        ConfigError: bad counts, drift or spread, an existing ``out`` without ``overwrite``, or
            any error of :func:`simulate_run` (reported before anything is written in ``out``).
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= CAMPAIGN_MAX_SHOTS:
        raise ConfigError(f"simulate: --campaign must be a whole number of shots in 1..{CAMPAIGN_MAX_SHOTS}, "
                          f"got {shots!r}")
    check_number(drift_um, "--drift-um", "simulate", low=0.0, high=1e4)
    check_number(atom_spread, "--atom-spread", "simulate", low=0.0, high=0.99)
    check_number(atoms, "--atoms", "simulate", low=0.0, high=1e15)
    check_seed(seed, "simulate")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"simulate: {out} exists; pass --overwrite or choose another --out")
    check_writable(out)
    truth = campaign_truth(shots, atoms=atoms, seed=seed, drift_um=drift_um, atom_spread=atom_spread)
    work = out.parent / f".{out.name}.partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        for i, row in enumerate(truth):
            simulate_run(system_path, phantom_name, work / row["shot"], atoms=row["atoms"],
                         seed=seed + i, offset_mm=row["offset_mm"], **simulate_options)
            if progress:
                progress(i + 1, shots)
        atomic_write_text(work / "truth.csv", _truth_csv(truth))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out.exists():  # the old campaign goes only once the new one is complete
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old)
    else:
        work.rename(out)
    return {"shots": shots, "out": str(out), "truth": truth}
