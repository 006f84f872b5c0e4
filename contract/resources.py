"""resources.csv: the system under test's telemetry, one row per sample (issue 12). Stdlib only.

Why a long (tidy) table: components and metrics differ (a node has event-loop lag, Redis has ops/s,
the balancer a queue), users' clusters add their own ids, and the analysis reads it with one
groupby. The columns are pinned by the issue: `ts,run,component,id,metric,value`.

- ts: epoch seconds of the sample; run: the run name; component: one of COMPONENTS; id: the node
  id, the balancer's name ("haproxy", "caddy", "nginx", "traefik"), "redis", or a Locust worker id;
  metric: one of METRICS (or a warning, below); value: a float ("" never: a value that could not be
  read is a warning row instead).
- A sampler that fails leaves a warning row, it never stalls or fails the run: metric =
  "warning:" + one of WARNINGS, value = 1, for the component and id it failed on.
- Counters are turned into rates by the sampler (cpu_percent, throttled_ms per second): every row
  is a level over its second, so the analysis never differentiates.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

RESOURCES_CSV = "resources.csv"
RESOURCE_COLUMNS: tuple[str, ...] = ("ts", "run", "component", "id", "metric", "value")

COMPONENTS: tuple[str, ...] = ("node", "balancer", "redis", "generator")

METRICS: dict[str, str] = {
    # every process (psutil or the process's own Prometheus collector)
    "cpu_percent": "CPU over the last second, 100 = one core",
    "rss_bytes": "resident memory",
    "open_fds": "open file descriptors",
    "tcp_connections": "TCP connections the process holds (where it can be had cheaply)",
    # nodes (the server's own /metrics)
    "clients": "connected Socket.IO clients, the server's own count",
    "event_loop_lag_ms": "event-loop lag, p99 over the last second",
    # cgroup-limited nodes (targets.cgroups)
    "cpu_limit_cores": "the node's CPU limit (cfs quota / period)",
    "memory_limit_bytes": "the node's memory limit",
    "throttled_periods": "CFS periods throttled in the last second",
    "cfs_periods": "CFS periods in the last second in which the node had work (nr_periods: idle ones are not counted)",
    "throttled_ms": "time throttled in the last second, ms",
    # redis (INFO)
    "ops_per_sec": "instantaneous_ops_per_sec",
    "connected_clients": "connected_clients",
    "used_memory_bytes": "used_memory",
    "pubsub_channels": "pubsub_channels",
    "pubsubshard_channels": "pubsubshard_channels (Redis >= 7: the sharded adapter's SSUBSCRIBE channels)",
    "stream_length": "XLEN of the Redis Streams adapter's stream (what it keeps for recovery), summed",
    # balancer (HAProxy stats; per backend server id "<balancer>/<node>" where it is per server)
    "current_sessions": "scur",
    "queue": "qcur",
    "errors": "econ + eresp + wretr + wredis, per second",
}

WARNINGS: tuple[str, ...] = ("timeout", "refused", "garbage", "gone", "no_cgroup", "error")
"""Why a sample is missing: the endpoint timed out, refused, answered garbage, the process is gone,
no cgroup could be read, anything else."""


# ------------------------------------------------------------- Prometheus names -> metrics
# One table for every reader of a node's /metrics: the run's sampler (targets/telemetry.py) and the
# Locust web UI's live node view (locustfiles/sio/noderes.py). Both parse the text with
# prometheus_client's parser and hand the samples, {name: [values]}, to `metrics_of_samples`.

NODE_GAUGES: dict[str, tuple[str, float]] = {
    "sioscale_clients": ("clients", 1.0),
    "sioscale_event_loop_lag_ms": ("event_loop_lag_ms", 1.0),
    "nodejs_eventloop_lag_p99_seconds": ("event_loop_lag_ms", 1000.0),
}
"""A local reference node's own gauges -> (metric, scale); its process metrics come from psutil
(ours first; prom-client's lag gauge is in seconds)."""
SCRAPE_GAUGES: dict[str, tuple[str, float]] = {
    "process_resident_memory_bytes": ("rss_bytes", 1.0),
    "process_open_fds": ("open_fds", 1.0),
    "sioscale_event_loop_lag_ms": ("event_loop_lag_ms", 1.0),
    "nodejs_eventloop_lag_p99_seconds": ("event_loop_lag_ms", 1000.0),
}
"""Users' own nodes (--scrape, --sio-scrape): prom-client's and python prometheus_client's default
names, and ours. Gauges -> (metric, scale); for a metric named twice the first name present wins."""
CLIENT_GAUGES: tuple[str, ...] = ("sioscale_clients", "socket_io_connected", "socketio_connected_clients",
                                  "socket_io_connected_clients", "socketio_connected")
"""Connected-sockets gauges -> `clients`, the first present wins; a labelled one (per namespace) is
summed over its samples. socket_io_connected: socket.io-prometheus(-metrics) for Node; the others:
the usual spellings of a hand-written gauge."""
CPU_COUNTER = "process_cpu_seconds_total"
"""-> cpu_percent, as a rate between two scrapes (the reader keeps the previous one)."""


def metrics_of_samples(samples: Mapping[str, Sequence[float]],
                       gauges: Mapping[str, tuple[str, float]] | None = None,
                       client_gauges: Sequence[str] = CLIENT_GAUGES) -> tuple[dict[str, float], float | None]:
    """Parsed Prometheus samples {name: [values]} -> (levels by resources.csv metric, CPU seconds or None).

    Why pure and here: the run's sampler and the web UI's poller must read the same names the same
    way (a node's row in the tab and in resources.csv are one mapping). `gauges` defaults to
    SCRAPE_GAUGES: the first sample of the first name present per metric, times its scale; the
    first of `client_gauges` present is summed over its samples (labelled per namespace). The CPU
    counter comes back raw: a rate needs the previous reading. The caller drops the values it
    distrusts (non-finite, negative) before; a name with no values counts as absent.
    """
    out: dict[str, float] = {}
    for name, (metric, scale) in (SCRAPE_GAUGES if gauges is None else gauges).items():
        if samples.get(name):
            out.setdefault(metric, float(samples[name][0]) * scale)
    clients = next((name for name in client_gauges if samples.get(name)), None)
    if clients is not None:
        out["clients"] = float(sum(samples[clients]))
    cpu = samples.get(CPU_COUNTER)
    return out, (float(cpu[0]) if cpu else None)


def counter_rate(prev: tuple[float, float] | None, now: float, total: float) -> float | None:
    """Per-second increase of a cumulative counter since `prev` = (time, total); None without a
    usable previous reading. A counter that went down restarted from 0 (Prometheus' rate() rule), so
    its new value is the increase: a restarted node keeps its second instead of a gap."""
    if prev is None or now <= prev[0]:
        return None
    return (total - prev[1] if total >= prev[1] else total) / (now - prev[0])


def warning_metric(kind: str) -> str:
    """The metric name of a warning row ("warning:timeout", ...); an unknown kind is "error"."""
    return "warning:" + (kind if kind in WARNINGS else "error")


def is_warning(metric: str) -> bool:
    return metric.startswith("warning:")


def valid_row(ts: float, component: str, id_: str, metric: str, value: float) -> bool:
    """A row the writer may write: known component and metric (or a warning), finite numbers."""
    return (component in COMPONENTS and (metric in METRICS or is_warning(metric)) and bool(id_)
            and math.isfinite(ts) and math.isfinite(value))


def append_rows(path: Path, rows: Iterable[tuple[float, str, str, str, str, float]]) -> int:
    """Append (ts, run, component, id, metric, value) rows, header first when the file is new;
    returns how many were written. Invalid rows are skipped (the caller counts them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    n = 0
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if new:
            w.writerow(RESOURCE_COLUMNS)
        for ts, run, component, id_, metric, value in rows:
            if valid_row(ts, component, id_, metric, value):
                w.writerow((f"{ts:.3f}", run, component, id_, metric, repr(float(value))))
                n += 1
    return n


__all__ = ["CLIENT_GAUGES", "COMPONENTS", "CPU_COUNTER", "METRICS", "NODE_GAUGES", "RESOURCES_CSV",
           "RESOURCE_COLUMNS", "SCRAPE_GAUGES", "WARNINGS", "append_rows", "counter_rate", "is_warning",
           "metrics_of_samples", "valid_row", "warning_metric"]
