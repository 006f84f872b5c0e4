"""A browser's HTTP/1.1 connection pool for one origin, as a sans-IO state machine (issue 13).

Why: real Chromium does not bind a request to the connection it opens for it. A request that
finds no idle connection starts a connect and waits in the group's queue; the first connection
that becomes available -- the new one, or one released by an earlier request -- goes to the
oldest waiting request, and the connection that lost the race goes idle. Behind a balancer that
routes per TCP connection (L4 round-robin), that decides which node a poll reaches: the first
long-poll GET rides the handshake's connection when the CONNECT POST answers before the new
connection is up (docs/protocol.md, section 6).

Modelled on Chromium's `net/socket/transport_client_socket_pool.cc` (read in the
klzgrad/naiveproxy mirror of Chromium's net/ tree):
- `RequestSocketInternal`: reuse an idle socket (`AssignIdleSocketToRequest`); else, if the group
  has a free slot (at most `max_sockets_per_group`, 6: `g_max_sockets_per_group` in
  `client_socket_pool_manager.cc`; connecting, busy and idle sockets all count), start a connect
  job; the request waits unbound either way (`InsertUnboundRequest`).
- `AssignIdleSocketToRequest`: the newest *used* idle socket; when none was ever used, the oldest
  unused one; unusable idle sockets (closed by the peer, or with unexpected data) are dropped on
  the way (`IdleSocket::IsUsable`).
- `OnConnectJobComplete`: a connected socket goes to the first waiting request
  (`PopNextUnboundRequest`), else idle (`AddIdleSocket`); a failed connect fails that request.
- `ReleaseSocket`: a reusable socket goes idle, then `OnAvailableSocketSlot` ->
  `ProcessPendingRequest` gives the first waiting request a socket (the idle one), or a new
  connect job when waiting requests outnumber connect jobs (`CanUseAdditionalSocketSlot`).
- `CancelRequest`: a waiting request leaves the queue; its connect job runs on (its socket goes
  idle, or to another waiting request).
- `CleanupIdleSockets` (called at every `RequestSocket`): idle sockets past their timeout close --
  used ones after 300 s (`g_used_idle_socket_timeout_s`, `client_socket_pool.cc`), unused ones
  after `ClientSocketPoolManager::unused_idle_socket_timeout()`: 60 s on every platform in current
  Chromium (the field-trial default of `kNetUnusedIdleSocketTimeout`; older trees, e.g. that mirror
  in 2020, said 10 s on desktop), and the same 60 s in `HttpStreamPool::Group`
  (`kUnusedIdleStreamSocketTimeout`, the pool behind the HappyEyeballsV3 feature, off by default).

One pool per virtual user and origin = one browser context. The browser's own lags around the pool (the
page's dispatch gap, the network thread's release of a read connection) are `transport/lags.py`'s, waited
by the gevent driver (transport/pooled.py). Not modelled: priorities (every
polling request is an XHR of the same priority, so the queue is FIFO), backup connect jobs
(250 ms+ after a SYN loss; loopback loses none), the 256-socket global limit. HTTP/2 (one session per origin, when ALPN chooses h2) is
`transport/h2pool.py`'s, on top of this group.

Inputs are calls (`request`, `connected`, `connect_failed`, `released`, `closed`, `cancel`,
`expire`); outputs are action lists: `Connect(cid)`, `Send(rid, cid, reused)`, `Close(cid)`,
`Fail(rid, kind, detail)`. No I/O, no clock of its own: `now` comes in with every call.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MAX_CONNECTIONS_PER_HOST = 6
"""`g_max_sockets_per_group[NORMAL_SOCKET_POOL]` (client_socket_pool_manager.cc)."""
UNUSED_IDLE_TIMEOUT_S = 60.0
"""`ClientSocketPoolManager::unused_idle_socket_timeout()` (client_socket_pool_manager.cc, current Chromium;
10 s on desktop before ~2021) = `HttpStreamPool::Group::kUnusedIdleStreamSocketTimeout`."""
USED_IDLE_TIMEOUT_S = 300.0
"""`g_used_idle_socket_timeout_s` (client_socket_pool.cc)."""


@dataclass(frozen=True)
class Connect:
    """Open connection `cid` (TCP, then TLS for https), then call `connected` or `connect_failed`."""

    cid: int


@dataclass(frozen=True)
class Send:
    """Run request `rid` on connection `cid`; `reused`: it came from the idle list (Chromium
    retries a request that fails on such a connection before any response byte)."""

    rid: int
    cid: int
    reused: bool


@dataclass(frozen=True)
class Close:
    """Close connection `cid` (idle past its timeout, or the pool is shut)."""

    cid: int
    reason: str


@dataclass(frozen=True)
class Fail:
    """Request `rid` gets no connection: the connect it waited on failed, or the pool shut
    (`kind`, one of rows.ERROR_KINDS, and `detail` say why)."""

    rid: int
    kind: str
    detail: str


PoolAction = Connect | Send | Close | Fail


@dataclass
class _Conn:
    state: str  # "connecting" | "idle" | "busy"
    used: bool = False  # has carried a request (Chromium's WasEverUsed)
    idle_since: float = 0.0


@dataclass
class PoolPolicy:
    """One origin's connection pool (a Chromium socket-pool group), pure state."""

    max_connections: int = MAX_CONNECTIONS_PER_HOST
    unused_idle_s: float = UNUSED_IDLE_TIMEOUT_S
    used_idle_s: float = USED_IDLE_TIMEOUT_S
    conns: dict[int, _Conn] = field(default_factory=dict)
    idle: list[int] = field(default_factory=list)  # in the order they went idle (oldest first)
    waiting: deque[int] = field(default_factory=deque)  # request ids, oldest first
    shut: bool = False
    _next_cid: int = 1

    # -- inputs ----------------------------------------------------------------------------------
    def request(self, rid: int, now: float) -> list[PoolAction]:
        """A new request (`RequestSocket`): an idle connection now, or a wait (and maybe a connect)."""
        if self.shut:
            return [Fail(rid, "transport_closed", "HTTP session closed")]
        out: list[PoolAction] = self.expire(now)
        cid = self._take_idle()
        if cid is not None:
            return [*out, self._send(rid, cid, reused=True)]
        self.waiting.append(rid)
        if len(self.conns) < self.max_connections:
            out.append(self._connect())
        return out

    def connected(self, cid: int, now: float) -> list[PoolAction]:
        """Connection `cid` is up (`OnConnectJobComplete`, OK): the oldest waiting request takes it."""
        c = self.conns.get(cid)
        if c is None or c.state != "connecting":
            return []
        if self.shut:
            del self.conns[cid]
            return [Close(cid, "HTTP session closed")]
        if self.waiting:
            return [self._send(self.waiting.popleft(), cid, reused=False)]
        self._make_idle(cid, now)
        return []

    def connect_failed(self, cid: int, kind: str, detail: str, now: float) -> list[PoolAction]:
        """Connection `cid` could not be opened: the oldest waiting request fails with it."""
        c = self.conns.pop(cid, None)
        if c is None or c.state != "connecting":
            return []
        out: list[PoolAction] = [Fail(self.waiting.popleft(), kind, detail)] if self.waiting else []
        return out + self._slot_freed(now)

    def released(self, cid: int, now: float) -> list[PoolAction]:
        """Request on `cid` done, connection reusable (`ReleaseSocket`): idle, then served onward."""
        c = self.conns.get(cid)
        if c is None or c.state != "busy":
            return []
        if self.shut:
            del self.conns[cid]
            return [Close(cid, "HTTP session closed")]
        self._make_idle(cid, now)
        return self._slot_freed(now)

    def closed(self, cid: int, now: float) -> list[PoolAction]:
        """Connection `cid` is gone (not reusable after its response, failed, or found closed
        while idle): its slot is free for a waiting request."""
        c = self.conns.pop(cid, None)
        if c is None:
            return []
        if c.state == "idle":
            self.idle.remove(cid)
        return self._slot_freed(now)

    def cancel(self, rid: int, now: float) -> list[PoolAction]:
        """Request `rid` gave up while waiting (`CancelRequest`); any connect it started runs on.

        A request cancelled while it holds a connection is the driver's to report: it closes
        the connection (its response was not read) and calls `closed`."""
        try:
            self.waiting.remove(rid)
        except ValueError:
            pass
        return []

    def expire(self, now: float) -> list[PoolAction]:
        """Close idle connections past their timeout (`CleanupIdleSockets`)."""
        out: list[PoolAction] = []
        for cid in list(self.idle):
            c = self.conns[cid]
            if now - c.idle_since >= (self.used_idle_s if c.used else self.unused_idle_s):
                self.idle.remove(cid)
                del self.conns[cid]
                out.append(Close(cid, "idle time limit expired"))
        return out

    def shutdown(self) -> list[PoolAction]:
        """The pool closes: idle connections close, waiting requests fail; busy and connecting
        connections are closed by the driver (it owns their sockets) and reported with `closed`."""
        self.shut = True
        out: list[PoolAction] = [Close(cid, "HTTP session closed") for cid in self.idle]
        for cid in self.idle:
            del self.conns[cid]
        self.idle.clear()
        out += [Fail(rid, "transport_closed", "HTTP session closed") for rid in self.waiting]
        self.waiting.clear()
        return out

    def start_connect(self) -> Connect:
        """A connect the caller asked for outside the request queue (the HTTP/2 session's,
        transport/h2pool.py): counted in this group like any other, so ids never clash."""
        return self._connect()

    def withdraw(self, cid: int) -> None:
        """Connecting `cid` leaves this group without serving anyone (it came up as HTTP/2, and
        the origin's HTTP/2 session takes it over)."""
        c = self.conns.get(cid)
        if c is not None and c.state == "connecting":
            del self.conns[cid]

    # -- views -----------------------------------------------------------------------------------
    def count(self, state: str) -> int:
        return sum(1 for c in self.conns.values() if c.state == state)

    # -- internals -------------------------------------------------------------------------------
    def _take_idle(self) -> int | None:
        """`AssignIdleSocketToRequest`: the newest used idle connection, else the oldest unused."""
        used = [cid for cid in self.idle if self.conns[cid].used]
        cid = used[-1] if used else (self.idle[0] if self.idle else None)
        if cid is not None:
            self.idle.remove(cid)
        return cid

    def _send(self, rid: int, cid: int, reused: bool) -> Send:
        c = self.conns[cid]
        c.state, c.used = "busy", True
        return Send(rid, cid, reused)

    def _connect(self) -> Connect:
        cid, self._next_cid = self._next_cid, self._next_cid + 1
        self.conns[cid] = _Conn("connecting")
        return Connect(cid)

    def _make_idle(self, cid: int, now: float) -> None:
        c = self.conns[cid]
        c.state, c.idle_since = "idle", now
        self.idle.append(cid)

    def _slot_freed(self, now: float) -> list[PoolAction]:
        """`OnAvailableSocketSlot` -> `ProcessPendingRequest`: the oldest waiting request takes an
        idle connection, or a connect starts when waiting requests outnumber connects."""
        if not self.waiting or self.shut:
            return []
        cid = self._take_idle()
        if cid is not None:
            return [self._send(self.waiting.popleft(), cid, reused=True)]
        if len(self.waiting) > self.count("connecting") and len(self.conns) < self.max_connections:
            return [self._connect()]
        return []
