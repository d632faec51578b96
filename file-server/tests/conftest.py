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
from fileserver.nginx import NativeNginx, is_fileserver
from fileserver.pool import generate

POOL_COUNT = 300
SECRET = "TOP-SECRET-OUTSIDE-THE-ROOT"


def world_readable_tmp(prefix: str) -> Path:
    """A temp folder nginx workers (user nobody) can traverse: pytest's tmp_path is 0700, this is 0755."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
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


@pytest.fixture(scope="session")
def nginx(pool: Path, workdir: Path) -> Iterator[NativeNginx]:
    server = NativeNginx(root=pool, prefix=workdir / "nginx")
    with server:
        yield server


@pytest.fixture(scope="session")
def any_server(nginx: NativeNginx) -> str:
    """A server for read-only tests: the one `docker compose up` / `make serve` started, if running.

    It is recognised by its ``/healthz`` body, never by the port alone; otherwise the native fixture's server.
    Tests that plant hostile files or change the pool always use their own native nginx.
    """
    url = f"http://127.0.0.1:{os.environ.get('FILESERVER_PORT', '8080')}/"
    return url if is_fileserver(url) else nginx.url


#: the CLI as users run it, from this venv whether or not its bin/ is on PATH
FS = [sys.executable, "-m", "fileserver"]
