"""Pipelined HTTP/1.1 downloads over a few keep-alive connections, on one asyncio loop.

Why this design: each file is only a few KiB, so the cost is per request, not per byte. Each connection keeps
``depth`` GET requests in flight (HTTP/1.1 pipelining, which nginx answers in order), so neither a round trip
nor a thread switch is paid per file. Bodies are checked against their SHA-256 on one verifier thread
(hashlib releases the GIL) and only verified ones are handed to the sink; a slow disk then delays the
writes, not the network. Lost connections give their unanswered requests back; 408/429/5xx and broken
connections are retried with exponential backoff, up to ``retries`` attempts per file.

Dependencies go one way: this module uses :mod:`fileserver.http11` to cut responses out of the byte stream
and hands bodies to any object with the :class:`Sink` methods; it knows nothing of paths on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from urllib.parse import quote, urlsplit

from fileserver import __version__
from fileserver.http11 import ProtocolError, ResponseParser

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MISSING_STATUSES = frozenset({403, 404, 410})
_MAX_BACKLOG = 4096  # received bodies waiting for the verifier thread (a few KiB each)


class FetchError(RuntimeError):
    """Something that stops the whole download (bad URL, unreachable server); the message says what to do."""


class Sink(Protocol):
    """Receives verified bodies; ``put`` raises OSError (its strerror says why) when it cannot store one."""

    def has(self, path: str, sha256: str, size: int | None) -> bool: ...

    def put(self, path: str, body: bytes) -> None: ...


class Want(NamedTuple):
    """One file to get: its path under the base URL, and the SHA-256 it must have (None: deliver as is,
    for the manifest itself, which its caller checks)."""

    path: str
    sha256: str | None
    size: int | None = None


class Target(NamedTuple):
    """A checked ``http(s)://host[:port]/prefix/`` base URL."""

    scheme: str
    host: str
    port: int
    prefix: str
    netloc: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"not an http(s) URL: {url!r}; expected e.g. http://host:8080/")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchError(f"bad port in URL {url!r}") from None
        prefix = parts.path if parts.path.endswith("/") else parts.path + "/"
        return cls(parts.scheme, parts.hostname, port, prefix, parts.netloc.rpartition("@")[2])

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.prefix}{path}"

    def request(self, path: str) -> bytes:
        target = quote(self.prefix + path, safe="/-._~")
        return (
            f"GET {target} HTTP/1.1\r\nHost: {self.netloc}\r\n"
            f"User-Agent: fileserver-fetch/{__version__}\r\n\r\n"
        ).encode("ascii")


@dataclass(frozen=True)
class Options:
    """How hard to try; the defaults here are the CLI's and :func:`fileserver.client.fetch_pool`'s."""

    connections: int = 4  # keep-alive connections
    depth: int = 32  # pipelined requests in flight per connection (1: no pipelining)
    retries: int = 5  # per file, on 408/429/5xx and broken connections
    timeout: float = 30.0  # seconds without data before a connection is dropped and retried


DEFAULTS = Options()


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


