import os

import pytest

from optics.errors import ConfigError
from optics.tomlio import read_toml


def test_read_toml_parses_and_names_the_file_in_its_errors(tmp_path):
    good = tmp_path / "a.toml"
    good.write_text('name = "x"\n[box]\nsize_mm = [1.0, 2.0]\n')
    assert read_toml(good, "phantom file") == {"name": "x", "box": {"size_mm": [1.0, 2.0]}}
    bad = tmp_path / "b.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"b\.toml: not valid TOML \(.*\); fix the syntax") as err:
        read_toml(bad, "phantom file")
    assert "\n" not in str(err.value)
    latin = tmp_path / "c.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"c\.toml: not UTF-8 text \(at byte 11\); save it as UTF-8"):
        read_toml(latin, "target description")
    with pytest.raises(ConfigError, match=r"fit config .* cannot be read"):
        read_toml(tmp_path, "fit config")  # a directory: read_text raises IsADirectoryError


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_read_toml_unreadable_file(tmp_path):
    f = tmp_path / "d.toml"
    f.write_text("a = 1\n")
    f.chmod(0)
    with pytest.raises(ConfigError, match="cannot be read .*check its permissions"):
        read_toml(f, "system file")


def test_a_deeply_nested_file_is_a_config_error(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("volume = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.toml"):
        read_toml(deep, "system file")


def test_an_integer_longer_than_python_converts_is_a_config_error(tmp_path):
    long = tmp_path / "fit.toml"
    long.write_text("steps = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"fit\.toml"):
        read_toml(long, "fit config")
