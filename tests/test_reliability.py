"""Interruption, resume, numerics and memory: a killed or failing fit never loses or corrupts results.

The kill tests run ``python -m recon.cli fit`` as a subprocess on the micro run (one 27×27 view,
a small hash grid) and signal it once its first checkpoints exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tomli_w
import tomllib
import torch
from typer.testing import CliRunner

from optics.atomic import atomic_path, atomic_write_text, check_writable, remove_stale_temporaries
from recon.cli import app
from recon.errors import DataError, FitError, OutputError
from recon.fitting.checkpoint import FitState, read_checkpoint, save_checkpoint
from recon.fitting.config import FitConfig, field_factory, load_fit_config
from recon.fitting.data import FitData, ViewData, load_fit_data
from recon.fitting.loop import run_fit
from recon.fitting.memory import is_out_of_memory, smaller_batch
from recon.io.volume import read_volume
from recon.jobs.fit import unconverged_warning, worthless_result
from tests.conftest import slow
from tests.micro import FIT_TOML, LogLines, make_micro_case

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return make_micro_case(tmp_path_factory.mktemp("rel"))


def _fit_args(micro, out: Path, steps: int, *extra) -> list[str]:
    return ["fit", "--views", str(micro["run"]), "--out", str(out), "--device", "cpu", "--steps", str(steps),
            "--config", str(micro["cfg"]), "--quiet", *extra]


def _start(micro, out: Path, steps: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "recon.cli", *_fit_args(micro, out, steps)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen, ckpt: Path, step: int, timeout_s: float = 120.0) -> int:
    """Poll the checkpoint (safe: it is replaced atomically) until it holds ≥ ``step`` steps."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise AssertionError(f"fit ended before step {step}: {proc.communicate()}")
        if ckpt.is_file():
            done = read_checkpoint(ckpt)["state"]["step"]
            if done >= step:
                return done
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint in time")


def _partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


# ------------------------------------------------------------------------------------- atomic


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(ZeroDivisionError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        1 / 0  # noqa: B018 - a writer that dies mid-way
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_write_os_errors_become_output_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="file is a file, not a directory"):
        atomic_write_text(tmp_path / "file" / "a.txt", "x")
    with pytest.raises(OutputError, match="a.txt"), atomic_path(tmp_path / "a.txt"):
        raise OSError(28, "No space left on device")
    with pytest.raises(OutputError, match="file is a file, not a directory"):
        check_writable(tmp_path / "file" / "deeper" / "out")
    check_writable(tmp_path / "new" / "deeper" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created, nothing left


def test_remove_stale_temporaries_only_touches_ours(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "checkpoint.pt").write_bytes(b"whole")
    (tmp_path / "notes.tmp.txt").write_text("user file")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".checkpoint.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "notes.tmp.txt"]


# --------------------------------------------------------------------------------- kill, resume


@slow
def test_sigkill_then_resume_equals_an_uninterrupted_fit(micro, tmp_path):
    steps = 50
    ref = tmp_path / "ref"
    res = runner.invoke(app, _fit_args(micro, ref, steps))
    assert res.exit_code == 0, res.output

    out = tmp_path / "out"
    proc = _start(micro, out, steps)
    done = _wait_for_step(proc, _partial(out) / "checkpoint.pt", 20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # a killed fit leaves no half-filled output directory
    state = read_checkpoint(_partial(out) / "checkpoint.pt")["state"]  # the checkpoint is complete
    assert done <= state["step"] < steps

    res = runner.invoke(app, _fit_args(micro, out, steps, "--resume"))
    assert res.exit_code == 0, res.output
    assert out.is_dir() and not _partial(out).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no stale temporaries

    a, b = read_checkpoint(ref / "checkpoint.pt"), read_checkpoint(out / "checkpoint.pt")
    assert a["state"]["step"] == b["state"]["step"] == steps
    np.testing.assert_allclose(b["state"]["losses"], a["state"]["losses"], rtol=1e-5)
    for key, value in a["field"].items():
        torch.testing.assert_close(b["field"][key], value, rtol=1e-5, atol=1e-6)
    da, db = read_volume(ref / "density.tif").data, read_volume(out / "density.tif").data
    np.testing.assert_allclose(db, da, rtol=1e-4, atol=1e-4 * float(np.abs(da).max()))
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert math.isclose(ma["final_loss"], mb["final_loss"], rel_tol=1e-5)
    assert math.isclose(ma["atoms"], mb["atoms"], rel_tol=1e-4)


@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_and_sigterm_save_a_loadable_checkpoint(micro, tmp_path, sig):
    out = tmp_path / "out"
    proc = _start(micro, out, 2000)
    _wait_for_step(proc, _partial(out) / "checkpoint.pt", 10)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr  # 130 for SIGINT, 143 for SIGTERM, as shells report
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: fit stopped at step ") and "--resume" in last, stderr
    assert "Traceback" not in stderr
    step = int(last.split("at step ")[1].split("/")[0])
    payload = read_checkpoint(_partial(out) / "checkpoint.pt")
    assert payload["state"]["step"] == step >= 10
    assert all(torch.isfinite(v).all() for v in payload["field"].values())
    assert not out.exists()


# ----------------------------------------------------------------------------------- numerics


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(micro, tmp_path):
    """Resuming a sane fit with an absurd learning rate makes the loss NaN: the fit stops with one
    line, the checkpoint and outputs of the last good state stay as they were, and resuming with a
    sane rate finishes."""
    out = tmp_path / "out"
    res = runner.invoke(app, _fit_args(micro, out, 10))
    assert res.exit_code == 0, res.output
    good = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "density.tif", "metrics.json")}
    wild = tmp_path / "wild.toml"
    wild.write_text(FIT_TOML.replace("[field_options]", "lr = 1e30\nlr_final = 1e30\n[field_options]"))
    args = ["fit", "--views", str(micro["run"]), "--out", str(out), "--device", "cpu", "--steps", "20",
            "--quiet", "--resume"]
    res = runner.invoke(app, [*args, "--config", str(wild)])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: fit: the loss became nan at step 1"), line
    assert "the last good checkpoint (step 10)" in line and "Lower lr (now 1e+30" in line, line
    assert "Traceback" not in res.output
    for name, content in good.items():
        assert (out / name).read_bytes() == content, name  # nothing overwritten with garbage
    res = runner.invoke(app, [*args, "--config", str(micro["cfg"])])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 20 and math.isfinite(metrics["final_loss"])


