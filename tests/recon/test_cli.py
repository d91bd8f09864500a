import subprocess
import sys

import pytest
from typer.testing import CliRunner

from recon.cli import app

runner = CliRunner()


def test_system_show_prints_table_and_draws(tmp_path):
    out = tmp_path / "layout.png"
    res = runner.invoke(
        app, ["system", "show", "data/systems/magis_dome.toml", "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "r2m08" in res.output and "overlapping regions: none" in res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_system_show_bad_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('schema = "recon.system/1"\nname = "x"\n')
    res = runner.invoke(app, ["system", "show", str(bad)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "volume" in lines[0] and lines[0].startswith("error:")


def test_system_design_refuses_overwrite_and_reproduces_default(tmp_path):
    out = tmp_path / "dome.toml"
    assert runner.invoke(app, ["system", "design", "--out", str(out)]).exit_code == 0
    res = runner.invoke(app, ["system", "design", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    body = lambda p: [ln for ln in open(p).read().splitlines() if not ln.startswith("#")]  # noqa: E731
    assert body(out) == body("data/systems/magis_dome.toml")


def test_doctor_reports_backends():
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "torch" in res.output and "CUDA" in res.output


def test_import_hygiene():
    code = (
        "import sys, recon, recon.cli, optics.trace; "
        "print('tinycudann' in sys.modules, 'pyvista' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_readme_test_command_is_what_ci_runs():
    readme = open("README.md").read()
    block = readme.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    assert "pytest" in block
    assert "test-command" in open(".ci/run").read()


def _sphere_tif(path):
    import torch

    from recon.io.volume import Volume, grid_points, write_volume

    p = grid_points((30, 30, 30), (-0.75, -0.75, -0.75), (0.05,) * 3)
    write_volume(path, Volume((p.norm(dim=-1) < 0.5).float().numpy(), (-0.75,) * 3, (0.05,) * 3))
    assert torch.is_tensor(p)


def test_mesh_command_writes_mesh_and_compares(tmp_path):
    _sphere_tif(tmp_path / "d.tif")
    out = tmp_path / "m.stl"
    res = runner.invoke(app, ["mesh", str(tmp_path / "d.tif"), "--out", str(out), "--compare", str(out)])
    assert res.exit_code == 2 and "does not exist" in res.output and not out.exists()
    res = runner.invoke(app, ["mesh", str(tmp_path / "d.tif"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "watertight   yes" in res.output and out.stat().st_size > 84
    res = runner.invoke(
        app, ["mesh", str(tmp_path / "d.tif"), "--out", str(tmp_path / "n.ply"), "--level", "7"]
    )
    assert res.exit_code == 2 and "no surface at level 7" in res.output
    assert not (tmp_path / "n.ply").exists()
    bad = tmp_path / "b.ply"
    res = runner.invoke(app, ["mesh", str(tmp_path / "d.tif"), "--out", str(bad), "--min-part", "1"])
    assert res.exit_code == 2 and "--min-part 1.0 must be a fraction in [0, 1)" in res.output
    assert not (tmp_path / "b.ply").exists()


def test_the_mesh_commands_default_is_the_librarys():
    import inspect

    from recon.analysis.mesh import MIN_PART
    from recon.cli import mesh
    from recon.jobs.mesh import mesh as mesh_job

    assert inspect.signature(mesh).parameters["min_part"].default == MIN_PART
    assert inspect.signature(mesh_job).parameters["min_part"].default == MIN_PART


def test_simulate_refuses_existing_and_bad_phantom(tmp_path, tiny_system_file):
    res = runner.invoke(app, ["simulate", "--system", str(tiny_system_file), "--phantom", "banana",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "unknown phantom" in res.output and not (tmp_path / "r").exists()
    (tmp_path / "r").mkdir()
    res = runner.invoke(app, ["simulate", "--system", str(tiny_system_file), "--phantom", "gaussian",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--overwrite" in res.output


def _fit(run, out, *extra):
    return runner.invoke(app, ["fit", "--views", str(run), "--out", str(out), "--device", "cpu", *extra])


def test_fit_cli_end_to_end_and_resume(tmp_path, tiny_run):
    import json

    cfg = tmp_path / "fit.toml"
    cfg.write_text('field = "hashgrid"\nbatch_pixels = 128\ncheckpoint_every = 10\nlog_every = 10\n'
                   'voxel_size_mm = 0.05\n')
    out = tmp_path / "fit"
    res = _fit(tiny_run, out, "--steps", "20", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    for name in ("config.json", "checkpoint.pt", "density.tif", "metrics.json", "report.html",
                 "views.npz", "renders/mip.png", "renders/loss.png", "renders/views.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["density_unit"] == "atoms/mm^3"
    assert metrics["backend"] == "torch" and len(metrics["views"]) == 2
    res = _fit(tiny_run, out, "--steps", "20", "--config", str(cfg))
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = _fit(tiny_run, out, "--steps", "30", "--config", str(cfg), "--resume")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30
    res = _fit(tiny_run, out, "--steps", "30", "--config", str(cfg), "--resume", "--field", "voxel")
    assert res.exit_code == 2 and "checkpoint" in res.output
    # Without --config the resumed fit keeps the settings it was started with.
    res = _fit(tiny_run, out, "--steps", "40", "--resume")
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())["fit"]
    assert saved["batch_pixels"] == 128 and saved["voxel_size_mm"] == 0.05 and saved["steps"] == 40
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40


def test_fit_cli_errors(tmp_path, tiny_run):
    res = _fit(tiny_run, tmp_path / "o", "--backend", "tcnn", "--steps", "2")
    assert res.exit_code == 2 and "tcnn" in res.output
    assert not (tmp_path / "o").exists()
    res = _fit(tmp_path / "missing", tmp_path / "o")
    assert res.exit_code == 2 and "does not exist" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    res = _fit(tiny_run, tmp_path / "o", "--config", str(bad))
    assert res.exit_code == 2 and "unknown key 'stepz'" in res.output


def test_simulate_then_inspect_through_the_cli(tmp_path, tiny_system_file):
    run = tmp_path / "run"
    res = runner.invoke(app, ["simulate", "--system", str(tiny_system_file), "--phantom", "gaussian",
                              "--atoms", "1e5", "--samples", "1", "--step-mm", "0.05", "--frames", "2",
                              "--seed", "1", "--out", str(run)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["inspect", str(run)])
    assert res.exit_code == 0, res.output
    assert "run: 2 views" in res.output and "200.0" in res.output and "truth.tif" in res.output


def test_inspect_prints_views_json_and_contact_sheet(tmp_path, tiny_run):
    import json

    res = runner.invoke(app, ["inspect", str(tiny_run), "--sheet", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    assert "direct" in res.output and "m1" in res.output and "truth" in res.output
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    res = runner.invoke(app, ["inspect", str(tiny_run), "--json"])
    views = json.loads(res.output)["views"]
    assert [v["name"] for v in views] == ["direct", "m1"] and all(v["signal_e"] > 0 for v in views)
    res = runner.invoke(app, ["inspect", str(tiny_run), "--json", "--sheet", str(tmp_path / "again.png")])
    assert res.exit_code == 0 and json.loads(res.stdout)["views"] == views  # the sheet's line is on stderr
    assert "contact sheet written" in res.stderr
    res = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_fit_split_halves_then_fsc_commands(tmp_path, tiny_run):
    import json

    import numpy as np

    from recon.io.volume import read_volume

    cfg = tmp_path / "fit.toml"
    # 4 subsets: 10 EM steps are 2.5 passes (of the default 32, a third of one: too few to fit)
    cfg.write_text("batch_pixels = 64\ncheckpoint_every = 10\nvoxel_size_mm = 0.1\nsubsets = 4\n"
                   "patience = 50\n")
    out = tmp_path / "fit"
    res = _fit(tiny_run, out, "--steps", "10", "--config", str(cfg), "--split-halves")
    assert res.exit_code == 0, res.output
    assert "split halves (FSC 0.143)" in res.output and "against the truth (FSC 0.5)" in res.output
    h1, h2, avg = (read_volume(out / n) for n in ("half1.tif", "half2.tif", "density.tif"))
    assert not np.allclose(h1.data, h2.data)  # independent halves, independent seeds
    assert np.allclose(avg.data, (h1.data + h2.data) / 2, rtol=1e-5, atol=1e-6 * float(avg.data.max()))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split_halves"]["split"] == "thinning"
    assert metrics["split_halves"]["fsc"]["threshold"] == "0.143"
    assert metrics["fsc_truth"]["threshold"] == "0.5"
    for sub in ("fsc-halves", "fsc-truth"):
        assert (out / sub / "fsc.csv").is_file() and (out / sub / "fsc.png").is_file()
    assert "Resolution between the split halves" in (out / "report.html").read_text()
    res = _fit(tiny_run, out, "--steps", "14", "--config", str(cfg), "--split-halves", "--resume")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 14
    # Without --config the halves resume with their settings (and the seed they were started with).
    res = _fit(tiny_run, out, "--steps", "16", "--split-halves", "--resume")
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    saved = config["fit"]
    assert saved["batch_pixels"] == 64 and saved["seed"] == 0 and saved["steps"] == 16
    assert config["command"].startswith("recon ")  # the command line, for the report
    # recon fsc on the fit directory recomputes both, and rewrites the report
    (out / "fsc-truth" / "fsc.json").unlink()
    res = runner.invoke(app, ["fsc", str(out), "--truth", str(tiny_run / "truth.tif")])
    assert res.exit_code == 0 and "at 0.5" in res.output, res.output
    assert (out / "fsc-truth" / "fsc.json").is_file()
    assert "Resolution against the truth" in (out / "report.html").read_text()
    assert f"wrote {out / 'fsc-truth'}/" in res.output  # its fsc.json was removed above: new
    res = runner.invoke(app, ["fsc", str(out)])
    assert res.exit_code == 0 and "half 1 vs half 2 at 0.143" in res.output, res.output
    assert f"replaced the earlier comparison in {out / 'fsc-halves'}/" in res.output  # the fit's own
    res = runner.invoke(app, ["fsc", str(out / "half1.tif"), str(out / "half2.tif"), "--threshold",
                              "half-bit", "--out", str(tmp_path / "ab")])
    assert res.exit_code == 0
    assert json.loads((tmp_path / "ab" / "fsc.json").read_text())["threshold"] == "half-bit"
    # two files must share one grid
    _sphere_tif(tmp_path / "sphere.tif")
    res = runner.invoke(app, ["fsc", str(out / "half1.tif"), str(tmp_path / "sphere.tif"), "--out",
                              str(tmp_path / "bad")])
    assert res.exit_code == 2 and "different grids" in res.output and not (tmp_path / "bad").exists()
    res = _fit(tiny_run, tmp_path / "f2", "--steps", "2", "--split-halves", "--split", "frames")
    assert res.exit_code == 2 and "--split thinning" in res.output and not (tmp_path / "f2").exists()
    res = _fit(tiny_run, tmp_path / "f3", "--steps", "2", "--split", "frames")
    assert res.exit_code == 2 and "--split-halves" in res.output


@pytest.fixture(scope="module")
def bright_run(tmp_path_factory, tiny_system_file):
    """The tiny instrument with a bright cloud: far above the noise, so fitting must lower the loss."""
    from recon.simulation.simulate import simulate_run

    out = tmp_path_factory.mktemp("bright") / "run"
    simulate_run(tiny_system_file, "gaussian", out, atoms=2e6, photons_per_atom=2000.0, samples=2,
                 step_mm=0.04, truth_voxel_mm=0.1, seed=5)
    return out


@pytest.mark.parametrize("field", ["hashgrid", "voxel", "siren", "fourier", "gauss", "tensorf", "splitnet",
                                   "mulfagrid"])
def test_each_field_fits_a_tiny_run_with_a_falling_loss(tmp_path, bright_run, field):
    import json

    from recon.fitting.checkpoint import read_checkpoint
    from recon.io.volume import read_volume

    cfg = tmp_path / "fit.toml"
    cfg.write_text("batch_pixels = 64\npool_samples = 2\nvoxel_size_mm = 0.1\ncheckpoint_every = 10\n"
                   "patience = 100\n"
                   # the coordinate MLPs small enough for a test
                   + ("field_options = {mlp_hidden_layers = 2, mlp_width = 64}\n"
                      if field in ("fourier", "gauss", "splitnet") else "")
                   + ("field_options = {tensorf_rank = 8, tensorf_resolution = 24}\n"
                      if field == "tensorf" else "")
                   + ("field_options = {mulfagrid_resolution = 16, mulfagrid_width = 8}\n"
                      if field == "mulfagrid" else "")
                   # EM on this bright run is best by step 5 (a check then would be the first); it
                   # starts from the data's Gaussian, this cloud's shape, so at 30 % of its light.
                   # No boost: the run is simulated with 2 rays a pixel, an error far above its
                   # photon noise, and with its bright pixels boosted EM's first check is its best
                   # (the boost is tested in tests/recon/fitting/test_raypool.py and test_loop.py)
                   + ("check_every = 1\nem_init = 0.3\npool_boost_e = 0\n" if field == "voxel"
                      else "check_every = 5\n")
                   # SIREN at the default lr (1e-2) hovers: its held-out deviance rose from the first
                   # check on one run (48.57 → 50.8) and fell on another; 1e-3 suits its sines
                   + ("lr = 1e-3\nlr_final = 1e-4\n" if field == "siren" else ""))
    out = tmp_path / field
    res = _fit(bright_run, out, "--steps", "40", "--field", field, "--config", str(cfg))
    assert res.exit_code == 0, res.output
    state = read_checkpoint(out / "checkpoint.pt")["state"]
    losses, checks = state["losses"], [d for _, d in state["heldout"]]
    # 40 steps, or fewer where the held-out pixels said the fit had converged (EM, the voxel default).
    assert len(losses) == 40 or (state["stopped"] == "held-out" and field == "voxel")
    assert min(checks) < checks[0]  # the pixels it never saw are predicted better
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["solver"] == ("em" if field == "voxel" else "adam")
    if field == "voxel":  # EM's start, the data's Gaussian, and the Cramér–Rao bound of its parameters
        limit = metrics["shot_noise_limit"]
        assert 0 < limit["atoms_relative_sd"] < 0.1 and all(0 < v < 100 for v in limit["centroid_sd_um"])
    else:
        assert "shot_noise_limit" not in metrics
    assert metrics["converged"] == (state["stopped"] == "held-out")
    assert metrics["convergence"][0]["checks"] == [[k, round(d, 6)] for k, d in state["heldout"]]
    volume = read_volume(out / "density.tif")
    assert volume.data.max() > 0 and volume.meta.get("field") == field


@pytest.mark.parametrize("field", ["hashgrid", "voxel"])
def test_the_grid_solver_fits_a_field_through_the_output_grid_from_the_cli(tmp_path, bright_run, field):
    import json

    from recon.fitting.checkpoint import read_checkpoint
    from recon.io.volume import read_volume

    cfg = tmp_path / "fit.toml"
    cfg.write_text(f'field = "{field}"\nsolver = "grid"\nsubsets = 4\npool_samples = 2\nvoxel_size_mm = 0.1\n'
                   "check_every = 4\npatience = 100\nmax_passes = 10\n"
                   # the voxel field through the grid solver: a softplus grid fitted by Adam
                   + ('field_options = {voxel_resolution = 16}\nlr = 0.05\n' if field == "voxel" else ""))
    out = tmp_path / field
    res = _fit(bright_run, out, "--steps", "24", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    state = read_checkpoint(out / "checkpoint.pt")["state"]
    checks = [d for _, d in state["heldout"]]
    assert len(state["losses"]) == 24 and len(checks) == 6 and min(checks) < checks[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["solver"] == "grid"
    volume = read_volume(out / "density.tif")
    assert volume.data.max() > 0 and volume.meta.get("field") == field and volume.meta.get("solver") == "grid"
    assert "step 2:" in res.output and "(4 steps each)" in res.output  # a pass is `subsets` steps


def test_a_fit_whose_grid_cannot_be_held_is_refused_before_any_work(tmp_path, tiny_run):
    cfg = tmp_path / "fit.toml"
    cfg.write_text("voxel_size_mm = 0.0001\n")
    res = _fit(tiny_run, tmp_path / "out", "--config", str(cfg))
    assert res.exit_code == 2, res.output
    assert "output grid (voxel_size_mm) would be" in res.output and "coarser voxel" in res.output
    assert "traced view" not in res.output and not (tmp_path / "out").exists()


def test_an_out_link_stands_for_its_directory_and_out_dot_is_refused(tmp_path, tiny_run, monkeypatch):
    cfg = tmp_path / "fit.toml"
    cfg.write_text("pool_samples = 2\nvoxel_size_mm = 0.1\nsteps = 4\n")
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    res = _fit(tiny_run, link, "--config", str(cfg))
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and (link / "density.tif").is_file() and (target / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.toml", "link", "real"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    res = _fit(tiny_run, dangling, "--config", str(cfg))
    assert res.exit_code == 2 and "is a link to" in res.output and "not a directory" in res.output
    assert not (tmp_path / "nowhere").exists() and not list(tmp_path.glob(".dangling*"))
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)
    for extra in ((), ("--overwrite",)):
        res = _fit(tiny_run, ".", "--config", str(cfg), *extra)
        assert res.exit_code == 2 and "current directory" in res.output, res.output
    assert list(work.iterdir()) == [] and not list(tmp_path.glob(".here*"))


@pytest.mark.parametrize(("command", "defaults"), [
    (["fit"], ["Output directory [default: fits/<run>]."]),
    (["fsc"], ["[default: 0.5 against a truth, else 0.143].",
               "[default: OUT/fsc-truth or OUT/fsc-halves, or ./fsc]."]),
])
def test_help_shows_the_defaults_written_in_brackets(command, defaults):
    """Rich markup would eat a bracketed "[default: …]" written in a help text."""
    res = runner.invoke(app, [*command, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.replace("│", " ").split())
    for default in defaults:
        assert default in text, text


# Options that have no default by nature: an input one may give or not.
NO_DEFAULT = {"--views", "--phantom", "--calibration-target", "--true-system", "--truth", "--compare",
              "--view", "--sheet"}


def test_every_valued_option_says_its_default():
    """`--help` of every command: each option taking a value shows its default (typer's
    "[default: …]" for a set one, the help text's words for one that falls back on a file or mode)."""
    import typer

    root = typer.main.get_command(app)
    missing, seen = [], 0

    def visit(command, path: str) -> None:  # typer's own click classes: duck-typed
        nonlocal seen
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                visit(sub, f"{path} {name}")
            return
        for param in command.params:
            if param.param_type_name != "option" or param.is_flag or param.hidden:
                continue
            seen += 1
            name = max(param.opts, key=len)
            if name in NO_DEFAULT or param.required:
                continue
            if param.default is None and "default" not in (param.help or "").lower():
                missing.append(f"{path} {name}")

    visit(root, "recon")
    assert seen > 50 and not missing, missing
