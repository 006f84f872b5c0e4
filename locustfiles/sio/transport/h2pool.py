"""A browser's choice between HTTP/2 and its HTTP/1.1 pool for one origin, sans-IO (issue 13).

Why: over TLS Chromium offers ALPN ["h2", "http/1.1"] on every connection of its HTTP pool. When
the balancer chooses h2, every later polling request of that origin is a stream on that one
connection, so behind a per-connection (L4) balancer all of them reach one node, and behind an
L7 one the balancer decides per stream. Modelling only the HTTP/1.1 pool would show a TLS
config whose client side speaks h2 as it would be over HTTP/1.1 -- wrong in both directions.

Modelled on Chromium's `net/spdy/spdy_session_pool.cc` and `net/http/http_stream_factory_job.cc`
(docs/protocol.md, section 8):
- one HTTP/2 session per origin (`SpdySessionKey`: host, port, privacy mode): a request that
  finds an available session becomes a stream on it (`FindAvailableSession`);
- a request while the origin is known to speak h2 (`HttpServerProperties::GetSupportsSpdy`) but
  its session is still being set up waits for that session rather than opening a connection of
  its own (`SpdySessionPool::RequestSession`: only the first request connects; the others are
  resumed by `OnNewSpdySessionReady`);
- a connection whose ALPN chose h2 becomes the session, and the requests waiting in the
  HTTP/1.1 group all become streams on it (`OnNewSpdySessionReady`); a second connection that
  also comes up h2 while a session exists is closed unused (sioscale; Chromium keeps at most one
  available session per key);
- a session that closes, or that the server sends GOAWAY on, takes no new streams
  (`MakeUnavailable`); the next request sets up a new one, the others wait for it;
- ALPN http/1.1 (or plain http): the HTTP/1.1 pool's rules (`transport/pool.py`) alone.

Not modelled: the 300 ms throttle after which a waiting request connects on its own
(`kHTTP2ThrottleMs`: on loopback a session is up in a few ms), MAX_CONCURRENT_STREAMS queueing
(Engine.IO has at most two requests in flight; servers allow 100+), HTTP/3 (Alt-Svc), and
WebSockets over HTTP/2 (RFC 8441): no balancer here advertises SETTINGS_ENABLE_CONNECT_PROTOCOL,
so Chromium gives each WebSocket its own HTTP/1.1 connection, as transport/websocket.py does.

Inputs are calls; outputs are `transport.pool` actions plus `Stream(rid, cid)`. No I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from locustfiles.sio.transport.pool import Close, Connect, Fail, PoolAction, PoolPolicy

H2 = "h2"
HTTP11 = "http/1.1"
ALPN_OFFER = (H2, HTTP11)
"""What Chromium offers by ALPN on its HTTP pool's TLS connections (`SSLConfig::alpn_protos`)."""


@dataclass(frozen=True)
class Stream:
    """Run request `rid` as a new stream on HTTP/2 connection `cid`."""

    rid: int
    cid: int


BrowserAction = PoolAction | Stream