def test_nan_before_the_first_checkpoint_says_so(micro, tmp_path):
    wild = tmp_path / "wild.toml"
    wild.write_text(FIT_TOML.replace("[field_options]", "lr = 1e30\nlr_final = 1e30\n[field_options]"))
    out = tmp_path / "out"
    res = runner.invoke(app, ["fit", "--views", str(micro["run"]), "--out", str(out), "--device", "cpu",
                              "--steps", "40", "--quiet", "--config", str(wild)])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert "the loss became nan" in line and "no checkpoint was written yet" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wild.toml"]  # nothing left behind


def _saved_checkpoint(path: Path, width: int, step: int):
    """A small linear field, its optimiser and generator, saved as a checkpoint at ``step``."""
    field = torch.nn.Linear(width, width - 1)
    optim = torch.optim.Adam(field.parameters())
    gen = torch.Generator().manual_seed(0)
    save_checkpoint(path, field, optim, gen, FitConfig(), FitState(step=step))
    return field, optim, gen


def test_save_checkpoint_refuses_non_finite_parameters(tmp_path):
    path = tmp_path / "checkpoint.pt"
    field, optim, gen = _saved_checkpoint(path, 2, 5)
    good = path.read_bytes()
    with torch.no_grad():
        field.weight[0, 0] = float("nan")
    with pytest.raises(FitError, match="NaN or inf by step 6; not overwriting"):
        save_checkpoint(path, field, optim, gen, FitConfig(), FitState(step=6))
    assert path.read_bytes() == good


def _micro_data(counts, mask):
    from optics.system import system_from_dict
    from tests.micro import micro_system_dict

    system = system_from_dict(micro_system_dict())
    return FitData(system, (ViewData("direct", 0, (987, 737, 27, 27), counts, mask),), 200.0)


def test_empty_data_is_a_clear_error(tmp_path):
    ones = torch.ones(1, 27, 27)
    with pytest.raises(FitError, match="no usable pixels"):
        nothing = torch.zeros(1, 27, 27, dtype=torch.bool)
        run_fit(_micro_data(ones, nothing), FitConfig(device="cpu"), tmp_path, make_field=field_factory)
    with pytest.raises(FitError, match="every usable pixel is zero"):
        run_fit(_micro_data(0 * ones, ones.bool()), FitConfig(device="cpu"), tmp_path,
                make_field=field_factory)
    assert list(tmp_path.iterdir()) == []


