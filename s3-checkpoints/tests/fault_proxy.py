"""A fault-injecting HTTP proxy between the S3 client and the real MinIO, for the network-fault tests.

It understands just enough HTTP/1.1 (keep-alive, Content-Length and chunked bodies, ``Expect:
100-continue``) to aim a fault at one request: "reset the answer of the manifest PUT", "cut the 2nd ranged
GET of the model object after 1000 bytes", "stall every GET longer than the read timeout". A byte-level
proxy (Toxiproxy) can only break a connection's stream, and boto3 pools its connections, so it cannot say
which request a fault hits; these tests need to say exactly that.

Faults (``Rule.action``), each on the requests that match ``method`` and ``path`` (a substring of the
request target, query included), the first ``times`` matches:

* ``reset_request``: the request reaches the proxy, never the server; the client's connection is reset.
* ``reset_mid_request``: the head and half the body reach the server, then both connections are reset.
* ``reset_response``: the server gets the whole request and answers; the client gets a reset instead.
* ``cut_response``: the client gets the head and ``arg`` bytes of the body (half the head, if the body is
  not longer than that), then a reset.
* ``stall``: the server answers; the client gets nothing for ``arg`` seconds, then a close.
* ``stall_body``: the client gets the head and half the body, then nothing for ``arg`` seconds.
* ``refuse``: (not per request) :meth:`FaultProxy.refusing` closes the listening socket for a while.

With ``chaos=(p, seed)`` every request also gets a random fault with probability ``p`` from its own seeded
generator (never the global ``random``: the tests check that the client's RNGs are untouched).
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

CHAOS_ACTIONS = ("reset_request", "reset_mid_request", "reset_response", "cut_response", "stall")


@dataclass
class Rule:
    action: str
    method: str | None = None
    path: str | None = None
    times: int = 1
    arg: float = 0.0
    fired: int = 0

    def matches(self, method: str, target: str) -> bool:
        return (self.fired < self.times and (self.method is None or method == self.method)
                and (self.path is None or self.path in target))


def _rst(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), like a crashed peer or a middlebox dropping the connection."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    """A socket with a read buffer: HTTP heads and exact-length bodies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        i = self.buf.index(b"\r\n\r\n") + 4
        h, self.buf = self.buf[:i], self.buf[i:]
        return h

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._more()
        i = self.buf.index(b"\r\n") + 2
        ln, self.buf = self.buf[:i], self.buf[i:]
        return ln

    def exact(self, n: int) -> Iterator[bytes]:
        while n > 0:
            if not self.buf:
                self._more()
            piece, self.buf = self.buf[:n], self.buf[n:]
            n -= len(piece)
            yield piece


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return lines[0], hdrs


def _body(conn: _Conn, hdrs: dict[str, str]) -> Iterator[bytes]:
    """The raw bytes of a message body (Content-Length or chunked), as they arrive."""
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = conn.line()
            yield size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            yield from conn.exact(size + 2)
            if size == 0:
                return
    yield from conn.exact(int(hdrs.get("content-length", "0")))


