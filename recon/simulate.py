"""Simulated runs with known truth: render the views of a phantom through an instrument."""

from __future__ import annotations

from collections.abc import Callable

import torch

from optics.design import ViewRegion, view_regions
from optics.system import System
from optics.trace import sample_pixel_samples, trace_pixels
from recon.render import compact_rays, render_pixels

__all__ = ["check_regions", "expected_views", "simulation_regions"]


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
    from dataclasses import replace

    from recon.errors import ConfigError

    sensor = system.cameras[camera].sensor
    sys64 = system.to(torch.float64)
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
        v, u = torch.meshgrid(
            torch.linspace(cy0, cy1 - 1, min(cy1 - cy0, grid), dtype=torch.float64),
            torch.linspace(cx0, cx1 - 1, min(cx1 - cx0, grid), dtype=torch.float64),
            indexing="ij",
        )
        uv = torch.stack([u, v], -1).reshape(-1, 2)
        sub, ap = sample_pixel_samples(len(uv), 8, generator=gen, dtype=torch.float64)
        traced = trace_pixels(sys64, uv, camera=camera, subpixel=sub, aperture=ap)
        if not bool(traced.valid[..., reg.path].any()):
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
    model: str = "emission",
    attenuation: float = 1.0,
    seed: int = 0,
    camera: int = 0,
    chunk_pixels: int = 16384,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Expected photoelectrons of every pixel of every region (no noise).

    Args:
        system: the instrument.
        density: maps (M, 3) points in mm to (M,) densities (atoms/mm³).
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
        x0, y0, w, h = reg.roi
        v, u = torch.meshgrid(
            torch.arange(h, dtype=torch.float32) + y0,
            torch.arange(w, dtype=torch.float32) + x0,
            indexing="ij",
        )
        uv = torch.stack([u, v], -1).reshape(-1, 2)
        image = torch.zeros(len(uv))
        for start in range(0, len(uv), chunk_pixels):
            chunk = uv[start : start + chunk_pixels]
            sub, ap = sample_pixel_samples(len(chunk), samples, generator=gen)
            rays = compact_rays(trace_pixels(system, chunk, camera=camera, subpixel=sub, aperture=ap))
            image[start : start + len(chunk)] = render_pixels(
                density,
                rays,
                len(chunk),
                photons_per_atom=photons_per_atom,
                step_mm=step_mm,
                model=model,
                attenuation=attenuation,
                generator=gen,
            ).float()
            done += len(chunk)
            if progress:
                progress(done, total)
        out[reg.name] = image.reshape(h, w)
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
    samples: int = 16,
    step_mm: float = 0.01,
    truth_voxel_mm: float = 0.02,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Simulate a run with known truth and write it (run.toml, views, darks, truth, phantom).

    Returns:
        A summary: views, total photoelectrons, in-box atoms of the truth, files.
    """
    import json
    from pathlib import Path

    import numpy as np

    from optics.system import load_system
    from recon.errors import ConfigError
    from recon.noise import NOISE_MODELS, simulate_adu
    from recon.phantoms import load_phantom, truth_volume
    from recon.run import write_run

    if noise not in NOISE_MODELS:
        raise ConfigError(f"simulate: --noise must be one of {', '.join(NOISE_MODELS)}, got {noise!r}")
    if frames < 1 or samples < 1 or photons_per_atom <= 0 or step_mm <= 0:
        raise ConfigError("simulate: --frames, --samples, --photons-per-atom and --step-mm must be positive")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"simulate: {out} exists; pass --overwrite or choose another --out")
    from optics.atomic import check_writable

    check_writable(out)  # before the rendering, not after
    system_path = Path(system_path)
    system = load_system(system_path)
    phantom = load_phantom(phantom_name, atoms=atoms)
    regions = check_regions(system, simulation_regions(system), source=str(system_path))
    expected = expected_views(
        system,
        phantom.density,
        regions,
        photons_per_atom=photons_per_atom,
        samples=samples,
        step_mm=step_mm,
        model=phantom.model,
        seed=seed,
        progress=progress,
    )
    gen = torch.Generator().manual_seed(seed + 1)
    sensor = system.cameras[0].sensor
    files, views = {}, []
    for reg in regions:
        lam = expected[reg.name]
        shots = torch.stack([simulate_adu(lam, sensor, generator=gen, noise=noise) for _ in range(frames)])
        files[f"views/{reg.name}.tif"] = shots.numpy()
        view = {"name": reg.name, "camera": 0, "roi": list(reg.roi), "frames": f"views/{reg.name}.tif"}
        if noise == "poisson":
            dark = simulate_adu(torch.zeros_like(lam), sensor, generator=gen, noise=noise)
            files[f"views/{reg.name}_dark.tif"] = dark.numpy()[None]
            view["dark"] = f"views/{reg.name}_dark.tif"
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
        "pixels": sum(r.roi[2] * r.roi[3] for r in regions),
        "expected_e": float(sum(v.sum() for v in expected.values())),
        "atoms_in_box": in_box,
        "out": str(out),
    }


def parse_calibration_target(text: str) -> int:
    """``points:N`` → N (the number of point-source positions of a calibration target set)."""
    from recon.errors import ConfigError

    kind, _, count = text.partition(":")
    if kind != "points" or not count.isdigit() or int(count) < 1:
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

    from calibration.target import TargetSpec, simulate_point_exposure, target_spec_text
    from optics.system import load_system
    from recon.errors import ConfigError
    from recon.noise import simulate_adu
    from recon.run import write_run

    if points < 1 or photons <= 0 or bead_sigma_mm < 0 or not 0 < fill <= 1:
        raise ConfigError("simulate: --calibration-target points:N needs N ≥ 1, photons > 0, bead σ ≥ 0, "
                          "fill in (0, 1]")
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
