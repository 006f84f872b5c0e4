"""Telemetry of the system under test: one sample a second into RUN_DIR/resources.csv (issue 12).

Why here, beside the cluster: it samples the cluster's own processes (pids from targets.cluster)
and endpoints (each node's /metrics, Redis INFO, HAProxy's stats socket), and the runner -- not
Locust -- starts it, so the generator's gevent never runs it. The generator's own CPU is not
sampled here: it is in generator.csv already (component `generator` rows are optional).

Rules (docs/contracts.md, "resources.csv"):
- every process: cpu_percent (psutil cpu_times deltas, 100 = one core), rss_bytes, open_fds;
- nodes: clients and event_loop_lag_ms from their own /metrics (Prometheus text, parsed with
  prometheus_client's parser);
- Redis: INFO (ops/s, clients, memory, pub/sub channels; CPU from INFO when the process is not ours);
- HAProxy: `show stat` on its stats socket, per backend server and for the backend;
- cgroup-limited nodes: an optional reader (targets.cgroups when it exists) gives limits and
  throttling counters, turned into per-second rates here.
- users' own nodes (`--scrape [ID=]URL`, beside the local cluster or alone behind --url): their
  Prometheus text, prom-client's and python's default process names and a connected-sockets gauge,
  as component `node` with that id; process_cpu_seconds_total becomes cpu_percent as a rate.
A sampler that fails writes a warning row and goes on; every remote call is bounded by a timeout
and runs in its own pool thread, so one hung endpoint delays no other sample, and none fails
the run. The sampler's own CPU (all its threads, time.thread_time) is counted for meta.json.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import functools
import http.client
import io
import math
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from contract.config import REDIS_ADAPTERS
from contract.resources import (
    CLIENT_GAUGES,
    CPU_COUNTER,
    NODE_GAUGES,
    RESOURCES_CSV,
    SCRAPE_GAUGES,
    append_rows,
    metrics_of_samples,
    warning_metric,
)

INTERVAL_S = 1.0
TIMEOUT_S = 0.5
NODE_TIMEOUT_S = 3.0
"""Our own nodes' /metrics may take this long. A node at its CPU quota answers late: its event loop lags by
seconds, which is exactly when its lag reading matters. The tick does not wait for it: a reading that
arrives after its tick is written at the next tick, with the time it was read (Sampler.sample_once)."""
HAPROXY_STATS_SOCKET = "haproxy-stats.sock"  # relative to the cluster's workdir (haproxy.cfg.j2)

Row = tuple[float, str, str, str, str, float]
Sample = list[tuple[str, str, str, float]]  # (component, id, metric, value), ts and run added later
CgroupReader = Callable[[str], Mapping[str, float] | None]
"""node id -> {"cpu_limit_cores", "memory_limit_bytes", "nr_throttled", "nr_periods" (cumulative),
"throttled_ms" (cumulative)} or None when the node has no cgroup; any key may be absent."""

# /metrics names -> resources.csv metrics: NODE_GAUGES, SCRAPE_GAUGES, CLIENT_GAUGES, CPU_COUNTER and
# metrics_of_samples live in contract.resources, shared with the Locust web UI's live node view.
REDIS_INFO: dict[str, str] = {
    "instantaneous_ops_per_sec": "ops_per_sec",
    "connected_clients": "connected_clients",
    "used_memory": "used_memory_bytes",
    "pubsub_channels": "pubsub_channels",
    "pubsubshard_channels": "pubsubshard_channels",  # Redis >= 7 only; absent keys are skipped
}
STREAMS_KEY = "socket.io"
"""@socket.io/redis-streams-adapter's default streamName (targets/node/server.js keeps it)."""


