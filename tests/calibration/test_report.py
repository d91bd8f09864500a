"""Outputs of a calibration: output names, the per-view table, the system file, JSON report and plot."""

import json
import math
import struct
from dataclasses import replace

import pytest
import torch

from calibration.bundle import CalibrationConfig, CalibrationResult, Observations
from calibration.model import OpticalParameters
from calibration.report import output_paths, view_table, write_calibration_outputs
from optics.errors import OutputError
from optics.project import spot_centroids
from optics.system import load_system
from tests.calibration.conftest import small_dome

F64 = torch.float64
POSITIONS = torch.tensor([[0.1, 0.2, 0.3], [-0.3, 0.1, 0.0], [0.2, -0.4, -0.2]], dtype=F64)
SIGMA_PX = [0.03, 0.02, 0.05, 0.04, 0.01]  # per view


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _case(*, known: bool = True, direct_seen: bool = False):
    """A calibration result of the small dome: mirror r1m01 tilted by 1° about its u axis.

    Three positions, five views; the direct view has no spots unless ``direct_seen`` and view
    r1m02 misses exposure 1. Measured spots are the prediction shifted by (−0.1, +0.05) px, so
    every residual is (0.1, −0.05) px.
    """
    nominal = small_dome()
    model = OpticalParameters(nominal, ("mirrors",))
    with torch.no_grad():
        model.mirror_tilt[0, 0] = 0.5  # prior σ units: 0.5 × 2° = 1°
        system = model()
    names = tuple(nominal.path_name(k) for k in range(nominal.n_paths))
    with torch.no_grad():
        predicted, _ = spot_centroids(system, POSITIONS, n_aperture=64)
    observed = torch.ones(3, len(names), dtype=torch.bool)
    observed[:, 0] = direct_seen
    observed[1, 2] = False
    shift = torch.tensor([-0.1, 0.05], dtype=F64)
    uv = torch.where(observed.unsqueeze(-1), predicted + shift, torch.full_like(predicted, math.nan))
    sigma = torch.where(observed, torch.tensor(SIGMA_PX, dtype=F64), torch.full((3, 5), math.inf, dtype=F64))
    obs = Observations(
        paths=tuple(range(len(names))),
        names=names,
        uv=uv,
        sigma=sigma,
        observed=observed,
        positions_mm=POSITIONS if known else None,
        skipped=() if direct_seen else tuple(f"view direct, exposure {i}: no spot" for i in range(3)),
    )
    residual = torch.where(observed.unsqueeze(-1), predicted - torch.nan_to_num(uv), torch.zeros_like(uv))
    rms = math.sqrt((0.1**2 + 0.05**2) / 2)
    after = {n: (rms if bool(observed[:, j].any()) else math.nan) for j, n in enumerate(names)}
    before = {n: (0.8 + j if known and bool(observed[:, j].any()) else math.nan) for j, n in enumerate(names)}
    result = CalibrationResult(
        system=system,
        model=model,
        positions_mm=POSITIONS.clone(),
        predicted_uv=predicted,
        residual_uv=residual,
        before_rms_px=before,
        after_rms_px=after,
        rms_px=rms,
        iterations=7,
        time_s=1.23456,
        losses=[3.0, 1.0],
        uncertainty={"reduced_chi2": 1.5, "tilt_rms_deg": math.nan},
    )
    return result, obs, CalibrationConfig(known_positions=known, n_aperture=64)


@pytest.fixture(scope="module")
def case():
    return _case()


@pytest.fixture(scope="module")
def written(case, tmp_path_factory):
    result, obs, cfg = case
    out = tmp_path_factory.mktemp("cal") / "calibrated.toml"
    paths = write_calibration_outputs(
        result, obs, cfg, out, images="targets/cal", nominal_path="nominal.toml", versions={"recon": "0.1.0"}
    )
    return paths


# -------------------------------------------------------------------------------- output_paths