class FaultProxy:
    """``with FaultProxy(upstream_port) as p:`` then point the client at ``p.endpoint``."""

    def __init__(self, upstream: str, rules: list[Rule] | None = None,
                 chaos: tuple[float, int] | None = None) -> None:
        host, port = upstream.split("://", 1)[-1].rstrip("/").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.rules = list(rules or [])
        self.chaos = (chaos[0], random.Random(chaos[1])) if chaos else None
        self.log: list[tuple[str, str, str]] = []  # (method, target, action) of every request
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            for s in list(self._socks):
                _rst(s)

    def add(self, *rules: Rule) -> None:
        with self._lock:
            self.rules.extend(rules)

    def fired(self, action: str | None = None) -> int:
        with self._lock:
            return sum(1 for _m, _t, a in self.log if a != "pass" and (action is None or a == action))

    @contextlib.contextmanager
    def refusing(self, for_seconds: float | None = None) -> Iterator[None]:
        """Connections are refused (nothing listens on the port) inside the block, or only for its first
        ``for_seconds``."""
        with self._lock:
            self._listener.close()
        timer = threading.Timer(for_seconds, self._reopen) if for_seconds is not None else None
        if timer:
            timer.start()
        try:
            yield
        finally:
            if timer:
                timer.join()
            else:
                self._reopen()

    def _reopen(self) -> None:
        with self._lock:
            self._listener = socket.create_server(("127.0.0.1", self.port))

    # -- plumbing -----------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                listener = self._listener
            try:
                listener.settimeout(0.2)
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                time.sleep(0.05)
                continue
            client.settimeout(None)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for r in self.rules:
                if r.matches(method, target):
                    r.fired += 1
                    self.log.append((method, target, r.action))
                    return r
            if self.chaos and self.chaos[1].random() < self.chaos[0]:
                action = self.chaos[1].choice(CHAOS_ACTIONS)
                self.log.append((method, target, action))
                return Rule(action, arg=self.chaos[1].choice((40.0, 3000.0)) if action == "cut_response"
                            else 4.0)
            self.log.append((method, target, "pass"))
            return None

    def _serve(self, client: socket.socket) -> None:
        up: socket.socket | None = None
        with self._lock:
            self._socks.add(client)
        try:
            c = _Conn(client)
            while not self._stop.is_set():
                try:
                    head = c.head()
                except (EOFError, OSError):
                    return
                start, hdrs = _headers(head)
                method, target = start.split(" ")[:2]
                rule = self._pick(method, target)
                if rule and rule.action == "reset_request":
                    return
                if up is None:
                    up = socket.create_connection(self.upstream)
                    with self._lock:
                        self._socks.add(up)
                if not self._relay(c, client, up, head, method, hdrs, rule):
                    return
        except (EOFError, OSError):
            return
        finally:
            _rst(client)
            if up is not None:
                _rst(up)
            with self._lock:
                self._socks.discard(client)
                if up is not None:
                    self._socks.discard(up)

    def _relay(self, c: _Conn, client: socket.socket, up: socket.socket, head: bytes, method: str,
               hdrs: dict[str, str], rule: Rule | None) -> bool:
        """One request and its answer; False when the connection is to be dropped."""
        action = rule.action if rule else "pass"
        if "100-continue" in hdrs.get("expect", "").lower():
            # answer the client's Expect ourselves and keep it from the server: one response per request
            head = b"\r\n".join(ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"expect:"))
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        up.sendall(head)
        length = int(hdrs.get("content-length", "0"))
        sent = 0
        for piece in _body(c, hdrs):
            if action == "reset_mid_request" and sent + len(piece) >= length // 2:
                up.sendall(piece[:max(0, length // 2 - sent)])
                return False
            up.sendall(piece)
            sent += len(piece)
        if action == "reset_mid_request":
            return False
        u = _Conn(up)
        rhead = u.head()
        while rhead.split(b" ", 2)[1:2] == [b"100"]:  # interim answers: never for us (Expect removed)
            rhead = u.head()
        status_line, rh = _headers(rhead)
        status = int(status_line.split(" ")[1])
        no_body = method == "HEAD" or status in (204, 304)
        body = [] if no_body else _body(u, rh)
        if action in ("reset_response", "stall"):
            for _ in body:  # the server finished its work; the client never hears of it
                pass
            if action == "stall":
                self._stop.wait(rule.arg if rule else 0)
            return False
        total = int(rh.get("content-length", "0"))
        if action == "cut_response" and rule and (no_body or total <= rule.arg):
            for _ in body:  # too short to cut inside the body: cut inside the head
                pass
            client.sendall(rhead[:len(rhead) // 2])
            return False
        client.sendall(rhead)
        out = 0
        for piece in body:
            if action == "cut_response" and rule and out + len(piece) >= rule.arg:
                client.sendall(piece[:max(0, int(rule.arg) - out)])
                return False
            if action == "stall_body" and rule and out + len(piece) >= total // 2:
                client.sendall(piece[:max(0, total // 2 - out)])
                self._stop.wait(rule.arg)
                return False
            client.sendall(piece)
            out += len(piece)
        return action not in ("cut_response", "stall_body") and \
            rh.get("connection", "").lower() != "close"