class SampleError(Exception):
    """One sampler failed; `kind` is one of contract.resources.WARNINGS."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def _kind_of(e: BaseException) -> str:
    """The warning kind of an exception raised while reading an endpoint."""
    if isinstance(e, SampleError):
        return e.kind
    if isinstance(e, (TimeoutError, socket.timeout)) or "timed out" in str(e).lower():
        return "timeout"
    if isinstance(e, (ConnectionRefusedError, FileNotFoundError)):
        return "refused"
    if isinstance(e, psutil.NoSuchProcess):
        return "gone"
    if type(e).__name__ == "TimeoutError":  # redis.exceptions.TimeoutError
        return "timeout"
    if type(e).__name__ == "ConnectionError" and "refused" in str(e).lower():
        return "refused"
    if isinstance(e, (ValueError, KeyError, UnicodeDecodeError, http.client.HTTPException)):
        return "garbage"  # UnicodeDecodeError is a ValueError; HTTPException: not HTTP at all
    return "error"


# ------------------------------------------------------------------------------------ parsers
def parse_node_metrics(text: str) -> dict[str, float]:
    """clients / event_loop_lag_ms from a node's Prometheus text; SampleError("garbage") if neither.

    Parsed with prometheus_client's own parser (never by hand): a page that is not the text
    format raises in it or yields none of the gauges, and both are "garbage". The names are
    contract.resources.NODE_GAUGES.
    """
    out, _cpu = metrics_of_samples(_samples(text, math.isfinite), NODE_GAUGES, ())
    if not out:
        raise SampleError("garbage", "no sioscale_clients or event-loop lag gauge")
    return out


def _samples(text: str, keep: Callable[[float], bool]) -> dict[str, list[float]]:
    """Prometheus text -> {sample name: [values kept]}, by prometheus_client's parser; garbage raises."""
    seen: dict[str, list[float]] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if keep(s.value):
                    seen.setdefault(s.name, []).append(float(s.value))
    except Exception as e:  # noqa: BLE001 - the parser raises ValueError, IndexError, ... on garbage
        raise SampleError("garbage", f"{type(e).__name__}: {e}") from None
    return seen


def parse_scrape_metrics(text: str) -> tuple[dict[str, float], float | None]:
    """A user's node's Prometheus text -> (levels by resources.csv metric, process CPU seconds or None).

    The CPU counter is returned raw: a rate needs the previous scrape (Sampler keeps it). Parsed
    with prometheus_client's parser; a page it rejects, or one with none of the known names
    (SCRAPE_GAUGES, CLIENT_GAUGES, CPU_COUNTER), is SampleError("garbage"). A value that is not
    finite or is negative is a lie and is left out, as if the metric were missing.
    """
    out, cpu = metrics_of_samples(_samples(text, lambda v: math.isfinite(v) and v >= 0))
    if not out and cpu is None:
        raise SampleError("garbage", "none of " + ", ".join([CPU_COUNTER, *SCRAPE_GAUGES, *CLIENT_GAUGES]))
    return out, cpu


def fetch_metrics(url: str, timeout: float = TIMEOUT_S, context: ssl.SSLContext | None = None) -> str:
    """GET a /metrics URL, every socket operation bounded by `timeout`; the body as text.

    http.client directly (no urllib opener, no proxy from the environment: the nodes are ours):
    about half of urllib's CPU per call, and the sampler runs every second.
    """
    u = urllib.parse.urlsplit(url)
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname or "", u.port or 443, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=timeout)
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""))
        r = conn.getresponse()
        body = r.read(1 << 20)
        if r.status != 200:
            raise SampleError("error", f"HTTP {r.status} from {url}")
    finally:
        conn.close()
    return body.decode("utf-8")


def redis_rows(info: Mapping[str, Any]) -> dict[str, float]:
    """The resources.csv metrics of one Redis INFO dict; SampleError("garbage") when none is a number."""
    out: dict[str, float] = {}
    for key, metric in REDIS_INFO.items():
        with contextlib.suppress(TypeError, ValueError):
            v = float(info[key]) if key in info else math.nan
            if math.isfinite(v):
                out[metric] = v
    if not out:
        raise SampleError("garbage", "INFO without any of " + ", ".join(REDIS_INFO))
    return out


def redis_cpu_seconds(info: Mapping[str, Any]) -> float | None:
    """used_cpu_sys + used_cpu_user (for a Redis that is not our process), or None."""
    try:
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    except (KeyError, TypeError, ValueError):
        return None


