"""Live node resources for the web UI's Socket.IO tab: each node's CPU, RSS, event-loop lag and clients.

Why here and not from the run's sampler (targets/telemetry.py): that one runs in `sioscale run`'s
process and writes resources.csv; a person watching Locust's web UI (`sioscale cluster` in one
terminal, `locust -f locustfiles/chat.py` in another, or their own cluster) has no such process.
So the process that serves the web UI -- the master or a local runner, never a worker -- polls
the nodes' Prometheus /metrics itself (`--sio-scrape`, `[ID=]URL,...`, the rules of `sioscale
run --scrape`: contract.options.scrape_targets).

How:
- One gevent greenlet polls every POLL_INTERVAL_S; each target is read in a greenlet of its own,
  bounded as a whole by TIMEOUT_S (gevent.Timeout, beside the socket timeout: a server that
  trickles bytes is bounded too). A target whose read is still running is not read again, so a
  hung endpoint holds one greenlet and delays neither the others nor the UI (which only reads the
  latest values, never waits on a read).
- The text is parsed by prometheus_client's parser and mapped by contract.resources'
  `metrics_of_samples`: the same names and rules as resources.csv. CPU % is the rate of
  process_cpu_seconds_total between two good reads (100 = one core), so the first read has none.
- Each node keeps its latest good reading, its age, and the last read's error kind (timeout,
  refused, garbage, error: contract.resources.WARNINGS), cleared by the next good read.
- Lifecycle: started at init when the option is set; at test_start the option is read again (the
  web UI's form may have changed it); stopped at quitting. It keeps polling between tests: the
  UI still shows the nodes then. Its greenlets never keep the process alive.
"""

from __future__ import annotations

import http.client
import logging
import math
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from locust import events
from locust.runners import WorkerRunner
from prometheus_client.parser import text_string_to_metric_families

from contract.options import SioOptions, scrape_targets
from contract.resources import counter_rate, metrics_of_samples
from locustfiles.sio.transport.net import tls_context

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 2.0
TIMEOUT_S = 1.0
MAX_BODY = 1 << 20
ATTR = "_sioscale_noderes"

Fetch = Callable[[str, float], str]
"""(url, timeout) -> the /metrics body; raises on any failure (see `error_kind`)."""


class ReadError(Exception):
    """A read that failed for a known reason; `kind` is one of timeout, refused, garbage, error."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def error_kind(e: BaseException) -> str:
    """The warning kind of a failed read (the kinds of resources.csv's warning rows)."""
    if isinstance(e, ReadError):
        return e.kind
    if isinstance(e, gevent.Timeout | TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ValueError | http.client.HTTPException):
        return "garbage"  # not the text format (UnicodeDecodeError is a ValueError), or not HTTP at all
    return "error"


def parse_metrics(text: str) -> tuple[dict[str, float], float | None]:
    """Prometheus text -> (levels by resources.csv metric, process CPU seconds or None).

    prometheus_client's parser, never by hand; the names are contract.resources' table. A page
    the parser rejects, or one with none of the names, is ReadError("garbage"). Non-finite or
    negative values are lies and are left out, as in resources.csv.
    """
    seen: dict[str, list[float]] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if math.isfinite(s.value) and s.value >= 0:
                    seen.setdefault(s.name, []).append(float(s.value))
    except Exception as e:  # noqa: BLE001 - the parser raises ValueError, IndexError, ... on garbage
        raise ReadError("garbage", f"not Prometheus text ({type(e).__name__})") from None
    levels, cpu = metrics_of_samples(seen)
    if not levels and cpu is None:
        raise ReadError("garbage", "none of the known metric names")
    return levels, cpu


def http_fetch(url: str, timeout: float, ca_file: str = "", insecure: bool = False) -> str:
    """GET `url`, every socket operation bounded by `timeout`; the body as text (at most MAX_BODY bytes).

    http.client directly: no proxy from the environment (the nodes are the user's, reached
    directly), and gevent's patched sockets make it cooperative under Locust.
    """
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=timeout,
                                           context=tls_context(ca_file, insecure))
    else:
        conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=timeout)
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""))
        r = conn.getresponse()
        body = r.read(MAX_BODY)
        if r.status != 200:
            raise ReadError("error", f"HTTP {r.status}")
    finally:
        conn.close()
    return body.decode("utf-8")


@dataclass
class Reading:
    """One node's latest good values and the outcome of its last read."""

    id: str
    url: str
    ok_at: float | None = None  # wall time of the last good read
    cpu_percent: float | None = None
    rss_bytes: float | None = None
    event_loop_lag_ms: float | None = None
    clients: float | None = None
    error: str | None = None  # the last read's failure kind; None after a good read
    detail: str = ""
    cpu_prev: tuple[float, float] | None = None  # (monotonic, process CPU seconds) of the last good read

    def view(self, now: float) -> dict[str, Any]:
        """The JSON form (`node_resources` in /sio/stats and sio_stats.json)."""
        return {"id": self.id, "url": self.url, "cpu_percent": _round(self.cpu_percent, 1),
                "rss_bytes": self.rss_bytes, "event_loop_lag_ms": _round(self.event_loop_lag_ms, 2),
                "clients": self.clients, "age_s": None if self.ok_at is None else round(max(0.0, now - self.ok_at), 1),
                "error": self.error, "detail": self.detail}


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


