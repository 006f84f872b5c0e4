"""The event log: every client step counted where it happens, shipped once a second, written as
typed streams in the run directory (issue 11; docs/contracts.md "Run directory", "Event log").

Why it is built this way:
- `record()` is called for every client step, so it stays cheap (a few microseconds): the
  process's `Producer` (live.py) counts the step in a per-second aggregate cell (exact counts,
  latency histograms), feeds the receivers' delivery counts, notes every ok broadcast send, and
  keeps the row only when the row policy keeps it (state rows, budgeted failures, a sample).
- Every FLUSH_INTERVAL_S a worker ships ONE "sio_batch" message (payload pinned below); the
  master's `ingest_batch` merges it into the files' aggregator and the live stats. A local run
  builds the same payload and calls `ingest_batch` itself: one path for both. Batches reach the
  master even when `--sio-run-dir` is empty: the web UI's Socket.IO tab is computed from them.
- The master (or local runner) writes one Arrow IPC batch per flush to each stream
  (runfiles.py), handed to the OS at once, so a run killed with SIGKILL keeps every flush but
  the last; at quitting the streams are compacted to Parquet and eventlog.json is completed.
- Stop ordering: a worker flushes in its `test_stop` listener, which Locust runs before it
  sends `client_stopped`; the master's `test_stop` then waits (bounded) until every live worker
  has sent its final batch, asking stragglers with a `sio_flush` message. That also covers
  headless `--run-time` ends, where Locust's master fires `test_stop` before telling workers to
  quit and gives them only 0.5 s afterwards.
- The generator's own CPU samples (generator_cpu.py) ride the same batches and flushes into
  `RUN_DIR/generator.csv`, so they survive a SIGKILL the same way.

The batch payload (v 2), built by `_payload` and read by `ingest_batch`:
  {"v": 2, "seq": int, "final": bool, "dropped": int, "sent": float, "cpu": [[ts, cpu, users], ...],
   "aggs": Aggregator.drain(), "rows": [[values in contract.rows.COLUMNS order], ...],
   "sends": [[msg_id, room, ts], ...], "receipts": {msg_id: count}, "policy": RowPolicy.counts()}
A payload without "v" is the old row message ({"seq", "rows", ...}: every row, counted here).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from locust import events
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from contract import environment  # stdlib-only, like contract.jsonfile (test_fmt.py checks)
from contract import histogram as hist
from contract.aggregate import Aggregator
from contract.eventfiles import (
    AGGREGATES,
    DELIVERY,
    EVENTLOG_JSON,
    EVENTS,
    FILES,
    FINAL_SUFFIX,
    SCHEMA_VERSION,
    STREAM_SUFFIX,
)
from contract.jsonfile import write_json
from contract.options import SioOptions
from contract.rowpolicy import RowPolicyConfig
from contract.rows import COLUMNS, Row
from contract.status import RunStatus, Status, from_sio_stats, writer_identity  # stdlib-only too
from locustfiles.sio import generator_cpu
from locustfiles.sio.live import STATE_STEPS, LiveStats, Producer, normalize

if TYPE_CHECKING:
    from locustfiles.sio.runfiles import RunFiles  # pyarrow (and numpy): the master's only, imported there

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
"""How often a worker ships its batch and the master (or local runner) writes one to the streams."""
STATS_INTERVAL_S = 2.0
"""How often sio_stats.json is rewritten during a headless run (the UI reads it live anyway)."""
FINAL_WAIT_S = 15.0
"""How long the master waits at test stop for workers' final batches before saying who is missing."""
MAX_BUFFER = 1_000_000
"""Kept rows (and sends) held in a process that cannot ship or write them; beyond this they are
counted as dropped. Aggregate cells are never dropped (a few per second and key)."""
BATCH_VERSION = 2
MSG_BATCH = "sio_batch"
MSG_ROWS = "sio_rows"
"""The old message (every row); still ingested, counted the way LiveStats.add counts a row."""
MSG_FLUSH = "sio_flush"
_ATTR = "_sioscale_eventlog"
STATS_CACHE_S = 1.0
"""stats() is asked by every UI poll and the stats file; one snapshot a second serves them all."""
ERROR_LOG_S = 10.0


