"""`recon system perturb`, `recon simulate --calibration-target`, `recon calibrate` end to end."""

import json

import numpy as np
import tifffile
import tomllib
from typer.testing import CliRunner

from optics.system import load_system
from recon.cli import app

runner = CliRunner()


def test_perturb_writes_a_loadable_perturbed_system(tmp_path, dome_files):
    nominal_path = dome_files[0]
    out = tmp_path / "p.toml"
    args = [
        "system",
        "perturb",
        str(nominal_path),
        "--tilt-deg",
        "0.5",
        "--shift-um",
        "50",
        "--seed",
        "2",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "tilt RMS" in res.output and out.read_text().startswith("# Perturbed from")
    p = load_system(out)
    assert [m.name for m in p.mirrors] == [m.name for m in load_system(nominal_path).mirrors]
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(
        app, ["system", "perturb", str(nominal_path), "--tilt-deg", "-1", "--out", str(tmp_path / "q.toml")]
    )
    assert bad.exit_code == 2 and bad.output.startswith("error:") and "tilt-deg" in bad.output


def test_simulate_and_calibrate_end_to_end(tmp_path, dome_files):
    nominal_path, perturbed_path, _, _ = dome_files
    cal = tmp_path / "cal"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--system",
            str(nominal_path),
            "--calibration-target",
            "points:5",
            "--true-system",
            str(perturbed_path),
            "--target-photons",
            "5e7",
            "--seed",
            "1",
            "--out",
            str(cal),
        ],
    )
    assert res.exit_code == 0, res.output
    target = tomllib.loads((cal / "target.toml").read_text())
    assert len(target["positions"]) == 5 and len(target["positions"][0]["position_mm"]) == 3
    assert (cal / "true_system.toml").is_file() and (cal / "system.toml").is_file()
    pages = tifffile.imread(cal / "views" / "r1m01.tif")
    assert pages.shape[0] == 5 and pages.dtype == np.uint16
    out = tmp_path / "calibrated.toml"
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--images",
            str(cal),
            "--system",
            str(nominal_path),
            "--out",
            str(out),
            "--fit",
            "mirrors",
            "--aperture-samples",
            "128",
        ],
        env={"COLUMNS": "160"},
    )
    assert res.exit_code == 0, res.output
    assert "RMS after" in res.output and "r1m04" in res.output
    text = out.read_text()
    assert text.startswith("# Calibrated by `recon calibrate`") and "fitted: mirrors" in text
    refined = load_system(out)
    assert "calibrated" in refined.description
    report = json.loads((tmp_path / "calibrated.calibration.json").read_text())
    assert report["positions"] == 5 and len(report["views"]) == 5
    assert all(v["rms_after_px"] < v["rms_before_px"] for v in report["views"][1:])
    assert len(report["changes"]["mirrors"]) == 4
    assert " ± " in res.output and report["spots_left_out"] == []
    errors = report["standard_errors"]["mirrors"]
    assert len(errors) == 4 and all(0 < e["tilt_deg"] < 0.1 and 0 < e["normal_shift_um"] for e in errors)
    assert (tmp_path / "calibrated.residuals.png").read_bytes()[:4] == b"\x89PNG"
    again = runner.invoke(
        app, ["calibrate", "--images", str(cal), "--system", str(nominal_path), "--out", str(out)]
    )
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_calibrate_errors_are_one_line(tmp_path, target_set, dome_files):
    import shutil

    nominal_path = dome_files[0]
    broken = tmp_path / "broken"
    shutil.copytree(target_set, broken)
    frames = broken / "views" / "r1m02.tif"
    pages = tifffile.imread(frames)
    pages[:] = np.median(pages)  # no light in view r1m02 in any exposure
    tifffile.imwrite(frames, pages)
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--images",
            str(broken),
            "--system",
            str(nominal_path),
            "--out",
            str(tmp_path / "c.toml"),
        ],
    )
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no spot found in any of the 8 exposures of view r1m02" in lines[0]
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--images",
            str(tmp_path),
            "--system",
            str(nominal_path),
            "--out",
            str(tmp_path / "c.toml"),
        ],
    )
    assert res.exit_code == 2 and "target.toml" in res.output
    res = runner.invoke(
        app,
        [
            "calibrate",
            "--images",
            str(target_set),
            "--system",
            str(nominal_path),
            "--out",
            str(tmp_path / "c.toml"),
            "--fit",
            "mirrors,lens",
        ],
    )
    assert res.exit_code == 2 and "mirrors,lens" in res.output
    res = runner.invoke(
        app,
        [
            "simulate",
            "--system",
            str(nominal_path),
            "--calibration-target",
            "grid:4",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 2 and "points:N" in res.output
    res = runner.invoke(app, ["simulate", "--system", str(nominal_path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--phantom" in res.output
