"""`fileserver serve` and every other owner of a native nginx take it with them, however they are stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FS

from fileserver.nginx import free_port, is_fileserver, nginx_binary

NGINX_EXE = os.path.realpath(nginx_binary())


def nginx_processes(prefix: Path) -> list[int]:
    """Pids of nginx processes (master or workers) of ``prefix``: the master names it in its command line,
    workers keep its error log open, so an orphaned worker is found too."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.path.realpath(f"/proc/{pid}/exe") != NGINX_EXE:
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone meanwhile
            continue
        if str(prefix) in cmdline or any(f.startswith(str(prefix)) for f in fds):
            found.append(int(pid))
    return found


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def wait_until(predicate, seconds: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def leave_nothing(proc: subprocess.Popen[str], prefix: Path) -> None:
    """Test clean-up that holds even when the handling under test is broken."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in nginx_processes(prefix):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it was already on its way out
            pass


def start_serve(pool: Path, prefix: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*FS, "serve", "--root", str(pool), "--port", str(port), "--prefix", str(prefix)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("serving "), line + proc.stderr.read()  # type: ignore[union-attr]
    return proc, line.split(" at ")[1].split()[0]


@pytest.mark.parametrize(
    "signo", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name
)
def test_serve_stops_nginx_on_every_signal(pool: Path, workdir: Path, signo: signal.Signals) -> None:
    prefix = (workdir / f"serve-{signo.name}").resolve()
    port = free_port()
    proc, url = start_serve(pool, prefix, port)
    try:
        assert is_fileserver(url)
        assert len(nginx_processes(prefix)) >= 2, "expected a master and at least one worker"
        proc.send_signal(signo)
        code = proc.wait(20)
        # handled signals end with the shell convention 128+N; SIGKILL cannot be handled
        assert code == (-signo if signo == signal.SIGKILL else 128 + signo), proc.stderr.read()  # type: ignore[union-attr]
        assert wait_until(lambda: not port_open(port), 5), f"port {port} still open after {signo.name}"
        assert wait_until(lambda: not nginx_processes(prefix), 5), f"nginx left after {signo.name}"
    finally:
        leave_nothing(proc, prefix)


def test_second_serve_on_the_same_port_says_it_is_taken(pool: Path, workdir: Path) -> None:
    prefix = (workdir / "serve-first").resolve()
    port = free_port()
    proc, url = start_serve(pool, prefix, port)
    try:
        second = workdir / "serve-second"
        res = subprocess.run(
            [*FS, "serve", "--root", str(pool), "--port", str(port), "--prefix", str(second)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 2
        assert res.stderr.count("\n") == 1 and f"port {port} on 127.0.0.1 is taken" in res.stderr, res.stderr
        assert not nginx_processes(second.resolve())
        assert is_fileserver(url), "the first server must keep serving"
    finally:
        leave_nothing(proc, prefix)


def test_a_killed_owner_takes_its_nginx_along(pool: Path, workdir: Path) -> None:
    """What the test fixtures and the demo rely on: their NativeNginx dies with them, even on SIGKILL."""
    prefix = (workdir / "owner-killed").resolve()
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from fileserver.nginx import NativeNginx\n"
            f"s = NativeNginx(root=Path({str(pool)!r}), prefix=Path({str(prefix)!r})).start()\n"
            "print(s.port, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        port = int(owner.stdout.readline())
        assert port_open(port) and nginx_processes(prefix)
        owner.kill()
        owner.wait(10)
        assert wait_until(lambda: not port_open(port), 5)
        assert wait_until(lambda: not nginx_processes(prefix), 5)
    finally:
        leave_nothing(owner, prefix)
