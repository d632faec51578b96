"""The fixture starts its own MinIO; a server named explicitly must really be MinIO (health, Server)."""

from __future__ import annotations

import http.server
import threading

from s3ckpt.minio import free_port, is_minio_live


def test_detects_real_minio(minio) -> None:
    assert is_minio_live(minio.endpoint)


def test_nothing_listening_is_not_minio() -> None:
    assert not is_minio_live(f"http://127.0.0.1:{free_port()}", timeout=0.5)


def test_other_http_server_is_not_minio() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        assert not is_minio_live(f"http://127.0.0.1:{srv.server_address[1]}", timeout=2)
    finally:
        srv.shutdown()
        srv.server_close()


def test_session_server_is_our_own(minio) -> None:
    """Without S3CKPT_TEST_ENDPOINT the suite never talks to a server it did not start (a compose MinIO on
    the default port may be another version, or be stopped in the middle of the run)."""
    import os

    from conftest import REUSE_VAR

    if os.environ.get(REUSE_VAR):
        assert not minio.started_here and minio.endpoint == os.environ[REUSE_VAR]
    else:
        assert minio.started_here and minio.data_dir and os.path.isdir(minio.data_dir)
