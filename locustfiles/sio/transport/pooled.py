"""`PooledHttpSession`: `HttpSession` with a browser's connection pool (`--sio-http-pool browser`).

The thin gevent driver of `transport.pool.PoolPolicy` (the pool's rules, sans-IO, Chromium's):
each request asks the policy for a connection and waits for the one it is handed -- an idle one
at once, or the first to become available, which may be another request's released connection
rather than the one whose connect it started (late binding). `HttpSession` (`node`, the default)
binds each request to a connection of its own instead, as the Node.js client does.

Keep-alive, as Chromium's `ReleaseSocket` and `IdleSocket::IsUsable`: a response with
`Connection: close`, an HTTP/1.0 response or a body read to the end of the stream retires its
connection; before every request the idle connections are checked without blocking, and one the
server closed (or that holds bytes nobody asked for) is dropped before it can be handed out. A
request that fails on a connection taken from the idle list before any response header arrived
(end of stream, reset, broken pipe) is sent once more on whatever connection the pool hands it
next, as Chromium's `HttpNetworkTransaction` does for reused connections (its
`ShouldResendRequest`); a fresh connection's failure is the request's. WebSockets never come
here: each opens a connection of its own (transport/websocket.py), as in Chromium.

HTTP/2 (transport/h2pool.py, h2codec.py, h2link.py): over TLS every pooled connection offers
ALPN ["h2", "http/1.1"], as Chromium's does. When the balancer chooses h2 the connection becomes
the origin's HTTP/2 session and every later request is a stream on it (`Stream` actions); the
pool's `protocol` says which one this user's polling rode.
"""

from __future__ import annotations

import errno
import itertools
import random
import time
from collections import deque
from typing import Any

import gevent
from gevent import monkey, ssl
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from locustfiles.sio.transport import lags as _lags
from locustfiles.sio.transport.errors import TransportError, classify_os_error
from locustfiles.sio.transport.h2link import H2Link, H2Retry
from locustfiles.sio.transport.h2pool import ALPN_OFFER, H2, HTTP11, BrowserAction, BrowserPool, Stream
from locustfiles.sio.transport.http import (
    RECV_BYTES,
    USER_AGENT,
    HttpConnection,
    HttpResponse,
    HttpSession,
    _Eof,
)
from locustfiles.sio.transport.net import Endpoint, alpn_context, open_socket
from locustfiles.sio.transport.pool import (
    MAX_CONNECTIONS_PER_HOST,
    Close,
    Connect,
    Fail,
    PoolPolicy,
    Send,
)

_RETRY_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
_RNG = random.Random()
"""The browser lags' draws, one source per process: seeding a Random per session costs more than the draws."""
_select = monkey.get_original("select", "select")
"""The OS's select(): a zero-timeout readability check is one syscall; gevent's would go through the hub."""


def idle_usable(conn: HttpConnection) -> bool:
    """Chromium's `IsConnectedAndIdle`, without blocking: nothing to read on an idle connection.

    Readable means the peer closed it (end of stream) or sent bytes nobody asked for; either way
    it is not reused. A TLS record without application data (a TLS 1.3 session ticket) leaves it
    usable."""
    sock = conn.sock
    try:
        readable, _, _ = _select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    if not readable:
        return True
    sock.settimeout(0.0)
    try:
        sock.recv(RECV_BYTES)  # b"": closed by the peer; bytes: unasked for -- not reusable either way
        return False
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass


