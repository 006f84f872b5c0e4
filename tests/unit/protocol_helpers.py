"""Helpers the sans-IO protocol tests share: one definition each (issue 10).

The protocol tests (test_protocol_eio3.py, test_protocol_eio4.py, test_protocol_errors.py,
test_protocol_total.py, test_server_values.py) drive `ClientProtocol` without sockets and pick
actions out of what each input returns. The wire samples are the ones docs/protocol.md cites.
"""

from __future__ import annotations

import random

from locustfiles.sio.protocol.actions import Closed, HttpRequest, StepResult
from locustfiles.sio.protocol.client import ClientProtocol

# An EIO4 open packet as a socket.io 4.x server sends it (docs/protocol.md §1).
OPEN = (b'0{"sid":"S1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,'
        b'"maxPayload":1000000}')

# The EIO3 handshake answer of docs/protocol.md §2, verbatim (socket.io-protocol v4 sample):
# length-prefixed open packet, then the server's own CONNECT for the default namespace.
OPEN3 = (b'96:0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,'
         b'"pingTimeout":5000}2:40')
SID3 = "lv_VI97HAXpY6yYWAAAC"


def of(actions, cls):
    """The actions of type `cls`, in order."""
    return [a for a in actions if isinstance(a, cls)]


def step(actions, name):
    """The one StepResult named `name` (fails when there are none or several)."""
    found = [a for a in actions if isinstance(a, StepResult) and a.step == name]
    assert len(found) == 1, (name, actions)
    return found[0]


def last_closed(actions):
    """The one Closed action (fails when there are none or several)."""
    closed = of(actions, Closed)
    assert len(closed) == 1, actions
    return closed[0]


def opened(transports=("polling", "websocket"), **kw):
    """A client whose handshake was answered by node n1: returns (client, actions after open)."""
    c = ClientProtocol(transports=transports, rng=random.Random(7), **kw)
    (hs,) = c.start(0.0)
    return c, c.http_response(hs.rid, 200, OPEN, 0.010, node="n1")


def connected_polling(**kw):
    """A polling-only client connected to "/" on node n1: returns (client, its parked GET)."""
    c, a = opened(transports=("polling",), **kw)
    (post,) = of(a, HttpRequest)[:1]
    poll = of(a, HttpRequest)[1]
    assert c.http_response(post.rid, 200, b"ok", 0.015, node="n1") == []
    a = c.http_response(poll.rid, 200, b'40{"sid":"X1"}', 0.020, node="n1")
    (poll,) = of(a, HttpRequest)
    return c, poll
