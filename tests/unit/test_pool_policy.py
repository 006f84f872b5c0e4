"""The browser connection pool's rules (transport/pool.py), without sockets.

Each case feeds the sans-IO policy the events a driver would and checks the actions, against
Chromium's TransportClientSocketPool (late binding, MRU reuse, 6 per host, idle timeouts).
"""

from __future__ import annotations

import random

import pytest

from locustfiles.sio.transport.pool import (
    MAX_CONNECTIONS_PER_HOST,
    UNUSED_IDLE_TIMEOUT_S,
    USED_IDLE_TIMEOUT_S,
    Close,
    Connect,
    Fail,
    PoolPolicy,
    Send,
)


def _up(p: PoolPolicy, rid: int, t: float = 0.0) -> int:
    """Request `rid` on an empty-handed pool: it must start a connect; returns the connection id."""
    [a] = p.request(rid, t)
    assert isinstance(a, Connect)
    return a.cid


def test_constants_are_chromiums() -> None:
    assert (MAX_CONNECTIONS_PER_HOST, UNUSED_IDLE_TIMEOUT_S, USED_IDLE_TIMEOUT_S) == (6, 60.0, 300.0)


def test_first_request_connects_then_is_sent_on_its_connection() -> None:
    p = PoolPolicy()
    a = _up(p, 1)
    assert p.connected(a, 0.001) == [Send(1, a, reused=False)]
    assert p.released(a, 0.002) == []
    assert p.idle == [a]
    assert p.request(2, 0.003) == [Send(2, a, reused=True)]  # the handshake's connection carries the POST


def _handshake_then_post_busy() -> tuple[PoolPolicy, int, int]:
    """Handshake on A, the POST on A (busy), then the GET: it starts connect B and waits."""
    p = PoolPolicy()
    a = _up(p, 1)
    p.connected(a, 0.0)
    p.released(a, 0.01)
    assert p.request(2, 0.02) == [Send(2, a, reused=True)]  # POST on A
    b = _up(p, 3, 0.021)  # GET: nothing idle, starts B, waits unbound
    assert list(p.waiting) == [3]
    return p, a, b


def test_late_binding_released_connection_wins_the_race() -> None:
    """Regime (a): the POST answers before B is up: the waiting GET takes A; B goes idle, unused."""
    p, a, b = _handshake_then_post_busy()
    assert p.released(a, 0.03) == [Send(3, a, reused=True)]
    assert p.connected(b, 0.07) == []
    assert p.idle == [b] and not p.conns[b].used


def test_late_binding_new_connection_wins_the_race() -> None:
    """Regime (b): B is up before the POST answers: the GET rides B; A goes idle when released."""
    p, a, b = _handshake_then_post_busy()
    assert p.connected(b, 0.022) == [Send(3, b, reused=False)]
    assert p.released(a, 0.07) == []
    assert p.idle == [a]


def test_waiting_requests_are_served_oldest_first() -> None:
    p = PoolPolicy()
    a = _up(p, 1)
    b = _up(p, 2)
    assert p.connected(b, 0.0) == [Send(1, b, reused=False)]  # B was started for 2, goes to 1
    assert p.connected(a, 0.0) == [Send(2, a, reused=False)]


def test_idle_reuse_is_newest_used_then_oldest_unused() -> None:
    p = PoolPolicy()
    ids = [_up(p, r) for r in (1, 2, 3)]
    for cid in ids:
        p.connected(cid, 0.0)  # 1 on ids[0], 2 on ids[1], 3 on ids[2]
    p.released(ids[1], 1.0)
    p.released(ids[0], 2.0)
    p.released(ids[2], 1.5)
    assert p.idle == [ids[1], ids[0], ids[2]]
    assert p.request(4, 3.0) == [Send(4, ids[2], reused=True)]  # the newest to go idle
    # unused idle connections (preconnect losers) come after every used one, oldest first
    q = PoolPolicy()
    c1, c2 = _up(q, 1), _up(q, 2)
    q.cancel(1, 0.0)
    q.cancel(2, 0.0)
    q.connected(c2, 0.1)
    q.connected(c1, 0.2)
    assert q.idle == [c2, c1]
    assert q.request(3, 0.3) == [Send(3, c2, reused=True)]


def test_at_most_six_connections_then_requests_wait() -> None:
    p = PoolPolicy()
    cids = [_up(p, r) for r in range(1, 7)]
    assert p.request(7, 0.0) == []  # at the limit: waits, no seventh connect
    assert len(p.conns) == 6 and list(p.waiting) == [1, 2, 3, 4, 5, 6, 7]
    for r, cid in zip(range(1, 7), cids, strict=True):
        assert p.connected(cid, 0.0) == [Send(r, cid, reused=False)]
    assert p.released(cids[3], 0.1) == [Send(7, cids[3], reused=True)]


def test_closed_connection_frees_a_slot_for_a_waiter() -> None:
    p = PoolPolicy(max_connections=1)
    a = _up(p, 1)
    p.connected(a, 0.0)
    assert p.request(2, 0.0) == []  # waits, the only slot is busy
    assert p.closed(a, 0.1) == [Connect(a + 1)]  # Connection: close -> a new connect for the waiter
    assert p.connected(a + 1, 0.2) == [Send(2, a + 1, reused=False)]


