"""Issue 13's powered fidelity check: real Chromium against sioscale's users (`--sio-http-pool browser`).

    .venv/bin/python -m benchmarks.browser_fidelity [--people 135] [--runs 3] [--policy l4-round-robin]
        [--interval 1.0] [--ping-interval 2] [--window 5] [--tls] [--regimes 6] [--pool browser]
        [--dispatch-gap-ms MS] [--burst 10 --bursts 8 --burst-spacing 0.067] [--emit join] [--page-origin target]
        [--hold-connect-ms 3] [--dump people.jsonl]

Per run: a fresh cluster (HAProxy `--policy` over 3 python-socketio nodes, pingInterval `--ping-interval`)
behind the delay proxy (tests/_delayproxy.py: plain TCP and no delay by default, so the race is the
machine's own; `--tls` terminates TLS in it, HTTP/1.1), in a process of its own (`ProxyProcess`: in this
process's hub its forwarding delayed the sioscale side's answers and not Chromium's). Both sides run at once and interleaved: a
Chromium person every `--interval` seconds (tests/_chromium_people.py: one browser context each, the real
socket.io-client bundle, its page loaded ahead so its socket starts on time) and a sioscale user half an
interval later, each start moved at random by up to `--jitter` x interval (seeded per run and side: without
it every newcomer meets the first pong of the person two ahead, tests/_fidelity.schedule); each lives
`--window` seconds (past the first ping/pong). `--regimes N` first runs N people a side through the issue's two 50 ms regimes
(over a TLS proxy of their own) and prints which connection the first poll rode.

`--emit join`: each person emits `join` with an ack as soon as it is connected, as the seed's chat user does
(locustfiles/chat.py; in the page, in socket.io-client's connect handler). `--page-origin target` loads
Chromium's pages from the target's own origin (default: another origin of the same site, so the target's
pool starts empty on both sides; tests/_chromium_people.py says why).

`--burst N`: people arrive concurrently instead, as the seed campaign's users do (30 spawned at 15/s):
bursts of N people `--burst-spacing` apart (1/15 s: the seed's spawn rate), `--bursts` bursts a side a run,
the sides taking turns (a Chromium burst, then a sioscale burst, ...) and each burst alone on the cluster
until its window ends. Why turns, not both at once: HAProxy's round-robin counter is shared, so which node
a connection reaches depends on every other connection opened meanwhile; alone, each side's burst meets
only its own kind's concurrency, as the seed's users do, and taking turns spreads the machine's load drift
over both sides alike. `--burst-together` runs both sides' bursts at once instead, people interleaved:
then both meet the same machine load and server latency (a Chromium burst loads the 2-core machine far
more than sioscale's, and slows the nodes' answers), at the price of sharing the counter. The spread of each burst's handshakes as the proxy saw them is printed per side
(Chromium loads a burst's pages first and then starts their sockets on schedule, as sioscale's users start).

Printed per run and pooled: both sides' connect, upgrade and alive rates; a two-proportion z-test and a
95 % CI (Newcombe's hybrid score interval) for the connect-rate difference; the n per side needed to detect
a 10-point difference at alpha 0.05, power 0.8, at the observed rate; how sessions ended (step, median
seconds from connect) and how never-connected sessions failed; and, from the proxy's record, how often the
first poll rode the connection the proxy made free first; and, per side, the first poll's race as the proxy
timed it (tests/_fidelity.first_poll_timing: the CONNECT POST's answer time, when the poll asked for a
connection, p10/p50/p90), the figures sioscale's browser lags were fitted to (transport/lags.py; `--dump` writes
every person as a JSON line for that). `--dispatch-gap-ms MS` replaces sioscale's drawn lags by one fixed gap
and no release lag, the earlier model. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gevent

from contract.config import ClusterConfig
from locustfiles.sio.transport import lags as lag_rules
from targets.cluster import Cluster
from targets.tls import make_tls
from tests._delayproxy import ProxyProcess
from tests._fidelity import ChromiumPeople, Person, attach, chromium_missing, schedule, sioscale_people

SIDES = ("chromium", "sioscale")
DETECT = 0.10  # the issue: detect a 10-point difference in connect rate


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def compare(k1: int, n1: int, k2: int, n2: int) -> dict[str, float]:
    """Rate 1 - rate 2: difference, two-sided p (pooled two-proportion z-test), Newcombe 95 % CI."""
    p1, p2 = k1 / n1 if n1 else 0.0, k2 / n2 if n2 else 0.0
    pool = (k1 + k2) / (n1 + n2) if n1 + n2 else 0.0
    se = math.sqrt(pool * (1 - pool) * (1 / max(n1, 1) + 1 / max(n2, 1)))
    pval = 1.0 if se == 0 else 2 * (1 - _phi(abs(p1 - p2) / se))
    l1, u1 = _wilson(k1, n1)
    l2, u2 = _wilson(k2, n2)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return {"diff": d, "p": pval, "ci_lo": lo, "ci_hi": hi}


def needed_n(rate: float, delta: float = DETECT, z_a: float = 1.959964, z_b: float = 0.841621) -> int:
    """People per side for a two-proportion test to detect `delta` around `rate` (alpha 0.05, power 0.8)."""
    p1 = min(max(rate - delta / 2, 0.0), 1 - delta)
    p2 = p1 + delta
    pb = (p1 + p2) / 2
    n = (z_a * math.sqrt(2 * pb * (1 - pb)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / delta ** 2
    return math.ceil(n)


def side_summary(people: list[Person]) -> dict[str, Any]:
    """Rates and how sessions ended, for one side."""
    n = len(people)
    conn = [p for p in people if p.connected]
    died = [p for p in conn if not p.alive and p.end_after_s is not None]
    ends: dict[str, list[float]] = {}
    for p in died:
        ends.setdefault(p.end_step or "unknown", []).append(p.end_after_s or 0.0)
    race = [p for p in people if p.race in ("A", "new") and p.step("poll")]
    agree = sum((p.step("poll")[1] == "A") == (p.race == "A") for p in race)  # type: ignore[index]
    return {
        "n": n, "connected": len(conn), "upgraded": sum(p.upgraded for p in people),
        "alive": sum(p.alive for p in people),
        "ended": {k: {"n": len(v), "median_s": round(statistics.median(v), 3)} for k, v in sorted(ends.items())},
        "never_connected": dict(Counter(p.end_step or "unknown" for p in people if not p.connected)),
        "first_poll_on_A": sum(1 for p in people if p.step("poll") and p.step("poll")[1] == "A"),  # type: ignore[index]
        "race_decided": len(race), "race_followed": agree,
        "races": dict(Counter(p.race or "-" for p in people)),
        # in the page (Chromium): ms from the CONNECT POST's send() to the first poll GET's, median
        "post_to_poll_ms": round(statistics.median(g), 2) if (g := [p.post_to_poll_ms for p in people
                                                                    if p.post_to_poll_ms is not None]) else None,
        # the emit at connect (--emit): which connection it rode, the long poll's (A) or another one
        "emit_on": dict(Counter(("A" if e[1] == "A" else "other") + e[2] for p in conn if (e := p.step("post:emit")))),
        # at the proxy, ms from the CONNECT POST's arrival (tests/_fidelity.first_poll_timing): p10/p50/p90
        "timing_ms": {k: _quantiles([float(v) for p in people if isinstance(v := p.timing.get(k), (int, float))])
                      for k in ("answer", "offer", "after_answer")}
        | {"offer_minus_answer": _quantiles([float(p.timing["offer"]) - float(p.timing["answer"])  # type: ignore[arg-type]
                                             for p in people if p.timing])},
    }


def _quantiles(v: list[float]) -> list[float] | None:
    """p10, p50, p90 (None for no values)."""
    if not v:
        return None
    v = sorted(v)
    return [round(v[min(len(v) - 1, int(q * len(v)))], 2) for q in (0.1, 0.5, 0.9)]


def _line(side: str, s: dict[str, Any]) -> str:
    n = max(s["n"], 1)
    ends = ", ".join(f"{k} {v['n']} (median {v['median_s']:.2f} s)" for k, v in s["ended"].items()) or "none"
    never = ", ".join(f"{k} {v}" for k, v in s["never_connected"].items()) or "none"
    return (f"  {side:9s} connected {s['connected']}/{s['n']} = {s['connected'] / n:.1%}, upgraded {s['upgraded']}, "
            f"alive at the window's end {s['alive']}; connected then died at: {ends}; never connected, failed at: "
            f"{never}; first poll on the handshake's connection {s['first_poll_on_A']}; race decided "
            f"{s['race_decided']}, first poll took the winner {s['race_followed']}; first poll's race {s['races']}"
            + (f"; in the page, CONNECT POST to first poll GET median {s['post_to_poll_ms']} ms"
               if s["post_to_poll_ms"] is not None else "")
            + (f"; the emit at connect rode (connection, node) {s['emit_on']}" if s["emit_on"] else "")
            + "; at the proxy, ms after the CONNECT POST (p10/p50/p90): " + ", ".join(
                f"{k} {v}" for k, v in s["timing_ms"].items() if v))


def report(title: str, people: list[Person]) -> dict[str, Any]:
    """Print one comparison block; its figures."""
    sides = {side: side_summary([p for p in people if p.side == side]) for side in SIDES}
    c, s = sides["chromium"], sides["sioscale"]
    cmp_ = compare(c["connected"], c["n"], s["connected"], s["n"])
    rate = (c["connected"] + s["connected"]) / max(c["n"] + s["n"], 1)
    need = needed_n(rate)
    print(f"{title}")
    for side in SIDES:
        print(_line(side, sides[side]))
    print(f"  connect rate chromium - sioscale = {cmp_['diff']:+.1%} (95 % CI {cmp_['ci_lo']:+.1%} .. "
          f"{cmp_['ci_hi']:+.1%}), p = {cmp_['p']:.3f}; to detect a {DETECT:.0%} difference at {rate:.0%}: "
          f"{need} per side ({'met' if min(c['n'], s['n']) >= need else 'not met'} by {min(c['n'], s['n'])})")
    return {"sides": sides, "compare": cmp_, "needed_per_side": need}


def one_run(cp: ChromiumPeople, a: argparse.Namespace, tls: Any) -> list[Person]:
    """A fresh cluster and proxy; both sides interleaved; everyone read through the proxy."""
    cfg = ClusterConfig(nodes=3, balancer="haproxy", policy=a.policy, ping_interval=a.ping_interval)
    with Cluster(cfg) as cl:
        proxy = ProxyProcess(("127.0.0.1", cl.balancer_port), str(tls.cert_file) if a.tls else None,
                             str(tls.key_file) if a.tls else None, hold_first_post_s=a.hold_connect_ms / 1000)
        ca = str(tls.ca_file) if a.tls else None
        try:
            if a.regimes:  # over TLS: a plain proxy cannot make a connection late (the kernel accepts it)
                rp = ProxyProcess(("127.0.0.1", cl.balancer_port), str(tls.cert_file), str(tls.key_file))
                try:
                    regimes(cp, rp, str(tls.ca_file), a)
                finally:
                    rp.close()
            if a.burst:
                return _bursts(cp, proxy, ca, a)
            return _interleaved(cp, proxy, ca, a)
        finally:
            proxy.close()


def _interleaved(cp: ChromiumPeople, proxy: ProxyProcess, ca: str | None, a: argparse.Namespace) -> list[Person]:
    start = time.time() + 2.0  # Chromium's first page loads meanwhile
    ch = schedule(a.people, a.interval, start, a.jitter, seed=2 * a.run_no)
    ss = schedule(a.people, a.interval, start + a.interval / 2, a.jitter, seed=2 * a.run_no + 1)
    g_ch = gevent.spawn(cp.run, proxy.url, a.people, a.interval, a.window, emit=a.emit, page=a.page_origin, starts=ch,
                        ahead=True)
    g_ss = gevent.spawn(sioscale_people, proxy.url, ca, a.people, a.interval, a.window, pool=a.pool, emit=a.emit,
                        starts=ss)
    gevent.joinall([g_ch, g_ss], raise_error=True)
    return attach(g_ch.value + g_ss.value, proxy.conns)


def _bursts(cp: ChromiumPeople, proxy: ProxyProcess, ca: str | None, a: argparse.Namespace) -> list[Person]:
    """`a.bursts` bursts of `a.burst` people a side, the sides taking turns, each burst alone until its window ends."""
    people: list[Person] = []
    for _ in range(a.bursts):
        if a.burst_together:  # both sides' bursts at once, interleaved: one load, one server latency for both
            start = time.time() + 0.3
            g_ch = gevent.spawn(cp.run, proxy.url, a.burst, a.burst_spacing, a.window, start, prepare=True,
                                emit=a.emit, page=a.page_origin)
            g_ss = gevent.spawn(_after_pages, g_ch, proxy, proxy.conn_count(), ca, a)
            gevent.joinall([g_ch, g_ss], raise_error=True)
            people += g_ch.value + g_ss.value
            gevent.sleep(0.5)
            continue
        start = time.time() + 0.3
        people += cp.run(proxy.url, a.burst, a.burst_spacing, a.window, start, prepare=True, emit=a.emit,
                         page=a.page_origin)
        gevent.sleep(0.5)  # the last sessions' close requests leave before the other side's burst
        start = time.time() + 0.3
        people += sioscale_people(proxy.url, ca, a.burst, a.burst_spacing, a.window, start, a.pool, a.emit)
        gevent.sleep(0.5)
    conns = proxy.conns  # one copy of the record (from the proxy's process)
    print(f"  median spread of a burst's first requests: {burst_spread(people, conns, a.burst)} s; "
          f"median ms from the CONNECT POST to its answer at the proxy (the nodes' latency each side met): "
          f"{post_answer_ms(people, conns)}")
    return attach(people, conns)


def _after_pages(g_ch: gevent.Greenlet, proxy: ProxyProcess, n0: int, ca: str | None,
                 a: argparse.Namespace) -> list[Person]:
    """sioscale's burst of a together-run, started with Chromium's sockets (once its pages are loaded the
    proxy sees Chromium's first connection: page loads never reach it), half a spacing after Chromium's."""
    while not g_ch.ready() and proxy.conn_count() <= n0:
        gevent.sleep(0.005)
    return sioscale_people(proxy.url, ca, a.burst, a.burst_spacing, a.window, time.time() + a.burst_spacing / 2, a.pool,
                           a.emit)


def post_answer_ms(people: list[Person], conns: list[Any]) -> dict[str, float]:
    """Per side, the median ms from a session's first POST (its CONNECT) to its answer at the proxy. Why: the
    first poll rides the handshake's connection when that answer came first, so a side whose answers came
    late (a loaded machine) connects less, whatever its pool does."""
    first: dict[str, float] = {}
    for c in conns:
        for r in c.requests:
            if r.method == "POST" and r.sid and r.answered and r.sid not in first:
                first[r.sid] = (r.answered - r.t) * 1000
    return {side: round(statistics.median(v), 1) if (v := [first[p.sid] for p in people
                                                            if p.side == side and p.sid in first]) else 0.0
            for side in SIDES}


def burst_spread(people: list[Person], conns: list[Any], burst: int) -> dict[str, float]:
    """Per side, the median spread (s) of a burst's sessions' first requests at the proxy: how concurrent
    the bursts really were (people are listed in start order, `burst` at a time)."""
    t_of: dict[str, float] = {}
    for c in conns:
        for r in c.requests:
            if r.sid:
                t_of[r.sid] = min(t_of.get(r.sid, r.t), r.t)
    out: dict[str, float] = {}
    for side in SIDES:
        mine = [p for p in people if p.side == side]
        spreads = [max(ts) - min(ts) for i in range(0, len(mine), burst)
                   if len(ts := [t_of[p.sid] for p in mine[i:i + burst] if p.sid in t_of]) > 1]
        out[side] = round(statistics.median(spreads), 3) if spreads else 0.0
    return out


def regimes(cp: ChromiumPeople, proxy: ProxyProcess, ca: str | None, a: argparse.Namespace) -> None:
    """The issue's regimes at 50 ms, one person at a time: which connection each side's first poll rode."""
    for name, conn_d, hold in (("a: connections 50 ms late", 0.05, 0.0), ("b: CONNECT answer held 50 ms", 0.0, 0.05)):
        proxy.reset(connect_delay_s=conn_d, hold_first_post_s=hold)
        people = cp.run(proxy.url, a.regimes, 0.5, 0.6, page=a.page_origin)
        people += sioscale_people(proxy.url, ca, a.regimes, 0.5, 0.6, pool=a.pool)
        attach(people, proxy.conns)
        for side in SIDES:
            mine = [p for p in people if p.side == side]
            on_a = sum(1 for p in mine if p.step("poll") and p.step("poll")[1] == "A")  # type: ignore[index]
            print(f"regime {name}: {side} first poll on the handshake's connection {on_a}/{len(mine)}, "
                  f"connected {sum(p.connected for p in mine)}")


def _lags_said(lags: lag_rules.BrowserLags) -> str:
    def one(lag: lag_rules.Lag) -> str:
        q = [lag.quantile(p) for p in (0.1, 0.5, 0.9)]
        return f"{q[1]:g} ms" if q[0] == q[2] else "p10/p50/p90 " + "/".join(f"{v:.2g}" for v in q) + " ms"
    return f"dispatch gap {one(lags.dispatch_gap)}, release {one(lags.release)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--people", type=int, default=135, help="people per side per run (3 runs: 405 a side)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--policy", default="l4-round-robin")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between one side's people")
    ap.add_argument("--ping-interval", type=float, default=2.0)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--tls", action="store_true", help="TLS at the proxy (HTTP/1.1, no ALPN)")
    ap.add_argument("--regimes", type=int, default=0, help="people per side through the 50 ms regimes first")
    ap.add_argument("--pool", default="browser", choices=("browser", "node"))
    ap.add_argument("--dispatch-gap-ms", type=float, default=None,
                    help="a fixed dispatch gap and no release lag for sioscale this run, as the earlier model had "
                         "(default: lags.CHROMIUM's drawn ones; transport/lags.py)")
    ap.add_argument("--burst", type=int, default=0, help="people a burst (0: one at a time, --interval apart)")
    ap.add_argument("--bursts", type=int, default=8, help="bursts a side a run (with --burst)")
    ap.add_argument("--burst-together", action="store_true",
                    help="both sides' bursts at once, interleaved (one machine load for both), not taking turns")
    ap.add_argument("--burst-spacing", type=float, default=1 / 15, help="seconds between a burst's people")
    ap.add_argument("--jitter", type=float, default=0.25,
                    help="each person's start moves by up to this x --interval either way, seeded (tests/_fidelity.schedule)")
    ap.add_argument("--hold-connect-ms", type=float, default=0.0,
                    help="hold each session's CONNECT POST answer this long at the proxy: how each side's connect "
                         "rate answers the server's latency (docs/protocol.md section 6)")
    ap.add_argument("--emit", default="", help="an event each person emits (with an ack) once connected, e.g. join")
    ap.add_argument("--page-origin", default="", help="Chromium's pages' origin: 'target' for the target's own "
                    "(default: another origin of the same site, the target's pool empty at start)")
    ap.add_argument("--dump", default="", help="write every person (outcome, proxy-seen steps, first_poll_timing) "
                    "as JSON lines to this file")
    a = ap.parse_args(argv)
    if a.burst < 0 or a.bursts < 1 or a.burst_spacing < 0 or not 0 <= a.jitter < 0.5:
        ap.error("--burst must be >= 0, --bursts >= 1, --burst-spacing >= 0, 0 <= --jitter < 0.5")
    if a.dispatch_gap_ms is not None:
        lag_rules.DEFAULT = lag_rules.BrowserLags.fixed(a.dispatch_gap_ms)
    if (why := chromium_missing()):
        print(f"browser_fidelity: cannot run: {why}", file=sys.stderr)
        return 2
    tls = make_tls(Path(tempfile.mkdtemp(prefix="fidelity-tls-")))
    cp = ChromiumPeople()
    print(f"Chromium {cp.version}; {a.policy}, 3 python-socketio nodes, pingInterval {a.ping_interval:g} s, "
          f"{'TLS' if a.tls else 'plain'} proxy (CONNECT answers held {a.hold_connect_ms:g} ms); {a.people} people a side a run, one every {a.interval:g} s a side, "
          f"window {a.window:g} s, starts jittered by up to {a.jitter:g} x interval, sioscale --sio-http-pool {a.pool} (lags: "
          f"{_lags_said(lag_rules.DEFAULT)}); emit at connect: {a.emit or 'none'}; Chromium's page on "
          f"{'the target' if a.page_origin == 'target' else a.page_origin or 'another origin of the same site'}")
    everyone: list[Person] = []
    out: dict[str, Any] = {"runs": []}
    try:
        for r in range(1, a.runs + 1):
            a.run_no = r
            people = one_run(cp, a, tls)
            everyone += people
            if a.dump:  # run by run: a later run's crash or Ctrl-C keeps the earlier runs' people
                with open(a.dump, "a" if r > 1 else "w") as f:
                    f.write("".join(json.dumps({"run": r, **asdict(p)}) + "\n" for p in people))
            out["runs"].append(report(f"run {r}", people))
    finally:
        cp.close()
    if a.runs > 1:
        out["pooled"] = report(f"pooled, {a.runs} runs", everyone)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
