"""`recon batch` end to end: a campaign of shots → one fit per shot → results.csv and a campaign report.

:func:`batch` is the Python API of the command (``recon.batch``). Every shot (a run directory,
:func:`recon.campaign.shots.find_shots`) is fitted by :func:`fit_shot` — ``recon fit`` with the
campaign's settings — on an engine (:mod:`recon.campaign.engines`: local processes or Ray tasks),
into ``CAMPAIGN/shots/<name>/``. The manifest (:mod:`recon.campaign.manifest`) records each
shot's state after every change, so that:

* rerunning the same command skips the shots that are done and fits the rest (failed shots get
  a new round of attempts: a shot that was fixed is fitted, one that is still broken fails fast);
* a driver killed at any moment loses at most the shots in flight: a shot marked ``running``
  whose output directory is complete (the fit writes it whole, by rename, or not at all)
  finished before the kill and is taken as done, not fitted again;
* a failed shot (bad data, a worker that died) is tried ``retries`` more times, then listed with
  its one-line reason, and never stops the campaign;
* two drivers on one campaign directory are refused (an advisory lock, released with its process).

With more than one worker and the pool cache on, the first shot runs alone: it traces the
instrument into the cache (:mod:`recon.fitting.poolcache`), and the shots after it, through the
same instrument, read the traced pool instead of tracing it again each. With ``warm_start``,
each shot's EM starts from the density of the last earlier shot that is done (``em_start``,
:func:`recon.fitting.start.warm_grid`); the manifest records which.

At the end (also after an interruption) the driver writes ``results.csv`` (and
``results.parquet`` when pyarrow is installed) from the shots' metrics.json, and
``report.html``: the time series with their shot-noise limits, and the failed shots.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from recon.campaign.engines import check_engine, make_engine
from recon.campaign.manifest import Manifest
from recon.campaign.results import row_from_metrics, write_csv, write_parquet
from recon.campaign.shots import find_shots
from recon.errors import ConfigError, ReconError
from recon.fitting.config import load_fit_config
from recon.fitting.loop import StopOnSignals
from recon.fitting.outdir import OutputLock, read_json_table
from recon.jobs.fit import fit
from recon.reporting.campaign_report import write_campaign_report

__all__ = ["SHOTS_DIR", "BatchOutcome", "batch", "fit_shot", "shot_row"]

#: Where each shot's fit goes, inside the campaign directory.
SHOTS_DIR = "shots"


def fit_shot(*, run: str, out: str, config: str | None, settings: dict, pool_cache: str | None) -> dict:
    """Fit one shot (in a worker): ``{"ok", "seconds"}`` and ``reason`` when it failed.

    Every failure is caught and returned as one line (a campaign goes on past a bad shot).
    """
    start = time.perf_counter()
    try:
        fit(
            run,
            out=out,
            config=config,
            overwrite=True,
            pool_cache=pool_cache,
            command=f"recon batch (shot {Path(run).name})",
            **settings,
        )
    except Exception as err:  # noqa: BLE001 - a failure fails this shot, not the campaign
        text = str(err).strip()
        line = text.splitlines()[0] if text else ""
        name = type(err).__name__
        reason = line if isinstance(err, ReconError) and line else f"{name}: {line}" if line else name
        return {"ok": False, "reason": reason, "seconds": time.perf_counter() - start}
    return {"ok": True, "seconds": time.perf_counter() - start}


def _metrics(fit_dir: Path) -> dict:
    """A shot's metrics.json; {} when its fit is not complete (the fit writes it last, whole)."""
    return read_json_table(fit_dir / "metrics.json")


def shot_row(manifest: Manifest, name: str, campaign: Path) -> dict:
    """The results row of one shot: its manifest entry, and its metrics when it is done."""
    entry = manifest.shots[name]
    metrics = _metrics(campaign / SHOTS_DIR / name) if entry.state == "done" else {}
    row = row_from_metrics(metrics) if metrics else {}
    row.update(
        shot=name,
        state=entry.state,
        reason=entry.reason,
        worker=entry.worker,
        seconds=round(entry.seconds, 2),
    )
    return row


class BatchOutcome(dict):
    """What :func:`batch` did (a dict, so it prints and serialises as one).

    Keys: ``shots``, ``done``, ``failed``, ``pending``, ``out``, ``seconds``, ``fitted_now``,
    ``shots_per_hour``, ``engine``, ``workers``, ``files``.
    """


