"""EIO3 / Socket.IO v4 (socket.io 2.x) client core: length-prefixed framing, client pings."""

from __future__ import annotations

import random
import re

import pytest

from locustfiles.sio.protocol import codec
from locustfiles.sio.protocol.actions import (
    Connected,
    EventReceived,
    HttpRequest,
    OpenWebSocket,
    StepResult,
    WsSend,
)
from locustfiles.sio.protocol.client import ClientProtocol
from tests.unit.protocol_helpers import OPEN3 as HANDSHAKE  # docs/protocol.md §2, verbatim
from tests.unit.protocol_helpers import SID3 as SID
from tests.unit.protocol_helpers import of, step


def handshaken(transports=("polling", "websocket"), namespace="/"):
    c = ClientProtocol(eio=3, transports=transports, namespace=namespace, rng=random.Random(3))
    (hs,) = c.start(0.0)
    assert re.fullmatch(r"EIO=3&transport=polling&t=[0-9a-z]{7}", hs.query)
    return c, c.http_response(hs.rid, 200, HANDSHAKE, 0.010, node="n1", content_type="text/plain; charset=UTF-8")


def test_eio3_sequence_default_namespace_is_connected_by_the_handshake():
    c, a = handshaken()
    assert step(a, "handshake").ok
    conn = step(a, "connect")
    assert (conn.ok, conn.latency_ms) == (True, 10.0)
    assert Connected("/", SID) in a and c.sio_sid == SID
    # v2 client sends no CONNECT for "/": only the probe and the poll
    assert [type(x).__name__ for x in a if not isinstance(x, StepResult | Connected)] == [
        "OpenWebSocket", "HttpRequest"]
    assert of(a, OpenWebSocket) == [OpenWebSocket(f"EIO=3&transport=websocket&sid={SID}", "probe")]
    (poll,) = of(a, HttpRequest)
    c.ws_opened(0.02)
    c.ws_message("3probe", 0.03)
    a = c.http_response(poll.rid, 200, b"1:6", 0.04)
    assert a[0] == WsSend("5") and c.transport == "websocket"
    aid, a = c.emit("echo", "x", ack=True, now=0.05)
    assert a == [WsSend('420["echo","x"]')]


def test_eio3_custom_namespace_connect():
    c, a = handshaken(transports=("polling",), namespace="/admin")
    post, poll = of(a, HttpRequest)
    assert post.body == b"9:40/admin,"
    assert c.http_response(post.rid, 200, b"ok", 0.02) == []
    a = c.http_response(poll.rid, 200, b"9:40/admin,", 0.03)
    assert Connected("/admin", f"/admin#{SID}") in a


def test_eio3_framing_counts_utf16_code_units():
    c, a = handshaken(transports=("polling",))
    (poll,) = of(a, HttpRequest)
    _, a = c.emit("m", "😀é", now=0.02)
    (post,) = of(a, HttpRequest)
    # '42["m","😀é"]': 10 ASCII + 2 (surrogate pair) + 1 = 13 code units, 16 UTF-8 bytes
    assert post.body == '13:42["m","😀é"]'.encode()
    assert post.content_type.startswith("text/plain")
    body = '8:42["😀"]1:6'.encode()
    a = c.http_response(poll.rid, 200, body, 0.03)
    assert of(a, EventReceived) == [EventReceived("/", "😀", [], None)]


def test_eio3_client_pings_and_pong_timeout():
    c, a = handshaken(transports=("polling",))
    (poll,) = of(a, HttpRequest)
    assert c.next_deadline() == pytest.approx(25.010)  # first ping after pingInterval
    a = c.tick(25.010)
    (ping,) = of(a, HttpRequest)
    assert (ping.method, ping.body) == ("POST", b"1:2")
    c.http_response(ping.rid, 200, b"ok", 25.011)
    a = c.http_response(poll.rid, 200, b"1:3", 25.030)
    s = step(a, "ping")
    assert (s.ok, s.latency_ms) == (True, 20.0)
    (poll,) = of(a, HttpRequest)
    assert c.next_deadline() == pytest.approx(50.030)
    a = c.tick(50.030)
    (ping,) = of(a, HttpRequest)
    c.http_response(ping.rid, 200, b"ok", 50.031)
    assert c.next_deadline() == pytest.approx(55.030)  # pingTimeout 5 s for the pong
    a = c.tick(55.030)
    assert step(a, "ping").error_kind == "timeout"
    assert a[-1].reason == "ping timeout" and a[-1].error_kind == "timeout"


