"""report.html in headless Chromium (bench/report_browser.py): a sound one passes, a broken one fails."""

import sys
from pathlib import Path

import pytest

from recon.reporting.report import write_report
from tests.recon.reporting.test_report import PNG, _metrics

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
from report_browser import EXPECTED_ROWS, browser_missing, check_report  # noqa: E402

MISSING = browser_missing()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(MISSING is not None, reason=f"report in a browser: {MISSING}")]


def test_a_written_report_loads_whole_in_chromium(tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    (renders / "mip.png").write_bytes(PNG)
    metrics = _metrics(converged=True, against_truth={"atoms_error": 0.001, "centroid_error_um": [1, 2, 3],
                                                      "width_error": [0.01, 0.0, -0.01]},
                       shot_noise_limit={"atoms_relative_sd": 0.001, "centroid_sd_um": [0.5, 0.4, 0.5],
                                         "width_sd_um": [0.5, 0.4, 0.6]})
    write_report(tmp_path, metrics, [renders / "mip.png"])
    found = check_report(tmp_path / "report.html", screenshot=tmp_path / "shot.png")
    assert found["problems"] == [] and found["images"] == 1 and (tmp_path / "shot.png").stat().st_size > 0


def test_a_broken_report_is_caught(tmp_path):
    page = tmp_path / "report.html"
    page.write_text("<!doctype html><html><body><table><tr><th>atoms</th><td>1</td></tr></table>"
                    "<img alt='mip' src='data:image/png;base64,AAAA'>"
                    "<script src='http://example.invalid/x.js'></script>"
                    "<script>undefined_function()</script></body></html>")
    problems = check_report(page)["problems"]
    assert "image did not decode: mip" in problems
    assert any(p.startswith("request leaves the page: http://example.invalid") for p in problems)
    assert any("undefined_function" in p for p in problems)
    assert f"summary row missing: {EXPECTED_ROWS[1]}" in problems
