"""Several mirrors of one pool, each a real native nginx: spread, failover, wrong bytes, other manifests."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FS, world_readable_tmp
from flaky_proxy import FlakyProxy

from fileserver.client import fetch_pool
from fileserver.manifest import Entry, parse_sums
from fileserver.nginx import NativeNginx
from fileserver.pool import generate

COUNT = 1500


def served(stdout: str) -> dict[str, int]:
    """``mirror URL: served N files`` lines of the summary."""
    return {url: int(n) for url, n in re.findall(r"^mirror (\S+): served (\d+) files", stdout, re.M)}


def mirror_line(stdout: str, url: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(f"mirror {url}:")]
    assert len(lines) == 1, stdout
    return lines[0]


def files_logged(server: NativeNginx) -> int:
    return sum(1 for ln in server.access_log.read_text().splitlines() if '.txt HTTP/1.1" 200 ' in ln)


@pytest.fixture(scope="module")
def source() -> Iterator[Path]:
    base = world_readable_tmp("fileserver-mirror-src-")
    generate(base / "pool", COUNT, seed=11)
    yield base / "pool"
    shutil.rmtree(base, ignore_errors=True)


class Mirrors:
    """Two copies of one pool (``a``, ``b``), each served by its own nginx."""

    def __init__(self, source: Path, base: Path) -> None:
        self.pools = [base / "a", base / "b"]
        for pool in self.pools:
            shutil.copytree(source, pool)
        self.entries: list[Entry] = parse_sums((source / "SHA256SUMS").read_text())
        self.servers = [NativeNginx(root=p, prefix=base / f"nginx-{p.name}") for p in self.pools]

    def fetch(self, *args: str, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*FS, "fetch", *args, "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=120
        )


@pytest.fixture()
def mirrors(source: Path) -> Iterator[Mirrors]:
    base = world_readable_tmp("fileserver-mirrors-")
    m = Mirrors(source, base)
    try:
        for server in m.servers:
            server.start()
        yield m
    finally:
        for server in m.servers:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_files_are_spread_over_both_mirrors(mirrors: Mirrors, tmp_path: Path) -> None:
    a, b = mirrors.servers
    res = mirrors.fetch(a.url, b.url, out=tmp_path / "copy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {COUNT}/{COUNT} files" in res.stdout
    counts = served(res.stdout)
    assert sum(counts.values()) == COUNT
    # both took a real share (the split follows their speed, so only "not lopsided" is asserted)
    assert counts[a.url] >= COUNT // 4 and counts[b.url] >= COUNT // 4, res.stdout
    assert (files_logged(a), files_logged(b)) == (counts[a.url], counts[b.url])
    assert "FAILED" not in res.stdout
    assert subprocess.run([*FS, "verify", str(tmp_path / "copy")], capture_output=True).returncode == 0


def test_from_python_with_urls(mirrors: Mirrors, tmp_path: Path) -> None:
    a, b = mirrors.servers
    result = fetch_pool(urls=[a.url, b.url], out=tmp_path / "copy")
    assert result.ok and result.verified == COUNT
    assert [m.url for m in result.mirrors] == [a.url, b.url]
    assert sum(m.served for m in result.mirrors) == COUNT


def test_a_mirror_killed_mid_run_leaves_its_files_to_the_other(mirrors: Mirrors, tmp_path: Path) -> None:
    """nginx b is SIGKILLed (master and workers) once it has served some files: a gets the rest."""
    a, b = mirrors.servers
    # one request at a time per mirror, so that the run lasts long enough to kill b in the middle
    proc = subprocess.Popen(
        [*FS, "fetch", a.url, b.url, "--out", str(tmp_path / "copy"), "-q", "-j", "1", "--depth", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while files_logged(b) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        assert proc.poll() is None, "the download ended before b could be killed: make the pool bigger"
        assert b.proc is not None
        os.killpg(b.proc.pid, signal.SIGKILL)
        b.proc.wait(10)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert f"verified {COUNT}/{COUNT} files" in out
    counts = served(out)
    assert counts[b.url] >= 20 and counts[a.url] + counts[b.url] == COUNT, out
    assert "FAILED" in mirror_line(out, b.url)
    assert "FAILED" not in mirror_line(out, a.url)
    assert subprocess.run([*FS, "verify", str(tmp_path / "copy")], capture_output=True).returncode == 0


def test_a_tampered_file_is_taken_from_the_other_mirror(mirrors: Mirrors, tmp_path: Path) -> None:
    a, b = mirrors.servers
    victim = mirrors.entries[0].path
    good = (mirrors.pools[0] / victim).read_bytes()
    (mirrors.pools[1] / victim).write_bytes(b"X" + good[1:])  # same size, first byte changed on b only
    # a serves the manifest, then its first connections for files are reset: so b is asked for the first
    # files, the victim among them, whatever the timing
    with FlakyProxy((a.host, a.port), [("pass",)] + [("reset",)] * 4) as proxy:
        res = mirrors.fetch(proxy.url, b.url, out=tmp_path / "copy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {COUNT}/{COUNT} files" in res.stdout
    line = mirror_line(res.stdout, b.url)
    assert "FAILED" in line and f"wrong or missing: {victim}" in line, res.stdout
    assert (tmp_path / "copy" / victim).read_bytes() == good
    assert "MISMATCH" not in res.stdout


def test_a_stalled_mirror_is_dropped_and_its_files_go_to_the_other(mirrors: Mirrors, tmp_path: Path) -> None:
    """b serves the manifest, then its connections take requests and never answer: after --timeout they are
    dropped and what they held is fetched from a."""
    a, b = mirrors.servers
    with FlakyProxy((b.host, b.port), [("pass",)] + [("stall",)] * 50) as proxy:
        res = mirrors.fetch(a.url, proxy.url, "--timeout", "2", out=tmp_path / "copy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {COUNT}/{COUNT} files" in res.stdout
    assert "FAILED: no data for 2s" in mirror_line(res.stdout, proxy.url), res.stdout
    assert served(res.stdout) == {a.url: COUNT, proxy.url: 0}


def test_a_file_wrong_on_every_mirror_is_named(mirrors: Mirrors, tmp_path: Path) -> None:
    a, b = mirrors.servers
    victim = mirrors.entries[1].path
    for pool in mirrors.pools:
        (pool / victim).write_text("changed on both mirrors\n")
    res = mirrors.fetch(a.url, b.url, out=tmp_path / "copy")
    assert res.returncode == 1
    assert f"verified {COUNT - 1}/{COUNT}" in res.stdout
    assert re.search(rf"^MISMATCH {re.escape(victim)} .*from 2 mirror\(s\)", res.stdout, re.M), res.stdout
    assert not (tmp_path / "copy" / victim).exists()


def test_a_mirror_with_a_different_manifest_is_refused(mirrors: Mirrors, tmp_path: Path) -> None:
    a, b = mirrors.servers
    sums = mirrors.pools[1] / "SHA256SUMS"
    sums.write_text("".join(sums.read_text().splitlines(keepends=True)[:-1]))  # b lists one file less
    res = mirrors.fetch(a.url, b.url, out=tmp_path / "copy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {COUNT}/{COUNT}" in res.stdout
    assert "REFUSED (its SHA256SUMS differs" in mirror_line(res.stdout, b.url)
    assert served(res.stdout) == {a.url: COUNT}
    assert files_logged(b) == 0
    # pinned to b's manifest instead: a is the one refused, b serves its 599 files
    pinned = hashlib.sha256(sums.read_bytes()).hexdigest()
    res = mirrors.fetch(a.url, b.url, "--manifest-sha256", pinned, out=tmp_path / "pinned")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {COUNT - 1}/{COUNT - 1}" in res.stdout
    assert "REFUSED" in mirror_line(res.stdout, a.url)
    assert f"from {b.url}SHA256SUMS" in res.stdout


def test_an_unreachable_mirror_is_refused_and_named(mirrors: Mirrors, tmp_path: Path) -> None:
    a, b = mirrors.servers
    b.stop()
    res = mirrors.fetch(a.url, b.url, "--retries", "1", out=tmp_path / "copy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {COUNT}/{COUNT}" in res.stdout
    assert "REFUSED (no manifest: cannot download" in mirror_line(res.stdout, b.url)


def test_the_same_mirror_twice_is_a_one_line_error(mirrors: Mirrors, tmp_path: Path) -> None:
    a, _ = mirrors.servers
    res = mirrors.fetch(a.url, a.url, out=tmp_path / "copy")
    assert (
        res.returncode == 2 and "the same URL is given twice" in res.stderr and "Traceback" not in res.stderr
    )
