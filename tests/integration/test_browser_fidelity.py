"""Issue 13, parts 2 and 3: real Chromium and sioscale's users (`--sio-http-pool browser`) on the same cluster.

Fidelity is checked, not assumed: headless Chromium (the system /usr/bin/chromium driven by Playwright,
one browser context per person, the real socket.io-client 4.8.4 bundle in a page of the target's site but
another origin, so that the target's connection pool starts empty as a sioscale user's does:
tests/_chromium_people.py) and sioscale's users go through the same delay proxy (tests/_delayproxy.py, TLS,
no ALPN: HTTP/1.1) in front of HAProxy over 3 python-socketio nodes with a 1 s pingInterval. The proxy's own
record says which connection each request rode and which node answered; tests/_fidelity.py reads both
sides the same way.

- The race, decided on purpose (part 2): (a) new connections usable 50 ms late, the CONNECT POST answered
  first: the first poll GET rides the handshake's connection A; (b) connections at once, the POST's
  answer held 50 ms: it rides the new one. Both sides, every person whose GET asked for a connection
  while the POST was out rides the one the proxy made free first, and on each side the regime decided that
  for someone (150 ms here: see DELAY_S and HOLD_A_S). A page can be slower than that: Chromium
  was seen to start the first poll 430 ms after the POST at load 15, when it finds A idle and there is no race.
- Three balancers (part 3): cookie (all connect, upgrade and live), L7 round-robin (none connect: each
  session ends at its first request that met another node, the CONNECT POST or the first poll) and
  L4 round-robin (a race: a person connects exactly when its first poll met the session's node, always
  when it rode A; every session that ends does so at a request that met another node), both sides.
- The seed's chat user joins its room at connect: on both sides the next long poll parks on the handshake's
  connection and the join's POST rides another, and when that one meets another node the session dies there.
- HTTP/2 where offered: the proxy offers ALPN h2 to Caddy (h2c) in front of one node; in both regimes
  both sides carry the CONNECT POST and every poll on the handshake's one h2 connection (the WebSocket:
  one of its own, HTTP/1.1) and open nothing else.
Small on purpose (3 people a case, one at a time): the powered L4 comparison is benchmarks/browser_fidelity.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from targets.tls import TLSFiles, make_tls
from tests._delayproxy import Conn, DelayProxy
from tests._fidelity import ChromiumPeople, Person, attach, chromium_missing, sioscale_people
from tests.integration.support import h2c_proxy, haproxy_behind_delay_proxy

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MISSING = chromium_missing()
DELAY_S = 0.15
"""The issue's regimes use 50 ms (benchmarks/browser_fidelity.py --regimes does); here 150 ms, because on a
busy 2-core machine (load 7 measured) Chromium's own network process was seen to read an answer 60 ms after
the proxy sent it, which a 50 ms margin does not survive. Every person must follow the regime."""
HOLD_A_S = 0.04
"""Regime (a) holds the CONNECT POST's answer this long (still far ahead of a new connection, DELAY_S): answered
at once, a busy CI machine's Chromium sent all 3 people's first poll 6-19 ms after the POST, after its answer,
so none raced and the test proved nothing about that side."""
TRIALS = 3  # a trial where a side had no person whose GET raced is run again (a race decides: issue 13, part 3)
RACE_WINDOW_S = 0.9  # the race regimes' window: room for a slow page, and before the first ping (1 s) can end one
PING_S = 1.0  # the first pong comes inside the window
PEOPLE = 3
INTERVAL_S = 0.3
WINDOW_S = 2.6  # past the first ping/pong (1 s) and the second
H2_PEOPLE = 2
H2_WINDOW_S = 1.6  # all of a session rides one node here, so pings end nothing: room for a slow page to connect


@pytest.fixture(scope="module")
def chromium() -> Iterator[ChromiumPeople]:
    if MISSING:
        pytest.skip(f"real-browser fidelity check skipped: {MISSING}")
    cp = ChromiumPeople()
    try:
        yield cp
    finally:
        cp.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(Path(tmp_path_factory.mktemp("tls")))


def _proxied(policy: str, tls: TLSFiles) -> Iterator[tuple[DelayProxy, str]]:
    with haproxy_behind_delay_proxy(policy, tls, ping_interval=PING_S) as pc:
        yield pc


@pytest.fixture(scope="module")
def l4(chromium: ChromiumPeople, tls: TLSFiles) -> Iterator[tuple[DelayProxy, str]]:
    yield from _proxied("l4-round-robin", tls)


def _both(cp: ChromiumPeople, proxy: DelayProxy, ca: str, window: float) -> list[Person]:
    """PEOPLE Chromium people, then PEOPLE sioscale users, one at a time; both read through the proxy."""
    people = cp.run(proxy.url, PEOPLE, INTERVAL_S, window)
    people += sioscale_people(proxy.url, ca, PEOPLE, INTERVAL_S, window)
    return attach(people, proxy.conns)


def _show(people: list[Person]) -> str:
    return "\n".join(f"{p.side} race={p.race} conn={p.connected} up={p.upgraded} alive={p.alive} "
                     f"end={p.end_step}@{p.end_after_s} {p.steps}\n    {p.timeline}" for p in people)


def _connections_as_a_browser(people: list[Person]) -> None:
    """The CONNECT POST reuses the handshake's idle connection; a WebSocket never shares one."""
    for p in people:
        poll, post = p.step("poll"), p.step("post:connect")
        assert poll and post and post[1] == "A", _show(people)
        ws = p.step("websocket")
        if ws:  # a WebSocket never shares a connection with an HTTP request
            assert all(s[1] != ws[1] for s in p.steps if s[0] != "websocket"), _show(people)


