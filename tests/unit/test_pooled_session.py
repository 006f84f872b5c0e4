"""`PooledHttpSession` (--sio-http-pool browser) on real loopback sockets: keep-alive semantics.

A small gevent server answers each request as its script says; the client's own record
(`served`: which pooled connection carried which request) and the server's count of accepted
connections are compared.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import gevent
import pytest
from gevent.server import StreamServer

from locustfiles.sio.transport import TransportError
from locustfiles.sio.transport.h2pool import BrowserPool
from locustfiles.sio.transport.lags import CHROMIUM, NONE, BrowserLags
from locustfiles.sio.transport.net import Endpoint
from locustfiles.sio.transport.pool import PoolPolicy
from locustfiles.sio.transport.pooled import PooledHttpSession

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Script:
    """Answers the n-th request (over all connections) with `answers[n]`:
    "ok", "close" (Connection: close), "http10", "drop" (close unanswered), "ok+fin" (answer, then
    close the idle connection), "slow" (answer after 0.3 s)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.n = 0
        self.accepted = 0

    def handle(self, sock, _addr) -> None:
        self.accepted += 1
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(4096)
                    if not data:
                        return
                    buf += data
                _head, buf = buf.split(b"\r\n\r\n", 1)
                what = self.answers[self.n] if self.n < len(self.answers) else "ok"
                self.n += 1
                if what == "drop":
                    return
                if what == "slow":
                    gevent.sleep(0.3)
                if what == "close":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
                    return
                if what == "http10":
                    sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                sock.sendall(OK)
                if what == "ok+fin":
                    gevent.sleep(0.05)
                    return
        finally:
            sock.close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[StreamServer] = []

    def start(answers: list[str], lags: BrowserLags = NONE) -> tuple[Script, PooledHttpSession]:
        """The pool's rules alone by default: no browser lags (transport/lags.py), so nothing races."""
        script = Script(answers)
        srv = StreamServer(("127.0.0.1", 0), script.handle)
        srv.start()
        servers.append(srv)
        return script, PooledHttpSession(Endpoint.from_url(f"http://127.0.0.1:{srv.server_port}"), timeout=3.0,
                                         lags=lags)

    yield start
    for s in servers:
        s.stop(timeout=1)


def _get(http: PooledHttpSession) -> bytes:
    return http.request("GET", "/x").body


def test_keep_alive_reuses_one_connection(serve) -> None:
    script, http = serve(["ok", "ok", "ok"])
    assert [_get(http) for _ in range(3)] == [b"ok"] * 3
    assert script.accepted == 1 and [c for _, c in http.served] == [1, 1, 1]
    http.close()


@pytest.mark.parametrize("answer", ["close", "http10"])
def test_connection_close_or_http10_retires_the_connection(serve, answer: str) -> None:
    script, http = serve([answer, "ok"])
    assert _get(http) == b"ok" and _get(http) == b"ok"
    assert script.accepted == 2 and [c for _, c in http.served] == [1, 2]
    assert http.open_connections == 1
    http.close()


def test_a_connection_the_server_closed_while_idle_is_dropped_before_reuse(serve) -> None:
    script, http = serve(["ok+fin", "ok"])
    assert _get(http) == b"ok"
    gevent.sleep(0.2)  # the server's FIN has arrived
    assert _get(http) == b"ok"
    assert script.accepted == 2 and [c for _, c in http.served] == [1, 2]  # no request sent on the dead one


def test_a_reused_connection_that_fails_before_any_answer_is_retried_once(serve) -> None:
    script, http = serve(["ok", "drop", "ok"])
    assert _get(http) == b"ok"
    assert _get(http) == b"ok"  # sent on 1 (reused), dropped unanswered, sent again on a new connection
    assert [c for _, c in http.served] == [1, 1, 2] and script.accepted == 2
    http.close()


def test_a_fresh_connection_that_fails_is_not_retried(serve) -> None:
    script, http = serve(["drop", "ok"])
    with pytest.raises(TransportError) as e:
        _get(http)
    assert e.value.kind == "transport_closed" and script.accepted == 1
    assert http.open_connections == 0 and not http.policy.h1.conns
    http.close()


def test_concurrent_requests_wait_for_the_first_free_connection(serve) -> None:
    """Two slots: the third request is handed whichever of the first two frees first."""
    script, http = serve(["slow", "ok", "ok"])
    http.policy = BrowserPool(PoolPolicy(max_connections=2))
    gs = [gevent.spawn(_get, http) for _ in range(3)]
    gevent.joinall(gs, timeout=3, raise_error=True)
    assert [g.value for g in gs] == [b"ok"] * 3
    carried = [c for _, c in http.served]
    assert script.accepted == 2 and carried[2] == carried[1] != carried[0]
    http.close()


def test_a_request_that_times_out_waiting_leaves_the_pool_consistent(serve) -> None:
    _script, http = serve(["slow", "ok"])
    http.policy = BrowserPool(PoolPolicy(max_connections=1))
    first = gevent.spawn(_get, http)
    gevent.sleep(0.05)
    with pytest.raises(TransportError) as e:
        http.request("GET", "/y", timeout=0.1)
    assert e.value.kind == "timeout" and not http.policy.h1.waiting
    assert first.get(timeout=2) == b"ok" and _get(http) == b"ok"
    http.close()


