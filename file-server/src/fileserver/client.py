"""Fast verifying downloader: pipelined HTTP/1.1 over a few keep-alive connections, on one asyncio loop.

Why this design: each file is only a few KiB, so the cost is per request, not per byte. A pool of blocking
``http.client`` connections pays a Python header parser and a thread switch per file, and at 20 ms round trip
needs dozens of connections to hide the latency. Instead each connection keeps ``depth`` GET requests in
flight (HTTP/1.1 pipelining, which nginx answers in order), responses are parsed straight from the receive
buffer (status, Content-Length, Connection), hashed with SHA-256 and written only when the digest matches the
manifest. Lost connections re-queue their unanswered requests; 5xx and broken connections are retried with
exponential backoff; nothing is ever written outside ``--out``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import queue
import random
import re
import ssl
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from fileserver import __version__
from fileserver.manifest import Entry, sha256_file

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MISSING_STATUSES = frozenset({403, 404, 410})


class FetchError(RuntimeError):
    """Something that stops the whole download (bad URL, unreachable server); the message says what to do."""


class _ProtocolError(Exception):
    """The server's bytes are not HTTP/1.x; the connection is dropped and its requests retried."""


@dataclass
class Item:
    """One file to download: its manifest entry, its ready-made request bytes, and how often it was tried."""

    entry: Entry
    request: bytes
    attempts: int = 0
    done: bool = False


@dataclass
class Result:
    """Outcome of a fetch; ``missing``/``mismatched``/``failed`` name every file that did not verify."""

    total: int = 0
    downloaded: int = 0
    skipped: int = 0
    bytes: int = 0
    retries: int = 0
    connections: int = 0
    seconds: float = 0.0
    missing: dict[str, str] = field(default_factory=dict)
    mismatched: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.failed)

    @property
    def verified(self) -> int:
        return self.downloaded + self.skipped

    def summary(self) -> str:
        rate = self.downloaded / self.seconds if self.seconds > 0 else 0.0
        mb = self.bytes / 1e6
        lines = [
            f"fetched {self.downloaded} files ({mb:.1f} MB) in {self.seconds:.2f} s = {rate:,.0f} files/s, "
            f"{mb / self.seconds if self.seconds > 0 else 0:.1f} MB/s over {self.connections} connection(s); "
            f"{self.skipped} already present and verified; {self.retries} retries",
            f"verified {self.verified}/{self.total} files against the manifest",
        ]
        for label, table in (
            ("MISSING", self.missing),
            ("MISMATCH", self.mismatched),
            ("FAILED", self.failed),
        ):
            for path, why in sorted(table.items()):
                lines.append(f"{label:8s} {path}  ({why})")
        return "\n".join(lines)


def backoff(attempt: int, base: float = 0.1, cap: float = 5.0) -> float:
    """Exponential backoff with full jitter: spreads retries so a recovering server is not hit in lockstep."""
    return random.uniform(0, min(cap, base * 2**attempt))