def _settings(config: Path | None, settings: dict, source: Path, warm_start: bool) -> dict:
    """What the campaign's fits depend on: the config file's content, the explicit settings, the source."""
    digest = hashlib.sha256(config.read_bytes()).hexdigest() if config is not None else None
    return {
        "config_sha256": digest,
        "settings": {k: v for k, v in sorted(settings.items()) if v is not None},
        "source": str(source.resolve()),
        "warm_start": warm_start,
    }


def _warm_start(manifest: Manifest, name: str, campaign: Path) -> str:
    """The density.tif of the last done shot before ``name`` in the campaign's order ("" if none)."""
    names = list(manifest.shots)
    for before in reversed(names[: names.index(name)]):
        density = campaign / SHOTS_DIR / before / "density.tif"
        if manifest.shots[before].state == "done" and density.is_file():
            return str(density)
    return ""


def batch(
    shots: str | os.PathLike,
    *,
    out: str | os.PathLike,
    engine: str = "local",
    address: str | None = None,
    workers: int = 1,
    threads: int = 0,
    gpus_per_fit: float = 0.0,
    config: str | os.PathLike | None = None,
    retries: int = 2,
    warm_start: bool = False,
    pool_cache: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    runner: Callable[..., dict] = fit_shot,
    **settings,
) -> BatchOutcome:
    """Fit every shot of a campaign and write ``out`` (``recon batch``).

    Args:
        shots: a folder of run directories, or a file listing them (one per line).
        out: the campaign directory (``shots/<name>/``, manifest.json, results.csv, report.html).
        engine: ``local`` (processes on this machine) or ``ray``.
        address: a running Ray cluster's address (``--engine ray``); None starts a private one.
        workers: shots fitted at once.
        threads: torch threads per fit; 0: this machine's cores shared among the local workers
            (one per Ray task).
        gpus_per_fit: GPUs each Ray task asks for.
        config: a fit TOML applied to every shot.
        retries: further attempts of a failed shot.
        warm_start: start each shot's EM from the density of the last shot before it that is done
            (``em_start``; with one worker, the shot just before), not from the data's Gaussian.
        pool_cache: the ray-pool cache directory (None: trace every shot).
        log: called with each progress line (None: silent).
        runner: the function that fits one shot (:func:`fit_shot`; tests give others).
        **settings: explicit :class:`~recon.fitting.config.FitConfig` settings for every shot.

    Raises:
        ReconError: bad options, no shots, a campaign fitted with other settings, or one that
            another driver is running.
    """
    say = log or (lambda _line: None)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
        raise ConfigError(f"batch: --workers must be a whole number in 1..4096, got {workers!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 1024:
        raise ConfigError(f"batch: --threads must be a whole number in 0..1024, got {threads!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise ConfigError(f"batch: --retries must be a whole number in 0..100, got {retries!r}")
    if not (
        isinstance(gpus_per_fit, (int, float)) and math.isfinite(gpus_per_fit) and 0 <= gpus_per_fit <= 64
    ):
        raise ConfigError(f"batch: --gpus-per-fit must be in 0..64, got {gpus_per_fit!r}")
    check_engine(engine, gpus=gpus_per_fit, address=address)
    config = Path(config) if config is not None else None
    load_fit_config(config, **settings)  # bad settings are refused before any shot runs
    source, campaign = Path(shots), Path(out)
    found = find_shots(source)
    if not threads:
        threads = max(1, (os.cpu_count() or 1) // workers) if engine == "local" else 1
    cache = str(pool_cache) if pool_cache is not None else None
    with OutputLock(campaign, what="batch"):
        campaign.mkdir(parents=True, exist_ok=True)
        manifest = Manifest.open(
            campaign, _settings(config, settings, source, warm_start), [(s.name, str(s.run)) for s in found]
        )
        listed = {s.name for s in found}  # a shot no longer in SHOTS keeps its entry but is not fitted
        for name in manifest.names("pending", "failed"):
            entry = manifest.shots[name]
            finished = bool(_metrics(campaign / SHOTS_DIR / name))
            if entry.attempts and entry.state == "pending" and finished:
                entry.state = "done"  # it finished before the driver was killed
            elif entry.state == "failed" and name in listed:
                entry.state, entry.attempts = "pending", 0
        manifest.save()
        todo = [name for name in manifest.names("pending") if name in listed]
        say(
            f"batch: {len(manifest.shots)} shots, {len(manifest.names('done'))} done already, "
            f"{len(todo)} to fit on {engine} with {workers} worker(s)"
        )
        start = time.perf_counter()
        fitted = 0
        try:
            with StopOnSignals("batch: interrupted; the shots in flight finish on their own, and rerunning "
                               "the same command continues the campaign"), make_engine(
                engine, runner, workers=workers, threads=threads, gpus=gpus_per_fit, address=address
            ) as runs:
                queue = list(todo)
                alone = workers > 1 and cache is not None and len(queue) > 1  # the first shot fills the cache

                def submit(name: str) -> None:
                    entry = manifest.shots[name]
                    origin = _warm_start(manifest, name, campaign) if warm_start else ""
                    manifest.update(name, state="running", attempts=entry.attempts + 1, start=origin)
                    runs.submit(
                        name,
                        {
                            "run": entry.run,
                            "out": str(campaign / SHOTS_DIR / name),
                            "config": str(config) if config is not None else None,
                            "settings": {**settings, "em_start": origin} if origin else settings,
                            "pool_cache": cache,
                        },
                    )

                while queue or runs.in_flight:
                    while queue and runs.in_flight < (1 if alone else runs.capacity):
                        submit(queue.pop(0))
                    for name, result in runs.wait():
                        alone = False
                        entry = manifest.shots[name]
                        seconds = float(result.get("seconds", 0.0) or 0.0)
                        worker = str(result.get("worker", ""))
                        reason = "" if result.get("ok") else str(result.get("reason", ""))
                        if result.get("ok"):
                            state, what = "done", f"done in {seconds:.0f} s"
                            fitted += 1
                        elif entry.attempts <= retries:
                            state = "pending"
                            what = f"failed (attempt {entry.attempts} of {retries + 1}, retried): {reason}"
                            queue.append(name)
                        else:
                            state, what = "failed", f"FAILED after {entry.attempts} attempt(s): {reason}"
                        manifest.update(name, state=state, reason=reason, seconds=seconds, worker=worker)
                        say(_progress_line(name, what, manifest, fitted, time.perf_counter() - start))
        finally:
            for name in manifest.names("running"):  # interrupted: these run again next time
                manifest.shots[name].state = "pending"
            manifest.save()
            outcome = _write_results(manifest, campaign, engine, workers, fitted, time.perf_counter() - start)
    say(
        f"batch: {outcome['done']} done, {outcome['failed']} failed, {outcome['pending']} pending; wrote "
        f"{campaign}/ (results.csv, report.html, manifest.json)"
    )
    return outcome


def _progress_line(name: str, what: str, manifest: Manifest, fitted: int, elapsed: float) -> str:
    counts = manifest.counts()
    rate = fitted / elapsed * 3600 if elapsed > 0 and fitted else 0.0
    left = counts["pending"] + counts["running"]
    eta = f", ETA {left / rate * 60:.0f} min" if rate > 0 and left else ""
    return (
        f"batch: {name} {what} ({counts['done']}/{len(manifest.shots)} done, {counts['failed']} failed, "
        f"{rate:.0f} shots/h{eta})"
    )


def _write_results(
    manifest: Manifest, campaign: Path, engine: str, workers: int, fitted: int, elapsed: float
) -> BatchOutcome:
    rows = [shot_row(manifest, name, campaign) for name in manifest.shots]
    files = [campaign / "results.csv", campaign / "report.html"]
    write_csv(files[0], rows)
    if write_parquet(campaign / "results.parquet", rows):
        files.append(campaign / "results.parquet")
    counts = manifest.counts()
    outcome = BatchOutcome(
        shots=len(rows),
        done=counts["done"],
        failed=counts["failed"],
        pending=counts["pending"] + counts["running"],
        out=str(campaign),
        seconds=round(elapsed, 2),
        fitted_now=fitted,
        shots_per_hour=round(fitted / elapsed * 3600, 1) if elapsed > 0 and fitted else 0.0,
        engine=engine,
        workers=workers,
        files=[str(f) for f in files],
    )
    write_campaign_report(files[1], rows, dict(outcome))
    return outcome
