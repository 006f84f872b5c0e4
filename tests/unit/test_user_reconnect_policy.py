"""Which closes make SocketIOUser reconnect on its own: socket.io-client's rules (docs/protocol.md §4.2).

No sockets: the user's close handler is fed the Closed action the core would emit, and the test
looks at whether a reconnect greenlet was started.
"""

from __future__ import annotations

import argparse

import pytest
from locust.env import Environment
from locust.event import Events

from locustfiles.sio.protocol.actions import Closed
from locustfiles.sio.user import SocketIOUser


class _User(SocketIOUser):
    abstract = False


def _user() -> _User:
    env = Environment(events=Events(), host="http://127.0.0.1:9")
    env.parsed_options = argparse.Namespace(sio_reconnect="true")
    u = _User(env)
    u._want_connected = True  # as after connect()
    return u


@pytest.mark.parametrize("closed", [
    Closed("connect error", "namespace_rejected", "CONNECT refused: Not authorized"),
    Closed("io server disconnect", "transport_closed", "server disconnected the namespace"),
])
def test_no_auto_reconnect_after_server_disconnect_or_refusal(closed: Closed) -> None:
    u = _user()
    u._on_closed(closed)
    assert u._reconnector is None
    assert not u._want_connected  # inactive until the app calls connect() again


def test_no_auto_reconnect_after_a_clean_client_disconnect() -> None:
    u = _user()
    u._on_closed(Closed("io client disconnect", "", ""))
    assert u._reconnector is None


@pytest.mark.parametrize("closed", [
    Closed("transport close", "transport_closed", "websocket closed"),
    Closed("transport error", "connection_reset", "reset"),
    Closed("ping timeout", "timeout", "no ping"),
    Closed("connect error", "connection_refused", "refused"),  # the Manager retries a failed open
])
def test_auto_reconnect_after_a_lost_transport(closed: Closed) -> None:
    u = _user()
    u._on_closed(closed)
    try:
        assert u._reconnector is not None and not u._reconnector.dead
        assert u._want_connected
    finally:
        u._want_connected = False
        u._reconnector.kill(block=True)
