"""Pipelined HTTP/1.1 downloads over a few keep-alive connections per mirror, on one asyncio loop.

Why this design: each file is only a few KiB, so the cost is per request, not per byte. Each connection keeps
``depth`` GET requests in flight (HTTP/1.1 pipelining, which nginx answers in order), so neither a round trip
nor a thread switch is paid per file. Bodies are checked against their SHA-256 on one verifier thread
(hashlib releases the GIL) and only verified ones are handed to the sink; a slow disk then delays the
writes, not the network. Lost connections give their unanswered requests back; 408/429/5xx and broken
connections are retried with exponential backoff, up to ``retries`` attempts per file.

Mirrors: every mirror gets its own connections, all taking files from one queue, so a faster mirror serves
more. A mirror that fails (connection refused, reset, stalled, wrong bytes, a missing file) is dropped for a
while (longer each time) and its unanswered files go back to the queue for the others; a file that came with
wrong bytes (or a 404) from one mirror is asked from another one, and is reported only when no mirror has it
right. A mirror that keeps failing ``retries`` times in a row is given up for the rest of the run.

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
MIRROR_COOLDOWN = 1.0  # seconds a failed mirror rests the first time (doubling, up to MIRROR_COOLDOWN_CAP)
MIRROR_COOLDOWN_CAP = 30.0


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

    @property
    def base(self) -> str:
        return self.url("")

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.prefix}{path}"

    def request_parts(self) -> tuple[bytes, bytes]:
        """What comes before and after the percent-encoded path in a GET for this server.

        Percent-encoding works character by character, so ``head + quote_path(p) + tail`` is the request for
        ``p``: one encoding per file serves every mirror.
        """
        head = f"GET {quote(self.prefix, safe='/-._~')}".encode("ascii")
        tail = f" HTTP/1.1\r\nHost: {self.netloc}\r\nUser-Agent: fileserver-fetch/{__version__}\r\n\r\n"
        return head, tail.encode("ascii")

    def request(self, path: str) -> bytes:
        head, tail = self.request_parts()
        return head + quote_path(path) + tail


def quote_path(path: str) -> bytes:
    return quote(path, safe="/-._~").encode("ascii")


@dataclass(frozen=True)
class Options:
    """How hard to try; the defaults here are the CLI's and :func:`fileserver.client.fetch_pool`'s."""

    connections: int = 4  # keep-alive connections per mirror
    depth: int = 32  # pipelined requests in flight per connection (1: no pipelining)
    retries: int = (
        5  # per file, on 408/429/5xx and broken connections; failures in a row before a mirror is given up
    )
    timeout: float = 30.0  # seconds without data before a connection is dropped and retried


DEFAULTS = Options()


@dataclass
class MirrorStats:
    """What one mirror did: files it served (verified), and why it failed or was not used."""

    url: str
    served: int = 0
    bytes: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason -> times
    wrong: list[str] = field(default_factory=list)  # files it served with wrong bytes (or not at all)
    refused: str = ""  # not used at all (e.g. a different manifest)
    gave_up: str = ""  # dropped for the rest of the run

    @property
    def failed(self) -> bool:
        return bool(self.failures or self.wrong or self.refused or self.gave_up)

    def line(self) -> str:
        if self.refused:
            return f"mirror {self.url}: REFUSED ({self.refused})"
        text = f"mirror {self.url}: served {self.served} files ({self.bytes / 1e6:.1f} MB)"
        problems = [f"{why} x{n}" if n > 1 else why for why, n in sorted(self.failures.items())]
        if self.wrong:
            shown = ", ".join(self.wrong[:3]) + (
                f" and {len(self.wrong) - 3} more" if len(self.wrong) > 3 else ""
            )
            problems.append(f"wrong or missing: {shown} (asked from another mirror)")
        if self.gave_up:
            problems.append(f"given up: {self.gave_up}")
        return text + ("; FAILED: " + "; ".join(problems) if problems else "")


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
    mirrors: list[MirrorStats] = field(default_factory=list)

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
        if len(self.mirrors) > 1 or any(m.failed for m in self.mirrors):
            lines += [m.line() for m in self.mirrors]
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


class _Mirror:
    """One server of the pool and its health: resting until ``down_until``, ``dead`` once given up."""

    __slots__ = ("index", "target", "stats", "head", "tail", "down_until", "in_a_row", "dead")

    def __init__(self, index: int, target: Target, stats: MirrorStats) -> None:
        self.index = index
        self.target = target
        self.stats = stats
        self.head, self.tail = target.request_parts()
        self.down_until = 0.0
        self.in_a_row = 0  # failures since its last good response
        self.dead = False


@dataclass(slots=True)
class _Item:
    want: Want
    quoted: bytes  # the percent-encoded path, the same for every mirror
    attempts: int = 0
    done: bool = False
    bad: set[int] | None = None  # mirrors that served it wrong (or not at all): ask the others
    problem: tuple[str, str] | None = None  # (table, why) of the last such answer


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a mirror: takes up to ``depth`` requests, returns each reply."""

    def __init__(self, fetcher: Fetcher, mirror: _Mirror) -> None:
        self._fetcher = fetcher
        self.mirror = mirror
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
            self._fetcher.on_response(self.inflight.popleft(), reply.status, reply.body, self.mirror)
        if self._parser.done:
            self.close()
        else:
            self.refill()

    def eof_received(self) -> bool:
        reply = self._parser.feed_eof()  # a body delimited by the end of the connection
        if reply is not None and self.inflight:
            self.responses += 1
            self._fetcher.on_response(self.inflight.popleft(), reply.status, reply.body, self.mirror)
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
        items = self._fetcher.take(self._fetcher.depth - len(self.inflight), self.mirror)
        if items:
            self.inflight.extend(items)
            self.last_activity = time.monotonic()
            head, tail = self.mirror.head, self.mirror.tail
            self._transport.write(b"".join(head + item.quoted + tail for item in items))

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
    """Get a list of :class:`Want` from the mirrors (``target`` or several); verified bodies go to ``sink``.

    One run per instance.
    """

    def __init__(
        self,
        target: Target | list[Target],
        sink: Sink,
        options: Options,
        *,
        progress: bool = False,
        refused: dict[str, str] | None = None,
    ) -> None:
        targets = target if isinstance(target, list) else [target]
        self.sink = sink
        self.connections = max(1, options.connections)
        self.depth = max(1, options.depth)
        self.retries = options.retries
        self.timeout = options.timeout
        self.progress = progress
        self.result = Result(mirrors=[MirrorStats(t.base) for t in targets])
        for stats in self.result.mirrors:
            stats.refused = (refused or {}).get(stats.url, "")
        self._mirrors = [
            _Mirror(i, t, stats)
            for i, (t, stats) in enumerate(zip(targets, self.result.mirrors, strict=True))
            if not stats.refused
        ]
        self._queue: deque[_Item] = deque()
        self._rejections = False  # some queued file must avoid some mirror: take() looks at each
        self._live: set[_Connection] = set()
        self._remaining = 0
        # bodies wait here for the verifier thread; SimpleQueue (C, no condition variable) because a put per
        # file on the event-loop thread is hot; memory is bounded in on_response instead of by the queue
        self._verifyq: queue.SimpleQueue[tuple[_Item, _Mirror, bytes] | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bar = None
        self._fatal: str | None = None

    # called by connections ---------------------------------------------------------------------------------
    def on_connected(self, conn: _Connection) -> None:
        self._live.add(conn)
        if self._remaining <= 0:
            conn.close()

    def take(self, room: int, mirror: _Mirror) -> list[_Item]:
        """Up to ``room`` queued requests for a connection of ``mirror``'s pipeline."""
        q = self._queue
        if room <= 0 or not q:
            return []
        if not self._rejections:
            n = min(room, len(q))
            return [q.popleft() for _ in range(n)]
        out: list[_Item] = []
        passed: list[_Item] = []
        while q and len(out) < room:
            item = q.popleft()
            (passed if item.bad and mirror.index in item.bad else out).append(item)
        q.extendleft(reversed(passed))
        return out

    def on_response(self, item: _Item, status: int, body: bytes, mirror: _Mirror) -> None:
        mirror.in_a_row = 0
        if status == 200:
            # hashing and writing happen on the verifier thread, so this event-loop thread only parses
            # HTTP and keeps the pipelines full; the file is settled when the verifier reports back
            q = self._verifyq
            q.put((item, mirror, body))
            if q.qsize() > _MAX_BACKLOG:  # the disk is slower than the network: let the verifier catch up
                while q.qsize() > _MAX_BACKLOG // 2:
                    time.sleep(0.001)
        elif status in RETRY_STATUSES:
            self._retry(item, f"HTTP {status}")
        elif status in MISSING_STATUSES:
            self._reject(item, mirror, "missing", f"HTTP {status}")
        else:
            self.result.failed[item.want.path] = f"HTTP {status}"
            self._settle(item)

    def on_connection_lost(self, conn: _Connection, unanswered: list[_Item], clean: bool, why: str) -> None:
        """Give unanswered requests back: as they are after a clean close, else the first one (the one
        being received when the connection broke) counts an attempt and the mirror rests a while."""
        self._live.discard(conn)
        if not clean:
            self._mirror_failed(conn.mirror, why)
        if not unanswered:
            return
        if clean:
            self._queue.extendleft(reversed(unanswered))
        else:
            self._retry(unanswered[0], why)
            self._queue.extendleft(reversed(unanswered[1:]))
        if conn.mirror.dead:
            self._drop_orphans()
        self._refill_all()

    # bookkeeping -------------------------------------------------------------------------------------------
    def _settle(self, item: _Item) -> None:
        item.done = True
        self._remaining -= 1
        if self._bar is not None:
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
        if item.done:
            return
        if item.bad and not self._usable(item):  # the mirrors it may still use were given up meanwhile
            self._report(item)
            return
        self._queue.append(item)
        self._refill_all()

    def _refill_all(self) -> None:
        for conn in list(self._live):
            conn.refill()

    def _usable(self, item: _Item) -> bool:
        """Is there a mirror, not given up, that has not already served this file wrong?"""
        return any(not m.dead and not (item.bad and m.index in item.bad) for m in self._mirrors)

    def _reject(self, item: _Item, mirror: _Mirror, table: str, why: str) -> None:
        """``mirror`` answered this file wrong (bytes or status): ask another mirror, else report it."""
        item.bad = (item.bad or set()) | {mirror.index}
        item.problem = (table, why)
        if len(self._mirrors) > 1:
            mirror.stats.wrong.append(item.want.path)
            self._mirror_failed(mirror, None)
            for conn in list(self._live):  # its pipelined requests go back to the queue, for the others too
                if conn.mirror is mirror:
                    conn.close()
        if self._usable(item):
            self._rejections = True
            self._requeue(item)
        else:
            self._report(item)

    def _report(self, item: _Item) -> None:
        table, why = item.problem or ("failed", "no mirror could serve it")
        if len(self._mirrors) > 1 and item.bad:
            why += f" from {len(item.bad)} mirror(s)"
        getattr(self.result, table)[item.want.path] = why
        self._settle(item)

    def _mirror_failed(self, mirror: _Mirror, why: str | None) -> None:
        """Count a failure; rest the mirror (longer each time in a row) or give it up after ``retries``.

        Failures that arrive while it already rests (its other connections breaking too) count once.
        """
        if why is not None:
            mirror.stats.failures[why] = mirror.stats.failures.get(why, 0) + 1
        now = time.monotonic()
        if now < mirror.down_until:
            return
        mirror.in_a_row += 1
        if mirror.in_a_row > self.retries and not mirror.dead:
            mirror.dead = True
            mirror.stats.gave_up = f"{mirror.in_a_row} failures in a row"
            self._drop_orphans()
            return
        others = sum(1 for m in self._mirrors if not m.dead) > 1
        if others:  # its files go to the others meanwhile
            rest = min(MIRROR_COOLDOWN_CAP, MIRROR_COOLDOWN * 2 ** (mirror.in_a_row - 1))
        else:  # the only one left: back off as for a retry, with jitter but never next to nothing
            rest = min(5.0, 0.1 * 2**mirror.in_a_row) * random.uniform(0.5, 1.0)
        mirror.down_until = now + rest

    def _drop_orphans(self) -> None:
        """Files that only given-up mirrors could still serve are reported now, not waited for."""
        if all(m.dead for m in self._mirrors):
            return  # the connection loops end and name what is left
        keep: deque[_Item] = deque()
        for item in self._queue:
            if self._usable(item):
                keep.append(item)
            else:
                self._report(item)
        self._queue = keep

    def _has_work(self, mirror: _Mirror) -> bool:
        q = self._queue
        if not q:
            return False
        if not self._rejections:
            return True
        return any(not (item.bad and mirror.index in item.bad) for item in q)

    def _verifier(self) -> None:
        """Check each body against its SHA-256; only a body that matches goes to the sink. Outcomes go back
        to the event loop in batches (one wake-up for all the bodies that were waiting)."""
        result = self.result
        loop = self._loop
        assert loop is not None
        batch: list[tuple[_Item, _Mirror, str | None]] = []
        q = self._verifyq
        while True:
            job = q.get()
            while job is not None:
                item, mirror, body = job
                want = item.want
                digest = hashlib.sha256(body).hexdigest() if want.sha256 is not None else None
                if digest != want.sha256:
                    batch.append((item, mirror, f"sha256 {digest[:16]}... != manifest {want.sha256[:16]}..."))
                else:
                    try:
                        self.sink.put(want.path, body)
                    except OSError as exc:
                        result.failed[want.path] = f"cannot write: {exc.strerror or exc}"
                    else:
                        result.downloaded += 1
                        result.bytes += len(body)
                        mirror.stats.served += 1
                        mirror.stats.bytes += len(body)
                    batch.append((item, mirror, None))
                if q.empty() or len(batch) >= 256:
                    break
                job = q.get()
            if batch:
                loop.call_soon_threadsafe(self._verified, batch)
                batch = []
            if job is None:
                return

    def _verified(self, batch: list[tuple[_Item, _Mirror, str | None]]) -> None:
        for item, mirror, mismatch in batch:
            if item.done:
                continue
            if mismatch is None:
                self._settle(item)
            else:
                self._reject(item, mirror, "mismatched", mismatch)

    # main loop ---------------------------------------------------------------------------------------------
    async def _connection_loop(self, mirror: _Mirror) -> None:
        loop = asyncio.get_running_loop()
        t = mirror.target
        ctx = ssl.create_default_context() if t.scheme == "https" else None
        while self._remaining > 0 and self._fatal is None and not mirror.dead:
            wait = mirror.down_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.25))
                continue
            if not self._has_work(mirror):
                await asyncio.sleep(
                    0.02
                )  # retries waiting out their backoff, or files left for other mirrors
                continue
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self, mirror),
                        t.host,
                        t.port,
                        ssl=ctx,
                        server_hostname=t.host if ctx else None,
                    ),
                    self.timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:
                self._mirror_failed(mirror, f"cannot connect: {exc or 'timeout'}")
                if mirror.dead and all(m.dead for m in self._mirrors):
                    self._fatal = f"cannot connect to {t.host}:{t.port}: {exc or 'timeout'}"
                continue
            self.result.connections += 1
            await conn.done
            if not conn.responses and mirror.in_a_row == 0:
                self._mirror_failed(mirror, None)  # closed before answering anything: do not spin

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

        Raises :class:`FetchError` only when no mirror could be reached and nothing was obtained.
        """
        start = time.perf_counter()
        self._loop = asyncio.get_running_loop()
        todo = []
        for want in wants:
            self.result.total += 1
            if want.sha256 is not None and self.sink.has(want.path, want.sha256, want.size):
                self.result.skipped += 1
            else:
                todo.append(_Item(want, quote_path(want.path)))
        self._queue.extend(todo)
        self._remaining = len(todo)
        if todo and self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(todo), unit="file", desc="fetch", mininterval=0.25, leave=False)
        verifier = threading.Thread(target=self._verifier, daemon=True)
        verifier.start()
        try:
            if todo and self._mirrors:
                n = min(self.connections, len(todo))
                workers = [
                    asyncio.create_task(self._connection_loop(m)) for m in self._mirrors for _ in range(n)
                ]
                dog = asyncio.create_task(self._watchdog())
                await asyncio.gather(*workers)
                dog.cancel()
                if self._fatal is not None:
                    for conn in list(self._live):
                        conn.abort(self._fatal)
        finally:
            self._verifyq.put(None)
            await self._loop.run_in_executor(None, verifier.join)
            await asyncio.sleep(0)  # run the verifier's last report
            if self._bar is not None:
                self._bar.close()
        for item in todo:  # anything unsettled (queued, or waiting out a backoff) did not arrive
            if not item.done:
                self.result.failed[item.want.path] = self._fatal or "not downloaded"
        self.result.seconds = time.perf_counter() - start
        if self._fatal is not None and self.result.downloaded == 0 and not self.result.skipped:
            raise FetchError(self._fatal)
        return self.result
