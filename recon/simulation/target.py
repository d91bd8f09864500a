"""Simulated calibration target sets: a point source at many positions, one exposure each."""

from __future__ import annotations

from collections.abc import Callable

import torch

from calibration.target import TargetSpec, simulate_point_exposure, target_spec_text
from optics.design import view_regions
from optics.limits import check_number, check_seed
from optics.system import load_system
from recon.errors import ConfigError
from recon.io.runwriter import write_run
from recon.io.sensor import simulate_adu

__all__ = ["parse_calibration_target", "simulate_calibration_target"]


def parse_calibration_target(text: str) -> int:
    """``points:N`` → N (the number of point-source positions of a calibration target set)."""
    kind, _, count = text.partition(":")
    if kind != "points" or not (count.isascii() and count.isdigit()) or int(count) < 1:
        raise ConfigError(f"simulate: --calibration-target must be points:N with N ≥ 1, got {text!r}")
    return int(count)


def simulate_calibration_target(
    system_path,
    out,
    *,
    points: int,
    true_system_path=None,
    photons: float = 2e8,
    bead_sigma_mm: float = 0.01,
    fill: float = 0.8,
    margin_px: int = 40,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Simulate a calibration target set: a point source at ``points`` positions, one exposure each.

    The exposures are rendered through the *true* instrument (``true_system_path``, default the
    nominal one) and recorded in the view regions of the nominal instrument (grown by
    ``margin_px`` so that a misaligned view still falls inside). Each view's TIFF holds one page
    per position; ``target.toml`` records the positions, ``system.toml`` is the nominal system
    and ``true_system.toml`` the truth (when given). Photon counts are exact Poisson (photons are
    traced one by one), plus the sensor's read noise, offset and ADC clipping, and one dark
    frame per view.

    Args:
        system_path: the nominal system file.
        out: target set directory to write.
        points: number of positions, drawn uniformly in the central ``fill`` of the box.
        true_system_path: the instrument that really takes the images (e.g. from
            ``recon system perturb``), or None.
        photons: photons the source emits into 4π per exposure.
        bead_sigma_mm: Gaussian σ of the source, mm.
        fill: fraction of the box (per axis, about its centre) the positions are drawn from.
        margin_px: growth of the nominal view regions, px.
        seed: random seed.
        overwrite: replace an existing directory.
        progress: called with (exposures done, exposures in all).

    Returns:
        A summary: positions, views, files, expected photoelectrons per view.
    """
    from pathlib import Path


    if points < 1 or not photons > 0 or not bead_sigma_mm >= 0 or not 0 < fill <= 1:
        raise ConfigError("simulate: --calibration-target points:N needs N ≥ 1, photons > 0, bead σ ≥ 0, "
                          "fill in (0, 1]")
    check_number(photons, "--target-photons", "simulate", high=1e20)
    check_number(bead_sigma_mm * 1e3, "--bead-um", "simulate", high=1e5)
    check_number(margin_px, "margin_px", "simulate", low=0, high=1e6)
    check_seed(seed, "simulate")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"simulate: {out} exists; pass --overwrite or choose another --out")
    system_path = Path(system_path)
    nominal = load_system(system_path, dtype=torch.float64)
    truth = nominal if true_system_path is None else load_system(true_system_path, dtype=torch.float64)
    if [m.name for m in truth.mirrors] != [m.name for m in nominal.mirrors]:
        raise ConfigError(f"simulate: --true-system {true_system_path} has other mirrors than {system_path}; "
                          "perturb the nominal system with `recon system perturb`")
    sensor = nominal.cameras[0].sensor
    rois = []
    for reg in view_regions(nominal, 0, margin_px=margin_px):
        x0, y0, w, h = reg.roi
        x1, y1 = min(x0 + w, sensor.width_px), min(y0 + h, sensor.height_px)
        x0, y0 = max(x0, 0), max(y0, 0)
        rois.append((reg.path, reg.name, (x0, y0, x1 - x0, y1 - y0)))
    gen = torch.Generator().manual_seed(seed)
    box = nominal.volume
    positions = box.center_mm + (torch.rand(points, 3, generator=gen, dtype=torch.float64) - 0.5) * (
        fill * box.size_mm)
    pages: dict[str, list] = {name: [] for _, name, _ in rois}
    flux = {name: 0.0 for _, name, _ in rois}
    for i in range(points):
        images = simulate_point_exposure(truth, positions[i], [(p, roi) for p, _, roi in rois],
                                         photons=photons, bead_sigma_mm=bead_sigma_mm, generator=gen)
        for (_, name, _), electrons in zip(rois, images, strict=True):
            flux[name] += float(electrons.sum()) / points
            read = simulate_adu(torch.zeros_like(electrons), sensor, generator=gen).to(torch.float64)
            adu = torch.round(read + electrons / sensor.gain_e_per_adu).clamp(0, sensor.saturation_adu)
            pages[name].append(adu.to(torch.int32).numpy().astype("uint16"))
        if progress:
            progress(i + 1, points)
    import numpy as np

    files, views = {}, []
    for _, name, roi in rois:
        files[f"views/{name}.tif"] = np.stack(pages[name])
        dark = simulate_adu(torch.zeros(roi[3], roi[2], dtype=torch.float64), sensor, generator=gen)
        files[f"views/{name}_dark.tif"] = dark.numpy()[None]
        views.append({"name": name, "camera": 0, "roi": list(roi), "frames": f"views/{name}.tif",
                      "dark": f"views/{name}_dark.tif"})
    note = (f"calibration target: point source (σ {bead_sigma_mm * 1e3:g} µm, {photons:g} photons per "
            "exposure) "
            f"at {points} positions, one exposure (TIFF page) each; positions in target.toml; seed {seed}")
    spec = TargetSpec(exposures=tuple(range(points)), positions_mm=positions, bead_sigma_mm=bead_sigma_mm,
                      photons=photons, description=note)
    extra = {"system.toml": system_path.read_text(encoding="utf-8"), "target.toml": target_spec_text(spec)}
    if true_system_path is not None:
        extra["true_system.toml"] = Path(true_system_path).read_text(encoding="utf-8")
    write_run(out, {"system": "system.toml", "description": note, "views": views}, files,
              overwrite=overwrite, extra_files=extra)
    return {"positions": points, "views": len(views), "out": str(out), "mean_electrons_per_view": flux}