@dataclass
class WorkerInfo:
    """What the master knows about one worker's batch stream (to say what is missing)."""

    rows: int = 0  # events (steps) its batches counted
    batches: int = 0
    last_seq: int = -1
    gaps: int = 0  # batches that never arrived (sequence numbers skipped)
    last_report: float = 0.0
    final: bool = False
    dropped: int = 0  # rows the worker itself had to drop (buffer full)


@dataclass
class _State:
    environment: Any
    producer: Producer | None = None  # this process's side (record())
    unsent: dict[str, Any] | None = None  # a worker's payload that could not be shipped (retried)
    to_write: list[list[Any]] = field(default_factory=list)  # ingested kept rows, not yet on disk
    file_agg: Aggregator = field(default_factory=Aggregator)  # ingested cells, not yet on disk
    live: LiveStats = field(default_factory=LiveStats)
    files: RunFiles | None = None
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    legacy: dict[str, Producer] = field(default_factory=dict)  # old row messages: one producer per worker
    malformed: dict[str, int] = field(default_factory=dict)  # payload part -> malformed items
    rows_written: int = 0
    events_written: int = 0
    produced: int = 0  # steps record()ed in this process (tests compare it with the master's counts)
    dropped: int = 0
    seq: int = 0
    started: float | None = None
    ended: float | None = None
    greenlets: list[Any] = field(default_factory=list)
    user_worker: dict[str, str] = field(default_factory=dict)
    stats_cache: tuple[float, int, dict[str, Any]] | None = None
    colliding_users: set[str] = field(default_factory=set)
    wrote_meta: bool = False
    compacted: dict[str, int] | None = None
    last_stats_write: float = 0.0
    last_write_error: float = -1e9

    # -- roles -------------------------------------------------------------------------
    @property
    def runner(self) -> Any:
        return getattr(self.environment, "runner", None)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    @property
    def run_dir(self) -> Path | None:
        d = SioOptions.from_environment(self.environment).run_dir
        return Path(d) if d else None

    @property
    def run_name(self) -> str:
        name = SioOptions.from_environment(self.environment).run_name
        if name:
            return name
        d = self.run_dir
        return d.resolve().name if d else ""

    @property
    def buffer(self) -> list[Row]:
        """The kept rows recorded in this process and not shipped/ingested yet (tests read them)."""
        return self.producer.rows if self.producer is not None else []


def policy_config(environment: Any) -> RowPolicyConfig:
    """The row policy of the --sio-sample-rate/--sio-first-rows/--sio-failure-rows/--sio-log-all options."""
    o = SioOptions.from_environment(environment)
    return RowPolicyConfig(sample_rate=o.sample_rate, first_n=o.first_rows, failure_rows_per_s=o.failure_rows,
                           log_all=o.log_all)


def _state(environment: Any) -> _State:
    st = getattr(environment, _ATTR, None)
    if st is None:
        st = _State(environment)
        st.live.sample_rate = policy_config(environment).sample_rate
        setattr(environment, _ATTR, st)
    return st


def _producer(st: _State) -> Producer:
    """Made at the first row, after a worker has received the master's options (spawn message)."""
    if st.producer is None:
        st.producer = Producer(policy_config(st.environment), MAX_BUFFER)
    return st.producer


def record(environment: Any, row: Row) -> None:
    """Count one step and keep its row if the policy says so; cheap, no I/O (the flusher ships/writes)."""
    st = getattr(environment, _ATTR, None) or _state(environment)
    st.produced += 1
    try:
        (st.producer or _producer(st)).add(row)
    except (KeyError, TypeError, ValueError):  # a hand-made dict without every column, or with strings: type it
        r = normalize(row)
        if r is not None:
            _producer(st).add(r)


def live_stats(environment: Any) -> LiveStats:
    """The master's (or local runner's) aggregate over every batch seen so far."""
    return _state(environment).live


def flush(environment: Any, final: bool = False) -> None:
    """Ship (worker) or ingest and write (master/local) everything gathered now. Safe to call any time."""
    st = _state(environment)
    if st.is_worker:
        _ship(st, final)
        return
    if not st.is_master:
        payload = _payload(st, "local", final)
        if payload is not None:
            st.seq += 1
            ingest_batch(environment, "local", payload)
    _write(st, final)
    generator_cpu.write(environment, st.run_dir)
    if st.run_dir is not None and time.time() - st.last_stats_write >= STATS_INTERVAL_S:
        write_stats(environment)


