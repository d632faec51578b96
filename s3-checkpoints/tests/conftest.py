"""Fixtures: one real MinIO server per test session (reused from `docker compose up` if running).

No mocks: every test talks to the real server over loopback. Each test gets its own fresh bucket.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from s3ckpt import CheckpointStore, S3Settings, make_client
from s3ckpt.minio import DEFAULT_PASSWORD, DEFAULT_USER, MinioServer, is_minio_live
from s3ckpt.s3 import ensure_bucket

COMPOSE_ENDPOINT = "http://127.0.0.1:9000"


@dataclass
class Minio:
    endpoint: str
    user: str
    password: str
    data_dir: str | None = None

    def settings(self, bucket: str = "checkpoints", **kw: str) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, access_key=self.user, secret_key=self.password,
                          bucket=bucket, prefix="ckpt", **kw)

    def env(self, bucket: str) -> dict[str, str]:
        """Environment for a child process (CLI / trainer) pointing at this server and bucket."""
        e = {k: v for k, v in os.environ.items() if not k.startswith(("S3CKPT_", "AWS_"))}
        e.update(S3CKPT_ENDPOINT=self.endpoint, S3CKPT_ACCESS_KEY=self.user, S3CKPT_SECRET_KEY=self.password,
                 S3CKPT_BUCKET=bucket, S3CKPT_PREFIX="ckpt", PYTHONUNBUFFERED="1")
        return e


def _compose_server() -> Minio | None:
    """A server started by `docker compose up`, if it is really MinIO and our credentials work."""
    if not is_minio_live(COMPOSE_ENDPOINT):
        return None
    m = Minio(COMPOSE_ENDPOINT, os.environ.get("MINIO_ROOT_USER", DEFAULT_USER),
              os.environ.get("MINIO_ROOT_PASSWORD", DEFAULT_PASSWORD))
    try:
        make_client(m.settings()).list_buckets()
    except Exception:  # noqa: BLE001 - someone else's MinIO: start our own
        return None
    return m


@pytest.fixture(scope="session")
def minio() -> Iterator[Minio]:
    m = _compose_server()
    if m is not None:
        yield m
        return
    srv = MinioServer().start()
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
