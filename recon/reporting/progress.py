"""Progress display for long steps: a live bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Shows step, loss, rays/s and ETA.

    On a terminal a rich live bar is drawn; otherwise (a pipe, a log file, CI) one plain line is
    printed every ``log_every`` steps. ``quiet`` (``recon fit --quiet``: only the summary) prints
    no bar, no step lines and no :meth:`log` lines but warnings (those that start with
    ``warning:``).
    """

    def __init__(self, label: str, *, log_every: int = 100, quiet: bool = False, stream=None):
        self.label = label
        self.log_every = max(1, log_every)
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.live = (not quiet) and self.stream.isatty()
        self._bar = None
        self._task = None
        self._t0 = time.perf_counter()
        self._first = 0
        self.total = 0

    def log(self, text: str) -> None:
        """Print one line of information (only a warning when quiet)."""
        if self.quiet and not text.startswith("warning:"):
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, total: int, first: int = 0) -> None:
        """Begin a run of ``total`` steps, resuming at ``first``."""
        self.total, self._first, self._t0 = total, first, time.perf_counter()
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                     console=Console(file=self.stream))
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=total, completed=first, info="")

    def update(self, step: int, loss: float, rays_per_s: float) -> None:
        """Report the state after ``step`` steps."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=f"loss {loss:.4g}  {rays_per_s:,.0f} rays/s")
        elif not self.quiet and (step % self.log_every == 0 or step == self.total):
            done = step - self._first
            elapsed = time.perf_counter() - self._t0
            eta = elapsed / max(done, 1) * (self.total - step)
            print(f"{self.label}: step {step}/{self.total}  loss {loss:.5g}  {rays_per_s:,.0f} rays/s  "
                  f"ETA {eta:.0f} s", file=self.stream, flush=True)

    def stop(self) -> None:
        """End the display."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
