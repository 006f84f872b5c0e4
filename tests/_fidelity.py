"""Both sides of the fidelity check of issue 13: real Chromium people and sioscale's users, seen alike.

Why one module: the test (tests/integration/test_browser_fidelity.py) and the powered benchmark
(benchmarks/browser_fidelity.py) must judge both sides by the same rules. Each person becomes a
`Person`: the Engine.IO sid, the outcomes (connected, upgraded, alive at the end of its window),
how the session ended (the step whose request failed: "poll", "post:pong", ... as
locustfiles/sio/protocol/client.py names them; and seconds from connect to the end), and, from the
delay proxy's own record (tests/_delayproxy.py), which connection and node each request of the
session rode: connections are lettered per session in order of first use (A = the handshake's),
nodes are "=" (the handshake's node) or "x" (another).

`ChromiumPeople` runs tests/_chromium_people.py as a subprocess in its own process group (Playwright's
sync API and gevent do not mix) and always kills that group on `close()`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gevent
from locust.env import Environment
from locust.event import Events

from locustfiles.sio import SioError, SocketIOUser
from locustfiles.sio.protocol.client import post_name
from locustfiles.sio.transport import lags
from tests._delayproxy import Conn

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def chromium_missing() -> str:
    """Why the real-browser side cannot run here ("" when it can): a clear reason for a skip."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed (pip install playwright==1.65.2; no browser download needed)"
    return ""


@dataclass
class Person:
    """One person's session as both sides are judged."""

    side: str  # "chromium" | "sioscale"
    sid: str
    connected: bool
    upgraded: bool
    alive: bool
    end_step: str = ""  # the request that failed and ended (or never let connect) the session
    end_after_s: float | None = None  # connect -> end (connected sessions that ended in the window)
    reason: str = ""
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (request, connection, node) from the proxy
    timeline: str = ""  # tests/_fidelity.timeline of its session
    post_to_poll_ms: float | None = None  # in the page: the first poll GET's send() after the CONNECT POST's
    # which was free first for the first poll: "A" (the POST's answer), "new", "close" (too near to say),
    # "idle" (no race: no connect was started, the GET reached the pool after A was free again)
    race: str = ""
    timing: dict[str, float | str | None] = field(default_factory=dict)  # first_poll_timing's, for its session

    def step(self, key: str) -> tuple[str, str, str] | None:
        """The first proxy-seen request of this kind (e.g. "poll", "websocket", "post:connect")."""
        return next((s for s in self.steps if s[0] == key), None)


def _post_key(body: bytes) -> str:
    text = body.decode("latin-1")
    return post_name(text.split("\x1e")) if text else "post"


def _key(method: str, target: str, body: bytes) -> str:
    q = parse_qs(urlsplit(target).query)
    if q.get("transport") == ["websocket"]:
        return "websocket"
    if "sid" not in q:
        return "handshake"
    return "poll" if method == "GET" else _post_key(body)


def sequences(conns: list[Conn]) -> dict[str, list[tuple[str, str, str]]]:
    """Per Engine.IO sid, its requests in time order as (request, connection letter, node "="/"x").

    The handshake GET carries no sid: it is the last sid-less GET before the session's first POST (its
    CONNECT POST, which reuses the handshake's idle connection) on that POST's connection."""
    reqs = sorted(((r.t, c.no, r) for c in conns for r in c.requests), key=lambda x: x[0])
    out: dict[str, list[tuple[str, str, str]]] = {}
    for sid in {r.sid for _, _, r in reqs if r.sid}:
        mine = [(t, no, r) for t, no, r in reqs if r.sid == sid]
        # the CONNECT POST reuses the idle handshake connection (the first poll may reach the proxy first)
        t0, no0 = next(((t, no) for t, no, r in mine if r.method == "POST"), mine[0][:2])
        hs = [(t, no, r) for t, no, r in reqs if not r.sid and no == no0 and t <= t0 and r.method == "GET"]
        seq = hs[-1:] + mine
        letters: dict[int, str] = {}
        home = seq[0][2].node
        out[sid] = [(_key(r.method, r.target, r.body), letters.setdefault(no, "ABCDEFGH"[min(len(letters), 7)]),
                     "=" if r.node == home else ("x" if r.node else "?")) for _, no, r in seq]
    return out


