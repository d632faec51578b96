"""The HTTP/1.x response parser alone, on byte streams nginx does not produce but other servers and proxies
do. It imports nothing but the parser: no socket, no fetcher, no sink."""

from __future__ import annotations

import pytest

from fileserver.http11 import ProtocolError, Response, ResponseParser, parse_head


def feed_all(chunks: list[bytes]) -> tuple[list[Response], ResponseParser]:
    parser = ResponseParser()
    got: list[Response] = []
    for c in chunks:
        got += parser.feed(c)
    return got, parser


def test_pipelined_responses_split_anywhere() -> None:
    bodies = (b"one", b"", b"three!")
    stream = b"".join(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies)
    for cut in range(1, len(stream)):
        got, parser = feed_all([stream[:cut], stream[cut:]])
        assert got == [Response(200, b, False) for b in bodies], cut
        assert not parser.partial


def test_chunked_interim_and_close() -> None:
    stream = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nConnection: close\r\n\r\nno"
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlost"  # after the close: never a response
    )
    for size in (1, 7, len(stream)):
        got, parser = feed_all([stream[i : i + size] for i in range(0, len(stream), size)])
        assert got == [
            Response(200, b"Wikipedia", False),
            Response(200, b"ok", False),
            Response(404, b"no", True),
        ]
        assert parser.done


def test_body_delimited_by_the_end_of_the_connection() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ") == []
    assert parser.feed(b"world") == [] and parser.partial
    assert parser.feed_eof() == Response(200, b"hello world", True)


def test_eof_inside_a_sized_body_is_not_a_response() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort") == []
    assert parser.feed_eof() is None and parser.partial


def test_http10_without_keep_alive_closes_and_keep_alive_does_not() -> None:
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").close
    assert not parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1").close
    assert parse_head(b"HTTP/1.1 304 Not Modified\r\nETag: x").length == 0


@pytest.mark.parametrize(
    "head",
    [
        b"SSH-2.0-OpenSSH",
        b"HTTP/1.1 2xx OK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nContent-Length: five",
    ],
)
def test_garbage_is_a_protocol_error(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(head + b"\r\n\r\n")


def test_endless_headers_and_bad_chunks_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="larger than"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000)
    with pytest.raises(ProtocolError, match="chunk size"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
