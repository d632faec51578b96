"""The client against the real nginx: full download, resume, tampering, retries, hostile manifests."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import FS, make_hostile_pool, world_readable_tmp
from flaky_proxy import FlakyProxy

from fileserver.manifest import format_sums, parse_sums
from fileserver.nginx import NativeNginx, free_port


def fetch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FS, "fetch", *args, "--quiet"], capture_output=True, text=True, timeout=timeout)


def test_full_fetch_verifies_every_file(any_server: str, tmp_path: Path) -> None:
    """Against the compose/`make serve` server when one runs, else the native fixture: all files verify."""
    import urllib.request

    with urllib.request.urlopen(any_server + "SHA256SUMS", timeout=10) as resp:
        entries = parse_sums(resp.read().decode())
    out = tmp_path / "copy"
    res = fetch(any_server, "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {len(entries)}/{len(entries)} files" in res.stdout
    for e in entries:
        assert hashlib.sha256((out / e.path).read_bytes()).hexdigest() == e.sha256
    # the copy carries its manifest: both our verify and the real sha256sum -c accept it
    assert subprocess.run([*FS, "verify", str(out)], capture_output=True).returncode == 0
    check = subprocess.run(
        ["sha256sum", "-c", "--quiet", "--strict", "SHA256SUMS"], cwd=out, capture_output=True
    )
    assert check.returncode == 0
    # nothing but the manifest's files (and the manifest) was written
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {e.path for e in entries} | {"SHA256SUMS"}


def test_resume_skips_good_files_and_repairs_the_rest(
    nginx: NativeNginx, entries: list, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    assert fetch(nginx.url, "--out", str(out), "-j", "2").returncode == 0
    (out / entries[0].path).unlink()
    (out / entries[1].path).write_text("corrupted")
    (out / entries[2].path).write_bytes((out / entries[2].path).read_bytes()[:-1] + b"X")  # same size
    res = fetch(nginx.url, "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "fetched 3 files" in res.stdout
    assert f"{len(entries) - 3} already present and verified" in res.stdout
    assert subprocess.run([*FS, "verify", str(out)], capture_output=True).returncode == 0


def test_verify_names_missing_and_changed_files(nginx: NativeNginx, entries: list, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    assert fetch(nginx.url, "--out", str(out)).returncode == 0
    (out / entries[5].path).unlink()
    (out / entries[6].path).write_text("changed")
    res = subprocess.run([*FS, "verify", str(out)], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"MISSING  {entries[5].path}" in res.stdout
    assert f"MISMATCH {entries[6].path}" in res.stdout


@pytest.fixture()
def own_server(tmp_path: Path):
    """A private pool + nginx for tests that change files on the server."""
    base = world_readable_tmp("fileserver-own-")
    pool = make_hostile_pool(base, count=60)
    with NativeNginx(root=pool, prefix=base / "nginx") as server:
        yield server, pool, parse_sums((pool / "SHA256SUMS").read_text())
    shutil.rmtree(base, ignore_errors=True)


def test_file_changed_on_server_after_manifest_is_named(own_server, tmp_path: Path) -> None:
    server, pool, entries = own_server
    changed, removed = entries[3].path, entries[4].path
    (pool / changed).write_text("the server's copy changed after the manifest was written\n")
    (pool / removed).unlink()
    res = fetch(server.url, "--out", str(tmp_path / "copy"), "--retries", "1")
    assert res.returncode == 1
    assert f"MISMATCH {changed}" in res.stdout
    assert f"MISSING  {removed}" in res.stdout
    assert f"verified {len(entries) - 2}/{len(entries)}" in res.stdout
    assert "2 file(s) did not verify" in res.stderr
    assert not (tmp_path / "copy" / changed).exists(), "a file that failed its hash must not be written"


def test_truncated_responses_and_dropped_connections_are_retried(own_server, tmp_path: Path) -> None:
    server, pool, entries = own_server
    plan = [("cut", 3000), ("503",), ("reset",), ("cut", 20000), ("cut", 150), ("cut", 41000)]
    with FlakyProxy((server.host, server.port), plan) as proxy:
        res = fetch(
            proxy.url,
            "--out",
            str(tmp_path / "copy"),
            "-j",
            "1",
            "--depth",
            "8",
            "--retries",
            "8",
            "--manifest",
            str(pool / "SHA256SUMS"),
        )
        assert proxy.accepted > len(plan)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {len(entries)}/{len(entries)}" in res.stdout
    retries = int(res.stdout.split(" retries")[0].rsplit(" ", 1)[1])
    assert retries >= 3
    assert subprocess.run([*FS, "verify", str(tmp_path / "copy")], capture_output=True).returncode == 0


def test_manifest_given_out_of_band(nginx: NativeNginx, pool: Path, entries: list, tmp_path: Path) -> None:
    sums = pool / "SHA256SUMS"
    digest = hashlib.sha256(sums.read_bytes()).hexdigest()
    res = fetch(nginx.url, "--out", str(tmp_path / "a"), "--manifest", str(sums), "--manifest-sha256", digest)
    assert res.returncode == 0, res.stderr
    # the server's manifest pinned by hash
    assert fetch(nginx.url, "--out", str(tmp_path / "b"), "--manifest-sha256", digest).returncode == 0
    bad = fetch(nginx.url, "--out", str(tmp_path / "c"), "--manifest-sha256", "0" * 64)
    assert bad.returncode == 1 and "refusing to trust it" in bad.stderr
    assert not (tmp_path / "c").exists()
    # a subset manifest (e.g. one annotator's share) downloads just that subset; manifest.json works too
    subset = tmp_path / "subset.sums"
    subset.write_text(format_sums(entries[:10]))
    res = fetch(nginx.url, "--out", str(tmp_path / "d"), "--manifest", str(subset))
    assert res.returncode == 0 and "verified 10/10" in res.stdout
    res = fetch(nginx.url, "--out", str(tmp_path / "e"), "--manifest", str(pool / "manifest.json"))
    assert res.returncode == 0 and f"verified {len(entries)}/{len(entries)}" in res.stdout


@pytest.mark.parametrize(
    "evil", ["../escaped.txt", "/tmp/escaped.txt", "news/../../escaped.txt", "news\\..\\..\\escaped.txt"]
)
def test_hostile_manifest_never_writes_outside_out(nginx: NativeNginx, tmp_path: Path, evil: str) -> None:
    manifest = tmp_path / "evil.sums"
    manifest.write_text(f"{'a' * 64}  ok.txt\n{'b' * 64}  {evil}\n")
    out = tmp_path / "deep" / "out"
    res = fetch(nginx.url, "--out", str(out), "--manifest", str(manifest))
    assert res.returncode == 2
    assert "unsafe entry refused" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    assert not Path("/tmp/escaped.txt").exists()


def test_symlink_planted_in_out_is_not_followed(nginx: NativeNginx, entries: list, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    target = tmp_path / "victim.txt"
    target.write_text("do not overwrite")
    (out / entries[0].path).parent.mkdir(parents=True)
    (out / entries[0].path).symlink_to(target)
    res = fetch(nginx.url, "--out", str(out))
    assert res.returncode == 1
    assert f"FAILED   {entries[0].path}" in res.stdout
    assert target.read_text() == "do not overwrite"


def test_unreachable_server_and_bad_url_are_one_line_errors(tmp_path: Path) -> None:
    res = fetch(f"http://127.0.0.1:{free_port()}/", "--out", str(tmp_path / "x"), "--retries", "1")
    assert res.returncode == 2
    assert res.stderr.startswith("fileserver: error: cannot download") and "Traceback" not in res.stderr
    res = fetch("ftp://example/", "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "not an http(s) URL" in res.stderr
    res = fetch("http://127.0.0.1:1/", "--manifest-sha256", "abc")
    assert res.returncode == 2 and "64 hex" in res.stderr


def test_symlinked_folder_planted_in_out_is_not_followed(
    nginx: NativeNginx, entries: list, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    outside = tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    top = entries[0].path.split("/")[0]
    (out / top).symlink_to(outside)
    res = fetch(nginx.url, "--out", str(out))
    assert res.returncode == 1
    under = [e.path for e in entries if e.path.startswith(top + "/")]
    assert under and all(f"FAILED   {p}" in res.stdout for p in under)
    assert list(outside.iterdir()) == [], "nothing may be created through the planted symlink"
    assert f"verified {len(entries) - len(under)}/{len(entries)}" in res.stdout


def test_any_folder_with_spaces_and_non_ascii_names(tmp_path: Path) -> None:
    """`fileserver manifest` on a hand-made folder, served by nginx, fetched: names are percent-encoded."""
    base = world_readable_tmp("fileserver-names-")
    try:
        docs = base / "docs"
        (docs / "ünïcode dir" / "日本").mkdir(parents=True)
        (docs / "ünïcode dir" / "file with space.txt").write_text("spaces\n")
        (docs / "ünïcode dir" / "日本" / "文書 #1?.txt").write_text("こんにちは\n")
        (docs / "100%.txt").write_text("percent\n")
        for d in (docs, docs / "ünïcode dir", docs / "ünïcode dir" / "日本"):
            d.chmod(0o755)
        assert subprocess.run([*FS, "manifest", str(docs)], capture_output=True).returncode == 0
        with NativeNginx(root=docs, prefix=base / "nginx") as server:
            res = fetch(server.url, "--out", str(tmp_path / "copy"))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "verified 3/3" in res.stdout
        assert (tmp_path / "copy" / "ünïcode dir" / "日本" / "文書 #1?.txt").read_text() == "こんにちは\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_http10_server_closing_every_connection(pool: Path, entries: list, tmp_path: Path) -> None:
    """Against python -m http.server (HTTP/1.0, one response per connection): still everything verifies."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(pool)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "SHA256SUMS", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        res = subprocess.run(
            [*FS, "fetch", url, "--out", str(tmp_path / "o"), "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.terminate()
        server.wait(10)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {len(entries)}/{len(entries)}" in res.stdout
    assert " 0 retries" in res.stdout  # a clean close is not a failure: unanswered requests just go back


def test_manifest_download_is_retried_like_the_files(own_server, tmp_path: Path) -> None:
    """The server's SHA256SUMS goes through the same fetcher: a 503 and a reset first, then it arrives."""
    server, _, entries = own_server
    with FlakyProxy((server.host, server.port), [("503",), ("reset",), ("cut", 100)]) as proxy:
        res = fetch(proxy.url, "--out", str(tmp_path / "copy"), "--retries", "4")
        assert proxy.accepted > 3
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {len(entries)}/{len(entries)}" in res.stdout
    assert "manifest: " in res.stdout and "/SHA256SUMS" in res.stdout
