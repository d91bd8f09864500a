"""Bad-input matrix through the command line: every case is one line, exit status 2, nothing left behind.

Each test copies the inputs into its own directory, breaks one thing, runs the command through
typer's CliRunner and checks (1) exit status 2, (2) exactly one ``error: …`` line, the last one,
naming the file or key and what to do, no traceback, and (3) that the directory holds exactly
what it held before (no output, no hidden temporary directory or file).

"Not writable": the tests run as root here, and root writes through any permission bits, so an
unwritable output is made by placing it *under a regular file* (``--out FILE/sub``): no user can
create a directory there, root included. (``chmod 000`` would test nothing as root.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import tomli_w
import tomllib
import torch
from typer.testing import CliRunner

from recon.cli import app
from tests.micro import make_micro_case, make_micro_run, micro_system_dict

runner = CliRunner()


# ------------------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, int]:
    """Every path under ``root`` (hidden ones too) → size (directories: -1)."""
    return {str(p.relative_to(root)): (-1 if p.is_dir() else p.lstat().st_size) for p in root.rglob("*")}


def assert_error(res, *needles: str) -> str:
    """Exit status 2 and one ``error:`` line (the last) holding every needle; returns the line."""
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output}"
    assert "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.output
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def invoke_unchanged(root: Path, args: list[str], *needles: str, only_line: bool = True) -> str:
    """Run ``args``; assert the error and that nothing under ``root`` changed."""
    before = snapshot(root)
    res = runner.invoke(app, [str(a) for a in args])
    line = assert_error(res, *needles)
    if only_line:
        assert len([x for x in res.output.splitlines() if x.strip()]) == 1, res.output
    assert snapshot(root) == before
    return line


def edit_toml(path: Path, change) -> None:
    data = tomllib.loads(path.read_text())
    change(data)
    path.write_text(tomli_w.dumps(data))


def write_system(path: Path, change=None) -> Path:
    d = micro_system_dict()
    if change is not None:
        change(d)
    path.write_text(tomli_w.dumps(d))
    return path


NOT_A_DIR = "blocker is a file, not a directory"
MIRROR = {"name": "m1", "center_mm": [0.0, 12.0, 12.0], "normal": [0.0, -0.3, -0.95], "shape": "circle",
          "radius_mm": 4.0, "reflectivity": 0.95}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The micro run, a fit config, and a short finished fit of it (for checkpoint cases)."""
    case = make_micro_case(tmp_path_factory.mktemp("micro"))
    root, run, cfg = case["root"], case["run"], case["cfg"]
    fit = root / "fit"
    res = runner.invoke(app, ["fit", "--views", str(run), "--out", str(fit), "--device", "cpu",
                              "--steps", "10", "--config", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    return {"run": run, "cfg": cfg, "fit": fit, "system": root / "micro.toml"}


@pytest.fixture
def case(tmp_path, micro):
    """A private copy of the run (``tmp_path/run``) and the fit config."""
    shutil.copytree(micro["run"], tmp_path / "run")
    shutil.copy(micro["cfg"], tmp_path / "fit.toml")
    return tmp_path


def fit_args(case: Path, *extra) -> list:
    return ["fit", "--views", case / "run", "--out", case / "out", "--device", "cpu", "--steps", "3",
            "--config", case / "fit.toml", *extra]


# ------------------------------------------------------------------------ run directory, run.toml


def test_views_directory_missing(case):
    invoke_unchanged(case, ["fit", "--views", case / "nope", "--out", case / "out"], "nope", "does not exist")


def test_views_is_a_file(case):
    invoke_unchanged(case, ["fit", "--views", case / "run" / "views" / "direct.tif", "--out", case / "out"],
                     "direct.tif is a file, not a run directory")


def test_run_toml_missing(case):
    (case / "run" / "run.toml").unlink()
    invoke_unchanged(case, fit_args(case), "holds no run.toml")


def test_run_toml_is_a_directory(case):
    (case / "run" / "run.toml").unlink()
    (case / "run" / "run.toml").mkdir()
    invoke_unchanged(case, fit_args(case), "run.toml")


def test_run_toml_not_toml(case):
    (case / "run" / "run.toml").write_text("schema = [unclosed\n")
    invoke_unchanged(case, fit_args(case), "run.toml", "not valid TOML", "fix the syntax")


def test_run_toml_binary(case):
    (case / "run" / "run.toml").write_bytes(b"\xff\xfe\x00garbage\x81")
    invoke_unchanged(case, fit_args(case), "run.toml", "not UTF-8 text", "save it as UTF-8")


def test_run_toml_missing_key(case):
    edit_toml(case / "run" / "run.toml", lambda d: d.pop("system"))
    invoke_unchanged(case, fit_args(case), "run.toml", "'system' is missing", "add it")


def test_run_toml_missing_view_roi(case):
    edit_toml(case / "run" / "run.toml", lambda d: d["views"][0].pop("roi"))
    invoke_unchanged(case, fit_args(case), "'views[0].roi' is missing")


def test_run_toml_unknown_key(case):
    edit_toml(case / "run" / "run.toml", lambda d: d.update(exposur=0.1))
    invoke_unchanged(case, fit_args(case), "'exposur' is not known", "did you mean 'exposure_s'")


def test_run_toml_unknown_view_key(case):
    edit_toml(case / "run" / "run.toml", lambda d: d["views"][0].update(gain=2))
    invoke_unchanged(case, fit_args(case), "'views[0].gain' is not known")


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("photons_per_atom", "many", "'photons_per_atom' must be a number"),
        ("photons_per_atom", -5.0, "'photons_per_atom' must be > 0"),
        ("schema", "recon.run/9", "'schema'"),
        ("views", "direct", "'views' must be an array of tables"),
        ("system", 3, "'system' must be a non-empty string"),
    ],
)
def test_run_toml_wrong_types(case, key, value, needle):
    edit_toml(case / "run" / "run.toml", lambda d: d.update({key: value}))
    invoke_unchanged(case, fit_args(case), "run.toml", needle)


