"""The output directory of a fit: one owner at a time, a partial directory, renamed only when complete."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recon.errors import OutputError, ReconError
from recon.fitting.checkpoint import FitState, save_checkpoint
from recon.fitting.config import FitConfig
from recon.fitting.data import HALF_SEED_OFFSET
from recon.fitting.outdir import (
    OutputLock,
    discard_unless_resumable,
    finish_out_dir,
    interrupted_step,
    prepare_out_dir,
    resume_dir,
    saved_fit_settings,
)
from tests.conftest import slow

ROOT = Path(__file__).resolve().parents[3]


def _checkpoint(directory: Path, step: int, **settings) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    field = torch.nn.Linear(2, 1)
    path = directory / "checkpoint.pt"
    optim = torch.optim.Adam(field.parameters())
    save_checkpoint(path, field, optim, torch.Generator(), FitConfig(**settings), FitState(step=step))
    return path


def _partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------ OutputLock


def test_a_second_lock_is_refused_with_the_owners_pid_while_the_first_is_held(tmp_path):
    out = tmp_path / "out"
    with OutputLock(out, what="fsc") as first:
        assert first.path == tmp_path / ".out.lock"
        assert first.path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ReconError) as info, OutputLock(out):  # another open file description
            pass
        assert str(info.value) == (f"fit: {out} is being written by another recon process (pid "
                                   f"{os.getpid()}); wait for it to finish or choose another --out")
        assert first.path.read_text() == f"{os.getpid()}\n"  # the refused one changed nothing
    assert not first.path.exists()  # removed on exit
    with OutputLock(out):  # free again
        pass
    assert list(tmp_path.iterdir()) == []


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ZeroDivisionError), OutputLock(out):
        1 / 0  # noqa: B018
    assert not (tmp_path / ".out.lock").exists()
    with OutputLock(out):
        pass


@slow
def test_a_lock_held_by_another_process_names_it_and_goes_with_it(tmp_path):
    out = tmp_path / "out"
    code = ("import sys, time; from pathlib import Path; from recon.fitting.outdir import OutputLock\n"
            "with OutputLock(Path(sys.argv[1])):\n    print('locked', flush=True); sys.stdin.readline()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ReconError, match=f"another recon process \\(pid {proc.pid}\\)"), OutputLock(out):
            pass
    finally:
        proc.kill()  # killed, not exited: the kernel drops its lock, the file stays
        proc.wait(timeout=30)
    assert (tmp_path / ".out.lock").exists()
    with OutputLock(out) as lock:  # a stale file of a dead owner does not block
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_relative_out_without_parent_locks_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with OutputLock(Path("out")) as lock:
        assert lock.path == Path(".out.lock") and (tmp_path / ".out.lock").is_file()
        with pytest.raises(ReconError, match="being written"), OutputLock(tmp_path / "out"):
            pass  # the same directory, named absolutely
    assert list(tmp_path.iterdir()) == []


def test_a_lock_under_a_file_is_an_output_error(tmp_path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(OutputError, match="blocker is a file, not a directory"), \
            OutputLock(tmp_path / "blocker" / "out"):
        pass


def test_the_lock_makes_missing_parents(tmp_path):
    with OutputLock(tmp_path / "a" / "b" / "out") as lock:
        assert lock.path.parent.is_dir()


# ------------------------------------------------------------------------------ interrupted_step


def test_interrupted_step_reads_the_checkpoint_left_behind(tmp_path):
    assert interrupted_step(tmp_path) is None
    (tmp_path / "renders").mkdir()
    assert interrupted_step(tmp_path) is None
    _checkpoint(tmp_path / "half2", 4)
    assert interrupted_step(tmp_path) == 4
    _checkpoint(tmp_path / "half1", 9)
    assert interrupted_step(tmp_path) == 9  # half 1 before half 2
    _checkpoint(tmp_path, 31)
    assert interrupted_step(tmp_path) == 31  # a single fit before its halves


@pytest.mark.parametrize("raw", [b"", b"not a checkpoint", b"PK\x03\x04" + bytes(50)])
def test_an_unreadable_checkpoint_is_still_an_interrupted_fit(tmp_path, raw):
    (tmp_path / "checkpoint.pt").write_bytes(raw)
    assert interrupted_step(tmp_path) == -1


# ------------------------------------------------------------------------------ prepare_out_dir


def test_out_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.write_text("x")
    for resume in (False, True):
        with pytest.raises(ReconError, match="is a file, not a directory; choose another --out"):
            prepare_out_dir(out, overwrite=True, resume=resume)
    assert _tree(tmp_path) == ["out"]


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "density.tif").write_bytes(b"x")
    with pytest.raises(ReconError, match=f"--resume needs {out}/checkpoint.pt, which does not exist"):
        prepare_out_dir(out, overwrite=False, resume=True)
    assert _tree(tmp_path) == ["out", "out/density.tif"]


@pytest.mark.parametrize("make, kind", [(lambda p: p.mkdir(), "a directory"),
                                         (os.mkfifo, "a FIFO, socket or device")], ids=["dir", "fifo"])
def test_resume_says_what_stands_where_its_checkpoint_should_be(tmp_path, make, kind):
    out = tmp_path / "out"
    out.mkdir()
    make(out / "checkpoint.pt")
    with pytest.raises(ReconError) as info:
        prepare_out_dir(out, overwrite=False, resume=True)
    assert str(info.value) == (f"fit: --resume needs {out / 'checkpoint.pt'} to be a checkpoint file, and "
                               f"it is {kind}; move it away and run without --resume")


def test_resume_continues_in_place_and_clears_stale_temporaries(tmp_path):
    out = tmp_path / "out"
    _checkpoint(out / "half1", 5)
    (out / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"half-written")
    (out / "half1" / ".checkpoint.pt.efgh5678.tmp").write_bytes(b"half-written")
    (out / "notes.tmp").write_text("the user's")
    assert prepare_out_dir(out, overwrite=False, resume=True) == out
    assert _tree(out) == ["half1", "half1/checkpoint.pt", "notes.tmp"]


def test_an_interrupted_fit_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "out"
    _checkpoint(_partial(out), 17)
    with pytest.raises(ReconError) as info:
        prepare_out_dir(out, overwrite=False, resume=False)
    assert str(info.value) == (f"fit: {out} holds an interrupted fit at step 17; pass --resume to continue "
                               "or --overwrite to start again")
    (_partial(out) / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ReconError, match=r"interrupted fit \(its checkpoint is unreadable\)"):
        prepare_out_dir(out, overwrite=False, resume=False)
    assert _tree(tmp_path) == [".out.partial", ".out.partial/checkpoint.pt"]


def test_overwrite_starts_an_interrupted_fit_again(tmp_path):
    out = tmp_path / "out"
    _checkpoint(_partial(out) / "half1", 17)
    work = prepare_out_dir(out, overwrite=True, resume=False)
    assert work == _partial(out) and work.is_dir() and list(work.iterdir()) == []
    assert not out.exists()


def test_a_non_empty_out_needs_overwrite_and_is_kept_until_the_end(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(ReconError, match="exists and is not empty; pass --overwrite or choose another --out"):
        prepare_out_dir(out, overwrite=False, resume=False)
    work = prepare_out_dir(out, overwrite=True, resume=False)
    assert work == _partial(out) and list(work.iterdir()) == []
    assert (out / "metrics.json").read_text() == "{}"  # replaced only by finish_out_dir


def test_an_empty_out_is_used_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert prepare_out_dir(out, overwrite=False, resume=False) == _partial(out)


def test_a_leftover_partial_without_checkpoint_is_replaced(tmp_path):
    out = tmp_path / "out"
    _partial(out).mkdir()
    (_partial(out) / "config.json").write_text("{}")  # what a fit that failed early left
    work = prepare_out_dir(out, overwrite=False, resume=False)
    assert work == _partial(out) and list(work.iterdir()) == []


def test_a_partial_that_cannot_be_made_is_an_output_error(tmp_path):
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(OutputError, match="fit: cannot write .*blocker is a file, not a directory"):
        prepare_out_dir(tmp_path / "blocker" / "out", overwrite=False, resume=False)


def test_a_relative_out_has_its_partial_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert prepare_out_dir(Path("out"), overwrite=False, resume=False) == Path(".out.partial")
    assert (tmp_path / ".out.partial").is_dir()


# ---------------------------------------------------------------------------- resume_dir, settings


def test_resume_dir_prefers_the_interrupted_fit(tmp_path):
    out = tmp_path / "out"
    assert resume_dir(out) is None
    _checkpoint(out, 50)
    assert resume_dir(out) == out
    _checkpoint(_partial(out) / "half1", 20)
    assert resume_dir(out) == _partial(out)
    _partial(out).joinpath("half1", "checkpoint.pt").unlink()
    _checkpoint(_partial(out) / "half2", 20)
    assert resume_dir(out) == out  # half 2 alone is not resumable


def test_saved_settings_are_the_resumed_checkpoints_less_the_half_offset(tmp_path):
    out = tmp_path / "out"
    assert saved_fit_settings(out) == {}
    _checkpoint(out, 50, steps=50, lr=0.02, seed=7)
    assert saved_fit_settings(out) == dataclasses.asdict(FitConfig(steps=50, lr=0.02, seed=7))
    _checkpoint(_partial(out) / "half1", 20, steps=80, seed=7 + HALF_SEED_OFFSET)
    settings = saved_fit_settings(out)
    assert settings["steps"] == 80 and settings["seed"] == 7
    (_partial(out) / "half1" / "checkpoint.pt").write_bytes(b"garbage")
    assert saved_fit_settings(out) == {}  # the resume itself says what is wrong


# ------------------------------------------------------------------------- finish, discard


def test_finish_moves_the_work_into_place(tmp_path):
    work, out = _partial(tmp_path / "out"), tmp_path / "out"
    work.mkdir()
    (work / "density.tif").write_text("new")
    finish_out_dir(work, out)
    assert _tree(tmp_path) == ["out", "out/density.tif"]
    finish_out_dir(out, out)  # resumed in place: nothing to move
    assert _tree(tmp_path) == ["out", "out/density.tif"]


def test_finish_replaces_an_old_out_only_once_the_new_one_is_in_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (tmp_path / ".out.old").mkdir()  # left by an earlier finish that was killed
    work = _partial(out)
    work.mkdir()
    (work / "new.txt").write_text("new")
    seen = []
    real_rmtree = shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):
        seen.append((Path(path).name, (out / "new.txt").is_file()))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", watching_rmtree)
    finish_out_dir(work, out)
    assert seen == [(".out.old", False), (".out.old", True)]  # the stale one first; the old out after
    assert _tree(tmp_path) == ["out", "out/new.txt"]


def test_discard_keeps_a_resumable_partial_and_removes_the_rest(tmp_path):
    out = tmp_path / "out"
    work = _partial(out)
    work.mkdir()
    (work / "config.json").write_text("{}")
    discard_unless_resumable(work, out)
    assert not work.exists()
    _checkpoint(work / "half1", 3)
    discard_unless_resumable(work, out)
    assert (work / "half1" / "checkpoint.pt").is_file()
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    discard_unless_resumable(out, out)  # resuming in place: a finished fit is never removed
    assert (out / "metrics.json").is_file()
    discard_unless_resumable(tmp_path / "never-made", out)  # nothing there: nothing happens
