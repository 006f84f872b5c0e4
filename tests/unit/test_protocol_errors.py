"""A lying or broken server: every malformed input becomes a classified failure, never an
exception, and the machine never has two GETs or two POSTs in flight."""

from __future__ import annotations

import random

import pytest

from locustfiles.sio.protocol.actions import (
    CancelPolling,
    Closed,
    CloseWebSocket,
    HttpRequest,
    OpenWebSocket,
    StepResult,
    WsSend,
)
from locustfiles.sio.protocol.client import ClientProtocol
from tests.unit.protocol_helpers import OPEN, connected_polling, last_closed, of

ACTION_TYPES = (HttpRequest, OpenWebSocket, WsSend, CloseWebSocket, CancelPolling, StepResult, Closed)


@pytest.mark.parametrize("body", [
    b"", b"garbage", b"0", b"0{", b"0[]", b'0"x"', b"4hello", b"\xff\xfe", b"\x1e",
    b'0{"sid":1,"pingInterval":1,"pingTimeout":1}',
    b'0{"sid":"","pingInterval":1,"pingTimeout":1}',
    # "a&b" is no longer refused: it is percent-encoded as a browser does (test_server_values.py);
    # a lone surrogate is what no browser can send.
    b'0{"sid":"a\\ud800b","pingInterval":1,"pingTimeout":1}',
    b'0{"sid":"a","pingInterval":"25000","pingTimeout":1}',
    b'0{"sid":"a","pingInterval":true,"pingTimeout":1}',
    b'0{"sid":"a","pingInterval":25000}',
    b'0{"sid":"a","pingInterval":1,"pingTimeout":-5}',
    b'0{"sid":"a","pingInterval":1,"pingTimeout":1,"upgrades":"websocket"}',
    b'0{"sid":"a","pingInterval":1,"pingTimeout":1,"maxPayload":0}',
])
def test_bad_handshake_answers(body):
    c = ClientProtocol()
    (hs,) = c.start(0.0)
    a = c.http_response(hs.rid, 200, body, 0.01)
    hs_step = [s for s in of(a, StepResult) if s.step == "handshake"]
    assert hs_step and hs_step[0].error_kind == "protocol_error" and not hs_step[0].ok
    assert last_closed(a).error_kind == "protocol_error"
    assert c.state == "closed"


@pytest.mark.parametrize("body", [
    b"", b"9", b"x", b"5", b"3", b"\x1e", b"4", b"4x", b"42", b"42[", b"42{}", b"42[1]", b"42[]",
    b'43["a"]',  # ack without id
    b'430{"a":1}',  # ack data not a list
    b"4\xff", b"b!!!", b"bAQID",  # binary without a pending packet
    b'451-["x",{"_placeholder":true,"num":0}]\x1e42["y"]',  # text while an attachment is due
    b'451-["x",{"_placeholder":true,"num":3}]\x1ebAQID',  # placeholder index out of range
    b'451-["x",{"_placeholder":true,"num":"a"}]\x1ebAQID',
    b'45999-["x"]',  # absurd attachment count
    b'421-["x"]',  # attachments on a plain EVENT
    b"47", b'4"str"', b"4true", b"4{}",
    OPEN.replace(b'"S1"', b'"OTHER"'),  # the server answers with another session
])
def test_bad_poll_answers(body):
    c, poll = connected_polling()
    a = c.http_response(poll.rid, 200, body, 1.0)
    closed = last_closed(a)
    assert closed.error_kind == "protocol_error", a
    assert [s.error_kind for s in of(a, StepResult) if s.step == "disconnect"] == ["protocol_error"]


@pytest.mark.parametrize("body", [b'40{"nosid":1}', b"40", b'40"x"'])
def test_connect_answer_without_sid(body):
    # a Socket.IO v2 server answering a v3+ client (socket.io-client raises connect_error)
    c = ClientProtocol(transports=("polling",))
    (hs,) = c.start(0.0)
    post, poll = of(c.http_response(hs.rid, 200, OPEN, 0.01), HttpRequest)
    a = c.http_response(poll.rid, 200, body, 0.02)
    assert [s.error_kind for s in of(a, StepResult)] == ["protocol_error"]
    assert of(a, StepResult)[0].step == "connect" and last_closed(a).error_kind == "protocol_error"


