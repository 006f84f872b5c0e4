"""Runs one sans-IO `ClientProtocol` over gevent I/O: the only place sockets meet the core.

One `Session` = one Engine.IO session of one virtual user. Its greenlets: one per outstanding
polling request (a parked GET and a POST, on separate keep-alive connections of the user's
`HttpSession`, as a browser does), one reader per WebSocket, and a plain event-loop timer
at the core's `next_deadline()` that starts a greenlet to call `tick()` only if it fires. Every wait is bounded (HTTP and WebSocket
handshakes by the transport timeout, everything else by the core's own deadlines).
Application-facing actions (StepResult, Connected, EventReceived, AckReceived, AckFailed,
Closed) go to one `on_action` callback, in order. WebSocket frames of one core step are
written together at the end of the step (before an EventReceived callback, which may block),
so other callbacks must not block.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import ssl

from contract.config import DEFAULT_HTTP_POOL
from contract.options import SioOptions
from contract.wire import (
    CADDY_COOKIE,
    DEFAULT_TRANSPORTS,
    NODE_COOKIE,
    NODE_HEADER,
    TRAEFIK_COOKIE,
    TRAEFIK_LABEL,
)
from locustfiles.sio.protocol.actions import (
    Action,
    CancelPolling,
    Closed,
    CloseWebSocket,
    EventReceived,
    HttpRequest,
    OpenWebSocket,
    StepResult,
    WsSend,
)
from locustfiles.sio.protocol.client import ClientProtocol
from locustfiles.sio.protocol.recovery import Recovery
from locustfiles.sio.transport import Endpoint, HttpSession, TransportError, WebSocket
from locustfiles.sio.transport.http import HttpResponse
from locustfiles.sio.transport.net import alpn_context
from locustfiles.sio.transport.pooled import PooledHttpSession
from locustfiles.sio.transport.websocket import HandshakeRefused

POLL_SAFETY_S = 60.0
"""Transport bound on a parked long-poll GET: above pingInterval + pingTimeout (45 s by default),
which the core enforces itself; this only catches a core that forgot to."""
_RNG = random.Random()
"""Cache-busters only: one generator per process (a new Random per session seeds itself from
os.urandom, which cost more than building the rest of the session)."""


@dataclass
class SessionConfig:
    """How one user connects; built from the Locust options by user.py."""

    url: str
    eio: int = 4
    transports: tuple[str, ...] = DEFAULT_TRANSPORTS
    path: str = "/socket.io/"
    namespace: str = "/"
    auth: dict[str, Any] | None = None
    timeout: float = 10.0
    node_header: str = NODE_HEADER
    source_ip: str | None = None
    tls: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)
    http_pool: str = DEFAULT_HTTP_POOL  # contract.config.HTTP_POOLS: how HTTP requests get connections
    ws_deflate: bool = True  # the WebSocket offers permessage-deflate (as Chrome and the Node.js client)

    def __post_init__(self) -> None:
        # The HTTP layer lower-cases response header names, so `--sio-node-header X-Served-By`
        # found nothing before this.
        self.node_header = self.node_header.strip().lower()

    @classmethod
    def from_options(cls, o: SioOptions, url: str, namespace: str | None = None, auth: Any = None,
                     transports: Any = None, **rest: Any) -> SessionConfig:
        """From the --sio-* options; `namespace`, `auth` and `transports` override them when given
        (connect()'s arguments), `rest` sets the fields the options do not (source_ip, tls, headers)."""
        if transports is None:
            transports = o.transports
        if isinstance(transports, str):
            transports = [t.strip() for t in transports.replace("+", ",").split(",") if t.strip()]
        if auth is None:
            auth = json.loads(o.auth) if o.auth else None
        return cls(url=url, eio=o.eio, transports=tuple(transports), path=o.path,
                   namespace=namespace or o.namespace, auth=auth, timeout=o.timeout,
                   node_header=o.node_header, http_pool=o.http_pool, ws_deflate=o.ws_deflate, **rest)


def http_session(cfg: SessionConfig) -> HttpSession:
    """The user's HTTP agent for `cfg.url`: Chromium's pool (`browser`) or a connection bound to
    each concurrent request (`node`, `HttpSession`)."""
    cls = PooledHttpSession if cfg.http_pool == "browser" else HttpSession
    return cls(Endpoint.from_url(cfg.url), cfg.timeout, cfg.source_ip, cfg.tls, extra_headers=cfg.headers)


# A node id is a short name (n1, a pod name, a cookie value); the server chooses it, and it goes
# into every row: a longer value is cut here so that a hostile header cannot swell the event log.
MAX_NODE_ID_CHARS = 128


def node_of(headers: dict[str, str], http: HttpSession, node_header: str) -> str:
    """Which backend served a response: the node header, else the balancer's sticky cookie.

    HAProxy's cookie is the node id; Traefik's and Caddy's are hashes of the server address, recorded
    as `traefik:<value>` / `lb:<value>` (the analysis maps Traefik's back to the node id from meta.json)."""
    node = headers.get(node_header)
    if node:
        return node[:MAX_NODE_ID_CHARS]
    v = http.cookies.get(NODE_COOKIE)
    if v:
        return v[:MAX_NODE_ID_CHARS]
    v = http.cookies.get(TRAEFIK_COOKIE)
    if v:
        return f"{TRAEFIK_LABEL}{v[:MAX_NODE_ID_CHARS]}"
    v = http.cookies.get(CADDY_COOKIE)
    return f"lb:{v[:MAX_NODE_ID_CHARS]}" if v else ""


class Session:
    """One Engine.IO/Socket.IO session; `http` may be shared across a user's sessions (cookie jar)."""

    def __init__(
        self,
        cfg: SessionConfig,
        on_action: Callable[[Action, dict[str, str] | None], None],
        http: HttpSession | None = None,
        recovery: Recovery | None = None,
    ) -> None:
        self.cfg = cfg
        self.endpoint = Endpoint.from_url(cfg.url)
        self.http = http or http_session(cfg)
        self.proto = ClientProtocol(
            eio=cfg.eio,
            transports=cfg.transports,
            path=cfg.path,
            namespace=cfg.namespace,
            auth=cfg.auth,
            connect_timeout=cfg.timeout,
            rng=_RNG,
            recovery=recovery,
        )
        self._on_action = on_action
        self._path = cfg.path if cfg.path.endswith("/") else cfg.path + "/"
        self._polls: set[gevent.Greenlet] = set()
        self._adopter: gevent.Greenlet | None = None  # the HTTP greenlet feeding its answer now
        self._adopted: HttpRequest | None = None  # the request it will run next
        self._ws: WebSocket | None = None
        self._ws_greenlet: gevent.Greenlet | None = None
        self._ws_closing = False
        self._ws_error: TransportError | None = None
        self._timer = None  # libev timer watcher armed at _timer_at (None: nothing armed)
        self._timer_at: float | None = None
        self._ticker: gevent.Greenlet | None = None  # the greenlet running tick(), while it runs
        self._ctx: dict[int, dict[str, str]] = {}  # ack id -> row context (room, msg_id)
        self._sync_ctx: dict[str, str] | None = None
        self.closed = False

    # -- application calls ---------------------------------------------------------------------
    def start(self) -> None:
        self._feed(self.proto.start(time.monotonic()))

    def emit(
        self,
        event: str,
        *args: Any,
        ack: bool = False,
        step: str | None = None,
        name: str | None = None,
        ctx: dict[str, str] | None = None,
    ) -> int | None:
        """Emit; `ctx` (room, msg_id) is attached to the step row(s) of this emit."""
        ack_id, actions = self.proto.emit(event, *args, ack=ack, now=time.monotonic(), step=step, name=name)
        if ctx and ack_id is not None:
            self._ctx[ack_id] = ctx
        self._sync_ctx = ctx
        try:
            self._feed(actions)
        finally:
            self._sync_ctx = None
        return ack_id

    def send_ack(self, ack_id: int, *args: Any) -> None:
        self._feed(self.proto.send_ack(ack_id, *args, now=time.monotonic()))

    def disconnect(self) -> None:
        self._feed(self.proto.disconnect(time.monotonic()))

    def abort(self) -> None:
        """Stop all I/O now (Locust stopping the user): no protocol, no more callbacks."""
        self.closed = True
        self._ws_closing = True
        if self._ws is not None:
            self._ws.close(send_frame=False)
        self._stop_timer()
        cur = gevent.getcurrent()
        others = [g for g in (*self._polls, self._ws_greenlet, self._ticker) if g is not None and g is not cur]
        self._polls.clear()
        gevent.killall(others, block=False)

    def sockets(self) -> list[Any]:
        """The sockets this session holds now: its WebSocket's (its HTTP agent's are the user's)."""
        ws = self._ws
        return [ws._conn.sock] if ws is not None and not ws.closed else []

    def network_lost(self, error: str) -> None:
        """The device lost its network (blip `silent`): the core closes the session (`network_lost`)
        and no byte is written on the way out. The caller has kept the sockets' descriptors
        (`os.dup`), so closing this session's socket objects sends neither FIN nor RST."""
        ws, self._ws = self._ws, None
        self._ws_closing = True
        if ws is not None:
            ws.close(send_frame=False)
        self._feed(self.proto.network_lost(time.monotonic(), error))

    # -- the action loop ---------------------------------------------------------------------
    def _feed(self, actions: list[Action]) -> None:
        for a in actions:
            t = type(a)
            if self.closed and t is not StepResult and t is not Closed:
                continue
            if t is HttpRequest:
                if self._adopted is None and self._adopter is not None and self._adopter is gevent.getcurrent():
                    self._adopted = a  # run by the HTTP greenlet feeding this step, once it returns
                else:
                    self._polls.add(gevent.spawn(self._http, a))
            elif t is WsSend:
                ws = self._ws
                if ws is not None and not ws.closed:  # else the reader reports the close
                    ws.queue(a.data)
            elif t is OpenWebSocket:
                self._ws_closing = False
                self._ws_greenlet = gevent.spawn(self._websocket, a)
            elif t is CloseWebSocket:
                self._close_ws()
            elif t is CancelPolling:
                self._cancel_polls()
            else:
                if t is EventReceived and self._ws is not None:
                    self._ws_flush()  # event handlers are user code that may block: write first
                ctx = None
                if t is StepResult:
                    ctx = self._ctx.pop(a.ack_id, None) if a.ack_id is not None else self._sync_ctx
                elif t is Closed:
                    self.closed = True
                self._on_action(a, ctx)
        if self._ws is not None:
            self._ws_flush()
        if self.closed:
            self._finish()
        else:
            self._arm_timer()

    def _finish(self) -> None:
        """After Closed: release every socket and greenlet still held (except the caller)."""
        self._close_ws()
        self._cancel_polls()
        self._stop_timer()

    def _stop_timer(self) -> None:
        t, self._timer, self._timer_at = self._timer, None, None
        if t is not None:
            t.close()

    def _arm_timer(self) -> None:
        """Keep one event-loop timer at the core's next deadline.

        Why a bare libev timer rather than gevent.spawn_later: deadlines are armed and moved on
        almost every step but rarely fire; a timer watcher costs a fraction of a greenlet (no
        Greenlet object, no stack) per arming and per idle session. Its callback runs in the
        hub, which must not block, so it only starts the greenlet that calls tick().
        """
        d = self.proto.next_deadline()
        if d is None:
            if self._timer is not None:
                self._stop_timer()
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= d:
            return  # an earlier (or equal) tick is already scheduled; it will re-arm
        if self._timer is not None:
            self._timer.close()
        self._timer_at = d
        t = self._timer = gevent.get_hub().loop.timer(max(0.0, d - time.monotonic()))
        t.start(self._timer_fired, t)

    def _timer_fired(self, t) -> None:  # t: the libev timer watcher
        if t is not self._timer:
            return  # replaced or stopped after it fired (same loop iteration)
        self._timer = None
        self._timer_at = None
        t.close()
        if not self.closed:
            self._ticker = gevent.spawn(self._tick)

    def _tick(self) -> None:
        try:
            if not self.closed:
                self._feed(self.proto.tick(time.monotonic()))
        finally:
            if self._ticker is gevent.getcurrent():
                self._ticker = None

    # -- HTTP long-polling ---------------------------------------------------------------------
    def _http(self, req: HttpRequest) -> None:
        """Greenlet body: this request, then the first request its answer caused (if any).

        Why the loop: a finished request's greenlet takes over the next HttpRequest of the step
        its answer fed (handshake → CONNECT POST, POST answer → next GET) instead of spawning a
        new greenlet for it. The wire order is unchanged: that request is the step's first, and
        spawned greenlets only start after this one blocks on its send/receive.
        """
        me = gevent.getcurrent()
        nxt: HttpRequest | None = req
        while nxt is not None:
            nxt = self._http_once(nxt, me)

    def _feed_adopting(self, actions: list[Action], me: gevent.Greenlet) -> HttpRequest | None:
        self._adopter = me
        try:
            self._feed(actions)
        finally:
            self._adopter = None
        nxt, self._adopted = self._adopted, None
        if nxt is None or self.closed:
            return None
        self._polls.add(me)
        return nxt

    def _http_once(self, req: HttpRequest, me: gevent.Greenlet) -> HttpRequest | None:
        target = f"{self._path}?{req.query}"
        bound = POLL_SAFETY_S if req.purpose == "poll" else self.cfg.timeout + 1.0
        try:
            resp: HttpResponse = self.http.request(req.method, target, req.body or b"", timeout=bound,
                                                   content_type=req.content_type)
        except TransportError as e:
            self._polls.discard(me)
            if not self.closed:
                return self._feed_adopting(
                    self.proto.http_failed(req.rid, e.kind, e.detail or str(e), time.monotonic()), me)
            return None
        self._polls.discard(me)
        if self.closed:
            return None
        node = node_of(resp.headers, self.http, self.cfg.node_header)
        return self._feed_adopting(
            self.proto.http_response(
                req.rid,
                resp.status,
                resp.body,
                resp.received_at or time.monotonic(),  # when read: a browser's release lag is not the server's latency
                node=node,
                content_type=resp.headers.get("content-type", ""),
            ),
            me,
        )

    def _cancel_polls(self) -> None:
        self._adopted = None
        cur = gevent.getcurrent()
        polls = [g for g in self._polls if g is not cur]
        self._polls.clear()
        if polls:
            gevent.killall(polls, block=False)

    # -- WebSocket -----------------------------------------------------------------------------
    def _websocket(self, req: OpenWebSocket) -> None:
        target = f"{self._path}?{req.query}"
        try:
            ws = WebSocket.connect(
                self.endpoint,
                target,
                timeout=self.cfg.timeout,
                source_ip=self.cfg.source_ip,
                tls=self._ws_tls(),
                cookie=self.http.cookies.header(),
                extra_headers=self.cfg.headers,
                deflate=self.cfg.ws_deflate,
            )
        except HandshakeRefused as e:
            if e.response.set_cookie:
                self.http.cookies.update(e.response.set_cookie)
            if not self.closed and not self._ws_closing:
                node = node_of(e.response.headers, self.http, self.cfg.node_header)
                self._feed(
                    self.proto.ws_failed(
                        e.response.status, e.response.body, e.kind, e.detail, time.monotonic(), node=node
                    )
                )
            return
        except TransportError as e:
            if not self.closed and not self._ws_closing:
                self._feed(self.proto.ws_failed(None, b"", e.kind, e.detail or str(e), time.monotonic()))
            return
        if self.closed or self._ws_closing:
            ws.close()
            return
        if ws.response.set_cookie:
            self.http.cookies.update(ws.response.set_cookie)
        self._ws = ws
        self._feed(self.proto.ws_opened(time.monotonic(), node=node_of(ws.response.headers, self.http, self.cfg.node_header),
                                        extension=ws.extension))
        proto = self.proto
        while True:
            try:
                data = ws.recv()
            except TransportError as e:
                if self.closed or self._ws_closing:
                    return
                err = self._ws_error or e
                self._feed(proto.ws_closed(time.monotonic(), err.detail or str(err), error_kind=err.kind))
                return
            if self.closed:
                return
            now = time.monotonic()
            at = self._timer_at
            if at is not None and now >= at:
                # Why: a deadline that passed while messages kept arriving is enforced here, by
                # the clock, before the message that came too late; the hub's timer would fire
                # late (or, were the reader to hog the hub, never) under a flood.
                self._stop_timer()
                self._feed(proto.tick(now))
                if self.closed or self._ws_closing:
                    return
            self._feed(proto.ws_message(data, now))

    def _ws_tls(self) -> ssl.SSLContext | None:
        """The WebSocket's TLS context: a browser's offers ALPN http/1.1 only (Chromium's WebSocket
        connections never ask for h2); the Node.js client's offers none."""
        if self.cfg.http_pool == "browser" and self.endpoint.tls:
            return alpn_context(self.cfg.tls, ("http/1.1",))
        return self.cfg.tls

    def _ws_flush(self) -> None:
        """Write the frames this step queued (WsSend actions), in one write."""
        ws = self._ws
        if ws is None or ws.closed:
            return  # the reader reports the close; the core then fails what was pending
        try:
            ws.flush()
        except TransportError as e:
            self._ws_error = e
            ws.close(send_frame=False)  # wakes the reader, which reports ws_closed once

    def _close_ws(self) -> None:
        self._ws_closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
        g, self._ws_greenlet = self._ws_greenlet, None
        if g is not None and g is not gevent.getcurrent() and ws is None:
            g.kill(block=False)  # still connecting
