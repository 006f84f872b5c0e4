"""EIO4 / Socket.IO v5 client core, driven with the exact wire strings of socket.io 4.x."""

from __future__ import annotations

import json
import random
import re

import pytest

from locustfiles.sio.protocol.actions import (
    AckFailed,
    AckReceived,
    CancelPolling,
    Closed,
    CloseWebSocket,
    Connected,
    EventReceived,
    HttpRequest,
    OpenWebSocket,
    StepResult,
    WsSend,
)
from locustfiles.sio.protocol.client import ClientProtocol
from tests.unit.protocol_helpers import OPEN, connected_polling, of, opened, step


def test_full_polling_to_websocket_sequence():
    c = ClientProtocol(rng=random.Random(1))
    a = c.start(0.0)
    assert c.state == "handshaking" and c.transport == "polling"
    (hs,) = a
    assert (hs.method, hs.purpose, hs.body) == ("GET", "handshake", None)
    assert re.fullmatch(r"EIO=4&transport=polling&t=[0-9a-z]{7}", hs.query)

    a = c.http_response(hs.rid, 200, OPEN, 0.010, node="n1")
    # socket.io-client on engine open: CONNECT POST, then the probe, then the long poll.
    assert [type(x).__name__ for x in a] == ["StepResult", "HttpRequest", "OpenWebSocket", "HttpRequest"]
    hs_step, post, probe, poll = a
    assert (hs_step.step, hs_step.ok, hs_step.latency_ms, hs_step.node) == ("handshake", True, 10.0, "n1")
    assert (post.method, post.body, post.content_type, post.purpose) == (
        "POST", b"40", "text/plain;charset=UTF-8", "post")
    assert re.fullmatch(r"EIO=4&transport=polling&sid=S1&t=[0-9a-z]{7}", post.query)
    assert probe == OpenWebSocket("EIO=4&transport=websocket&sid=S1", "probe")
    assert poll.method == "GET" and poll.purpose == "poll" and "&sid=S1&" in poll.query
    assert c.eio_sid == "S1" and c.state == "connecting"

    assert c.http_response(post.rid, 200, b"ok", 0.012, node="n1") == []
    assert c.ws_opened(0.013, node="n1") == [WsSend("2probe")]
    a = c.http_response(poll.rid, 200, b'40{"sid":"X1"}', 0.030, node="n1")
    conn = step(a, "connect")
    assert (conn.ok, conn.latency_ms, conn.transport) == (True, 30.0, "polling")
    assert Connected("/", "X1") in a
    (poll2,) = of(a, HttpRequest)
    assert poll2.purpose == "poll"
    assert c.sio_sid == "X1" and c.state == "connected"

    a = c.ws_message("3probe", 0.040)
    assert step(a, "upgrade_probe").latency_ms == 30.0  # from OpenWebSocket (t=0.010)
    assert of(a, WsSend) == []  # "5" waits for the parked GET to come back
    a = c.http_response(poll2.rid, 200, b"6", 0.041, node="n1")
    assert a[0] == WsSend("5")
    assert step(a, "upgrade").ok
    assert of(a, HttpRequest) == []  # polling is paused for good
    assert c.transport == "websocket"

    ack_id, a = c.emit("echo", {"k": "v"}, ack=True, now=1.0)
    assert ack_id == 0 and a == [WsSend('420["echo",{"k":"v"}]')]
    a = c.ws_message('430[{"k":"v"}]', 1.0125)
    ack = step(a, "ack")
    assert (ack.ok, ack.latency_ms, ack.name, ack.ack_id, ack.transport) == (True, 12.5, "ack:echo", 0, "websocket")
    assert AckReceived("/", 0, [{"k": "v"}]) in a

    a = c.ws_message("2", 25.0)
    assert a[0] == WsSend("3") and step(a, "ping").ok

    a = c.disconnect(30.0)
    assert a[:2] == [WsSend("41"), StepResult("disconnect", True, None, "websocket", "n1", "", "", "disconnect")]
    assert CloseWebSocket() in a and a[-1] == Closed("io client disconnect", "")
    assert c.state == "closed" and c.next_deadline() is None
    assert c.ws_message("2", 31.0) == []  # input after Closed is ignored


