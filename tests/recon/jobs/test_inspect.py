"""`recon inspect` as a function: the run, its per-view statistics, the optional contact sheet."""

import shutil

import pytest

from recon.analysis.inspect import inspect_run
from recon.errors import ConfigError, DataError
from recon.io.run import load_run
from recon.jobs.inspect import inspect
from tests.micro import make_micro_run


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    return make_micro_run(tmp_path_factory.mktemp("micro"))


def test_inspect_loads_the_run_and_its_statistics(micro_run):
    run, stats = inspect(micro_run)
    assert run.path == micro_run and run.system is not None  # the system file was loaded
    assert [s.name for s in stats] == [v.name for v in run.views] == ["direct"]
    assert stats == inspect_run(load_run(micro_run))
    (direct,) = stats
    assert direct.frames == 1 and direct.roi == run.views[0].roi
    assert direct.signal_e > 0 and direct.snr > 5 and direct.warnings == ()


def test_inspect_without_a_sheet_writes_nothing(micro_run):
    before = sorted(micro_run.rglob("*"))
    inspect(str(micro_run))
    assert sorted(micro_run.rglob("*")) == before


def test_inspect_writes_the_contact_sheet(micro_run, tmp_path):
    sheet = tmp_path / "sheets" / "views.png"
    inspect(micro_run, sheet=str(sheet))
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(sheet.parent.iterdir()) == [sheet]


def test_inspect_of_a_missing_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pass a directory holding run.toml"):
        inspect(tmp_path / "nope", sheet=tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def test_inspect_of_a_run_missing_its_frames(micro_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(micro_run, broken)
    (broken / "views" / "direct.tif").unlink()
    with pytest.raises(DataError, match="direct.tif"):
        inspect(broken, sheet=tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()
