"""The sans-IO Engine.IO + Socket.IO client: socket.io-client's wire behaviour as a pure machine.

Why a state machine and not python-socketio's Client: a load generator must reproduce the
browser's exact request sequence (one parked GET + at most one POST, probe/upgrade, heartbeats),
time every step, and classify every failure -- and do it for thousands of users per process.
python-socketio's Client owns threads and sockets and hides all of that. Here the driver does
the I/O and passes `now` (monotonic seconds) in; the machine returns actions (actions.py).
The packet codecs of python-engineio / python-socketio are reused where they fit.

Contract with the driver:
- Call `start(now)` once. Perform the returned actions in order. Feed every I/O result back
  through `http_response` / `http_failed` / `ws_opened` / `ws_failed` / `ws_message` /
  `ws_closed`, and call `tick(now)` no later than `next_deadline()` (timeouts, EIO3 pings).
- No input ever raises: malformed or unexpected input becomes a classified failure
  (StepResult with error_kind, then Closed). After Closed, input is ignored.
- Exactly one "connect" StepResult per session (ok or not), unless the caller disconnects
  before the namespace is connected; a "disconnect" StepResult only follows a Connected.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from .actions import Action

# Public states, in order.
NEW, HANDSHAKING, CONNECTING, CONNECTED, CLOSING, CLOSED = (
    "new", "handshaking", "connecting", "connected", "closing", "closed")


class ClientProtocol:
    """One Engine.IO session with one Socket.IO namespace, as socket.io-client 4.x (eio=4) or
    2.x (eio=3) with default options would run it.

    transports: ("polling", "websocket") = polling then upgrade (the default);
    ("websocket",) = WebSocket only; ("polling",) = never upgrade.
    auth: CONNECT payload (EIO4 only; Socket.IO v4 has no auth). query: extra query params
    added to every request, like socket.io-client's `query` option.
    connect_timeout: seconds for the whole connect (first request → namespace connected), and
    for each later step the machine waits on (probe answer, ack, POST answer, disconnect).
    rng: the randomness source for cache-busters (a `random.Random`; pass a seeded one in tests).
    """

    def __init__(
        self,
        *,
        eio: int = 4,
        transports: Sequence[str] = ("polling", "websocket"),
        path: str = "/socket.io/",
        namespace: str = "/",
        auth: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        ack_timeout: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        raise NotImplementedError

    # -- properties ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """One of new, handshaking, connecting, connected, closing, closed."""
        raise NotImplementedError

    @property
    def eio_sid(self) -> str:
        """Engine.IO session id ("" before the open packet)."""
        raise NotImplementedError

    @property
    def sio_sid(self) -> str:
        """Socket.IO namespace sid ("" before CONNECT is acknowledged)."""
        raise NotImplementedError

    @property
    def transport(self) -> str:
        """"polling" | "websocket" | "" (before start)."""
        raise NotImplementedError

    @property
    def node(self) -> str:
        """The node that served the latest response of this session ("" when unknown)."""
        raise NotImplementedError

    # -- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Begin the session: the handshake GET (or the WebSocket in websocket-only mode)."""
        raise NotImplementedError

    def http_response(self, rid: int, status: int, body: bytes, now: float, *, node: str = "",
                      content_type: str = "") -> list[Action]:
        """An HTTP answer to HttpRequest `rid` (any status). `node` = the serving node's id."""
        raise NotImplementedError

    def http_failed(self, rid: int, error_kind: str, error: str, now: float) -> list[Action]:
        """HttpRequest `rid` failed below HTTP: error_kind connection_refused | connection_reset |
        timeout | transport_closed | protocol_error (unparsable HTTP)."""
        raise NotImplementedError

    def ws_opened(self, now: float, *, node: str = "") -> list[Action]:
        """The WebSocket of the last OpenWebSocket is open (HTTP 101)."""
        raise NotImplementedError

    def ws_failed(self, status: int | None, body: bytes, error_kind: str, error: str, now: float, *,
                  node: str = "") -> list[Action]:
        """The WebSocket could not be opened: `status`/`body` of a non-101 answer when there was
        one (None otherwise), error_kind as in http_failed for I/O failures."""
        raise NotImplementedError

    def ws_message(self, data: str | bytes, now: float) -> list[Action]:
        """One WebSocket frame (str = text frame, bytes = binary frame)."""
        raise NotImplementedError

    def ws_closed(self, now: float, error: str = "", *, error_kind: str = "transport_closed") -> list[Action]:
        """The WebSocket ended (peer close, reset, EOF). error_kind: transport_closed or
        connection_reset."""
        raise NotImplementedError

    def tick(self, now: float) -> list[Action]:
        """Fire every timer due at `now`: timeouts, EIO3 pings."""
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """When `tick` must be called next (monotonic seconds), None if no timer is armed."""
        raise NotImplementedError

    # -- application calls --------------------------------------------------------------------
    def emit(self, event: str, *args: Any, namespace: str | None = None, ack: bool = False,
             now: float, step: str | None = None, name: str | None = None) -> tuple[int | None, list[Action]]:
        """Send an event; returns (ack id or None, actions).

        Before the namespace is connected the packet is buffered and flushed on connect (as
        socket.io-client does). With ack=True an "ack" StepResult (named `name` or
        "ack:<event>"; step `step` or "ack") follows when the ack arrives or times out; an
        AckReceived/AckFailed carries the outcome. Without ack, a StepResult for step `step`
        (default "emit", name "emit:<event>", no latency) is returned right away. After the
        session closed, the emit fails at once with transport_closed.
        """
        raise NotImplementedError

    def send_ack(self, ack_id: int, *args: Any, namespace: str | None = None, now: float) -> list[Action]:
        """Answer a server event that asked for an ack (EventReceived.ack_id)."""
        raise NotImplementedError

    def disconnect(self, now: float) -> list[Action]:
        """Client-side disconnect ("io client disconnect"): DISCONNECT + Engine.IO close, then
        Closed(error_kind="") -- on polling once the close POST is answered."""
        raise NotImplementedError
