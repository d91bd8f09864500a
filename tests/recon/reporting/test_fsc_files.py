"""fsc.csv, fsc.json and fsc.png of a comparison, with and without cones and mask."""

import csv
import json

import numpy as np
import pytest

from recon.analysis.fsc import THRESHOLDS
from recon.analysis.resolution import compare_volumes, fsc_report
from recon.errors import ConfigError
from recon.reporting.fsc_files import CSV_COLUMNS, write_fsc_outputs
from tests.recon.analysis.fsc_maps import VOXEL_MM, N, as_volume


def test_compare_volumes_and_outputs(halves, tmp_path):
    a, b, _ = halves
    result = compare_volumes(as_volume(a), as_volume(b), threshold="half-bit", mask="sphere",
                             n_directions=100, labels=("half1.tif", "half2.tif"))
    assert result.threshold == "half-bit" and result.mask == "sphere"
    assert set(result.crossings) == set(THRESHOLDS)
    assert result.crossing == result.crossings["half-bit"]
    assert result.curve.fsc_randomized is not None
    paths = write_fsc_outputs(result, tmp_path / "fsc")
    assert sorted(p.name for p in (tmp_path / "fsc").iterdir()) == ["fsc.csv", "fsc.json", "fsc.png"]

    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == N // 2 + 1
    assert rows[0]["resolution_um"] == "inf"
    assert float(rows[-1]["resolution_um"]) == pytest.approx(20.0)
    np.testing.assert_allclose([float(r["fsc"]) for r in rows], result.curve.fsc, atol=1e-7)
    np.testing.assert_allclose([float(r["thr_half_bit"]) for r in rows], result.curve.threshold_half_bit,
                               rtol=1e-7)

    report = json.loads(paths["json"].read_text())
    assert report == json.loads(json.dumps(fsc_report(result)))
    assert report["threshold"] == "half-bit"
    assert report["resolution_um"] == pytest.approx(result.crossing.resolution_um)
    assert set(report["resolutions"]) == set(THRESHOLDS)
    assert report["grid"]["shape_zyx"] == [N, N, N] and report["grid"]["voxel_size_mm"] == [VOXEL_MM] * 3
    assert report["grid"]["box_mm"] == pytest.approx(N * VOXEL_MM)
    assert report["nyquist_um"] == pytest.approx(20.0)
    directional = report["directional"]
    assert {"resolution_x_um", "resolution_y_um", "resolution_z_um", "best_resolution_um",
            "worst_resolution_um", "sphericity", "anisotropy_ratio"} <= set(directional)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_without_directional_or_mask(tmp_path):
    v = np.random.default_rng(11).standard_normal((16, 16, 16))
    result = compare_volumes(as_volume(v), as_volume(v), threshold=0.5, directional=False)
    assert result.directional is None and result.crossing.reached_nyquist
    paths = write_fsc_outputs(result, tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["directional"] is None and report["reached_nyquist"] is True
    assert report["mask"] == {"kind": "none"}
    with pytest.raises(ConfigError):
        compare_volumes(as_volume(v), as_volume(v), threshold="0.143", mask="cube")


def test_the_three_files_are_written_together_or_not_at_all(halves, tmp_path, monkeypatch):
    """A disk that fills while the plot is written leaves the earlier set, or nothing, as it was."""
    import errno

    import recon.reporting.fsc_files as fsc_files
    from recon.errors import OutputError

    a, b, _ = halves
    first = compare_volumes(as_volume(a), as_volume(b), threshold="0.143")
    second = compare_volumes(as_volume(a), as_volume(a + 0.3 * b), threshold="0.143")

    def full(result, path):
        path.write_bytes(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsc_files, "_plot", full)
    with pytest.raises(OutputError):
        write_fsc_outputs(first, tmp_path / "fresh")
    assert list((tmp_path / "fresh").iterdir()) == []  # nothing, not csv and json without the png
    monkeypatch.undo()
    paths = write_fsc_outputs(first, tmp_path / "old")
    before = {k: p.read_bytes() for k, p in paths.items()}
    monkeypatch.setattr(fsc_files, "_plot", full)
    with pytest.raises(OutputError):
        write_fsc_outputs(second, tmp_path / "old")
    assert {k: p.read_bytes() for k, p in paths.items()} == before  # not a mixed set
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["fsc.csv", "fsc.json", "fsc.png"]
