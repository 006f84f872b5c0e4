"""Every input of ClientProtocol returns a list of actions in every reachable state.

Why: the driver feeds whatever an input returns straight into its action loop
(`Session._feed(actions)`), so one input that returns None in one corner state (a failed
parked GET while closing did) is a TypeError in a poll greenlet, not a classified failure.
Each case builds a fresh machine in the named state and calls one input with plausible or
garbage arguments.
"""

from __future__ import annotations

import random
from collections.abc import Callable

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
from tests.unit.protocol_helpers import OPEN, OPEN3, of

ACTIONS = (AckFailed, AckReceived, CancelPolling, Closed, CloseWebSocket, Connected, EventReceived, HttpRequest,
           OpenWebSocket, StepResult, WsSend)


# -- machines in each state ------------------------------------------------------------------------
def new():
    return ClientProtocol(rng=random.Random(1))


def handshaking():
    c = new()
    c.start(0.0)
    return c


def handshaking_ws_only():
    c = ClientProtocol(transports=("websocket",), rng=random.Random(1))
    c.start(0.0)
    return c


def connecting():
    """Open packet seen, CONNECT POST, probe and long poll in flight."""
    c = handshaking()
    c.http_response(1, 200, OPEN, 0.01, node="n1")
    assert c.state == "connecting"
    return c


def _connected(transports):
    c = ClientProtocol(transports=transports, rng=random.Random(1))
    (hs,) = c.start(0.0)
    a = c.http_response(hs.rid, 200, OPEN, 0.01, node="n1")
    post, poll = of(a, HttpRequest)
    c.http_response(post.rid, 200, b"ok", 0.02, node="n1")
    c.http_response(poll.rid, 200, b'40{"sid":"X1"}', 0.03, node="n1")
    assert c.state == "connected"
    return c


def open_polling():
    """Connected on polling, never upgrading: a parked GET in flight."""
    return _connected(("polling",))


def open_polling_with_post():
    c = open_polling()
    c.emit("e", ack=True, now=0.5)  # a POST in flight next to the parked GET
    return c


def upgrading_probing():
    """Connected on polling, probe WebSocket open, "2probe" sent."""
    c = _connected(("polling", "websocket"))
    assert c.ws_opened(0.04, node="n1") == [WsSend("2probe")]
    return c


def upgrading_pausing():
    """Probe answered; polling paused, waiting for the parked GET to come back."""
    c = upgrading_probing()
    c.ws_message("3probe", 0.05)
    assert c.transport == "polling" and c._get_rid is not None
    return c


def upgraded():
    c = upgrading_pausing()
    c.http_response(c._get_rid, 200, b"6", 0.06)  # the parked GET released by the noop
    assert c.transport == "websocket"
    return c


def upgraded_ws_only():
    c = handshaking_ws_only()
    c.ws_opened(0.01, node="n1")
    c.ws_message(OPEN.decode(), 0.02)
    c.ws_message('40{"sid":"X1"}', 0.03)
    assert c.state == "connected" and c.transport == "websocket"
    return c


def closing():
    """Client disconnect on polling: close POST and parked GET in flight."""
    c = open_polling()
    c.disconnect(1.0)
    assert c.state == "closing"
    return c


def closing_during_probe():
    c = upgrading_probing()
    c.disconnect(1.0)
    assert c.state == "closing"
    return c


def closed():
    c = open_polling()
    c.http_failed(c._get_rid, "connection_reset", "reset", 1.0)
    assert c.state == "closed"
    return c


def closed_ws():
    c = upgraded()
    c.disconnect(1.0)
    assert c.state == "closed"
    return c


def eio3_connected():
    c = ClientProtocol(eio=3, rng=random.Random(1))
    (hs,) = c.start(0.0)
    c.http_response(hs.rid, 200, OPEN3, 0.01, content_type="text/plain; charset=UTF-8")
    assert c.state == "connected"
    return c


def eio3_closing():
    c = eio3_connected()
    c.disconnect(1.0)
    return c


