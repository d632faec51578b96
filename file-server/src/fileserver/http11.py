"""HTTP/1.x response parser for pipelined GET replies: bytes in, complete responses out.

It knows nothing of sockets, requests or files (like h11, the caller moves the bytes), so it can be tested on
any byte stream. Why not ``http.client``: it parses one response per blocking read with a per-line header
loop; here each file is a few KiB, so the per-response cost is what limits files/s, and a pipelined stream
must be cut into many responses from one receive buffer.

Scope: replies to GET (a HEAD reply would need the caller to say its body is empty), Content-Length,
chunked, or read-until-close bodies, interim ``1xx`` replies skipped, ``Connection: close`` and HTTP/1.0
without keep-alive honoured.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_HEAD = 65536


class ProtocolError(Exception):
    """The bytes are not an HTTP/1.x response; the connection cannot be trusted any more."""


class Response(NamedTuple):
    status: int
    body: bytes
    close: bool  # the server closes the connection after this response


class _Head(NamedTuple):
    status: int
    length: int | None  # None: chunked, or delimited by the end of the connection
    chunked: bool
    close: bool


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r]*)")
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:([^\r]*)")
_CONNECTION = re.compile(rb"\r\nconnection[ \t]*:([^\r]*)")


def parse_head(head: bytes) -> _Head:
    """Status, Content-Length, chunked?, close? from a raw header block (without the blank line).

    Regexes over the whole block instead of a per-line loop: this runs once per file, so it is hot.
    Conflicting Content-Length headers are refused (the classic response-smuggling ambiguity).
    """
    low = head.lower()
    if not low.startswith(b"http/1.") or len(low) < 12:
        raise ProtocolError(f"not an HTTP/1.x status line: {head[:40]!r}")
    try:
        status = int(low[9:12])
    except ValueError:
        raise ProtocolError(f"bad status line: {head[:40]!r}") from None
    lengths = _CONTENT_LENGTH.findall(low)
    length: int | None = None
    if lengths:
        try:
            values = {int(v) for v in lengths}
        except ValueError:
            raise ProtocolError("bad Content-Length") from None
        if len(values) != 1:
            raise ProtocolError("conflicting Content-Length headers")
        length = values.pop()
        if length < 0:
            raise ProtocolError("negative Content-Length")
    te = _TRANSFER_ENCODING.search(low)
    chunked = te is not None and b"chunked" in te.group(1)
    conn = _CONNECTION.search(low)
    close = conn is not None and b"close" in conn.group(1)
    if low.startswith(b"http/1.0") and (conn is None or b"keep-alive" not in conn.group(1)):
        close = True
    if status in (204, 304):
        length = 0
    return _Head(status, None if chunked else length, chunked, close)


class ResponseParser:
    """Feed it received bytes; it returns each response as soon as it is complete, in order.

    After a response that closes the connection, further bytes are ignored (``done`` is set).
    """

    __slots__ = ("_buf", "_head", "_chunks", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: _Head | None = None
        self._chunks: list[bytes] = []
        self.done = False

    @property
    def partial(self) -> bool:
        """True while a response has started but is not complete."""
        return self._head is not None or bool(self._buf)

    def feed(self, data: bytes) -> list[Response]:
        if self.done:
            return []
        buf = self._buf
        buf += data
        out: list[Response] = []
        pos = 0
        while True:
            head = self._head
            if head is None:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD:
                        raise ProtocolError(f"response headers larger than {MAX_HEAD // 1024} KiB")
                    break
                head = parse_head(bytes(buf[pos:end]))
                pos = end + 4
                if 100 <= head.status < 200:  # interim response: the real one follows
                    continue
                self._head = head
            if head.chunked:
                complete, pos = self._read_chunks(buf, pos)
                if not complete:
                    break
                body = b"".join(self._chunks)
                self._chunks.clear()
            elif head.length is not None:
                if len(buf) - pos < head.length:
                    break
                body = bytes(buf[pos : pos + head.length])
                pos += head.length
            else:
                break  # the body ends when the connection does: see feed_eof
            self._head = None
            out.append(Response(head.status, body, head.close))
            if head.close:
                self.done = True
                buf.clear()
                return out
        if pos:
            del buf[:pos]
        return out

    def feed_eof(self) -> Response | None:
        """The peer closed: complete a body delimited by the close; anything else unfinished is lost."""
        head = self._head
        if self.done or head is None or head.chunked or head.length is not None:
            return None
        self.done = True
        body = bytes(self._buf)
        self._buf.clear()
        self._head = None
        return Response(head.status, body, True)

    def _read_chunks(self, buf: bytearray, pos: int) -> tuple[bool, int]:
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False, pos
            try:
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if size == 0:
                if buf[eol : eol + 4] == b"\r\n\r\n":  # no trailers
                    return True, eol + 4
                end = buf.find(b"\r\n\r\n", eol)  # skip trailers
                if end < 0:
                    return False, pos
                return True, end + 4
            if len(buf) < eol + 2 + size + 2:
                return False, pos
            self._chunks.append(bytes(buf[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2
