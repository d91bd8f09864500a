"""`recon analyze`: fringes of a fit's density into fringes.json and fringes.png, the truth beside them."""

import json
import math
import re

import numpy as np
import torch
from typer.testing import CliRunner

from recon.analysis.fringes import fringe_model
from recon.cli import app
from recon.io.volume import Volume, write_volume
from recon.reporting.summary import fringes_text
from tests.micro import make_micro_case

runner = CliRunner()


def _fit_dir(tmp_path, contrast=0.7):
    """A fit directory holding a density with fringes of period 0.25 mm along (0.3, 0.2, 0.93)."""
    out = tmp_path / "fit"
    out.mkdir()
    n = np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])
    k = 2 * math.pi / 0.25 * n
    params = torch.tensor([math.log(1e5), 0.0, 0.0, 0.0, *[math.log(0.3)] * 3, 0.0, 0.0, 0.0, contrast, *k,
                           0.5, 10.0], dtype=torch.float64)
    grid = Volume(np.zeros((40, 40, 40), np.float32), (-0.975,) * 3, (0.05,) * 3, "atoms/mm^3")
    with torch.no_grad():
        rho = fringe_model(params, grid.points(torch.float64).reshape(-1, 3)).reshape(grid.shape).numpy()
    write_volume(out / "density.tif", Volume(rho.astype(np.float32), grid.origin_mm, grid.voxel_size_mm,
                                             "atoms/mm^3"))
    run = tmp_path / "run"
    run.mkdir()
    # the truth the fit recorded: K = 2π/0.25 n, φ = 0.5 at the origin, i.e. a sin² phase φ₀ = (π − 0.5)/2
    truth = {"period_mm": 0.25, "phase_rad": (math.pi - 0.5) / 2, "direction": n.tolist(),
             "center_mm": [0, 0, 0]}
    (run / "phantom.json").write_text(json.dumps({"phantom": "fringes", "params": truth}))
    (out / "config.json").write_text(json.dumps({"truth": str(run / "truth.tif")}))
    return out


def test_analyze_writes_fringes_and_compares_with_the_truth(tmp_path):
    out = _fit_dir(tmp_path)
    res = runner.invoke(app, ["analyze", str(out)])
    assert res.exit_code == 0, res.output
    assert "fringes: period 250.00 ± 0.00 µm" in res.output and "contrast 0.700" in res.output
    assert re.search(r"against the truth: period [+-]0\.00 %, direction 0\.00° off, phase [+-]0\.0000 rad",
                     res.output)
    assert f"wrote {out / 'fringes.json'} and {out / 'fringes.png'}" in res.output
    record = json.loads((out / "fringes.json").read_text())
    assert record["schema"] == "recon.fringes/1" and record["detected"]
    assert math.isclose(record["phase_at_origin_rad"], 0.5, abs_tol=1e-6)
    assert record["truth"]["period_mm"] == 0.25
    assert set(record["sd"]) >= {"phase_rad", "contrast", "period_mm"}
    assert (out / "fringes.png").stat().st_size > 10_000
    again = runner.invoke(app, ["analyze", str(out / "density.tif"), "--out", str(tmp_path / "elsewhere")])
    assert again.exit_code == 0 and "against the truth" not in again.output  # a bare volume has no truth
    assert (tmp_path / "elsewhere" / "fringes.json").exists()
    rerun = runner.invoke(app, ["analyze", str(out)])
    assert rerun.exit_code == 0 and f"replaced {out / 'fringes.json'}" in rerun.output


def test_analyze_says_when_there_are_no_fringes(tmp_path):
    out = _fit_dir(tmp_path, contrast=0.0)
    res = runner.invoke(app, ["analyze", str(out)])
    assert res.exit_code == 0 and res.output.startswith("fringes: none detected (")


def test_analyze_bad_inputs_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["analyze", str(empty)])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"error: {empty} holds no density.tif; pass a fit output directory or a volume TIFF"]
    zero = tmp_path / "zero"
    zero.mkdir()
    write_volume(zero / "density.tif", Volume(np.zeros((8, 8, 8), np.float32), (0, 0, 0), (0.1,) * 3))
    res = runner.invoke(app, ["analyze", str(zero)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "holds no positive, finite density" in res.output
    assert sorted(p.name for p in zero.iterdir()) == ["density.tif"]  # nothing written
    good = _fit_dir(tmp_path)
    below_a_file = good / "density.tif" / "sub"
    res = runner.invoke(app, ["analyze", str(good), "--out", str(below_a_file)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "choose another --out" in res.output
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    res = runner.invoke(app, ["analyze", str(tmp_path / "bad.tif")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1


def test_fit_with_fringes_analyses_its_density(tmp_path):
    """`recon fit --fringes` puts its density's fringes in metrics.json and the report (here: none)."""
    case = make_micro_case(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["fit", "--views", str(case["run"]), "--out", str(out), "--config",
                              str(case["cfg"]), "--quiet", "--pool-cache", "off", "--fringes"])
    assert res.exit_code == 0, res.output
    assert "fringes: none detected (" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fringes"]["detected"] is False and metrics["fringes"]["why_not"]
    assert json.loads((out / "config.json").read_text())["fit"]["fringes"] is True
    assert "fringes (recon.analysis.fringes)" in (out / "report.html").read_text()


def test_the_python_api_is_the_job(tmp_path):
    import recon
    from recon.jobs.analyze import analyze

    assert recon.analyze is analyze
    found = recon.analyze(_fit_dir(tmp_path) / "density.tif", out=tmp_path / "api")
    assert found.fringes.detected and found.truth is None  # a bare volume: no truth recorded
    assert found.record["schema"] == "recon.fringes/1"
    assert found.summary().startswith("fringes: period 250.00")


def test_a_fits_fringes_carry_their_shot_noise_limit(tmp_path):
    """Detected fringes in a fit get the Cramér–Rao sd of their phase through the fit's own pixels."""
    from recon.jobs.fit import _fringes
    from tests.micro import make_micro_pool_case

    case = make_micro_pool_case(tmp_path)
    data, pool = case["data"], case["pool"]
    box = data.system.volume
    lo, hi = box.min_mm.tolist(), box.max_mm.tolist()
    shape = (20, 20, 20)
    voxel = [(b - a) / n for a, b, n in zip(lo, hi, shape, strict=True)]
    grid = Volume(np.zeros(shape, np.float32), tuple(a + v / 2 for a, v in zip(lo, voxel, strict=True)),
                  tuple(voxel))
    centre = [(a + b) / 2 for a, b in zip(lo, hi, strict=True)]
    k = 2 * math.pi / (min(hi[0] - lo[0], hi[1] - lo[1]) / 4) * torch.tensor([0.6, 0.8, 0.0])
    sd = math.log(min(b - a for a, b in zip(lo, hi, strict=True)) / 6)
    params = torch.tensor([math.log(1e5), *centre, sd, sd, sd, 0, 0, 0, 0.7, *k, 0.4, 0.0],
                          dtype=torch.float64)
    with torch.no_grad():
        rho = fringe_model(params, grid.points(torch.float64).reshape(-1, 3)).reshape(shape).numpy()
    images = []
    record = _fringes(Volume(rho, grid.origin_mm, grid.voxel_size_mm), None, tmp_path / "f.png", images,
                      pool=pool, data=data, step_mm=0.05)
    assert record["detected"] and images == [tmp_path / "f.png"]
    limit = record["shot_noise_limit"]
    assert 0 < limit["phase_at_origin_rad"] < 1 and limit["period_mm"] > 0
    assert "the phase's shot-noise limit" in fringes_text(record)
    json.dumps(record, allow_nan=False)
