"""The progress display: plain periodic lines off a terminal, quiet mode, log lines, stop."""

import io
import types

import recon.reporting.progress as progress_module
from recon.reporting.progress import Progress


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _clock(monkeypatch, times):
    """Make the module's clock return ``times`` one after the other."""
    ticks = iter(times)
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))


def test_plain_lines_every_log_every_steps_and_at_the_end():
    stream = io.StringIO()
    bar = Progress("fit", log_every=3, stream=stream)
    assert not bar.live
    bar.start(10)
    for step in range(1, 11):
        bar.update(step, loss=0.5, rays_per_s=1000.0)
    bar.stop()
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["3/10", "6/10", "9/10", "10/10"]
    assert all(line.startswith("fit: step ") and "loss 0.5" in line and "1,000 rays/s" in line
               for line in lines)


def test_a_line_reads_step_loss_rays_and_eta_from_the_resumed_start(monkeypatch):
    _clock(monkeypatch, [0.0, 100.0, 110.0])  # __init__, start, update
    stream = io.StringIO()
    bar = Progress("fit", log_every=10, stream=stream)
    bar.start(50, first=10)
    bar.update(20, loss=0.123456789, rays_per_s=12345.6)
    # 10 steps done since the resume in 10 s, 30 to go: ETA 30 s.
    assert stream.getvalue() == "fit: step 20/50  loss 0.12346  12,346 rays/s  ETA 30 s\n"


def test_log_every_below_one_logs_every_step():
    stream = io.StringIO()
    bar = Progress("simulate", log_every=0, stream=stream)
    assert bar.log_every == 1
    bar.start(3)
    for step in (1, 2, 3):
        bar.update(step, loss=1.0, rays_per_s=1.0)
    assert len(stream.getvalue().splitlines()) == 3


def test_quiet_prints_no_steps_and_no_log_lines_but_warnings(capsys):
    stream = io.StringIO()
    bar = Progress("fit", log_every=1, quiet=True, stream=stream)
    bar.start(5)
    for step in range(1, 6):
        bar.update(step, loss=0.1, rays_per_s=10.0)
    bar.stop()
    assert stream.getvalue() == ""
    for line in ("traced view direct: 300304 pixels", "step 4: held-out deviance 1.4", "writing outputs"):
        bar.log(line)
    assert stream.getvalue() == ""
    bar.log("warning: view r1m01: 3 saturated pixels")
    assert stream.getvalue() == "warning: view r1m01: 3 saturated pixels\n"
    assert capsys.readouterr() == ("", "")


def test_quiet_on_a_terminal_draws_no_bar(capsys):
    stream = _Terminal()
    bar = Progress("fit", quiet=True, stream=stream)
    assert not bar.live
    bar.start(4)
    bar.update(4, loss=0.1, rays_per_s=10.0)
    bar.stop()
    assert stream.getvalue() == "" and capsys.readouterr() == ("", "")


def test_log_lines_go_to_the_stream_between_steps():
    stream = io.StringIO()
    bar = Progress("fit", log_every=2, stream=stream)
    bar.log("tracing")
    bar.start(2)
    bar.update(1, loss=1.0, rays_per_s=1.0)
    bar.log("checkpoint")
    bar.update(2, loss=1.0, rays_per_s=1.0)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["tracing", "checkpoint"] and lines[2].startswith("fit: step 2/2")


def test_default_stream_is_stderr(capsys):
    bar = Progress("fit", log_every=1)
    bar.start(1)
    bar.update(1, loss=2.0, rays_per_s=3.0)
    bar.log("done")
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[0].startswith("fit: step 1/1") and err.endswith("done\n")


def test_stop_is_idempotent_plain_and_live(capsys):
    plain = Progress("fit", stream=io.StringIO())
    plain.stop()  # before start
    plain.start(2)
    plain.stop()
    plain.stop()
    live = Progress("fit", stream=_Terminal())
    assert live.live
    live.start(3)
    live.update(1, loss=1.0, rays_per_s=1.0)
    live.stop()
    live.stop()
    live.log("after")  # falls back to plain printing once the bar is gone
    assert live.stream.getvalue().endswith("after\n")
    capsys.readouterr()


def test_live_bar_and_log_lines_go_to_the_given_stream(capsys):
    stream = _Terminal()
    bar = Progress("fit", stream=stream)
    bar.start(10)
    bar.update(5, loss=1.0, rays_per_s=100.0)
    bar.log("hello")
    bar.stop()
    out, _ = capsys.readouterr()
    assert "hello" in stream.getvalue() and "5/10" in stream.getvalue()
    assert out == ""
