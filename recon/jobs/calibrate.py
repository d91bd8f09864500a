"""`recon calibrate`: a target set's spots measured in a run's views, the optics fitted, the results written.

Assembles what :mod:`calibration` needs from a run directory (the views of each light path, one
page per target position) and writes the calibrated system, the report and the residual plot
(:func:`calibration.report.write_calibration_outputs`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from calibration.bundle import CalibrationConfig, CalibrationResult, Observations, measure_spots
from calibration.bundle import calibrate as fit_optics
from calibration.model import parse_fit_groups
from calibration.report import output_paths, write_calibration_outputs
from calibration.target import read_target_spec
from optics.system import System, load_system
from recon.environment import versions
from recon.errors import ConfigError
from recon.io.run import Run, load_run

__all__ = ["Calibration", "calibrate", "target_views"]


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` did: the fit, the spots it used, and the files written."""

    result: CalibrationResult
    observations: Observations
    written: dict[str, Path]


def target_views(run: Run, nominal: System, exposures: tuple[int, ...], source: str,
                 system_file: str) -> list:
    """``(name, path, roi, electrons, mask)`` of every view, the pages of ``exposures`` only.

    Raises:
        ConfigError: a view that is no light path of the system, or fewer pages than exposures.
    """
    names = {nominal.path_name(p): p for p in range(nominal.n_paths)}
    views = []
    for v in run.views:
        if v.name not in names:
            raise ConfigError(f"calibrate: view '{v.name}' of {source} is no path of {system_file} "
                              f"(paths: {', '.join(names)}); use the system the set was recorded with")
        if v.n_frames < len(exposures) or max(exposures) >= v.n_frames:
            raise ConfigError(f"calibrate: view {v.name} has {v.n_frames} pages but target.toml names "
                              f"exposures up to {max(exposures)}; one page per position")
        pages = list(exposures)
        views.append((v.name, names[v.name], v.roi, v.electrons[pages].numpy(), v.mask[pages].numpy()))
    return views


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before the fit, existing outputs (unless ``overwrite``) or a folder that cannot take them."""
    for p in output_paths(out).values():
        if p.is_dir():
            raise ConfigError(f"calibrate: {p} is a directory; choose an --out file name (CALIBRATED.toml)")
        if p.exists() and not overwrite:
            raise ConfigError(f"calibrate: {p} exists; pass --overwrite or choose another --out")
    parent = out.parent
    if not parent.is_dir():
        raise ConfigError(f"calibrate: the folder of --out, {parent}, does not exist; create it or choose "
                          "another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"calibrate: the folder of --out, {parent}, cannot be written; choose another "
                          "--out")


def calibrate(
    images: str | os.PathLike,
    system_file: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fit_groups: str = "mirrors",
    known_positions: bool = True,
    aperture_samples: int = 512,
    max_iterations: int = 400,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> Calibration:
    """Refine the optics of ``system_file`` from the point-source target set ``images``.

    Args:
        images: target set (a run directory with target.toml).
        system_file: the nominal system file.
        out: the calibrated system file to write (the report and plot go beside it).
        fit_groups: parameter groups, ``mirrors,pose,focus,distortion``.
        known_positions: use target.toml's positions, or fit them.
        aperture_samples: aperture samples per predicted spot (≥ 16).
        max_iterations: L-BFGS iterations at most (≥ 1).
        overwrite: replace existing output files.
        log: receives progress lines.
    """
    log = log or (lambda text: None)
    _check_out(Path(out), overwrite)
    cfg = CalibrationConfig(fit=parse_fit_groups(fit_groups), known_positions=known_positions,
                            n_aperture=aperture_samples, max_iterations=max_iterations)
    if aperture_samples < 16 or max_iterations < 1:
        raise ConfigError("calibrate: --aperture-samples must be ≥ 16 and --max-iterations ≥ 1")
    nominal = load_system(system_file, dtype=torch.float64)
    spec = read_target_spec(images)
    views = target_views(load_run(images), nominal, spec.exposures, str(images), str(system_file))
    obs = measure_spots(views, nominal, positions_mm=spec.positions_mm if known_positions else None,
                        bead_sigma_mm=spec.bead_sigma_mm)
    log(f"{int(obs.observed.sum())} spots in {len(views)} views × {obs.n_positions} exposures")
    if obs.skipped:
        log(f"warning: {len(obs.skipped)} left out (listed in the report): {obs.skipped[0]}"
            + (" …" if len(obs.skipped) > 1 else ""))
    result = fit_optics(nominal, obs, cfg, progress=log)
    written = write_calibration_outputs(result, obs, cfg, out, images=str(images),
                                        nominal_path=str(system_file), versions=versions())
    return Calibration(result, obs, written)
