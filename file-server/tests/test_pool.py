"""Pool determinism and exact compatibility with the real ``sha256sum -c``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FS

from fileserver.manifest import ManifestError, parse_json, parse_sums
from fileserver.pool import MAX_SIZE, MIN_SIZE, generate


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", 120, seed=3)
    generate(tmp_path / "b", 120, seed=3)
    generate(tmp_path / "c", 120, seed=4)
    sums_a = (tmp_path / "a" / "SHA256SUMS").read_bytes()
    assert sums_a == (tmp_path / "b" / "SHA256SUMS").read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert sums_a != (tmp_path / "c" / "SHA256SUMS").read_bytes()
    # regenerating in place (a pool made by us) gives the same bytes again
    generate(tmp_path / "a", 120, seed=3)
    assert (tmp_path / "a" / "SHA256SUMS").read_bytes() == sums_a


def test_files_are_realistic_utf8_text(pool: Path, entries: list) -> None:
    assert len(entries) == 300
    non_ascii = 0
    depths = set()
    for e in entries:
        data = (pool / e.path).read_bytes()
        assert MIN_SIZE <= len(data) <= MAX_SIZE, e.path
        text = data.decode("utf-8")  # raises if not valid UTF-8
        non_ascii += any(ord(c) > 127 for c in text)
        depths.add(e.path.count("/"))
        assert e.path.endswith(".txt")
    assert non_ascii >= 30, "some files must carry non-ASCII text"
    assert {1, 2, 3} <= depths, "folders must be nested"


def test_real_sha256sum_accepts_our_manifest_and_catches_a_change(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    entries = generate(pool, 50, seed=1)
    ok = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=pool, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(": OK") == 50
    victim = entries[10].path
    with open(pool / victim, "ab") as fh:
        fh.write(b"tampered")
    bad = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=pool, capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert f"{victim}: FAILED" in bad.stdout


def test_manifest_json_matches_sha256sums(pool: Path, entries: list) -> None:
    doc = json.loads((pool / "manifest.json").read_text())
    assert doc["count"] == len(entries)
    from_json = parse_json((pool / "manifest.json").read_text())
    assert [(e.path, e.sha256) for e in from_json] == [(e.path, e.sha256) for e in entries]
    for e in from_json:
        assert e.size == (pool / e.path).stat().st_size


def test_manifest_command_on_any_folder(tmp_path: Path) -> None:
    d = tmp_path / "docs"
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "b" / "deep.txt").write_text("déjà vu\n")
    (d / "top.txt").write_text("top\n")
    (d / "name with space.txt").write_text("space\n")
    (d / ".env").write_text("SECRET=1\n")
    (d / "link.txt").symlink_to(d / "top.txt")
    res = subprocess.run([*FS, "manifest", str(d)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sums = (d / "SHA256SUMS").read_text()
    assert [e.path for e in parse_sums(sums)] == ["a/b/deep.txt", "name with space.txt", "top.txt"]
    check = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=d, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_pool_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    res = subprocess.run(
        [*FS, "pool", "--count", "3", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "not empty" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "path",
    [
        "../evil.txt",
        "/etc/passwd",
        "a/../../evil",
        "a\\..\\evil",
        "C:evil",
        "a//b",
        "./a",
        "a/./b",
        "a/",
        "x\x00y",
    ],
)
def test_unsafe_manifest_paths_are_refused(path: str) -> None:
    with pytest.raises(ManifestError):
        parse_sums(f"{'0' * 64}  {path}\n")
    with pytest.raises(ManifestError):
        parse_json(json.dumps({"files": [{"path": path, "size": 1, "sha256": "0" * 64}]}))


def test_sha256sum_variants_parse() -> None:
    text = f"{'a' * 64} *bin/mode.txt\n\\{'b' * 64}  esc\\\\aped.txt\n{'C' * 64}  upper.txt\n"
    with pytest.raises(ManifestError):  # the escaped name holds a backslash: refused, never guessed at
        parse_sums(text)
    ok = parse_sums(f"{'a' * 64} *bin/mode.txt\n\n{'C' * 64}  upper.txt\n")
    assert [(e.path, e.sha256[:2]) for e in ok] == [("bin/mode.txt", "aa"), ("upper.txt", "cc")]
    with pytest.raises(ManifestError, match="duplicate"):
        parse_sums(f"{'a' * 64}  x.txt\n{'b' * 64}  x.txt\n")
    with pytest.raises(ManifestError, match=":1:"):
        parse_sums("not a manifest\n")
