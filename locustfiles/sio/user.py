"""`SocketIOUser`: a Locust user that is a browser's socket.io-client, step by step.

A locustfile author calls `connect`, `emit`, `call`, `on`, `wait_for`, `disconnect`; every
protocol step the core measures becomes one Locust request event and one event row.

Locust request events (request_type / name):
- "eio": engine.io steps -- handshake, upgrade_probe, upgrade, poll (failed ones only), ping,
  node_switch (an observation, no duration)
- "sio": socket.io steps -- connect, ack:<event>, emit:<event> (no duration), join, leave,
  disconnect, reconnect, recover (a reconnect that asked for connection-state recovery: ok when
  the server recovered the session; `self.recovery.counts` has what its replays held)
- "broadcast": broadcast_send:<event> (no duration) and broadcast:<event> (receive latency =
  now - payload "sent")
response_time is in ms, None where a step has no duration. A failure's exception message
starts with the error kind (session_unknown, timeout, http_400, ...), so Locust's failure
table groups failures by kind; session ids are masked in it so one kind is one line.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust import User

from contract.options import SioOptions
from contract.rows import make_row
from contract.wire import USER_HEADER
from locustfiles.sio import eventlog, silent
from locustfiles.sio.driver import Session, SessionConfig, http_session
from locustfiles.sio.protocol.actions import (
    AckFailed,
    AckReceived,
    Action,
    Closed,
    Connected,
    EventReceived,
    StepResult,
)
from locustfiles.sio.protocol.backoff import reconnect_delay_ms
from locustfiles.sio.protocol.recovery import Recovery
from locustfiles.sio.transport import HttpSession, parse_source_range, tls_context
from locustfiles.sio.transport.net import Endpoint

log = logging.getLogger(__name__)

EIO_STEPS = frozenset({"handshake", "upgrade_probe", "upgrade", "poll", "ping", "node_switch"})
OK_DETAIL_STEPS = frozenset({"node_switch", "upgrade_probe", "handshake"})
"""Steps whose ok rows keep their `error` text as a detail (contract.rows): a node_switch's
"n1->n2", the WebSocket extension an upgrade_probe's (websocket-only: handshake's) 101 accepted."""
BROADCAST_STEPS = frozenset({"broadcast_send", "broadcast_recv"})
_user_ids = itertools.count(1)
_proc_tags: dict[int, str] = {}


def _proc_tag() -> str:
    """This process's user-id tag, made lazily: `locust --processes N` forks the workers after
    the locustfile is imported, so a tag made at import time was shared by every worker and
    user ids collided across workers (breaking per-user rows, membership and delivery)."""
    pid = os.getpid()
    if pid not in _proc_tags:
        _proc_tags[pid] = f"{pid:x}{random.SystemRandom().getrandbits(16):04x}"
    return _proc_tags[pid]


class SioError(Exception):
    """A failed Socket.IO step as seen by a locustfile; the message starts with the error kind."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


def request_type(step: str) -> str:
    if step in EIO_STEPS:
        return "eio"
    if step in BROADCAST_STEPS:
        return "broadcast"
    return "sio"


def _opt(environment: Any, name: str, default: Any) -> Any:
    opts = getattr(environment, "parsed_options", None)
    v = getattr(opts, name, None) if opts is not None else None
    return default if v is None else v


