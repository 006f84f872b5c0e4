"""WebSocket reader limits and fairness: every server violation is a classified TransportError,
and no server, however fast, can keep the reader from yielding to the gevent hub.

Why real sockets here (an exception to "tests/unit has no sockets"): the stall this guards
against exists only when the kernel always has bytes ready, which an in-memory fake cannot
show. The servers are native threads on 127.0.0.1 in this process (no process to leak), each
bounded in time, so even the old, stalling reader ends these tests.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import tracemalloc
from collections.abc import Callable

import gevent
import pytest
from gevent import monkey

from locustfiles.sio.driver import Session, SessionConfig
from locustfiles.sio.protocol.actions import Closed
from locustfiles.sio.transport import http as httpmod
from locustfiles.sio.transport import websocket as wsmod
from locustfiles.sio.transport.errors import TransportError
from locustfiles.sio.transport.http import HttpConnection
from locustfiles.sio.transport.net import Endpoint
from locustfiles.sio.transport.websocket import MAX_FRAGMENTS, MAX_MESSAGE_BYTES, WebSocket
from tests._loopback import FakeSock, ThreadServer
from tests._stall import StallMeter

_socket = monkey.get_original("socket", "socket")  # the unpatched one, to poke a native server
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(op: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    """A server frame (unmasked) with the minimal length encoding."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | op
    if n < 126:
        return bytes([b0, n]) + payload
    if n < 65536:
        return bytes([b0, 126]) + struct.pack("!H", n) + payload
    return bytes([b0, 127]) + struct.pack("!Q", n) + payload


def ws_server(script: Callable[[Callable[[bytes], None]], None], stop_after: float = 3.0) -> ThreadServer:
    """One-connection WebSocket server in a native thread: 101, then `script(send)`.

    `script` gets a `send(bytes)` that raises once the client is gone or `stop_after` seconds
    have passed since the 101, so the thread always ends by itself.
    """

    def serve(conn, request: bytes) -> None:  # conn: a native socket
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + _accept_of(request) + b"\r\n\r\n")
        end = time.monotonic() + stop_after

        def send(data: bytes) -> None:
            if time.monotonic() > end:
                raise TimeoutError("flood time is over")
            conn.sendall(data)

        script(send)

    return ThreadServer(serve, sndbuf=1 << 16)  # little to drain once the script ends


def flood(chunk: bytes) -> Callable[[Callable[[bytes], None]], None]:
    def script(send: Callable[[bytes], None]) -> None:
        while True:
            send(chunk)
    return script


def _consume(url: str, out: dict) -> None:
    ws = WebSocket.connect(Endpoint.from_url(url), "/socket.io/?EIO=4&transport=websocket", timeout=5)
    n = 0
    try:
        while True:
            ws.recv()
            n += 1
    except TransportError as e:
        out["error"] = e
    finally:
        out["messages"] = n
        ws.close(send_frame=False)


def _flood_run(chunk: bytes, seconds: float = 1.0) -> tuple[float, dict]:
    srv = ws_server(flood(chunk), stop_after=seconds)
    meter = StallMeter()
    out: dict = {}
    g = gevent.spawn(_consume, srv.url, out)
    g.join(timeout=seconds + 10)
    worst = meter.stop()
    g.kill()
    srv.join()
    return worst, out


def test_data_frame_flood_does_not_stall_the_hub() -> None:
    """Tiny text frames as fast as the server can write: the reader yields, the hub keeps ticking."""
    worst, out = _flood_run(frame(0x1, b"6") * 20000)
    assert out["messages"] > 1000
    assert isinstance(out["error"], TransportError) and out["error"].kind in ("transport_closed", "connection_reset")
    assert worst < 0.1, f"the hub stalled for {worst * 1000:.0f} ms"