# -- every process: the payload ---------------------------------------------------------------
def _payload(st: _State, worker: str, final: bool) -> dict[str, Any] | None:
    """This process's batch since the last one (None for a local run with nothing new)."""
    p = _producer(st)
    rows = [[r[c] for c in COLUMNS] for r in p.rows]
    p.rows = []
    for v in rows:
        if v[2] in ("", "local", None):
            v[2] = worker
    aggs = p.agg.drain()
    sends, p.sends = p.sends, []
    receipts = p.receipts.drain()
    cpu = generator_cpu.take(st.environment) if st.is_worker else []
    dropped, p.dropped = p.dropped, 0
    st.dropped += dropped
    if not (rows or aggs or sends or receipts or cpu or final or st.is_worker):
        return None
    return {"v": BATCH_VERSION, "seq": st.seq, "final": final, "dropped": st.dropped, "sent": time.time(),
            "cpu": cpu, "aggs": aggs, "rows": rows, "sends": sends, "receipts": receipts,
            "policy": p.policy.counts()}


def _merge_unsent(st: _State, new: dict[str, Any]) -> dict[str, Any]:
    """A payload that could not be shipped, joined with the next one (counts never lost; rows and
    sends beyond MAX_BUFFER dropped, oldest first, and counted)."""
    old, st.unsent = st.unsent, None
    if old is None:
        return new
    receipts = dict(old["receipts"])
    for m, n in new["receipts"].items():
        receipts[m] = receipts.get(m, 0) + n
    out = {**new, "aggs": old["aggs"] + new["aggs"], "receipts": receipts}
    for part in ("rows", "sends"):
        joined = old[part] + new[part]
        over = len(joined) - MAX_BUFFER
        if over > 0:
            del joined[:over]
            st.dropped += over
        out[part] = joined
    out["dropped"] = st.dropped
    return out


# -- worker side ----------------------------------------------------------------------------
def _ship(st: _State, final: bool) -> None:
    runner = st.runner
    payload = _payload(st, str(runner.client_id), final)
    assert payload is not None  # a worker always ships (the master sees it alive)
    payload = _merge_unsent(st, payload)
    try:
        runner.send_message(MSG_BATCH, payload)
        st.seq += 1
    except Exception as e:  # noqa: BLE001 - a lost master must not kill the worker's users
        log.warning("sioscale event log: could not ship a batch (%d events, %d rows) to master (%s); will retry",
                    sum(a[7] for a in payload["aggs"]), len(payload["rows"]), e)
        generator_cpu.give_back(st.environment, payload["cpu"])  # its own buffer, bounded there
        st.unsent = {**payload, "cpu": []}


def _on_flush_request(environment: Any, msg: Any, **_kw: Any) -> None:
    """Master asks for the final batch: stop users first, so no row is produced after it."""
    st = _state(environment)
    runner = st.runner
    if runner is not None and runner.state in (STATE_RUNNING, STATE_SPAWNING):
        runner.stop()  # fires test_stop, whose listener ships the final batch
    _ship(st, final=True)


# -- master / local side --------------------------------------------------------------------
def _on_batch(environment: Any, msg: Any, **_kw: Any) -> None:
    ingest_batch(environment, str(msg.node_id), msg.data)


_on_rows = _on_batch  # the old message type and its handler name (tests, older workers)


def _bad(st: _State, part: str, worker: str, n: int = 1) -> None:
    """Count malformed payload parts; warn once per part (a broken worker must not flood the log)."""
    if n <= 0:
        return
    first = part not in st.malformed
    st.malformed[part] = st.malformed.get(part, 0) + n
    if first:
        log.warning("sioscale event log: worker %s sent a malformed batch part (%s); skipped and counted "
                    "(this warning is given once per part)", worker, part)


