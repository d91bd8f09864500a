"""The `recon` command line: parse options, build configs, call the packages, print results.

No logic lives here. User errors (:class:`recon.errors.ReconError`) print one line and exit with
status 2; ``recon --debug …`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from recon.errors import ReconError

app = typer.Typer(
    name="recon",
    help="Reconstruct 3D densities from single-shot multi-view (mirror-dome) images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
system_app = typer.Typer(help="Inspect and design instrument (system) files.", no_args_is_help=True)
app.add_typer(system_app, name="system")

_STATE = {"debug": False}


def _user_errors(fn):
    """Turn ReconError into one line on stderr and exit status 2 (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ReconError as err:
            if _STATE["debug"]:
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as err:
            typer.echo(f"interrupted: {err}" if str(err) else "interrupted", err=True)
            raise typer.Exit(getattr(err, "exit_status", 130)) from None

    return wrapper


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _STATE["debug"] = debug


def _console():
    """A rich console; when output is not a terminal (a log, a pipe), wide enough for the tables."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


@system_app.command("show")
@_user_errors
def system_show(
    system_file: Annotated[Path, typer.Argument(help="System file (TOML).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the layout drawing (PNG).")] = None,
    camera: Annotated[int, typer.Option(help="Camera index.")] = 0,
) -> None:
    """Print each view's direction, sensor region and light collection; draw the layout."""
    from rich.table import Table

    from optics.system import load_system
    from recon.system_report import draw_layout, summarize_views

    system = load_system(system_file)
    if not 0 <= camera < len(system.cameras):
        raise ReconError(f"system show: camera {camera} does not exist in {system_file} "
                         f"(it has {len(system.cameras)}); pass --camera 0..{len(system.cameras) - 1}")
    rows = summarize_views(system, camera)
    table = Table(title=f"{system.name}: {len(rows)} views of camera {camera}")
    for col in ("view", "polar °", "azimuth °", "sensor region (x0, y0, w, h)", "magnification",
                "defocus mm", "blur px", "DoF mm", "collected %", "chief ray in box"):
        table.add_column(col, justify="right")
    for r in rows:
        g = r.region
        table.add_row(g.name, f"{g.polar_deg:.1f}", f"{g.azimuth_deg:.1f}", str(g.roi),
                      f"{g.magnification:.4f}", f"{g.defocus_mm:+.2f}", f"{g.blur_px:.0f}",
                      f"{r.depth_of_field_mm:.3f}", f"{100 * r.collected_fraction:.4f}",
                      "yes" if r.chief_ray_hits_box else "NO")
    total = sum(r.collected_fraction for r in rows)
    pixels = sum(r.region.roi[2] * r.region.roi[3] for r in rows)
    overlaps = _overlaps([r.region for r in rows])
    console = _console()
    console.print(table)
    console.print(f"total collected: {100 * total:.4f} % of 4π; view pixels: {pixels}; "
                  f"overlapping regions: {', '.join(overlaps) if overlaps else 'none'}")
    for r in rows:
        if r.collected_fraction == 0 and not r.chief_ray_hits_box:
            console.print(f"warning: no light from the box centre reaches the lens by {r.region.name}; "
                          "re-aim or move it (recon simulate and fit refuse a view without light)")
    if out is not None:
        draw_layout(system, rows, out, camera)
        console.print(f"layout drawn to {out}")


def _overlaps(regions) -> list[str]:
    found = []
    for i, a in enumerate(regions):
        for b in regions[i + 1:]:
            ax, ay, aw, ah = a.roi
            bx, by, bw, bh = b.roi
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append(f"{a.name}/{b.name}")
    return found


@system_app.command("design")
@_user_errors
def system_design(
    out: Annotated[Path, typer.Option("--out", help="System file to write.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Regenerate the default mirror-dome instrument (data/systems/magis_dome.toml)."""
    from optics.design import design_dome
    from optics.system import save_system

    if out.exists() and not overwrite:
        raise ReconError(f"system design: {out} exists; pass --overwrite to replace it")
    header = (
        "MAGIS-100 single-shot multi-view imager: default instrument of recon.\n"
        "Lens and sensor: REFERENCE.md §1 (magis-slac NeuS config / gradoptics defaults).\n"
        "The mirror layout is OUR OWN DESIGN (the real one is not public): mirrors on an\n"
        "ellipsoid with foci at the cloud and the lens so every mirror view is in focus;\n"
        "see optics/design.py. Generated by: recon system design --out " + str(out)
    )
    save_system(design_dome(), out, header=header)
    typer.echo(f"wrote {out}")


@system_app.command("perturb")
@_user_errors
def system_perturb(
    system_file: Annotated[Path, typer.Argument(help="Nominal system file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Perturbed system file to write.")],
    tilt_deg: Annotated[float, typer.Option("--tilt-deg", help="σ of each in-plane tilt, °.")] = 0.5,
    shift_um: Annotated[float, typer.Option("--shift-um", help="σ of each shift component, µm.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a realistically wrong instrument: every mirror randomly tilted and shifted."""
    from calibration.perturb import mirror_errors, perturb_system
    from optics.system import load_system, save_system

    if out.exists() and not overwrite:
        raise ReconError(f"system perturb: {out} exists; pass --overwrite to replace it")
    nominal = load_system(system_file, dtype=__import__("torch").float64)
    perturbed = perturb_system(nominal, tilt_deg=tilt_deg, shift_um=shift_um, seed=seed)
    header = (f"Perturbed from {system_file} by `recon system perturb --tilt-deg {tilt_deg:g} "
              f"--shift-um {shift_um:g} --seed {seed}`")
    save_system(perturbed, out, header=header)
    err = mirror_errors(nominal, perturbed)
    typer.echo(f"wrote {out}: {len(err.names)} mirrors, tilt RMS {err.tilt_rms_deg:.3f}°, "
               f"offset along the normal RMS {err.shift_rms_um:.1f} µm")


@app.command()
@_user_errors
def doctor() -> None:
    """Report versions, devices and which field backends are available (and why not)."""
    import platform
    from importlib import metadata

    import torch

    console = _console()
    console.print(f"recon {__import__('recon').__version__}, Python {platform.python_version()} "
                  f"on {platform.platform()}")
    for pkg in ("torch", "numpy", "scipy", "tifffile", "typer", "rich", "matplotlib", "pyvista",
                "vtk", "tinycudann"):
        try:
            version = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            version = "not installed"
        console.print(f"  {pkg:<11} {version}")
    console.print(f"CPU threads: {torch.get_num_threads()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            console.print(f"CUDA device {i}: {torch.cuda.get_device_name(i)}")
    else:
        console.print("CUDA: not available (torch CUDA build: "
                      f"{'yes' if torch.version.cuda else 'no'})")
    try:
        from recon.encoding import tcnn_status
    except ImportError:  # encoding module not present in this build
        console.print("hash-grid backends: torch")
        return
    ok, reason = tcnn_status()
    console.print("hash-grid backends: torch (always)" + (", tcnn" if ok else ""))
    console.print(f"tiny-cuda-nn: {'available' if ok else 'unavailable — ' + reason}")


@app.command()
@_user_errors
def simulate(
    system_file: Annotated[Path, typer.Option("--system", help="System file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    phantom: Annotated[str | None, typer.Option(
        help="gaussian|fringes|donut|spike|clouds|sphere|doe or a .toml")] = None,
    atoms: Annotated[float, typer.Option(help="Atoms in the cloud.")] = 1e6,
    photons_per_atom: Annotated[float, typer.Option(help="Photons scattered per atom.")] = 200.0,
    frames: Annotated[int, typer.Option(help="Repeated shots (TIFF pages).")] = 1,
    noise: Annotated[str, typer.Option(help="poisson | none (expected values, float32)")] = "poisson",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    samples: Annotated[int, typer.Option(help="Sub-pixel × aperture samples per pixel.")] = 16,
    step_mm: Annotated[float, typer.Option(help="Sample spacing along rays, mm.")] = 0.01,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run.")] = False,
    calibration_target: Annotated[str | None, typer.Option(
        "--calibration-target", help="points:N — a point-source target set, not a phantom run.")] = None,
    true_system: Annotated[Path | None, typer.Option(
        "--true-system", help="Instrument that really takes the images (`recon system perturb`).")] = None,
    target_photons: Annotated[float, typer.Option(help="Calibration target: photons per exposure.")] = 2e8,
    bead_um: Annotated[float, typer.Option(help="Calibration target: source σ, µm.")] = 10.0,
) -> None:
    """Simulate a run with known truth: views (TIFF), dark frames, truth.tif, run.toml."""
    from recon.progress import Progress
    from recon.simulate import simulate_run

    if calibration_target is not None:
        _simulate_target(system_file, out, calibration_target, true_system, target_photons, bead_um, seed,
                         overwrite, phantom)
        return
    if true_system is not None:
        raise ReconError("simulate: --true-system is only used with --calibration-target; drop it")
    if phantom is None:
        raise ReconError("simulate: pass --phantom NAME (or --calibration-target points:N for a target set)")
    bar = Progress("simulate", log_every=1)
    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        pct = int(100 * done / total)
        if pct // 10 != state["last"]:
            state["last"] = pct // 10
            bar.log(f"simulate: {done}/{total} pixels rendered ({pct} %)")

    summary = simulate_run(system_file, phantom, out, atoms=atoms, photons_per_atom=photons_per_atom,
                           frames=frames, noise=noise, seed=seed, samples=samples, step_mm=step_mm,
                           overwrite=overwrite, progress=progress)
    typer.echo(f"wrote {out}: {summary['views']} views, {summary['pixels']} pixels, "
               f"{summary['expected_e']:.4g} expected photoelectrons, "
               f"{summary['atoms_in_box']:.4g} atoms inside the box")


def _simulate_target(system_file, out, target, true_system, photons, bead_um, seed, overwrite,
                     phantom) -> None:
    from recon.progress import Progress
    from recon.simulate import parse_calibration_target, simulate_calibration_target

    if phantom is not None:
        raise ReconError("simulate: --phantom and --calibration-target exclude each other; pass one")
    bar = Progress("simulate", log_every=1)
    summary = simulate_calibration_target(
        system_file, out, points=parse_calibration_target(target), true_system_path=true_system,
        photons=photons, bead_sigma_mm=bead_um * 1e-3, seed=seed, overwrite=overwrite,
        progress=lambda done, total: bar.log(f"simulate: exposure {done}/{total}"))
    mean = sum(summary["mean_electrons_per_view"].values()) / max(summary["views"], 1)
    typer.echo(f"wrote {out}: calibration target, {summary['positions']} positions × "
               f"{summary['views']} views, "
               f"{mean:.4g} photoelectrons per spot on average; positions in {out}/target.toml")


@app.command()
@_user_errors
def calibrate(
    images: Annotated[Path, typer.Option("--images", help="Target set (run directory with target.toml).")],
    system_file: Annotated[Path, typer.Option("--system", help="Nominal system file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Calibrated system file to write.")],
    fit_groups: Annotated[str, typer.Option("--fit", help="mirrors,pose,focus,distortion")] = "mirrors",
    known_positions: Annotated[bool, typer.Option(
        "--known-positions/--unknown-positions", help="Use target.toml's positions, or fit them.")] = True,
    aperture_samples: Annotated[int, typer.Option(help="Aperture samples per predicted spot.")] = 512,
    max_iterations: Annotated[int, typer.Option(help="L-BFGS iterations at most.")] = 400,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
) -> None:
    """Refine mirrors (and pose, focus, distortion) from point-source target images."""
    from rich.table import Table

    from calibration.bundle import CalibrationConfig, measure_spots
    from calibration.bundle import calibrate as run_calibration
    from calibration.model import parse_fit_groups
    from calibration.report import output_paths, view_table, write_calibration_outputs
    from calibration.target import read_target_spec
    from optics.system import load_system
    from recon.fitjob import versions
    from recon.run import load_run

    paths = output_paths(out)
    for p in paths.values():
        if p.exists() and not overwrite:
            raise ReconError(f"calibrate: {p} exists; pass --overwrite or choose another --out")
    cfg = CalibrationConfig(fit=parse_fit_groups(fit_groups), known_positions=known_positions,
                            n_aperture=aperture_samples, max_iterations=max_iterations)
    if aperture_samples < 16 or max_iterations < 1:
        raise ReconError("calibrate: --aperture-samples must be ≥ 16 and --max-iterations ≥ 1")
    import torch

    nominal = load_system(system_file, dtype=torch.float64)
    spec = read_target_spec(images)
    run = load_run(images)
    names = {nominal.path_name(p): p for p in range(nominal.n_paths)}
    views = []
    for v in run.views:
        if v.name not in names:
            raise ReconError(f"calibrate: view '{v.name}' of {images} is no path of {system_file} "
                             f"(paths: {', '.join(names)}); use the system the set was recorded with")
        if v.n_frames < len(spec.exposures) or max(spec.exposures) >= v.n_frames:
            raise ReconError(f"calibrate: view {v.name} has {v.n_frames} pages but target.toml names "
                             f"exposures up to {max(spec.exposures)}; one page per position")
        pages = list(spec.exposures)
        views.append((v.name, names[v.name], v.roi, v.electrons[pages].numpy(), v.mask[pages].numpy()))
    console = _console()
    obs = measure_spots(views, nominal, positions_mm=spec.positions_mm if known_positions else None,
                        bead_sigma_mm=spec.bead_sigma_mm)
    console.print(f"{int(obs.observed.sum())} spots in {len(views)} views × {obs.n_positions} exposures")
    if obs.skipped:
        console.print(f"warning: {len(obs.skipped)} left out (listed in the report): {obs.skipped[0]}"
                      + (" …" if len(obs.skipped) > 1 else ""))
    result = run_calibration(nominal, obs, cfg, progress=console.print)
    written = write_calibration_outputs(result, obs, cfg, out, images=str(images),
                                        nominal_path=str(system_file), versions=versions())
    table = Table(title=f"reprojection RMS per view (px), {obs.n_positions} positions")
    for col in ("view", "spots", "centroid σ px", "RMS before", "RMS after"):
        table.add_column(col, justify="right")
    for r in view_table(result, obs):
        table.add_row(r["view"], str(r["spots"]), f"{r['centroid_sigma_px']:.4f}",
                      f"{r['rms_before_px']:.3f}", f"{r['rms_after_px']:.4f}")
    console.print(table)
    changes = result.model.changes()
    if "mirrors" in changes:
        t = Table(title="mirror changes (nominal → calibrated) ± standard error")
        for col in ("mirror", "tilt °", "offset along normal µm"):
            t.add_column(col, justify="right")
        errors = (result.uncertainty or {}).get("mirrors") or [{}] * len(changes["mirrors"])
        for m, e in zip(changes["mirrors"], errors, strict=True):
            t.add_row(m["name"], f"{m['tilt_deg']:.4f} ± {e.get('tilt_deg', math.nan):.4f}",
                      f"{m['normal_shift_um']:+.2f} ± {e.get('normal_shift_um', math.nan):.2f}")
        console.print(t)
    for key in ("pose", "focus_distance_mm", "distortion_k1_k2_p1_p2"):
        if key in changes:
            console.print(f"{key}: {changes[key]}")
    console.print(f"RMS {result.rms_px:.4f} px after {result.iterations} iterations ({result.time_s:.1f} s)")
    console.print(f"wrote {written['system']}, {written['report']}, {written['residuals']}")


@app.command()
@_user_errors
def fit(
    views: Annotated[Path, typer.Option("--views", help="Run directory (run.toml + TIFF frames).")],
    out: Annotated[Path | None, typer.Option("--out", help="Output directory [default: fits/<run>].")] = None,
    field: Annotated[str | None, typer.Option(help="hashgrid | voxel | siren")] = None,
    backend: Annotated[str | None, typer.Option(help="Hash-grid backend: auto | torch | tcnn")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimisation steps.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Fit settings (TOML).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    split_halves: Annotated[bool, typer.Option("--split-halves", help="Fit two independent halves of the "
                                               "data and report their FSC (0.143).")] = False,
    split: Annotated[str, typer.Option(help="How to halve: auto | thinning (binomial, one frame) | frames "
                                       "(even/odd shots).")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt with the settings "
                                          "it was written with, unless given again.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only the summary.")] = False,
    refine: Annotated[str | None, typer.Option(
        "--refine", help="Self-calibrate: refine mirrors[,pose,focus] jointly with the density.")] = None,
) -> None:
    """Fit a density field to a run and write density.tif, renders, metrics and a report.

    A simulated run's truth.tif is compared with the fit by FSC (fsc-truth/, threshold 0.5).
    """
    from recon.fit import load_fit_config
    from recon.fitjob import load_fit_data, run_fit_job, saved_fit_settings, summary_lines
    from recon.progress import Progress

    explicit = dict(field=field, backend=backend, device=device, steps=steps, seed=seed, refine=refine)
    cfg = load_fit_config(config, **explicit)
    if split != "auto" and not split_halves:
        raise ReconError(f"fit: --split {split} only applies with --split-halves; add --split-halves")
    if split_halves and cfg.refine:
        raise ReconError("fit: --refine and --split-halves cannot be combined; refine first, then fit the "
                         "halves with the refined system")
    data, run_name, truth = load_fit_data(views)
    out = out or Path("fits") / run_name
    if resume:  # what was not given now is what the interrupted fit ran with
        cfg = load_fit_config(config, base=saved_fit_settings(out), **explicit)
    progress = Progress("fit", log_every=cfg.log_every, quiet=quiet)
    metrics = run_fit_job(data, cfg, out, run_name=run_name, overwrite=overwrite, resume=resume,
                          progress=progress, truth_path=truth, split_halves=split if split_halves else None)
    for line in summary_lines(metrics):
        typer.echo(line)
    typer.echo(f"wrote {out}/ (density.tif, metrics.json, report.html, renders/)")
    if cfg.refine:
        typer.echo(f"refined system: {out}/refined_system.toml (changes in {out}/refinement.json)")


@app.command()
@_user_errors
def inspect(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (run.toml + TIFF frames).")],
    sheet: Annotated[Path | None, typer.Option("--sheet", help="Write a contact sheet (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """What a run holds: per-view photoelectron statistics, saturation, SNR and warnings."""
    import json

    from recon.inspect import format_table, inspect_run, write_contact_sheet
    from recon.run import load_run

    run = load_run(run_dir)
    stats = inspect_run(run)
    if as_json:
        typer.echo(json.dumps({"run": run.name, "views": [s.to_dict() for s in stats]}, indent=2))
    else:
        console = _console()
        console.print(format_table(stats, title=f"{run.name}: {len(stats)} views"))
        unit = run.density_unit
        truth = run.truth_volume
        console.print(f"photons per atom: {run.photons_per_atom or 'not given'} (densities in {unit}); "
                      f"truth: {truth if truth is not None else 'none (real run)'}")
        warned = sum(1 for s in stats if s.warnings)
        console.print(f"{warned} of {len(stats)} views have warnings" if warned else "no warnings")
    if sheet is not None:
        write_contact_sheet(run, sheet)
        typer.echo(f"contact sheet written to {sheet}")


@app.command()
@_user_errors
def fsc(
    first: Annotated[Path, typer.Argument(help="Volume TIFF, or a fit output directory.")],
    second: Annotated[Path | None, typer.Argument(help="Second volume TIFF (same grid).")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="True density (truth.tif) to compare with; "
                                               "resampled onto the fit's grid.")] = None,
    threshold: Annotated[str | None, typer.Option(help="0.143 | 0.5 | half-bit | one-bit | a number "
                                                  "[default: 0.5 against a truth, else 0.143].")] = None,
    mask: Annotated[str, typer.Option(help="none | sphere (soft, phase-randomisation corrected).")] = "none",
    out: Annotated[Path | None, typer.Option("--out", help="Directory for fsc.csv/json/png "
                                             "[default: OUT/fsc-truth or OUT/fsc-halves, or ./fsc].")] = None,
) -> None:
    """Fourier shell correlation: resolution of A vs B, of a fit vs --truth, or of a fit's halves."""
    from recon.resolution import compare_paths, summary_line

    report, written = compare_paths(first, second, truth=truth, threshold=threshold,
                                    mask=None if mask == "none" else mask, out=out)
    typer.echo(summary_line(report))
    typer.echo(f"wrote {written}/ (fsc.csv, fsc.json, fsc.png)")


def _density_path(source: Path) -> Path:
    """A fit output directory means its density.tif; a file is taken as it is."""
    if source.is_dir():
        path = source / "density.tif"
        if not path.is_file():
            raise ReconError(f"{source} holds no density.tif; pass a fit output directory or a volume TIFF")
        return path
    if not source.exists():
        raise ReconError(f"{source} does not exist; pass a fit output directory or a volume TIFF")
    return source


@app.command()
@_user_errors
def mesh(
    source: Annotated[Path, typer.Argument(help="Fit output directory or density TIFF.")],
    out: Annotated[Path, typer.Option("--out", help="Mesh file to write (.stl, .ply, .obj, .vtp).")],
    level: Annotated[str, typer.Option(help="auto (Otsu), a value, or fraction:F of the maximum.")] = "auto",
    fmt: Annotated[str | None, typer.Option("--format", help="stl|ply|obj|vtp (default: suffix).")] = None,
    smooth: Annotated[str, typer.Option(help="none or taubin (volume-preserving).")] = "none",
    decimate: Annotated[float | None, typer.Option(help="Fraction of triangles to remove, (0, 1).")] = None,
    largest: Annotated[bool, typer.Option("--largest", help="Keep only the largest component.")] = False,
    compare: Annotated[Path | None, typer.Option("--compare", help="CAD mesh to compare with.")] = None,
    align: Annotated[str, typer.Option(help="none or icp (rigid) before comparing.")] = "none",
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
) -> None:
    """Extract the iso-surface in millimetres (world frame) and export it for CAD viewers."""
    from recon.mesh import compare_meshes, extract_mesh, render_preview, write_comparison, write_mesh
    from recon.volume import read_volume

    if out.exists() and not overwrite:
        raise ReconError(f"mesh: {out} exists; pass --overwrite to replace it")
    if compare is not None and not compare.is_file():
        raise ReconError(f"mesh: CAD mesh {compare} does not exist; pass an existing .stl/.ply/.obj/.vtp")
    volume = read_volume(_density_path(source))
    cad = None
    if compare is not None:  # read before anything is written, so a bad CAD file leaves nothing behind
        import warnings

        import pyvista as pv

        try:
            with warnings.catch_warnings():  # VTK reader failures come as multi-line warnings
                warnings.simplefilter("ignore")
                cad = pv.read(str(compare))
        except Exception as err:  # VTK readers raise assorted errors
            raise ReconError(f"mesh: cannot read CAD mesh {compare} ({err})") from None
        if cad is None or cad.n_points == 0:
            raise ReconError(f"mesh: CAD mesh {compare} holds no surface; pass a non-empty mesh file")
    surface, summary = extract_mesh(volume, level=level, smooth=smooth, decimate=decimate, largest=largest)
    write_mesh(surface, out, format=fmt)
    preview = out.with_suffix(".png")
    render_preview(surface, preview, title=out.name)
    typer.echo(summary.format())
    typer.echo(f"wrote {out} and {preview}")
    if cad is not None:
        result = compare_meshes(surface, cad, align=align)
        stem = out.with_suffix("")
        write_comparison(result, Path(f"{stem}_compare.json"), Path(f"{stem}_compare.png"),
                         extra={"cad": str(compare), "mesh": summary.to_dict()})
        typer.echo(result.format())
        typer.echo(f"wrote {stem}_compare.json and {stem}_compare.png")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