def parse_haproxy_stat(text: str, backend: str = "be_sio") -> dict[str, dict[str, float]]:
    """`show stat` CSV -> {server name or "BACKEND": {"scur", "qcur", "errors_total"}} for `backend`.

    errors_total is the cumulative econ + eresp + wretr + wredis; the sampler turns it into a
    per-second rate. SampleError("garbage") if the text is not HAProxy's stat CSV.
    """
    lines = text.lstrip("# ").splitlines()
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    if not rows or "pxname" not in rows[0] or "scur" not in rows[0]:
        raise SampleError("garbage", "not HAProxy stat CSV")
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("pxname") != backend or r.get("svname") == "FRONTEND":
            continue

        def num(k: str, r: dict[str, str] = r) -> float:
            v = r.get(k) or ""
            return float(v) if v.strip() else 0.0

        try:
            out[r["svname"]] = {"scur": num("scur"), "qcur": num("qcur"),
                                "errors_total": sum(num(k) for k in ("econ", "eresp", "wretr", "wredis"))}
        except ValueError:
            raise SampleError("garbage", f"non-numeric field in {r.get('svname')!r}") from None
    if not out:
        raise SampleError("garbage", f"no {backend} rows")
    return out


def unix_request(path: Path, command: bytes, timeout: float = TIMEOUT_S) -> str:
    """Send one command to a unix stream socket and read until it closes (HAProxy's CLI).

    Long workdirs exceed the 108-byte limit of a socket path: the directory is opened and the
    socket reached through /proc/self/fd/N, which is always short.
    """
    deadline = time.monotonic() + timeout
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(f"/proc/self/fd/{dfd}/{path.name}")
            s.sendall(command)
            chunks = []
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
    finally:
        os.close(dfd)
    return b"".join(chunks).decode("utf-8", "replace")


# ------------------------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    """One process of the system under test, as the sampler sees it this second."""

    component: str  # node | balancer | redis
    id: str
    pid: int | None  # None: not running (a stopped node, a balancer being restarted)
    metrics_url: str | None = None  # nodes: their own /metrics
    # CPU, RSS and FDs summed over the process and its children: nginx's master does no proxying,
    # its worker does (HAProxy -db and Caddy are one process, so the sum is the process itself)
    tree: bool = False


def cluster_targets(cluster: Any) -> list[Target]:
    """The cluster's processes now (a restarted node has a new pid): nodes, balancer, Redis.

    Reads `Cluster._children()` (kind, node id, Child) for the balancer's and Redis's pids,
    which `Cluster.info` does not expose.
    """
    urls = {n["id"]: n["url"] for n in cluster.info["nodes"]}
    out = []
    for kind, nid, ch in cluster._children():
        pid = ch.pid if ch.alive() else None
        if kind == "node":
            out.append(Target("node", nid, pid, urls[nid].rstrip("/") + "/metrics"))
        elif kind == "balancer":
            out.append(Target("balancer", cluster.config.balancer, pid, tree=True))
        else:
            out.append(Target("redis", "redis", pid))
    return out