def ingest_batch(environment: Any, worker_id: str, data: Any) -> None:
    """The master's work for one worker's batch (no running Locust needed): the files' aggregates,
    the live stats (counts, sessions, membership, delivery) and the kept rows to write."""
    st = _state(environment)
    if not isinstance(data, dict):
        _bad(st, "payload", worker_id)
        return
    info = st.workers.setdefault(worker_id, WorkerInfo())
    _sequence(st, info, worker_id, data)
    generator_cpu.receive(environment, worker_id, data.get("cpu"))
    if data.get("v") is None:
        data = _legacy(st, worker_id, data)
    elif data.get("v") != BATCH_VERSION:
        _bad(st, "version", worker_id)
        return
    live = st.live
    aggs = data.get("aggs")
    if isinstance(aggs, list):
        bad = live.add_cells(aggs)
        before = st.file_agg.events
        st.file_agg.merge_wire(aggs)
        info.rows += st.file_agg.events - before  # the steps of its well-formed cells
        _bad(st, "aggs", worker_id, bad)
    elif aggs is not None:
        _bad(st, "aggs", worker_id)
    _ingest_rows(st, worker_id, data.get("rows"))
    _ingest_delivery(st, worker_id, data.get("sends"), data.get("receipts"))
    policy = data.get("policy")
    if isinstance(policy, dict) and all(isinstance(v, int) for v in policy.values()):
        live.set_policy(worker_id, policy)
    elif policy is not None:
        _bad(st, "policy", worker_id)
    live.tick()


def _sequence(st: _State, info: WorkerInfo, worker_id: str, data: dict[str, Any]) -> None:
    try:
        seq = int(data.get("seq", info.last_seq + 1))
        dropped = int(data.get("dropped", 0))
    except (TypeError, ValueError):
        _bad(st, "seq", worker_id)
        seq, dropped = info.last_seq + 1, info.dropped
    if seq > info.last_seq + 1:
        info.gaps += seq - info.last_seq - 1
    info.last_seq = max(info.last_seq, seq)
    info.batches += 1
    info.last_report = time.time()
    info.dropped = dropped
    if data.get("final"):
        info.final = True


_TS, _RUN, _WORKER, _USER, _STEP, _NAME, _LAT, _OK, _KIND = (COLUMNS.index(c) for c in (
    "ts", "run", "worker", "user", "step", "name", "latency_ms", "ok", "error_kind"))


def _typed(values: Any) -> list[Any] | None:
    """A shipped row as typed values in COLUMNS order: as is when a worker's producer made it (the
    fast path: the numbers' types and the step checked; the text columns are checked per batch by
    the writer, runfiles.RunFiles.write), else through live.normalize; None when it cannot be a row."""
    if type(values) is not list or len(values) != len(COLUMNS):
        return None
    ts, lat, ok = values[_TS], values[_LAT], values[_OK]
    if (type(ts) is float and math.isfinite(ts) and (ok == 0 or ok == 1) and type(ok) is int
            and (lat is None or (type(lat) is float and lat >= 0)) and type(values[_STEP]) is str
            and type(values[_USER]) is str):
        if not ok and not values[_KIND]:
            values[_KIND] = "unknown"
        if not values[_NAME]:
            values[_NAME] = values[_STEP]
        return values
    r = normalize(dict(zip(COLUMNS, values, strict=True)))
    return None if r is None else [r[c] for c in COLUMNS]


def _ingest_rows(st: _State, worker_id: str, rows: Any) -> None:
    """Kept rows: sessions and membership for the live stats (state steps), queued for the file."""
    if rows is None:
        return
    if not isinstance(rows, list):
        _bad(st, "rows", worker_id)
        return
    run = st.run_name
    bad = 0
    live = st.live
    state_steps = STATE_STEPS
    owners = st.user_worker
    out = st.to_write
    for values in rows:
        v = _typed(values)
        if v is None:
            bad += 1
            continue
        if not v[_RUN]:
            v[_RUN] = run
        if not v[_WORKER]:
            v[_WORKER] = worker_id
        user = v[_USER]
        if user:  # a user id must belong to one worker, or per-user numbers mix two users up
            owner = owners.setdefault(user, worker_id)
            if owner != worker_id:
                st.colliding_users.add(user)
        if v[_STEP] in state_steps:
            live.add_state_row(dict(zip(COLUMNS, v, strict=True)), worker_id)  # type: ignore[arg-type]
        else:
            live.seen(user, v[_TS])
        out.append(v)
    _bad(st, "rows", worker_id, bad)


def _ingest_delivery(st: _State, worker_id: str, sends: Any, receipts: Any) -> None:
    ledger = st.live.ledger
    bad = 0
    for s in sends if isinstance(sends, list) else ():
        try:
            msg_id, room, ts = s
            ts = float(ts)
            if not math.isfinite(ts):
                raise ValueError
        except (TypeError, ValueError):
            bad += 1
            continue
        ledger.add_send(str(msg_id), str(room), ts)
    if sends is not None and not isinstance(sends, list):
        bad += 1
    _bad(st, "sends", worker_id, bad)
    if receipts is None:
        return
    if isinstance(receipts, dict) and all(isinstance(n, int) and n >= 0 for n in receipts.values()):
        ledger.add_receipts({str(m): n for m, n in receipts.items()})
    else:
        _bad(st, "receipts", worker_id)