def test_close_wakes_waiting_and_running_requests(serve) -> None:
    _script, http = serve(["slow", "ok"])
    http.policy = BrowserPool(PoolPolicy(max_connections=1))
    gs = [gevent.spawn(_get, http) for _ in range(2)]
    gevent.sleep(0.05)
    http.close()
    gevent.joinall(gs, timeout=2)
    assert all(isinstance(g.exception, TransportError) and g.exception.kind == "transport_closed" for g in gs)
    assert http.open_connections == 0


def test_requests_issued_together_reach_the_pool_one_dispatch_gap_apart(serve) -> None:
    """As from a page's one JS thread (lags.BrowserLags.dispatch_gap): the second of two requests issued at
    once asks the pool later; the first's answer (microseconds on loopback) has freed its connection by then,
    so no second connection is opened (without the gap the second request started a connect of its own)."""
    script, http = serve(["ok", "ok", "ok"], BrowserLags.fixed(gap_ms=5.0))
    assert _get(http) == b"ok"  # connection 1, now idle
    asked: list[float] = []
    request = http.policy.request
    http.policy.request = lambda rid, now: (asked.append(now), request(rid, now))[1]  # type: ignore[method-assign]
    gs = [gevent.spawn(_get, http) for _ in range(2)]
    gevent.joinall(gs, timeout=3, raise_error=True)
    assert asked[1] - asked[0] >= 0.005
    assert script.accepted == 1 and [c for _, c in http.served] == [1, 1, 1]
    http.close()


def test_a_request_sent_in_reply_to_an_answer_is_not_held_by_the_gap_drawn_before_it(serve) -> None:
    """The CONNECT POST follows the handshake's answer: the page issues it anew, so the gap drawn when the
    handshake was sent (meant for a request issued together with it) must not hold it."""
    _script, http = serve(["ok", "ok"], BrowserLags.fixed(gap_ms=200.0))
    assert _get(http) == b"ok"
    t = time.monotonic()
    assert _get(http) == b"ok"
    assert time.monotonic() - t < 0.1
    http.close()


def test_only_the_last_paced_requests_answer_cancels_the_gap(serve) -> None:
    """An answer to an older request (an emit's, say) must not let a request issued together with a newer
    one skip its gap: only the answer to the request that set the gap resets it."""
    _script, http = serve(["ok"], BrowserLags.fixed(gap_ms=200.0))
    first = http._pace()  # a request was paced: the next one issued with it waits until `due`
    due = http._next_dispatch
    http._answered(first - 1)  # an older request's answer
    assert http._next_dispatch == due
    http._answered(first)
    assert http._next_dispatch == 0.0
    http.close()


def test_a_release_lag_never_turns_an_answer_read_in_time_into_a_timeout(serve) -> None:
    """The release lag waits within the request's own time bound: the answer was read, so it is returned."""
    _script, http = serve(["ok"], BrowserLags.fixed(gap_ms=0.0, release_ms=2000.0))
    t = time.monotonic()
    assert http.request("GET", "/x", timeout=0.3).body == b"ok"
    assert time.monotonic() - t < 0.5
    http.close()


def test_a_connection_is_idle_only_a_release_lag_after_its_answer(serve) -> None:
    """As Chromium's socket goes idle a posted task after the body is read (lags.BrowserLags.release): a
    request that reaches the pool within the lag finds no idle connection and rides a new one, while the
    caller of the first gets its answer only after the release, so a request it sends next reuses it; the
    answer keeps the time it was read (`received_at`), which latency is measured from."""
    script, http = serve(["ok"] * 5, BrowserLags.fixed(gap_ms=2.0, release_ms=60.0))
    t0 = time.monotonic()
    first = http.request("GET", "/x")
    returned = time.monotonic()
    assert returned - first.received_at >= 0.06 and first.received_at > t0
    assert _get(http) == b"ok"  # issued after the answer was handed over: the connection is idle again
    assert script.accepted == 1 and [c for _, c in http.served] == [1, 1]
    gs = [gevent.spawn(_get, http) for _ in range(2)]  # the second asks 2 ms after the first, 58 ms early
    gevent.joinall(gs, timeout=3, raise_error=True)
    assert script.accepted == 2 and [c for _, c in http.served][2:] == [1, 2]
    http.close()


class _CountingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.calls = 0

    def random(self) -> float:
        self.calls += 1
        return super().random()


def test_a_session_draws_its_lags_from_the_source_it_is_given(serve) -> None:
    """An injected source (a seeded one: a reproducible user) is what the gap and the release lag are drawn
    from; without one, a session shares the process's."""
    _script, http = serve(["ok", "ok"])
    rng = _CountingRandom(7)
    s = PooledHttpSession(http.endpoint, lags=CHROMIUM, rng=rng)
    assert s.request("GET", "/x").body == b"ok"
    assert rng.calls == 2  # one dispatch gap, one release lag
    s.close()
    other = PooledHttpSession(http.endpoint, lags=CHROMIUM)
    assert other._rng is PooledHttpSession(http.endpoint)._rng is not rng
    other.close()
    http.close()
