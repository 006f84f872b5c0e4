"""The protocol core's state, made explicit (as h11's `_state.py` does for HTTP/1.1).

`client.ClientProtocol` keeps one session state (`Session`, with a transition table that
refuses what the machine must never do) and three small records beside it: the polling
requests in flight (`Polling`), the probe/upgrade to WebSocket (`Upgrade`) and the deadlines
(`Timers`). Every value of the enums is the string the machine reported before it had enums
(StrEnum: `ClientProtocol.state == "connected"` and logs keep working).

The composite states tests/unit/test_protocol_total.py builds, in these terms
(T = transport, P = Upgrade.probe, ws = Upgrade.ws; "GET"/"POST" = Polling rids in flight):

=========================  ===========  =========  =========  =====================================
test state                 Session      T          P          other
=========================  ===========  =========  =========  =====================================
new                        NEW          NONE       NONE       nothing in flight, no timer
handshaking                HANDSHAKING  POLLING    NONE       GET (purpose "handshake")
handshaking_ws_only        HANDSHAKING  WEBSOCKET  NONE       ws OPENING (purpose "websocket")
connecting                 CONNECTING   POLLING    OPENING    CONNECT POST + poll GET, ws OPENING
open_polling               CONNECTED    POLLING    NONE       poll GET; never upgrades
open_polling_with_post     CONNECTED    POLLING    NONE       poll GET + POST; an ack pending
upgrading_probing          CONNECTED    POLLING    PROBING    poll GET; ws OPEN, "2probe" sent
upgrading_pausing          CONNECTED    POLLING    PAUSING    poll GET (waits for its noop)
upgraded                   CONNECTED    WEBSOCKET  NONE       Upgrade.upgraded; ws OPEN
upgraded_ws_only           CONNECTED    WEBSOCKET  NONE       ws OPEN (purpose "websocket")
closing                    CLOSING      POLLING    NONE       close POST (post_closes) + GET
closing_during_probe       CLOSING      POLLING    NONE       probe aborted; close POST + GET
closed                     CLOSED       POLLING    NONE       nothing in flight, no timer
closed_ws                  CLOSED       WEBSOCKET  NONE       nothing in flight, no timer
eio3_connected             CONNECTED    POLLING    OPENING    EIO3: Timers.next_ping armed
eio3_closing               CLOSING      POLLING    NONE       EIO3: close POST + GET
=========================  ===========  =========  =========  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Session(StrEnum):
    """The session's life, in order (the public `ClientProtocol.state`)."""

    NEW = "new"  # built, start() not called
    HANDSHAKING = "handshaking"  # first request out, no open packet yet
    CONNECTING = "connecting"  # open packet accepted, namespace CONNECT not yet answered
    CONNECTED = "connected"  # namespace connected
    CLOSING = "closing"  # client disconnect on polling: waiting for the close POST's answer
    CLOSED = "closed"  # over: every input is ignored


class Transport(StrEnum):
    """The transport the session's packets ride (`ClientProtocol.transport`)."""

    NONE = ""  # before start()
    POLLING = "polling"
    WEBSOCKET = "websocket"


class Probe(StrEnum):
    """The upgrade probe (polling → websocket), socket.io-client's `_probe()`."""

    NONE = ""  # no probe running
    OPENING = "opening"  # probe WebSocket requested
    PROBING = "probing"  # WebSocket open, "2probe" sent, waiting for "3probe"
    PAUSING = "pausing"  # "3probe" came: polling pauses (parked GET and POST must come back)


class Ws(StrEnum):
    """The one WebSocket of the session."""

    NONE = ""
    OPENING = "opening"
    OPEN = "open"


# Which session state may go to which. Anything else is a bug in the machine, not in the input.
TRANSITIONS: dict[Session, frozenset[Session]] = {
    Session.NEW: frozenset({Session.HANDSHAKING, Session.CLOSED}),  # start(); disconnect() first
    Session.HANDSHAKING: frozenset({Session.CONNECTING, Session.CLOSED}),  # open packet; failure
    Session.CONNECTING: frozenset({Session.CONNECTED, Session.CLOSING, Session.CLOSED}),
    Session.CONNECTED: frozenset({Session.CLOSING, Session.CLOSED}),
    Session.CLOSING: frozenset({Session.CLOSED}),  # close POST answered, failed or timed out
    Session.CLOSED: frozenset(),
}


class IllegalTransition(AssertionError):
    """The machine tried a transition TRANSITIONS does not allow (`ClientProtocol._to`): a bug,
    never swallowed as a protocol_error (the inputs' catch-all lets it through, so the tests,
    which drive every input in every state, see it)."""


@dataclass(slots=True)
class Polling:
    """The long-polling requests in flight: at most one GET and one POST (as in a browser)."""

    rid: int = 0  # the last request id issued (GETs and POSTs share the counter)
    get_rid: int | None = None  # the GET in flight
    get_purpose: str = ""  # "handshake" | "poll"
    post_rid: int | None = None  # the POST in flight
    post_closes: bool = False  # the in-flight POST carries the close packet
    post_name: str = "post"  # the in-flight POST's row name by what it carries (client.post_name)


@dataclass(slots=True)
class Upgrade:
    """The session's WebSocket: the probe of an upgrade, or the websocket-only transport."""

    ws: Ws = Ws.NONE
    ws_purpose: str = ""  # "probe" | "websocket" (OpenWebSocket.purpose)
    probe: Probe = Probe.NONE
    upgraded: bool = False  # "5" sent: polling is over for this session
    extension: str = ""  # the WebSocket extension its 101 accepted ("" or "permessage-deflate; ...")


@dataclass(slots=True)
class Timers:
    """Every deadline the machine arms (monotonic seconds, None = not armed), and the times the
    latencies and the ping schedule are measured from."""

    connect: float | None = None  # whole connect: first request → namespace connected
    ping: float | None = None  # EIO4: next ping due by; EIO3: pong (or any packet) due by
    next_ping: float | None = None  # EIO3: when the client sends its next ping
    probe: float | None = None  # probe answer / pause to finish
    post: float | None = None  # the POST in flight answered by
    close: float | None = None  # the close POST answered by
    ping_sent: float | None = None  # EIO3: the outstanding ping (not a deadline)
    t_start: float = 0.0  # start()
    t_probe: float = 0.0  # probe OpenWebSocket
    t_close: float = 0.0  # disconnect()
    t_open: float = 0.0  # open packet (EIO4 ping schedule starts there)
    last_ping: float = 0.0  # last server ping (EIO4)

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, None when none is."""
        ts = [t for t in (self.connect, self.ping, self.next_ping, self.probe, self.post, self.close)
              if t is not None]
        return min(ts) if ts else None

    def disarm(self) -> None:
        """Disarm every deadline (the session closed)."""
        self.connect = self.ping = self.next_ping = None
        self.probe = self.post = self.close = None