def test_output_paths_are_the_system_file_and_two_siblings(tmp_path):
    paths = output_paths(tmp_path / "cal.toml")
    assert paths == {
        "system": tmp_path / "cal.toml",
        "report": tmp_path / "cal.calibration.json",
        "residuals": tmp_path / "cal.residuals.png",
    }
    assert output_paths("runs/dome.v2.toml")["report"].as_posix() == "runs/dome.v2.calibration.json"
    assert output_paths("out")["residuals"].as_posix() == "out.residuals.png"  # no suffix to strip


# ---------------------------------------------------------------------------------- view_table


def test_view_table_has_one_row_per_view_in_order(case):
    result, obs, _ = case
    rows = view_table(result, obs)
    assert [r["view"] for r in rows] == list(obs.names)
    assert [r["path"] for r in rows] == list(obs.paths)
    assert [r["spots"] for r in rows] == [0, 3, 2, 3, 3]
    assert [r["rms_after_px"] for r in rows[1:]] == [result.after_rms_px[n] for n in obs.names[1:]]
    assert [r["rms_before_px"] for r in rows[1:]] == [1.8, 2.8, 3.8, 4.8]
    assert [r["centroid_sigma_px"] for r in rows[1:]] == pytest.approx(SIGMA_PX[1:], rel=1e-12)


def test_view_without_spots_has_nan_sigma_and_rms(case):
    result, obs, _ = case
    direct = view_table(result, obs)[0]
    assert direct["spots"] == 0
    assert math.isnan(direct["centroid_sigma_px"]) and math.isnan(direct["rms_after_px"])


