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

import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from socketio import packet as sio_packet

from contract.config import TRANSPORT_SETS
from contract.wire import DEFAULT_TRANSPORTS

from . import codec
from .actions import (
    AckFailed,
    AckReceived,
    Action,
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
from .classify import body_text, classify_http, is_session_unknown
from .recovery import Recovery
from .state import (
    TRANSITIONS,
    IllegalTransition,
    Polling,
    Probe,
    Session,
    Timers,
    Transport,
    Upgrade,
    Ws,
)

# Module-level names for the enum members: the machine compares them on every packet, and a
# module global costs a tenth of an Enum class attribute lookup (python 3.11).
# Public states, in order (state.Session; state.TRANSITIONS says which may follow which).
NEW, HANDSHAKING, CONNECTING, CONNECTED, CLOSING, CLOSED = (
    Session.NEW, Session.HANDSHAKING, Session.CONNECTING, Session.CONNECTED, Session.CLOSING, Session.CLOSED)

POLLING, WEBSOCKET = Transport.POLLING, Transport.WEBSOCKET
_TRANSPORT_SETS = TRANSPORT_SETS  # contract.config: the one list of allowed transport sets
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_ATTACHMENTS = 256
# Events a server may send before its CONNECT reply: a recovered session's replay of missed packets
# (socket.io-client buffers them and fires them once connected). Beyond this it is a flood.
MAX_EVENTS_BEFORE_CONNECT = 100_000

# Bounds on what the open packet may carry (issue 9: "impossible ping values").
# socket.io-client arms setTimeout(pingInterval + pingTimeout); a browser's timer holds at most
# 2^31-1 ms and fires at once beyond it (a tight loop), and 0 ms would ping back to back: so each
# value and their sum must lie in 1 .. 2^31-1 ms. maxPayload is a JS number used as a byte count:
# 1 .. 2^53-1 (the largest integer a JS number holds exactly).
MAX_TIMER_MS = 2**31 - 1
MAX_PAYLOAD_LIMIT = 2**53 - 1
# An Engine.IO sid is an id (20 chars from Node's and python-engineio's generators), and it rides
# in every request line: a longer one is not an id, and refusing it keeps each request bounded.
MAX_SID_CHARS = 4096
# An EIO4 server pings once per pingInterval, so over any stretch of the session it can have sent
# at most elapsed/pingInterval + 1 pings. A server far ahead of its own schedule is not lagging but
# lying (or flooding): each ping would be a row and an answer. Allow twice the schedule plus a few
# (a ping delayed behind a slow poll may arrive next to the following one), then refuse.
PING_RATE_SLACK = 2.0
PING_BURST = 4

# Probe states (upgrade polling → websocket) and the WebSocket's own.
_P_NONE, _P_OPENING, _P_PROBING, _P_PAUSING = Probe.NONE, Probe.OPENING, Probe.PROBING, Probe.PAUSING
_WS_NONE, _WS_OPENING, _WS_OPEN = Ws.NONE, Ws.OPENING, Ws.OPEN



POST_NAMES = ("post:close", "post:connect", "post:emit", "post:pong", "post")


def post_name(batch: list[str | bytes]) -> str:
    """A POST's row name by the packet that matters most in it: its close, a Socket.IO CONNECT, an event
    (or ack), its pong; "post" for anything else (a noop, binary attachments only).

    Why: behind a balancer that is not sticky, the session dies at its first upstream packet that meets
    another node, and which packet that was (the first pong, an emit, the close) is the diagnosis."""
    texts = [p for p in batch if isinstance(p, str)]
    if any(p == "1" for p in texts):
        return "post:close"
    msgs = [p[1:] for p in texts if p.startswith("4")]
    if any(m.startswith("0") for m in msgs):
        return "post:connect"
    if msgs or len(texts) < len(batch):
        return "post:emit"
    if any(p.startswith("3") or p.startswith("2") for p in texts):  # v4 pong "3"; a v3 client's own ping "2"
        return "post:pong"
    return "post"

class _BrowserJson:
    """JSON as the browser's JSON.stringify writes it: non-ASCII stays as is (python's default
    escapes it to \\uXXXX, which changes EIO3 length prefixes and payload sizes)."""

    loads = staticmethod(json.loads)

    @staticmethod
    def dumps(obj: Any, **kw: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, **kw)


class _SioPacket(sio_packet.Packet):
    json = _BrowserJson


class _ProtocolError(Exception):
    """Malformed or out-of-place input; becomes a protocol_error failure, never escapes."""


class _PendingAck:
    __slots__ = ("event", "t0", "deadline", "step", "name")

    def __init__(self, event: str, t0: float, deadline: float, step: str, name: str) -> None:
        self.event, self.t0, self.deadline, self.step, self.name = event, t0, deadline, step, name


def _check_sid(sid: object) -> tuple[str, str]:
    """(sid, its query form) of an open packet, or _ProtocolError.

    Policy for a server-chosen sid (issue 9): percent-encode it as engine.io-client does
    (encodeURIComponent), whatever it holds -- CR, LF, '&', non-ASCII -- because that is exactly
    what a browser sends, so the session goes on as it would in a browser and nothing the server
    wrote reaches the request line raw. Refused (protocol_error) only what no browser could send:
    a non-string or empty sid, one with a lone surrogate (encodeURIComponent throws URIError), and
    one longer than MAX_SID_CHARS.
    """
    if not isinstance(sid, str) or not sid:
        raise _ProtocolError(f"open packet with bad sid {str(sid)[:60]!r}")
    if len(sid) > MAX_SID_CHARS:
        raise _ProtocolError(f"open packet with a sid of {len(sid)} chars (MAX_SID_CHARS = {MAX_SID_CHARS})")
    try:
        return sid, codec.encode_uri_component(sid)
    except ValueError:
        raise _ProtocolError(f"open packet with a sid no browser can send (lone surrogate): {sid[:60]!r}") from None


def _check_number(data: dict, key: str, default: float | None, limit: int) -> float:
    """An open packet's number in 1 .. `limit`, or _ProtocolError naming the key and the value.

    JSON numbers: ints and finite floats (a JS number is either); bool, str, null, NaN and
    infinities are refused, so no timer can be armed at NaN, in the past or never.
    """
    v: Any = data.get(key, default)  # JSON: checked below
    if type(v) not in (int, float) or not math.isfinite(v) or not 1 <= v <= limit:
        raise _ProtocolError(f"open packet with bad {key} {str(v)[:40]!r} (a number of 1 .. {limit} expected)")
    return v


def _ms(t0: float, t1: float) -> float:
    return round((t1 - t0) * 1000.0, 3)


class ClientProtocol:
    """One Engine.IO session with one Socket.IO namespace, as socket.io-client 4.x (eio=4) or
    2.x (eio=3) with default options would run it.

    transports: ("polling", "websocket") = polling then upgrade (the default);
    ("websocket",) = WebSocket only; ("polling",) = never upgrade.
    auth: CONNECT payload (EIO4 only; Socket.IO v4 has no auth). query: extra query params
    added to every request, like socket.io-client's `query` option.
    connect_timeout: seconds for the whole connect (first request → namespace connected), and
    for each later step the machine waits on (probe answer, POST answer, disconnect).
    ack_timeout: seconds to wait for an ack (default: connect_timeout).
    rng: the randomness source for cache-busters (a `random.Random`; pass a seeded one in tests).
    recovery: the connection-state recovery record the user keeps across its sessions
    (recovery.Recovery; EIO4 only): its pid and offset go into CONNECT, the reply says whether the
    session was recovered, and the events the server replays before that reply are taken as events.

    State (state.py): `_state` (Session, moved only by `_to` along state.TRANSITIONS),
    `_transport` (Transport), `_polling` (Polling: the GET and POST in flight), `_upgrade`
    (Upgrade: the WebSocket, the probe, whether upgraded) and `_timers` (Timers: every deadline);
    state.py's table names the composite states in these terms.

    StepResults it emits (latency_ms from the `now` values passed in):
    - handshake: first request → open packet (transport "polling", or "websocket" when ws-only).
    - connect: first request → CONNECT acknowledged (the whole connect as the user sees it).
      Exactly one per session, ok or failed with the cause's kind (also when the handshake failed),
      unless the caller disconnects first.
    - upgrade_probe: probe OpenWebSocket → "3probe". Failed probes (upgrade_failed, or
      session_unknown when the refusal says so) leave the session on polling, like the browser.
    - upgrade: probe OpenWebSocket → "5" sent (polling paused, websocket took over).
    - poll: only failures, of the long-poll GET (name "poll") or of a POST, named by what it carried
      (post_name: "post:close", "post:connect", "post:emit", "post:pong", or "post"), so the analysis can
      say which upstream packet met a node that did not know the session.
    - ping: EIO4 (server pings): ok when answered; latency = how late the ping came against
      the pingInterval schedule (a server event-loop lag signal). EIO3 (client pings): ping → pong RTT.
    - ack (or `emit(step=...)`): emit → ack, per ack id; emit (or `step`): no latency.
    - node_switch: ok=True, error "n1->n2": a response of this session came from another node.
    - recover: after a CONNECT that carried a pid (recovery asked): ok when the reply has the same
      pid (socket.io-client's `recovered`), else failed "not_recovered"; latency = first request →
      CONNECT reply, as connect's.
    - disconnect: only after a Connected; ok=True for a client disconnect (latency = close POST
      round trip on polling, None on websocket), else failed with the close's kind.
    """

    def __init__(
        self,
        *,
        eio: int = 4,
        transports: Sequence[str] = DEFAULT_TRANSPORTS,
        path: str = "/socket.io/",
        namespace: str = "/",
        auth: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        ack_timeout: float | None = None,
        rng: random.Random | None = None,
        recovery: Recovery | None = None,
    ) -> None:
        if eio not in (3, 4):
            raise ValueError(f"eio = {eio!r}: 3 (socket.io 2.x) or 4 (socket.io 3.x/4.x)")
        transports = tuple(transports)
        if transports not in _TRANSPORT_SETS:
            raise ValueError(f"transports = {list(transports)!r}: one of {[list(t) for t in _TRANSPORT_SETS]}")
        if not namespace.startswith("/"):
            raise ValueError(f"namespace = {namespace!r}: must start with '/'")
        if auth is not None and eio == 3:
            raise ValueError("auth: Socket.IO v2 (eio=3) has no CONNECT payload; pass it in `query`")
        if connect_timeout <= 0 or (ack_timeout is not None and ack_timeout <= 0):
            raise ValueError("timeouts must be positive")
        self.path = path
        self._eio = eio
        self._transports = transports
        self._ns = namespace
        self._auth = dict(auth) if auth is not None else None
        # engine.io-client's parseqs.encode: encodeURIComponent(key) + "=" + encodeURIComponent(value)
        self._qprefix = "".join(f"{codec.encode_uri_component(str(k))}={codec.encode_uri_component(str(v))}&"
                                for k, v in (query or {}).items())
        self._timeout = float(connect_timeout)
        self._ack_timeout = float(ack_timeout) if ack_timeout is not None else self._timeout
        self._rng = rng or random.Random()
        self._recovery = recovery if eio == 4 else None  # Socket.IO v2 has no recovery
        self._rec_sent: tuple[str | None, str | None] = (None, None)  # pid, offset of our CONNECT
        self._early: list[EventReceived] = []  # events before the CONNECT reply (a recovery's replay)

        self._state: Session = NEW  # changed only by _to(), along state.TRANSITIONS
        self._transport: Transport = Transport.NONE
        self._sid = ""
        self._sid_q = ""  # the sid as it goes into a query: percent-encoded (codec.encode_uri_component)
        self._sio_sid = ""
        self._node = ""
        self._ping_interval = 25.0
        self._ping_timeout = 20.0
        self._max_payload: float = 1_000_000
        self._upgrades: list[str] = []
        self._connected_once = False  # Connected was emitted
        self._opened = False  # Engine.IO open packet accepted
        self._pings = 0  # EIO4: pings the server sent (PING_RATE_SLACK)

        self._polling = Polling()  # the GET and POST in flight
        self._upgrade = Upgrade()  # the WebSocket: probe and upgrade, or websocket-only
        self._timers = Timers()  # every deadline, and the times latencies are measured from
        self._out: list[str | bytes] = []  # Engine.IO packets waiting to be written
        self._sio_buffer: list[list[str | bytes]] = []  # Socket.IO packets emitted before connect

        self._next_ack = 0
        self._acks: dict[int, _PendingAck] = {}
        self._partial: sio_packet.Packet | None = None  # binary packet awaiting attachments

    # -- properties ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """One of new, handshaking, connecting, connected, closing, closed (Session's values)."""
        return self._state.value

    @property
    def eio_sid(self) -> str:
        """Engine.IO session id ("" before the open packet)."""
        return self._sid

    @property
    def sio_sid(self) -> str:
        """Socket.IO namespace sid ("" before CONNECT is acknowledged)."""
        return self._sio_sid

    @property
    def transport(self) -> str:
        """"polling" | "websocket" | "" (before start)."""
        return self._transport.value

    @property
    def node(self) -> str:
        """The node that served the latest response of this session ("" when unknown)."""
        return self._node

    @property
    def namespace(self) -> str:
        return self._ns

    @property
    def _get_rid(self) -> int | None:
        """The GET in flight (tests read it to answer the parked poll)."""
        return self._polling.get_rid

    def _to(self, state: Session) -> None:
        """Move to `state`; IllegalTransition (a bug in the machine) unless state.TRANSITIONS
        allows it."""
        if state not in TRANSITIONS[self._state]:
            raise IllegalTransition(f"session state {self._state.value} -> {state.value} is not allowed")
        self._state = state

    # -- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Begin the session: the handshake GET (or the WebSocket in websocket-only mode)."""
        if self._state is not NEW:
            return []
        self._to(HANDSHAKING)
        self._timers.t_start = now
        self._timers.connect = now + self._timeout
        if self._transports[0] == WEBSOCKET:
            self._transport = WEBSOCKET
            self._upgrade.ws, self._upgrade.ws_purpose = _WS_OPENING, "websocket"
            return [OpenWebSocket(self._query(WEBSOCKET), "websocket")]
        self._transport = POLLING
        rid = self._new_get("handshake")
        return [HttpRequest(rid, "GET", self._query(POLLING), None, None, "handshake")]

    def http_response(self, rid: int, status: int, body: bytes, now: float, *, node: str = "",
                      content_type: str = "") -> list[Action]:
        """An HTTP answer to HttpRequest `rid` (any status). `node` = the serving node's id."""
        out: list[Action] = []
        try:
            self._http_response(rid, status, body, now, node, content_type, out)
        except IllegalTransition:
            raise  # a bug in the machine, not bad input: the tests must see it
        except Exception as e:  # noqa: BLE001 - the machine must classify, never raise
            self._protocol_error(now, f"{type(e).__name__}: {e}", out)
        return out

    def http_failed(self, rid: int, error_kind: str, error: str, now: float) -> list[Action]:
        """HttpRequest `rid` failed below HTTP: error_kind connection_refused | connection_reset |
        timeout | transport_closed | protocol_error (unparsable HTTP)."""
        out: list[Action] = []
        if self._state is CLOSED:
            return out
        kind = error_kind or "transport_closed"
        if rid == self._polling.get_rid:
            self._polling.get_rid = None
            if self._state is CLOSING:
                return out  # the parked GET our own close released or broke: no longer matters
            if self._polling.get_purpose == "handshake":
                self._fail_step("handshake", kind, error, now, out)
                self._close(now, "connect error", kind, error, out)
            else:
                self._fail_step("poll", kind, error, now, out, name="poll")
                self._close(now, "transport error", kind, error, out)
        elif rid == self._polling.post_rid:
            self._polling.post_rid = None
            self._timers.post = None
            self._fail_step("poll", kind, error, now, out, name=self._polling.post_name)
            if self._state is CLOSING:
                self._finish_client_close(now, out)
            else:
                self._close(now, "transport error", kind, error, out)
        return out

    def ws_opened(self, now: float, *, node: str = "", extension: str = "") -> list[Action]:
        """The WebSocket of the last OpenWebSocket is open (HTTP 101); `extension`: the one the
        101 accepted, recorded on the upgrade_probe row (websocket-only: the handshake row)."""
        out: list[Action] = []
        if self._state in (CLOSED,) or self._upgrade.ws is not _WS_OPENING:
            return out
        self._upgrade.ws, self._upgrade.extension = _WS_OPEN, extension
        self._see_node(node, now, out)
        if self._upgrade.ws_purpose == "probe":
            self._upgrade.probe = _P_PROBING
            out.append(WsSend("2probe"))
        return out

    def ws_failed(self, status: int | None, body: bytes, error_kind: str, error: str, now: float, *,
                  node: str = "") -> list[Action]:
        """The WebSocket could not be opened: `status`/`body` of a non-101 answer when there was
        one (None otherwise), error_kind as in http_failed for I/O failures."""
        out: list[Action] = []
        if self._state is CLOSED or self._upgrade.ws is not _WS_OPENING:
            return out
        self._upgrade.ws = _WS_NONE
        prev_node = self._node
        self._see_node(node, now, out)
        body = body or b""
        if status is not None:
            excerpt = body_text(body)
            error = f"HTTP {status} on websocket" + (f": {excerpt}" if excerpt else "") + (
                f" ({error})" if error else "")
        if self._upgrade.ws_purpose == "probe":
            # A probe that meets an unknown sid (Node: 400 "Session ID unknown"; python-engineio
            # under uvicorn: 403 without body, the ASGI websocket cannot carry the 400) is the
            # non-sticky signature; anything else is a plain upgrade failure.
            if status is not None and (is_session_unknown(status, body)
                                       or (status in (400, 403) and node and prev_node and node != prev_node)):
                kind = "session_unknown"
            else:
                kind = "upgrade_failed"
            self._probe_failed(now, kind, error or "websocket upgrade failed", out, close_ws=False)
        else:
            if status is not None:
                kind = "handshake_rejected" if status in (400, 403) else f"http_{status}"
            else:
                kind = error_kind or "transport_closed"
            self._fail_step("handshake", kind, error, now, out, transport=WEBSOCKET)
            self._close(now, "connect error", kind, error, out)
        return out

    def ws_message(self, data: str | bytes, now: float) -> list[Action]:
        """One WebSocket frame (str = text frame, bytes = binary frame)."""
        out: list[Action] = []
        if self._state is CLOSED or self._upgrade.ws is not _WS_OPEN:
            return out
        try:
            if isinstance(data, str):
                pkt = codec.decode_text_packet(data)
            elif isinstance(data, (bytes, bytearray, memoryview)):
                data = bytes(data)
                if self._eio == 3:  # EIO3 binary frames carry the packet type byte first
                    if data[:1] != b"\x04":
                        raise _ProtocolError("EIO3 binary frame that is not a message")
                    data = data[1:]
                pkt = (codec.MESSAGE, data)
            else:
                raise _ProtocolError(f"frame of type {type(data).__name__}")
            if self._upgrade.probe is _P_PROBING:
                # socket.io-client's _probe(): the first packet must be pong "probe".
                if pkt == (codec.PONG, "probe"):
                    self._upgrade.probe = _P_PAUSING
                    self._timers.probe = now + self._timeout
                    out.append(self._ok("upgrade_probe", _ms(self._timers.t_probe, now), transport=WEBSOCKET,
                                        error=self._upgrade.extension))
                    self._maybe_finish_upgrade(now, out)
                else:
                    self._probe_failed(now, "upgrade_failed", f"probe answered with {str(data)[:60]!r}", out)
                return out
            self._on_packets([pkt], now, WEBSOCKET, out)
        except IllegalTransition:
            raise  # a bug in the machine, not bad input: the tests must see it
        except Exception as e:  # noqa: BLE001 - the machine must classify, never raise
            self._protocol_error(now, f"{type(e).__name__}: {e}" if not isinstance(e, _ProtocolError) else str(e),
                                 out)
        return out

    def ws_closed(self, now: float, error: str = "", *, error_kind: str = "transport_closed") -> list[Action]:
        """The WebSocket ended (peer close, reset, EOF). error_kind: transport_closed or
        connection_reset."""
        out: list[Action] = []
        if self._state is CLOSED or not self._upgrade.ws:
            return out
        was = self._upgrade.ws
        self._upgrade.ws = _WS_NONE
        if self._upgrade.ws_purpose == "probe" and not self._upgrade.upgraded:
            self._probe_failed(now, "upgrade_failed", error or "websocket closed during probe", out,
                               close_ws=False)
            return out
        kind = error_kind or "transport_closed"
        error = error or "websocket closed"
        if self._state is CLOSING:
            self._finish_client_close(now, out)
        elif not self._opened:
            self._fail_step("handshake", kind, error if was is _WS_OPEN else error, now, out, transport=WEBSOCKET)
            self._close(now, "connect error", kind, error, out)
        else:
            self._close(now, "transport close", kind, error, out)
        return out

    def network_lost(self, now: float, error: str = "network connection lost") -> list[Action]:
        """The device lost its network (the blip's `silent` mode): the session ends at once, as
        engine.io-client's `offline` listener ends it (`_onClose("transport close", {description:
        "network connection lost"})`), whatever its transport or state. Kind `network_lost`, so the
        loss is told apart from a server's or a balancer's close. The driver keeps the sockets open
        (no FIN reaches the server), so the server learns only at its ping timeout."""
        out: list[Action] = []
        if self._state is CLOSED:
            return out
        if not self._opened:
            self._fail_step("handshake", "network_lost", error, now, out)
            self._close(now, "connect error", "network_lost", error, out)
        elif self._state is CLOSING:
            self._finish_client_close(now, out)
        else:
            self._close(now, "transport close", "network_lost", error, out)
        return out

    def tick(self, now: float) -> list[Action]:
        """Fire every timer due at `now`: timeouts, EIO3 pings."""
        out: list[Action] = []
        if self._state is CLOSED:
            return out
        if self._timers.connect is not None and now >= self._timers.connect:
            self._timers.connect = None
            err = f"no {'open packet' if not self._opened else 'CONNECT answer'} within {self._timeout:g} s"
            if not self._opened:
                self._fail_step("handshake", "timeout", err, now, out)
            self._close(now, "connect error", "timeout", err, out)
            return out
        if self._timers.close is not None and now >= self._timers.close:
            self._finish_client_close(now, out)
            return out
        if self._timers.post is not None and now >= self._timers.post:
            self._timers.post = None
            self._polling.post_rid = None
            err = f"POST not answered within {self._timeout:g} s"
            self._fail_step("poll", "timeout", err, now, out, name=self._polling.post_name)
            self._close(now, "transport error", "timeout", err, out)
            return out
        if self._timers.ping is not None and now >= self._timers.ping:
            self._timers.ping = None
            if self._eio == 3 and self._timers.ping_sent is not None:
                err = f"no pong within pingTimeout {self._ping_timeout:g} s"
                self._fail_step("ping", "timeout", err, now, out)
            else:
                err = f"no ping within pingInterval + pingTimeout ({self._ping_interval + self._ping_timeout:g} s)"
            self._close(now, "ping timeout", "timeout", err, out)
            return out
        if self._timers.probe is not None and now >= self._timers.probe:
            self._probe_failed(now, "upgrade_failed", f"no probe answer within {self._timeout:g} s", out)
        if self._timers.next_ping is not None and now >= self._timers.next_ping:
            self._timers.next_ping = None
            self._timers.ping_sent = now
            self._timers.ping = now + self._ping_timeout
            self._send(["2"], now, out)
        if self._acks:
            for ack_id in [a for a, p in self._acks.items() if now >= p.deadline]:
                p = self._acks.pop(ack_id)
                err = f"no ack within {self._ack_timeout:g} s"
                out.append(self._fail(p.step, "timeout", err, name=p.name, ack_id=ack_id))
                out.append(AckFailed(self._ns, ack_id, "timeout", err))
        return out

    def next_deadline(self) -> float | None:
        """When `tick` must be called next (monotonic seconds), None if no timer is armed."""
        if self._state is CLOSED:
            return None
        t = self._timers.next_deadline()
        if self._acks:
            a = min(p.deadline for p in self._acks.values())
            return a if t is None or a < t else t
        return t

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
        out: list[Action] = []
        step = step or ("ack" if ack else "emit")
        name = name or f"{'ack' if ack else 'emit'}:{event}"
        ns = namespace or self._ns
        if self._state in (CLOSING, CLOSED):
            out.append(self._fail(step, "transport_closed", "session closed", name=name))
            return None, out
        ack_id = None
        if ack:
            ack_id = self._next_ack
            self._next_ack += 1
        try:
            encoded = _SioPacket(sio_packet.EVENT, data=[event, *args], namespace=ns, id=ack_id).encode()
        except (TypeError, ValueError) as e:  # unserialisable args: the caller's bug, said plainly
            raise ValueError(f"emit({event!r}): cannot encode arguments: {e}") from e
        parts = self._sio_to_eio(encoded)
        if ack_id is not None:
            self._acks[ack_id] = _PendingAck(event, now, now + self._ack_timeout, step, name)
        if self._state is CONNECTED:
            self._send(parts, now, out)
        else:
            self._sio_buffer.append(parts)
        if not ack:
            out.append(self._ok(step, None, name=name))
        return ack_id, out

    def send_ack(self, ack_id: int, *args: Any, namespace: str | None = None, now: float) -> list[Action]:
        """Answer a server event that asked for an ack (EventReceived.ack_id)."""
        out: list[Action] = []
        if self._state is not CONNECTED:
            return out
        encoded = _SioPacket(sio_packet.ACK, data=list(args), namespace=namespace or self._ns,
                                    id=ack_id).encode()
        self._send(self._sio_to_eio(encoded), now, out)
        return out

    def disconnect(self, now: float) -> list[Action]:
        """Client-side disconnect ("io client disconnect"): DISCONNECT + Engine.IO close, then
        Closed(error_kind="") -- on polling once the close POST is answered."""
        out: list[Action] = []
        if self._state in (CLOSING, CLOSED):
            return out
        if not self._opened:
            self._close(now, "io client disconnect", "", "", out)
            return out
        self._timers.t_close = now
        self._timers.connect = None
        if self._upgrade.probe:
            self._abort_probe(out)
        if self._state is CONNECTED:
            self._out.append("41" if self._ns == "/" else f"41{self._ns},")
        if self._transport is WEBSOCKET:
            self._flush(now, out)
            self._close(now, "io client disconnect", "", "", out)
            return out
        # polling: the close packet rides a POST; Closed follows its answer (or the timeout).
        self._out.append("1")
        self._to(CLOSING)
        self._timers.close = now + self._timeout
        self._flush(now, out, closing=True)
        return out

    # -- internals: HTTP ------------------------------------------------------------------------
    def _http_response(self, rid: int, status: int, body: bytes, now: float, node: str, content_type: str,
                       out: list[Action]) -> None:
        if self._state is CLOSED:
            return
        if rid == self._polling.get_rid:
            self._polling.get_rid = None
            purpose = self._polling.get_purpose
            self._see_node(node, now, out)
            if self._state is CLOSING:
                return  # the parked GET released by our own close: its answer no longer matters
            if status != 200:
                kind, err = classify_http(status, body, handshake=purpose == "handshake")
                if purpose == "handshake":
                    self._fail_step("handshake", kind, err, now, out)
                    self._close(now, "connect error", kind, err, out)
                else:
                    self._fail_step("poll", kind, err, now, out, name="poll")
                    self._close(now, "transport error", kind, err, out)
                return
            if purpose == "handshake":
                pkts = self._decode_payload(body, content_type)
                if not pkts or pkts[0][0] != codec.OPEN:
                    raise _ProtocolError(f"handshake answer is not an open packet: {body_text(body, 80)!r}")
            else:
                pkts = self._decode_payload(body, content_type)
            self._on_packets(pkts, now, POLLING, out)
            if self._state in (CONNECTING, CONNECTED) and self._transport is POLLING:
                if self._upgrade.probe is _P_PAUSING:
                    self._maybe_finish_upgrade(now, out)
                else:
                    self._poll(out)
        elif rid == self._polling.post_rid:
            self._polling.post_rid = None
            self._timers.post = None
            self._see_node(node, now, out)
            closes = self._polling.post_closes
            self._polling.post_closes = False
            if status != 200:
                kind, err = classify_http(status, body, handshake=False)
                self._fail_step("poll", kind, err, now, out, name=self._polling.post_name)
                if self._state is CLOSING:
                    self._finish_client_close(now, out)
                else:
                    self._close(now, "transport error", kind, err, out)
                return
            if body.strip().lower() != b"ok":
                raise _ProtocolError(f"POST answered {body_text(body, 60)!r} instead of 'ok'")
            if self._state is CLOSING and closes:
                self._finish_client_close(now, out)
                return
            if self._upgrade.probe is _P_PAUSING:
                self._maybe_finish_upgrade(now, out)
            else:
                self._flush(now, out, closing=self._state is CLOSING)

    def _decode_payload(self, body: bytes, content_type: str) -> list[codec.Packet]:
        try:
            if self._eio == 4:
                return codec.decode_payload_v4(body)
            return codec.decode_payload_v3(body, content_type)
        except ValueError as e:
            raise _ProtocolError(f"bad payload ({e}): {body_text(body, 60)!r}") from None

    def _new_get(self, purpose: str) -> int:
        self._polling.rid += 1
        self._polling.get_rid, self._polling.get_purpose = self._polling.rid, purpose
        return self._polling.rid

    def _poll(self, out: list[Action]) -> None:
        if self._polling.get_rid is None and self._upgrade.probe is not _P_PAUSING and not self._upgrade.upgraded:
            rid = self._new_get("poll")
            out.append(HttpRequest(rid, "GET", self._query(POLLING), None, None, "poll"))

    def _query(self, transport: str) -> str:
        # socket.io-client's key order: user query, EIO, transport, sid, then t (polling only).
        q = f"{self._qprefix}EIO={self._eio}&transport={transport}"
        if self._sid_q:
            q += f"&sid={self._sid_q}"
        if transport == POLLING:
            # 7 base-36 digits from one getrandbits call (7 rng.choice calls cost 4x more).
            n = self._rng.getrandbits(37) % 78_364_164_096  # 36 ** 7
            t = ""
            for _ in range(7):
                n, r = divmod(n, 36)
                t += _B36[r]
            q += "&t=" + t
        return q

    def _send(self, packets: list[str | bytes], now: float, out: list[Action]) -> None:
        self._out.extend(packets)
        self._flush(now, out)

    def _flush(self, now: float, out: list[Action], *, closing: bool = False) -> None:
        if not self._out or self._state is CLOSED:
            return
        if self._transport is WEBSOCKET:
            if self._upgrade.ws is not _WS_OPEN:
                return
            v3 = self._eio == 3
            for p in self._out:
                out.append(WsSend(b"\x04" + p if v3 and isinstance(p, bytes) else p))
            self._out.clear()
            return
        if self._polling.post_rid is not None or self._upgrade.probe is _P_PAUSING or self._upgrade.upgraded or not self._sid:
            return
        # engine.io-client batches the write buffer up to maxPayload bytes per POST.
        take, size = 0, 0
        for p in self._out:
            n = len(p) + 2 if isinstance(p, bytes) else len(p)
            if take and size + n > self._max_payload:
                break
            size += n + 1
            take += 1
        batch, self._out[:take] = self._out[:take], []
        if self._eio == 4:
            body, ctype = codec.encode_payload_v4(batch)
        else:
            body, ctype = codec.encode_payload_v3(batch)
        self._polling.rid += 1
        self._polling.post_rid = self._polling.rid
        self._polling.post_closes = closing and not self._out and batch[-1] == "1"
        self._polling.post_name = post_name(batch)
        self._timers.post = now + self._timeout
        out.append(HttpRequest(self._polling.rid, "POST", self._query(POLLING), body, ctype, "post"))

    # -- internals: Engine.IO packets -----------------------------------------------------------
    def _on_packets(self, pkts: list[codec.Packet], now: float, via: str, out: list[Action]) -> None:
        for ptype, data in pkts:
            if self._state is CLOSED:
                return
            if not self._opened and ptype != codec.OPEN:
                raise _ProtocolError(f"packet type {ptype} before the open packet")
            if ptype == codec.MESSAGE:
                self._on_message(data, now, out)
            elif ptype == codec.OPEN:
                self._on_open(data, now, via, out)
            elif ptype == codec.PING:
                if self._eio == 3:
                    raise _ProtocolError("EIO3 server sent a ping (the client pings in EIO3)")
                self._pings += 1
                allowed = PING_BURST + PING_RATE_SLACK * (now - self._timers.t_open) / self._ping_interval
                if self._pings > allowed:
                    raise _ProtocolError(f"server sent {self._pings} pings in {now - self._timers.t_open:.3f} s, "
                                         f"more than its pingInterval of {self._ping_interval * 1000:g} ms allows")
                self._timers.ping = now + self._ping_interval + self._ping_timeout
                late = max(0.0, (now - self._timers.last_ping) - self._ping_interval)
                self._timers.last_ping = now
                self._send(["3"], now, out)
                out.append(self._ok("ping", round(late * 1000.0, 3)))
            elif ptype == codec.PONG:
                if self._eio == 4 or self._timers.ping_sent is None:
                    raise _ProtocolError(f"unexpected pong {data!r}")
                out.append(self._ok("ping", _ms(self._timers.ping_sent, now)))
                self._timers.ping_sent = None
                self._timers.next_ping = now + self._ping_interval
                self._timers.ping = now + self._ping_interval + self._ping_timeout
            elif ptype == codec.CLOSE:
                self._close(now, "transport close", "transport_closed", "server closed the session", out)
            elif ptype == codec.NOOP:
                pass
            else:
                raise _ProtocolError(f"unexpected Engine.IO packet type {ptype}")
            if self._eio == 3 and self._timers.ping_sent is None and self._opened and self._state is not CLOSED:
                # EIO3: any packet proves the server alive (engine.io-client 3.x onHeartbeat).
                self._timers.ping = now + self._ping_interval + self._ping_timeout

    def _on_open(self, data: object, now: float, via: str, out: list[Action]) -> None:
        if self._opened:
            sid = data.get("sid") if isinstance(data, dict) else None
            raise _ProtocolError(f"second open packet (sid {str(sid)[:60]!r}, session {self._sid[:60]!r})")
        if not isinstance(data, dict):
            raise _ProtocolError(f"open packet without a JSON object: {str(data)[:60]!r}")
        sid, sid_q = _check_sid(data.get("sid"))
        pi = _check_number(data, "pingInterval", None, MAX_TIMER_MS)
        pt = _check_number(data, "pingTimeout", None, MAX_TIMER_MS)
        mp = _check_number(data, "maxPayload", 1_000_000, MAX_PAYLOAD_LIMIT)
        if pi + pt > MAX_TIMER_MS:
            raise _ProtocolError(f"open packet with pingInterval + pingTimeout = {pi + pt:g} ms, more than a "
                                 f"browser timer holds ({MAX_TIMER_MS} ms)")
        ups = data.get("upgrades", [])
        if not isinstance(ups, list) or not all(isinstance(u, str) for u in ups):
            raise _ProtocolError(f"open packet with bad upgrades {str(ups)[:60]!r}")
        self._opened = True
        self._sid, self._sid_q = sid, sid_q
        self._ping_interval, self._ping_timeout = pi / 1000.0, pt / 1000.0
        self._max_payload, self._upgrades = mp, ups
        self._to(CONNECTING)
        self._timers.last_ping = self._timers.t_open = now
        self._timers.ping = now + self._ping_interval + self._ping_timeout
        if self._eio == 3:
            self._timers.next_ping = now + self._ping_interval
        out.append(self._ok("handshake", _ms(self._timers.t_start, now), transport=via,
                            error=self._upgrade.extension if via == WEBSOCKET else ""))
        # socket.io-client on engine open: CONNECT first (its POST), then probes, then the poll.
        if self._eio == 4:
            auth = self._auth
            if self._recovery is not None:
                auth = self._recovery.connect_auth(auth)
                self._rec_sent = (self._recovery.pid, self._recovery.offset)
            body = _BrowserJson.dumps(auth, separators=(",", ":")) if auth is not None else ""
            self._send([("40" if self._ns == "/" else f"40{self._ns},") + body], now, out)
        elif self._ns != "/":
            self._send([f"40{self._ns},"], now, out)
        if via == POLLING and WEBSOCKET in self._transports and WEBSOCKET in self._upgrades:
            self._upgrade.probe = _P_OPENING
            self._timers.t_probe = now
            self._timers.probe = now + self._timeout
            self._upgrade.ws, self._upgrade.ws_purpose = _WS_OPENING, "probe"
            out.append(OpenWebSocket(self._query(WEBSOCKET), "probe"))

    # -- internals: upgrade ---------------------------------------------------------------------
    def _maybe_finish_upgrade(self, now: float, out: list[Action]) -> None:
        # engine.io-client pauses polling: wait for the parked GET (released by the server's
        # noop) and any POST in flight, then send "5" and move the write buffer to the socket.
        if self._polling.get_rid is not None or self._polling.post_rid is not None or self._state is CLOSED:
            return
        self._upgrade.probe = _P_NONE
        self._timers.probe = None
        self._upgrade.upgraded = True
        self._transport = WEBSOCKET
        out.append(WsSend("5"))
        out.append(self._ok("upgrade", _ms(self._timers.t_probe, now), transport=WEBSOCKET))
        self._flush(now, out)

    def _abort_probe(self, out: list[Action]) -> None:
        if self._upgrade.ws:
            out.append(CloseWebSocket())
        self._upgrade.ws = _WS_NONE
        self._upgrade.probe = _P_NONE
        self._timers.probe = None

    def _probe_failed(self, now: float, kind: str, error: str, out: list[Action], *, close_ws: bool = True) -> None:
        # socket.io-client: "probe error" → upgradeError; the session stays on polling.
        was_pausing = self._upgrade.probe is _P_PAUSING
        if close_ws:
            self._abort_probe(out)
        else:
            self._upgrade.ws, self._upgrade.probe, self._timers.probe = _WS_NONE, _P_NONE, None
        step = "upgrade" if was_pausing else "upgrade_probe"
        out.append(self._fail(step, kind, error, latency_ms=_ms(self._timers.t_probe, now), transport=WEBSOCKET))
        if self._state in (CONNECTING, CONNECTED):
            self._poll(out)
            self._flush(now, out)

    # -- internals: Socket.IO packets -----------------------------------------------------------
    def _sio_to_eio(self, encoded: str | list) -> list[str | bytes]:
        if isinstance(encoded, str):
            return ["4" + encoded]
        return ["4" + encoded[0], *(bytes(a) for a in encoded[1:])]

    def _on_message(self, data: object, now: float, out: list[Action]) -> None:
        if isinstance(data, bytes):
            if self._partial is None:
                raise _ProtocolError("binary message without a pending binary packet")
            if self._partial.add_attachment(data):
                pkt, self._partial = self._partial, None
                self._dispatch(pkt, now, out)
            return
        if not isinstance(data, str) or not data:
            raise _ProtocolError(f"bad Socket.IO packet {data!r}")
        if self._partial is not None:
            raise _ProtocolError("text packet while binary attachments were pending")
        if data[0] < "0" or data[0] > "6":
            raise _ProtocolError(f"unknown Socket.IO packet type in {data[:40]!r}")
        try:
            pkt = _SioPacket(encoded_packet=data)
        except Exception as e:  # noqa: BLE001 - the decoder raises ValueError, IndexError, ...
            raise _ProtocolError(f"bad Socket.IO packet ({e}): {data[:60]!r}") from None
        if pkt.attachment_count:
            if pkt.packet_type not in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
                raise _ProtocolError(f"attachments on a non-binary packet: {data[:60]!r}")
            if pkt.attachment_count > _MAX_ATTACHMENTS:
                raise _ProtocolError(f"{pkt.attachment_count} attachments announced")
            self._partial = pkt
            return
        self._dispatch(pkt, now, out)

    def _dispatch(self, pkt: sio_packet.Packet, now: float, out: list[Action]) -> None:
        ns = pkt.namespace or "/"
        if ns != self._ns:
            return  # another namespace multiplexed on this session: not ours
        t, data = pkt.packet_type, pkt.data
        if t in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                raise _ProtocolError(f"EVENT without a name: {data!r:.60}")
            if self._state is CONNECTED:
                out.append(self._event(ns, data, pkt.id, replayed=False))
            elif self._state is CONNECTING:
                # socket.io-client's receiveBuffer: fired once connected (a recovered session's replay)
                if len(self._early) >= MAX_EVENTS_BEFORE_CONNECT:
                    raise _ProtocolError(f"more than {MAX_EVENTS_BEFORE_CONNECT} events before the CONNECT reply")
                self._early.append(EventReceived(ns, data[0], data[1:], pkt.id))
        elif t in (sio_packet.ACK, sio_packet.BINARY_ACK):
            if pkt.id is None or not (data is None or isinstance(data, list)):
                raise _ProtocolError(f"bad ACK {pkt.id!r} {data!r:.60}")
            p = self._acks.pop(pkt.id, None)
            if p is None:
                return  # late ack after a timeout (socket.io-client ignores it too)
            out.append(self._ok(p.step, _ms(p.t0, now), name=p.name, ack_id=pkt.id))
            out.append(AckReceived(ns, pkt.id, data or []))
        elif t == sio_packet.CONNECT:
            self._on_connect(data, now, out)
        elif t == sio_packet.CONNECT_ERROR:
            msg = data.get("message") if isinstance(data, dict) else data
            err = f"CONNECT refused: {str(msg)[:120]}"
            self._close(now, "connect error", "namespace_rejected", err, out)
        elif t == sio_packet.DISCONNECT:
            self._close(now, "io server disconnect", "transport_closed", "server disconnected the namespace", out)
        else:
            raise _ProtocolError(f"unknown Socket.IO packet type {t!r}")

    def _on_connect(self, data: object, now: float, out: list[Action]) -> None:
        if self._state is not CONNECTING:
            return  # duplicate CONNECT: harmless
        if self._eio == 4:
            sid = data.get("sid") if isinstance(data, dict) else None
            if not isinstance(sid, str) or not sid:
                raise _ProtocolError("CONNECT without sid (a Socket.IO v2 server answering a v3+ client?)")
            self._sio_sid = sid
        else:
            self._sio_sid = self._sid if self._ns == "/" else f"{self._ns}#{self._sid}"
        self._to(CONNECTED)
        self._connected_once = True
        self._timers.connect = None
        out.append(self._ok("connect", _ms(self._timers.t_start, now)))
        early, self._early = self._early, []
        if self._recovery is not None:
            outcome = self._recovery.on_connect(*self._rec_sent, data if isinstance(data, dict) else {}, len(early))
            if outcome is not None:
                latency = _ms(self._timers.t_start, now)
                out.append(self._ok("recover", latency) if outcome.recovered
                           else self._fail("recover", "not_recovered", outcome.reason, latency_ms=latency))
        out.append(Connected(self._ns, self._sio_sid))
        for ev in early:  # after Connected, as socket.io-client's emitBuffered() runs on connect
            out.append(self._event(ev.namespace, [ev.event, *ev.args], ev.ack_id, replayed=True))
        buffered, self._sio_buffer = self._sio_buffer, []
        for parts in buffered:
            self._out.extend(parts)
        self._flush(now, out)

    def _event(self, ns: str, data: list[Any], ack_id: int | None, *, replayed: bool) -> EventReceived:
        """An EventReceived, its recovery offset (if the server appended one) taken off its args."""
        args, offset = data[1:], None
        if self._recovery is not None:
            args, offset = self._recovery.on_event(args, ack_id is not None)
        return EventReceived(ns, data[0], args, ack_id, offset, replayed)

    # -- internals: failures and close ----------------------------------------------------------
    def _see_node(self, node: str, now: float, out: list[Action]) -> None:
        if not node:
            return
        if self._node and node != self._node:
            out.append(self._ok("node_switch", None, node=node, error=f"{self._node}->{node}"))
        self._node = node

    # The two StepResult builders: every StepResult of the machine is made by one of them, by
    # keyword (StepResult's 9 positional fields are written out here only).
    def _ok(self, step: str, latency_ms: float | None, *, transport: str | None = None, node: str | None = None,
            error: str = "", name: str | None = None, ack_id: int | None = None) -> StepResult:
        """An ok step of this session: its transport and node unless given; `error` carries only a
        node_switch's "n1->n2" or the WebSocket extension an upgrade_probe's (websocket-only: a
        handshake's) 101 accepted; `name` defaults to `step`."""
        return StepResult(step, True, latency_ms, transport or self._transport, node or self._node, "", error,
                          name or step, ack_id)

    def _fail(self, step: str, kind: str, error: str, *, latency_ms: float | None = None,
              transport: str | None = None, name: str | None = None, ack_id: int | None = None) -> StepResult:
        """A failed step of kind `kind` of this session: its transport unless given, its node;
        `name` defaults to `step`."""
        return StepResult(step, False, latency_ms, transport or self._transport, self._node, kind, error,
                          name or step, ack_id)

    def _fail_step(self, step: str, kind: str, error: str, now: float, out: list[Action], *,
                   name: str | None = None, transport: str | None = None) -> None:
        out.append(self._fail(step, kind, error, name=name, transport=transport))

    def _protocol_error(self, now: float, error: str, out: list[Action]) -> None:
        if self._state is CLOSED:
            return
        if not self._opened:
            self._fail_step("handshake", "protocol_error", error, now, out)
            self._close(now, "connect error", "protocol_error", error, out)
        else:
            self._close(now, "transport error", "protocol_error", error, out)

    def _finish_client_close(self, now: float, out: list[Action]) -> None:
        latency = _ms(self._timers.t_close, now)
        self._close(now, "io client disconnect", "", "", out, latency=latency)

    def _close(self, now: float, reason: str, kind: str, error: str, out: list[Action], *,
               latency: float | None = None) -> None:
        if self._state is CLOSED:
            return
        clean = kind == "" and reason == "io client disconnect"
        if self._connected_once:
            if clean:
                out.append(self._ok("disconnect", latency))
            else:
                out.append(self._fail("disconnect", kind, f"{reason}: {error}".rstrip(": "), latency_ms=latency))
        elif not clean:
            out.append(self._fail("connect", kind, error))
        if self._upgrade.ws:
            out.append(CloseWebSocket())
        if self._polling.get_rid is not None or self._polling.post_rid is not None or (self._transport is POLLING and self._opened):
            out.append(CancelPolling())
        for ack_id, p in self._acks.items():
            akind = kind or "transport_closed"
            aerr = error or "socket has been disconnected"
            # The waiter is released either way (socket.io-client calls an ack-with-error back with
            # "socket has been disconnected"), but an ack the client gave up by closing the session
            # itself (a user stopped mid-call at the end of a run) says nothing about the server:
            # a failed row for it would add failures to every clean run's end.
            if not clean:
                out.append(self._fail(p.step, akind, aerr, name=p.name, ack_id=ack_id))
            out.append(AckFailed(self._ns, ack_id, akind, aerr))
        self._acks.clear()
        self._sio_buffer.clear()
        self._early.clear()
        self._out.clear()
        self._partial = None
        self._upgrade.ws = _WS_NONE
        self._upgrade.probe = _P_NONE
        self._polling.get_rid = self._polling.post_rid = None
        self._timers.disarm()
        self._to(CLOSED)
        out.append(Closed(reason, kind, error))
