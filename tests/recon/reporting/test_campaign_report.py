"""The campaign report: the series picture (a fringe-phase panel where shots hold fringes) and its table."""

import pytest
from PIL import Image

from recon.reporting.campaign_report import error_bars, write_campaign_report, write_series_figure


def _rows(fringes: bool) -> list[dict]:
    rows = []
    for i in range(4):
        row = {"shot": f"shot_{i:04d}", "state": "done", "atoms": 1e6 + i, "atoms_sd": 900.0, "seconds": 8.0,
               "resolution_um": 60.0, "converged": True,
               **{f"{k}_{a}_mm": 0.4 for k in ("centroid", "width") for a in "xyz"}}
        if fringes:
            row.update(fringe_period_um=200.0, fringe_phase_rad=0.1 * i, fringe_phase_sd_rad=0.01)
        rows.append(row)
    return rows + [{"shot": "shot_0004", "state": "failed", "reason": "frames unreadable"}]


def test_shots_with_fringes_get_a_phase_panel_and_columns(tmp_path):
    assert write_series_figure(tmp_path / "plain.png", _rows(False))
    assert write_series_figure(tmp_path / "fringes.png", _rows(True))
    plain, fringed = (Image.open(tmp_path / f"{n}.png").size for n in ("plain", "fringes"))
    assert fringed[1] > plain[1] and fringed[0] == plain[0]  # one panel more, as wide
    write_campaign_report(tmp_path / "report.html", _rows(True), {"shots": 5, "done": 4, "failed": 1})
    page = (tmp_path / "report.html").read_text()
    assert "<th>fringe_phase_rad</th>" in page and "<td>0.3</td>" in page and "frames unreadable" in page
    write_campaign_report(tmp_path / "report.html", _rows(False), {"shots": 5})
    assert "fringe_phase_rad" not in (tmp_path / "report.html").read_text()


def test_no_done_shot_no_picture(tmp_path):
    assert not write_series_figure(tmp_path / "none.png", [{"shot": "s", "state": "failed"}])
    assert not (tmp_path / "none.png").exists()


def _with_splits(rows: list[dict], factor: float = 1.32) -> list[dict]:
    out = []
    for row in rows:
        row = dict(row)
        if row["state"] == "done":
            row.update(split_interval_factor=factor, atoms_split_sd=2000.0, fringe_phase_split_sd_rad=0.02,
                       **{f"{k}_{a}_split_sd_um": 3.0 for k in ("centroid", "width") for a in "xyz"})
        out.append(row)
    return out


def test_error_bars_come_from_refitted_splits_where_every_shot_has_them(tmp_path):
    done = [r for r in _with_splits(_rows(True)) if r["state"] == "done"]
    bars, kind = error_bars(done)
    assert kind == "split"
    assert bars["atoms"] == pytest.approx([1.32 * 2000.0] * 4)  # ± t_K σ̂, the 68 % interval
    assert bars["width_z"] == pytest.approx([1.32 * 3.0] * 4)
    assert bars["fringe_phase"] == pytest.approx([1.32 * 0.02] * 4)
    write_campaign_report(tmp_path / "report.html", _with_splits(_rows(False)), {"shots": 5})
    assert "refitted thinning splits" in (tmp_path / "report.html").read_text()
    one_without = [dict(done[0], split_interval_factor=None, atoms_split_sd=None), *done[1:]]
    bars, kind = error_bars(one_without)  # a mixed campaign: the shot-noise limits for every shot
    assert kind == "shot-noise" and bars["atoms"] == [900.0] * 4
    write_campaign_report(tmp_path / "report.html", _rows(False), {"shots": 5})
    assert "shot-noise limit" in (tmp_path / "report.html").read_text()