def test_bad_post_answer_and_unknown_rids():
    c, poll = connected_polling()
    _, a = c.emit("e", now=1.0)
    (post,) = of(a, HttpRequest)
    assert c.http_response(9999, 200, b"ok", 1.0) == []  # a request this session never made
    assert c.http_failed(9999, "timeout", "x", 1.0) == []
    a = c.http_response(post.rid, 200, b"nope", 1.1)
    assert last_closed(a).error_kind == "protocol_error"


@pytest.mark.parametrize("kind", ["connection_reset", "timeout", "connection_refused"])
def test_io_failures_of_polls(kind):
    c, poll = connected_polling()
    a = c.http_failed(poll.rid, kind, "boom", 1.0)
    s = [x for x in of(a, StepResult) if x.step == "poll"][0]
    assert (s.error_kind, s.name) == (kind, "poll")
    assert last_closed(a) == Closed("transport error", kind, "boom")


@pytest.mark.parametrize("frame", ['40{"sid":"X"}', "2", "6", "1", b"\x01"])
def test_websocket_only_packets_before_open_are_protocol_errors(frame):
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    c.ws_opened(0.0)
    a = c.ws_message(frame, 0.01)
    assert [s.step for s in of(a, StepResult)] == ["handshake", "connect"]
    assert last_closed(a).error_kind == "protocol_error"


def test_websocket_closed_mid_session():
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    c.ws_opened(0.0)
    c.ws_message(OPEN.decode(), 0.01)
    c.ws_message('40{"sid":"X"}', 0.02)
    a = c.ws_closed(1.0, "EOF", error_kind="connection_reset")
    assert last_closed(a) == Closed("transport close", "connection_reset", "EOF")
    # closed before the open packet: a failed handshake
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    c.ws_opened(0.0)
    a = c.ws_closed(0.5)
    assert [s.error_kind for s in of(a, StepResult)] == ["transport_closed", "transport_closed"]
    # a websocket refused outright
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    a = c.ws_failed(403, b"", "", "", 0.1)
    assert of(a, StepResult)[0].error_kind == "handshake_rejected"


# -- fuzz -------------------------------------------------------------------------------------
# A mostly-honest server: it answers each request with a plausible packet for its purpose and
# sometimes with a mutated or random one, so the machine is driven deep into every state
# (connected, probing, upgraded, closing) before the garbage arrives.
_OPEN3 = (b'96:0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,'
          b'"pingTimeout":5000}2:40')
_POLL4 = [b'40{"sid":"X"}', b"2", b"6", b'42["e",1]', b'430["r"]', b'431["r"]', b"41", b"1",
          b'451-["b",{"_placeholder":true,"num":0}]\x1ebAQID', b'2\x1e42["a"]\x1e425["q"]']
_POLL3 = [b"1:3", b"1:6", b'9:42["e",1]', b'8:430["r"]', b"2:41", b"1:1", "8:42[\"😀\"]".encode()]
_FRAMES = ["3probe", "2", "3", "6", '40{"sid":"X"}', '42["e"]', '430["r"]', '451-["b",{"_placeholder":true,"num":0}]',
           b"\x01\x02", b"\x04\x01", "41", "1"]
_ERRORS = [b'{"code":1,"message":"Session ID unknown"}', b'"Invalid session S1"', b"", b"<html>"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    r = rng.random()
    if r < 0.3 or not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
    i = rng.randrange(len(data))
    if r < 0.6:
        return data[:i]  # truncated
    return data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]


def _answer(rng: random.Random, eio: int, req: HttpRequest, state: str) -> tuple[int, bytes]:
    if rng.random() < 0.04:
        return rng.choice((400, 403, 500)), rng.choice(_ERRORS)
    if req.purpose == "handshake":
        body = OPEN if eio == 4 else _OPEN3
    elif req.purpose == "post":
        body = b"ok"
    elif state == "connecting" and rng.random() < 0.7:
        body = b'40{"sid":"X"}' if eio == 4 else b"2:40"
    else:
        body = rng.choice(_POLL4 if eio == 4 else _POLL3)
    return 200, (_mutate(rng, body) if rng.random() < 0.08 else body)


