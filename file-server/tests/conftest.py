"""Fixtures: a small deterministic pool with hostile extras, served by the real native nginx."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileserver.manifest import Entry, parse_sums
from fileserver.nginx import NativeNginx, NginxError, is_fileserver, nginx_binary
from fileserver.pool import generate

POOL_COUNT = 300
SECRET = "TOP-SECRET-OUTSIDE-THE-ROOT"


def _scratch() -> str:
    """tmpfs when it has room (pools are thousands of small files: a busy disk made setups take seconds)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return "/tmp"
    return "/dev/shm" if st.f_bavail * st.f_frsize > 512 * 2**20 else "/tmp"


def world_readable_tmp(prefix: str) -> Path:
    """A temp folder nginx workers (user nobody) can traverse: pytest's tmp_path is 0700, this is 0755."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch()))
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    d = world_readable_tmp("fileserver-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_hostile_pool(base: Path, count: int = POOL_COUNT) -> Path:
    """Pool + things nginx must never serve: dotfiles, symlinks (file, folder) pointing outside."""
    pool = base / "pool"
    generate(pool, count, seed=7)
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (pool / ".secret").write_text(SECRET + "\n")
    (pool / "news" / ".hidden.txt").write_text(SECRET + "\n")
    (pool / "link-out.txt").symlink_to(outside / "secret.txt")
    (pool / "linkdir").symlink_to(outside)
    (pool / "news" / "passwd.txt").symlink_to("/etc/passwd")
    return pool


@pytest.fixture(scope="session")
def pool(workdir: Path) -> Path:
    return make_hostile_pool(workdir)


@pytest.fixture(scope="session")
def entries(pool: Path) -> list[Entry]:
    return parse_sums((pool / "SHA256SUMS").read_text())


def missing_prerequisite(message: str) -> None:
    """One line naming what is missing and how to install it: a failure under CI=true, a skip otherwise."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Nearly every test runs the real nginx or sha256sum: without them, one line instead of 100 errors."""
    missing = (
        []
        if shutil.which("sha256sum")
        else ["sha256sum not found: install it with 'apt-get install -y coreutils'"]
    )
    try:
        nginx_binary()
    except NginxError as exc:
        missing.insert(0, str(exc))
    if missing:
        pytest.exit("; ".join(missing), returncode=1)


@pytest.fixture(scope="session")
def nginx(pool: Path, workdir: Path) -> Iterator[NativeNginx]:
    server = NativeNginx(root=pool, prefix=workdir / "nginx")
    with server:
        yield server


@pytest.fixture(scope="session")
def any_server(nginx: NativeNginx) -> str:
    """A server for read-only tests: the one FILESERVER_TEST_URL names (e.g. a running `docker compose up`
    stack, http://127.0.0.1:8080/), else the native fixture's. It must answer ``/healthz`` with our body.

    Tests that plant hostile files or change the pool always use their own native nginx.
    """
    url = os.environ.get("FILESERVER_TEST_URL")
    if not url:
        return nginx.url
    assert is_fileserver(url), f"FILESERVER_TEST_URL={url} does not answer /healthz with 'fileserver ok'"
    return url


#: the CLI as users run it, from this venv whether or not its bin/ is on PATH
FS = [sys.executable, "-m", "fileserver"]