class _Conn(asyncio.Protocol):
    """One keep-alive connection: up to ``depth`` pipelined requests in flight, replies parsed."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.f = fetcher
        self.buf = bytearray()
        self.inflight: deque[Item] = deque()
        self.transport: asyncio.Transport | None = None
        self.head: tuple[int, int | None, bool, bool] | None = None  # status, length, chunked, close
        self.chunks: list[bytes] = []
        self.closing = False  # the server announced Connection: close, or we are shutting down
        self.responses = 0
        self.error: str | None = None
        self.last_activity = time.monotonic()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.f.live.add(self)
        self.refill()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.buf += data
        try:
            self._parse()
        except _ProtocolError as exc:
            self.abort(f"bad HTTP response: {exc}")
            return
        if self.closing:
            if self.transport is not None:
                self.transport.close()
        else:
            self.refill()

    def eof_received(self) -> bool:
        if self.head is not None and self.head[1] is None and not self.head[2]:
            self._finish_response(bytes(self.buf))  # body delimited by the end of the connection
            self.buf.clear()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.f.live.discard(self)
        self.f.connection_ended(
            self, self.error or (f"connection lost: {exc}" if exc else "connection closed")
        )
        if not self.done.done():
            self.done.set_result(None)

    # our side --------------------------------------------------------------------------------
    def refill(self) -> None:
        """Top up the pipeline from the shared queue with one write for all new requests."""
        if self.closing or self.transport is None or self.transport.is_closing():
            return
        room = self.f.depth - len(self.inflight)
        queue = self.f.queue
        if room <= 0 or not queue:
            return
        reqs = []
        while room and queue:
            item = queue.popleft()
            self.inflight.append(item)
            reqs.append(item.request)
            room -= 1
        self.last_activity = time.monotonic()
        self.transport.write(b"".join(reqs))

    def abort(self, reason: str) -> None:
        self.error = reason
        if self.transport is not None:
            self.transport.abort()

    def _parse(self) -> None:
        buf = self.buf
        pos = 0
        while self.inflight:
            if self.head is None:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > 65536:
                        raise _ProtocolError("response headers larger than 64 KiB")
                    break
                self.head = _parse_head(bytes(buf[pos:end]))
                pos = end + 4
                if 100 <= self.head[0] < 200:  # interim response: the real one follows
                    self.head = None
                    continue
            status, length, chunked, close = self.head
            if chunked:
                done, pos = self._parse_chunks(buf, pos)
                if not done:
                    break
                body = b"".join(self.chunks)
                self.chunks.clear()
            elif length is not None:
                if len(buf) - pos < length:
                    break
                body = bytes(buf[pos : pos + length])
                pos += length
            else:
                break  # read until the server closes (eof_received)
            self._finish_response(body)
            if close:
                self.closing = True
                break
        if pos:
            del buf[:pos]

    def _parse_chunks(self, buf: bytearray, pos: int) -> tuple[bool, int]:
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False, pos
            try:
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            except ValueError:
                raise _ProtocolError("bad chunk size") from None
            if size == 0:
                end = buf.find(b"\r\n\r\n", eol)  # skip trailers
                if eol + 2 <= len(buf) and buf[eol : eol + 4] == b"\r\n\r\n":
                    return True, eol + 4
                if end < 0:
                    return False, pos
                return True, end + 4
            if len(buf) < eol + 2 + size + 2:
                return False, pos
            self.chunks.append(bytes(buf[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2

    def _finish_response(self, body: bytes) -> None:
        assert self.head is not None
        status, _, _, close = self.head
        self.head = None
        self.responses += 1
        if close:
            self.closing = True
        self.f.on_response(self.inflight.popleft(), status, body)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r]*)")
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:([^\r]*)")
_CONNECTION = re.compile(rb"\r\nconnection[ \t]*:([^\r]*)")


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked?, Connection: close? from a raw header block (case-insensitive).

    Regexes over the whole block instead of a per-line loop: this runs once per file, so it is hot.
    Conflicting Content-Length headers are refused (the classic response-smuggling ambiguity).
    """
    low = head.lower()
    if not low.startswith(b"http/1.") or len(low) < 12:
        raise _ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
    try:
        status = int(low[9:12])
    except ValueError:
        raise _ProtocolError(f"bad status line: {head[:40]!r}") from None
    lengths = _CONTENT_LENGTH.findall(low)
    length: int | None = None
    if lengths:
        try:
            values = {int(v) for v in lengths}
        except ValueError:
            raise _ProtocolError("bad Content-Length") from None
        if len(values) != 1:
            raise _ProtocolError("conflicting Content-Length headers")
        length = values.pop()
    te = _TRANSFER_ENCODING.search(low)
    chunked = te is not None and b"chunked" in te.group(1)
    conn = _CONNECTION.search(low)
    close = conn is not None and b"close" in conn.group(1)
    if low.startswith(b"http/1.0") and (conn is None or b"keep-alive" not in conn.group(1)):
        close = True
    if status in (204, 304):
        length = 0
    return status, (None if chunked else length), chunked, close