RACE_MARGIN_S = 0.015
"""Closer than this, the proxy's clock cannot say which was first for the client: the proxy sees a TLS 1.3
connection ready a round trip after the client does, and the answer leaves it before the client reads it."""

RELEASE_MAX_S = lags.CHROMIUM.release.quantile(1.0) / 1000
"""A read connection goes idle up to this long after its answer, in Chromium (measured, docs/protocol.md §6)
and in the browser pool that models it: A is surely free first only when its answer left this much (and the
margin) before the new connection was ready."""


def races(conns: list[Conn]) -> dict[str, str]:
    """Per sid, which became free first after the CONNECT POST was sent: its connection A (the proxy sent
    the POST's answer) or a new connection (the proxy finished its TLS handshake). Late binding means the
    first poll GET rides whichever it was; both sides are judged by that, not by the regime's intent."""
    out: dict[str, str] = {}
    for c in conns:
        posts = [r for r in c.requests if r.method == "POST" and r.sid]
        if not posts or posts[0].sid in out or not posts[0].answered:
            continue
        post = posts[0]
        since = c.requests[0].answered or post.t  # the handshake's answer: the client may ask for the GET from then
        new = [o.ready for o in conns if o.no != c.no and o.ready and since - 0.001 <= o.accepted <= post.answered + 0.2
               and (not o.requests or (o.requests[0].sid == post.sid and "transport=websocket" not in o.requests[0].target))]
        if not new:
            out[post.sid] = "idle"  # no connect started: the GET came after the answer and found A idle
            continue
        d = min(new) - post.answered
        out[post.sid] = "A" if d > RACE_MARGIN_S + RELEASE_MAX_S else "new" if d < -RACE_MARGIN_S else "close"
    return out


def first_poll_timing(conns: list[Conn]) -> dict[str, dict[str, float | str | None]]:
    """Per sid, the first poll's race in ms from the CONNECT POST's arrival at the proxy: `answer` (the POST's
    answer left), `offer` (the first poll GET offered itself: the new connection it started was accepted, or,
    when it started none, the GET itself arrived on the idle connection A), `on` ("A" or "new": what it rode)
    and `after_answer` (it arrived on A this long after the answer left: the client's read and release); and
    the WebSocket probe's connection (`ws_accepted`, `ws_asked`: its upgrade request; `ws_same_node`), which
    can load the node while it answers the POST.

    Why: whether a first poll stays on the handshake's node is decided by `offer` against `answer`; these are
    the distributions a client model must match, measured the same way on both sides (docs/protocol.md §6)."""
    out: dict[str, dict[str, float | str | None]] = {}
    for c in conns:
        posts = [r for r in c.requests if r.method == "POST" and r.sid]
        if not posts or posts[0].sid in out or not posts[0].answered:
            continue
        post = posts[0]
        since = c.requests[0].answered or post.t
        polls = sorted(((r.t, o.no) for o in conns for r in o.requests if r.sid == post.sid and r.method == "GET"
                        and "transport=websocket" not in r.target), key=lambda x: x[0])
        if not polls:
            continue
        t_poll, on = polls[0]
        # the poll's own new connection, or the one it started and lost: accepted before the poll arrived
        # (a millisecond of slack), so another person's unused connection is taken only if it came in that window
        new = [o for o in conns if o.no != c.no and since - 0.001 <= o.accepted <= t_poll + 0.001
               and (not o.requests or (o.requests[0].sid == post.sid and "transport=websocket" not in o.requests[0].target))]
        t0 = post.t
        offer = min(o.accepted for o in new) if new else t_poll
        ws = next((o for o in conns if o.requests and o.requests[0].sid == post.sid
                   and "transport=websocket" in o.requests[0].target), None)
        out[post.sid] = {"answer": _ms(post.answered, t0), "offer": _ms(offer, t0), "on": "A" if on == c.no else "new",
                         "after_answer": _ms(t_poll, post.answered) if on == c.no else None,
                         "ws_accepted": _ms(ws.accepted, t0) if ws else None,
                         "ws_asked": _ms(ws.requests[0].t, t0) if ws else None,
                         "ws_same_node": (ws.requests[0].node == post.node) if ws else None}
    return out


def _ms(t: float, t0: float) -> float:
    return round((t - t0) * 1000, 3)


