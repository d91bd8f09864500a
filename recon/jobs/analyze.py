"""`recon analyze`: the physics of a fit's density — its interference fringes, with a picture.

Reads a fit output directory's density.tif (or any volume TIFF), fits the fringe model of
:mod:`recon.analysis.fringes`, and writes ``fringes.json`` and ``fringes.png`` (into the fit's
directory, or ``--out``), each replaced whole. Where the fit recorded a simulated run's truth
(config.json's ``truth`` beside a ``phantom.json`` with fringes), the truth's period, direction
and phase are written beside the fit's.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optics.atomic import atomic_path
from recon.analysis.fringes import FringeFit, fit_fringes, phantom_fringes
from recon.errors import ConfigError
from recon.fitting.outdir import read_json_table
from recon.io.volume import read_volume
from recon.jobs.mesh import density_path
from recon.reporting.fringe_figures import write_fringe_figure

__all__ = ["AnalyzeOutcome", "analyze"]


@dataclass(frozen=True)
class AnalyzeOutcome:
    """What :func:`analyze` found and wrote."""

    fringes: FringeFit
    truth: dict | None  # the simulated truth's period, direction, phase at the origin
    written: tuple[Path, ...]
    replaced: bool  # an earlier fringes.json was replaced

    def summary(self) -> str:
        """The result in a few lines, with formal sds (and the truth where known)."""
        f, sd = self.fringes, self.fringes.sd
        if not f.detected:
            return f"no fringes detected: {f.why_not}"
        lines = [
            f"fringes: period {1e3 * f.period_mm:.2f} ± {1e3 * sd['period_mm']:.2f} µm, direction "
            f"({', '.join(f'{v:.4f}' for v in f.direction)}), contrast {f.contrast:.3f} ± "
            f"{sd['contrast']:.3f}",
            f"phase {f.phase_rad:+.4f} ± {sd['phase_rad']:.4f} rad at the envelope's centre "
            f"({', '.join(f'{1e3 * v:.1f}' for v in f.centre_mm)} µm), {f.phase_at_origin_rad:+.4f} ± "
            f"{sd['phase_at_origin_rad']:.4f} rad at the origin (formal sds: voxel residuals taken as "
            "independent, so too small for a reconstruction)",
        ]
        if self.truth is not None:
            t = self.truth
            angle = math.degrees(math.acos(min(1.0, abs(float(np.dot(t["direction"], f.direction))))))
            dphi = math.remainder(f.phase_at_origin_rad - t["phase_at_origin_rad"], 2 * math.pi)
            lines.append(f"against the truth: period {100 * (f.period_mm / t['period_mm'] - 1):+.2f} %, "
                         f"direction {angle:.2f}° off, phase at the origin {dphi:+.4f} rad")
        return "\n".join(lines)


def _truth(source: Path) -> dict | None:
    """The simulated truth's fringes, where the fit directory ``source`` recorded a run with a phantom."""
    config = source / "config.json"
    if not (source.is_dir() and config.is_file()):
        return None
    try:
        truth = read_json_table(config).get("truth")
        phantom = Path(truth).parent / "phantom.json" if isinstance(truth, str) else None
        if phantom is None or not phantom.is_file():
            return None
        params = read_json_table(phantom).get("params", {})
    except (ConfigError, OSError):
        return None
    return phantom_fringes(params) if isinstance(params, dict) else None


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
    except (ValueError, np.linalg.LinAlgError) as err:
        raise ConfigError(f"analyze: {path}: {err}") from None
    truth = _truth(source)
    target = Path(out) if out is not None else (source if source.is_dir() else path.parent)
    target.mkdir(parents=True, exist_ok=True)
    json_path, png_path = target / "fringes.json", target / "fringes.png"
    replaced = json_path.exists()
    record = {"schema": "recon.fringes/1", "source": str(path), **fit.to_json(), "truth": truth}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    write_fringe_figure(volume, fit, png_path)
    return AnalyzeOutcome(fit, truth, (json_path, png_path), replaced)