def test_closed_idle_connection_is_never_handed_out() -> None:
    p = PoolPolicy()
    a = _up(p, 1)
    p.connected(a, 0.0)
    p.released(a, 0.0)
    assert p.closed(a, 1.0) == []  # the driver found it closed by the server while idle
    assert p.idle == []
    assert isinstance(p.request(2, 1.0)[0], Connect)


def test_a_slot_freed_starts_a_connect_only_when_waiters_outnumber_connects() -> None:
    p = PoolPolicy(max_connections=2)
    a, b = _up(p, 1), _up(p, 2)
    p.connected(a, 0.0)  # 1 on A; 2 waits for B
    assert p.closed(a, 0.1) == []  # one waiter, one connect running: nothing more
    assert p.connected(b, 0.2) == [Send(2, b, reused=False)]


def test_connect_failure_fails_the_oldest_waiter() -> None:
    p = PoolPolicy()
    a = _up(p, 1)
    b = _up(p, 2)
    assert p.connect_failed(a, "connection_refused", "refused", 0.1) == [Fail(1, "connection_refused", "refused")]
    assert p.connected(b, 0.2) == [Send(2, b, reused=False)]


def test_cancelled_waiter_leaves_its_connect_running() -> None:
    p = PoolPolicy()
    a = _up(p, 1)
    assert p.cancel(1, 0.1) == []
    assert p.connected(a, 0.2) == []
    assert p.idle == [a]


def test_idle_timeouts_unused_60s_used_300s() -> None:
    p = PoolPolicy()
    a, b = _up(p, 1), _up(p, 2)
    p.cancel(2, 0.0)
    p.connected(a, 0.0)
    p.released(a, 0.0)  # used, idle since 0
    p.connected(b, 0.0)  # never used, idle since 0
    assert p.expire(59.9) == []
    assert p.expire(60.0) == [Close(b, "idle time limit expired")]
    assert p.expire(299.9) == []
    assert p.expire(300.0) == [Close(a, "idle time limit expired")]


def test_request_cleans_up_expired_idle_connections_first() -> None:
    p = PoolPolicy()
    a = _up(p, 1)
    p.connected(a, 0.0)
    p.released(a, 0.0)
    out = p.request(2, 301.0)
    assert out[0] == Close(a, "idle time limit expired") and isinstance(out[1], Connect)


def test_shutdown_closes_idle_fails_waiters_and_refuses_more() -> None:
    p = PoolPolicy(max_connections=1)
    a = _up(p, 1)
    p.connected(a, 0.0)
    p.request(2, 0.0)
    out = p.shutdown()
    assert out == [Fail(2, "transport_closed", "HTTP session closed")]
    assert p.released(a, 0.1) == [Close(a, "HTTP session closed")]
    assert p.request(3, 0.2) == [Fail(3, "transport_closed", "HTTP session closed")]


def test_stale_events_are_ignored() -> None:
    p = PoolPolicy()
    assert p.connected(99, 0.0) == [] and p.released(99, 0.0) == [] and p.closed(99, 0.0) == []
    assert p.connect_failed(99, "timeout", "x", 0.0) == [] and p.cancel(99, 0.0) == []


@pytest.mark.parametrize("seed", range(40))
def test_random_event_sequences_keep_the_pool_consistent(seed: int) -> None:
    """Any order of events: never more than 6 connections, each request sent at most once,
    a connection carries one request at a time, an idle connection only when nobody waits."""
    rng = random.Random(seed)
    p = PoolPolicy()
    rid = 0
    on: dict[int, int] = {}  # cid -> rid it carries
    sent: set[int] = set()
    t = 0.0
    for _ in range(300):
        t += rng.random()
        ev = rng.randrange(6)
        if ev == 0:
            rid += 1
            out = p.request(rid, t)
        elif ev == 1 and (c := [k for k, v in p.conns.items() if v.state == "connecting"]):
            out = p.connected(rng.choice(c), t)
        elif ev == 2 and on:
            cid = rng.choice(list(on))
            del on[cid]
            out = p.released(cid, t) if rng.random() < 0.8 else p.closed(cid, t)
        elif ev == 3 and p.waiting:
            out = p.cancel(rng.choice(list(p.waiting)), t)
        elif ev == 4 and (c := [k for k, v in p.conns.items() if v.state == "connecting"]):
            out = p.connect_failed(rng.choice(c), "timeout", "x", t)
        else:
            out = p.expire(t)
        for a in out:
            if isinstance(a, Send):
                assert a.rid not in sent and a.cid not in on
                sent.add(a.rid)
                on[a.cid] = a.rid
            if isinstance(a, Fail):
                assert a.rid not in sent
                sent.add(a.rid)
        assert len(p.conns) <= MAX_CONNECTIONS_PER_HOST
        assert set(on) == {k for k, v in p.conns.items() if v.state == "busy"}
        assert not (p.waiting and p.idle)
        assert set(p.idle) == {k for k, v in p.conns.items() if v.state == "idle"}
        assert not set(p.waiting) & sent
