"""The `recon` command line: parse options, build configs, call the packages, print results.

No logic lives here. User errors (:class:`recon.errors.ReconError`) print one line and exit with
status 2; ``recon --debug …`` shows the traceback instead.

Why this module is long: it is the whole command line, one short function per command (fit,
simulate, batch, fsc, mesh, render, analyze, export, calibrate, system …), most of each the typed
options that ``--help`` shows; splitting it would scatter the one place a user's options are read.
"""

from __future__ import annotations

import functools
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from recon.errors import ReconError

__all__ = ["app", "main"]

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
            typer.echo("error: " + str(err).replace("\n", "\\n"), err=True)  # one line, even for odd paths
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
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the layout drawing (PNG; default: none, the table only).")] = None,
    camera: Annotated[int | None, typer.Option(
        help="Only this camera (index). \\[default: every camera]")] = None,
) -> None:
    """Print every camera, each view's direction, sensor region and light collection; draw the layout."""
    from rich.table import Table

    from optics.system import load_system
    from recon.reporting.system_report import (
        draw_layout,
        off_sensor,
        overlapping_regions,
        summarize_cameras,
        summarize_views,
    )

    system = load_system(system_file)
    console = _console()
    if camera is None:
        cams = Table(title=f"{system.name}: {len(system.cameras)} camera(s), box centre "
                     f"{[round(float(v), 3) for v in system.volume.center_mm]} mm")
        for col in ("#", "camera", "position mm", "looks along", "distance mm", "magnification",
                    "object pixel µm", "principal point px", "f/#", "views"):
            cams.add_column(col, justify="right")
        for c in summarize_cameras(system):
            cams.add_row(str(c.index), c.name, _triple(c.position_mm, ".1f"), _triple(c.direction, ".3f"),
                         f"{c.distance_mm:.1f}", f"{c.magnification:.4f}", f"{c.object_pixel_um:.2f}",
                         _triple(c.principal_point_px, ".1f"), f"{c.f_number:g}", str(c.views))
        console.print(cams)
    shown = {}
    for index in range(len(system.cameras)) if camera is None else [camera]:
        rows = shown[index] = summarize_views(system, index, source=str(system_file))
        table = Table(title=f"{system.name}: {len(rows)} views of camera {index} "
                      f"({system.cameras[index].name})")
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
        overlaps = overlapping_regions([r.region for r in rows])
        console.print(table)
        console.print(f"total collected: {100 * total:.4f} % of 4π; view pixels: {pixels}; "
                      f"overlapping regions: {', '.join(overlaps) if overlaps else 'none'}")
        for r in rows:
            if r.collected_fraction == 0 and not r.chief_ray_hits_box:
                console.print(f"warning: no light from the box centre reaches the lens by {r.region.name}; "
                              "re-aim or move it (recon simulate and fit refuse a view without light)")
            beyond = off_sensor(system, index, r.region)
            if beyond:
                console.print(f"warning: {beyond}")
    if out is not None:
        draw_layout(system, shown, out)
        console.print(f"layout drawn to {out} (the traced rays and sensor regions of "
                      f"{'every camera' if camera is None else f'camera {camera}'})")


