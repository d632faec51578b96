"""The CLI as a person uses it: help texts, `serve` in the foreground, the demo, stalled servers."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FS, missing_prerequisite

from fileserver.nginx import is_fileserver


@pytest.mark.parametrize("sub", [[], ["pool"], ["manifest"], ["fetch"], ["verify"], ["serve"]])
def test_help(sub: list[str]) -> None:
    res = subprocess.run([*FS, *sub, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: fileserver" in res.stdout


def test_serve_runs_nginx_in_the_foreground_until_ctrl_c(pool: Path, workdir: Path) -> None:
    proc = subprocess.Popen(
        [*FS, "serve", "--root", str(pool), "--port", "0", "--prefix", str(workdir / "serve")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving "), line
        url = line.split(" at ")[1].split()[0]
        assert is_fileserver(url)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 128 + signal.SIGINT
        time.sleep(0.2)
        assert not is_fileserver(url)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_without_manifest_is_a_clear_error(tmp_path: Path) -> None:
    res = subprocess.run([*FS, "serve", "--root", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "has no SHA256SUMS" in res.stderr


def test_demo_serves_fetches_and_verifies(pool: Path, workdir: Path) -> None:
    if shutil.which("curl") is None:  # the demo shows the curl + sha256sum recipe
        missing_prerequisite("curl not found: 'make install' installs it as root (apt-get install -y curl)")
    res = subprocess.run(
        [sys.executable, "-m", "fileserver.demo", "--pool", str(pool), "--run", str(workdir / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DEMO OK" in res.stdout and ": OK" in res.stdout


def test_stalled_server_times_out_and_gives_up_with_names(tmp_path: Path) -> None:
    """A server that accepts and never answers: each file is retried, then named as failed."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    manifest = tmp_path / "m.sums"
    manifest.write_text(f"{'a' * 64}  one.txt\n{'b' * 64}  two/three.txt\n")
    try:
        res = subprocess.run(
            [
                *FS,
                "fetch",
                f"http://127.0.0.1:{port}/",
                "--out",
                str(tmp_path / "o"),
                "--manifest",
                str(manifest),
                "--timeout",
                "0.5",
                "--retries",
                "1",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
        for c in held:
            c.close()
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED   one.txt" in res.stdout and "FAILED   two/three.txt" in res.stdout
    assert "no data for" in res.stdout
