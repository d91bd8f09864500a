"""Simulated runs with known truth: render the views of a phantom through an instrument."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from optics.atomic import check_writable
from optics.camera import roi_pixel_centers
from optics.design import ViewRegion, view_regions
from optics.limits import check_number, check_seed
from optics.system import System, load_system
from recon.errors import ConfigError
from recon.io.runwriter import write_run
from recon.io.sensor import NOISE_MODELS, simulate_adu
from recon.model.forward import render_batches, sees_the_box, trace_in_chunks
from recon.simulation.phantom_file import load_phantom
from recon.simulation.phantoms import ShiftedPhantom
from recon.simulation.truth import truth_volume

__all__ = ["TRUTH_VOXELS_MAX", "TRUTH_VOXEL_MM", "check_regions", "expected_views", "simulate_run",
           "simulation_regions"]

#: truth.tif's automatic voxel, mm (data/run042's) ...
TRUTH_VOXEL_MM = 0.02
#: ... coarser where the box would hold more than this many along its longest edge (a ±10 mm box
#: at 20 µm would be a 1000³ grid of 4 GB).
TRUTH_VOXELS_MAX = 256


def simulation_regions(system: System, camera: int = 0) -> list[ViewRegion]:
    """The regions of interest a simulated run records: one per light path of ``camera``."""
    return view_regions(system, camera)


def check_regions(
    system: System, regions: list[ViewRegion], *, camera: int = 0, source: str = "system file", grid: int = 12
) -> list[ViewRegion]:
    """The regions clipped to the sensor; an error for a light path that no ray takes.

    A mirror facing away from the box or the lens, or placed where the lens cannot see the box in
    it, gives a view that holds no light: a grid of ``grid`` × ``grid`` pixels over its region,
    each traced with 8 sub-pixel × aperture samples, must have a ray through the box by its path.

    Raises:
        ConfigError: a view that falls outside the sensor, or a path no ray reaches; the message
            names the mirror and the fix.
    """
    sensor = system.cameras[camera].sensor
    gen = torch.Generator().manual_seed(0)
    out = []
    for reg in regions:
        where = "the direct view" if reg.path == 0 else f"mirror '{reg.name}' (mirrors[{reg.path - 1}])"
        x0, y0, w, h = reg.roi
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + w, sensor.width_px), min(y0 + h, sensor.height_px)
        if cx1 <= cx0 or cy1 <= cy0:
            raise ConfigError(
                f"{source}: {where} images the box at roi {list(reg.roi)}, outside the "
                f"{sensor.width_px}×{sensor.height_px} sensor; move or re-aim it, or remove it"
            )
        if not sees_the_box(system, (cx0, cy0, cx1 - cx0, cy1 - cy0), camera=camera, path=reg.path, grid=grid,
                            generator=gen):
            raise ConfigError(
                f"{source}: no ray from the box reaches the lens by {where}; turn its normal so that "
                "the box's reflection faces the lens, move it into view, or remove it"
            )
        out.append(replace(reg, roi=(cx0, cy0, cx1 - cx0, cy1 - cy0)))
    return out


@torch.no_grad()
def expected_views(
    system: System,
    density: Callable[[torch.Tensor], torch.Tensor],
    regions: list[ViewRegion],
    *,
    photons_per_atom: float,
    samples: int = 16,
    step_mm: float = 0.01,
    model: str = "emission", attenuation: float = 1.0,
    seed: int = 0,
    camera: int = 0,
    chunk_pixels: int = 16384,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Expected photoelectrons of every pixel of every region (no noise).

    Args:
        system: the instrument.
        density: maps (M, 3) points in mm to (M,) densities (atoms/mm³); a phantom itself
            (not its ``density`` method) lets a Gaussian cloud's line integrals run compiled
            (:meth:`~recon.simulation.phantoms.PrimitivePhantom.integrate_strata`).
        regions: the views to render.
        photons_per_atom: photons scattered per atom in the exposure.
        samples: sub-pixel × aperture samples per pixel (stratified).
        step_mm: stratum length along rays, mm.
        model: ``emission`` or ``emission-absorption``.
        attenuation: κ per unit density (emission–absorption).
        seed: random seed of the samples.
        camera: camera index.
        chunk_pixels: pixels traced and rendered at once (bounds memory).
        progress: called with (pixels done, pixels in all) after each chunk.

    Returns:
        View name → (h, w) float32 expected photoelectrons.
    """
    gen = torch.Generator().manual_seed(seed)
    total = sum(r.roi[2] * r.roi[3] for r in regions)
    done = 0
    out = {}
    for reg in regions:
        uv = roi_pixel_centers(reg.roi, system.dtype).reshape(-1, 2)
        # Traced by torch, not the compiled kernels: a segment's strata count (ceil(length / step))
        # follows the last bits of its length, the strata's jitter draws from the generator that
        # draws the next chunk's samples, and the Poisson draws that follow consume the noise's
        # generator by the expected counts: the kernels' last bits would change every frame of a run
        # simulated before them (data/run042 is regenerated bit for bit: bench/regenerate_run042.py).
        traced = trace_in_chunks(system, uv, camera=camera, samples=samples, generator=gen,
                                 chunk_pixels=chunk_pixels, compiled=False)
        image = render_batches(density, traced, len(uv),
                               photons_per_atom=photons_per_atom, step_mm=step_mm, model=model,
                               attenuation=attenuation, generator=gen,
                               progress=(lambda n, start=done: progress(start + n, total)) if progress
                               else None)
        done += len(uv)
        out[reg.name] = image.reshape(reg.roi[3], reg.roi[2])
    return out