def _triple(values, spec: str) -> str:
    return "(" + ", ".join(format(float(v), spec) for v in values) + ")"


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
    from recon.environment import doctor_lines

    console = _console()
    for line in doctor_lines():
        console.print(line)


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
    truth_voxel_mm: Annotated[float, typer.Option(
        help="Voxel of truth.tif, mm; 0: 0.02 mm, coarser beyond 256 voxels along the box's longest "
        "edge.")] = 0.0,
    no_dark: Annotated[bool, typer.Option(
        "--no-dark", help="Write no dark frames: the fit subtracts the sensor's offset_adu.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run.")] = False,
    calibration_target: Annotated[str | None, typer.Option(
        "--calibration-target", help="points:N — a point-source target set, not a phantom run.")] = None,
    true_system: Annotated[Path | None, typer.Option(
        "--true-system", help="Instrument that really takes the images (`recon system perturb`).")] = None,
    target_photons: Annotated[float, typer.Option(help="Calibration target: photons per exposure.")] = 2e8,
    bead_um: Annotated[float, typer.Option(help="Calibration target: source σ, µm.")] = 10.0,
    camera_sensitivity: Annotated[str | None, typer.Option(
        "--camera-sensitivity", help="Comma-separated factors, one per camera, by which each records "
        "more or less light than the system file predicts (unequal cameras). \\[default: all 1]")] = None,
    campaign: Annotated[int | None, typer.Option(
        "--campaign", help="Simulate N shots of a drifting cloud into OUT/shot_0000 … (for recon batch; "
        "default: one run).",
    )] = None,
    drift_um: Annotated[float, typer.Option(
        "--drift-um", help="Campaign: the centre's random-walk step per axis and shot, µm.")] = 20.0,
    atom_spread: Annotated[float, typer.Option(
        "--atom-spread", help="Campaign: the atom number's relative shot-to-shot sd.")] = 0.03,
) -> None:
    """Simulate a run with known truth: views (TIFF), dark frames, truth.tif, run.toml."""
    from recon.reporting.progress import Progress
    from recon.simulation.simulate import simulate_run

    if calibration_target is not None:
        if campaign is not None:
            raise ReconError("simulate: --campaign and --calibration-target exclude each other; pass one")
        _simulate_target(system_file, out, calibration_target, true_system, target_photons, bead_um, seed,
                         overwrite, phantom)
        return
    if true_system is not None:
        raise ReconError("simulate: --true-system is only used with --calibration-target; drop it")
    if phantom is None:
        raise ReconError("simulate: pass --phantom NAME (or --calibration-target points:N for a target set)")
    bar = Progress("simulate", log_every=1)
    if campaign is not None:
        from recon.simulation.campaign import simulate_campaign

        simulate_campaign(system_file, phantom, out, campaign, atoms=atoms, drift_um=drift_um,
                          atom_spread=atom_spread, seed=seed, overwrite=overwrite,
                          progress=lambda done, total: bar.log(f"simulate: shot {done}/{total}"),
                          photons_per_atom=photons_per_atom, frames=frames, noise=noise, samples=samples,
                          step_mm=step_mm, truth_voxel_mm=truth_voxel_mm,
                          camera_sensitivity=_factors(camera_sensitivity), dark_frames=not no_dark)
        typer.echo(f"wrote {out}: {campaign} shots (shot_0000 …), their truth in {out}/truth.csv")
        return
    state = {"last": -1}

    def progress(done: int, total: int) -> None:
        pct = int(100 * done / total)
        if pct // 10 != state["last"]:
            state["last"] = pct // 10
            bar.log(f"simulate: {done}/{total} pixels rendered ({pct} %)")

    summary = simulate_run(system_file, phantom, out, atoms=atoms, photons_per_atom=photons_per_atom,
                           frames=frames, noise=noise, seed=seed, samples=samples, step_mm=step_mm,
                           truth_voxel_mm=truth_voxel_mm, camera_sensitivity=_factors(camera_sensitivity),
                           dark_frames=not no_dark, overwrite=overwrite,
                           progress=progress)
    typer.echo(f"wrote {out}: {summary['views']} views, {summary['pixels']} pixels, "
               f"{summary['expected_e']:.4g} expected photoelectrons, "
               f"{summary['atoms_in_box']:.4g} atoms inside the box")