@pytest.mark.parametrize(
    ("roi", "needle"),
    [
        ([987, 737, 27], "4 integers"),
        ([987.0, 737, 27, 27], "4 integers"),
        ([987, 737, 0, 27], "non-positive size"),
        ([-3, 737, 27, 27], "outside the sensor"),
        ([1990, 737, 27, 27], "lies outside the 2001×1501 sensor"),
        ([987, 1490, 27, 27], "lies outside the 2001×1501 sensor"),
    ],
)
def test_roi_wrong_or_outside_the_sensor(case, roi, needle):
    edit_toml(case / "run" / "run.toml", lambda d: d["views"][0].update(roi=roi))
    invoke_unchanged(case, fit_args(case), "views[0].roi", needle)


def test_camera_index_not_in_system(case):
    edit_toml(case / "run" / "run.toml", lambda d: d["views"][0].update(camera=2))
    invoke_unchanged(case, fit_args(case), "'views[0].camera' is 2", "1 camera(s)")


def test_view_that_sees_no_box(case):
    """A view whose pixels have no ray through the box (roi on a far corner of the sensor)."""
    edit_toml(case / "run" / "run.toml", lambda d: d["views"][0].update(roi=[0, 0, 27, 27]))
    invoke_unchanged(case, fit_args(case), "view 'direct'", "sees the box", "fix its roi", only_line=False)


# ------------------------------------------------------------------------------------- frames


def test_frames_missing(case):
    (case / "run" / "views" / "direct.tif").unlink()
    invoke_unchanged(case, fit_args(case), "direct.tif does not exist", "check the path in run.toml")


