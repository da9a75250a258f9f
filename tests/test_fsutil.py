"""Atomic writes: the target is the old content or the new, never half; files get the umask's mode."""

import os
import stat

import pytest

from vlaforge.fsutil import atomic_dir, write_atomic, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})  # not serializable: fails before anything is renamed
    assert target.read_text() == '{\n  "v": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_directory_write_keeps_the_old_directory(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as d:
        (d / "w").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "w").write_text("half")
        raise RuntimeError("crash while writing")
    assert (target / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "f", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "g").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644  # mkstemp would give 0600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755  # mkdtemp would give 0700
