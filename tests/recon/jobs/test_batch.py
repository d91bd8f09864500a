"""`recon batch`: every shot fitted once, resumable after a killed driver, failures listed, not fatal."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recon.campaign.engines import ray_missing
from recon.errors import ConfigError, ReconError
from recon.fitting.outdir import OutputLock
from recon.jobs.batch import batch
from recon.simulation.campaign import simulate_campaign
from tests.micro import write_micro_system

ROOT = Path(__file__).resolve().parents[3]
SIM = {"samples": 2, "step_mm": 0.04, "truth_voxel_mm": 0.1}


def _calls(campaign: Path) -> list[str]:
    path = campaign.parent / f"{campaign.name}.calls"
    return path.read_text().split() if path.exists() else []


def quick_runner(*, run, out, config, settings, pool_cache, pause=0.0):
    """Stands in for a fit: writes metrics.json whole (by rename, as the fit writes its directory).

    A shot whose run holds ``fail`` fails; one holding ``die_once`` kills its worker the first time.
    """
    run, out = Path(run), Path(out)
    campaign = out.parent.parent
    with open(campaign.parent / f"{campaign.name}.calls", "a") as log:
        log.write(run.name + "\n")
    if (run / "die_once").exists() and not (run / "died").exists():
        (run / "died").write_text("")
        os._exit(3)
    if (run / "fail").exists():
        return {"ok": False, "reason": f"{run.name}: frames unreadable", "seconds": 0.0}
    time.sleep(pause)
    work = out.parent / f".{out.name}.partial"
    work.mkdir(parents=True, exist_ok=True)
    index = int(run.name.split("_")[-1])
    metrics = {"atoms": 1000.0 + index, "centroid_mm": [index, 0, 0], "width_mm": [1, 1, 1], "steps": 4,
               "converged": True}
    (work / "metrics.json").write_text(json.dumps(metrics))
    (work / "density.tif").write_text(settings.get("em_start", ""))  # where this "fit" started from
    if out.exists():  # as the fit does with overwrite=True
        shutil.rmtree(out)
    work.rename(out)
    return {"ok": True, "seconds": 0.01}


def slow_runner(**kwargs):
    return quick_runner(**kwargs, pause=1.5)


@pytest.fixture()
def shots(tmp_path):
    """Five tiny simulated shots."""
    system = write_micro_system(tmp_path / "micro.toml")
    simulate_campaign(system, "gaussian", tmp_path / "shots", 5, seed=2, **SIM)
    return tmp_path / "shots"


def _rows(campaign: Path) -> dict:
    with open(campaign / "results.csv", newline="") as f:
        return {row["shot"]: row for row in csv.DictReader(f)}


def test_every_shot_once_then_a_rerun_skips_them(shots, tmp_path):
    campaign = tmp_path / "campaign"
    outcome = batch(shots, out=campaign, runner=quick_runner, workers=2)
    assert (outcome["done"], outcome["failed"], outcome["pending"]) == (5, 0, 0)
    assert sorted(_calls(campaign)) == [f"shot_000{i}" for i in range(5)]
    rows = _rows(campaign)
    assert [rows[f"shot_000{i}"]["atoms"] for i in range(5)] == [str(1000 + i) for i in range(5)]
    assert "per-shot figures" in (campaign / "report.html").read_text()
    assert batch(shots, out=campaign, runner=quick_runner, workers=2)["done"] == 5
    assert len(_calls(campaign)) == 5  # nothing fitted twice


def test_a_warm_start_starts_each_shot_from_the_last_done_one_before_it(shots, tmp_path):
    campaign = tmp_path / "campaign"
    (shots / "shot_0002" / "fail").write_text("")
    assert batch(shots, out=campaign, runner=quick_runner, warm_start=True, retries=0)["failed"] == 1
    started = {name: (campaign / "shots" / name / "density.tif").read_text()
               for name in ("shot_0000", "shot_0001", "shot_0003", "shot_0004")}
    assert started == {"shot_0000": "", "shot_0001": str(campaign / "shots" / "shot_0000" / "density.tif"),
                       "shot_0003": str(campaign / "shots" / "shot_0001" / "density.tif"),  # 0002 failed
                       "shot_0004": str(campaign / "shots" / "shot_0003" / "density.tif")}
    manifest = {s["name"]: s for s in json.loads((campaign / "manifest.json").read_text())["shots"]}
    assert manifest["shot_0004"]["start"] == started["shot_0004"]
    with pytest.raises(ConfigError, match="fitted with other settings"):  # cold fits would mix in
        batch(shots, out=campaign, runner=quick_runner)


def test_a_bad_shot_fails_alone_with_its_reason_after_its_retries(shots, tmp_path):
    (shots / "shot_0002" / "fail").write_text("")
    campaign = tmp_path / "campaign"
    outcome = batch(shots, out=campaign, runner=quick_runner, retries=1)
    assert (outcome["done"], outcome["failed"]) == (4, 1)
    assert _calls(campaign).count("shot_0002") == 2
    row = _rows(campaign)["shot_0002"]
    assert row["state"] == "failed" and row["reason"] == "shot_0002: frames unreadable" and row["atoms"] == ""
    assert "shot_0002: frames unreadable" in (campaign / "report.html").read_text()
    (shots / "shot_0002" / "fail").unlink()  # fixed: the rerun fits it, and only it
    assert batch(shots, out=campaign, runner=quick_runner, retries=1)["done"] == 5
    assert _calls(campaign).count("shot_0002") == 3 and len(_calls(campaign)) == 7
    shutil.move(shots / "shot_0003", tmp_path / "elsewhere")  # gone from SHOTS: kept in the books, not fitted
    (tmp_path / "elsewhere" / "fail").write_text("")
    manifest = json.loads((campaign / "manifest.json").read_text())
    for entry in manifest["shots"]:  # even when the books say it is to be fitted, and where it lies
        if entry["name"] == "shot_0003":
            entry.update(state="failed", run=str(tmp_path / "elsewhere"))
    (campaign / "manifest.json").write_text(json.dumps(manifest))
    outcome = batch(shots, out=campaign, runner=quick_runner, retries=1)
    assert (outcome["done"], outcome["failed"]) == (4, 1) and len(_calls(campaign)) == 7


def test_a_worker_that_dies_is_retried(shots, tmp_path):
    (shots / "shot_0001" / "die_once").write_text("")
    campaign = tmp_path / "campaign"
    outcome = batch(shots, out=campaign, runner=quick_runner, workers=2)
    assert outcome["done"] == 5
    manifest = json.loads((campaign / "manifest.json").read_text())
    attempts = {s["name"]: s["attempts"] for s in manifest["shots"]}
    assert attempts["shot_0001"] == 2 and _calls(campaign).count("shot_0001") == 2


def test_a_killed_driver_loses_only_the_shot_in_flight(shots, tmp_path):
    campaign = tmp_path / "campaign"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from recon.jobs.batch import batch\nfrom tests.recon.jobs.test_batch import slow_runner\n"
            f"batch({str(shots)!r}, out={str(campaign)!r}, runner=slow_runner)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, cwd=tmp_path)
    deadline = time.time() + 120
    done = []
    while time.time() < deadline and len(done) < 2:
        time.sleep(0.2)
        try:
            done = [s["name"] for s in json.loads((campaign / "manifest.json").read_text())["shots"]
                    if s["state"] == "done"]
        except (OSError, ValueError):
            pass
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert len(done) >= 2, "the driver finished no shot in time"
    before = _calls(campaign)
    assert batch(shots, out=campaign, runner=quick_runner)["done"] == 5
    after = _calls(campaign)
    for name in done:
        assert after.count(name) == 1, name  # finished before the kill: not fitted again
    assert sorted(set(after)) == [f"shot_000{i}" for i in range(5)]
    assert len(after) - len(before) <= 5 - len(done)


def test_a_terminated_driver_books_its_shots_and_returns_at_once(shots, tmp_path):
    campaign = tmp_path / "campaign"
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from recon.jobs.batch import batch\nfrom tests.recon.jobs.test_batch import slow_runner\n"
            f"batch({str(shots)!r}, out={str(campaign)!r}, runner=slow_runner)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and "shot_0000" not in _calls(campaign):
        time.sleep(0.1)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode != 0 and "rerunning the same command continues the campaign" in stderr
    states = [s["state"] for s in json.loads((campaign / "manifest.json").read_text())["shots"]]
    assert "running" not in states and states.count("done") < 5
    assert len(_rows(campaign)) == 5  # results.csv and the report are written on the way out
    assert batch(shots, out=campaign, runner=quick_runner)["done"] == 5


def test_a_shot_s_failure_comes_back_as_one_line(monkeypatch):
    import recon.jobs.batch as batch_job

    for error, reason in ((ConfigError("fit: bad key\nmore"), "fit: bad key"),
                          (RuntimeError("boom\ntraceback"), "RuntimeError: boom"),
                          (MemoryError(), "MemoryError")):
        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(batch_job, "fit", fail)
        result = batch_job.fit_shot(run="r", out="o", config=None, settings={}, pool_cache=None)
        assert result["ok"] is False and result["reason"] == reason and result["seconds"] >= 0


def test_one_driver_per_campaign_and_bad_options_are_refused(shots, tmp_path):
    campaign = tmp_path / "campaign"
    with OutputLock(campaign, what="batch"), pytest.raises(ReconError, match="another recon process"):
        batch(shots, out=campaign, runner=quick_runner)
    for options, match in (({"workers": 0}, "--workers"), ({"retries": -1}, "--retries"),
                           ({"engine": "spark"}, "--engine must be one of"),
                           ({"address": "10.0.0.1:6379"}, "--address only applies with --engine ray"),
                           ({"gpus_per_fit": 1.0}, "--gpus-per-fit only applies"),
                           ({"steps": -5}, "steps")):
        with pytest.raises(ConfigError, match=match):
            batch(shots, out=tmp_path / "other", runner=quick_runner, **options)
    assert not (tmp_path / "other" / "manifest.json").exists()
    batch(shots, out=campaign, runner=quick_runner)
    with pytest.raises(ConfigError, match="fitted with other settings"):
        batch(shots, out=campaign, runner=quick_runner, seed=9)


@pytest.mark.slow
def test_the_cli_fits_real_shots_and_lists_a_corrupt_one(tmp_path):
    system = write_micro_system(tmp_path / "micro.toml")
    shots = tmp_path / "shots"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recon = [sys.executable, "-m", "recon.cli"]
    made = subprocess.run([*recon, "simulate", "--system", str(system), "--phantom", "gaussian",
                           "--campaign", "3", "--out", str(shots), "--seed", "4", "--samples", "2",
                           "--step-mm", "0.04", "--truth-voxel-mm", "0.1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert made.returncode == 0 and "3 shots" in made.stdout, made.stderr
    frames = next((shots / "shot_0001" / "views").glob("*.tif"))
    frames.write_bytes(frames.read_bytes()[:200])  # a truncated TIFF
    proc = subprocess.run([*recon, "batch", str(shots), "--out", str(tmp_path / "c"), "--retries", "0",
                           "--workers", "2", "--warm-start"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "shot_0001 FAILED after 1 attempt(s)" in proc.stdout
    rows = _rows(tmp_path / "c")
    failed = rows["shot_0001"]
    assert failed["state"] == "failed" and ".tif" in failed["reason"] and failed["atoms"] == "", failed
    for name in ("shot_0000", "shot_0002"):
        row = rows[name]
        assert row["state"] == "done" and row["converged"] == "true" and float(row["atoms"]) > 0
        assert (tmp_path / "c" / "shots" / name / "density.tif").exists()
    cold = rows["shot_0000"]  # (the micro instrument's one view along z leaves z and a warm start unsure)
    assert abs(float(cold["atoms"]) / float(cold["truth_atoms"]) - 1) < 0.25
    assert abs(float(cold["centroid_x_mm"]) - float(cold["truth_centroid_x_mm"])) < 0.02
    settings = json.loads((tmp_path / "c" / "shots" / "shot_0002" / "config.json").read_text())
    assert settings["fit"]["em_start"] == str(tmp_path / "c" / "shots" / "shot_0000" / "density.tif")


@pytest.mark.slow
@pytest.mark.skipif(ray_missing() is not None, reason=f"the ray engine: {ray_missing()}")
def test_ray_gives_the_local_engines_results_and_retries_a_dead_worker(tmp_path):
    system = write_micro_system(tmp_path / "micro.toml")
    shots = tmp_path / "shots"
    simulate_campaign(system, "gaussian", shots, 2, seed=6, **SIM)
    local = batch(shots, out=tmp_path / "local", workers=1, pool_cache=tmp_path / "cache")
    remote = batch(shots, out=tmp_path / "ray", engine="ray", workers=1, pool_cache=tmp_path / "cache")
    assert local["done"] == remote["done"] == 2
    figures = ("atoms", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "width_x_mm", "steps")
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    for name in a:
        assert [a[name][k] for k in figures] == [b[name][k] for k in figures]
    (shots / "shot_0000" / "die_once").write_text("")
    outcome = batch(shots, out=tmp_path / "ray2", engine="ray", workers=1, runner=quick_runner)
    assert outcome["done"] == 2 and _calls(tmp_path / "ray2").count("shot_0000") == 2
