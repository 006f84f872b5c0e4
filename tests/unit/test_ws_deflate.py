"""permessage-deflate without sockets (issue 13): Chrome's offer, what a 101 may answer, and
messages both ways checked against wsproto's own server side (an independent codec)."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from locustfiles.sio.transport.errors import TransportError
from locustfiles.sio.transport.http import HttpConnection, HttpResponse
from locustfiles.sio.transport.net import Endpoint
from locustfiles.sio.transport.websocket import (
    _GUID,
    MAX_MESSAGE_BYTES,
    WS_EXTENSIONS_OFFER,
    BoundedDeflate,
    WebSocket,
    _check_101,
    accepted_extension,
    extension_name,
    request_head,
)
from tests.unit.test_transport import FakeSock


def test_the_opening_request_offers_deflate_as_chrome_does() -> None:
    head = request_head(Endpoint.from_url("http://h:1"), "/socket.io/?EIO=4", b"k" * 24).decode()
    assert "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" in head
    assert WS_EXTENSIONS_OFFER == "permessage-deflate; client_max_window_bits"


@pytest.mark.parametrize(("answer", "want"), [
    ("", ""),
    ("permessage-deflate", "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"),
    ("Permessage-Deflate; client_max_window_bits=10; server_no_context_takeover",
     "permessage-deflate; client_max_window_bits=10; server_max_window_bits=15; server_no_context_takeover"),
    ('permessage-deflate; server_max_window_bits="12"; client_no_context_takeover',
     "permessage-deflate; client_max_window_bits=15; server_max_window_bits=12; client_no_context_takeover"),
])
def test_accepted_answers_give_the_negotiated_parameters(answer: str, want: str) -> None:
    assert extension_name(accepted_extension(answer)) == want


@pytest.mark.parametrize("answer", [
    "x-webkit-deflate-frame",
    "permessage-deflate, permessage-deflate",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_max_window_bits",  # an answer must give the value
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; mystery",
])
def test_answers_chromium_refuses_are_upgrade_failed(answer: str) -> None:
    with pytest.raises(TransportError) as ei:
        accepted_extension(answer)
    assert ei.value.kind == "upgrade_failed"


def _pair(answer_params: str = "") -> tuple[FrameProtocol, BoundedDeflate]:
    """wsproto's server side accepting Chrome's offer, and our client side of its answer."""
    server_ext = PerMessageDeflate()
    accepted = server_ext.accept(WS_EXTENSIONS_OFFER + answer_params)
    assert isinstance(accepted, str)
    client = accepted_extension("permessage-deflate" + (f"; {accepted}" if accepted else ""))
    assert client is not None
    return FrameProtocol(client=False, extensions=[server_ext]), client


def test_compressed_messages_from_the_server_are_inflated_in_any_split() -> None:
    text = "42[\"chat\",\"" + "hello deflate " * 300 + "\"]"
    blob = bytes(range(256)) * 40
    for step in (1, 7, 1 << 20):
        server, client = _pair()
        stream = (server.send_data(text, fin=True) + server.send_data(text, fin=True)  # context takeover
                  + server.send_data(blob[:5000], fin=False) + server.send_data(blob[5000:], fin=True)
                  + server.send_data("3", fin=True))
        assert stream[0] & 0x40 and len(stream) < len(text)  # RSV1 set, and really compressed
        chunks = [stream[i:i + step] for i in range(0, len(stream), step)]
        ws = WebSocket(HttpConnection(FakeSock(chunks)), None, client)  # type: ignore[arg-type]
        assert [ws.recv() for _ in range(4)] == [text, text, blob, "3"]


def test_an_uncompressed_message_passes_when_deflate_was_negotiated() -> None:
    """The Node `ws` server compresses only messages of 1 KiB or more (socket.io's threshold)."""
    _, client = _pair()
    ws = WebSocket(HttpConnection(FakeSock([bytes([0x81, 2]) + b"3p"])), None, client)  # type: ignore[arg-type]
    assert ws.recv() == "3p"


def test_client_messages_are_compressed_and_wsproto_reads_them() -> None:
    server, client = _pair("")
    sock = FakeSock([])
    ws = WebSocket(HttpConnection(sock), None, client)  # type: ignore[arg-type]
    msgs: list[str | bytes] = ["2probe", "42[\"echo\",\"" + "x" * 3000 + "\"]", b"\x00\x01" * 100, "5"]
    ws.send(msgs[0])
    ws.queue(msgs[1])
    ws.queue(msgs[2])
    ws.flush()
    ws.send(msgs[3])
    assert sock.sent[0] == 0xC1 and len(sock.sent) < 3000  # RSV1 + text, compressed
    server.receive_bytes(sock.sent)
    got = []
    for frame in server.received_frames():
        assert frame.message_finished
        got.append(frame.payload)
    assert got == msgs


def test_context_takeover_off_is_honoured_both_ways() -> None:
    server, client = _pair("; server_no_context_takeover; client_no_context_takeover")
    assert client.client_no_context_takeover and client.server_no_context_takeover
    sock = FakeSock([server.send_data("a" * 500, fin=True) + server.send_data("a" * 500, fin=True)])
    ws = WebSocket(HttpConnection(sock), None, client)  # type: ignore[arg-type]
    assert ws.recv() == ws.recv() == "a" * 500
    ws.send("b" * 500)
    ws.send("b" * 500)
    server.receive_bytes(sock.sent)
    assert [f.payload for f in server.received_frames()] == ["b" * 500, "b" * 500]


def test_a_decompression_bomb_ends_in_the_named_limit() -> None:
    _, client = _pair()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = comp.compress(b"\0" * (MAX_MESSAGE_BYTES + 1024)) + comp.flush(zlib.Z_SYNC_FLUSH)[:-4]
    assert len(body) < 65536  # a small frame that would inflate past the limit
    frame = bytes([0xC2, 126]) + len(body).to_bytes(2, "big") + body
    sock = FakeSock([frame])
    ws = WebSocket(HttpConnection(sock), None, client)  # type: ignore[arg-type]
    with pytest.raises(TransportError, match="MAX_MESSAGE_BYTES") as ei:
        ws.recv()
    assert ei.value.kind == "protocol_error" and sock.closed


@pytest.mark.parametrize(("raw", "why"), [
    (bytes([0xC0 | 0x9, 0]), "opcode 9"),  # RSV1 on a control frame
    (bytes([0x41, 1]) + b"a" + bytes([0xC0, 1]) + b"b", "opcode 0"),  # RSV1 on a continuation
    (bytes([0xA1, 1]) + b"a", "0x20"),  # RSV2: deflate does not use it
    (bytes([0xC1, 3]) + b"\xff\xff\xff", "bad compressed data"),
])
def test_bad_deflate_frames_are_protocol_errors(raw: bytes, why: str) -> None:
    _, client = _pair()
    ws = WebSocket(HttpConnection(FakeSock([raw])), None, client)  # type: ignore[arg-type]
    with pytest.raises(TransportError, match=why) as ei:
        ws.recv()
    assert ei.value.kind == "protocol_error"



def test_without_the_offer_an_extension_in_the_101_is_refused() -> None:
    """--sio-ws-deflate false: no offer, and a server that answers with one anyway is refused."""

    head = request_head(Endpoint.from_url("http://h:1"), "/x", b"k" * 24, deflate=False).decode()
    assert "sec-websocket-extensions" not in head.lower()
    key = b"k" * 24
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    headers = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-accept": accept,
               "sec-websocket-extensions": "permessage-deflate"}
    resp = HttpResponse(101, "Switching Protocols", headers, b"")
    assert _check_101(resp, key, offered=True) is not None
    with pytest.raises(TransportError) as ei:
        _check_101(resp, key, offered=False)
    assert ei.value.kind == "upgrade_failed"


def test_the_event_row_keeps_the_negotiated_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ok upgrade_probe row carries the extension (and a node_switch its "n1->n2"); other ok
    rows keep no error text."""
    import argparse

    from locust.env import Environment
    from locust.event import Events

    from locustfiles.sio import SocketIOUser
    from locustfiles.sio import user as user_mod

    class Person(SocketIOUser):
        abstract = False

    rows: list[dict] = []
    monkeypatch.setattr(user_mod.eventlog, "record", lambda _env, row: rows.append(row))
    env = Environment(events=Events())
    env.parsed_options = argparse.Namespace(sio_timeout=5.0)
    u = Person(env)
    ext = "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"
    u.log_step("upgrade_probe", "upgrade_probe", 1.0, True, "", ext, transport="websocket")
    u.log_step("node_switch", "node_switch", None, True, "", "n1->n2")
    u.log_step("ack", "ack:echo", 1.0, True, "", "not a detail")
    assert [r["error"] for r in rows] == [ext, "n1->n2", ""]
