"""The campaign manifest: atomic, continued only with the same settings, damaged files refused."""

import json

import pytest

from recon.campaign.manifest import MANIFEST_NAME, Manifest
from recon.errors import ConfigError, DataError

SETTINGS = {"config_sha256": None, "settings": {"seed": 1}, "source": "/shots"}
SHOTS = [("s0", "/shots/s0"), ("s1", "/shots/s1"), ("s2", "/shots/s2")]


def test_a_reopened_manifest_keeps_states_and_reruns_the_interrupted(tmp_path):
    m = Manifest.open(tmp_path, SETTINGS, SHOTS)
    assert m.names("pending") == ["s0", "s1", "s2"] and not (tmp_path / MANIFEST_NAME).exists()
    m.update("s0", state="done", attempts=1, seconds=3.5, worker="w:1")
    m.update("s1", state="running", attempts=1)
    m.update("s2", state="failed", attempts=3, reason="bad frames")
    again = Manifest.open(tmp_path, SETTINGS, [*SHOTS, ("s3", "/shots/s3")])
    assert again.names("done") == ["s0"] and again.shots["s0"].seconds == 3.5
    assert again.names("pending") == ["s1", "s3"] and again.shots["s1"].attempts == 1
    assert again.shots["s2"].reason == "bad frames"
    assert again.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 1}
    with pytest.raises(ValueError, match="state must be one of"):
        again.update("s0", state="finished")


def test_other_settings_and_damaged_files_are_refused(tmp_path):
    Manifest.open(tmp_path, SETTINGS, SHOTS).save()
    with pytest.raises(ConfigError, match="fitted with other settings"):
        Manifest.open(tmp_path, {**SETTINGS, "settings": {"seed": 2}}, SHOTS)
    path = tmp_path / MANIFEST_NAME
    good = json.loads(path.read_text())
    damaged = {
        "not json": "{",
        "other schema": json.dumps({**good, "schema": "x"}),
        "a string state": json.dumps({**good, "shots": [{**good["shots"][0], "state": "gone"}]}),
        "a bool as attempts": json.dumps({**good, "shots": [{**good["shots"][0], "attempts": True}]}),
        "code as an entry": json.dumps({**good, "shots": ["__import__('os').system('echo')"]}),
        "inf seconds": json.dumps({**good, "shots": [{**good["shots"][0], "seconds": 1e999}]}),
    }
    for case, text in damaged.items():
        path.write_text(text)
        with pytest.raises(DataError) as info:
            Manifest.open(tmp_path, SETTINGS, SHOTS)
        assert "\n" not in str(info.value), case