@pytest.mark.parametrize("regime", ["a", "b"])
def test_race_regimes(chromium: ChromiumPeople, l4: tuple[DelayProxy, str], regime: str) -> None:
    p, ca = l4
    for _ in range(TRIALS):
        p.reset(connect_delay_s=DELAY_S if regime == "a" else 0.0,
                hold_first_post_s=HOLD_A_S if regime == "a" else DELAY_S)
        people = _both(chromium, p, ca, window=RACE_WINDOW_S)
        assert {x.side for x in people} == {"chromium", "sioscale"}, _show(people)
        # a person a loaded machine did not take to its first poll within the window says nothing of the race
        # (Chromium was seen to take 0.7 s to set up the handshake's connection at load 5): the trial's others
        # are judged, and a trial where a side had no person left is run again (below)
        ran = [x for x in people if x.sid and x.step("poll") and x.step("post:connect")]
        _connections_as_a_browser(ran)
        for x in ran:
            poll = x.step("poll")
            assert poll is not None and x.connected == (poll[2] == "="), _show(people)  # connected iff its node
            if x.race in ("A", "new"):  # the GET asked while the POST was out: it rides whichever was free first
                assert (poll[1] == "A") == (x.race == "A"), _show(people)
        # the regime decides the race unless the machine overrides it (a node that took 178 ms to answer the
        # CONNECT POST in CI let regime (a)'s late connection win); a trial where a side had no person whose
        # race went the regime's way (or a browser so slow that every GET came after the answer) is run again
        raced = {x.side for x in ran if x.race == ("A" if regime == "a" else "new")}
        if raced == {"chromium", "sioscale"}:
            break
    assert raced == {"chromium", "sioscale"}, _show(people)


def test_cookie_all_connect_upgrade_and_live(chromium: ChromiumPeople, tls: TLSFiles) -> None:
    for p, ca in _proxied("cookie", tls):
        people = _both(chromium, p, ca, 1.6)  # past the first ping/pong
        assert all(x.connected and x.upgraded and x.alive for x in people), _show(people)
        assert all(s[2] == "=" for x in people for s in x.steps), _show(people)  # one node per session


def test_l7_round_robin_none_connect(chromium: ChromiumPeople, tls: TLSFiles) -> None:
    for p, ca in _proxied("l7-round-robin", tls):
        people = _both(chromium, p, ca, 1.6)  # no session lives; room for a loaded machine's page to see its end
        assert not any(x.connected for x in people), _show(people)
        for x in people:  # which request meets another node (and is answered first) is a race: both sides end there
            assert x.end_step in {s[0] for s in x.steps if s[0] != "websocket" and s[2] == "x"}, _show(people)


def test_l4_round_robin_connect_iff_first_poll_on_a(chromium: ChromiumPeople, l4: tuple[DelayProxy, str]) -> None:
    p, ca = l4
    p.reset(connect_delay_s=0.0, hold_first_post_s=0.0)
    people = _both(chromium, p, ca, WINDOW_S)
    _connections_as_a_browser(people)
    for x in people:
        poll = x.step("poll")
        assert poll is not None and x.connected == (poll[2] == "="), _show(people)
        if poll[1] == "A":  # the handshake's connection: its node, always
            assert x.connected, _show(people)
        if x.connected and not x.alive:
            # it died at the first request that met another node (L4: another connection)
            after = [s for s in x.steps[x.steps.index(x.step("poll")) + 1:] if s[0] != "websocket"]  # type: ignore[arg-type]
            assert any(s[2] == "x" for s in after), _show(people)
            assert x.end_step in ("poll", "post:pong", "post:emit", "post"), _show(people)


EMIT_WINDOW_S = 2.0
"""From the socket's start. A loaded machine's Chromium took 0.7 s to set up the handshake's connection and
was read before its join's answer (at 0.3 s after the handshake) came back; the first ping (1 s) may then end
a session whose join met its own node, which the test allows."""