def test_frames_path_is_a_directory(case):
    (case / "run" / "views" / "direct.tif").unlink()
    (case / "run" / "views" / "direct.tif").mkdir()
    invoke_unchanged(case, fit_args(case), "direct.tif is a directory")


def test_frames_dangling_symlink(case):
    frames = case / "run" / "views" / "direct.tif"
    frames.unlink()
    frames.symlink_to(case / "elsewhere.tif")
    invoke_unchanged(case, fit_args(case), "direct.tif does not exist")


@pytest.mark.parametrize("keep", [0, 8, 100, 0.5, 0.97])
def test_frames_truncated(case, keep):
    frames = case / "run" / "views" / "direct.tif"
    raw = frames.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    frames.write_bytes(raw[:n])
    invoke_unchanged(case, fit_args(case), "view direct", "direct.tif")


@pytest.mark.parametrize(
    ("head", "needle"),
    [(b"", "cannot read"), (b"II*\x00", "holds no images (truncated"), (b"MM\x00*", "holds no images")],
)
def test_frames_corrupt(case, head, needle):
    rng = np.random.default_rng(0)
    (case / "run" / "views" / "direct.tif").write_bytes(head + rng.bytes(4000))
    invoke_unchanged(case, fit_args(case), "view direct", "direct.tif", needle)


def _frames(case, array, **kw):
    tifffile.imwrite(case / "run" / "views" / "direct.tif", array, **kw)


@pytest.mark.parametrize(
    ("array", "kw", "needle"),
    [
        (np.ones((1, 27, 27), np.complex64), {}, "pixel type complex64"),
        (np.full((1, 27, 27), 200, np.uint8), {}, "too narrow for the 16-bit sensor"),
        (np.full((1, 27, 27), -4, np.int32), {}, "negative values"),
        (np.full((1, 20, 27), 500, np.uint16), {}, "has pages of 20×27 px"),
        (np.full((27, 27, 3), 500, np.uint16), {"photometric": "rgb"}, "colour image"),
        (np.full((1, 27, 27), 500, np.uint32) * 1000, {}, "beyond the 16-bit range"),
    ],
    ids=["complex", "uint8", "negative", "shape", "rgb", "above-range"],
)
def test_frames_wrong_dtype_or_shape(case, array, kw, needle):
    _frames(case, array, **kw)
    invoke_unchanged(case, fit_args(case), "view direct", needle)


def test_frames_inf(case):
    a = np.full((1, 27, 27), 300.0, np.float32)
    a[0, 3, 4] = np.inf
    _frames(case, a)
    invoke_unchanged(case, fit_args(case), "holds inf values", "mark dead pixels with NaN")


def test_frames_all_nan(case):
    _frames(case, np.full((1, 27, 27), np.nan, np.float32))
    invoke_unchanged(case, fit_args(case), "holds only NaN")


def test_frames_all_zero(case):
    _frames(case, np.zeros((1, 27, 27), np.uint16))
    invoke_unchanged(case, fit_args(case), "all pixels of", "are zero")


def test_frames_fully_saturated(case):
    _frames(case, np.full((1, 27, 27), 65535, np.uint16))
    invoke_unchanged(case, fit_args(case), "every pixel of", "is saturated", "lower the exposure")


def test_dark_wrong_shape(case):
    tifffile.imwrite(case / "run" / "views" / "direct_dark.tif", np.full((1, 5, 5), 100, np.uint16))
    invoke_unchanged(case, fit_args(case), "dark", "5×5 px")


def test_different_shot_counts(case, micro):
    """Two views of the same frames file hold the same shots; a second file with 2 pages does not."""
    pages = tifffile.imread(case / "run" / "views" / "direct.tif")
    tifffile.imwrite(case / "run" / "views" / "twice.tif", np.stack([pages, pages]).reshape(2, 27, 27))

    def add(d):
        d["views"].append(dict(d["views"][0], name="again", frames="views/twice.tif"))
    edit_toml(case / "run" / "run.toml", add)
    invoke_unchanged(case, fit_args(case), "different numbers of shots")


