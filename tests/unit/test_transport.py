"""Transport parsing without sockets: a scripted fake socket feeds bytes in arbitrary splits."""

from __future__ import annotations

import struct
import time

import pytest

from locustfiles.sio.transport.cookies import CookieJar
from locustfiles.sio.transport.errors import TransportError, classify_os_error
from locustfiles.sio.transport.http import HttpConnection
from locustfiles.sio.transport.net import Endpoint, parse_source_range
from locustfiles.sio.transport.websocket import WebSocket, _mask, encode_frame


class FakeSock:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent = b""
        self.closed = False

    def recv(self, n: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def sendall(self, data: bytes) -> None:
        self.sent += bytes(data)

    def send(self, data: bytes, flags: int = 0, timeout: float | None = None) -> int:
        self.sent += bytes(data)
        return len(data)

    def close(self) -> None:
        self.closed = True


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Served-By: n2\r\n"
    b"Set-Cookie: SIOSCALE_NODE=n2; path=/\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_chunked_response_any_split(step: int) -> None:
    conn = HttpConnection(FakeSock(split_every(CHUNKED + b"HTTP/1.1 204 No Content\r\n\r\n", step)))
    r = conn.roundtrip(b"GET / HTTP/1.1\r\n\r\n", False)
    assert (r.status, r.body, r.headers["x-served-by"], r.keep_alive) == (200, b"hello world", "n2", True)
    assert r.set_cookie == ["SIOSCALE_NODE=n2; path=/"]
    assert conn.roundtrip(b"GET / HTTP/1.1\r\n\r\n", False).status == 204  # pipelined leftover kept


def test_content_length_and_read_to_close() -> None:
    conn = HttpConnection(FakeSock([b"HTTP/1.1 400 BAD REQUEST\r\nContent-Length: 9\r\n\r\n\"Invalid\""]))
    r = conn.roundtrip(b"x", False)
    assert (r.status, r.body) == (400, b'"Invalid"')
    conn = HttpConnection(FakeSock([b"HTTP/1.0 200 OK\r\n\r\nabc", b"def"]))
    r = conn.roundtrip(b"x", False)
    assert (r.body, r.keep_alive) == (b"abcdef", False)


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
    ],
)
def test_malformed_http_is_protocol_error(raw: bytes) -> None:
    with pytest.raises(TransportError) as ei:
        HttpConnection(FakeSock([raw])).roundtrip(b"x", False)
    assert ei.value.kind == "protocol_error"
    assert str(ei.value).startswith("protocol_error")


def test_endless_headers_are_bounded() -> None:
    conn = HttpConnection(FakeSock([b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000]))
    with pytest.raises(TransportError, match="^protocol_error"):
        conn.roundtrip(b"x", False)


