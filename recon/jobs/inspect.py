"""`recon inspect`: what a run holds, view by view, and whether it looks usable."""

from __future__ import annotations

import os
from pathlib import Path

from recon.analysis.inspect import ViewStats, inspect_run
from recon.io.run import Run, load_run
from recon.reporting.inspect_views import write_contact_sheet

__all__ = ["inspect"]


def inspect(run_dir: str | os.PathLike, *,
            sheet: str | os.PathLike | None = None) -> tuple[Run, list[ViewStats]]:
    """Load a run and compute every view's statistics; optionally write a contact sheet (PNG)."""
    run = load_run(run_dir)
    stats = inspect_run(run)
    if sheet is not None:
        write_contact_sheet(run, Path(sheet))
    return run, stats