def _frame(rng: random.Random, eio: int, first: str, state: str) -> str | bytes:
    if first == "probe" and rng.random() < 0.9:
        data: str | bytes = "3probe"
    elif state == "connecting" and first != "websocket" and rng.random() < 0.7:
        data = '40{"sid":"X"}' if eio == 4 else "40"
    elif first == "websocket":
        data: str | bytes = OPEN.decode() if eio == 4 else OPEN.decode().replace(',"maxPayload":1000000', "")
    else:
        data = rng.choice(_FRAMES)
    if rng.random() < 0.08:
        raw = _mutate(rng, data.encode() if isinstance(data, str) else data)
        return raw if isinstance(data, bytes) else raw.decode("utf-8", "replace")
    return data


@pytest.mark.parametrize("seed", range(150))
def test_fuzz_no_exception_and_flow_control_invariant(seed):
    rng = random.Random(seed)
    eio = rng.choice((3, 4))
    c = ClientProtocol(eio=eio, rng=rng, ack_timeout=rng.choice((0.5, 10.0)),
                       transports=rng.choice([("polling", "websocket"), ("websocket",), ("polling",)]))
    now = 0.0
    pending: dict[int, HttpRequest] = {}
    ws_state = ""
    ws_first = ""
    closed = 0
    acts = c.start(now)
    for _ in range(200):
        for a in acts:
            assert isinstance(a, ACTION_TYPES) or type(a).__name__ in (
                "Connected", "EventReceived", "AckReceived", "AckFailed"), a
            if isinstance(a, HttpRequest):
                pending[a.rid] = a
            elif isinstance(a, OpenWebSocket):
                ws_state, ws_first = "opening", a.purpose
            elif isinstance(a, CloseWebSocket):
                ws_state = ""
            elif isinstance(a, CancelPolling):
                pending.clear()
            elif isinstance(a, Closed):
                closed += 1
        gets = [r for r in pending.values() if r.method == "GET"]
        posts = [r for r in pending.values() if r.method == "POST"]
        assert len(gets) <= 1 and len(posts) <= 1, pending
        if c.state == "closed":
            break
        now += rng.choice((0.001, 0.01, 0.3, 6.0))
        choice = rng.randrange(12)
        if choice <= 4 and pending:
            rid = rng.choice(list(pending))
            status, body = _answer(rng, eio, pending.pop(rid), c.state)
            ctype = "application/octet-stream" if body[:1] in (b"\x00", b"\x01") else ""
            acts = c.http_response(rid, status, body, now, node=rng.choice(("n1",) * 8 + ("n2", "")),
                                   content_type=ctype)
        elif choice == 5 and pending and rng.random() < 0.2:
            rid = rng.choice(list(pending))
            del pending[rid]
            acts = c.http_failed(rid, rng.choice(("timeout", "connection_reset")), "x", now)
        elif choice <= 7 and ws_state:
            if ws_state == "opening":
                if rng.random() < 0.1:
                    ws_state = ""
                    acts = c.ws_failed(rng.choice((400, 403, None)), rng.choice(_ERRORS), "connection_refused", "",
                                       now)
                else:
                    ws_state = "open"
                    acts = c.ws_opened(now, node="n1")
            else:
                acts = c.ws_message(_frame(rng, eio, ws_first, c.state), now)
                ws_first = ""
        elif choice == 8:
            acts = c.emit("e", b"\x01" if rng.random() < 0.3 else "x", ack=rng.random() < 0.5, now=now)[1]
        elif choice == 9 and ws_state and rng.random() < 0.05:
            ws_state = ""
            acts = c.ws_closed(now)
        elif choice == 10 and rng.random() < 0.03:
            acts = c.disconnect(now)
        else:
            acts = c.tick(now)
    assert closed <= 1
    if c.state == "closed":
        assert c.next_deadline() is None