def _legacy(st: _State, worker_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """An old row message (every row) as a v2 payload: its rows counted by a producer of the worker's
    own (so its receipts are judged by its users' membership, as a worker would)."""
    p = st.legacy.get(worker_id)
    if p is None:
        p = st.legacy[worker_id] = Producer(RowPolicyConfig(log_all=True))
    rows = data.get("rows")
    bad = 0
    for values in rows if isinstance(rows, list) else ():
        r = normalize(dict(zip(COLUMNS, values, strict=True))) \
            if isinstance(values, list) and len(values) == len(COLUMNS) else None
        if r is None:
            bad += 1
            continue
        p.add(r)
    _bad(st, "rows", worker_id, bad)
    out = {"aggs": p.agg.drain(), "rows": [[r[c] for c in COLUMNS] for r in p.rows], "sends": p.sends,
           "receipts": p.receipts.drain()}
    p.rows, p.sends = [], []
    return out


# -- master / local side: the files ---------------------------------------------------------
def _write(st: _State, final: bool) -> None:
    """One batch to each stream: the kept rows, the cells and the delivery seconds merged since the
    last write. Without a run directory they are dropped (the live stats have them)."""
    d = st.run_dir
    if st.compacted is not None:
        return  # the run ended and its files are final: a stray flush must not open new streams
    rows, st.to_write = st.to_write, []
    aggs = st.file_agg.drain()
    if final:
        st.live.tick(force=True)
    delivery = st.live.ledger.changed(final, time.time())
    if d is None:
        st.live.ledger.commit(delivery)
        return
    from locustfiles.sio.runfiles import RunFiles, aggregate_rows  # the writer's process only

    if st.files is None:
        st.files = RunFiles(d)
        _write_eventlog_json(st, final=False)
    done = {k: False for k in FILES}
    try:
        st.files.write(EVENTS, rows)  # typed by ingest_batch
        done[EVENTS] = True
        st.rows_written += len(rows)
        st.files.write(AGGREGATES, aggregate_rows(aggs))
        done[AGGREGATES] = True
        st.events_written += sum(a[7] for a in aggs)
        st.files.write(DELIVERY, delivery)
        done[DELIVERY] = True
        st.live.ledger.commit(delivery)
    except OSError as e:
        # Keep what was not written for the next try rather than lose it; say why once per 10 s.
        if time.monotonic() - st.last_write_error > ERROR_LOG_S:
            log.error("sioscale event log: cannot write the event files in %s (%s); keeping %d rows and %d cells",
                      d, e, len(rows), len(aggs))
            st.last_write_error = time.monotonic()
        if not done[EVENTS]:
            st.to_write[:0] = rows
        if not done[AGGREGATES]:
            st.file_agg.merge_wire(aggs)


def _write_eventlog_json(st: _State, final: bool) -> None:
    """RUN_DIR/eventlog.json (contract.eventfiles.EVENTLOG_JSON): what the files hold and how they were
    kept, at the start and at the end. Its one writer is this process."""
    d = st.run_dir
    if d is None:
        return
    # while running: the streams it writes; at the end: the files there are (a kind with no data has none)
    files = {k: f"{k}{FINAL_SUFFIX}" if st.compacted is not None and k in st.compacted
             else f"{k}{STREAM_SUFFIX}" for k in FILES}
    if final:
        files = {k: n for k, n in files.items() if (d / n).is_file()}
    live = st.live.eventlog_block()
    doc = {"schema_version": SCHEMA_VERSION, "run": st.run_name, "final": final,
           "policy": policy_config(st.environment).as_json(),
           "histogram": {"base": hist.BASE, "min_ms": hist.MIN_MS, "relative_error": hist.RELATIVE_ERROR},
           "files": files,
           "counts": {"events": st.events_written, "rows_written": st.rows_written,
                      "kept_rows": live["kept_rows"], "sampled_out": live["sampled_out"],
                      "failures_over_budget": live["failures_over_budget"],
                      "dropped_rows": st.dropped + sum(i.dropped for i in st.workers.values()),
                      "malformed": dict(st.malformed),
                      "late_rows_ignored": st.live.late_rows_ignored}}
    try:
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / EVENTLOG_JSON, doc)
    except OSError as e:
        log.error("sioscale event log: cannot write %s/%s (%s)", d, EVENTLOG_JSON, e)