def test_nan_pixels_are_masked_not_fatal(micro, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(micro["run"], run)
    frames = tifffile.imread(run / "views" / "direct.tif").astype(np.float32).reshape(1, 27, 27)
    frames[0, 5, 7] = np.nan
    tifffile.imwrite(run / "views" / "direct.tif", frames)
    data, _, _ = load_fit_data(run)
    view = data.views[0]
    assert not bool(view.mask[0, 5, 7]) and float(view.electrons[0, 5, 7]) == 0.0
    assert int(view.mask.sum()) == 27 * 27 - 1


# ------------------------------------------------------------------------------------- memory


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 8 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_smaller_batch_halves_warns_and_gives_up_at_one_pixel():
    warnings = []
    assert smaller_batch(torch.OutOfMemoryError("CUDA out of memory"), 2048, warn=warnings.append) == 1024
    assert smaller_batch(torch.OutOfMemoryError("x"), 3, warn=warnings.append) == 1
    assert len(warnings) == 2 and "2048 pixels per step; continuing with 1024" in warnings[0]
    with pytest.raises(FitError, match="even with 1 pixel"):
        smaller_batch(torch.OutOfMemoryError("x"), 1)
    err = RuntimeError("not memory")
    with pytest.raises(RuntimeError, match="not memory"):
        smaller_batch(err, 64)


class _SmallMemoryField(torch.nn.Module):
    """A field on a device that fits a third of the first batch: larger calls raise a (fake) CUDA OOM."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.limit, self.failures = inner, None, 0

    def forward(self, pts):
        if self.limit is None:
            self.limit = pts.shape[0] // 3
        if pts.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError(f"CUDA out of memory (fake): {pts.shape[0]} points")
        return self.inner(pts)


def test_fit_halves_the_batch_on_out_of_memory_and_goes_on(micro, tmp_path):
    data, _, _ = load_fit_data(micro["run"])
    cfg = load_fit_config(micro["cfg"], steps=6, device="cpu")
    cfg.batch_pixels = 512
    made = []

    def make_field(cfg, lo, hi, mean, device):
        made.append(_SmallMemoryField(field_factory(cfg, lo, hi, mean, device)))
        return made[-1]

    log = LogLines()
    result = run_fit(data, cfg, tmp_path, make_field=make_field, progress=log)
    state = result.state
    assert state.step == 6 and len(state.losses) == 6 and all(math.isfinite(x) for x in state.losses)
    assert state.batch_pixels == 128 and made[0].failures == 2  # 512 → 256 → 128
    warnings = [x for x in log.lines if x.startswith("warning: out of memory")]
    assert len(warnings) == 2 and "with 512 pixels per step; continuing with 256" in warnings[0]
    assert read_checkpoint(tmp_path / "checkpoint.pt")["state"]["batch_pixels"] == 128  # kept on resume


def test_fsc_outputs_under_a_file_are_one_line_errors(tmp_path):
    """`recon fsc --out` (library side): an output directory that cannot be made is an OutputError."""
    from recon.analysis.resolution import compare_volumes
    from recon.io.volume import Volume
    from recon.reporting.fsc_files import write_fsc_outputs

    rng = np.random.default_rng(0)
    a = Volume(rng.random((16, 16, 16)).astype(np.float32), (0.0,) * 3, (0.05,) * 3)
    b = Volume(a.data + 0.1 * rng.random((16, 16, 16)).astype(np.float32), (0.0,) * 3, (0.05,) * 3)
    result = compare_volumes(a, b, threshold=0.143, directional=False)
    (tmp_path / "blocker").write_text("a regular file")
    with pytest.raises(OutputError, match="blocker is a file, not a directory"):
        write_fsc_outputs(result, tmp_path / "blocker" / "fsc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_a_checkpoint_write_that_dies_midway_keeps_the_previous_one(tmp_path, monkeypatch):
    """What SIGKILL while the checkpoint is written leaves: the old one, intact, and no temporary."""
    path = tmp_path / "checkpoint.pt"
    field, optim, gen = _saved_checkpoint(path, 3, 10)
    good = path.read_bytes()
    real_write = Path.write_bytes

    def dying_write(self, data):
        real_write(self, data[:100])  # half-written …
        raise KeyboardInterrupt  # … when the process is stopped

    monkeypatch.setattr(Path, "write_bytes", dying_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, field, optim, gen, FitConfig(), FitState(step=20))
    assert path.read_bytes() == good and read_checkpoint(path)["state"]["step"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ---------------------------------------------------------------------------- files from anyone


class _Payload:
    """Unpickling this runs ``Path(mark).touch()``: what a tampered file would do."""

    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return (Path.touch, (Path(self.mark),))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_tampered_checkpoint_never_runs_its_payload(micro, tmp_path, writer):
    mark, out = tmp_path / "PAYLOAD_RAN", tmp_path / "out"
    payload = {"format": "recon.checkpoint/1", "field": _Payload(mark), "optimizer": {}, "generator": None,
               "config": {"steps": 5}, "state": {"step": 3}}
    for where in (out, _partial(out)):
        where.mkdir(parents=True)
        if writer == "torch.save":
            torch.save(payload, where / "checkpoint.pt")
        else:
            (where / "checkpoint.pt").write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError, match="nothing in it was run"):
        read_checkpoint(out / "checkpoint.pt")
    res = runner.invoke(app, _fit_args(micro, out, 5, "--resume"))
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1].startswith("error: checkpoint ")
    assert "nothing in it was run" in res.output and "Traceback" not in res.output
    assert not mark.exists()  # the payload never ran, from either file


# ----------------------------------------------------------------------------- one owner of OUT


@slow
def test_a_second_fit_into_the_same_out_is_refused_while_the_first_runs(micro, tmp_path):
    out = tmp_path / "out"
    proc = _start(micro, out, 300)
    _wait_for_step(proc, _partial(out) / "checkpoint.pt", 10)
    res = runner.invoke(app, _fit_args(micro, out, 20, "--overwrite"))
    assert res.exit_code == 2, res.output
    assert f"is being written by another recon process (pid {proc.pid})" in res.output.splitlines()[-1]
    fsc = runner.invoke(app, ["fsc", str(out), "--truth", str(micro["run"] / "truth.tif")])
    assert fsc.exit_code == 2, fsc.output  # nor may `recon fsc` write into it meanwhile
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert {"checkpoint.pt", "config.json", "metrics.json", "density.tif"} <= {p.name for p in out.iterdir()}
    assert read_checkpoint(out / "checkpoint.pt")["state"]["step"] == 300  # the first fit's, whole
    assert not (tmp_path / ".out.lock").exists() and not _partial(out).exists()


def test_an_interrupted_fit_is_not_replaced_without_overwrite(micro, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert runner.invoke(app, _fit_args(micro, ref, 20)).exit_code == 0
    _partial(out).mkdir()
    shutil.copy(ref / "checkpoint.pt", _partial(out) / "checkpoint.pt")  # what a fit killed at step 20 left
    kept = (_partial(out) / "checkpoint.pt").read_bytes()
    res = runner.invoke(app, _fit_args(micro, out, 5))
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1] == (
        f"error: fit: {out} holds an interrupted fit at step 20; pass --resume to continue or --overwrite to "
        "start again")
    assert (_partial(out) / "checkpoint.pt").read_bytes() == kept and not out.exists()
    res = runner.invoke(app, _fit_args(micro, out, 5, "--overwrite"))
    assert res.exit_code == 0, res.output
    assert read_checkpoint(out / "checkpoint.pt")["state"]["step"] == 5 and not _partial(out).exists()


@contextlib.contextmanager
def _tmpfs(where: Path, size_kb: int):
    """A tmpfs of ``size_kb`` kB mounted at ``where`` (skips where mounting is not allowed)."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("size_kb", [16, 200, 400])
def test_a_full_disk_is_one_line_and_keeps_the_previous_outputs(micro, tmp_path, size_kb):
    with _tmpfs(tmp_path / "disk", size_kb) as disk:
        out = disk / "out"
        out.mkdir()
        (out / "result.txt").write_text("the previous fit")
        res = runner.invoke(app, _fit_args(micro, out, 20, "--overwrite"))
        assert res.exit_code == 2, res.output
        last = res.output.strip().splitlines()[-1]
        assert last.startswith("error: cannot write ") and "No space left on device" in last, res.output
        assert "Traceback" not in res.output
        assert [p.name for p in out.iterdir()] == ["result.txt"]
        assert (out / "result.txt").read_text() == "the previous fit"
        left = _partial(out)
        if left.exists():  # only a resumable fit is kept, and the message says how to go on
            read_checkpoint(left / "checkpoint.pt")
            assert "--resume" in last
        assert not (disk / ".out.lock").exists()


# ----------------------------------------------------------------------- results that mean nothing


def test_a_worthless_result_is_an_error_not_a_success(micro, tmp_path):
    cfg = tmp_path / "fit.toml"
    cfg.write_text(FIT_TOML.replace("batch_pixels = 64", "batch_pixels = 64\nsparsity_weight = 1000000.0"))
    out = tmp_path / "out"
    args = _fit_args(micro, out, 40)
    args[args.index("--config") + 1] = str(cfg)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "the result explains none of the signal" in res.output.splitlines()[-1]
    assert not out.exists() and not _partial(out).exists()


def test_an_absurd_learning_rate_ends_in_an_error_not_a_success(micro, tmp_path):
    cfg = tmp_path / "fit.toml"
    cfg.write_text(FIT_TOML.replace("batch_pixels = 64", "batch_pixels = 64\nlr = 1e6"))
    out = tmp_path / "out"
    res = runner.invoke(app, ["fit", "--views", str(micro["run"]), "--out", str(out), "--steps", "60",
                              "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    # Whichever comes first: the loss turns NaN in a step, or the field ends non-finite.
    diverged = line.startswith("error: fit: the loss became nan") and "Lower lr (now 1000000.0" in line
    ends = ("error: fit: the result is not finite (atoms 0",
            "error: fit: the fitted density is zero everywhere")
    worthless = "lr (1e+06)" in line and line.startswith(ends)
    assert diverged or worthless, line
    assert not out.exists() and not _partial(out).exists()


def test_worthless_results_are_named():
    good = {"atoms": 1e6, "centroid_mm": [0.0, 0.0, 0.0], "width_mm": [0.5] * 3,
            "views": [{"pixels": 1000, "residual_rms": 1.05, "flat_residual_rms": 30.0, "measured_e": 1e5,
                       "predicted_e": 1e5}]}
    assert worthless_result(good) is None
    assert "not finite" in worthless_result({**good, "centroid_mm": [math.nan] * 3})
    assert "zero everywhere" in worthless_result({**good, "atoms": 0.0})
    flat_is_better = {**good, "views": [{"pixels": 1000, "residual_rms": 40.0, "flat_residual_rms": 30.0,
                                         "measured_e": 1e5, "predicted_e": 3e3}]}
    assert "explains none of the signal" in worthless_result(flat_is_better)
    unconverged = {**good, "views": [{**flat_is_better["views"][0], "predicted_e": 9e4}]}
    assert worthless_result(unconverged) is None and "not converged" in unconverged_warning(unconverged)
    pure_noise = {**good, "views": [{**good["views"][0], "residual_rms": 1.01, "flat_residual_rms": 1.0,
                                     "predicted_e": 1e3}]}
    assert worthless_result(pure_noise) is None  # nothing to explain: a faint cloud is not an error


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_frames_below_their_dark_are_refused_before_fitting(micro, tmp_path):
    run = _copy_run(micro["run"], tmp_path / "run")
    frames = tifffile.imread(run / "views" / "direct.tif")
    tifffile.imwrite(run / "views" / "direct_dark.tif", np.full((1, *frames.shape[-2:]), frames.max() + 50,
                                                               dtype=frames.dtype))
    res = runner.invoke(app, ["fit", "--views", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert res.output.splitlines()[-1].startswith("error: fit: view 'direct': every usable pixel lies below "
                                                  "its dark")
    assert "traced view" not in res.output and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ numbers, checked on reading


@pytest.mark.parametrize("key, value", [
    ("cameras[0].lens.focal_length_mm", 1e308),
    ("volume.max_mm", [1e308, 0.6, 0.6]),
    ("cameras[0].sensor.pixel_pitch_um", 1e-300),
    ("cameras[0].pose.position_mm", [0.0, 0.0, 1e308]),
    ("mirrors[0].center_mm", [1e308, 0.0, 0.0]),
    ("volume.min_mm", [-5e4, -0.6, -0.6]),  # a 50 m box is not an instrument
])
def test_numbers_beyond_float32_or_physics_are_refused_where_read(micro, tmp_path, key, value):
    run = _copy_run(micro["run"], tmp_path / "run")
    data = tomllib.loads((run / "system.toml").read_text())
    if key.startswith("mirrors"):
        data["mirrors"] = [{"name": "m", "center_mm": [0.0, 0.0, 50.0], "normal": [0.0, 0.0, -1.0],
                            "shape": "circle", "radius_mm": 5.0, "reflectivity": 0.9}]
    node = data
    parts = key.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    (run / "system.toml").write_text(tomli_w.dumps(data))
    res = runner.invoke(app, ["fit", "--views", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    last = res.output.strip().splitlines()[-1]
    assert "system.toml" in last and f"key '{key}'" in last, last
    assert "traced" not in res.output


def test_a_photon_number_beyond_physics_is_refused_where_read(micro, tmp_path):
    run = _copy_run(micro["run"], tmp_path / "run")
    text = (run / "run.toml").read_text().replace("photons_per_atom = 200.0", "photons_per_atom = 1e308")
    (run / "run.toml").write_text(text)
    res = runner.invoke(app, ["fit", "--views", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "key 'photons_per_atom'" in res.output and "run.toml" in res.output


# ------------------------------------------------------------------------- checks before long work


@slow
def test_sigterm_while_tracing_says_so_and_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "recon.cli", "fit", "--views", str(ROOT / "data" / "run042"),
           "--out", str(out), "--steps", "5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # progress lines: tracing has begun once the first view is traced
        if line.startswith("traced view"):
            proc.send_signal(signal.SIGTERM)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == ("interrupted: fit stopped before its first step; nothing was "
                                               "kept (SIGTERM)")
    assert sorted(tmp_path.iterdir()) == []  # no OUT, no .OUT.partial, no lock file


@pytest.mark.parametrize("edit", ["mirror faces away", "no mirror at all"])
def test_a_view_that_cannot_see_the_box_is_refused_before_tracing(tmp_path, edit):
    run = _copy_run(ROOT / "data" / "run042", tmp_path / "run")
    data = tomllib.loads((run / "system.toml").read_text())
    if edit == "mirror faces away":
        data["mirrors"][3]["normal"] = [-v for v in data["mirrors"][3]["normal"]]
    else:
        del data["mirrors"]
    (run / "system.toml").write_text(tomli_w.dumps(data))
    t0 = time.perf_counter()
    res = runner.invoke(app, ["fit", "--views", str(run), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "sees the box through any mirror or directly" in res.output.splitlines()[-1]
    assert "traced view" not in res.output and time.perf_counter() - t0 < 60


def _hashes(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@slow
def test_concurrent_fits_fsc_and_mesh_leave_shared_inputs_untouched(micro, tmp_path):
    base = tmp_path / "base"
    assert runner.invoke(app, _fit_args(micro, base, 20)).exit_code == 0
    shared = [p for p in micro["run"].rglob("*") if p.is_file()] + [micro["cfg"], base / "density.tif"]
    before = _hashes(shared)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    commands = [[*_fit_args(micro, tmp_path / f"fit{i}", 30)] for i in range(3)]
    commands += [["fsc", str(base / "density.tif"), "--truth", str(micro["run"] / "truth.tif"), "--out",
                  str(tmp_path / "fsc")],
                 ["mesh", str(base / "density.tif"), "--out", str(tmp_path / "cloud.stl"),
                  "--level", "auto"],
                 ["inspect", str(micro["run"])]]
    procs = [subprocess.Popen([sys.executable, "-m", "recon.cli", *c], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    for cmd, proc in zip(commands, procs, strict=True):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (cmd, stderr)
    assert _hashes(shared) == before  # read-only inputs are never modified
    for i in range(3):
        assert read_checkpoint(tmp_path / f"fit{i}" / "checkpoint.pt")["state"]["step"] == 30
    assert (tmp_path / "fsc" / "fsc-truth" / "fsc.json").is_file() and (tmp_path / "cloud.stl").is_file()


def test_sigterm_between_the_halves_says_the_first_is_kept(tmp_path, tiny_run):
    out = tmp_path / "out"
    cfg = tmp_path / "fit.toml"
    cfg.write_text("pool_samples = 2\nvoxel_size_mm = 0.1\nsteps = 6\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "recon.cli", "fit", "--views", str(tiny_run), "--out", str(out),
           "--config", str(cfg), "--split-halves"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the second half begins: the first one is complete
        if line.startswith("half 2/2"):
            proc.send_signal(signal.SIGTERM)
            break
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert "--resume" in last and "nothing was kept" not in last
    kept = tmp_path / ".out.partial" / "half1" / "checkpoint.pt"
    assert kept.is_file()
    if "at step" not in last:  # the signal came before the second half's first step (as a rule)
        assert last.startswith("interrupted: fit stopped after half 1 of 2, which is complete in its")
        assert str(kept) in last
    res = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert (out / "half1.tif").is_file() and (out / "half2.tif").is_file()