def test_l4_join_at_connect_dies_at_its_emit_post(chromium: ChromiumPeople, l4: tuple[DelayProxy, str]) -> None:
    """The seed's chat user joins its room as soon as it is connected. socket.io-client handles the CONNECT
    reply a tick after the poll that brought it (its Manager defers decoded packets), so the next long-poll
    GET goes out first and parks on the handshake's connection, and the join's POST needs a connection of its
    own (docs/protocol.md section 6): when L4 round robin puts that connection on another node the session dies
    at that POST, as the seed's L4 sessions do. Both sides alike. Regime (a) (new connections DELAY_S late)
    makes every first poll ride the handshake's connection, so everyone connects and the join meets the race
    that matters here."""
    p, ca = l4
    p.reset(connect_delay_s=DELAY_S, hold_first_post_s=0.0)
    people = chromium.run(p.url, PEOPLE, INTERVAL_S, EMIT_WINDOW_S, emit="join")
    people = attach(people + sioscale_people(p.url, ca, PEOPLE, INTERVAL_S, EMIT_WINDOW_S, emit="join"), p.conns)
    assert {x.side for x in people} == {"chromium", "sioscale"} and all(x.connected for x in people), _show(people)
    for side in ("chromium", "sioscale"):
        mine = [x for x in people if x.side == side]
        for x in mine:
            emit = x.step("post:emit")
            assert emit is not None, _show(people)
            if emit[2] == "x":  # the join met another node: the session ended there, at once
                assert not x.alive and x.end_step == "post:emit", _show(people)
                assert x.end_after_s is not None and x.end_after_s < DELAY_S + 0.35, _show(people)
            else:
                assert x.end_step != "post:emit", _show(people)
        # the join did not wait for the parked poll: it rode a connection other than the handshake's (on
        # Chromium a page slowed by the machine may send the poll after it: then it finds A idle)
        assert any(x.step("post:emit")[1] != "A" for x in mine), _show(people)  # type: ignore[index]
    assert all(x.step("post:emit")[1] != "A" for x in people if x.side == "sioscale"), _show(people)  # type: ignore[index]


@pytest.fixture(scope="module")
def h2(chromium: ChromiumPeople, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DelayProxy, str]]:
    """The same proxy offering ALPN h2, to Caddy (h2c) in front of one node (tests/integration/support.h2c_proxy)."""
    with h2c_proxy(Path(tmp_path_factory.mktemp("h2c")), ping_interval=PING_S) as pc:
        yield pc


def _h2_connections(people: list[Person], conns: list[Conn]) -> None:
    """Each session's polling rode one h2 connection, the handshake's; its WebSocket one of its own
    (HTTP/1.1); no connection was opened for the first poll (no race loser: nothing to race on h2)."""
    show = _show(people) + "\n" + "\n".join(f"#{c.no} {c.alpn} {[(r.method, r.sid[:4]) for r in c.requests]}"
                                            for c in conns)
    for x in people:
        polling = {c.no for c in conns for r in c.requests if r.sid == x.sid and "transport=polling" in r.target}
        ws = [c for c in conns if any(r.sid == x.sid and "transport=websocket" in r.target for r in c.requests)]
        hs = x.step("handshake")
        assert x.connected and hs and hs[1] == "A" and len(polling) == 1, show
        assert all(s[1] == "A" for s in x.steps if s[0] != "websocket"), show  # the CONNECT POST and every poll
        assert [c.alpn for c in conns if c.no in polling] == ["h2"], show
        assert all(c.alpn == "http/1.1" and len(c.requests) == 1 for c in ws), show
    for x in people:  # no connection opened for the first poll and left unused (HTTP/1.1's race loser); a
        # connection opened later (the WebSocket's, when the window closed the page first) is not one
        gets = [r.t for c in conns for r in c.requests if r.sid == x.sid and r.method == "GET"]
        assert gets and not [c.no for c in conns if not c.requests and c.accepted <= min(gets)], show


@pytest.mark.parametrize("regime", ["a", "b"])
def test_h2_one_connection_both_regimes(chromium: ChromiumPeople, h2: tuple[DelayProxy, str], regime: str) -> None:
    """HTTP/2 where offered (the issue's Done-when): both sides multiplex the CONNECT POST and the first
    poll on the handshake's one h2 connection in both regimes, so the race of HTTP/1.1 never happens."""
    p, ca = h2
    p.reset(connect_delay_s=DELAY_S if regime == "a" else 0.0, hold_first_post_s=DELAY_S if regime == "b" else 0.0)
    cp_people = chromium.run(p.url, H2_PEOPLE, INTERVAL_S, H2_WINDOW_S)
    people = attach(cp_people + sioscale_people(p.url, ca, H2_PEOPLE, INTERVAL_S, H2_WINDOW_S), p.conns)
    assert {x.side for x in people} == {"chromium", "sioscale"} and all(x.sid for x in people), _show(people)
    _h2_connections(people, p.conns)
    if regime == "b":  # the hold happened, and on each side some first poll was sent while it was held
        held = {r.sid: r.answered for c in p.conns for r in c.requests if r.held}
        assert len(held) == len(people), _show(people)
        for side in ("chromium", "sioscale"):
            assert any(r.method == "GET" and r.sid == x.sid and r.t < held[x.sid]
                       for x in people if x.side == side for c in p.conns for r in c.requests), _show(people)