def test_eio3_ping_over_websocket_and_binary_frames():
    c = ClientProtocol(eio=3, transports=("websocket",))
    assert c.start(0.0) == [OpenWebSocket("EIO=3&transport=websocket", "websocket")]
    c.ws_opened(0.001)
    a = c.ws_message('0{"sid":"W","upgrades":[],"pingInterval":1000,"pingTimeout":500}', 0.002)
    assert step(a, "handshake").ok and of(a, WsSend) == []
    a = c.ws_message("40", 0.003)
    assert Connected("/", "W") in a
    assert c.tick(1.002) == [WsSend("2")]
    assert step(c.ws_message("3", 1.010), "ping").latency_ms == 8.0
    _, a = c.emit("b", b"\x07", now=1.1)
    assert a[1] == WsSend(b"\x04\x07")  # EIO3 binary frames carry the packet type byte
    c.ws_message('451-["r",{"_placeholder":true,"num":0}]', 1.2)
    assert c.ws_message(b"\x04\x09", 1.3) == [EventReceived("/", "r", [b"\x09"], None)]
    a = c.ws_message(b"\x02\x09", 1.4)
    assert a[-1].error_kind == "protocol_error"


def test_eio3_binary_payloads_both_ways():
    c, a = handshaken(transports=("polling",))
    (poll,) = of(a, HttpRequest)
    # hand-built XHR2 binary payload: text record "451-[...]" then a binary record 04 01 02
    text = b'451-["bin",{"_placeholder":true,"num":0}]'
    body = b"\x00" + bytes(int(d) for d in str(len(text))) + b"\xff" + text + b"\x01\x03\xff\x04\x01\x02"
    a = c.http_response(poll.rid, 200, body, 0.02, content_type="application/octet-stream")
    assert EventReceived("/", "bin", [b"\x01\x02"], None) in a
    _, a = c.emit("up", b"\xaa", now=0.03)
    (post,) = of(a, HttpRequest)
    rec = b'451-["up",{"_placeholder":true,"num":0}]'
    assert post.content_type == "application/octet-stream"
    assert post.body == b"\x00" + bytes(int(d) for d in str(len(rec))) + b"\xff" + rec + b"\x01\x02\xff\x04\xaa"
    assert codec.decode_payload_v3(post.body) == [(4, rec.decode()[1:]), (4, b"\xaa")]


def test_eio3_auth_is_a_config_error():
    with pytest.raises(ValueError, match="auth"):
        ClientProtocol(eio=3, auth={"t": 1})


@pytest.mark.parametrize("body", [
    b'10:42["a"]',  # length runs past the payload
    b'x:42["a"]',  # no length
    b"42",  # no colon
    b'3:42["a"]',  # length cuts the JSON
    b"99999999999:4",  # absurd length prefix
    '1:42["😀"]'.encode()[:0] + '7:42["😀"]'.encode(),  # length splits the surrogate pair
    b"\x00\x05",  # truncated binary record
    b"\x01\x02\xff\x07x",  # binary record of packet type 7
])
def test_eio3_malformed_payloads_are_protocol_errors(body):
    c, a = handshaken(transports=("polling",))
    (poll,) = of(a, HttpRequest)
    a = c.http_response(poll.rid, 200, body, 0.02)
    assert a[-1].error_kind == "protocol_error", a
    assert step(a, "disconnect").error_kind == "protocol_error"