def _finish_files(st: _State) -> None:
    """At quitting: the last batch with the final delivery rows, the streams to Parquet, eventlog.json."""
    if st.run_dir is None:
        return
    _write(st, final=True)
    if st.files is not None and st.compacted is None:
        try:
            st.compacted = st.files.compact()  # a kind that cannot be compacted keeps its stream
        except (OSError, ValueError) as e:
            log.error("sioscale event log: cannot compact the event streams in %s (%s); the streams stay",
                      st.run_dir, e)
    _write_eventlog_json(st, final=True)


def _flusher(environment: Any) -> None:
    while True:
        gevent.sleep(FLUSH_INTERVAL_S)
        try:
            flush(environment)
        except Exception:  # the flusher must survive anything and keep flushing
            log.exception("sioscale event log: flush failed")


# -- stats file and meta.json ---------------------------------------------------------------
def stats(environment: Any, now: float | None = None) -> dict[str, Any]:
    """The Socket.IO tab's numbers: live aggregate plus the state of every worker's stream."""
    st = _state(environment)
    now = time.time() if now is None else now
    cached = st.stats_cache
    if cached is not None and 0 <= now - cached[0] < STATS_CACHE_S and cached[1] == st.live.totals["rows"]:
        return cached[2]
    snap = _compute_stats(st, now)
    st.stats_cache = (now, st.live.totals["rows"], snap)
    return snap


def _compute_stats(st: _State, now: float) -> dict[str, Any]:
    workers = _workers_view(st, now)
    missing = [w for w in workers if w["status"] == "missing"]
    # a missing worker's sessions are gone with it: not "connected now" (see LiveStats.snapshot)
    snap = st.live.snapshot(lost_workers={str(w["id"]) for w in missing})
    snap["run"] = st.run_name
    snap["generated"] = now
    snap["workers"] = workers
    snap["missing_workers"] = missing
    snap["dropped_rows"] = st.dropped + sum(i.dropped for i in st.workers.values())
    snap["malformed_batch_parts"] = dict(st.malformed)
    snap["colliding_user_ids"] = sorted(st.colliding_users)[:20]
    snap["colliding_user_count"] = len(st.colliding_users)
    return snap


def _workers_view(st: _State, now: float) -> list[dict[str, Any]]:
    runner = st.runner
    if not st.is_master:
        return [{"id": "local", "rows": st.live.totals["rows"], "status": "ok", "last_report": now,
                 "last_report_age_s": 0.0, "lost_batches": 0}]
    states = {c.id: c.state for c in runner.clients.values()} if runner is not None else {}
    out = []
    for wid in sorted(set(st.workers) | set(states)):
        info = st.workers.get(wid, WorkerInfo())
        state = states.get(wid)
        if info.final:
            status = "done"
        elif state == STATE_MISSING or (state is None and info.batches and not info.final):
            status = "missing"
        elif info.last_report and now - info.last_report > 5 * FLUSH_INTERVAL_S + 2:
            status = "late"
        else:
            status = "ok"
        out.append({
            "id": wid,
            "rows": info.rows,
            "status": status,
            "last_report": info.last_report or None,
            "last_report_age_s": round(now - info.last_report, 1) if info.last_report else None,
            "lost_batches": info.gaps,
        })
    return out


def write_stats(environment: Any, final: bool = False) -> None:
    """Write RUN_DIR/sio_stats.json atomically (same numbers as the web UI's tab). The final write (Locust
    quitting) adds the `locust` block (options, event log counts, generator CPU) for `sioscale run`, whose
    meta.json the runner alone writes: it copies the block from here (one writer per file)."""
    st = _state(environment)
    d = st.run_dir
    st.last_stats_write = time.time()
    if d is None:
        return
    try:
        d.mkdir(parents=True, exist_ok=True)
        snap = stats(environment)
        write_json(d / "sio_stats.json", {**snap, "locust": _locust_block(st)} if final else snap)
    except OSError as e:
        log.error("sioscale event log: cannot write %s/sio_stats.json (%s)", d, e)