class NodePoller:
    """Polls `targets` ((id, url) pairs) every `interval` s; `readings()` gives the latest per node."""

    def __init__(self, targets: list[tuple[str, str]], fetch: Fetch = http_fetch,
                 interval: float = POLL_INTERVAL_S, timeout: float = TIMEOUT_S) -> None:
        self.readings_by_id = {i: Reading(i, u) for i, u in targets}
        self.fetch, self.interval, self.timeout = fetch, interval, timeout
        self.config_error = ""  # a bad --sio-scrape: shown instead of the nodes
        self._loop_g: gevent.Greenlet | None = None
        self._reads: dict[str, gevent.Greenlet] = {}

    @property
    def targets(self) -> list[tuple[str, str]]:
        return [(r.id, r.url) for r in self.readings_by_id.values()]

    def start(self) -> NodePoller:
        if self._loop_g is None and self.readings_by_id:
            self._loop_g = gevent.spawn(self._loop)
        return self

    def stop(self) -> None:
        """Kill the loop and every read in flight, without waiting on them."""
        greenlets = [g for g in (self._loop_g, *self._reads.values()) if g is not None]
        self._loop_g, self._reads = None, {}
        gevent.killall(greenlets, block=False)

    def _loop(self) -> None:
        while True:
            self.poll_once()
            gevent.sleep(self.interval)

    def poll_once(self) -> list[gevent.Greenlet]:
        """Start a read of every target whose previous read has ended; returns the reads started."""
        started = []
        for r in self.readings_by_id.values():
            g = self._reads.get(r.id)
            if g is not None and not g.dead:
                continue
            self._reads[r.id] = g = gevent.spawn(self._read, r)
            started.append(g)
        return started

    def _read(self, r: Reading) -> None:
        """One bounded read of one node; every failure becomes its error kind, never an exception."""
        try:
            with gevent.Timeout(self.timeout, ReadError("timeout", f"no answer within {self.timeout:g} s")):
                levels, cpu = parse_metrics(self.fetch(r.url, self.timeout))
        except Exception as e:  # noqa: BLE001 - a node's failure is its warning, not the poller's end
            r.error, r.detail = error_kind(e), _detail(e)
            return
        now, mono = time.time(), time.monotonic()
        r.rss_bytes = levels.get("rss_bytes")
        r.event_loop_lag_ms = levels.get("event_loop_lag_ms")
        r.clients = levels.get("clients")
        if cpu is None:
            r.cpu_percent, r.cpu_prev = None, None
        else:
            rate = counter_rate(r.cpu_prev, mono, cpu)
            r.cpu_percent = None if rate is None else 100.0 * rate
            r.cpu_prev = (mono, cpu)
        r.ok_at, r.error, r.detail = now, None, ""

    def readings(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every node's latest reading (JSON form), in the option's order; a config error alone."""
        now = time.time() if now is None else now
        if self.config_error:
            return [{"id": "--sio-scrape", "url": "", "error": "config", "detail": self.config_error}]
        return [r.view(now) for r in self.readings_by_id.values()]


def _detail(e: BaseException) -> str:
    """A short reason for the tab: the message, or the exception's type when it has none."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, http.client.HTTPException):  # BadStatusLine's message is the line it got
        text = f"not HTTP ({type(e).__name__}: {text[:60]!r})"
    return (text or type(e).__name__)[:120]


# -- the environment's poller and Locust's events ------------------------------------------------
def poller(environment: Any) -> NodePoller | None:
    return getattr(environment, ATTR, None)


def readings(environment: Any, now: float | None = None) -> list[dict[str, Any]]:
    """`node_resources` for eventlog.stats(): [] when no node is polled (no --sio-scrape, or a worker)."""
    p = poller(environment)
    return [] if p is None else p.readings(now)


def configure(environment: Any) -> NodePoller | None:
    """(Re)start the poller from the environment's --sio-scrape; a worker never polls.

    Called at init and at each test_start. The same targets keep their poller (and readings); a
    changed list replaces it; a bad list (possible from the web UI's form, which skips the
    parser's check) is a one-line error in the log and a row in the tab, never an exception.
    """
    if environment.runner is None or isinstance(environment.runner, WorkerRunner):
        return None
    opts = SioOptions.from_environment(environment)
    old = poller(environment)
    try:
        targets = [(t.id, t.url) for t in scrape_targets(opts.scrape)]
        error = ""
    except ValueError as e:
        targets, error = [], str(e)
        log.error("sioscale: %s", e)
    if old is not None and old.targets == targets and old.config_error == error:
        return old.start()
    if old is not None:
        old.stop()
    if not targets and not error:
        setattr(environment, ATTR, None)
        return None

    def fetch(url: str, timeout: float) -> str:
        return http_fetch(url, timeout, opts.ca_file, opts.insecure)

    p = NodePoller(targets, fetch)
    p.config_error = error
    setattr(environment, ATTR, p)
    return p.start()


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    configure(environment)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kw: Any) -> None:
    configure(environment)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    p = poller(environment)
    if p is not None:
        p.stop()


__all__ = ["ATTR", "POLL_INTERVAL_S", "TIMEOUT_S", "NodePoller", "ReadError", "Reading", "configure",
           "error_kind", "http_fetch", "parse_metrics", "poller", "readings"]