class SocketIOUser(User):
    """Base class: subclass it, write tasks that use the methods below."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.user_id = f"u{_proc_tag()}-{next(_user_ids)}"
        self.session: Session | None = None
        self._http: HttpSession | None = None
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._waiters: dict[str, list[AsyncResult]] = {}
        self._acks: dict[int, AsyncResult] = {}
        self._connected: AsyncResult | None = None
        self._closed: AsyncResult | None = None
        self._want_connected = False
        self._reconnector: gevent.Greenlet | None = None
        self._conn_args: dict[str, Any] = {}
        self.rooms: set[str] = set()
        # socket.io-client's pid and last offset, kept across reconnects (protocol/recovery.py)
        self.recovery = Recovery()
        self._recovery_shipped: dict[str, int] = {}  # self.recovery.counts as last handed to the event log
        self._offline_until = 0.0  # blip `silent`: no reconnect before this time.monotonic()
        self._reconnecting = False  # a reconnect loop's session is opening (on_session_connected says so)
        self._ended = False
        silent.register(environment, self)

    # -- options ---------------------------------------------------------------------------------
    def option(self, name: str, default: Any) -> Any:
        """A Locust option by its dest name (e.g. "sio_room_size"); `default` when absent or None,
        as when a test builds the Environment without parsed options."""
        return _opt(self.environment, name, default)

    @property
    def sio_options(self) -> SioOptions:
        """The --sio-* options, typed, with the table's defaults (contract/options.py): what a
        scenario reads (`self.sio_options.room_size`) instead of restating a default.

        Read once per user and kept: `call()` asks for the timeout on every acked emit, and
        building the typed options costs ~8 µs, a tenth of an acked emit's CPU. Locust sets the
        options (command line or web UI form) before it spawns users, so a user never sees them change.
        """
        o = self.__dict__.get("_sio_options")
        if o is None:
            o = self.__dict__["_sio_options"] = SioOptions.from_environment(self.environment)
        return o

    @property
    def timeout(self) -> float:
        return self.sio_options.timeout

    def _config(self, url: str | None, namespace: str | None, auth: Any, headers: dict[str, str] | None,
                transports: Any) -> SessionConfig:
        env = self.environment
        url = url or self.host or getattr(env, "host", None)
        if not url:
            raise ValueError("SocketIOUser: no target URL (pass --host or connect(url=...))")
        o = self.sio_options
        sources = parse_source_range(o.source_range)
        source_ip = sources[(int(self.user_id.rsplit("-", 1)[1]) - 1) % len(sources)] if sources else None
        tls = tls_context(o.ca_file, o.insecure) if Endpoint.from_url(url).tls else None
        # --sio-user-header: the user's own id for a balancer that hashes a header (nginx header-hash)
        sent = {USER_HEADER: self.user_id, **(headers or {})} if o.user_header else dict(headers or {})
        return SessionConfig.from_options(o, url, namespace=namespace, auth=auth, transports=transports,
                                          source_ip=source_ip, tls=tls, headers=sent)

    # -- public API ------------------------------------------------------------------------------
    def connect(
        self,
        url: str | None = None,
        namespace: str | None = None,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        transports: list[str] | tuple[str, ...] | str | None = None,
        wait: bool = True,
    ) -> bool:
        """Open a session (handshake → CONNECT → upgrade as configured); True once connected.

        With wait=False it returns at once (False) and the session connects in the background.
        """
        self._conn_args = {"url": url, "namespace": namespace, "auth": auth, "headers": headers,
                           "transports": transports}
        self._want_connected = True
        # a new connect() is a new socket.io-client Socket: no pid to recover; its counts stay
        self.recovery.reset()
        return self._open(wait)

    def _open(self, wait: bool) -> bool:
        if self.session is not None and not self.session.closed:
            self.session.abort()
        cfg = self._config(**self._conn_args)
        if self._http is None or self._http.endpoint != Endpoint.from_url(cfg.url):
            if self._http is not None:
                self._http.close()
            self._ship_recovery()
            # one HTTP agent per user for its whole life: the cookie jar survives reconnects
            self._http = http_session(cfg)
        self._connected = AsyncResult()
        self._closed = AsyncResult()
        self.session = Session(cfg, self._on_action, http=self._http, recovery=self.recovery)
        self.session.start()
        if not wait:
            return False
        # the core bounds the connect by cfg.timeout and always reports; the margin is a backstop
        if not self._connected.wait(cfg.timeout + 2.0):
            self.session.abort()
            return False
        return bool(self._connected.value)

    @property
    def connected(self) -> bool:
        return self.session is not None and not self.session.closed and self.session.proto.state == "connected"

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        """Call handler(*args) for every server event `event` (a return value is sent as the ack)."""
        self._handlers.setdefault(event, []).append(handler)

    def emit(self, event: str, *args: Any, step: str | None = None, name: str | None = None,
             room: str = "", msg_id: str = "", ts: float | None = None) -> None:
        """Emit without ack (buffered until connected, as socket.io-client does). `ts`: the time its
        step row carries (default: when the step ends), e.g. the payload's own send time."""
        if self.session is None:
            raise SioError("transport_closed", "emit before connect()")
        ctx = {"room": room, "msg_id": msg_id} if room or msg_id or ts is not None else None
        if ctx is not None and ts is not None:
            ctx["ts"] = repr(float(ts))
        self.session.emit(event, *args, ack=False, step=step, name=name, ctx=ctx)

    def call(self, event: str, *args: Any, timeout: float | None = None, step: str | None = None,
             name: str | None = None, room: str = "", msg_id: str = "") -> list[Any]:
        """Emit with ack and wait for it; returns the ack's args, raises SioError on failure."""
        if self.session is None:
            raise SioError("transport_closed", "call before connect()")
        ctx = {"room": room, "msg_id": msg_id} if room or msg_id else None
        res = AsyncResult()
        ack_id = self.session.emit(event, *args, ack=True, step=step, name=name, ctx=ctx)
        if ack_id is None:  # the core failed the emit at once: the session is closed
            raise SioError("transport_closed", f"{event!r}: the session is closed")
        if ack_id in self._early:
            res = self._early.pop(ack_id)
        else:
            self._acks[ack_id] = res
        try:
            ok, value = res.get(timeout=(timeout or self.timeout) + 2.0)
        except gevent.Timeout:
            raise SioError("timeout", f"no ack for {event!r}") from None
        finally:
            self._acks.pop(ack_id, None)
        if not ok:
            raise SioError(*value)
        return value

    def wait_for(self, event: str, timeout: float | None = None) -> list[Any]:
        """Block until the server emits `event`; returns its args; SioError(timeout) otherwise."""
        res = AsyncResult()
        self._waiters.setdefault(event, []).append(res)
        try:
            return res.get(timeout=timeout or self.timeout)
        except gevent.Timeout:
            raise SioError("timeout", f"no {event!r} event within {timeout or self.timeout:g}s") from None
        finally:
            lst = self._waiters.get(event)
            if lst and res in lst:
                lst.remove(res)

    def disconnect(self, timeout: float | None = None) -> None:
        """Client-side disconnect ("io client disconnect"); waits (bounded) for the close."""
        self._want_connected = False
        if self._reconnector is not None:
            self._reconnector.kill(block=False)
            self._reconnector = None
        s = self.session
        if s is None or s.closed:
            return
        s.disconnect()
        if self._closed is not None:
            self._closed.wait(timeout or self.timeout)
        if not s.closed:
            s.abort()
        self.rooms.clear()

    def local_addresses(self) -> set[str]:
        """The client addresses ("ip:port") of every connection the user holds now (its WebSocket and
        its HTTP agent's): what the balancer lists, and what a blip `silent` order names."""
        socks = (self.session.sockets() if self.session is not None else []) + (
            self._http.sockets() if self._http is not None else [])
        return {a for a in map(silent.address, socks) if a}

    def go_silent(self, duration: float) -> bool:
        """The network is gone for `duration` s (blip `silent`, locustfiles/sio/silent.py): every
        connection is kept open and unanswered (no FIN), the session ends (`network_lost`), the
        reconnect waits until the network is back. False when there was no session to lose."""
        s = self.session
        if s is None or s.closed or self._ended:
            return False
        http = self._http
        fds = silent.keep(s.sockets() + (http.sockets() if http is not None else []))
        self._offline_until = time.monotonic() + duration
        if http is not None:  # a new agent (no connections yet) with the same cookie jar
            self._http = http_session(s.cfg)
            self._http.cookies = http.cookies
        s.network_lost(f"network lost for {duration:g} s (blip silent): connections left open, unanswered")
        if http is not None:
            http.close()  # its descriptors are kept: nothing reaches the server
        for fd in fds:
            gevent.spawn_later(duration, silent.drain, fd, lambda: self._ended)
        return True

    def on_session_connected(self, reconnect: bool) -> None:
        """Hook: a session's CONNECT was answered, before the events the server replayed with it are
        delivered (`reconnect`: opened by the reconnect loop). Runs in the I/O greenlet: must not block."""

    def on_reconnected(self) -> None:
        """Hook: the session came back after a loss (rejoin rooms here). Runs in its own greenlet."""

    # -- Locust plumbing -------------------------------------------------------------------------
    @property
    def _early(self) -> dict[int, AsyncResult]:
        # acks that resolved inside emit() (e.g. the session was already closed)
        d = self.__dict__.get("_early_acks")
        if d is None:
            d = self.__dict__["_early_acks"] = {}
        return d

    def run(self) -> None:  # wraps Locust's loop so teardown runs however it ends
        try:
            super().run()
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._ended = True  # the kept connections of a silent blip are closed by their drains
        try:
            if self.session is not None and not self.session.closed:
                with gevent.Timeout(2.0, False):
                    self.disconnect(timeout=1.5)
        finally:
            self._want_connected = False
            if self._reconnector is not None:
                self._reconnector.kill(block=False)
            if self.session is not None:
                self.session.abort()
            if self._http is not None:
                self._http.close()

    # -- core → user -----------------------------------------------------------------------------
    def _on_action(self, a: Action, ctx: dict[str, str] | None) -> None:
        t = type(a)
        if t is StepResult:
            self._step(a, ctx)
        elif t is EventReceived:
            self._event(a)
        elif t is AckReceived:
            self._resolve_ack(a.ack_id, (True, a.args))
        elif t is AckFailed:
            self._resolve_ack(a.ack_id, (False, (a.error_kind, a.error)))
        elif t is Connected:
            try:
                self.on_session_connected(self._reconnecting)
            except Exception:  # a scenario hook bug must not kill the session
                log.exception("on_session_connected failed")
            if self._connected is not None:
                self._connected.set(True)
        elif t is Closed:
            self._on_closed(a)

    def _resolve_ack(self, ack_id: int, value: tuple[bool, Any]) -> None:
        res = self._acks.pop(ack_id, None)
        if res is None:
            res = AsyncResult()
            self._early[ack_id] = res
            if len(self._early) > 1000:  # acks for emits nobody waits on (emit(step=...) with ack)
                self._early.pop(next(iter(self._early)))
        res.set(value)

    def _event(self, a: EventReceived) -> None:
        for res in self._waiters.pop(a.event, []):
            res.set(a.args)
        for h in self._handlers.get(a.event, ()):
            try:
                out = h(*a.args)
            except Exception:  # a locustfile handler bug must not kill the session
                log.exception("handler for %r failed", a.event)
                continue
            if a.ack_id is not None and self.session is not None:
                self.session.send_ack(a.ack_id, *(() if out is None else (out,)))

    def _step(self, a: StepResult, ctx: dict[str, str] | None) -> None:
        s = self.session
        self.log_step(
            a.step, a.name, a.latency_ms, a.ok, a.error_kind, a.error, transport=a.transport, node=a.node,
            room=ctx.get("room", "") if ctx else "", msg_id=ctx.get("msg_id", "") if ctx else "",
            eio_sid=s.proto.eio_sid if s else "", sio_sid=s.proto.sio_sid if s else "",
            ts=float(ctx["ts"]) if ctx and "ts" in ctx else None,
        )

    def log_step(self, step: str, name: str, latency_ms: float | None, ok: bool, error_kind: str = "",
                 error: str = "", *, transport: str = "", node: str = "", room: str = "", msg_id: str = "",
                 eio_sid: str | None = None, sio_sid: str | None = None, ts: float | None = None) -> None:
        """Fire the Locust request event and record the event row for one step (`ts`: when it
        happened, default now; the chat's send row takes its payload's `sent`, so that sender and
        receivers judge the room's membership at the same instant)."""
        s = self.session
        if eio_sid is None:
            eio_sid = s.proto.eio_sid if s else ""
        if sio_sid is None:
            sio_sid = s.proto.sio_sid if s else ""
        exc = None
        if not ok:
            detail = error
            for sid in (eio_sid, sio_sid):
                if sid:
                    detail = detail.replace(sid, "<sid>")
            exc = SioError(error_kind or "protocol_error", detail[:200])
        self.environment.events.request.fire(
            request_type=request_type(step), name=name, response_time=latency_ms, response_length=0,
            exception=exc, context={"user": self.user_id, "node": node},
        )
        row = make_row(
            step, user=self.user_id, eio_sid=eio_sid, sio_sid=sio_sid, name=name, transport=transport,
            node=node, latency_ms=latency_ms, ok=1 if ok else 0, error_kind="" if ok else error_kind,
            error=error[:500] if not ok or step in OK_DETAIL_STEPS else "", room=room, msg_id=msg_id,
        )
        if ts is not None:
            row["ts"] = ts
        eventlog.record(self.environment, row)

    def _ship_recovery(self) -> None:
        """Hand what the recovery counters gained since last time to this process's event log batch."""
        now = self.recovery.counts
        deltas = {k: n - self._recovery_shipped.get(k, 0) for k, n in now.items() if n != self._recovery_shipped.get(k, 0)}
        if deltas:
            self._recovery_shipped = dict(now)
            eventlog.count_recovery(self.environment, deltas)

    def _on_closed(self, a: Closed) -> None:
        self._ship_recovery()
        if self._connected is not None and not self._connected.ready():
            self._connected.set(False)
        if self._closed is not None:
            self._closed.set(a)
        for res in list(self._acks.values()):
            res.set((False, (a.error_kind or "transport_closed", a.reason)))
        self._acks.clear()
        if a.reason == "io server disconnect" or a.error_kind == "namespace_rejected":
            # socket.io-client does not reconnect when the server ended the namespace (DISCONNECT)
            # or refused it (CONNECT_ERROR): the socket goes inactive until the app calls
            # connect() again (docs/protocol.md §4.2). Reconnecting here would turn a server's kick
            # or an auth refusal into a reconnect storm the real client never makes.
            self._want_connected = False
        lost = a.error_kind != "" and self._want_connected
        if lost and self.sio_options.reconnect:
            if self._reconnector is None or self._reconnector.dead:
                self._reconnector = gevent.spawn(self._reconnect_loop, time.monotonic())

    def _reconnect_loop(self, lost_at: float) -> None:
        """socket.io-client's Manager.reconnect(): backoff, new session, until connected or told to stop."""
        attempt = 0
        while self._want_connected:
            attempt += 1
            gevent.sleep(reconnect_delay_ms(attempt, random.random()) / 1000.0)
            offline = self._offline_until - time.monotonic()
            if offline > 0:  # blip silent: the attempts fail until the network is back
                gevent.sleep(offline)
            if not self._want_connected:
                return
            t0 = time.monotonic()
            self._reconnecting = True
            try:
                ok = self._open(wait=True)
            finally:
                self._reconnecting = False
            latency = (time.monotonic() - lost_at) * 1000.0
            s = self.session
            self.log_step("reconnect", "reconnect", latency if ok else (time.monotonic() - t0) * 1000.0, ok,
                          "" if ok else "connection_refused" if s is None else self._last_kind(),
                          "" if ok else f"attempt {attempt} failed", node=s.proto.node if s else "")
            if ok:
                self._reconnector = None
                try:
                    self.on_reconnected()
                except Exception:  # a scenario hook bug must not stop reconnecting
                    log.exception("on_reconnected failed")
                return

    def _last_kind(self) -> str:
        c = self._closed.value if self._closed is not None and self._closed.ready() else None
        return (c.error_kind or "transport_closed") if c else "timeout"
