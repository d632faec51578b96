"""The real nginx with our one server config: headers, read-only methods, nothing outside the root."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from conftest import SECRET

from fileserver.nginx import NativeNginx


def raw(server: NativeNginx, target: str, method: str = "GET", body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send one request with the exact request-target (no client-side normalisation) and read the reply."""
    req = (
        f"{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        + (f"Content-Length: {len(body)}\r\n" if body or method in ("PUT", "POST") else "")
        + "\r\n"
    ).encode("latin-1") + body
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        payload = dechunk(payload)
    return int(lines[0].split()[1]), headers, payload


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


def test_file_headers_and_body(nginx: NativeNginx, pool: Path, entries: list) -> None:
    e = entries[0]
    status, h, body = raw(nginx, "/" + e.path)
    assert status == 200
    assert body == (pool / e.path).read_bytes()
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert h["x-content-type-options"] == "nosniff"
    assert h["etag"].startswith('"')
    assert h["server"] == "nginx"  # server_tokens off: no version
    # the ETag is honoured: a revalidation costs no body
    req = f"GET /{e.path} HTTP/1.1\r\nHost: t\r\nIf-None-Match: {h['etag']}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((nginx.host, nginx.port), timeout=5) as s:
        s.sendall(req.encode())
        assert s.recv(100).startswith(b"HTTP/1.1 304")


def test_head_and_manifest_are_served(nginx: NativeNginx, pool: Path) -> None:
    status, h, body = raw(nginx, "/SHA256SUMS", "HEAD")
    assert status == 200 and body == b""
    assert int(h["content-length"]) == (pool / "SHA256SUMS").stat().st_size
    status, h, body = raw(nginx, "/manifest.json")
    assert status == 200 and h["content-type"].startswith("application/json")
    assert json.loads(body)["count"] == 300


@pytest.mark.parametrize(
    "method", ["PUT", "POST", "DELETE", "PATCH", "OPTIONS", "MKCOL", "PROPFIND", "TRACE"]
)
def test_only_get_and_head(nginx: NativeNginx, pool: Path, entries: list, method: str) -> None:
    e = entries[1]
    before = (pool / e.path).read_bytes()
    status, h, _ = raw(nginx, "/" + e.path, method, b"overwrite" if method in ("PUT", "POST") else b"")
    assert status == 405
    assert h["x-content-type-options"] == "nosniff"
    assert (pool / e.path).read_bytes() == before
    status, _, _ = raw(nginx, "/new-file.txt", method)
    assert status == 405 and not (pool / "new-file.txt").exists()


@pytest.mark.parametrize(
    "target",
    [
        "/.secret",
        "/%2esecret",
        "/.fileserver-pool",
        "/news/.hidden.txt",
        "/news/%2Ehidden.txt",
        "/_json/.secret",
        "/.git/config",
        "/.env",
    ],
)
def test_dotfiles_are_404(nginx: NativeNginx, target: str) -> None:
    status, _, body = raw(nginx, target)
    assert status == 404
    assert SECRET.encode() not in body


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/news/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "/%252e%252e/outside/secret.txt",
        "/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        "/..\\outside\\secret.txt",
        "/..%5c..%5cetc%5cpasswd",
        "/news\\..\\..\\outside\\secret.txt",
        "//etc/passwd",
        "/_json/../../outside/",
        "/_json/%2e%2e/outside/",
        "/link-out.txt",
        "/linkdir/secret.txt",
        "/linkdir/",
        "/_json/linkdir/",
        "/news/passwd.txt",
        "/%6c%69%6e%6b%2d%6f%75%74.txt",
        "/link-out.txt%00.txt",
        "/etc/passwd",
        "http://evil/../../etc/passwd",
    ],
)
def test_nothing_outside_the_root(nginx: NativeNginx, target: str) -> None:
    status, _, body = raw(nginx, target)
    assert status in (400, 403, 404), (target, status)
    assert SECRET.encode() not in body
    assert b"root:x:0:0" not in body


def test_listing_html_and_json(nginx: NativeNginx) -> None:
    status, h, body = raw(nginx, "/")
    assert status == 200 and h["content-type"].startswith("text/html")
    html = body.decode()
    assert 'href="news/"' in html and "SHA256SUMS" in html
    assert ".secret" not in html and ".fileserver-pool" not in html
    status, h, body = raw(nginx, "/_json/news/")
    assert status == 200 and h["content-type"].startswith("application/json")
    listing = json.loads(body)
    names = {row["name"] for row in listing}
    assert "batch-00" in names or any(n.endswith(".txt") for n in names)
    assert not any(n.startswith(".") for n in names)
    status, _, _ = raw(nginx, "/news")  # folder without slash: redirect, like any static server
    assert status == 301


def test_health_and_readable_access_log(nginx: NativeNginx, entries: list) -> None:
    status, _, body = raw(nginx, "/healthz")
    assert (status, body) == (200, b"fileserver ok\n")
    raw(nginx, "/" + entries[2].path)
    line = next(ln for ln in reversed(nginx.access_log.read_text().splitlines()) if entries[2].path in ln)
    assert re.match(
        rf'^127\.0\.0\.1 \[[^]]+\] "GET /{re.escape(entries[2].path)} HTTP/1\.1" 200 \d+ [\d.]+s ', line
    )


def test_container_and_native_use_the_same_server_block(nginx: NativeNginx) -> None:
    here = Path(__file__).resolve().parent.parent
    assert (nginx.prefix / "conf" / "fileserver.conf").read_bytes() == (
        here / "nginx" / "fileserver.conf"
    ).read_bytes()
    compose = (here / "docker-compose.yaml").read_text()
    assert "./nginx/fileserver.conf:/etc/nginx/conf.d/default.conf:ro" in compose