STATES: dict[str, Callable[[], ClientProtocol]] = {f.__name__: f for f in (
    new, handshaking, handshaking_ws_only, connecting, open_polling, open_polling_with_post, upgrading_probing,
    upgrading_pausing, upgraded, upgraded_ws_only, closing, closing_during_probe, closed, closed_ws,
    eio3_connected, eio3_closing,
)}


# -- inputs, plausible and garbage ---------------------------------------------------------------
RIDS = range(0, 10)  # covers every rid these small scenarios issue, and some never issued
BODIES = (b"ok", b"6", b"1", b"41", b'40{"sid":"X"}', b"3probe", OPEN, b"", b"\xff\xfe garbage", b"9:40/x,")
STATUSES = (200, 400, 500)
WS_FRAMES = ("3probe", "2", "3", "6", "1", "40", '40{"sid":"Y"}', "41", '42["ev",1]', '430["a"]', "44x",
             "", "garbage", OPEN.decode(), b"", b"\x04abc", b"\x00\x01", 17, None)


def _inputs():
    """(label, call) for every input method; `call(c, now)` returns what the method returns."""
    yield "start", lambda c, t: c.start(t)
    for rid in RIDS:
        for status in STATUSES:
            for body in BODIES:
                yield (f"http_response({rid},{status},{body[:12]!r})",
                       lambda c, t, r=rid, s=status, b=body: c.http_response(r, s, b, t, node="n2",
                                                                           content_type="text/plain"))
        for kind in ("timeout", "connection_reset", "", "nonsense"):
            yield f"http_failed({rid},{kind})", lambda c, t, r=rid, k=kind: c.http_failed(r, k, "boom", t)
    yield "ws_opened", lambda c, t: c.ws_opened(t, node="n2")
    for status, body in ((None, b""), (400, b"Session ID unknown"), (403, b""), (502, b"\xff")):
        yield (f"ws_failed({status})",
               lambda c, t, s=status, b=body: c.ws_failed(s, b, "connection_refused", "x", t, node="n3"))
    for frame in WS_FRAMES:
        yield f"ws_message({frame!r:.20})", lambda c, t, f=frame: c.ws_message(f, t)
    for kind in ("transport_closed", "connection_reset", ""):
        yield f"ws_closed({kind})", lambda c, t, k=kind: c.ws_closed(t, "gone", error_kind=k)
    for later in (0.0, 5.0, 1e6):
        yield f"tick(+{later:g})", lambda c, t, d=later: c.tick(t + d)
    yield "disconnect", lambda c, t: c.disconnect(t)
    yield "send_ack", lambda c, t: c.send_ack(0, "x", now=t)
    yield "emit", lambda c, t: c.emit("e", {"a": 1}, now=t)[1]
    yield "emit_ack", lambda c, t: c.emit("e", ack=True, now=t)[1]


INPUTS = list(_inputs())


@pytest.mark.parametrize("state", list(STATES))
def test_every_input_returns_a_list_of_actions(state):
    bad = []
    for label, call in INPUTS:
        c = STATES[state]()
        try:
            out = call(c, 2.0)
        except Exception as e:  # noqa: BLE001 - an input that raises is a finding too
            bad.append(f"{label}: raised {type(e).__name__}: {e}")
            continue
        if not isinstance(out, list):
            bad.append(f"{label}: returned {out!r}")
        elif not all(isinstance(a, ACTIONS) for a in out):
            bad.append(f"{label}: non-action in {out!r}")
        # the machine must stay usable: a second input after the first also returns a list
        elif not isinstance(c.tick(1e7), list):
            bad.append(f"{label}: tick afterwards did not return a list")
    assert not bad, f"{state}: " + "; ".join(bad[:10]) + f" ({len(bad)} in all)"


def test_failed_parked_get_while_closing_is_quiet_then_close_completes():
    """The reviewer's case: the parked GET fails after our close POST went out."""
    c = open_polling()
    poll_rid = c._get_rid
    (post,) = of(c.disconnect(1.0), HttpRequest)
    assert c.http_failed(poll_rid, "connection_reset", "reset by peer", 1.01) == []
    a = c.http_response(post.rid, 200, b"ok", 1.1)
    assert [s.ok for s in of(a, StepResult)] == [True]
    assert a[-1] == Closed("io client disconnect", "")