def test_pong_flood_without_the_rate_limit_does_not_stall_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unsolicited pongs never reach the caller; the reader must yield between them by itself."""
    monkeypatch.setattr(wsmod, "MAX_CONTROL_FRAMES_PER_S", 10**9)
    worst, out = _flood_run(frame(0xA) * 30000)
    assert out["messages"] == 0 and out["error"].kind in ("transport_closed", "connection_reset")
    assert worst < 0.1, f"the hub stalled for {worst * 1000:.0f} ms"


def test_pong_flood_is_a_protocol_error_naming_the_limit() -> None:
    t0 = time.monotonic()
    worst, out = _flood_run(frame(0xA) * 30000, seconds=3.0)
    assert out["error"].kind == "protocol_error"
    assert "MAX_CONTROL_FRAMES_PER_S" in str(out["error"])
    assert time.monotonic() - t0 < 2.0 and worst < 0.1


def _session_under_flood(timeout: float = 1.0) -> tuple[Closed | None, float, float]:
    """A websocket-only session whose server sends the open packet, then floods Engine.IO noops
    and never answers CONNECT: (the Closed action, when it came, the hub's largest stall)."""

    def script(send: Callable[[bytes], None]) -> None:
        send(frame(0x1, b'0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'))
        while True:
            send(frame(0x1, b"6") * 20000)

    srv = ws_server(script, stop_after=4.0)
    closed: list[tuple[Closed, float]] = []
    t0 = time.monotonic()

    def on_action(a, _ctx) -> None:
        if isinstance(a, Closed):
            closed.append((a, time.monotonic() - t0))

    meter = StallMeter()
    s = Session(SessionConfig(url=srv.url, transports=("websocket",), timeout=timeout), on_action)
    try:
        s.start()
        deadline = time.monotonic() + 10
        while not closed and time.monotonic() < deadline:
            gevent.sleep(0.02)
    finally:
        worst = meter.stop()
        s.abort()
        srv.join()
    return (closed[0] if closed else (None, 0.0)) + (worst,)


def test_session_timer_fires_on_time_under_a_message_flood() -> None:
    """The CONNECT timeout fires on time while the server floods, and the hub never stalls."""
    action, at, worst = _session_under_flood()
    assert action is not None and action.error_kind == "timeout", action
    assert at < 1.0 + 0.3, f"the 1 s CONNECT timeout fired after {at:.2f} s"
    assert worst < 0.1, f"the hub stalled for {worst * 1000:.0f} ms"


def test_session_deadlines_are_checked_by_the_clock_even_if_the_hub_is_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the reader's yields disabled the hub's timer cannot fire; the driver's reader still
    sees by the clock that the CONNECT deadline passed, and ends the session on time.

    Both yields go: the frame reader's (YIELD_EVERY) and the byte reader's under it
    (http.YIELD_AFTER_S), or the hub would run, fire the timer and pass this test without the
    driver's check (which then ended the session only when the flood stopped, at 4 s).
    """
    monkeypatch.setattr(wsmod, "YIELD_EVERY", 10**12)
    monkeypatch.setattr(httpmod, "YIELD_AFTER_S", 10.0**9)
    action, at, _ = _session_under_flood()
    assert action is not None and action.error_kind == "timeout", action
    assert at < 1.0 + 0.3, f"the 1 s CONNECT timeout fired after {at:.2f} s"


# -- request head: server-chosen values never reach the wire raw --------------------------------
def _capture(target: str, **kw) -> tuple[bytes, BaseException | None]:
    srv = ws_server(lambda send: None, stop_after=1.0)
    err: BaseException | None = None
    try:
        WebSocket.connect(Endpoint.from_url(srv.url), target, timeout=3, **kw).close()
    except Exception as e:  # noqa: BLE001 - the test inspects whatever came out
        err = e
    if not srv.request:  # refused before connecting: release the server's accept()
        poke = _socket()
        poke.connect(("127.0.0.1", srv.port))
        poke.close()
    srv.join()
    return srv.request, err


def test_non_ascii_sid_is_percent_encoded_not_a_unicode_error() -> None:
    head, err = _capture("/socket.io/?EIO=4&transport=websocket&sid=s\u2603id")
    assert err is None, repr(err)
    assert head.split(b"\r\n")[0] == b"GET /socket.io/?EIO=4&transport=websocket&sid=s%E2%98%83id HTTP/1.1"


def test_crlf_in_the_target_never_reaches_the_wire_raw() -> None:
    head, err = _capture("/socket.io/?EIO=4&transport=websocket&sid=ab\r\nX-Injected: 1\r\nHost: evil")
    assert err is None, repr(err)
    lines = head.split(b"\r\n")
    assert lines[0] == b"GET /socket.io/?EIO=4&transport=websocket&sid=ab%0D%0AX-Injected:%201%0D%0AHost:%20evil HTTP/1.1"
    assert not any(ln.lower().startswith((b"x-injected", b"host: evil")) for ln in lines)


@pytest.mark.parametrize("cookie", ["a=b\r\nX-Injected: 1", "a=b\nX: y", "a=\u2603"])
def test_a_cookie_that_cannot_be_sent_is_a_protocol_error(cookie: str) -> None:
    head, err = _capture("/socket.io/?EIO=4&transport=websocket", cookie=cookie)
    assert isinstance(err, TransportError) and err.kind == "protocol_error", repr(err)
    assert b"X-Injected" not in head


# -- frame limits (in-memory: the bytes are the whole story) ------------------------------------
def read_all(data: bytes, step: int = 1 << 16) -> tuple[list[str | bytes], TransportError, FakeSock]:
    sock = FakeSock(data, step)
    ws = WebSocket(HttpConnection(sock), None)  # type: ignore[arg-type]
    got: list[str | bytes] = []
    while True:
        try:
            got.append(ws.recv())
        except TransportError as e:
            return got, e, sock


VIOLATIONS = {
    "rsv1": (frame(0x1, b"a", rsv=0x40), "reserved bits"),
    "rsv3": (frame(0x2, b"a", rsv=0x10), "reserved bits"),
    "masked": (bytes([0x81, 0x81]) + b"\0\0\0\0a", "masked"),
    "opcode 3": (frame(0x3, b"a"), "opcode 3"),
    "opcode 0xB": (frame(0xB), "opcode 11"),
    "continuation first": (frame(0x0, b"a"), "continuation"),
    "data inside fragments": (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), "inside a fragmented"),
    "fragmented ping": (frame(0x9, b"", fin=False), "fragmented control"),
    "long ping": (bytes([0x89, 126, 0, 200]), "control frame of 126 bytes or more"),
    "long close": (bytes([0x88, 127]) + struct.pack("!Q", 1 << 20), "control frame of"),
    "text not utf-8": (frame(0x1, b"\xff\xfe"), "UTF-8"),
    "text surrogate": (frame(0x1, b"\xed\xa0\x80"), "UTF-8"),
    "fragmented text not utf-8": (frame(0x1, b"\xe2\x98", fin=False) + frame(0x0, b"a"), "UTF-8"),
    "close 1 byte": (frame(0x8, b"\x03"), "1-byte"),
    "close reason not utf-8": (frame(0x8, struct.pack("!H", 1000) + b"\xff"), "UTF-8"),
    "non-minimal 16-bit length": (bytes([0x81, 126, 0, 5]) + b"hello", "minimal"),
    "non-minimal 64-bit length": (bytes([0x81, 127]) + struct.pack("!Q", 5) + b"hello", "minimal"),
    "64-bit length msb": (bytes([0x82, 127]) + struct.pack("!Q", 1 << 63), "most significant bit"),
    "frame too big": (bytes([0x82, 127]) + struct.pack("!Q", MAX_MESSAGE_BYTES + 1), "MAX_MESSAGE_BYTES"),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_each_violation_is_a_named_protocol_error(name: str) -> None:
    raw, words = VIOLATIONS[name]
    got, err, sock = read_all(frame(0x1, b"before") + raw + frame(0x1, b"after"))
    assert got == ["before"]
    assert err.kind == "protocol_error" and words in str(err), str(err)
    assert sock.closed


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_close_with_an_invalid_code_is_a_protocol_error(code: int) -> None:
    _, err, _ = read_all(frame(0x8, struct.pack("!H", code) + b"bye"))
    assert err.kind == "protocol_error" and f"close code {code}" in str(err), str(err)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999])
def test_close_with_a_valid_code_is_transport_closed_and_answered(code: int) -> None:
    _, err, sock = read_all(frame(0x8, struct.pack("!H", code) + "adiós".encode()))
    assert err.kind == "transport_closed" and f"code {code}" in str(err) and "adiós" in str(err)
    assert sock.sent[:1] == b"\x88"  # the close handshake is answered


def test_close_without_a_code_is_1005() -> None:
    _, err, _ = read_all(frame(0x8))
    assert err.kind == "transport_closed" and "1005" in str(err)


def test_reassembled_message_is_bounded_before_it_is_buffered() -> None:
    half = MAX_MESSAGE_BYTES // 2 + 1
    head = bytes([0x02, 127]) + struct.pack("!Q", half)
    # the second fragment's header alone must be refused: its payload is never awaited
    data = head + b"x" * half + bytes([0x80, 127]) + struct.pack("!Q", half)
    got, err, _ = read_all(data)
    assert got == [] and err.kind == "protocol_error"
    assert "MAX_MESSAGE_BYTES" in str(err) and str(MAX_MESSAGE_BYTES) in str(err)


def test_too_many_fragments_is_a_protocol_error() -> None:
    data = frame(0x1, b"a", fin=False) + frame(0x0, b"", fin=False) * (MAX_FRAGMENTS + 5) + frame(0x0, b"z")
    _, err, _ = read_all(data)
    assert err.kind == "protocol_error" and "MAX_FRAGMENTS" in str(err)
    ok = frame(0x1, b"a", fin=False) + frame(0x0, b"b", fin=False) * (MAX_FRAGMENTS - 2) + frame(0x0, b"z")
    got, err, _ = read_all(ok)
    assert got == ["a" + "b" * (MAX_FRAGMENTS - 2) + "z"] and err.kind == "transport_closed"


def test_valid_fragments_with_interleaved_control_frames() -> None:
    data = (frame(0x1, "snö".encode()[:3], fin=False) + frame(0x9, b"p") + frame(0xA)
            + frame(0x0, "snö".encode()[3:]) + frame(0x2, b"\x00\x01"))
    for step in (1, 2, 3, 1 << 16):
        got, err, sock = read_all(data, step)
        assert got == ["snö", b"\x00\x01"] and err.kind == "transport_closed"
        assert sock.sent.startswith(b"\x8a\x81")  # pong with a 1-byte masked payload


def test_ping_flood_gets_one_pong_per_batch_not_one_per_ping() -> None:
    """RFC 6455 5.5.3: a pong for the most recent ping is enough; a flood must not become one."""
    got, err, sock = read_all(frame(0x9, b"a") * 200 + frame(0x9, b"z") + frame(0x1, b"m"))
    assert got == ["m"]
    pongs = bytes(sock.sent).split(b"\x8a\x81")[1:]  # each: 4-byte key + 1 masked byte
    assert 1 <= len(pongs) <= 201 // wsmod.YIELD_EVERY + 1
    key, masked = pongs[-1][:4], pongs[-1][4:5]
    assert bytes([masked[0] ^ key[0]]) == b"z"  # the latest ping is the one answered


def test_a_declared_huge_frame_allocates_nothing_up_front() -> None:
    data = bytes([0x82, 127]) + struct.pack("!Q", MAX_MESSAGE_BYTES) + b"x" * 1000
    tracemalloc.start()
    try:
        _, err, _ = read_all(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.kind == "transport_closed"
    assert peak < 1 << 20, f"peak {peak} bytes for a 1 KB stream"


# -- the opening handshake: whatever the server answers, a classified TransportError ---------------
def _accept_of(request: bytes) -> bytes:
    key = next(ln.split(b":", 1)[1].strip() for ln in request.split(b"\r\n")
               if ln.lower().startswith(b"sec-websocket-key:"))
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _good_101(accept: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n")


def answer_server(answers: list[Callable[[bytes], bytes]]) -> ThreadServer:
    """Native-thread server: connection i gets `answers[i](request)`, then is closed."""
    it = iter(answers)
    return ThreadServer(lambda conn, request: conn.sendall(next(it)(request)), connections=len(answers))


def _handshakes(answers: list[Callable[[bytes], bytes]]) -> list[object]:
    """Each answer's outcome: the WebSocket (closed at once) or the exception connect raised."""
    srv = answer_server(answers)
    out: list[object] = []
    for _ in answers:
        try:
            ws = WebSocket.connect(Endpoint.from_url(srv.url), "/socket.io/?EIO=4&transport=websocket", timeout=3)
            out.append(ws)
            ws.close(send_frame=False)
        except Exception as e:  # noqa: BLE001 - the test inspects whatever came out
            out.append(e)
    srv.join()
    return out


def test_a_101_truncated_at_every_byte_is_upgrade_failed() -> None:
    full = len(_good_101(b"x" * 28))
    answers = [(lambda req, i=i: _good_101(_accept_of(req))[:i]) for i in range(full)]
    for i, got in enumerate(_handshakes(answers)):
        assert isinstance(got, TransportError) and got.kind == "upgrade_failed", (i, got)


HOSTILE_101 = {
    "wrong accept": (lambda req: _good_101(b"AAAAAAAAAAAAAAAAAAAAAAAAAAA="), "upgrade_failed"),
    "no Connection": (lambda req: _good_101(_accept_of(req)).replace(b"Connection: Upgrade\r\n", b""),
                      "upgrade_failed"),
    "extension not offered": (lambda req: _good_101(_accept_of(req), b"Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
                              "upgrade_failed"),
    "deflate twice": (lambda req: _good_101(
        _accept_of(req), b"Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n"), "upgrade_failed"),
    "deflate, unknown parameter": (lambda req: _good_101(
        _accept_of(req), b"Sec-WebSocket-Extensions: permessage-deflate; foo=1\r\n"), "upgrade_failed"),
    "deflate, window out of range": (lambda req: _good_101(
        _accept_of(req), b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16\r\n"), "upgrade_failed"),
    "subprotocol not offered": (lambda req: _good_101(_accept_of(req), b"Sec-WebSocket-Protocol: chat\r\n"),
                                "upgrade_failed"),
    "superscript status": (lambda req: b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n", "protocol_error"),
    "not http": (lambda req: b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "protocol_error"),
    "refused with a body": (lambda req: b'HTTP/1.1 400 Bad Request\r\nContent-Length: 17\r\n\r\n"Invalid session"',
                            "http_400"),
}


@pytest.mark.parametrize("name", list(HOSTILE_101))
def test_a_hostile_handshake_answer_is_classified(name: str) -> None:
    answer, kind = HOSTILE_101[name]
    [got] = _handshakes([answer])
    assert isinstance(got, TransportError) and got.kind == kind, repr(got)


def test_frames_in_the_same_packet_as_the_101_are_delivered() -> None:
    srv = answer_server([lambda req: _good_101(_accept_of(req)) + frame(0x1, b"0{}") + frame(0x8, b"\x03\xe8")])
    ws = WebSocket.connect(Endpoint.from_url(srv.url), "/socket.io/?EIO=4&transport=websocket", timeout=3)
    assert ws.recv() == "0{}"
    with pytest.raises(TransportError, match="code 1000"):
        ws.recv()
    srv.join()