class PooledHttpSession(HttpSession):
    """A browser-like HTTP agent for one virtual user and one origin, with Chromium's pool."""

    def __init__(
        self,
        endpoint: Endpoint,
        timeout: float = 10.0,
        source_ip: str | None = None,
        tls: ssl.SSLContext | None = None,
        max_connections: int = MAX_CONNECTIONS_PER_HOST,
        extra_headers: dict[str, str] | None = None,
        policy: PoolPolicy | BrowserPool | None = None,
        http2: bool = True,
        lags: _lags.BrowserLags | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(endpoint, timeout, source_ip, tls, max_connections, extra_headers)
        if isinstance(policy, BrowserPool):
            self.policy = policy
        else:
            self.policy = BrowserPool(policy or PoolPolicy(max_connections=max_connections))
        if endpoint.tls and http2:  # Chromium offers h2 on every TLS connection of its HTTP pool
            self.tls = alpn_context(tls, ALPN_OFFER)
        self._h2_headers = [("user-agent", USER_AGENT), ("accept", "*/*"),
                            *((str(k).lower(), str(v)) for k, v in (extra_headers or {}).items())]
        self._links: dict[int, H2Link] = {}
        # the browser's own lags (transport/lags.py); lags.DEFAULT is read here, not at import, so a
        # calibration run (benchmarks/browser_fidelity --dispatch-gap-ms) can set it before its users start
        self.lags = lags or _lags.DEFAULT
        self._rng = rng or _RNG
        self._next_dispatch = 0.0  # monotonic time the next request may reach the pool (lags.dispatch_gap)
        self._paced = 0  # how many requests have been paced: which one set _next_dispatch
        self._dispatch_lock = Semaphore()
        self._conns: dict[int, HttpConnection] = {}
        self._connecting: dict[int, gevent.Greenlet] = {}
        self._waiters: dict[int, AsyncResult] = {}
        self._rids = itertools.count(1)
        # (method, connection id) of the latest requests sent, oldest first: which pooled connection
        # served which request (the event row has no column for it; tests and debugging read it)
        self.served: deque[tuple[str, int]] = deque(maxlen=32)

    def request(
        self, method: str, target: str, body: bytes = b"", timeout: float | None = None,
        content_type: str | None = None,
    ) -> HttpResponse:
        """One request on the connection the pool hands it; a classified TransportError on failure."""
        if self._closed:
            raise TransportError("transport_closed", "HTTP session closed")
        raw = self._raw(method, target, body, content_type)
        stream = (target, body, content_type)
        return self._bounded(method, timeout, lambda deadline: self._pooled(method, raw, deadline, stream))

    def _on_stream(self, link: H2Link, method: str, stream: tuple[str, bytes, str | None]) -> HttpResponse:
        """One request as an HTTP/2 stream: the same headers as the HTTP/1.1 request, as Chromium
        sends them (lower-case names, :authority for Host, the jar's cookies, content-length)."""
        target, body, content_type = stream
        headers = list(self._h2_headers)
        if self.cookies:
            headers.append(("cookie", self.cookies.header()))
        if method == "POST":
            headers += [("content-type", content_type or "text/plain;charset=UTF-8"), ("content-length", str(len(body)))]
        try:
            return link.request(method, self.endpoint.host_header, self.endpoint.prefix + target, headers, body)
        except TransportError:
            raise
        except Exception as e:  # noqa: BLE001 - the last net: a codec bug must not kill a user greenlet
            raise TransportError("protocol_error", f"{method}: {type(e).__name__}: {e}") from None

    @property
    def protocol(self) -> str:
        """What this user's polling rides: "h2" once the balancer chose it by ALPN, else "http/1.1"."""
        return self.policy.protocol

    def _pooled(self, method: str, raw: bytes, deadline: float, stream: tuple[str, bytes, str | None]) -> HttpResponse:
        for attempt in (0, 1):
            cid, reused, paced = self._acquire()
            link = self._links.get(cid)
            if link is not None:  # a stream on the origin's HTTP/2 session
                self.served.append((method, cid))
                try:
                    resp = self._on_stream(link, method, stream)
                except H2Retry:
                    if attempt == 0 and not self._closed:
                        continue  # the server never saw it: once more, on the next session
                    raise
                if resp.set_cookie:
                    self.cookies.update(resp.set_cookie)
                self._answered(paced)
                return resp
            conn = self._conns[cid]
            self.served.append((method, cid))
            keep = False
            try:
                resp = conn.roundtrip(raw, method == "HEAD", deadline)
                resp.received_at = time.monotonic()
                keep = resp.keep_alive and not self._closed
            except _Eof as e:
                if reused and not e.got_bytes and attempt == 0:
                    continue  # the server closed it while idle: once more, as Chromium does
                raise TransportError("transport_closed", f"{method}: server closed the connection mid-response") \
                    from None
            except TransportError:
                raise
            except (OSError, ssl.SSLError, TimeoutError) as e:
                if self._closed:
                    raise TransportError("transport_closed", "HTTP session closed") from None
                if reused and attempt == 0 and not conn.got_head and getattr(e, "errno", None) in _RETRY_ERRNOS:
                    continue
                raise classify_os_error(e, method) from None
            except Exception as e:  # noqa: BLE001 - the last net: a reader bug must not kill a user greenlet
                raise TransportError("protocol_error", f"{method}: {type(e).__name__}: {e}") from None
            finally:
                try:
                    # the connection is idle, and the page has its answer, only then; an answer read in time
                    # is not lost to the request's own time bound while it waits
                    lag = min(self.lags.release.draw_s(self._rng), deadline - time.monotonic() - 0.005) if keep else 0
                    if lag > 0:
                        gevent.sleep(lag)
                finally:
                    self._give_back(cid, keep)
            if resp.set_cookie:
                self.cookies.update(resp.set_cookie)
            self._answered(paced)
            return resp
        raise AssertionError("unreachable")

    def _answered(self, paced: int) -> None:
        """The page has the answer to the `paced`-th request: what it sends in reply is issued anew, not paced
        after it (a gap drawn at the handshake must not hold the CONNECT POST). Only when that request was the
        last one paced: another's answer must not cancel the gap of a request issued after it."""
        if paced == self._paced and not self._dispatch_lock.locked():
            self._next_dispatch = 0.0

    def _pace(self) -> int:
        """Requests issued together reach the pool a drawn dispatch gap apart, in the order issued, as
        from a page's one JS thread (lags.BrowserLags.dispatch_gap); a lone request goes at once. Returns
        this request's pacing number (`_answered`)."""
        with self._dispatch_lock:  # FIFO: in the order issued (the CONNECT POST before the first poll GET)
            while (now := time.monotonic()) < self._next_dispatch:  # a late hub must not collapse two into one
                gevent.sleep(self._next_dispatch - now)
            self._next_dispatch = now + self.lags.dispatch_gap.draw_s(self._rng)
            self._paced += 1
            return self._paced

    def _acquire(self) -> tuple[int, bool, int]:
        """Ask the pool for a connection and wait for the one it hands over: (id, reused, which paced request)."""
        paced = self._pace()
        self._drop_dead_idle()
        rid = next(self._rids)
        waiter = self._waiters[rid] = AsyncResult()
        try:
            self._run(self.policy.request(rid, time.monotonic()))
            cid, reused = waiter.get()
            return cid, reused, paced
        except BaseException:
            if waiter.ready() and waiter.successful():  # handed a connection, then cancelled
                self._give_back(waiter.value[0], True)
            else:
                self._run(self.policy.cancel(rid, time.monotonic()))
            raise
        finally:
            self._waiters.pop(rid, None)

    def _give_back(self, cid: int, keep: bool) -> None:
        """After a request: the connection goes idle (`released`) or is closed (`closed`)."""
        now = time.monotonic()
        if keep:
            self._run(self.policy.released(cid, now))
            return
        conn = self._conns.pop(cid, None)
        if conn is not None:
            conn.close()
        self._run(self.policy.closed(cid, now))

    def _drop_dead_idle(self) -> None:
        for cid in list(self.policy.idle):
            conn = self._conns.get(cid)
            if conn is None or not idle_usable(conn):
                self._give_back(cid, False)

    def _run(self, actions: list[BrowserAction]) -> None:
        """Carry out the policy's actions; none of them blocks."""
        for a in actions:
            if isinstance(a, Stream):
                w = self._waiters.get(a.rid)
                if w is not None:
                    w.set((a.cid, True))
            elif isinstance(a, Send):
                w = self._waiters.get(a.rid)
                if w is not None:
                    w.set((a.cid, a.reused))
                else:  # its request is gone: the connection goes back
                    self._run(self.policy.released(a.cid, time.monotonic()))
            elif isinstance(a, Connect):
                self._connecting[a.cid] = gevent.spawn(self._open, a.cid)
            elif isinstance(a, Close):
                conn = self._conns.pop(a.cid, None)
                if conn is not None:
                    conn.close()
                link = self._links.pop(a.cid, None)
                if link is not None:
                    link.close()
            elif isinstance(a, Fail):
                w = self._waiters.get(a.rid)
                if w is not None:
                    w.set_exception(TransportError(a.kind, a.detail))

    def _open(self, cid: int) -> None:
        """Greenlet body of a connect: the socket goes to the pool, which says who gets it."""
        try:
            sock = open_socket(self.endpoint, self.timeout, self.source_ip, self.tls)
        except TransportError as e:
            self._connecting.pop(cid, None)
            self._run(self.policy.connect_failed(cid, e.kind, e.detail or str(e), time.monotonic()))
            return
        self._connecting.pop(cid, None)
        self.connections_opened += 1
        proto = (sock.selected_alpn_protocol() if self.endpoint.tls else None) or HTTP11
        if proto == H2:
            self._links[cid] = H2Link(sock, lambda: self._run(self.policy.goaway(cid)),
                                      lambda: self._link_closed(cid))
        else:
            self._conns[cid] = HttpConnection(sock)
        self._run(self.policy.connected(cid, proto, time.monotonic()))

    def _link_closed(self, cid: int) -> None:
        """An HTTP/2 connection ended (the server, an error, or close()): the pool forgets it."""
        self._links.pop(cid, None)
        self._run(self.policy.closed(cid, time.monotonic()))

    def close(self) -> None:
        """Close every connection; requests waiting or running get transport_closed."""
        self._closed = True
        self._run(self.policy.shutdown())
        for g in list(self._connecting.values()):
            g.kill(block=False)
        self._connecting.clear()
        for conn in list(self._conns.values()):
            conn.close()  # a running request wakes with an error and reports `closed`
        for link in list(self._links.values()):
            link.close()  # its streams fail with transport_closed

    def sockets(self) -> list[Any]:
        """The sockets of the pool's open connections (idle or carrying a request)."""
        return [c.sock for c in self._conns.values()]

    @property
    def open_connections(self) -> int:
        return len(self._conns) + len(self._links) + len(self._connecting)
