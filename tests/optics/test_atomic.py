"""Atomic file output: old or new content under the final name, never partial; one-line errors."""

import json
import math
import os
import stat

import pytest

from optics.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    output_error,
    remove_stale_temporaries,
)
from optics.errors import OutputError, ReconError

needs_non_root = pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere; permissions do not apply"
)


def _strict_json(text: str):
    """Parse JSON, refusing the NaN / Infinity extensions Python's json accepts by default."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -------------------------------------------------------------------------------- atomic_path


def test_target_holds_the_old_content_until_the_block_succeeds(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new, written in ")
        assert target.read_text() == "old"  # a reader meanwhile sees the whole old file
        with open(tmp, "a") as f:
            f.write("two steps")
        assert target.read_text() == "old"
    assert target.read_text() == "new, written in two steps"
    assert _names(tmp_path) == ["report.json"]


def test_target_is_replaced_by_rename_not_rewritten_in_place(tmp_path):
    """A reader that opened the old file keeps reading the complete old file."""
    target = tmp_path / "volume.bin"
    atomic_write_bytes(target, b"A" * 1000)
    inode = target.stat().st_ino
    with open(target, "rb") as reader:
        atomic_write_bytes(target, b"B" * 10)
        assert reader.read() == b"A" * 1000
    assert target.read_bytes() == b"B" * 10
    assert target.stat().st_ino != inode


def test_exception_in_the_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(ValueError, match="writer died"), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise ValueError("writer died")  # not an OSError: propagates unchanged
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["metrics.json"]


def test_exception_before_anything_exists_leaves_nothing(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(KeyboardInterrupt), atomic_path(target):
        raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_os_error_in_the_block_becomes_a_one_line_output_error(tmp_path):
    target = tmp_path / "mesh.stl"
    atomic_write_text(target, "old")
    with pytest.raises(OutputError) as info, atomic_path(target) as tmp:
        tmp.write_text("part")
        raise OSError(28, "No space left on device")
    msg = str(info.value)
    assert msg == (
        f"cannot write {target}: No space left on device; choose another output path or fix its directory"
    )
    assert isinstance(info.value, ReconError) and info.value.__cause__ is None
    assert target.read_text() == "old" and _names(tmp_path) == ["mesh.stl"]


def test_temporary_is_hidden_beside_the_target_with_the_suffix(tmp_path):
    target = tmp_path / "sub" / "mesh.stl"
    with atomic_path(target, suffix=".tmp.stl") as tmp:
        assert tmp.parent == target.parent  # same directory: the rename stays on one file system
        assert tmp.name.startswith(".mesh.stl.") and tmp.name.endswith(".tmp.stl")
        assert tmp.exists()  # created empty, so a writer may open it
        tmp.write_text("solid")
    assert target.read_text() == "solid"


def test_a_block_that_writes_nothing_gives_an_empty_file(tmp_path):
    target = tmp_path / "empty.txt"
    with atomic_path(target):
        pass
    assert target.read_bytes() == b""


def test_a_writer_may_replace_the_temporary_itself(tmp_path):
    """Writers that save by rename (e.g. some libraries) delete and recreate the temporary."""
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        tmp.unlink()
        tmp.write_text("recreated")
    assert target.read_text() == "recreated" and _names(tmp_path) == ["out.txt"]


def test_result_has_the_permissions_of_an_ordinary_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o640 == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)  # not mkstemp's 0600


def test_parent_directories_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write_text(target, "héllo")
    assert target.read_bytes() == "héllo".encode()


# ------------------------------------------------------------------------------ atomic_write_json


def test_json_turns_non_finite_floats_to_null_recursively(tmp_path):
    target = tmp_path / "r.json"
    data = {
        "nan": math.nan,
        "inf": math.inf,
        "minus_inf": -math.inf,
        "finite": 1.5,
        "nested": {"list": [1.0, math.nan, {"deep": [math.inf, 2]}], "tuple": (math.nan, 3)},
        "kept": [None, True, 0, "nan", "inf"],
    }
    atomic_write_json(target, data)
    text = target.read_text()
    assert text.endswith("}\n") and text.startswith("{\n  ")  # indented, newline-terminated
    assert _strict_json(text) == {
        "nan": None,
        "inf": None,
        "minus_inf": None,
        "finite": 1.5,
        "nested": {"list": [1.0, None, {"deep": [None, 2]}], "tuple": [None, 3]},
        "kept": [None, True, 0, "nan", "inf"],
    }
    assert data["nan"] != data["nan"]  # the caller's dict is not modified


def test_json_handles_numpy_float_nan(tmp_path):
    np = pytest.importorskip("numpy")
    atomic_write_json(tmp_path / "r.json", {"x": np.float64("nan"), "y": [np.float64(2.5)]})
    assert _strict_json((tmp_path / "r.json").read_text()) == {"x": None, "y": [2.5]}


def test_unserialisable_json_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert _strict_json(target.read_text()) == {"a": 1} and _names(tmp_path) == ["r.json"]


# ---------------------------------------------------------------------- output_error, check_writable


def test_output_error_names_the_path_the_reason_and_the_file_involved():
    err = PermissionError(13, "Permission denied", "/data/out/.a.txt.x1y2z3w4.tmp")
    e = output_error("/data/out/a.txt", err)
    assert isinstance(e, OutputError)
    assert str(e) == (
        "cannot write /data/out/a.txt: Permission denied (/data/out/.a.txt.x1y2z3w4.tmp); "
        "choose another output path or fix its directory"
    )
    same = output_error("/data/a.txt", PermissionError(13, "Permission denied", "/data/a.txt"))
    assert "(/data/a.txt)" not in str(same)  # the path is not named twice
    assert str(output_error("x.png", OSError("boom"), "render: cannot save")).startswith(
        "render: cannot save x.png: OSError;"
    )  # no strerror: the type is the reason


@pytest.mark.parametrize("deeper", [(), ("a",), ("a", "b")])
def test_a_parent_that_is_a_file_is_named(tmp_path, deeper):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a directory")
    target = blocker.joinpath(*deeper, "out.json")
    expected = f"cannot write {target}: {blocker} is a file, not a directory; choose another output path"
    with pytest.raises(OutputError) as info:
        atomic_write_json(target, {"a": 1})
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
    with pytest.raises(OutputError) as info:
        check_writable(target)
    assert str(info.value).startswith(expected)
    assert blocker.read_text() == "a file, not a directory" and _names(tmp_path) == ["results"]


def test_check_writable_leaves_nothing_behind(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "out.toml")  # no directory is created
    check_writable(tmp_path / "out.toml")
    assert _names(tmp_path) == []
    (tmp_path / "out.toml").write_text("exists")
    check_writable(tmp_path / "out.toml")  # an existing file may be replaced
    assert _names(tmp_path) == ["out.toml"]


@needs_non_root
def test_a_directory_without_write_permission_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        target = locked / "out.json"
        for attempt in (lambda: atomic_write_json(target, {}), lambda: check_writable(target)):
            with pytest.raises(OutputError) as info:
                attempt()
            msg = str(info.value)
            assert msg.startswith(f"cannot write {target}: Permission denied") and "\n" not in msg
        with pytest.raises(OutputError, match="Permission denied"):
            check_writable(locked / "new" / "out.json")  # the nearest existing ancestor is checked
        assert _names(locked) == []
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------ remove_stale_temporaries


def test_remove_stale_temporaries_removes_only_ours(tmp_path):
    ours = [".checkpoint.pt.k2j4_9ab.tmp", ".mesh.stl.a1b2c3d4.tmp.stl", ".report.json.zz99yy88.tmp"]
    theirs = ["checkpoint.pt", "notes.tmp", "tmp.txt", ".gitignore", ".hidden"]
    for name in ours + theirs:
        (tmp_path / name).write_text(name)
    (tmp_path / ".dir.a1b2c3d4.tmp").mkdir()  # a directory is never removed
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".deep.a1b2c3d4.tmp").write_text("not recursive")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(ours)
    assert all(p.parent == tmp_path for p in removed)
    assert _names(tmp_path) == sorted(theirs + [".dir.a1b2c3d4.tmp", "sub"])
    assert (tmp_path / "sub" / ".deep.a1b2c3d4.tmp").exists()
    assert remove_stale_temporaries(tmp_path) == []


def test_remove_stale_temporaries_recognises_what_atomic_path_makes(tmp_path):
    target = tmp_path / "checkpoint.pt"
    atomic_write_bytes(target, b"whole")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # a writer killed mid-write
        tmp.write_bytes(b"half")
        assert remove_stale_temporaries(tmp_path) == [tmp]
        raise RuntimeError
    assert target.read_bytes() == b"whole" and _names(tmp_path) == ["checkpoint.pt"]


def test_remove_stale_temporaries_of_a_missing_directory_or_a_file(tmp_path):
    assert remove_stale_temporaries(tmp_path / "missing") == []
    (tmp_path / ".f.a1b2c3d4.tmp").write_text("x")
    assert remove_stale_temporaries(tmp_path / ".f.a1b2c3d4.tmp") == []  # not a directory
    assert (tmp_path / ".f.a1b2c3d4.tmp").exists()


@pytest.mark.parametrize("name", [".tmprc", ".session.tmp"])
def test_remove_stale_temporaries_spares_hidden_user_files(tmp_path, name):
    (tmp_path / name).write_text("user data")
    assert remove_stale_temporaries(tmp_path) == []
    assert (tmp_path / name).read_text() == "user data"