def timeline(conns: list[Conn], sid: str) -> str:
    """A session's connections and requests in ms from its handshake (accepted/ready, request@sent>answered):
    what a failed assertion shows, so a race's loser can be read off."""
    mine = [c for c in conns if any(r.sid == sid for r in c.requests)]
    if not mine:
        return ""
    t0 = min(c.requests[0].t for c in mine)
    near = [c for c in conns if c in mine or (not c.requests and abs(c.accepted - t0) < 2)]
    ms = lambda t: f"{(t - t0) * 1000:.0f}" if t else "-"  # noqa: E731
    return " | ".join(f"#{c.no} {ms(c.accepted)}/{ms(c.ready)}: " + ",".join(
        f"{r.method[0]}{'s' if r.sid else ''}@{ms(r.t)}>{ms(r.answered)}" for r in c.requests[:4]) for c in near)


def attach(people: list[Person], conns: list[Conn]) -> list[Person]:
    """Give each person its session's proxy-seen steps and the race its first poll met."""
    seqs, rc, tm = sequences(conns), races(conns), first_poll_timing(conns)
    for p in people:
        p.steps = seqs.get(p.sid, [])
        p.race = rc.get(p.sid, "")
        p.timing = tm.get(p.sid, {})
        p.timeline = timeline(conns, p.sid)
    return people


# -- Chromium ------------------------------------------------------------------------------------
class ChromiumPeople:
    """The browser subprocess: `run()` a batch of people, `close()` always (kills its process group)."""

    def __init__(self, ready_timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests._chromium_people", "--chromium", CHROMIUM],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        try:
            hello = self._line(ready_timeout)
        except Exception:
            self.close()
            raise
        self.version = hello.get("version", "")

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with gevent.Timeout(timeout, TimeoutError(f"chromium people: no answer in {timeout:g} s")):
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"chromium people exited ({self.proc.poll()})")
        return json.loads(line)

    def run(self, url: str, people: int, interval: float, window: float, start_at: float | None = None,
            no_cache: bool = False, prepare: bool = False, emit: str = "", page: str = "",
            starts: list[float] | None = None, ahead: bool = False) -> list[Person]:
        """`people` people on `url`, `interval` apart from `start_at` (epoch s), each read after `window`.
        `prepare`: load every page first and start only the sockets on schedule (from `start_at` or when
        the pages are loaded, whichever is later): bursts whose spacing is shorter than a page load.
        `emit`: an event each page emits with an ack at connect; `page`: the pages' origin (tests/_chromium_people.py);
        `starts`: each person's start (epoch s; then `people` = len(starts)), e.g. from `schedule`; `ahead`: load
        each page before its start, so the socket starts on time (tests/_chromium_people._batch)."""
        assert self.proc.stdin is not None
        people = len(starts) if starts else people
        cmd = {"url": url, "people": people, "interval": interval, "window": window, "start_at": start_at,
               "no_cache": no_cache, "prepare": prepare, "emit": emit, "page": page, "starts": starts,
               "ahead": ahead}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = []
        deadline = 30 + window + people * (interval + 1.5) * (2 if prepare else 1)
        while not (rec := self._line(deadline)).get("done"):
            out.append(chromium_person(rec))
        return out

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def _xhr_step(r: dict[str, Any]) -> str:
    if r.get("kind") == "ws":
        return "upgrade_probe"
    if r.get("method") == "POST":
        return _post_key(str(r.get("body", "")).encode("latin-1", "replace"))
    return "handshake" if "sid=" not in r.get("url", "") else "poll"


def chromium_person(rec: dict[str, Any]) -> Person:
    """A browser person from its page's log: the failed request nearest before the end ended it."""
    st, log = rec.get("st") or {}, rec.get("log") or []
    connect, end = st.get("connect"), st.get("disconnect") or st.get("connect_error")
    p = Person("chromium", st.get("sid", ""), connect is not None, "upgrade" in st,
               bool(rec.get("connected")), reason=st.get("reason") or st.get("error") or rec.get("error", ""))
    post = next((r for r in log if r.get("method") == "POST" and r.get("t")), None)
    poll = next((r for r in log if r.get("method") == "GET" and "sid=" in r.get("url", "") and r.get("t")), None)
    if post and poll:
        p.post_to_poll_ms = poll["t"] - post["t"]
    if end is not None:
        failed = sorted((r for r in log if r.get("kind") == "xhr" and r.get("end") and r.get("status") != 200
                         and r["end"] <= end + 5 and r["end"] >= (connect or 0) - 5), key=lambda r: r["end"])
        p.end_step = _xhr_step(failed[0]) if failed else "unknown"
        if connect is not None:
            p.end_after_s = (end - connect) / 1000
    return p