def _factors(text: str | None) -> list[float] | None:
    """``"1, 0.5, 2"`` → [1.0, 0.5, 2.0]; None stays None."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ReconError("simulate: --camera-sensitivity must be comma-separated numbers, "
                         f"got {text!r}") from None


def _simulate_target(system_file, out, target, true_system, photons, bead_um, seed, overwrite,
                     phantom) -> None:
    from recon.reporting.progress import Progress
    from recon.simulation.target import parse_calibration_target, simulate_calibration_target

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

    from calibration.report import view_table
    from recon.jobs.calibrate import calibrate as run_calibration

    console = _console()
    outcome = run_calibration(images, system_file, out, fit_groups=fit_groups,
                              known_positions=known_positions, aperture_samples=aperture_samples,
                              max_iterations=max_iterations, overwrite=overwrite, log=console.print)
    result, obs, written = outcome.result, outcome.observations, outcome.written
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
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output directory \\[default: fits/<run>].")] = None,
    field: Annotated[str | None, typer.Option(
        help="voxel (default: EM) | hashgrid | siren | fourier | gauss | tensorf | splitnet | mulfagrid "
             "(Adam)")] = None,
    backend: Annotated[str | None, typer.Option(
        help="Hash-grid backend: auto | torch | tcnn (default auto, or --config's)")] = None,
    device: Annotated[str | None, typer.Option(
        help="auto | cpu | cuda (default auto, or --config's)")] = None,
    steps: Annotated[int | None, typer.Option(help="The most steps (default 1500); held-out pixels stop "
                                              "the fit before.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="Fit settings (TOML; every key with its default: data/fit_defaults.toml).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0, or --config's).")] = None,
    split_halves: Annotated[bool, typer.Option("--split-halves", help="Fit two independent halves of the "
                                               "data and report their FSC (0.143).")] = False,
    split: Annotated[str, typer.Option(help="How to halve: auto | thinning (binomial, one frame) | frames "
                                       "(even/odd shots).")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt with the settings "
                                          "it was written with, unless given again.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing OUT.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only the summary.")] = False,
    refine: Annotated[str | None, typer.Option(
        "--refine", help="Self-calibrate: refine mirrors[,pose,focus] jointly with the density "
        "(default: nothing refined).")] = None,
    pool_cache: Annotated[str | None, typer.Option(
        "--pool-cache", help="Directory of traced ray pools reused by later shots through the same "
        "instrument, or 'off' (default: $RECON_POOL_CACHE, else ~/.cache/recon/pools).")] = None,
    fringes: Annotated[bool, typer.Option("--fringes", help="Also fit the density's interference fringes "
                                          "(metrics.json, renders/fringes.png, the report).")] = False,
    uncertainty: Annotated[int | None, typer.Option(
        "--uncertainty", help="Refit K binomial-thinning splits of the photons into halves (2K fits of half "
        "the data) for each figure's noise sd (metrics.json, the summary, the report; default 0: none, "
        "or --config's).")] = None,
) -> None:
    """Fit a density field to a run and write density.tif, renders, metrics and a report.

    A simulated run's truth.tif is compared with the fit by FSC (fsc-truth/, threshold 0.5).
    """
    from recon.jobs.fit import fit as run_fit
    from recon.reporting.progress import Progress
    from recon.reporting.summary import summary_lines

    outcome = run_fit(views, out=out, config=config, split_halves=split_halves, split=split, resume=resume,
                      overwrite=overwrite, make_progress=lambda cfg: Progress("fit", log_every=cfg.log_every,
                                                                             quiet=quiet),
                      field=field, backend=backend, device=device, steps=steps, seed=seed, refine=refine,
                      pool_cache=_pool_cache_dir(pool_cache), command=shlex.join(["recon", *sys.argv[1:]]),
                      fringes=fringes or None, uncertainty_splits=uncertainty)
    metrics, out, cfg = outcome.metrics, outcome.out, outcome.config
    for line in summary_lines(metrics):
        typer.echo(line)
    typer.echo(f"wrote {out}/ (density.tif, metrics.json, report.html, renders/)")
    if cfg.refine:
        typer.echo(f"refined system: {out}/refined_system.toml (changes in {out}/refinement.json)")


def _pool_cache_dir(option: str | None) -> Path | None:
    """The ray-pool cache: the option, else $RECON_POOL_CACHE, else the user's cache; None for 'off'."""
    choice = option if option is not None else os.environ.get("RECON_POOL_CACHE")
    if choice is not None:
        return None if choice.strip().lower() == "off" else Path(choice).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "recon" / "pools"