class Fetcher:
    """Download ``entries`` from ``base_url`` into ``out`` with ``jobs`` connections, verifying every file."""

    def __init__(
        self,
        base_url: str,
        out: Path,
        entries: list[Entry],
        *,
        jobs: int = 4,
        depth: int = 32,
        retries: int = 5,
        timeout: float = 30.0,
        progress: bool = True,
        writers: int = 1,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"not an http(s) URL: {base_url!r}; expected e.g. http://host:8080/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.netloc = parts.netloc.rpartition("@")[2]
        self.out = out
        self.entries = entries
        self.jobs = max(1, jobs)
        self.depth = max(1, depth)
        self.retries = retries
        self.timeout = timeout
        self.progress = progress
        self.queue: deque[Item] = deque()
        self.live: set[_Conn] = set()
        self.result = Result(total=len(entries))
        self.remaining = 0
        self._made_dirs: set[str] = set()
        self._out_str = str(out)
        # verified bodies go to writer threads: a slow disk (file creation can take ms on a busy ext4)
        # then delays the writes, not the network pipeline; bounded, so memory stays bounded too
        self._writeq: queue.Queue[tuple[Entry, bytes] | None] = queue.Queue(maxsize=4096)
        self._count_lock = threading.Lock()
        self.writers = max(1, writers)
        self._bar = None
        self._fatal: str | None = None

    def request_for(self, path: str) -> bytes:
        target = quote(self.prefix + path, safe="/-._~")
        return (
            f"GET {target} HTTP/1.1\r\nHost: {self.netloc}\r\n"
            f"User-Agent: fileserver-fetch/{__version__}\r\n\r\n"
        ).encode("ascii")

    # bookkeeping --------------------------------------------------------------------------------
    def _settle(self, item: Item, progress: bool = True) -> None:
        item.done = True
        self.remaining -= 1
        if progress and self._bar is not None:
            self._bar.update(1)
        if self.remaining == 0:
            for conn in list(self.live):
                conn.closing = True
                if conn.transport is not None:
                    conn.transport.close()

    def _retry(self, item: Item, why: str) -> None:
        item.attempts += 1
        if item.attempts > self.retries:
            self.result.failed[item.entry.path] = f"gave up after {item.attempts} attempts: {why}"
            self._settle(item)
            return
        self.result.retries += 1
        asyncio.get_running_loop().call_later(backoff(item.attempts), self._requeue, item)

    def _requeue(self, item: Item) -> None:
        self.queue.append(item)
        for conn in list(self.live):
            conn.refill()

    def on_response(self, item: Item, status: int, body: bytes) -> None:
        if status == 200:
            # hashing and writing happen on the writer threads (hashlib releases the GIL for bodies > 2 KiB),
            # so this event-loop thread only parses HTTP and keeps the pipelines full
            self._writeq.put((item.entry, body))
            self._settle(item, progress=False)
        elif status in RETRY_STATUSES:
            self._retry(item, f"HTTP {status}")
        elif status in MISSING_STATUSES:
            self.result.missing[item.entry.path] = f"HTTP {status}"
            self._settle(item)
        else:
            self.result.failed[item.entry.path] = f"HTTP {status}"
            self._settle(item)

    def connection_ended(self, conn: _Conn, why: str) -> None:
        """Give unanswered requests back: as-is after a clean close, else the head is penalised."""
        items = list(conn.inflight)
        conn.inflight.clear()
        if not items:
            return
        if conn.closing and conn.error is None:
            self.queue.extendleft(reversed(items))
        else:
            self._retry(items[0], why)
            self.queue.extendleft(reversed(items[1:]))
        for other in list(self.live):
            other.refill()

    def _writer(self) -> None:
        """Verify then write each received body; only a body whose SHA-256 matches the manifest is written."""
        result = self.result
        while (job := self._writeq.get()) is not None:
            entry, body = job
            digest = hashlib.sha256(body).hexdigest()
            if digest != entry.sha256:
                result.mismatched[entry.path] = f"sha256 {digest[:16]}... != manifest {entry.sha256[:16]}..."
            else:
                try:
                    self._write(entry.path, body)
                except OSError as exc:
                    result.failed[entry.path] = f"cannot write: {exc.strerror or exc}"
                else:
                    with self._count_lock:
                        result.downloaded += 1
                        result.bytes += len(body)
            if self._bar is not None:
                self._bar.update(1)

    def _write(self, path: str, body: bytes) -> None:
        """Write a verified body under ``out`` only: no symlink is followed, no folder outside is touched."""
        dest = os.path.join(self._out_str, path)
        # create folders one level at a time, never through a symlink: mkdir does not follow a final
        # symlink (EEXIST) and lstat tells a real folder from a link planted in --out to somewhere else
        if dest.rpartition("/")[0] not in self._made_dirs:
            cur = self._out_str
            for part in path.split("/")[:-1]:
                cur = os.path.join(cur, part)
                if cur in self._made_dirs:
                    continue
                try:
                    os.mkdir(cur, 0o755)
                except FileExistsError:
                    if not stat.S_ISDIR(os.lstat(cur).st_mode):
                        raise OSError(
                            errno.ENOTDIR, f"{cur} is not a real folder (a symlink?); not writing through it"
                        ) from None
                self._made_dirs.add(cur)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    # main loop --------------------------------------------------------------------------------
    def _already_present(self, entry: Entry) -> bool:
        dest = os.path.join(self._out_str, entry.path)
        try:
            st = os.lstat(dest)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or (entry.size is not None and st.st_size != entry.size):
            return False
        return sha256_file(dest) == entry.sha256

    async def _connection_loop(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = ssl.create_default_context() if self.scheme == "https" else None
        failures = 0
        while self.remaining > 0 and self._fatal is None:
            if not self.queue:
                await asyncio.sleep(0.02)  # only while retries wait out their backoff
                continue
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Conn(self),
                        self.host,
                        self.port,
                        ssl=ctx,
                        server_hostname=self.host if ctx else None,
                    ),
                    self.timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                failures += 1
                if failures > self.retries:
                    self._fatal = f"cannot connect to {self.host}:{self.port}: {exc or 'timeout'}"
                    break
                await asyncio.sleep(backoff(failures))
                continue
            self.result.connections += 1
            await conn.done
            failures = 0 if conn.responses else failures + 1
            if failures:
                await asyncio.sleep(backoff(failures))

    async def _watchdog(self) -> None:
        """Abort connections that have requests in flight but received nothing for ``timeout`` seconds."""
        while self.remaining > 0 and self._fatal is None:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = time.monotonic()
            for conn in list(self.live):
                if conn.inflight and now - conn.last_activity > self.timeout:
                    conn.abort(f"no data for {self.timeout:.0f}s")

    def run_sync(self) -> Result:
        """Run :meth:`run` on a fresh asyncio loop."""
        return asyncio.run(self.run())

    async def run(self) -> Result:
        """Resume-check local files, download the rest, return a :class:`Result` (never raises per file)."""
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        todo = []
        fresh = not any(True for _ in os.scandir(self.out))  # nothing to resume: skip the per-file checks
        for entry in self.entries:
            if not fresh and self._already_present(entry):
                self.result.skipped += 1
            else:
                todo.append(Item(entry, self.request_for(entry.path)))
        self.queue.extend(todo)
        self.remaining = len(todo)
        if todo and self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(todo), unit="file", desc="fetch", mininterval=0.25, leave=False)
        threads = [threading.Thread(target=self._writer, daemon=True) for _ in range(self.writers)]
        for t in threads:
            t.start()
        try:
            if todo:
                workers = [
                    asyncio.create_task(self._connection_loop()) for _ in range(min(self.jobs, len(todo)))
                ]
                dog = asyncio.create_task(self._watchdog())
                await asyncio.gather(*workers)
                dog.cancel()
                if self._fatal is not None:
                    for conn in list(self.live):
                        conn.abort(self._fatal)
                for item in todo:  # anything unsettled (queued, or waiting out a backoff) did not arrive
                    if not item.done:
                        self.result.failed[item.entry.path] = self._fatal or "not downloaded"
        finally:
            for _ in threads:
                self._writeq.put(None)
            for t in threads:
                await asyncio.get_running_loop().run_in_executor(None, t.join)
            if self._bar is not None:
                self._bar.close()
        self.result.seconds = time.perf_counter() - start
        if self._fatal is not None and self.result.downloaded == 0 and not self.result.skipped:
            raise FetchError(self._fatal)
        return self.result


def fetch(base_url: str, out: Path, entries: list[Entry], **kwargs: object) -> Result:
    """Synchronous wrapper around :class:`Fetcher` (one asyncio loop for the whole download)."""
    return asyncio.run(Fetcher(base_url, out, entries, **kwargs).run())  # type: ignore[arg-type]
