"""The load generator's own CPU over the run → `RUN_DIR/generator.csv`, per Locust process.

Why: on a small machine the generator (Locust) can saturate its CPU before the servers do;
latency then rises because of the generator, and a capacity "knee" found there is an artefact.
The analysis needs, per step-load stage, how busy every generator process was.

Why no CPU measurement of our own: Locust already measures each process (psutil, in
`Runner.monitor_cpu_and_memory`) into `runner.current_cpu_usage`, fires `usage_monitor` with
it, and workers report it to the master in their heartbeats. But it samples every
`locust.runners.CPU_MONITOR_INTERVAL` = 10 s (an average over those 10 s), while a capacity
step holds ~8 s. Its loop reads that module global on every iteration, so we set it to 1 s and
record what Locust reports: the same numbers Locust warns about ("CPU usage above 90%"), at a
resolution that can be attributed to a stage. psutil's per-second cost is negligible.

Plumbing (eventlog.py calls in here, so the file shares the event log's cadence and SIGKILL
tolerance): every process records its own `usage_monitor` samples; a worker ships them to the
master inside its event-row batches (they carry the worker's own clock, like its rows, rather
than the master's receive time, and none is duplicated or skipped as heartbeat sampling
would); the master (as "master") or the local runner (as "local") writes them with its own.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import locust.runners
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from contract.rows import GENERATOR_COLUMNS, append_csv
from contract.wire import GENERATOR_SATURATED_PERCENT

log = logging.getLogger(__name__)

COLUMNS = GENERATOR_COLUMNS
"""generator.csv columns (contract.rows, docs/contracts.md Run directory)."""
SAMPLE_INTERVAL_S = 1.0
SATURATED_PERCENT = GENERATOR_SATURATED_PERCENT
"""Locust's own warning threshold (contract.wire): at or above it a process is taken as saturated."""
MAX_PENDING = 100_000
"""Samples held when they cannot be written/shipped (a day at 1/s per process); older ones are dropped."""
_ATTR = "_sioscale_generator_cpu"

# Locust's monitor loop does `gevent.sleep(CPU_MONITOR_INTERVAL)` each round, reading the global anew.
locust.runners.CPU_MONITOR_INTERVAL = min(float(getattr(locust.runners, "CPU_MONITOR_INTERVAL", 10.0)),
                                          SAMPLE_INTERVAL_S)


@dataclass
class _CpuState:
    pending: list[list[Any]] = field(default_factory=list)  # [ts, worker, cpu_percent, users]
    fires: int = 0
    written: int = 0
    dropped: int = 0
    last_error: float = -1e9


def _state(environment: Any) -> _CpuState:
    st = getattr(environment, _ATTR, None)
    if st is None:
        st = _CpuState()
        setattr(environment, _ATTR, st)
    return st


def process_name(runner: Any) -> str:
    """The `worker` value of this process's samples: the worker's client id, "master" or "local"."""
    if isinstance(runner, WorkerRunner):
        return str(runner.client_id)
    return "master" if isinstance(runner, MasterRunner) else "local"


def _keep(st: _CpuState, samples: list[list[Any]]) -> None:
    st.pending.extend(samples)
    over = len(st.pending) - MAX_PENDING
    if over > 0:
        del st.pending[:over]
        st.dropped += over


def sample(environment: Any, cpu_usage: float, now: float | None = None) -> None:
    """Record one of Locust's CPU readings for this process (the usage_monitor listener's body)."""
    st = _state(environment)
    st.fires += 1
    if st.fires == 1:
        return  # Locust's first psutil cpu_percent() call has no reference point and returns 0.0
    runner = getattr(environment, "runner", None)
    users = getattr(runner, "user_count", None)
    try:
        cpu = round(float(cpu_usage), 1)
    except (TypeError, ValueError):
        return
    _keep(st, [[round(time.time() if now is None else now, 3), process_name(runner), cpu,
                int(users) if isinstance(users, int | float) else ""]])


def take(environment: Any) -> list[list[Any]]:
    """A worker's samples to ship, as [ts, cpu_percent, users] (the master knows who sent them)."""
    st = _state(environment)
    out, st.pending = st.pending, []
    return [[s[0], s[2], s[3]] for s in out]


def give_back(environment: Any, shipped: list[list[Any]]) -> None:
    """Shipping failed: keep the samples for the next batch."""
    runner = getattr(environment, "runner", None)
    st = _state(environment)
    st.pending[:0] = [[s[0], process_name(runner), s[1], s[2]] for s in shipped]


def receive(environment: Any, worker: str, samples: Any) -> int:
    """Master: queue a worker's shipped samples for the file; malformed ones are skipped. Returns kept."""
    if not samples:
        return 0
    kept: list[list[Any]] = []
    bad = 0
    for s in samples if isinstance(samples, list) else []:
        try:
            ts, cpu, users = float(s[0]), float(s[1]), s[2]
            if not (math.isfinite(ts) and math.isfinite(cpu)):
                raise ValueError
            kept.append([ts, worker, cpu, int(users) if isinstance(users, int | float) else ""])
        except (TypeError, ValueError, IndexError):
            bad += 1
    if bad or not isinstance(samples, list):
        log.warning("sioscale generator cpu: worker %s sent %d malformed sample(s); skipped", worker, bad or 1)
    _keep(_state(environment), kept)
    return len(kept)


def write(environment: Any, run_dir: Path | None) -> None:
    """Master/local: append the queued samples to run_dir/generator.csv (none kept without a run dir)."""
    st = _state(environment)
    if run_dir is None:
        st.pending.clear()
        return
    if not st.pending:
        return
    rows, st.pending = st.pending, []
    rows.sort(key=lambda r: r[0])  # batches of several workers interleave; the file reads better in time order
    try:
        append_csv(run_dir / "generator.csv", COLUMNS, rows)
        st.written += len(rows)
    except OSError as e:
        if time.monotonic() - st.last_error > 10:
            log.error("sioscale generator cpu: cannot write %s/generator.csv (%s); keeping %d samples",
                      run_dir, e, len(rows))
            st.last_error = time.monotonic()
        st.pending[:0] = rows


def summary(environment: Any) -> dict[str, int]:
    """For meta.json: how many samples were written and dropped."""
    st = _state(environment)
    return {"samples": st.written, "dropped": st.dropped}


@events.usage_monitor.add_listener
def _on_usage(environment: Any, cpu_usage: float, **_kw: Any) -> None:
    sample(environment, cpu_usage)