def test_auth_and_custom_namespace_connect_packets():
    c, a = opened(auth={"token": "abc"})
    assert of(a, HttpRequest)[0].body == b'40{"token":"abc"}'
    c, a = opened(namespace="/admin", auth={"token": "abc"})
    post, poll = of(a, HttpRequest)
    assert post.body == b'40/admin,{"token":"abc"}'
    c.http_response(post.rid, 200, b"ok", 0.015, node="n1")
    a = c.http_response(poll.rid, 200, b'40/admin,{"sid":"A9"}', 0.02, node="n1")
    assert Connected("/admin", "A9") in a
    _, a = c.emit("hi", 1, now=0.03)
    assert of(a, HttpRequest)[0].body == b'42/admin,["hi",1]'


def test_payload_separators_and_batched_post():
    c, poll = connected_polling()
    a = c.http_response(poll.rid, 200, b'42["a",1]\x1e2\x1e42["b"]', 1.0, node="n1")
    assert of(a, EventReceived) == [EventReceived("/", "a", [1], None), EventReceived("/", "b", [], None)]
    posts = [r for r in of(a, HttpRequest) if r.method == "POST"]
    assert [p.body for p in posts] == [b"3"]  # the pong, POSTed
    # one POST in flight: later packets queue and leave together, joined by \x1e
    _, b1 = c.emit("x", now=1.1)
    _, b2 = c.emit("y", 2, now=1.2)
    assert of(b1, HttpRequest) == [] and of(b2, HttpRequest) == []
    a = c.http_response(posts[0].rid, 200, b"ok", 1.3, node="n1")
    (post,) = of(a, HttpRequest)
    assert post.body == b'42["x"]\x1e42["y",2]'


def test_binary_event_and_ack_with_attachments_over_polling():
    c, poll = connected_polling()
    body = b'452-["bin",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]\x1ebAQID\x1ebBAU='
    a = c.http_response(poll.rid, 200, body, 1.0, node="n1")
    assert of(a, EventReceived) == [EventReceived("/", "bin", [b"\x01\x02\x03", b"\x04\x05"], None)]
    (poll,) = [r for r in of(a, HttpRequest) if r.method == "GET"]
    ack_id, a = c.emit("up", b"\x01\x02", ack=True, now=1.1)
    (post,) = of(a, HttpRequest)
    assert post.body == b'451-0["up",{"_placeholder":true,"num":0}]\x1ebAQI='
    assert c.http_response(post.rid, 200, b"ok", 1.2) == []
    # the binary ack comes back in the next long poll
    a = c.http_response(poll.rid, 200, b'461-0[{"_placeholder":true,"num":0}]\x1ebCQk=', 1.3, node="n1")
    assert AckReceived("/", 0, [b"\t\t"]) in a and step(a, "ack").ok


def test_binary_over_websocket_is_raw_frames():
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    c.ws_opened(0.001)
    c.ws_message(OPEN.decode(), 0.002)
    c.ws_message('40{"sid":"X"}', 0.003)
    _, a = c.emit("b", b"\xff", now=0.004)
    assert of(a, WsSend) == [WsSend('451-["b",{"_placeholder":true,"num":0}]'), WsSend(b"\xff")]
    a = c.ws_message('451-["r",{"_placeholder":true,"num":0}]', 0.005)
    assert of(a, EventReceived) == []
    a = c.ws_message(b"\x00\x01", 0.006)
    assert a == [EventReceived("/", "r", [b"\x00\x01"], None)]


def test_server_event_with_ack_request_and_send_ack():
    c, poll = connected_polling()
    a = c.http_response(poll.rid, 200, b'425["ask",{"q":1}]', 1.0, node="n1")
    assert EventReceived("/", "ask", [{"q": 1}], 5) in a
    a = c.send_ack(5, "yes", now=1.1)
    assert of(a, HttpRequest)[0].body == b'435["yes"]'


def test_websocket_only_session():
    c = ClientProtocol(transports=("websocket",))
    a = c.start(0.0)
    assert a == [OpenWebSocket("EIO=4&transport=websocket", "websocket")]
    assert c.ws_opened(0.001, node="n2") == []
    a = c.ws_message(OPEN.decode(), 0.002)
    assert step(a, "handshake").transport == "websocket" and a[-1] == WsSend("40")
    assert of(a, OpenWebSocket) == [] and of(a, HttpRequest) == []
    a = c.ws_message('40{"sid":"W1"}', 0.004)
    assert step(a, "connect").latency_ms == 4.0 and Connected("/", "W1") in a
    assert step(a, "connect").node == "n2"


def test_polling_only_never_probes():
    c, a = opened(transports=("polling",))
    assert of(a, OpenWebSocket) == []
    assert [r.purpose for r in of(a, HttpRequest)] == ["post", "poll"]


