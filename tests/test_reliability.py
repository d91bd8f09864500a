"""Interruption, resume, numerics and memory: a killed or failing fit never loses or corrupts results.

The kill tests run ``python -m recon.cli fit`` as a subprocess on the micro run (one 27×27 view,
a small hash grid) and signal it once its first checkpoints exist.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from optics.atomic import atomic_path, atomic_write_text, check_writable, remove_stale_temporaries
from recon.cli import app
from recon.errors import FitError, OutputError
from recon.fitting.checkpoint import FitState, read_checkpoint, save_checkpoint
from recon.fitting.config import FitConfig, field_factory, load_fit_config
from recon.fitting.data import FitData, ViewData, load_fit_data
from recon.fitting.loop import run_fit
from recon.fitting.memory import is_out_of_memory, smaller_batch
from recon.io.volume import read_volume
from tests.conftest import slow
from tests.micro import FIT_TOML, make_micro_case

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


class _Log:
    def __init__(self):
        self.lines = []

    def log(self, text):
        self.lines.append(text)

    def start(self, *args):
        pass

    def update(self, *args):
        pass

    def stop(self):
        pass


def test_fit_halves_the_batch_on_out_of_memory_and_goes_on(micro, tmp_path):
    data, _, _ = load_fit_data(micro["run"])
    cfg = load_fit_config(micro["cfg"], steps=6, device="cpu")
    cfg.batch_pixels = 512
    made = []

    def make_field(cfg, lo, hi, mean, device):
        made.append(_SmallMemoryField(field_factory(cfg, lo, hi, mean, device)))
        return made[-1]

    log = _Log()
    result = run_fit(data, cfg, tmp_path, make_field=make_field, progress=log)
    state = result["state"]
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
    """What SIGKILL during torch.save leaves: the old checkpoint, intact, plus at most a hidden temporary."""
    path = tmp_path / "checkpoint.pt"
    field, optim, gen = _saved_checkpoint(path, 3, 10)
    good = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f):
        real_save(obj, f)
        Path(f).write_bytes(Path(f).read_bytes()[:100])  # half-written …
        raise KeyboardInterrupt  # … when the process is stopped

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, field, optim, gen, FitConfig(), FitState(step=20))
    assert path.read_bytes() == good and read_checkpoint(path)["state"]["step"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