# --------------------------------------------------------------------------------- system files


def _break(d, where, key, value):
    table = d
    for part in where:
        table = table[part]
    if value is None:
        table.pop(key)
    else:
        table[key] = value


SYSTEM_CASES = [
    ((), "volume", {"min_mm": [0.6, -0.6, -0.6], "max_mm": [-0.6, 0.6, 0.6]}, "inverted or empty"),
    ((), "mirrors", [dict(MIRROR, normal=[0.0, 0.0, 0.0])], "'mirrors[0].normal' must be a non-zero vector"),
    ((), "mirrors", [dict(MIRROR, radius_mm=-4.0)], "'mirrors[0].radius_mm' must be > 0"),
    ((), "mirrors", [{k: v for k, v in MIRROR.items() if k != "radius_mm"} | {
        "shape": "rectangle", "size_mm": [-1.0, 2.0], "u_axis": [1.0, 0.0, 0.0]}], "'mirrors[0].size_mm'"),
    ((), "windows", [{"center_mm": [0, 0, -100], "normal": [0, 0, 1], "thickness_mm": -6.0,
                      "refractive_index": 1.46, "aperture_radius_mm": 30.0}], "'windows[0].thickness_mm'"),
    (("cameras", 0, "sensor"), "width_px", -2001, "'cameras[0].sensor.width_px' must be > 0"),
    (("cameras", 0, "sensor"), "pixel_pitch_um", "3.76",
     "'cameras[0].sensor.pixel_pitch_um' must be a number"),
    (("cameras", 0, "pose"), "up", [0.0, 0.0, 0.0], "'cameras[0].pose.up' must be a non-zero vector"),
    (("cameras", 0, "lens"), "f_number", None, "'cameras[0].lens.f_number' is missing"),
    (("cameras", 0, "lens"), "zoom", 2.0, "'cameras[0].lens.zoom' is not known"),
    ((), "schema", "recon.system/0", "'schema' must be"),
]
SYSTEM_IDS = ["inverted-box", "zero-normal", "negative-radius", "negative-size", "negative-thickness",
              "negative-width", "wrong-type", "zero-up", "missing-key", "unknown-key", "schema"]


@pytest.mark.parametrize(("where", "key", "value", "needle"), SYSTEM_CASES, ids=SYSTEM_IDS)
def test_system_file_errors_in_every_command(case, where, key, value, needle):
    """The same broken system file: `system show`, `simulate` and `fit` (through run.toml)."""
    bad = write_system(case / "bad.toml", lambda d: _break(d, where, key, value))
    invoke_unchanged(case, ["system", "show", bad, "--out", case / "layout.png"], "bad.toml", needle)
    invoke_unchanged(case, ["simulate", "--system", bad, "--phantom", "gaussian", "--out", case / "sim"],
                     "bad.toml", needle)
    shutil.copy(bad, case / "run" / "system.toml")
    invoke_unchanged(case, fit_args(case), "system.toml", needle)


def test_system_file_missing_or_directory(case):
    for path, needle in ((case / "nope.toml", "does not exist"), (case / "run", "is a directory")):
        invoke_unchanged(case, ["system", "show", path], needle)
        invoke_unchanged(case, ["simulate", "--system", path, "--phantom", "gaussian", "--out", case / "s"],
                         needle)
    (case / "run" / "system.toml").unlink()
    invoke_unchanged(case, fit_args(case), "system.toml does not exist")


def test_system_file_not_toml(case):
    bad = case / "bad.toml"
    bad.write_text("[volume\nmin_mm = 1\n")
    invoke_unchanged(case, ["system", "show", bad], "bad.toml: not valid TOML")


def test_system_camera_option_out_of_range(case, micro):
    invoke_unchanged(case, ["system", "show", micro["system"], "--camera", "3"], "camera 3 does not exist")