def test_emits_before_connect_are_buffered_then_flushed():
    c = ClientProtocol(transports=("polling",))
    (hs,) = c.start(0.0)
    ack_id, a = c.emit("early", ack=True, now=0.001)
    assert ack_id == 0 and of(a, HttpRequest) == []
    a = c.http_response(hs.rid, 200, OPEN, 0.01)
    post, poll = of(a, HttpRequest)
    assert post.body == b"40"
    c.http_response(post.rid, 200, b"ok", 0.011)
    a = c.http_response(poll.rid, 200, b'40{"sid":"X"}', 0.02)
    assert [r.body for r in of(a, HttpRequest) if r.method == "POST"] == [b'420["early"]']


def test_heartbeat_on_polling_and_ping_timeout():
    c, poll = connected_polling()
    assert c.next_deadline() == pytest.approx(0.010 + 45.0)  # pingInterval + pingTimeout after open
    a = c.http_response(poll.rid, 200, b"2", 25.010, node="n1")
    assert step(a, "ping").ok
    (pong,) = [r for r in of(a, HttpRequest) if r.method == "POST"]
    assert pong.body == b"3"
    assert c.next_deadline() == pytest.approx(25.010 + 10.0)  # the pong POST's own timeout
    c.http_response(pong.rid, 200, b"ok", 25.02, node="n1")
    assert c.next_deadline() == pytest.approx(25.010 + 45.0)
    assert c.tick(70.0) == []
    a = c.tick(70.011)
    d = step(a, "disconnect")
    assert (d.ok, d.error_kind) == (False, "timeout")
    assert a[-1].reason == "ping timeout" and a[-1].error_kind == "timeout"
    assert CancelPolling() in a


def test_upgrade_failure_keeps_polling():
    c, a = opened()
    post, poll = of(a, HttpRequest)
    a = c.ws_failed(None, b"", "connection_refused", "refused", 0.02)
    s = step(a, "upgrade_probe")
    assert (s.ok, s.error_kind) == (False, "upgrade_failed")
    assert c.transport == "polling" and c.state == "connecting"
    c.http_response(post.rid, 200, b"ok", 0.03)
    a = c.http_response(poll.rid, 200, b'40{"sid":"X"}', 0.04)
    assert Connected("/", "X") in a and of(a, HttpRequest)[0].method == "GET"
    _, a = c.emit("still", now=0.05)
    assert of(a, HttpRequest)[0].body == b'42["still"]'


def test_wrong_probe_answer_closes_ws_and_stays_on_polling():
    c, a = opened()
    c.ws_opened(0.02)
    a = c.ws_message("3nope", 0.03)
    assert step(a, "upgrade_probe").error_kind == "upgrade_failed" and CloseWebSocket() in a
    assert c.state == "connecting" and c.transport == "polling"


@pytest.mark.parametrize("status,body,node", [
    (400, b"Session ID unknown", ""),  # Node engine.io abortUpgrade
    (400, b'"Invalid session S1"', "n1"),  # python-engineio
    (403, b"", "n2"),  # uvicorn refusing the websocket; another node than the session's
])
def test_probe_to_node_without_the_session_is_session_unknown(status, body, node):
    c, a = opened()
    a = c.ws_failed(status, body, "", "", 0.02, node=node)
    s = step(a, "upgrade_probe")
    assert (s.ok, s.error_kind) == (False, "session_unknown")
    assert c.state == "connecting"


@pytest.mark.parametrize("body", [b'{"code":1,"message":"Session ID unknown"}', b'"Invalid session S1"'])
def test_node_switch_then_session_unknown(body):
    c, a = opened(transports=("polling",))
    post, poll = of(a, HttpRequest)
    a = c.http_response(post.rid, 400, body, 0.02, node="n2")
    sw = step(a, "node_switch")
    assert (sw.node, sw.error, sw.ok) == ("n2", "n1->n2", True)
    p = step(a, "poll")
    assert (p.ok, p.error_kind, p.name, p.node) == (False, "session_unknown", "post:connect", "n2")  # the CONNECT POST
    conn = step(a, "connect")
    assert conn.error_kind == "session_unknown"
    assert a[-1] == Closed("transport error", "session_unknown", p.error)
    assert CancelPolling() in a


@pytest.mark.parametrize("status,kind", [(400, "handshake_rejected"), (403, "handshake_rejected"),
                                         (502, "http_502")])