# -- sioscale ------------------------------------------------------------------------------------
class _User(SocketIOUser):
    abstract = False


def sioscale_person(url: str, ca_file: str | None, window: float, pool: str = "browser", emit: str = "") -> Person:
    """One sioscale user (`--sio-http-pool pool`) connects, lives `window` seconds, and is read like a browser.
    `emit`: an event it calls (with an ack) as soon as it is connected, as locustfiles/chat.py joins its room."""
    env = Environment(events=Events(), host=url)
    env.parsed_options = argparse.Namespace(sio_timeout=5.0, sio_reconnect="false", sio_http_pool=pool,
                                            sio_ca_file=ca_file)
    u = _User(env)
    steps: list[tuple[float, str, bool]] = []  # (time, name, ok)

    def on_request(request_type: str, name: str, exception: Any = None, context: Any = None, **_: Any) -> None:
        if (context or {}).get("user") == u.user_id:
            steps.append((time.time(), name, exception is None))

    env.events.request.add_listener(on_request)
    t0 = time.time()
    try:
        connected = u.connect()
        sid = u.session.proto.eio_sid if u.session is not None else ""
        if connected and emit:
            try:
                u.call(emit, "fidelity", step="join", name="join", room="fidelity")
            except SioError:
                pass  # a failed step row, read below like any other
        gevent.sleep(max(0.0, t0 + window - time.time()))
        return _sioscale_outcome(sid, connected, u.connected, steps)
    finally:
        u._teardown()


def _sioscale_outcome(sid: str, connected: bool, alive: bool, steps: list[tuple[float, str, bool]]) -> Person:
    names = {n for _, n, ok in steps if ok}
    p = Person("sioscale", sid, connected, "upgrade" in names, alive)
    t_conn = next((t for t, n, ok in steps if n == "connect" and ok), None)
    t_end = next((t for t, n, ok in steps if n == "disconnect" and not ok), None)
    failed = [(t, n) for t, n, ok in steps if not ok and n not in ("disconnect", "connect")]
    if failed and (t_end is not None or not connected):
        p.end_step = failed[-1][1] if t_end is None else next((n for t, n in reversed(failed) if t <= t_end),
                                                              failed[-1][1])
    if t_conn is not None and t_end is not None:
        p.end_after_s = t_end - t_conn
    return p


def schedule(people: int, interval: float, start_at: float, jitter: float = 0.0, seed: int = 0) -> list[float]:
    """Start times `interval` apart from `start_at`, each moved by up to `jitter` x interval either way (seeded).

    Why jitter: with people exactly one interval apart and a pingInterval that is a multiple of it, every
    person's connects coincide, to the millisecond, with the first pong of the person two ahead (interval 1 s,
    ping 2 s): under per-connection round robin those connections shift which node the newcomer's reach, the
    same way for every person. Measured: 34 of 405 sioscale users connected through a first poll that rode a
    new connection which that shift had put on the session's node, against 7 of 405 Chromium people, whose
    starts a page load used to delay by 0.1-0.6 s at random. Jittered starts make such meetings random, alike
    on both sides."""
    rng = random.Random(seed)
    return [start_at + i * interval + (rng.uniform(-jitter, jitter) * interval if jitter else 0.0)
            for i in range(people)]


def sioscale_people(url: str, ca_file: str | None, people: int, interval: float, window: float,
                    start_at: float | None = None, pool: str = "browser", emit: str = "",
                    starts: list[float] | None = None) -> list[Person]:
    """`people` sioscale users, `interval` apart from `start_at` (epoch s; or at `starts`), concurrently in this hub."""
    start_at = start_at or time.time()
    starts = starts or schedule(people, interval, start_at)
    people = len(starts)

    def one(i: int) -> Person:
        gevent.sleep(max(0.0, starts[i] - time.time()))
        return sioscale_person(url, ca_file, window, pool, emit)

    gs = [gevent.spawn(one, i) for i in range(people)]
    try:
        gevent.joinall(gs, raise_error=True)
    finally:
        gevent.killall(gs, block=True, timeout=5)
    return [g.value for g in gs]