@pytest.mark.parametrize(
    ("mirror", "needle"),
    [
        (dict(MIRROR, normal=[0.0, 0.3, 0.95]), "no ray from the box reaches the lens by mirror 'm1'"),
        (dict(MIRROR, center_mm=[0.0, 3000.0, 12.0]), "outside the 2001×1501 sensor"),
    ],
    ids=["facing-away", "out-of-view"],
)
def test_mirror_that_no_ray_reaches(case, mirror, needle):
    """simulate refuses it (one line, nothing written); system show draws it and warns."""
    bad = write_system(case / "bad.toml", lambda d: d.update(mirrors=[mirror]))
    invoke_unchanged(case, ["simulate", "--system", bad, "--phantom", "gaussian", "--out", case / "sim"],
                     "bad.toml", "mirror 'm1'", needle.split(" by ")[0], "remove it")
    if needle.startswith("no ray"):
        res = runner.invoke(app, ["system", "show", str(bad)], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "warning: no light from the box centre reaches the lens by m1" in res.output


# ------------------------------------------------------------------------------ fit config files


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('steps = "ten"\n', "'steps' must be an integer"),
        ("lr = true\n", "'lr' must be a finite number"),
        ("lr = nan\n", "'lr' must be a finite number"),
        ("lr = -1.0\n", "'lr' must be > 0"),
        ("batch_pixels = 0\n", "'batch_pixels' must be ≥ 1"),
        ('field_options = "big"\n', "'field_options' must be a table"),
        ("stepz = 3\n", "unknown key 'stepz'"),
        ("steps = \n", "not valid TOML"),
    ],
)
def test_fit_config_errors(case, text, needle):
    (case / "fit.toml").write_text(text)
    invoke_unchanged(case, fit_args(case), needle)


def test_fit_config_missing(case):
    invoke_unchanged(case, [*fit_args(case)[:-2], "--config", case / "none.toml"], "none.toml does not exist")


# ------------------------------------------------------------------------------ output locations


def test_fit_out_exists_needs_overwrite(case):
    (case / "out").mkdir()
    (case / "out" / "keep.txt").write_text("old results")
    invoke_unchanged(case, fit_args(case), "exists and is not empty", "--overwrite")


def test_fit_out_is_a_file(case):
    (case / "out").write_text("not a directory")
    invoke_unchanged(case, fit_args(case), "is a file, not a directory")


def test_fit_out_not_writable(case):
    (case / "blocker").write_text("a regular file")
    args = fit_args(case)
    args[args.index(case / "out")] = case / "blocker" / "out"
    invoke_unchanged(case, args, "cannot write", NOT_A_DIR)


def test_fit_error_after_start_leaves_no_partial_directory(case):
    """An error raised after the output directory was prepared removes its temporary directory."""
    invoke_unchanged(case, fit_args(case, "--backend", "tcnn"), "tcnn", only_line=False)


def test_simulate_out_exists_or_not_writable(case, micro):
    (case / "sim").mkdir()
    invoke_unchanged(case, ["simulate", "--system", micro["system"], "--phantom", "gaussian",
                            "--out", case / "sim"], "exists", "--overwrite")
    (case / "blocker").write_text("a regular file")
    invoke_unchanged(case, ["simulate", "--system", micro["system"], "--phantom", "gaussian", "--samples",
                            "1", "--out", case / "blocker" / "sim"], "cannot write", NOT_A_DIR)


@pytest.mark.parametrize(("factors", "needle"), [("1,a", "comma-separated numbers"),
                                                  ("1,2", "one per camera"), ("-1", "positive factor")])
def test_simulate_camera_sensitivity_must_be_one_positive_number_per_camera(case, micro, factors, needle):
    invoke_unchanged(case, ["simulate", "--system", micro["system"], "--phantom", "gaussian", "--out",
                            case / "sim", "--camera-sensitivity", factors], "--camera-sensitivity", needle)