def test_handshake_refused(status, kind):
    c = ClientProtocol()
    (hs,) = c.start(0.0)
    a = c.http_response(hs.rid, status, b'{"code":5,"message":"Unsupported protocol version"}', 0.01)
    assert step(a, "handshake").error_kind == kind
    assert step(a, "connect").error_kind == kind
    assert a[-1].reason == "connect error"
    assert of(a, StepResult)[0].error.startswith(f"HTTP {status}")


def test_handshake_io_failure_and_connect_timeout():
    c = ClientProtocol()
    (hs,) = c.start(0.0)
    a = c.http_failed(hs.rid, "connection_refused", "[Errno 111]", 0.001)
    assert step(a, "handshake").error_kind == "connection_refused" and a[-1].error_kind == "connection_refused"
    c = ClientProtocol(connect_timeout=2.0)
    (hs,) = c.start(0.0)
    c.http_response(hs.rid, 200, OPEN, 0.5)
    assert c.next_deadline() == 2.0
    a = c.tick(2.0)
    assert step(a, "connect").error_kind == "timeout" and a[-1].error_kind == "timeout"


def test_namespace_rejected_and_server_disconnect():
    c, a = opened(transports=("polling",))
    poll = of(a, HttpRequest)[1]
    a = c.http_response(poll.rid, 200, b'44{"message":"Not authorized"}', 0.02)
    assert step(a, "connect").error_kind == "namespace_rejected"
    assert "Not authorized" in a[-1].error
    c, poll = connected_polling()
    a = c.http_response(poll.rid, 200, b"41", 1.0)
    d = step(a, "disconnect")
    assert (d.ok, d.error_kind) == (False, "transport_closed")
    assert a[-1].reason == "io server disconnect"


def test_client_disconnect_on_polling_waits_for_close_post():
    c, poll = connected_polling()
    _, a = c.emit("e", ack=True, now=1.0)
    (post1,) = of(a, HttpRequest)
    a = c.disconnect(2.0)
    assert a == []  # waits for the POST in flight
    (post2,) = of(c.http_response(post1.rid, 200, b"ok", 2.1), HttpRequest)
    assert post2.body == b"41\x1e1"
    a = c.http_response(post2.rid, 200, b"ok", 2.5)
    d = step(a, "disconnect")
    assert (d.ok, d.latency_ms) == (True, 500.0)
    assert AckFailed("/", 0, "transport_closed", "socket has been disconnected") in a
    assert a[-1] == Closed("io client disconnect", "") and CancelPolling() in a
    ok, a = c.emit("late", now=3.0)
    assert ok is None and a[0].error_kind == "transport_closed"


@pytest.mark.parametrize("status,body", [(200, b"1"), (200, b"6"), (400, b'"Session is disconnected"')])
def test_parked_get_released_by_our_close_is_not_a_failure(status, body):
    c, poll = connected_polling()
    (post,) = of(c.disconnect(2.0), HttpRequest)
    assert post.body == b"41\x1e1"
    assert c.http_response(poll.rid, status, body, 2.05) == []
    a = c.http_response(post.rid, 200, b"ok", 2.1)
    assert [s.ok for s in of(a, StepResult)] == [True]
    assert a[-1] == Closed("io client disconnect", "")


def test_ack_timeout_and_late_ack_ignored():
    c, poll = connected_polling(ack_timeout=3.0)
    ack_id, a = c.emit("slow", ack=True, now=1.0)
    assert c.next_deadline() == 4.0
    a = c.tick(4.0)
    s = step(a, "ack")
    assert (s.ok, s.error_kind, s.ack_id) == (False, "timeout", ack_id)
    assert AckFailed("/", ack_id, "timeout", s.error) in a
    a = c.http_response(poll.rid, 200, f'43{ack_id}["late"]'.encode(), 5.0)
    assert of(a, StepResult) == [] and c.state == "connected"


def test_emit_step_names():
    c, poll = connected_polling()
    _, a = c.emit("broadcast", {"room": "r"}, now=1.0, step="broadcast_send", name="broadcast:broadcast")
    assert step(a, "broadcast_send").name == "broadcast:broadcast"
    aid, a = c.emit("join", "r", ack=True, now=1.0, step="join", name="join")
    a = c.http_response(poll.rid, 200, f'43{aid}[true]'.encode(), 1.5)
    assert step(a, "join").latency_ms == 500.0


def test_second_open_packet_with_another_sid_is_protocol_error():
    c, poll = connected_polling()
    other = OPEN.replace(b'"S1"', b'"S2"')
    a = c.http_response(poll.rid, 200, other, 1.0)
    assert a[-1].error_kind == "protocol_error" and "S2" in a[-1].error