class _ProcessMeter:
    """cpu_percent / rss_bytes / open_fds of pids, from psutil; CPU as a delta between samples."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}
        self.last: dict[int, tuple[float, float]] = {}  # pid -> (monotonic, cpu seconds)

    def sample(self, pid: int, tree: bool = False) -> dict[str, float]:
        # Kept per pid (a restarted node has a new pid; forget_except drops the old one). Not
        # is_running() each second: it builds a second Process and reads /proc again.
        p = self.procs.get(pid)
        if p is None:
            p = self.procs[pid] = psutil.Process(pid)
            self.last.pop(pid, None)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                raise SampleError("gone", f"pid {pid} is a zombie")
            t = p.cpu_times()
            rss = p.memory_info().rss
            fds = p.num_fds()
        now, cpu = time.monotonic(), t.user + t.system
        if tree:
            c_cpu, c_rss, c_fds = _children_usage(p)
            cpu, rss, fds = cpu + c_cpu, rss + c_rss, fds + c_fds
        out = {"rss_bytes": float(rss), "open_fds": float(fds)}
        prev = self.last.get(pid)
        self.last[pid] = (now, cpu)
        if prev is not None and now > prev[0]:
            out["cpu_percent"] = max(0.0, 100.0 * (cpu - prev[1]) / (now - prev[0]))
        return out

    def forget_except(self, pids: Iterable[int]) -> None:
        keep = set(pids)
        for pid in [p for p in self.procs if p not in keep]:
            self.procs.pop(pid, None)
            self.last.pop(pid, None)


def _children_usage(p: psutil.Process) -> tuple[float, int, int]:
    """CPU seconds, RSS bytes and open FDs of `p`'s live children (one that ends meanwhile is skipped).

    A child replaced between two samples (an nginx worker respawned) lowers the sum; the CPU
    delta is clamped at 0 for that second, as for a restarted process.
    """
    cpu, rss, fds = 0.0, 0, 0
    for c in p.children(recursive=True):
        with contextlib.suppress(psutil.Error), c.oneshot():
            t = c.cpu_times()
            cpu, rss, fds = cpu + t.user + t.system, rss + c.memory_info().rss, fds + c.num_fds()
    return cpu, rss, fds


class _Rates:
    """Cumulative counters -> per-second rates (the contract's rows are levels over their second).

    The first reading of a counter gives no rate; a counter that went down (a restarted
    process) restarts from its new value.
    """

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, str], tuple[float, float]] = {}

    def rate(self, key: tuple[str, str, str], total: float, now: float, reset_from_zero: bool = False) -> float | None:
        """`reset_from_zero`: a counter that went down restarted from 0 since the last reading, so
        its new value is the increase (Prometheus' rate() rule); for a scraped process whose
        restart we cannot see otherwise, this keeps the second of the restart instead of a gap."""
        prev = self.last.get(key)
        self.last[key] = (now, total)
        if prev is None or now <= prev[0]:
            return None
        if total < prev[1]:
            return total / (now - prev[0]) if reset_from_zero else None
        return (total - prev[1]) / (now - prev[0])


class Sampler:
    """Samples the system under test every `interval` seconds into `path` (resources.csv).

    `targets()` is called each second (pids change when a node restarts). Remote reads (node
    /metrics, Redis INFO, HAProxy stats) run in a small pool, each bounded by `timeout`; the
    tick waits at most `timeout` + 0.25 s for them, so a hung endpoint costs the others nothing
    and the tick never stalls. Everything it cannot read is a warning row, never an exception.
    """

    def __init__(self, path: Path, run: str, targets: Callable[[], list[Target]], *,
                 redis_url: str | None = None, redis_is_ours: bool = True, haproxy_socket: Path | None = None,
                 ssl_context: ssl.SSLContext | None = None, cgroup_reader: CgroupReader | None = None,
                 interval: float = INTERVAL_S, timeout: float = TIMEOUT_S, node_timeout: float = NODE_TIMEOUT_S,
                 scrape: Iterable[tuple[str, str]] = (), streams: Iterable[str] = ()) -> None:
        self.path, self.run, self.targets = path, run, targets
        self.streams = tuple(streams)  # Redis stream keys whose XLEN is sampled (the Streams adapter's)
        self.node_timeout = node_timeout
        self.scrape: list[tuple[str, str]] = [(str(i), str(u)) for i, u in scrape]  # (id, url), users' own nodes
        self.redis_url, self.redis_is_ours, self.haproxy_socket = redis_url, redis_is_ours, haproxy_socket
        self.ssl_context, self.cgroup_reader = ssl_context, cgroup_reader
        self.interval, self.timeout = interval, timeout
        self.meter, self.rates = _ProcessMeter(), _Rates()
        # threads are made on demand; enough that hung endpoints (each held <= timeout) starve no other read
        self.pool = cf.ThreadPoolExecutor(max_workers=16 + len(self.scrape), thread_name_prefix="sioscale-telemetry")
        # the read of each (component, id) still running: never a second one beside it, so an endpoint
        # slower than its timeout holds one thread, not one more each second (the others' threads stay free)
        self._inflight: dict[tuple[str, str], cf.Future[Any]] = {}
        # reads their tick did not wait for: future -> ((component, id), submitted at (monotonic), its time limit)
        self._late: dict[cf.Future[Any], tuple[tuple[str, str], float, float]] = {}
        self._redis: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_s = 0.0
        self.samples = self.rows = self.warnings = self.write_errors = 0
        self._t0 = self._t1 = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Sampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="sioscale-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling (waits at most one tick) and return the figures for meta.json `telemetry`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + self.timeout + 1.0)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
        self._t1 = time.monotonic()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        wall = max(1e-9, (self._t1 or time.monotonic()) - self._t0)
        return {"file": RESOURCES_CSV, "samples": self.samples, "rows": self.rows, "warnings": self.warnings,
                "write_errors": self.write_errors, "interval_s": self.interval, "timeout_s": self.timeout,
                "node_timeout_s": self.node_timeout,
                "cpu_seconds": round(self.cpu_s, 4), "cpu_percent": round(100.0 * self.cpu_s / wall, 3),
                "scrape": [{"id": i, "url": u} for i, u in self.scrape]}

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            t0 = time.thread_time()
            rows = self.sample_once()
            try:
                self.rows += append_rows(self.path, rows)
            except OSError:
                self.write_errors += 1  # a full disk costs this second's rows, not the run
            self._add_cpu(time.thread_time() - t0)
            due = max(due + self.interval, time.monotonic())

    def _add_cpu(self, seconds: float) -> None:
        with self._lock:
            self.cpu_s += seconds

    def _timed(self, fn: Callable[[], Sample]) -> Callable[[], tuple[float, Sample]]:
        """fn, its CPU counted, returning (when it finished, epoch s; its sample): a late reading keeps its time."""
        def run() -> tuple[float, Sample]:
            t0 = time.thread_time()
            try:
                sample = fn()
                return time.time(), sample
            finally:
                self._add_cpu(time.thread_time() - t0)
        return run

    # --------------------------------------------------------------------- a tick
    def sample_once(self) -> list[Row]:
        """One sample of everything: the rows (warnings included) for this second, and the readings of an
        earlier second that arrived since (a slow node's /metrics), each with the time it was read."""
        ts, now = time.time(), time.monotonic()
        out: Sample = []
        rows: list[Row] = self._harvest_late(ts)
        try:
            targets = self.targets()
        except Exception:  # noqa: BLE001 - a cluster being torn down: nothing to sample this second
            targets = []
        futures, busy = self._submit_remote(targets, now)
        out += [(component, id_, warning_metric("timeout"), 1.0) for component, id_ in busy]
        self.meter.forget_except(t.pid for t in targets if t.pid is not None)
        for t in targets:
            out += self._process(t)
            if t.component == "node" and self.cgroup_reader is not None:
                out += self._cgroup(t.id, now)
        done, late = cf.wait(futures, timeout=self.timeout + 0.25)
        for f in late:
            key, limit = futures[f]
            if limit > self.timeout + 0.25:  # still within its own, longer limit: harvested at a later tick
                self._late[f] = (key, now, limit)
            else:  # past its limit: a timeout now; overdue (a warning each tick) until it ends
                self._late[f] = (key, -math.inf, limit)
                out.append((key[0], key[1], warning_metric("timeout"), 1.0))
        for f in done:
            out += self._result(f, futures[f][0])[1]
        rows += [(ts, self.run, c, i, m, v) for c, i, m, v in out]
        self.samples += 1
        self.warnings += sum(1 for r in rows if r[4].startswith("warning:"))
        return rows

    def _result(self, f: cf.Future[Any], key: tuple[str, str]) -> tuple[float | None, Sample]:
        """(when it was read, its sample) of a finished read; a failure is a warning row, its time unknown."""
        try:
            read_at, sample = f.result()
            return read_at, sample
        except Exception as e:  # noqa: BLE001 - every failure of a sampler is a warning row
            return None, [(key[0], key[1], warning_metric(_kind_of(e)), 1.0)]

    def _harvest_late(self, ts: float) -> list[Row]:
        """The late reads that finished since the last tick, as rows at the time they were read."""
        rows: list[Row] = []
        for f, (key, _since, _limit) in list(self._late.items()):
            if f.done():
                del self._late[f]
                read_at, sample = self._result(f, key)
                rows += [(read_at or ts, self.run, c, i, m, v) for c, i, m, v in sample]
        return rows

    def _submit_remote(self, targets: list[Target], now: float
                       ) -> tuple[dict[cf.Future[Any], tuple[tuple[str, str], float]], list[tuple[str, str]]]:
        """This second's remote reads -> (futures -> ((component, id), time limit), the keys overdue from before).

        A key whose previous read has not ended is not read again (an endpoint slower than its limit holds
        one thread, not one more each second). While that read is within its own limit it is simply late
        (its reading comes at a later tick); past the limit and a margin it is overdue: a timeout warning
        this second.
        """
        jobs: list[tuple[tuple[str, str], float, Callable[[], Sample]]] = []
        for t in targets:
            if t.component == "node" and t.pid is not None and t.metrics_url:
                jobs.append((("node", t.id), self.node_timeout, functools.partial(self._node_metrics, t)))
        jobs += [(("node", sid), self.timeout, functools.partial(self._scrape, sid, url)) for sid, url in self.scrape]
        redis_down = self.redis_is_ours and not any(t.component == "redis" and t.pid for t in targets)
        if self.redis_url and not redis_down:
            jobs.append((("redis", "redis"), self.timeout, self._redis_info))
        balancer = next((t for t in targets if t.component == "balancer" and t.pid is not None), None)
        if self.haproxy_socket is not None and balancer is not None:
            jobs.append((("balancer", balancer.id), self.timeout, functools.partial(self._haproxy, balancer.id)))
        fs: dict[cf.Future[Any], tuple[tuple[str, str], float]] = {}
        busy: list[tuple[str, str]] = []
        for key, limit, fn in jobs:
            prev = self._inflight.get(key)
            if prev is not None and not prev.done():
                since = self._late.get(prev, (key, now, limit))[1]
                if now - since > limit + 0.25:
                    busy.append(key)
                continue
            f = self._inflight[key] = self.pool.submit(self._timed(fn))
            fs[f] = (key, limit)
        return fs, busy

    # ----------------------------------------------------------------- samplers
    def _process(self, t: Target) -> Sample:
        if t.pid is None:
            return [(t.component, t.id, warning_metric("gone"), 1.0)]
        try:
            vals = self.meter.sample(t.pid, t.tree)
        except Exception as e:  # noqa: BLE001 - NoSuchProcess, AccessDenied, a zombie: a warning
            return [(t.component, t.id, warning_metric(_kind_of(e)), 1.0)]
        if t.component == "redis" and not self.redis_is_ours:
            vals.pop("cpu_percent", None)
        return [(t.component, t.id, m, v) for m, v in vals.items()]

    def _node_metrics(self, t: Target) -> Sample:
        text = fetch_metrics(t.metrics_url or "", self.node_timeout, self.ssl_context)
        return [("node", t.id, m, v) for m, v in parse_node_metrics(text).items()]

    def _scrape(self, sid: str, url: str) -> Sample:
        """A user's own node (--scrape): its process metrics, lag and clients; CPU as a rate of its counter.

        The system's default certificates verify an https target (not the local cluster's CA).
        """
        levels, cpu = parse_scrape_metrics(fetch_metrics(url, self.timeout))
        out: Sample = [("node", sid, m, v) for m, v in levels.items()]
        if cpu is not None:
            r = self.rates.rate(("node", sid, "cpu_seconds"), cpu, time.monotonic(), reset_from_zero=True)
            if r is not None:
                out.append(("node", sid, "cpu_percent", 100.0 * r))
        return out

    def _redis_info(self) -> Sample:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url or "", socket_timeout=self.timeout,
                                               socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0))
        info = self._redis.info()
        out = [("redis", "redis", m, v) for m, v in redis_rows(info).items()]
        if self.streams:  # XLEN is O(1): what the Streams adapter keeps for recovery (MAXLEN ~10,000)
            out.append(("redis", "redis", "stream_length", float(sum(int(self._redis.xlen(k)) for k in self.streams))))
        cpu = redis_cpu_seconds(info)
        if not self.redis_is_ours and cpu is not None:  # not our process: its CPU from INFO
            r = self.rates.rate(("redis", "redis", "cpu"), cpu, time.monotonic())
            if r is not None:
                out.append(("redis", "redis", "cpu_percent", 100.0 * r))
        return out

    def _haproxy(self, bid: str) -> Sample:
        assert self.haproxy_socket is not None
        stats = parse_haproxy_stat(unix_request(self.haproxy_socket, b"show stat\n", self.timeout))
        now, out = time.monotonic(), []
        for sv, v in stats.items():
            id_ = bid if sv == "BACKEND" else f"{bid}/{sv}"
            out += [("balancer", id_, "current_sessions", v["scur"]), ("balancer", id_, "queue", v["qcur"])]
            r = self.rates.rate(("balancer", id_, "errors"), v["errors_total"], now)
            if r is not None:
                out.append(("balancer", id_, "errors", r))
        return out

    def _cgroup(self, nid: str, now: float) -> Sample:
        """Limits and throttling of a cgroup-limited node (counters as per-second rates)."""
        assert self.cgroup_reader is not None
        try:
            got = self.cgroup_reader(nid)
        except Exception:  # noqa: BLE001 - an unreadable cgroup is a warning, not a failure
            return [("node", nid, warning_metric("no_cgroup"), 1.0)]
        if got is None:
            return []
        out: Sample = [("node", nid, m, float(got[m])) for m in ("cpu_limit_cores", "memory_limit_bytes")
                       if got.get(m) is not None]
        for src, metric, scale in (("nr_throttled", "throttled_periods", 1.0), ("nr_periods", "cfs_periods", 1.0),
                                   ("throttled_ms", "throttled_ms", 1.0)):
            if got.get(src) is not None:
                r = self.rates.rate(("node", nid, metric), float(got[src]), now)
                if r is not None:
                    out.append(("node", nid, metric, r * scale))
        return out


def cluster_cgroup_reader(cluster: Any) -> CgroupReader | None:
    """A CgroupReader over the cluster's per-node groups (`Cluster.node_groups`, targets.cgroups), or
    None when the nodes are not limited.

    Duck-typed on targets.cgroups.NodeGroup (cpu_quota, memory_limit, cpu_stat), so v1 and v2
    read the same: limits as the kernel holds them, throttling as cumulative counters.
    """
    groups = getattr(cluster, "node_groups", None) or {}
    if not groups:
        return None

    def read(nid: str) -> dict[str, float] | None:
        g = groups.get(nid)
        if g is None:
            return None
        out: dict[str, float] = {}
        quota, period = g.cpu_quota()
        if quota is not None and period:
            out["cpu_limit_cores"] = quota / period
        mem = g.memory_limit()
        if mem is not None:
            out["memory_limit_bytes"] = float(mem)
        st = g.cpu_stat()
        if "nr_throttled" in st:
            out["nr_throttled"] = float(st["nr_throttled"])
        if "nr_periods" in st:
            out["nr_periods"] = float(st["nr_periods"])
        if "throttled_usec" in st:
            out["throttled_ms"] = st["throttled_usec"] / 1000.0
        return out

    return read


def cluster_sampler(cluster: Any, run_dir: Path, run: str, cgroup_reader: CgroupReader | None = None,
                    interval: float = INTERVAL_S, timeout: float = TIMEOUT_S, node_timeout: float = NODE_TIMEOUT_S,
                    scrape: Iterable[tuple[str, str]] = ()) -> Sampler:
    """A Sampler of a started targets.cluster.Cluster, writing RUN_DIR/resources.csv (not started yet).

    Without an explicit `cgroup_reader`, the cluster's own node groups are read (when limited).
    `scrape`: (id, url) of users' own /metrics endpoints, sampled beside the local nodes.
    """
    c = cluster.config
    cgroup_reader = cgroup_reader or cluster_cgroup_reader(cluster)
    haproxy = cluster.workdir / HAPROXY_STATS_SOCKET if c.balancer == "haproxy" else None
    return Sampler(run_dir / RESOURCES_CSV, run, lambda: cluster_targets(cluster),
                   redis_url=cluster.redis_url if c.adapter in REDIS_ADAPTERS else None,
                   redis_is_ours=cluster.redis is not None, haproxy_socket=haproxy,
                   ssl_context=cluster.ssl_context, cgroup_reader=cgroup_reader, interval=interval, timeout=timeout,
                   node_timeout=node_timeout, scrape=scrape,
                   streams=(STREAMS_KEY,) if c.adapter == "redis-streams" and cluster.redis is not None else ())


def scrape_sampler(run_dir: Path, run: str, scrape: Iterable[tuple[str, str]], interval: float = INTERVAL_S,
                   timeout: float = TIMEOUT_S) -> Sampler:
    """A Sampler of users' own nodes only (`sioscale run --url ... --scrape [ID=]URL`): no local process,
    each (id, url) read as component `node` with that id (not started yet)."""
    return Sampler(run_dir / RESOURCES_CSV, run, lambda: [], interval=interval, timeout=timeout, scrape=scrape)


__all__ = ["CLIENT_GAUGES", "CPU_COUNTER", "HAPROXY_STATS_SOCKET", "INTERVAL_S", "NODE_GAUGES", "REDIS_INFO",
           "SCRAPE_GAUGES", "STREAMS_KEY", "TIMEOUT_S", "CgroupReader", "SampleError", "Sampler", "Target", "cluster_cgroup_reader",
           "cluster_sampler", "cluster_targets", "fetch_metrics", "parse_haproxy_stat", "parse_node_metrics",
           "parse_scrape_metrics", "redis_cpu_seconds", "redis_rows", "scrape_sampler", "unix_request"]