def _options(st: _State) -> dict[str, Any]:
    opts = getattr(st.environment, "parsed_options", None)
    if opts is None:
        return {}
    return {k: v for k, v in vars(opts).items() if isinstance(v, str | int | float | bool | type(None) | list)}


def _locust_block(st: _State) -> dict[str, Any]:
    """meta.json's `locust` key: the Locust options, the event log's counts, the generator's CPU summary."""
    return {"options": _options(st), "eventlog": {"rows": st.rows_written, "events": st.events_written,
                                                  "dropped": st.dropped, "started": st.started,
                                                  "ended": st.ended, "schema_version": SCHEMA_VERSION},
            "generator_cpu": generator_cpu.summary(st.environment)}


def _write_meta(st: _State, final: bool) -> None:
    """A minimal meta.json for a plain `locust --sio-run-dir` run: only when none exists at the first
    call (then this process is its one writer). Someone else's meta.json (`sioscale run`) is never
    touched: that writer copies our `locust` block from sio_stats.json (write_stats)."""
    d = st.run_dir
    if d is None:
        return
    path = d / "meta.json"
    if not st.wrote_meta and path.exists():
        return  # not ours
    try:
        d.mkdir(parents=True, exist_ok=True)
        status = _status(st, final)
        # "writer": the process that says "running", so `sioscale report` can tell a killed run
        meta = {"schema": 1, "run": st.run_name, **status.as_meta(),
                "started": st.started, "ended": st.ended if final else None,
                "versions": environment.package_versions(), "machine": environment.machine(),
                "locust": _locust_block(st), "written_by": "locustfiles.sio.eventlog", "writer": writer_identity()}
        st.wrote_meta = True
        write_json(path, meta)
    except (OSError, ValueError) as e:
        log.error("sioscale event log: cannot update %s (%s)", path, e)


def _status(st: _State, final: bool) -> RunStatus:
    """The status of a run this event log owns (plain `locust --sio-run-dir`): running until the end,
    then ok or degraded by the same rules as `sioscale run` (contract.status), from the live stats."""
    if not final:
        return RunStatus(Status.RUNNING)
    return from_sio_stats(stats(st.environment))


# -- Locust event listeners (registered at import) ------------------------------------------
@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    st = _state(environment)
    runner = environment.runner
    if runner is None:
        return
    if isinstance(runner, WorkerRunner):
        runner.register_message(MSG_FLUSH, _on_flush_request)
    elif isinstance(runner, MasterRunner):
        runner.register_message(MSG_BATCH, _on_batch)
        runner.register_message(MSG_ROWS, _on_batch)
    st.greenlets.append(gevent.spawn(_flusher, environment))


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kw: Any) -> None:
    st = _state(environment)
    if st.is_worker:
        return
    st.started = st.started or time.time()
    for info in st.workers.values():
        info.final = False
    _write_meta(st, final=False)
    _write_eventlog_json(st, final=False)


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_kw: Any) -> None:
    st = _state(environment)
    if st.is_worker:
        _ship(st, final=True)
        return
    if st.is_master:
        _collect_final(st, FINAL_WAIT_S)
    st.ended = time.time()
    flush(environment)
    write_stats(environment)


def _collect_final(st: _State, timeout: float) -> None:
    """Wait until every live worker has sent its final batch; ask the ones that did not yet."""
    runner = st.runner
    asked: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [c.id for c in runner.clients.values()
                   if c.state != STATE_MISSING and not st.workers.get(c.id, WorkerInfo()).final]
        if not pending:
            return
        for wid in pending:
            if wid not in asked:
                runner.send_message(MSG_FLUSH, None, client_id=wid)
                asked.add(wid)
        gevent.sleep(0.05)
    log.warning("sioscale event log: no final batch from worker(s) %s after %.0f s; their last rows may be "
                "missing", ", ".join(pending), timeout)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    st = _state(environment)
    if st.is_worker:
        _ship(st, final=True)
        return
    if st.is_master and st.runner.state in (STATE_RUNNING, STATE_SPAWNING):
        _collect_final(st, FINAL_WAIT_S)
    st.ended = st.ended or time.time()
    flush(environment)
    _finish_files(st)
    write_stats(environment, final=True)
    _write_meta(st, final=True)