def test_max_payload_splits_posts():
    c = ClientProtocol(transports=("polling",))
    (hs,) = c.start(0.0)
    small = json.loads(OPEN[1:])
    small["maxPayload"] = 20
    a = c.http_response(hs.rid, 200, b"0" + json.dumps(small).encode(), 0.01)
    post, poll = of(a, HttpRequest)
    c.http_response(poll.rid, 200, b'40{"sid":"X"}', 0.02)
    c.emit("aaaaaaaa", now=0.03)
    c.emit("bbbbbbbb", now=0.03)
    (p2,) = of(c.http_response(post.rid, 200, b"ok", 0.04), HttpRequest)
    assert p2.body == b'42["aaaaaaaa"]'


def _answer_posts(c, actions, now):
    """Answer every POST among `actions` with ok; returns the parked GET that remains."""
    gets = []
    for r in of(actions, HttpRequest):
        if r.method == "POST":
            gets += [g for g in of(c.http_response(r.rid, 200, b"ok", now), HttpRequest) if g.method == "GET"]
        else:
            gets.append(r)
    (get,) = gets
    return get


def test_pings_on_their_schedule_are_answered_for_a_long_session():
    c, poll = connected_polling()
    interval = 25.0  # OPEN's pingInterval
    for i in range(1, 200):
        now = 0.02 + i * interval
        a = c.http_response(poll.rid, 200, b"2", now)
        assert step(a, "ping").ok
        poll = _answer_posts(c, a, now)


def test_a_ping_flood_is_a_protocol_error_not_a_row_per_ping():
    # a server far ahead of its own pingInterval floods: each ping would be a row and an answer
    c, poll = connected_polling()
    a = c.http_response(poll.rid, 200, b"\x1e".join([b"2"] * 1000), 0.05)
    pings = [s for s in of(a, StepResult) if s.step == "ping"]
    assert len(pings) <= 5
    d = step(a, "disconnect")
    assert (d.ok, d.error_kind) == (False, "protocol_error") and "pingInterval" in d.error


def test_acks_given_up_by_our_own_close_are_not_failures():
    # a user stopped mid-call at the end of a run closes cleanly: its pending ack is released
    # (AckFailed) but is no failed row, since the server did nothing wrong
    c, _poll = connected_polling()
    _, a = c.emit("e", ack=True, now=1.0)
    (post1,) = of(a, HttpRequest)
    c.disconnect(2.0)
    (post2,) = of(c.http_response(post1.rid, 200, b"ok", 2.1), HttpRequest)
    a = c.http_response(post2.rid, 200, b"ok", 2.5)
    assert [(s.step, s.ok) for s in of(a, StepResult)] == [("disconnect", True)]
    assert of(a, AckFailed) == [AckFailed("/", 0, "transport_closed", "socket has been disconnected")]


def test_acks_pending_when_the_server_drops_the_session_are_failures():
    c, poll = connected_polling()
    _, a = c.emit("e", ack=True, now=1.0)
    a = c.http_response(poll.rid, 400, b'"Session is disconnected"', 1.5)
    failed = [s for s in of(a, StepResult) if not s.ok]
    assert {s.step for s in failed} >= {"ack", "disconnect"}


@pytest.mark.parametrize(("batch", "name"), [
    (["1"], "post:close"), (["3", "1"], "post:close"), (["40"], "post:connect"), (['42["chat",1]'], "post:emit"),
    (["3", '421["echo",1]'], "post:emit"), (["3"], "post:pong"), (["2"], "post:pong"), ([b"\x01\x02"], "post:emit"),
    (["6"], "post"), ([], "post")])
def test_a_post_is_named_by_what_it_carries(batch, name):
    from locustfiles.sio.protocol.client import POST_NAMES, post_name

    assert post_name(batch) == name and name in POST_NAMES


def test_a_failed_pong_post_is_named_so():
    c, a = opened(transports=("polling",))
    post, poll = of(a, HttpRequest)
    a = c.http_response(post.rid, 200, b"ok", 0.02, node="n1")  # the CONNECT POST
    a = c.http_response(poll.rid, 200, b'40{"sid":"X"}\x1e2', 0.03, node="n1")  # CONNECT ack + the server's ping
    pong = next(r for r in of(a, HttpRequest) if r.method == "POST")
    assert pong.body == b"3"
    a = c.http_response(pong.rid, 400, b'{"code":1,"message":"Session ID unknown"}', 25.0, node="n2")
    p = step(a, "poll")
    assert (p.ok, p.error_kind, p.name) == (False, "session_unknown", "post:pong")
