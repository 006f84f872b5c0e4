"""resources.csv: the system under test's telemetry, one row per sample (issue 12). Stdlib only.

Why a long (tidy) table: components and metrics differ (a node has event-loop lag, Redis has ops/s,
the balancer a queue), users' clusters add their own ids, and the analysis reads it with one
groupby. The columns are pinned by the issue: `ts,run,component,id,metric,value`.

- ts: epoch seconds of the sample; run: the run name; component: one of COMPONENTS; id: the node
  id, "haproxy"/"caddy", "redis", or a Locust worker id; metric: one of METRICS (or a warning,
  below); value: a float ("" never: a value that could not be read is a warning row instead).
- A sampler that fails leaves a warning row, it never stalls or fails the run: metric =
  "warning:" + one of WARNINGS, value = 1, for the component and id it failed on.
- Counters are turned into rates by the sampler (cpu_percent, throttled_ms per second): every row
  is a level over its second, so the analysis never differentiates.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
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
    "throttled_ms": "time throttled in the last second, ms",
    # redis (INFO)
    "ops_per_sec": "instantaneous_ops_per_sec",
    "connected_clients": "connected_clients",
    "used_memory_bytes": "used_memory",
    "pubsub_channels": "pubsub_channels",
    # balancer (HAProxy stats; per backend server id "<balancer>/<node>" where it is per server)
    "current_sessions": "scur",
    "queue": "qcur",
    "errors": "econ + eresp + wretr + wredis, per second",
}

WARNINGS: tuple[str, ...] = ("timeout", "refused", "garbage", "gone", "no_cgroup", "error")
"""Why a sample is missing: the endpoint timed out, refused, answered garbage, the process is gone,
no cgroup could be read, anything else."""


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


__all__ = ["COMPONENTS", "METRICS", "RESOURCES_CSV", "RESOURCE_COLUMNS", "WARNINGS", "append_rows", "is_warning",
           "valid_row", "warning_metric"]