@dataclass
class BrowserPool:
    """One origin's HTTP connections as a browser holds them: an HTTP/2 session, or `h1`."""

    h1: PoolPolicy = field(default_factory=PoolPolicy)
    supports_h2: bool = False  # the origin answered h2 by ALPN (HttpServerProperties)
    session: int | None = None  # the available HTTP/2 session's connection
    session_connect: int | None = None  # the connect that will be the next session (h2 known)
    waiting: deque[int] = field(default_factory=deque)  # requests waiting for that session
    retired: set[int] = field(default_factory=set)  # sessions that take no new streams (GOAWAY)

    @property
    def protocol(self) -> str:
        """What this origin's polling rides: "h2" once ALPN chose it, else "http/1.1"."""
        return H2 if self.supports_h2 else HTTP11

    # -- inputs ----------------------------------------------------------------------------------
    def request(self, rid: int, now: float) -> list[BrowserAction]:
        """A new request: a stream on the session, a wait for it, or the HTTP/1.1 pool's answer."""
        if self.h1.shut:
            return [Fail(rid, "transport_closed", "HTTP session closed")]
        if self.session is not None:
            return [Stream(rid, self.session)]
        if not self.supports_h2:
            return list(self.h1.request(rid, now))
        self.waiting.append(rid)
        if self.session_connect is None:
            c = self.h1.start_connect()
            self.session_connect = c.cid
            return [c]
        return []

    def connected(self, cid: int, protocol: str, now: float) -> list[BrowserAction]:
        """Connection `cid` is up and ALPN chose `protocol` ("h2" or "http/1.1")."""
        if protocol != H2:
            if cid != self.session_connect:
                return list(self.h1.connected(cid, now))
            # h2 was known, the server no longer offers it: the waiting requests join the
            # HTTP/1.1 group, which starts a connect for each one this connection cannot serve
            self.session_connect, self.supports_h2 = None, False
            self.h1.waiting.extend(self.waiting)
            self.waiting.clear()
            out: list[BrowserAction] = list(self.h1.connected(cid, now))
            h1 = self.h1
            while len(h1.waiting) > h1.count("connecting") and len(h1.conns) < h1.max_connections:
                out.append(h1.start_connect())
            return out
        self.h1.withdraw(cid)
        if self.h1.shut:
            return [Close(cid, "HTTP session closed")]
        if self.session is not None:
            if cid == self.session_connect:
                self.session_connect = None
            return [Close(cid, "a second HTTP/2 connection: the origin's session is up")]
        self.supports_h2, self.session = True, cid
        if cid == self.session_connect:
            self.session_connect = None
        rids = [*self.h1.waiting, *self.waiting]  # the HTTP/1.1 queue first: it was there first
        self.h1.waiting.clear()
        self.waiting.clear()
        return [Stream(r, cid) for r in rids]

    def connect_failed(self, cid: int, kind: str, detail: str, now: float) -> list[BrowserAction]:
        """A connect failed: the oldest request waiting on it fails (as in the HTTP/1.1 group);
        if more wait for the session, the next of them connects."""
        if cid != self.session_connect:
            return list(self.h1.connect_failed(cid, kind, detail, now))
        self.h1.withdraw(cid)
        self.session_connect = None
        out: list[BrowserAction] = [Fail(self.waiting.popleft(), kind, detail)] if self.waiting else []
        if self.waiting:
            c = self.h1.start_connect()
            self.session_connect = c.cid
            out.append(c)
        return out

    def goaway(self, cid: int) -> list[BrowserAction]:
        """The server sent GOAWAY on session `cid`: streams it accepted run on, new ones go to a
        new session (`SpdySession::MakeUnavailable`)."""
        if cid == self.session:
            self.session = None
            self.retired.add(cid)
        return []

    def closed(self, cid: int, now: float) -> list[BrowserAction]:
        """Connection `cid` is gone: the session (the next request sets up another), or an
        HTTP/1.1 connection (the group's rules)."""
        if cid == self.session or cid in self.retired:
            self.retired.discard(cid)
            if cid == self.session:
                self.session = None
            return []
        return list(self.h1.closed(cid, now))

    def released(self, cid: int, now: float) -> list[BrowserAction]:
        """An HTTP/1.1 request ended on `cid` and the connection is reusable (streams need no release)."""
        return list(self.h1.released(cid, now))

    def cancel(self, rid: int, now: float) -> list[BrowserAction]:
        """Request `rid` gave up while waiting; a connect it started runs on."""
        try:
            self.waiting.remove(rid)
        except ValueError:
            return list(self.h1.cancel(rid, now))
        return []

    def expire(self, now: float) -> list[BrowserAction]:
        """Idle HTTP/1.1 connections past their timeout close; an HTTP/2 session has no idle
        timeout in Chromium (it lasts until the server closes it or sends GOAWAY)."""
        return list(self.h1.expire(now))

    def shutdown(self) -> list[BrowserAction]:
        """The pool closes: waiting requests fail; the session is closed by the driver (it owns it)."""
        out: list[BrowserAction] = list(self.h1.shutdown())
        out += [Fail(rid, "transport_closed", "HTTP session closed") for rid in self.waiting]
        self.waiting.clear()
        return out

    # -- views -----------------------------------------------------------------------------------
    @property
    def idle(self) -> list[int]:
        """The HTTP/1.1 group's idle connections (the driver checks them before each request)."""
        return self.h1.idle


__all__ = ["ALPN_OFFER", "H2", "HTTP11", "BrowserAction", "BrowserPool", "Connect", "Stream"]
