"""`recon analyze`: the physics of a fit's density — its interference fringes, with a picture.

Reads a fit output directory's density.tif (or any volume TIFF), fits the fringe model of
:mod:`recon.analysis.fringes`, and writes ``fringes.json`` and ``fringes.png`` (into the fit's
directory, or ``--out``), each replaced whole. Where the fit recorded a simulated run's truth
(config.json's ``truth`` beside a ``phantom.json`` with fringes), the truth's period, direction
and phase are written beside the fit's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from optics.atomic import atomic_path
from recon.analysis.fringes import FringeFit, fit_fringes, phantom_fringes
from recon.errors import ConfigError, ShapeError
from recon.fitting.outdir import read_json_table
from recon.io.volume import read_volume
from recon.jobs.compare import recorded_truth
from recon.jobs.mesh import density_path
from recon.reporting.fringe_figures import write_fringe_figure
from recon.reporting.summary import fringes_text

__all__ = ["AnalyzeOutcome", "analyze", "fringe_record", "truth_fringes"]


@dataclass(frozen=True)
class AnalyzeOutcome:
    """What :func:`analyze` found and wrote."""

    fringes: FringeFit
    truth: dict | None  # the simulated truth's period, direction, phase at the origin
    written: tuple[Path, ...]
    replaced: bool  # an earlier fringes.json was replaced

    def summary(self) -> str:
        """The result in one line (:func:`~recon.reporting.summary.fringes_text`)."""
        return "fringes: " + fringes_text(self.record)

    @property
    def record(self) -> dict:
        """What fringes.json holds."""
        return fringe_record(self.fringes, self.truth)


def fringe_record(fit: FringeFit, truth: dict | None) -> dict:
    """fringes.json (and metrics.json's ``fringes``) of a fringe fit, with the truth's fringes or None."""
    return {"schema": "recon.fringes/1", **fit.to_json(), "truth": truth}


def truth_fringes(truth_tif: str | os.PathLike | None) -> dict | None:
    """The fringes of the simulated truth whose phantom.json lies beside ``truth_tif``, or None."""
    if not truth_tif:
        return None
    phantom = Path(truth_tif).parent / "phantom.json"
    params = read_json_table(phantom).get("params") if phantom.is_file() else None
    return phantom_fringes(params) if isinstance(params, dict) else None


def _truth(source: Path) -> dict | None:
    """The simulated truth's fringes, where the fit directory ``source`` recorded a run with a phantom."""
    return truth_fringes(recorded_truth(source)) if source.is_dir() else None


def analyze(source: str | os.PathLike, *, out: str | os.PathLike | None = None) -> AnalyzeOutcome:
    """Fit the fringes of ``source`` (a fit directory's density.tif, or a volume TIFF).

    Writes ``fringes.json`` and ``fringes.png`` into ``out`` (default: the fit directory, or the
    volume's folder), each replaced whole.

    Raises:
        ConfigError: no density to read, or one with no positive density.
    """
    source = Path(source)
    path = density_path(source)
    volume = read_volume(path)
    try:
        fit = fit_fringes(volume)
    except ShapeError as err:
        raise ConfigError(f"analyze: {path}: {err}") from None
    truth = _truth(source)
    target = Path(out) if out is not None else (source if source.is_dir() else path.parent)
    json_path, png_path = target / "fringes.json", target / "fringes.png"
    replaced = json_path.exists()
    record = {**fringe_record(fit, truth), "source": str(path)}
    try:
        target.mkdir(parents=True, exist_ok=True)
        write_fringe_figure(volume, fit, png_path)
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    except OSError as err:
        raise ConfigError(f"analyze: cannot write {target} ({err.strerror or err}); "
                          "choose another --out") from None
    return AnalyzeOutcome(fit, truth, (json_path, png_path), replaced)