def simulate_run(
    system_path,
    phantom_name: str,
    out,
    *,
    atoms: float = 1e6,
    photons_per_atom: float = 200.0,
    frames: int = 1,
    noise: str = "poisson",
    seed: int = 0,
    samples: int = 16, step_mm: float = 0.01,
    truth_voxel_mm: float = 0.0,
    camera_sensitivity: Sequence[float] | None = None,
    offset_mm: Sequence[float] | None = None,
    dark_frames: bool = True,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Simulate a run with known truth and write it (run.toml, views, darks, truth, phantom).

    Every camera of the system records one view per light path it sees (with one camera the
    views are named by their path, ``direct``, ``r1m01`` …; with several, ``<camera>-<path>``).
    ``camera_sensitivity``: one factor per camera by which its photoelectrons differ from what
    the system file predicts (unequal exposure, aperture, QE or gain that a fit must find); the
    truth records them. None: all 1. ``offset_mm``: move the phantom by this (x, y, z) vector, mm
    (:class:`~recon.simulation.phantoms.ShiftedPhantom`; a campaign's drifting cloud).
    ``truth_voxel_mm``: the voxel of truth.tif; 0 chooses
    :data:`TRUTH_VOXEL_MM`, coarser where the box would hold more than :data:`TRUTH_VOXELS_MAX`
    along its longest edge. ``dark_frames``: write a dark frame per view (with Poisson noise);
    False leaves the black level to the sensor's ``offset_adu`` (a camera whose black level
    clips, such as data/mot4's 8-bit ones, records biased dark frames).

    Returns:
        A summary: views, total photoelectrons, in-box atoms of the truth, files.
    """
    import json
    from pathlib import Path

    import numpy as np


    if noise not in NOISE_MODELS:
        raise ConfigError(f"simulate: --noise must be one of {', '.join(NOISE_MODELS)}, got {noise!r}")
    if frames < 1 or samples < 1 or photons_per_atom <= 0 or step_mm <= 0:
        raise ConfigError("simulate: --frames, --samples, --photons-per-atom and --step-mm must be positive")
    sane = (("--atoms", atoms, 0.0, 1e15), ("--photons-per-atom", photons_per_atom, None, 1e12),
            ("--step-mm", step_mm, 1e-4, 10.0), ("--frames", frames, None, 10**5),
            ("--samples", samples, None, 4096))
    if truth_voxel_mm != 0:  # 0: automatic
        sane += (("--truth-voxel-mm", truth_voxel_mm, 1e-3, 10.0),)
    for key, value, low, high in sane:
        check_number(value, key, "simulate", low=low, high=high)
    check_seed(seed, "simulate")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"simulate: {out} exists; pass --overwrite or choose another --out")

    check_writable(out)  # before the rendering, not after
    system_path = Path(system_path)
    system = load_system(system_path)
    if truth_voxel_mm <= 0:
        longest = float(system.volume.size_mm.max())
        truth_voxel_mm = max(TRUTH_VOXEL_MM, float(f"{longest / TRUTH_VOXELS_MAX:.3g}"))
    n_cameras = len(system.cameras)
    factors = [1.0] * n_cameras if camera_sensitivity is None else [float(v) for v in camera_sensitivity]
    if len(factors) != n_cameras or not all(math.isfinite(v) and v > 0 for v in factors):
        raise ConfigError(f"simulate: --camera-sensitivity must give {n_cameras} positive factor(s), one per "
                          f"camera of {system_path.name}, got {list(camera_sensitivity or [])}")
    phantom = load_phantom(phantom_name, atoms=atoms)
    if offset_mm is not None:
        phantom = ShiftedPhantom(phantom, offset_mm)
    recorded = []  # (camera, region, view name)
    for cam in range(n_cameras):
        regions = simulation_regions(system, cam)
        for reg in check_regions(system, regions, camera=cam, source=str(system_path)):
            name = reg.name if n_cameras == 1 else f"{system.cameras[cam].name}-{reg.name}"
            recorded.append((cam, reg, name))
    total = sum(reg.roi[2] * reg.roi[3] for _, reg, _ in recorded)
    expected, done = {}, 0
    for cam in range(n_cameras):
        regions = [reg for c, reg, _ in recorded if c == cam]
        images = expected_views(
            system, phantom, regions, photons_per_atom=photons_per_atom, samples=samples,
            step_mm=step_mm, model=phantom.model, seed=seed + 7919 * cam, camera=cam,
            progress=(lambda n, _t, start=done: progress(start + n, total)) if progress else None,
        )
        done += sum(reg.roi[2] * reg.roi[3] for reg in regions)
        for c, reg, name in recorded:
            if c == cam:
                expected[name] = images[reg.name] * factors[cam]  # × 1 is exact: run042 is unchanged
    gen = torch.Generator().manual_seed(seed + 1)
    files, views = {}, []
    for cam, reg, name in recorded:
        sensor = system.cameras[cam].sensor
        lam = expected[name]
        shots = torch.stack([simulate_adu(lam, sensor, generator=gen, noise=noise) for _ in range(frames)])
        files[f"views/{name}.tif"] = shots.numpy()
        view = {"name": name, "camera": cam, "roi": list(reg.roi), "frames": f"views/{name}.tif"}
        if noise == "poisson" and dark_frames:
            dark = simulate_adu(torch.zeros_like(lam), sensor, generator=gen, noise=noise)
            files[f"views/{name}_dark.tif"] = dark.numpy()[None]
            view["dark"] = f"views/{name}_dark.tif"
        views.append(view)
    box = system.volume
    truth = truth_volume(phantom, box.min_mm.tolist(), box.max_mm.tolist(), truth_voxel_mm)
    system_text = system_path.read_text(encoding="utf-8")
    in_box = float(truth.data.sum() * np.prod(truth.voxel_size_mm))
    phantom_info = {
        "phantom": phantom.name,
        "params": phantom.params,
        "atoms_total": atoms,
        "atoms_in_box": in_box,
        "photons_per_atom": photons_per_atom,
        "model": phantom.model,
        "seed": seed,
        "samples_per_pixel": samples,
        "step_mm": step_mm,
        "noise": noise,
        "frames": frames,
    }
    if offset_mm is not None:
        phantom_info["offset_mm"] = list(phantom.offset_mm)
    if n_cameras > 1 or camera_sensitivity is not None:
        phantom_info["camera_sensitivity"] = {system.cameras[c].name: factors[c] for c in range(n_cameras)}
    spec = {
        "system": "system.toml",
        "photons_per_atom": float(photons_per_atom),
        "description": f"simulated: phantom {phantom.name}, {atoms:g} atoms, "
        f"{photons_per_atom:g} photons/atom, noise {noise}, seed {seed}",
        "views": views,
        "truth": {"volume": "truth.tif", "phantom": "phantom.json"},
    }
    write_run(
        out,
        spec,
        files,
        overwrite=overwrite,
        volumes={"truth.tif": truth},
        extra_files={
            "system.toml": system_text.encode("utf-8"),
            "phantom.json": (json.dumps(phantom_info, indent=2) + "\n").encode("utf-8"),
        },
    )
    return {
        "views": len(views),
        "pixels": total,
        "expected_e": float(sum(v.sum() for v in expected.values())),
        "atoms_in_box": in_box,
        "out": str(out),
    }
