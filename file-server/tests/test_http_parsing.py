"""The client's HTTP/1.x parser on byte streams nginx does not produce but other servers and proxies do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections import deque
from pathlib import Path

import pytest
from conftest import FS

from fileserver.client import Item, _Conn, _parse_head, _ProtocolError
from fileserver.manifest import Entry
from fileserver.nginx import free_port


class Sink:
    """Just enough of a Fetcher to collect what a connection parsed."""

    depth = 8

    def __init__(self) -> None:
        self.queue: deque[Item] = deque()
        self.live: set = set()
        self.got: list[tuple[str, int, bytes]] = []

    def on_response(self, item: Item, status: int, body: bytes) -> None:
        self.got.append((item.entry.path, status, body))


def parse(chunks: list[bytes], n: int) -> tuple[list[tuple[str, int, bytes]], _Conn]:
    async def run() -> tuple[list, _Conn]:
        sink = Sink()
        conn = _Conn(sink)  # type: ignore[arg-type]
        conn.inflight.extend(Item(Entry(f"f{i}", "0" * 64), b"") for i in range(n))
        for c in chunks:
            conn.data_received(c)
        return sink.got, conn

    return asyncio.run(run())


def test_pipelined_responses_split_anywhere() -> None:
    stream = b"".join(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        for body in (b"one", b"", b"three!")
    )
    for cut in range(1, len(stream)):
        got, _ = parse([stream[:cut], stream[cut:]], 3)
        assert got == [("f0", 200, b"one"), ("f1", 200, b""), ("f2", 200, b"three!")], cut


def test_chunked_and_interim_responses() -> None:
    stream = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nConnection: close\r\n\r\nno"
    )
    got, conn = parse([stream[i : i + 7] for i in range(0, len(stream), 7)], 3)
    assert got == [("f0", 200, b"Wikipedia"), ("f1", 404, b"no")]
    assert conn.closing and len(conn.inflight) == 1  # the third request goes back to the queue


@pytest.mark.parametrize(
    "head",
    [b"SSH-2.0-OpenSSH", b"HTTP/1.1 2xx OK", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6"],
)
def test_garbage_is_a_protocol_error(head: bytes) -> None:
    with pytest.raises(_ProtocolError):
        _parse_head(head)


def test_http10_server_closing_every_connection(pool: Path, entries: list, tmp_path: Path) -> None:
    """Against python -m http.server (HTTP/1.0, one response per connection): still everything verifies."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(pool)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "SHA256SUMS", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        res = subprocess.run(
            [*FS, "fetch", url, "--out", str(tmp_path / "o"), "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.terminate()
        server.wait(10)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {len(entries)}/{len(entries)}" in res.stdout
    assert " 0 retries" in res.stdout  # a clean close is not a failure: unanswered requests just go back
