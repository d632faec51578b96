"""Run the real MinIO server as a local process (the native path; compose runs the same server).

Used by the pytest fixture, ``make demo`` and the benchmark. A compose-started server on the default
port is reused when it answers MinIO's own health endpoint and accepts the configured credentials.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from s3ckpt.errors import S3CkptError

DEFAULT_USER = "minioadmin"
DEFAULT_PASSWORD = "minioadmin-change-me"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0 and let the kernel choose)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_minio_live(endpoint: str, timeout: float = 1.0) -> bool:
    """True if ``endpoint`` answers MinIO's liveness endpoint (and says it is MinIO)."""
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/minio/health/live", timeout=timeout) as r:
            return r.status == 200 and "minio" in (r.headers.get("Server", "") or "").lower()
    except Exception:  # noqa: BLE001
        return False


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the test run / demo that started it dies (no leaked servers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
    except Exception:  # noqa: BLE001 - best effort, other platforms
        pass


def find_minio_binary() -> str:
    """``$MINIO_BIN``, the cached ``go install`` build, or ``minio`` on PATH."""
    cands = [os.environ.get("MINIO_BIN", "")]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s3-checkpoints"
    cands += sorted(str(p) for p in cache.glob("minio-*/minio"))
    cands.append(shutil.which("minio") or "")
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    raise S3CkptError("MinIO server binary not found: run `make install` (builds it with `go install`) "
                      "or set MINIO_BIN=/path/to/minio")


class MinioServer:
    """A ``minio server <dir> --address 127.0.0.1:<free port>`` child process, stopped on exit."""

    def __init__(self, data_dir: str | None = None, user: str = DEFAULT_USER,
                 password: str = DEFAULT_PASSWORD, port: int | None = None,
                 binary: str | None = None) -> None:
        self.binary = binary or find_minio_binary()
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="s3ckpt-minio-")
        self.data_dir = data_dir or self._tmp
        self.user, self.password = user, password
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(tempfile.gettempdir(), f"s3ckpt-minio-{self.port}.log")

    def start(self, timeout: float = 60.0) -> MinioServer:
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ, MINIO_ROOT_USER=self.user, MINIO_ROOT_PASSWORD=self.password,
                   MINIO_BROWSER="off", MINIO_UPDATE="off")
        logf = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child's lifetime
        self.proc = subprocess.Popen(
            [self.binary, "server", self.data_dir, "--address", f"127.0.0.1:{self.port}", "--quiet"],
            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise S3CkptError(f"MinIO exited with code {self.proc.returncode}; see {self.log_path}")
            if is_minio_live(self.endpoint, timeout=0.5):
                return self
            time.sleep(0.2)
        self.stop()
        raise S3CkptError(f"MinIO did not become live within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> MinioServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    """``python -m s3ckpt.minio [--port 9000] [--data DIR]``: a native MinIO for local use (no Docker)."""
    import argparse

    from s3ckpt.s3 import S3Settings, ensure_bucket, make_client

    p = argparse.ArgumentParser(prog="python -m s3ckpt.minio",
                                description="Run the native MinIO server in the foreground, bucket ready.")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--data", default=".minio-data")
    p.add_argument("--bucket", default=os.environ.get("S3CKPT_BUCKET", "checkpoints"))
    a = p.parse_args()
    user = os.environ.get("MINIO_ROOT_USER", DEFAULT_USER)
    password = os.environ.get("MINIO_ROOT_PASSWORD", DEFAULT_PASSWORD)
    srv = MinioServer(data_dir=a.data, user=user, password=password, port=a.port).start()
    try:
        s = S3Settings(endpoint=srv.endpoint, access_key=user, secret_key=password, bucket=a.bucket)
        ensure_bucket(make_client(s), s)
        print(f"MinIO at {srv.endpoint}, bucket {a.bucket!r}, data in {a.data}. Use:\n"
              f"  export S3CKPT_ENDPOINT={srv.endpoint} S3CKPT_ACCESS_KEY={user} "
              f"S3CKPT_SECRET_KEY=<password>\n"
              f"Ctrl-C stops it.", flush=True)
        assert srv.proc is not None
        srv.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
