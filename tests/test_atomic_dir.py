"""`atomic.write_dir`: a folder (a saved model) is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialinsight_engine.run import atomic


def _fill(files: dict[str, str]):
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)

    return write


def test_write_dir_replaces_the_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    atomic.write_dir(target, _fill({"a.bin": "1", "old.json": "x"}))
    assert atomic.write_dir(target, _fill({"a.bin": "2"})) == target
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.bin": "2"}  # nothing of the old left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no partial or old folder


def test_a_failed_write_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    atomic.write_dir(target, _fill({"a.bin": "1"}))

    def half_then_fail(tmp: Path) -> None:
        (tmp / "a.bin").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.write_dir(target, half_then_fail)
    assert (target / "a.bin").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