def test_system_design_out_exists_or_not_writable(case):
    (case / "dome.toml").write_text("# mine\n")
    invoke_unchanged(case, ["system", "design", "--out", case / "dome.toml"], "exists", "--overwrite")
    (case / "blocker").write_text("a regular file")
    invoke_unchanged(case, ["system", "design", "--out", case / "blocker" / "dome.toml"], "cannot write",
                     NOT_A_DIR)


def test_system_show_out_not_writable(case, micro):
    (case / "blocker").write_text("a regular file")
    before = snapshot(case)
    args = ["system", "show", str(micro["system"]), "--out", str(case / "blocker" / "l.png")]
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert_error(res, "cannot write", NOT_A_DIR)  # after the table, which is only printed
    assert snapshot(case) == before


def _volume(path, data):
    from recon.io.volume import Volume, write_volume

    write_volume(path, Volume(data, (-0.75,) * 3, (0.05,) * 3))


def test_mesh_bad_inputs_and_outputs(case):
    p = torch.stack(torch.meshgrid(*[torch.linspace(-0.75, 0.75, 24)] * 3, indexing="ij"), -1)
    good = (p.norm(dim=-1) < 0.5).float().numpy()
    _volume(case / "d.tif", good)
    invoke_unchanged(case, ["mesh", case / "none.tif", "--out", case / "m.stl"], "does not exist")
    invoke_unchanged(case, ["mesh", case / "run", "--out", case / "m.stl"], "holds no density.tif")
    raw = (case / "d.tif").read_bytes()
    (case / "cut.tif").write_bytes(raw[: len(raw) // 2])
    invoke_unchanged(case, ["mesh", case / "cut.tif", "--out", case / "m.stl"], "cut.tif", "file complete?")
    bad = good.copy()
    bad[3, 3, 3] = np.nan
    _volume(case / "nan.tif", bad)
    invoke_unchanged(case, ["mesh", case / "nan.tif", "--out", case / "m.stl"], "NaN or inf")
    tifffile.imwrite(case / "flat.tif", good[0])
    invoke_unchanged(case, ["mesh", case / "flat.tif", "--out", case / "m.stl"], "expected 3-D")
    (case / "cad.stl").write_bytes(b"solid garbage\n not a mesh at all \x00\x01")
    invoke_unchanged(case, ["mesh", case / "d.tif", "--out", case / "m.stl", "--compare", case / "cad.stl"],
                     "cad.stl")
    (case / "m.stl").write_text("old mesh")
    invoke_unchanged(case, ["mesh", case / "d.tif", "--out", case / "m.stl"], "exists", "--overwrite")
    (case / "blocker").write_text("a regular file")
    invoke_unchanged(case, ["mesh", case / "d.tif", "--out", case / "blocker" / "m.stl"], "cannot write",
                     NOT_A_DIR)


# ---------------------------------------------------------------------------------- checkpoints


@pytest.fixture
def fitted(case, micro):
    shutil.copytree(micro["fit"], case / "out")
    return case


def test_resume_without_checkpoint(case):
    invoke_unchanged(case, fit_args(case, "--resume"), "--resume needs", "checkpoint.pt")


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "foreign"])
def test_resume_corrupt_checkpoint(fitted, how):
    ckpt = fitted / "out" / "checkpoint.pt"
    raw = ckpt.read_bytes()
    if how == "garbage":
        ckpt.write_bytes(np.random.default_rng(1).bytes(5000))
    elif how == "truncated":
        ckpt.write_bytes(raw[: len(raw) // 2])
    elif how == "empty":
        ckpt.write_bytes(b"")
    else:
        torch.save({"weights": torch.ones(3)}, ckpt)
    needle = "not a recon checkpoint" if how == "foreign" else "is corrupt"
    invoke_unchanged(fitted, fit_args(fitted, "--resume"), "checkpoint.pt", needle, "without --resume")


def test_resume_under_another_configuration(fitted):
    line = invoke_unchanged(fitted, fit_args(fitted, "--resume", "--field", "voxel"), "checkpoint.pt",
                            "field='hashgrid'", "resume with the same settings")
    assert "'voxel'" in line
    invoke_unchanged(fitted, fit_args(fitted, "--resume", "--seed", "5"), "seed=0")
    text = (fitted / "fit.toml").read_text().replace("hidden_width = 16", "hidden_width = 8")
    (fitted / "fit.toml").write_text(text)
    invoke_unchanged(fitted, fit_args(fitted, "--resume"), "field_options")


def test_resume_with_other_data(fitted, tmp_path):
    """A checkpoint written for one run does not resume against another run's data."""
    other = make_micro_run(tmp_path / "other", seed=11)
    args = fit_args(fitted, "--resume")
    args[args.index(fitted / "run")] = other
    invoke_unchanged(fitted, args, "checkpoint.pt", "other data", "start a new --out")


# ------------------------------------------------------------------------------- campaigns


@pytest.mark.parametrize(("extra", "needle"), [(["--campaign", "0"], "--campaign must be a whole number"),
                                               (["--campaign", "2", "--drift-um", "-3"], "--drift-um"),
                                               (["--campaign", "2", "--calibration-target", "points:4"],
                                                "exclude each other")])
def test_simulate_campaign_bad_requests(case, micro, extra, needle):
    invoke_unchanged(case, ["simulate", "--system", micro["system"], "--phantom", "gaussian", "--out",
                            case / "shots", *extra], needle)


def test_batch_bad_inputs_and_outputs(case, micro):
    shots = case / "shots"
    shots.mkdir()
    shutil.copytree(case / "run", shots / "s1")
    invoke_unchanged(case, ["batch", case / "nowhere", "--out", case / "c"], "does not exist")
    invoke_unchanged(case, ["batch", case / "run", "--out", case / "c"], "is one run", "recon fit --views")
    invoke_unchanged(case, ["batch", shots, "--out", case / "c", "--engine", "spark"],
                     "--engine must be one of")
    invoke_unchanged(case, ["batch", shots, "--out", case / "c", "--workers", "0"], "--workers")
    invoke_unchanged(case, ["batch", shots, "--out", case / "c", "--address", "10.0.0.1:6379"],
                     "--address only applies with --engine ray")
    invoke_unchanged(case, ["batch", shots, "--out", case / "c", "--config", case / "missing.toml"],
                     "missing.toml")
    (case / "blocker").write_text("a regular file")
    invoke_unchanged(case, ["batch", shots, "--out", case / "blocker" / "c"], "cannot write", NOT_A_DIR)
    (case / "c").mkdir()
    (case / "c" / "manifest.json").write_text('{"schema": "recon.campaign/1", "shots": "rm -rf /"}')
    invoke_unchanged(case, ["batch", shots, "--out", case / "c"], "manifest.json", "choose another --out")


def test_an_em_fit_that_finds_no_light_blames_the_data_not_a_learning_rate(tiny_system_file, tmp_path):
    """The DOE through a one-mirror instrument at 200 photons per atom: both views barely see it
    (SNR about 1), EM removes every atom, and the one-line error points at the views, not at Adam's
    settings (which EM does not have)."""
    from recon.simulation.simulate import simulate_run

    run = tmp_path / "run"
    simulate_run(tiny_system_file, "doe", run, atoms=2e5, photons_per_atom=200.0, samples=2, step_mm=0.05,
                 seed=1)
    out = tmp_path / "fit"
    res = runner.invoke(app, ["fit", "--views", str(run), "--out", str(out), "--steps", "8"])
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: fit: the fitted density is zero everywhere; nothing was written."), line
    assert "EM found no light the views explain" in line and "recon inspect" in line and "lr (" not in line
    assert not out.exists()