def test_cookie_jar() -> None:
    jar = CookieJar()
    jar.update(["SIOSCALE_NODE=n1; Path=/", "lb=abc123; HttpOnly", "junk"])
    assert jar.get("SIOSCALE_NODE") == "n1" and jar.get("lb") == "abc123"
    assert jar.header() == "SIOSCALE_NODE=n1; lb=abc123"
    jar.update(["lb=; Max-Age=0", "SIOSCALE_NODE=n3"])
    assert jar.header() == "SIOSCALE_NODE=n3"
    jar.update(["SIOSCALE_NODE=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert len(jar) == 0 and jar.header() == ""


def test_source_range() -> None:
    assert parse_source_range("127.0.0.2-127.0.0.4") == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert parse_source_range("127.0.0.9") == ["127.0.0.9"]
    assert parse_source_range("") == []
    for bad in ("10.0.0.1-10.0.0.5", "127.0.0.5-127.0.0.1", "nonsense"):
        with pytest.raises(ValueError, match="--sio-source-range"):
            parse_source_range(bad)


def test_source_range_over_several_24s_deals_one_24_at_a_time() -> None:
    """nginx ip_hash keys on 3 octets: the first users of a multi-/24 range must be in different /24s."""
    addrs = parse_source_range("127.0.1.1-127.0.8.254")
    assert len(addrs) == len(set(addrs)) == 7 * 256 + 254
    assert addrs[:3] == ["127.0.1.1", "127.0.2.0", "127.0.3.0"] and addrs[8] == "127.0.1.2"
    assert [a.rsplit(".", 1)[0] for a in addrs[:8]] == [f"127.0.{b}" for b in range(1, 9)]
    # an uneven range: the short /24s run out and the rest go on in order
    assert parse_source_range("127.0.1.253-127.0.2.2") == ["127.0.1.253", "127.0.2.0", "127.0.1.254",
                                                             "127.0.2.1", "127.0.1.255", "127.0.2.2"]


def test_endpoint() -> None:
    ep = Endpoint.from_url("https://127.0.0.1:8443/base/")
    assert (ep.host, ep.port, ep.tls, ep.host_header, ep.prefix) == ("127.0.0.1", 8443, True, "127.0.0.1:8443", "/base")
    assert Endpoint.from_url("http://localhost").port == 80
    with pytest.raises(ValueError):
        Endpoint.from_url("ftp://x")


def test_classify_os_errors() -> None:
    assert classify_os_error(ConnectionRefusedError(111, "refused"), "c").kind == "connection_refused"
    assert classify_os_error(ConnectionResetError(104, "reset"), "c").kind == "connection_reset"
    assert classify_os_error(TimeoutError(), "c").kind == "timeout"


def test_mask_roundtrip() -> None:
    key = b"\x01\x02\x03\x04"
    data = bytes(range(256)) * 3 + b"xyz"
    assert _mask(key, _mask(key, data)) == data
    assert _mask(key, b"\x00\x00\x00\x00\x00") == key + key[:1]


def _server_frame(op: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    if n < 126:
        return bytes([b0, n]) + payload
    if n < 65536:
        return bytes([b0, 126]) + struct.pack("!H", n) + payload
    return bytes([b0, 127]) + struct.pack("!Q", n) + payload


def _ws(chunks: list[bytes]) -> tuple[WebSocket, FakeSock]:
    sock = FakeSock(chunks)
    ws = WebSocket(HttpConnection(sock), None)  # type: ignore[arg-type]
    return ws, sock


def test_ws_frames_any_split() -> None:
    big = b"x" * 70000
    stream = (
        _server_frame(0x1, b"0{}")
        + _server_frame(0x9, b"hb")  # ping -> pong
        + _server_frame(0x1, b"42[", fin=False)
        + _server_frame(0x0, b"1]")
        + _server_frame(0x2, big)
        + _server_frame(0x8, struct.pack("!H", 1001))
    )
    for step in (1, 5, 100000):
        ws, sock = _ws(split_every(stream, step))
        assert ws.recv() == "0{}"
        assert ws.recv() == "42[1]"
        assert ws.recv() == big
        with pytest.raises(TransportError, match="^transport_closed") as ei:
            ws.recv()
        assert ws.close_code == 1001 and ei.value.kind == "transport_closed"
        assert sock.closed
        assert sock.sent[:1] == b"\x8a"  # the pong went out first


@pytest.mark.parametrize(
    "raw",
    [
        bytes([0x81 | 0x40, 1]) + b"a",  # reserved bit
        bytes([0x81, 0x81]) + b"\0\0\0\0a",  # masked server frame
        bytes([0x83, 1]) + b"a",  # unknown opcode
        bytes([0x80, 1]) + b"a",  # continuation without start
        bytes([0x81, 2]) + b"\xff\xfe",  # invalid UTF-8
        bytes([0x81, 127]) + struct.pack("!Q", 1 << 40),  # absurd length
    ],
)
def test_ws_malformed_is_protocol_error(raw: bytes) -> None:
    ws, sock = _ws([raw])
    with pytest.raises(TransportError, match="^protocol_error"):
        ws.recv()
    assert sock.closed


def test_ws_eof_is_transport_closed() -> None:
    ws, _ = _ws([_server_frame(0x1, b"abc")[:3]])
    with pytest.raises(TransportError, match="^transport_closed"):
        ws.recv()


def test_client_frames_are_masked_and_decodable() -> None:
    for n in (0, 5, 200, 70000):
        f = encode_frame(0x1, b"a" * n)
        assert f[0] == 0x81 and f[1] & 0x80
        ln = f[1] & 0x7F
        pos = 2
        if ln == 126:
            ln, pos = struct.unpack("!H", f[2:4])[0], 4
        elif ln == 127:
            ln, pos = struct.unpack("!Q", f[2:10])[0], 10
        key = f[pos : pos + 4]
        assert ln == n and _mask(key, f[pos + 4 :]) == b"a" * n


def test_ws_frames_buffered_with_the_101_are_not_lost() -> None:
    ws, _ = _ws([])
    ws._conn.buf += _server_frame(0x1, b"0{}")  # arrived in the same read as the 101
    assert ws.recv() == "0{}"


# -- issue 9: bounded, cooperative reads; nothing raw on the wire --------------------------------
class EndlessSock(FakeSock):
    """`head`, then `pattern` repeated forever, 64 KiB per recv: a server that never stops.

    It refuses to serve more than `budget` bytes, so a reader without a bound fails the test
    with AssertionError instead of eating the machine's memory.
    """

    def __init__(self, head: bytes, pattern: bytes, budget: int = 8 << 20) -> None:
        super().__init__([])
        self.pending = head
        self.block = pattern * max(1, 65536 // len(pattern))
        self.served = 0
        self.budget = budget

    def recv(self, n: int) -> bytes:
        if self.served > self.budget:
            raise AssertionError(f"the reader took {self.served} bytes of an endless stream without a bound")
        data, self.pending = (self.pending or self.block), b""
        self.served += len(data)
        return data


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("name", "head", "pattern", "limit"), [
    ("endless trailer line", CHUNKED_HEAD + b"3\r\nabc\r\n0\r\n", b"X", "MAX_TRAILER_BYTES"),
    ("endless trailer lines", CHUNKED_HEAD + b"0\r\n", b"X-T: y\r\n", "MAX_TRAILER_BYTES"),
    ("endless header line", b"HTTP/1.1 200 OK\r\nX: ", b"y", "MAX_HEAD_BYTES"),
    ("endless chunk-size line", CHUNKED_HEAD, b"0", "MAX_CHUNK_LINE_BYTES"),
    ("endless chunk extension", CHUNKED_HEAD + b"5;", b"e", "MAX_CHUNK_LINE_BYTES"),
    ("endless chunks", CHUNKED_HEAD, b"40\r\n" + b"x" * 64 + b"\r\n", "MAX_BODY_BYTES"),
    ("endless big chunks", CHUNKED_HEAD, b"10000\r\n" + b"z" * 65536 + b"\r\n", "MAX_BODY_BYTES"),
    ("endless body to close", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"b", "MAX_BODY_BYTES"),
    ("endless interim responses", b"", b"HTTP/1.1 100 Continue\r\n\r\n", "MAX_INTERIM_RESPONSES"),
])
def test_endless_streams_hit_a_named_limit(name: str, head: bytes, pattern: bytes, limit: str) -> None:
    sock = EndlessSock(head, pattern, budget=64 << 20)
    with pytest.raises(TransportError) as ei:
        HttpConnection(sock).roundtrip(b"GET / HTTP/1.1\r\n\r\n", False)
    assert ei.value.kind == "protocol_error" and limit in str(ei.value), (name, str(ei.value))


def test_endless_stream_within_limits_fails_at_its_deadline_by_the_clock() -> None:
    # 1-byte chunks: 16 MiB of body is ~100 MB and seconds of parsing away, so only the clock
    # can end this read in time (a gevent timer cannot fire while the reader never blocks).
    sock = EndlessSock(CHUNKED_HEAD, b"1\r\nx\r\n", budget=1 << 40)
    t0 = time.monotonic()
    with pytest.raises(TransportError) as ei:
        HttpConnection(sock).roundtrip(b"GET / HTTP/1.1\r\n\r\n", False, deadline=t0 + 0.3)
    took = time.monotonic() - t0
    assert ei.value.kind == "timeout" and 0.3 <= took < 0.6, (str(ei.value), took)


def test_endless_trailer_reproducer_is_bounded_in_memory() -> None:
    # issue 9: "the trailer has no size cap, and RSS grows at 2 MB/s"
    sock = EndlessSock(CHUNKED_HEAD + b"0\r\n", b"T" * 1024, budget=8 << 20)
    conn = HttpConnection(sock)
    with pytest.raises(TransportError, match="MAX_TRAILER_BYTES"):
        conn.roundtrip(b"GET / HTTP/1.1\r\n\r\n", False)
    assert sock.served <= 256 * 1024 and len(conn.buf) <= 256 * 1024


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n",  # latin-1 superscript digits: str.isdigit() says yes
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",  # negative chunk
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXY0\r\n\r\n",  # no CRLF after data
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nabcde",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5_0\r\n\r\nabcde",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n",  # bare CR in a field value
    b"HTTP/1.1 200 OK\r\nX: a\nInjected: b\r\nContent-Length: 0\r\n\r\n",  # bare LF
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n",  # NUL
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 300 + b"Content-Length: 0\r\n\r\n",  # > MAX_HEADER_LINES
])
def test_strict_http_parsing(raw: bytes) -> None:
    with pytest.raises(TransportError) as ei:
        HttpConnection(FakeSock([raw])).roundtrip(b"x", False)
    assert ei.value.kind == "protocol_error"


def test_interim_responses_are_skipped_like_a_browser() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" \
          b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    r = HttpConnection(FakeSock([raw])).roundtrip(b"x", False)
    assert (r.status, r.body) == (200, b"ok")


def _session_with(sock: FakeSock):
    from locustfiles.sio.transport.http import HttpSession

    s = HttpSession(Endpoint.from_url("http://127.0.0.1:9"))
    s._idle.append(HttpConnection(sock))
    return s


@pytest.mark.parametrize("target", [
    "/socket.io/?EIO=4&transport=polling&sid=ab\r\nX-Injected: 1\r\nHost: evil&t=x",  # issue 9 reproducer
    "/socket.io/?EIO=4&transport=polling&sid=s\u2603id&t=x",  # issue 9 reproducer: UnicodeEncodeError
    "/socket.io/?sid=a b",
    "/socket.io/?sid=\x00",
])
def test_unsafe_request_targets_are_refused_before_the_wire(target: str) -> None:
    sock = FakeSock([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    with pytest.raises(TransportError) as ei:
        _session_with(sock).request("GET", target)
    assert ei.value.kind == "protocol_error" and sock.sent == b""


@pytest.mark.parametrize("cookie", [
    "a=b\nX-Injected: 1", "a=b\rc", "a=\x00", "a=\x7f", "SIOSCALE_NODE=n1\x01",
    "big=" + "v" * 4097,  # name + value over RFC 6265bis's 4096 bytes
])
def test_set_cookie_with_control_characters_or_oversized_is_ignored(cookie: str) -> None:
    # RFC 6265bis 5.6 (what Chrome and Firefox do): ignore the whole set-cookie-string
    jar = CookieJar()
    jar.update(["keep=1", cookie])
    assert jar.header() == "keep=1"


def test_cookie_jar_is_bounded() -> None:
    jar = CookieJar()
    jar.update([f"c{i}=v" for i in range(1000)])
    assert len(jar) == 180 and jar.get("c999") == "v" and jar.get("c0") is None


def test_cookie_header_reaches_the_wire_unchanged_and_safe() -> None:
    sock = FakeSock([b"HTTP/1.1 200 OK\r\nSet-Cookie: lb=\xe9t\xe9; Path=/\r\nSet-Cookie: x=1\n2\r\n"
                     b"Content-Length: 0\r\n\r\n"])
    with pytest.raises(TransportError):  # the bare LF in a header value is refused outright
        _session_with(sock).request("GET", "/a")
    sock = FakeSock([b"HTTP/1.1 200 OK\r\nSet-Cookie: lb=\xe9t\xe9; Path=/\r\nContent-Length: 0\r\n\r\n",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    s = _session_with(sock)
    s.request("GET", "/a")
    s.request("GET", "/b")
    assert b"\r\nCookie: lb=\xe9t\xe9\r\n" in sock.sent  # the server's bytes, back as they came