@app.command()
@_user_errors
def inspect(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (run.toml + TIFF frames).")],
    sheet: Annotated[Path | None, typer.Option("--sheet", help="Write a contact sheet (PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """What a run holds: per-view photoelectron statistics, saturation, SNR and warnings."""
    import json

    from recon.jobs.inspect import inspect as inspect_run_dir
    from recon.reporting.inspect_views import format_table

    run, stats = inspect_run_dir(run_dir, sheet=sheet)
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
    if sheet is not None:  # with --json on stderr, so that stdout stays one JSON document
        typer.echo(f"contact sheet written to {sheet}", err=as_json)


@app.command()
@_user_errors
def fsc(
    first: Annotated[Path, typer.Argument(help="Volume TIFF, or a fit output directory.")],
    second: Annotated[Path | None, typer.Argument(help="Second volume TIFF (same grid).")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="True density (truth.tif) to compare with; "
                                               "resampled onto the fit's grid.")] = None,
    threshold: Annotated[str | None, typer.Option(help="0.143 | 0.5 | half-bit | one-bit | a number "
                                                  "\\[default: 0.5 against a truth, else 0.143].")] = None,
    mask: Annotated[str, typer.Option(help="none | sphere (soft, phase-randomisation corrected).")] = "none",
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for fsc.csv/json/png "
                      "\\[default: OUT/fsc-truth or OUT/fsc-halves, or ./fsc].")] = None,
) -> None:
    """Fourier shell correlation: resolution of A vs B, of a fit vs --truth, or of a fit's halves.

    A fit directory without half maps and without --truth is compared with the truth its fit
    recorded (a simulated run's truth.tif).
    """
    from recon.jobs.compare import compare_paths, existing_fsc_outputs
    from recon.reporting.summary import summary_line

    before = existing_fsc_outputs(first, out)
    report, written = compare_paths(first, second, truth=truth, threshold=threshold,
                                    mask=None if mask == "none" else mask, out=out)
    typer.echo(summary_line(report))
    verb = "replaced the earlier comparison in" if written in before else "wrote"
    typer.echo(f"{verb} {written}/ (fsc.csv, fsc.json, fsc.png)")


@app.command()
@_user_errors
def analyze(
    source: Annotated[Path, typer.Argument(help="Fit output directory or density TIFF.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for fringes.json and fringes.png. \\[default: the fit's directory]")] = None,
) -> None:
    """Fit the interference fringes of a density: period, direction, contrast, phase, with sds."""
    from recon.jobs.analyze import analyze as run_analyze

    outcome = run_analyze(source, out=out)
    typer.echo(outcome.summary())
    verb = "replaced" if outcome.replaced else "wrote"
    typer.echo(f"{verb} {outcome.written[0]} and {outcome.written[1]}")


@app.command()
@_user_errors
def mesh(
    source: Annotated[Path, typer.Argument(help="Fit output directory or density TIFF.")],
    out: Annotated[Path, typer.Option("--out", help="Mesh file to write (.stl, .ply, .obj, .vtp).")],
    level: Annotated[str, typer.Option(help="auto (Otsu), a value, or fraction:F of the maximum.")] = "auto",
    fmt: Annotated[str | None, typer.Option("--format", help="stl|ply|obj|vtp (default: suffix).")] = None,
    smooth: Annotated[str, typer.Option(help="none or taubin (volume-preserving).")] = "none",
    decimate: Annotated[float | None, typer.Option(
        help="Fraction of triangles to remove, (0, 1) (default: keep them all).")] = None,
    largest: Annotated[bool, typer.Option("--largest", help="Keep only the largest component.")] = False,
    min_part: Annotated[float, typer.Option(
        "--min-part", help="Remove specks holding less than this fraction of the mass above the level, and "
                           "fill cavities of less than this fraction of its volume (0: keep all).")] = 1e-3,
    compare: Annotated[Path | None, typer.Option("--compare", help="CAD mesh to compare with.")] = None,
    align: Annotated[str, typer.Option(help="none or icp (rigid) before comparing.")] = "none",
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
) -> None:
    """Extract the iso-surface in millimetres (world frame) and export it for CAD viewers."""
    from recon.jobs.mesh import mesh as make_mesh

    outcome = make_mesh(source, out, level=level, fmt=fmt, smooth=smooth, decimate=decimate, largest=largest,
                        min_part=min_part, compare=compare, align=align, overwrite=overwrite)
    typer.echo(outcome.summary.format())
    typer.echo(f"wrote {outcome.written[0]} and {outcome.written[1]}")
    if outcome.comparison is not None:
        typer.echo(outcome.comparison.format())
        typer.echo(f"wrote {outcome.written[2]} and {outcome.written[3]}")


@app.command()
@_user_errors
def batch(
    shots: Annotated[Path, typer.Argument(help="Folder of run directories (or a file listing them, one per "
                                          "line).")],
    out: Annotated[Path, typer.Option("--out", help="Campaign directory (shots/, manifest.json, results.csv, "
                                      "report.html).")],
    engine: Annotated[str, typer.Option(help="local (processes here) | ray")] = "local",
    address: Annotated[str | None, typer.Option(help="A running Ray cluster's address (--engine ray); "
                                                "default: a private local Ray.")] = None,
    workers: Annotated[int, typer.Option(help="Shots fitted at once.")] = 1,
    threads: Annotated[int, typer.Option(help="Torch threads per fit; 0: the cores shared among the local "
                                         "workers (1 per Ray task).")] = 0,
    gpus_per_fit: Annotated[float, typer.Option("--gpus-per-fit", help="GPUs each Ray task asks for.")] = 0.0,
    config: Annotated[Path | None, typer.Option(
        "--config",
        help="Fit settings (TOML) for every shot (default: recon fit's, data/fit_defaults.toml).")] = None,
    retries: Annotated[int, typer.Option(help="Further attempts of a failed shot.")] = 2,
    warm_start: Annotated[bool, typer.Option(
        "--warm-start", help="Start each shot's EM from the last finished earlier shot's density.")] = False,
    pool_cache: Annotated[str | None, typer.Option(
        "--pool-cache", help="Traced ray pools shared by the shots, or 'off' (default: as recon fit).",
    )] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only the summary.")] = False,
) -> None:
    """Fit every shot of a campaign, resumably: CAMPAIGN/shots/<name>/, results.csv, report.html.

    Rerunning the same command skips the shots that are done.
    """
    from recon.jobs.batch import batch as run_batch

    outcome = run_batch(shots, out=out, engine=engine, address=address, workers=workers, threads=threads,
                        gpus_per_fit=gpus_per_fit, config=config, retries=retries, warm_start=warm_start,
                        pool_cache=_pool_cache_dir(pool_cache), log=None if quiet else typer.echo)
    if quiet:
        typer.echo(f"batch: {outcome['done']} done, {outcome['failed']} failed, "
                   f"{outcome['pending']} pending; "
                   f"wrote {outcome['out']}/")
    if outcome["failed"]:
        raise typer.Exit(code=1)


@app.command()
@_user_errors
def render(
    source: Annotated[Path, typer.Argument(help="Fit output directory or density TIFF.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Directory for the pictures. \\[default: OUT/renders/, or <volume>-renders/]")] = None,
    frames: Annotated[int, typer.Option(help="Turntable frames (0: none).")] = 24,
    axis: Annotated[str, typer.Option(help="Turntable axis: x, y or z.")] = "z",
    mode: Annotated[str, typer.Option(help="Turntable frames: mip (maximum intensity) or emission "
                                          "(column density).")] = "mip",
    views: Annotated[bool, typer.Option(
        "--views", help="Also draw each of a fit's views at full size (measured, predicted, residual).")
    ] = False,
    view: Annotated[list[str] | None, typer.Option(
        "--view", help="Also draw this view of the fit at full size (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing pictures.")] = False,
) -> None:
    """Draw a density: projections and a turntable (PNG frames and a GIF) in mm; a fit's views."""
    from recon.jobs.render import render as draw

    outcome = draw(source, out, frames=frames, axis=axis, mode=mode, views=views or (view or False),
                   overwrite=overwrite)
    typer.echo(f"wrote {outcome.mip}" + (f", {len(outcome.frames)} turntable frames and {outcome.animation}"
                                         if outcome.animation else "")
               + (f", {len(outcome.views)} view pictures" if outcome.views else ""))


@app.command()
@_user_errors
def export(
    source: Annotated[Path, typer.Argument(help="Fit output directory or density TIFF.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="The OME-Zarr directory. \\[default: density.ome.zarr beside the TIFF]")] = None,
    levels: Annotated[int, typer.Option(help="Levels of the multiscale pyramid (halvings + 1).")] = 4,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export.")] = False,
) -> None:
    """Write a density as OME-Zarr (multiscale, mm, its origin as a translation) for napari and others."""
    from recon.jobs.export import export as write

    typer.echo(f"wrote {write(source, out, levels=levels, overwrite=overwrite)}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
