"""Issue 13, part 2 (sioscale's side): the connection race decided on purpose.

A delay proxy (tests/_delayproxy.py) sits in front of HAProxy `l4-round-robin` over 3 real
python-socketio nodes; under L4 each TCP connection reaches the next node, so the connection a
request rides decides the node it reaches. The proxy's own record of which client connection
carried which request is what is asserted, not the client's idea of it.

- (a) new connections are usable 50 ms after they are accepted, the CONNECT POST answers at once:
  with `--sio-http-pool browser` the first poll GET waits in the pool and rides the handshake's
  connection, which the POST releases first (same node: the session connects);
- (b) connections are usable at once, the CONNECT POST's answer is held 50 ms: the GET rides the
  new connection (another node: `session_unknown`);
- `node` (today's client) binds the GET to a connection of its own in both regimes.
- HTTP/2 where offered: the proxy offers ALPN h2 and forwards h2 to a Caddy speaking h2c in front
  of one node; the browser pool's requests are all streams on the handshake's connection, so the
  first poll GET rides it in both regimes and no second polling connection is ever opened (the
  WebSocket still gets one of its own, over HTTP/1.1).
Each regime runs until it decided the race three times (on the proxy's clock, and on the browser pool's
own record of which connection was free first), and on every trial the GET must have ridden the
connection that was free first: a loaded machine can decide the race against the regime, and then
that connection wins (`_regime`).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from locust.env import Environment
from locust.event import Events

from locustfiles.sio import SocketIOUser
from locustfiles.sio.transport.h2pool import BrowserAction, BrowserPool
from targets.tls import make_tls
from tests._delayproxy import Conn, DelayProxy
from tests._fidelity import races, timeline
from tests.integration.support import h2c_proxy, haproxy_behind_delay_proxy

pytestmark = pytest.mark.slow

DELAY_S = 0.05  # the 50 ms
TRIALS = 3
MAX_TRIALS = 3 * TRIALS  # trials a loaded machine decided against the regime are run again


class Person(SocketIOUser):
    abstract = False


@pytest.fixture(scope="module", params=["hub", "process"])
def proxy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DelayProxy, str]]:
    """The delay proxy in this process's hub, and in a process of its own (benchmarks/browser_fidelity.py's):
    both must decide the race the same way."""
    tls = make_tls(Path(tmp_path_factory.mktemp("tls")))
    with haproxy_behind_delay_proxy("l4-round-robin", tls, process=request.param == "process") as pc:
        yield pc


@pytest.fixture(scope="module")
def proxy_h2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DelayProxy, str]]:
    """The proxy offering h2: h2 goes to Caddy (h2c) in front of one node, HTTP/1.1 to that node."""
    with h2c_proxy(Path(tmp_path_factory.mktemp("h2c"))) as pc:
        yield pc


def _trial(proxy: DelayProxy, ca_file: str, pool: str, settle_s: float = 0.1) -> tuple[bool, list[Conn]]:
    """One person connects through the proxy; (connected?, the proxy's connections record)."""
    env = Environment(events=Events(), host=proxy.url)
    env.parsed_options = argparse.Namespace(sio_timeout=5.0, sio_reconnect="false", sio_http_pool=pool,
                                            sio_ca_file=ca_file)
    u = Person(env)
    try:
        ok = u.connect()
        gevent.sleep(settle_s)  # the losing connect finishes, the probe's connection is up; the record settles
        return ok, copy.deepcopy(proxy.conns)  # as it stood: the teardown's close POST comes next
    finally:
        u._teardown()
        gevent.sleep(0.05)


def _where(conns: list[Conn]) -> dict[str, tuple[int, str]]:
    """(connection number, node) of the handshake GET, the CONNECT POST and the first poll GET."""
    seen: list[tuple[float, str, int, str]] = []
    for c in conns:
        for r in c.requests:
            polling = "transport=polling" in r.target
            key = "" if not polling else "post" if r.method == "POST" else "poll" if r.sid else "handshake"
            if key:
                seen.append((r.t, key, c.no, r.node))
    out: dict[str, tuple[int, str]] = {}
    for _t, key, no, node in sorted(seen):
        out.setdefault(key, (no, node))
    return out


def _race(conns: list[Conn]) -> tuple[str, str]:
    """The trial's sid and which the proxy made free first for its first poll (tests/_fidelity.races): "A",
    "new", "close" or "idle"."""
    rc = races(conns)
    assert len(rc) == 1, rc  # one person per trial
    return next(iter(rc.items()))


@pytest.fixture
def freed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The browser pool's own record, in order, of its connections becoming free: ("released", cid) once a
    request's answer was read and the release lag passed, ("connected", cid) once a connect finished.

    Why: the proxy sees when it sent the CONNECT POST's answer, not when the client read it. A starved
    process (CI) read it 55 ms late, after regime (a)'s new connection was ready, and late binding rightly
    gave the first poll the new one. Which was free first is read here, on the client's side; which
    connection the GET rode, from the proxy."""
    seen: list[tuple[str, int]] = []
    released, connected = BrowserPool.released, BrowserPool.connected

    def _released(self: BrowserPool, cid: int, now: float) -> list[BrowserAction]:
        seen.append(("released", cid))
        return released(self, cid, now)

    def _connected(self: BrowserPool, cid: int, protocol: str, now: float) -> list[BrowserAction]:
        seen.append(("connected", cid))
        return connected(self, cid, protocol, now)

    monkeypatch.setattr(BrowserPool, "released", _released)
    monkeypatch.setattr(BrowserPool, "connected", _connected)
    return seen


def _free_first(freed: list[tuple[str, int]]) -> str:
    """By the browser pool's record: "A" when the handshake's connection was released (the CONNECT POST's
    answer read) before any new connection was up, else "new"."""
    hs = next(cid for kind, cid in freed if kind == "connected")
    after = freed[freed.index(("released", hs)) + 1:]  # from the handshake's answer: the POST rides A
    return next("A" if cid == hs else "new" for kind, cid in after if kind == "released" or cid != hs)


def _regime(p: DelayProxy, ca: str, pool: str, regime: str, freed: list[tuple[str, int]]) -> None:
    """Run trials until TRIALS of them were decided the regime's way (at most MAX_TRIALS). Each is judged by
    which connection was free first, which the regime decides unless the machine overrides it: a CONNECT POST
    answered late, or read late by a starved client (`freed`), lets regime (a)'s new connection be up first,
    and the browser pool rightly gives it the GET; a loaded machine can send the GET only after the answer,
    when no race is run. A trial the machine left undecided is run again with the delay doubled."""
    want = "A" if regime == "a" else "new"
    decided, seen, delay = 0, [], DELAY_S
    for _ in range(MAX_TRIALS):
        if regime == "a":
            p.reset(connect_delay_s=delay, hold_first_post_s=0.0)
        else:
            p.reset(connect_delay_s=0.0, hold_first_post_s=delay)
        freed.clear()
        ok, conns = _trial(p, ca, pool, settle_s=0.1 + delay)  # the probe's connection, too, is ready late
        (sid, race), w = _race(conns), _where(conns)
        first = _free_first(freed) if pool == "browser" else ""
        seen.append(f"{race} ({first or '-'}) at {delay * 1000:.0f} ms: {timeline(conns, sid)}")
        shown = (w, seen[-1])
        assert w["post"][0] == w["handshake"][0], shown  # both pools: the POST reuses the idle handshake connection
        if race == "idle":  # the GET reached the pool after A was free again: both pools reuse it; no race run
            assert w["poll"] == w["handshake"] and ok, shown
        elif pool == "browser" and first == "A":  # late binding: the GET took the released connection, same node
            assert w["poll"] == w["handshake"] and ok, shown
            if race != "close":  # a connect was started for it and lost: open, unused
                assert any(not c.requests for c in conns), shown
            assert any("transport=websocket" in r.target for c in conns for r in c.requests), shown  # it upgrades
        elif pool == "browser" or race != "close":  # the new one was up first, or the node pool: a new connection
            assert w["poll"][0] != w["handshake"][0], shown
            assert w["poll"][1] != w["handshake"][1] and not ok, shown  # L4: another node, session unknown
        ws = [c for c in conns if any("transport=websocket" in r.target for r in c.requests)]
        assert all(len(c.requests) == 1 for c in ws), shown  # the upgrade, if it came: a connection of its own
        # decided by the regime: on the proxy's clock, and on the client's for the browser pool
        decided += race == want and first in ("", want)
        if decided == TRIALS:
            return
        if race != want:  # a machine so slow that 50 ms did not decide it: a longer delay decides it the same way
            delay = min(2 * delay, 8 * DELAY_S)
    pytest.fail(f"{decided} of {MAX_TRIALS} trials raced the regime's way, {TRIALS} wanted (machine too loaded?): {seen}")


@pytest.mark.parametrize("pool", ["browser", "node"])
def test_regime_a_slow_connects(proxy: tuple[DelayProxy, str], pool: str, freed: list[tuple[str, int]]) -> None:
    _regime(*proxy, pool, "a", freed)


@pytest.mark.parametrize("pool", ["browser", "node"])
def test_regime_b_held_post_answer(proxy: tuple[DelayProxy, str], pool: str, freed: list[tuple[str, int]]) -> None:
    _regime(*proxy, pool, "b", freed)


@pytest.mark.parametrize("regime", ["slow_connects", "held_post_answer"])
def test_h2_the_first_poll_rides_the_one_session_in_both_regimes(proxy_h2: tuple[DelayProxy, str],
                                                                 regime: str) -> None:
    p, ca = proxy_h2
    for _ in range(TRIALS):
        p.reset(connect_delay_s=DELAY_S if regime == "slow_connects" else 0.0,
                hold_first_post_s=DELAY_S if regime == "held_post_answer" else 0.0)
        ok, conns = _trial(p, ca, "browser")
        w = _where(conns)
        assert ok, w
        assert w["post"][0] == w["poll"][0] == w["handshake"][0], w  # one connection carries them all
        polling = [c for c in conns if any("transport=polling" in r.target for r in c.requests)]
        assert [c.alpn for c in polling] == ["h2"], [(c.no, c.alpn, [r.method for r in c.requests]) for c in conns]
        ws = [c for c in conns if any("transport=websocket" in r.target for r in c.requests)]
        assert ws and all(c.alpn == "http/1.1" and len(c.requests) == 1 for c in ws), w  # its own, HTTP/1.1
        assert len(conns) == 2, [(c.no, c.alpn) for c in conns]  # nothing else was opened
        if regime == "held_post_answer":
            assert any(r.held for c in polling for r in c.requests), w  # the hold really happened
