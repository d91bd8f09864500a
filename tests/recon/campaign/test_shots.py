"""Which run directories make a campaign: a folder's runs, or a list file's."""

import pytest

from recon.campaign.shots import find_shots
from recon.errors import ConfigError


def _run(path):
    path.mkdir(parents=True)
    (path / "run.toml").write_text("")
    return path


def test_a_folders_runs_in_path_order_with_flat_safe_names(tmp_path):
    _run(tmp_path / "b")
    _run(tmp_path / "a")
    _run(tmp_path / "day 2" / "run#7")
    (tmp_path / "notes").mkdir()
    shots = find_shots(tmp_path)
    assert [s.name for s in shots] == ["a", "b", "day_2__run_7"]
    assert shots[2].run == tmp_path / "day 2" / "run#7"


def test_a_list_file_names_runs_relative_to_itself(tmp_path):
    _run(tmp_path / "runs" / "s1")
    _run(tmp_path / "runs" / "s2")
    listing = tmp_path / "runs.txt"
    listing.write_text("# the good shots\nruns/s2\n\nruns/s1  # late\n")
    assert [(s.name, s.run) for s in find_shots(listing)] == [("runs__s2", tmp_path / "runs" / "s2"),
                                                              ("runs__s1", tmp_path / "runs" / "s1")]
    listing.write_text("runs/s1\nruns/missing\n")
    with pytest.raises(ConfigError, match="line 2 of .* names 'runs/missing', which holds no run.toml"):
        find_shots(listing)


def test_bad_sources_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        find_shots(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no run directory"):
        find_shots(tmp_path)
    run = _run(tmp_path / "one")
    with pytest.raises(ConfigError, match=r"is one run \(it holds run.toml\).*recon fit --views"):
        find_shots(run)
    _run(tmp_path / "x" / "a_b")
    _run(tmp_path / "x" / "a b")
    with pytest.raises(ConfigError, match="both make the shot name 'a_b'"):
        find_shots(tmp_path / "x")
