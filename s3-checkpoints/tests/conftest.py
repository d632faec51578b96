"""Fixtures: one real MinIO server per test session, started by the session itself.

No mocks: every test talks to the real server over loopback. Each test gets its own fresh bucket.
An existing server (e.g. `docker compose up`) is used only when asked for explicitly:
``S3CKPT_TEST_ENDPOINT=http://127.0.0.1:9000`` with its ``MINIO_ROOT_USER``/``MINIO_ROOT_PASSWORD``. A server
that merely happens to listen on the compose port is never picked up: it may be another version, or go
away in the middle of the suite. The server binary is ``MINIO_BIN``, the ``make install`` build or ``minio``
on PATH; without one, the server tests are skipped with the one line saying how to get it (under ``CI=true``
the session fails on that line instead).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from s3ckpt import CheckpointStore, S3Settings, make_client
from s3ckpt.errors import S3CkptError
from s3ckpt.minio import DEFAULT_PASSWORD, DEFAULT_USER, MinioServer, find_minio_binary, is_minio_live
from s3ckpt.s3 import ensure_bucket

REUSE_VAR = "S3CKPT_TEST_ENDPOINT"


@dataclass
class Minio:
    endpoint: str
    user: str
    password: str
    data_dir: str | None = None
    started_here: bool = True

    def settings(self, bucket: str = "checkpoints", **kw: str) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, access_key=self.user, secret_key=self.password,
                          bucket=bucket, prefix="ckpt", **kw)

    def env(self, bucket: str) -> dict[str, str]:
        """Environment for a child process (CLI / trainer) pointing at this server and bucket."""
        e = {k: v for k, v in os.environ.items() if not k.startswith(("S3CKPT_", "AWS_"))}
        e.update(S3CKPT_ENDPOINT=self.endpoint, S3CKPT_ACCESS_KEY=self.user, S3CKPT_SECRET_KEY=self.password,
                 S3CKPT_BUCKET=bucket, S3CKPT_PREFIX="ckpt", PYTHONUNBUFFERED="1")
        return e


def _requested_server() -> Minio | None:
    """The server named by ``S3CKPT_TEST_ENDPOINT``, if set; it must answer, or the session fails."""
    endpoint = os.environ.get(REUSE_VAR)
    if not endpoint:
        return None
    m = Minio(endpoint, os.environ.get("MINIO_ROOT_USER", DEFAULT_USER),
              os.environ.get("MINIO_ROOT_PASSWORD", DEFAULT_PASSWORD), started_here=False)
    if not is_minio_live(endpoint, timeout=3):
        pytest.exit(f"{REUSE_VAR}={endpoint} does not answer as MinIO: start it or unset {REUSE_VAR}", 2)
    make_client(m.settings()).list_buckets()  # wrong credentials: fail here, once, loudly
    return m


@pytest.fixture(scope="session")
def minio_binary() -> str:
    """The MinIO server to start; a missing one is a missing prerequisite: one line, never a traceback."""
    try:
        return find_minio_binary()
    except S3CkptError as e:
        if os.environ.get("CI") == "true":
            pytest.exit(f"prerequisite missing: {e}", returncode=1)
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def minio(request: pytest.FixtureRequest) -> Iterator[Minio]:
    m = _requested_server()
    if m is not None:
        yield m
        return
    srv = MinioServer(binary=request.getfixturevalue("minio_binary")).start()
    try:
        yield Minio(srv.endpoint, srv.user, srv.password, srv.data_dir)
    finally:
        srv.stop()


@pytest.fixture
def bucket(minio: Minio) -> str:
    """A new, versioned bucket for this test only."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s = minio.settings(name)
    ensure_bucket(make_client(s), s)
    return name


@pytest.fixture
def store(minio: Minio, bucket: str) -> Iterator[CheckpointStore]:
    st = CheckpointStore(settings=minio.settings(bucket), run="test", part_size=5 * 1024 * 1024)
    yield st
    st.close()