@dataclass(slots=True)
class _Item:
    want: Want
    request: bytes
    attempts: int = 0
    done: bool = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection: takes up to ``depth`` requests from the fetcher, returns each reply."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher
        self._parser = ResponseParser()
        self.inflight: deque[_Item] = deque()
        self._transport: asyncio.Transport | None = None
        self._closing = False  # the server announced Connection: close, or we are done
        self.responses = 0
        self._error: str | None = None
        self.last_activity = time.monotonic()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio callbacks -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._fetcher.on_connected(self)
        self.refill()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self.abort(f"bad HTTP response: {exc}")
            return
        for reply in replies:
            if not self.inflight:
                self.abort("a response nobody asked for")
                return
            self.responses += 1
            self._fetcher.on_response(self.inflight.popleft(), reply.status, reply.body)
        if self._parser.done:
            self.close()
        else:
            self.refill()

    def eof_received(self) -> bool:
        reply = self._parser.feed_eof()  # a body delimited by the end of the connection
        if reply is not None and self.inflight:
            self.responses += 1
            self._fetcher.on_response(self.inflight.popleft(), reply.status, reply.body)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        items = list(self.inflight)
        self.inflight.clear()
        clean = self._error is None and (self._closing or self._parser.done)
        if self._error is not None:
            why = self._error
        elif exc is not None:
            why = f"connection lost: {exc}"
        else:
            why = (
                "connection closed in the middle of a response"
                if self._parser.partial
                else "connection closed"
            )
        self._fetcher.on_connection_lost(self, items, clean, why)
        if not self.done.done():
            self.done.set_result(None)

    # our side ----------------------------------------------------------------------------------------------
    def refill(self) -> None:
        """Top up the pipeline with one write for all new requests."""
        if self._closing or self._transport is None or self._transport.is_closing():
            return
        items = self._fetcher.take(self._fetcher.depth - len(self.inflight))
        if items:
            self.inflight.extend(items)
            self.last_activity = time.monotonic()
            self._transport.write(b"".join(item.request for item in items))

    def close(self) -> None:
        """Close after the replies received so far (unanswered requests go back to the fetcher)."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: str) -> None:
        self._error = reason
        if self._transport is not None:
            self._transport.abort()


class Fetcher:
    """Get a list of :class:`Want` from ``target``; verified bodies go to ``sink``. One run per instance."""

    def __init__(self, target: Target, sink: Sink, options: Options, *, progress: bool = False) -> None:
        self.target = target
        self.sink = sink
        self.connections = max(1, options.connections)
        self.depth = max(1, options.depth)
        self.retries = options.retries
        self.timeout = options.timeout
        self.progress = progress
        self.result = Result()
        self._queue: deque[_Item] = deque()
        self._live: set[_Connection] = set()
        self._remaining = 0
        # bodies wait here for the verifier thread; SimpleQueue (C, no condition variable) because a put per
        # file on the event-loop thread is hot; memory is bounded in on_response instead of by the queue
        self._verifyq: queue.SimpleQueue[tuple[Want, bytes] | None] = queue.SimpleQueue()
        self._bar = None
        self._fatal: str | None = None

    # called by connections ---------------------------------------------------------------------------------
    def on_connected(self, conn: _Connection) -> None:
        self._live.add(conn)
        if self._remaining <= 0:
            conn.close()

    def take(self, room: int) -> list[_Item]:
        """Up to ``room`` queued requests for a connection's pipeline."""
        q = self._queue
        if room <= 0 or not q:
            return []
        n = min(room, len(q))
        return [q.popleft() for _ in range(n)]

    def on_response(self, item: _Item, status: int, body: bytes) -> None:
        if status == 200:
            # hashing and writing happen on the verifier thread, so this event-loop thread only parses
            # HTTP and keeps the pipelines full
            q = self._verifyq
            q.put((item.want, body))
            if q.qsize() > _MAX_BACKLOG:  # the disk is slower than the network: let the verifier catch up
                while q.qsize() > _MAX_BACKLOG // 2:
                    time.sleep(0.001)
            self._settle(item, progress=False)
        elif status in RETRY_STATUSES:
            self._retry(item, f"HTTP {status}")
        elif status in MISSING_STATUSES:
            self.result.missing[item.want.path] = f"HTTP {status}"
            self._settle(item)
        else:
            self.result.failed[item.want.path] = f"HTTP {status}"
            self._settle(item)

    def on_connection_lost(self, conn: _Connection, unanswered: list[_Item], clean: bool, why: str) -> None:
        """Give unanswered requests back: as they are after a clean close, else the first one (the one
        being received when the connection broke) counts an attempt."""
        self._live.discard(conn)
        if not unanswered:
            return
        if clean:
            self._queue.extendleft(reversed(unanswered))
        else:
            self._retry(unanswered[0], why)
            self._queue.extendleft(reversed(unanswered[1:]))
        self._refill_all()

    # bookkeeping -------------------------------------------------------------------------------------------
    def _settle(self, item: _Item, progress: bool = True) -> None:
        item.done = True
        self._remaining -= 1
        if progress and self._bar is not None:
            self._bar.update(1)
        if self._remaining == 0:
            for conn in list(self._live):
                conn.close()

    def _retry(self, item: _Item, why: str) -> None:
        item.attempts += 1
        if item.attempts > self.retries:
            self.result.failed[item.want.path] = f"gave up after {item.attempts} attempts: {why}"
            self._settle(item)
            return
        self.result.retries += 1
        asyncio.get_running_loop().call_later(backoff(item.attempts), self._requeue, item)

    def _requeue(self, item: _Item) -> None:
        self._queue.append(item)
        self._refill_all()

    def _refill_all(self) -> None:
        for conn in list(self._live):
            conn.refill()

    def _verifier(self) -> None:
        """Check each body against its SHA-256; only a body that matches goes to the sink."""
        result = self.result
        while (job := self._verifyq.get()) is not None:
            want, body = job
            digest = hashlib.sha256(body).hexdigest() if want.sha256 is not None else None
            if digest != want.sha256:
                result.mismatched[want.path] = f"sha256 {digest[:16]}... != manifest {want.sha256[:16]}..."
            else:
                try:
                    self.sink.put(want.path, body)
                except OSError as exc:
                    result.failed[want.path] = f"cannot write: {exc.strerror or exc}"
                else:
                    result.downloaded += 1
                    result.bytes += len(body)
            if self._bar is not None:
                self._bar.update(1)

    # main loop ---------------------------------------------------------------------------------------------
    async def _connection_loop(self) -> None:
        loop = asyncio.get_running_loop()
        t = self.target
        ctx = ssl.create_default_context() if t.scheme == "https" else None
        failures = 0
        while self._remaining > 0 and self._fatal is None:
            if not self._queue:
                await asyncio.sleep(0.02)  # only while retries wait out their backoff
                continue
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self),
                        t.host,
                        t.port,
                        ssl=ctx,
                        server_hostname=t.host if ctx else None,
                    ),
                    self.timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                failures += 1
                if failures > self.retries:
                    self._fatal = f"cannot connect to {t.host}:{t.port}: {exc or 'timeout'}"
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
        while self._remaining > 0 and self._fatal is None:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            now = time.monotonic()
            for conn in list(self._live):
                if conn.inflight and now - conn.last_activity > self.timeout:
                    conn.abort(f"no data for {self.timeout:.0f}s")

    async def run(self, wants: Iterable[Want]) -> Result:
        """Skip what the sink already has, download the rest; never raises per file (see :class:`Result`).

        Raises :class:`FetchError` only when the server could not be reached and nothing was obtained.
        """
        start = time.perf_counter()
        todo = []
        for want in wants:
            self.result.total += 1
            if want.sha256 is not None and self.sink.has(want.path, want.sha256, want.size):
                self.result.skipped += 1
            else:
                todo.append(_Item(want, self.target.request(want.path)))
        self._queue.extend(todo)
        self._remaining = len(todo)
        if todo and self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(todo), unit="file", desc="fetch", mininterval=0.25, leave=False)
        verifier = threading.Thread(target=self._verifier, daemon=True)
        verifier.start()
        try:
            if todo:
                n = min(self.connections, len(todo))
                workers = [asyncio.create_task(self._connection_loop()) for _ in range(n)]
                dog = asyncio.create_task(self._watchdog())
                await asyncio.gather(*workers)
                dog.cancel()
                if self._fatal is not None:
                    for conn in list(self._live):
                        conn.abort(self._fatal)
                for item in todo:  # anything unsettled (queued, or waiting out a backoff) did not arrive
                    if not item.done:
                        self.result.failed[item.want.path] = self._fatal or "not downloaded"
        finally:
            self._verifyq.put(None)
            await asyncio.get_running_loop().run_in_executor(None, verifier.join)
            if self._bar is not None:
                self._bar.close()
        self.result.seconds = time.perf_counter() - start
        if self._fatal is not None and self.result.downloaded == 0 and not self.result.skipped:
            raise FetchError(self._fatal)
        return self.result