def test_centroid_sigma_is_the_median_over_the_observed_spots():
    result, obs, _ = _case(direct_seen=True)
    sigma = obs.sigma.clone()
    sigma[:, 1] = torch.tensor([0.5, 0.1, 0.3], dtype=F64)
    sigma[:, 2] = torch.tensor([0.2, math.inf, 0.6], dtype=F64)  # exposure 1 not observed
    rows = view_table(result, replace(obs, sigma=sigma))
    assert rows[0]["spots"] == 3 and rows[0]["centroid_sigma_px"] == pytest.approx(0.03)
    assert rows[1]["centroid_sigma_px"] == pytest.approx(0.3)
    # torch's median of an even count is the lower of the two middle values
    assert rows[2]["centroid_sigma_px"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------ outputs


def test_outputs_are_written_under_the_documented_names_and_nothing_else(written):
    assert set(written) == {"system", "report", "residuals"}
    directory = written["system"].parent
    assert sorted(p.name for p in directory.iterdir()) == [
        "calibrated.calibration.json",
        "calibrated.residuals.png",
        "calibrated.toml",
    ]  # no temporaries left by the atomic writers
    assert written == output_paths(written["system"])


def test_system_file_loads_as_the_refined_system(case, written):
    result, _, _ = case
    loaded = load_system(written["system"], dtype=F64)
    assert [m.name for m in loaded.mirrors] == [m.name for m in result.system.mirrors]
    for a, b in zip(loaded.mirrors, result.system.mirrors, strict=True):
        torch.testing.assert_close(a.normal, b.normal.detach(), rtol=0.0, atol=1e-11)
        torch.testing.assert_close(a.center_mm, b.center_mm.detach(), rtol=0.0, atol=1e-11)
    n0 = small_dome().mirrors[0].normal
    tilt = math.degrees(math.acos(float(loaded.mirrors[0].normal @ n0 / n0.norm())))
    assert tilt == pytest.approx(1.0, rel=1e-6)  # the fitted 1° tilt made it into the file
    torch.testing.assert_close(loaded.mirrors[1].normal, small_dome().mirrors[1].normal, rtol=0.0, atol=1e-11)


def test_system_file_carries_the_provenance(written):
    text = written["system"].read_text()
    header = text.split("\n\n", 1)[0].splitlines()
    assert header[0].startswith("# Calibrated by `recon calibrate` on ") and header[0].endswith(" UTC")
    assert header[1] == "# from the target set targets/cal (3 point-source positions, known positions)"
    assert header[2] == "# starting from the nominal system nominal.toml; fitted: mirrors"
    assert header[3] == "# reprojection RMS 0.0791 px over 11 spots; report: calibrated.calibration.json"
    loaded = load_system(written["system"])
    stamp = header[0].removeprefix("# Calibrated by `recon calibrate` on ")
    assert loaded.description.startswith(small_dome().description)
    assert loaded.description.endswith(f" [calibrated (mirrors) from 3 target positions on {stamp}]")


def test_report_is_strict_json_with_nan_as_null(case, written):
    result, obs, cfg = case
    report = _strict_json(written["report"].read_text())
    assert report["schema"] == "recon.calibration_report/1"
    assert report["images"] == "targets/cal" and report["nominal_system"] == "nominal.toml"
    assert report["calibrated_system"] == str(written["system"])
    assert report["fit"] == ["mirrors"] and report["known_positions"] is True
    assert report["prior"] == {"tilt_deg": 2.0, "shift_mm": 0.5, "rotation_deg": 1.0, "position_mm": 2.0,
                               "focus_mm": 2.0, "distortion": 0.05}
    assert report["aperture_samples"] == 64 and report["positions"] == 3 and report["spots"] == 11
    assert report["spots_left_out"] == list(obs.skipped)
    assert report["rms_px"] == pytest.approx(result.rms_px)
    assert report["iterations"] == 7 and report["time_s"] == 1.23
    assert report["versions"] == {"recon": "0.1.0"}
    assert report["standard_errors"] == {"reduced_chi2": 1.5, "tilt_rms_deg": None}
    assert "fitted_positions_mm" not in report  # the positions were known
    direct = report["views"][0]
    assert direct == {"view": "direct", "path": 0, "spots": 0, "centroid_sigma_px": None,
                      "rms_before_px": None, "rms_after_px": None}
    assert [v["spots"] for v in report["views"]] == [0, 3, 2, 3, 3]


def test_report_gives_the_changes_in_physical_units(written):
    changes = _strict_json(written["report"].read_text())["changes"]
    assert changes["fit"] == ["mirrors"]
    first, *others = changes["mirrors"]
    assert first["name"] == "r1m01"
    assert (first["tilt_u_deg"], first["tilt_v_deg"], first["tilt_deg"]) == pytest.approx((1.0, 0.0, 1.0))
    assert first["normal_shift_um"] == 0.0
    assert all(m["tilt_deg"] == 0.0 for m in others) and len(others) == 3


def test_residual_plot_is_a_png_with_one_panel_per_view(written):
    # five views: one row of five 3-inch panels at 110 dpi
    assert _png_size(written["residuals"]) == (5 * 330, 330)


def test_writing_again_replaces_the_outputs_and_unknown_positions_add_the_fitted_ones(case, tmp_path):
    out = tmp_path / "cal.toml"
    write_calibration_outputs(*case, out, images="first", nominal_path="n")
    result, obs, cfg = _case(known=False)
    paths = write_calibration_outputs(result, obs, cfg, out, images="second", nominal_path="n")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["cal.calibration.json", "cal.residuals.png", "cal.toml"]
    report = _strict_json(paths["report"].read_text())
    assert report["images"] == "second" and report["known_positions"] is False and report["versions"] == {}
    fitted = report["fitted_positions_mm"]  # (N, 3) nested lists
    assert [len(row) for row in fitted] == [3, 3, 3]
    assert [v for row in fitted for v in row] == pytest.approx(POSITIONS.reshape(-1).tolist(), abs=1e-15)
    assert all(v["rms_before_px"] is None for v in report["views"])  # NaN without known positions
    header = paths["system"].read_text().splitlines()
    assert header[1] == "# from the target set second (3 point-source positions, unknown (fitted) positions)"


def test_an_output_under_a_file_is_a_one_line_output_error(case, tmp_path):
    result, obs, cfg = case
    (tmp_path / "results").write_text("a file")
    with pytest.raises(OutputError, match="is a file, not a directory") as info:
        write_calibration_outputs(result, obs, cfg, tmp_path / "results" / "cal.toml", images="t",
                                  nominal_path="n")
    assert "\n" not in str(info.value) and "cal.toml" in str(info.value)
