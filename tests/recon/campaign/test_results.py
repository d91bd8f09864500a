"""The per-shot table: figures from a shot's metrics.json, read as untrusted; CSV and Parquet."""

import csv
import importlib.util
import math

import pytest

from recon.campaign.results import COLUMNS, row_from_metrics, write_csv, write_parquet

METRICS = {"atoms": 1.5e6, "centroid_mm": [0.1, -0.2, 0.3], "width_mm": [0.4, 0.5, 0.6], "steps": 52,
           "converged": True, "backend": "torch", "device": "cpu", "finished_utc": "2026-12-06 12:00:00",
           "shot_noise_limit": {"atoms_sd": 850.0, "centroid_sd_um": [0.5, 0.4, 0.49],
                                "width_sd_um": [0.51, 0.41, 0.65]},
           "fsc_truth": {"resolution_um": 49.9},
           "convergence": [{"heldout_deviance": 1.26, "stopped_by": "held-out"}],
           "against_truth": {"truth": {"atoms": 1.49e6, "centroid_mm": [0.1, -0.2, 0.31],
                                       "width_mm": [0.41, 0.5, 0.6]}}}


def test_a_row_holds_the_figures_their_limits_and_the_truth():
    row = row_from_metrics(METRICS)
    assert set(row) == set(COLUMNS)
    assert (row["atoms"], row["atoms_sd"]) == (1.5e6, 850.0)
    assert (row["centroid_z_mm"], row["width_y_sd_um"]) == (0.3, 0.41)
    assert (row["resolution_um"], row["heldout_deviance"], row["stopped_by"]) == (49.9, 1.26, "held-out")
    assert (row["truth_atoms"], row["truth_centroid_z_mm"], row["truth_width_x_mm"]) == (1.49e6, 0.31, 0.41)


def test_a_rows_fringes_come_from_a_detection_only():
    found = {"detected": True, "period_mm": 0.18, "contrast": 0.7, "phase_at_origin_rad": 1.2,
             "sd": {"phase_at_origin_rad": 0.01}}
    row = row_from_metrics({**METRICS, "fringes": found})
    assert (row["fringe_period_um"], row["fringe_contrast"], row["fringe_phase_rad"],
            row["fringe_phase_sd_rad"]) == (180.0, 0.7, 1.2, 0.01)
    for fringes in ({**found, "detected": False}, {**found, "sd": "x", "period_mm": "y"}, "z"):
        row = row_from_metrics({**METRICS, "fringes": fringes})
        assert row["fringe_phase_sd_rad"] is None and row["fringe_period_um"] is None
    assert row_from_metrics(METRICS)["fringe_phase_rad"] is None


def test_damaged_metrics_give_empty_cells_not_errors():
    bad = {"atoms": "1e6; rm -rf /", "centroid_mm": [1, 2], "width_mm": [float("nan"), True, 3],
           "shot_noise_limit": [], "convergence": "x", "against_truth": {"truth": 5}, "steps": math.inf}
    row = row_from_metrics(bad)
    assert row["atoms"] is None and row["centroid_x_mm"] is None and row["steps"] is None
    assert row["width_x_mm"] is None and row["width_y_mm"] is None and row["width_z_mm"] == 3.0
    assert row["atoms_sd"] is None and row["truth_atoms"] is None and row["stopped_by"] is None


def test_the_csv_has_the_header_and_empty_cells_for_missing_figures(tmp_path):
    rows = [{**row_from_metrics(METRICS), "shot": "s0", "state": "done"}, {"shot": "s1", "state": "failed",
                                                                          "reason": "frames, unreadable"}]
    write_csv(tmp_path / "results.csv", rows)
    with open(tmp_path / "results.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(COLUMNS)
    assert read[0]["atoms"] == "1500000" and read[0]["converged"] == "true"
    assert read[1]["atoms"] == "" and read[1]["reason"] == "frames, unreadable"


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_the_parquet_table_holds_the_same_rows(tmp_path):
    import pyarrow.parquet as pq

    rows = [{**row_from_metrics(METRICS), "shot": "s0", "state": "done"}, {"shot": "s1", "state": "failed"}]
    assert write_parquet(tmp_path / "results.parquet", rows)
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert table[0]["atoms"] == 1.5e6 and table[1]["atoms"] is None and table[1]["state"] == "failed"
    assert table[0]["centroid_x_sd_um"] == 0.5 and list(table[0]) == list(COLUMNS)
