"""The sink alone: files land under --out only, whole or not at all, never through a planted symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fileserver.sink import DirSink


def test_writes_nested_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    with DirSink(tmp_path / "out") as sink:
        sink.put("a/b/c.txt", b"hello")
        sink.put("top.txt", b"")
    assert (tmp_path / "out/a/b/c.txt").read_bytes() == b"hello"
    assert (tmp_path / "out/top.txt").read_bytes() == b""
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["a", "b", "c.txt", "top.txt"]


def test_a_failed_write_leaves_neither_a_partial_file_nor_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = DirSink(tmp_path)
    sink.put("f.txt", b"old and whole")

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        sink.put("f.txt", b"new")
    assert (tmp_path / "f.txt").read_bytes() == b"old and whole"  # replaced whole or not at all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_symlinks_planted_in_out_are_refused_not_followed(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep")
    (out / "file.txt").symlink_to(victim)
    (out / "dir").symlink_to(outside)
    (out / ".tmp.txt.fileserver-part").symlink_to(victim)  # where the next temporary would be opened
    sink = DirSink(out)
    with pytest.raises(OSError, match="not a regular file"):
        sink.put("file.txt", b"evil")
    with pytest.raises(OSError, match="not a real folder"):
        sink.put("dir/new.txt", b"evil")
    sink.put("tmp.txt", b"fine")
    assert (out / "tmp.txt").read_bytes() == b"fine"
    assert victim.read_text() == "keep" and sorted(p.name for p in outside.iterdir()) == ["victim.txt"]


def test_has_only_a_regular_file_with_the_right_size_and_hash(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "SHA256SUMS").write_text("")
    (tmp_path / "good.txt").write_bytes(b"abc")
    (tmp_path / "link.txt").symlink_to(tmp_path / "good.txt")
    digest = hashlib.sha256(b"abc").hexdigest()
    sink = DirSink(tmp_path)
    assert sink.has("good.txt", digest, 3)
    assert not sink.has("good.txt", digest, 4)
    assert not sink.has("good.txt", "0" * 64, None)
    assert not sink.has("link.txt", digest, 3)
    assert not sink.has("absent.txt", digest, 3)


def test_a_folder_swapped_for_a_symlink_after_the_check_changes_nothing(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    with DirSink(out) as sink:
        sink.put("d/a.txt", b"a")
        (out / "d").rename(out / "d-moved")
        (out / "d").symlink_to(outside)  # the race a hostile local user would try
        sink.put("d/b.txt", b"b")
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (out / "d-moved").iterdir()) == ["a.txt", "b.txt"]
