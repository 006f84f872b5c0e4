"""The event log: every client step counted where it happens, shipped once a second, written as
typed streams in the run directory (issue 11; docs/contracts.md "Run directory", "Event log").

This module is the event log's public face (record, flush, ingest_batch, live_stats, stats,
write_stats and the Locust listeners) and its every-process side: record, the payload, a
worker's ship and retry, the stats and meta files. The other jobs have modules of their own,
re-exported here so callers keep one import:
- logstate.py: the per-environment state the modules share, and the buffer bounds;
- ingest.py: the master's checks of a payload, part by part, and the merge into the live stats;
- writer.py: the run directory on the master (streams, eventlog.json, compaction at the end),
  over runfiles.py (the Arrow writer, pyarrow).

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

The batch payload (v 2), built by `payload_of` (a worker's via `_payload`) and read by `ingest_batch` (ingest.py):
  {"v": 2, "seq": int, "final": bool, "dropped": int, "sent": float, "cpu": [[ts, cpu, users], ...],
   "aggs": Aggregator.drain(), "rows": [[values in contract.rows.COLUMNS order], ...],
   "sends": [[msg_id, room, ts], ...], "receipts": {msg_id: count}, "policy": RowPolicy.counts(),
   "recovery": {counter: increment} (optional: the users' recovery counters, protocol/recovery.py)}
A payload of another version, or without "v" (the old `sio_rows` row message, no longer
accepted), is refused whole and counted as malformed `version`.
A seq at or below one already ingested from that worker is a duplicate: dropped and counted.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from locust import events
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from contract import environment  # stdlib-only, like contract.jsonfile (test_fmt.py checks)
from contract.aggregate import Aggregator
from contract.eventfiles import SCHEMA_VERSION
from contract.jsonfile import write_json
from contract.rows import COLUMNS, Row
from contract.status import RunStatus, Status, from_sio_stats, writer_identity  # stdlib-only too
from locustfiles.sio import generator_cpu, noderes
from locustfiles.sio.ingest import (  # noqa: F401 - re-exported: the master's side, named here as before
    _TS,
    BATCH_VERSION,
    FUTURE_SLACK_S,
    _bad,
    _ingest_cells,
    _ingest_receipts,
    _ingest_rows,
    _ingest_sends,
    _sequence,
    _typed,
    ingest_batch,
)
from locustfiles.sio.live import LiveStats, Producer, normalize
from locustfiles.sio.logstate import (
    ATTR as _ATTR,
)
from locustfiles.sio.logstate import (
    MAX_BUFFER,
    WorkerInfo,
    _State,
    _state,
    policy_config,
    trim_rows,
)
from locustfiles.sio.writer import ERROR_LOG_S, _finish_files, _write, _write_eventlog_json  # noqa: F401

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
"""How often a worker ships its batch and the master (or local runner) writes one to the streams."""
STATS_INTERVAL_S = 2.0
"""How often sio_stats.json is rewritten during a headless run (the UI reads it live anyway)."""
FINAL_WAIT_S = 15.0
"""How long the master waits at test stop for workers' final batches before saying who is missing."""
MSG_BATCH = "sio_batch"
MSG_FLUSH = "sio_flush"
STATS_CACHE_S = 1.0
"""stats() is asked by every UI poll and the stats file; one snapshot a second serves them all."""


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
def payload_of(p: Producer, seq: int, final: bool = False, dropped: int = 0,
               cpu: list[list[Any]] | None = None) -> dict[str, Any]:
    """The v2 batch of everything `p` holds, `p` emptied (its counts drained, its kept rows and
    sends handed over). One builder of the pinned payload, for workers, local runs and tests
    (which feed the master real batches this way instead of a message of their own)."""
    rows = [[r[c] for c in COLUMNS] for r in p.rows]
    sends, p.rows, p.sends = p.sends, [], []
    return {"v": BATCH_VERSION, "seq": seq, "final": final, "dropped": dropped, "sent": time.time(),
            "cpu": [] if cpu is None else cpu, "aggs": p.agg.drain(), "rows": rows, "sends": sends,
            "receipts": p.receipts.drain(), "policy": p.policy.counts(), "recovery": _drain_recovery(p)}


def _drain_recovery(p: Producer) -> dict[str, int]:
    out, p.recovery = p.recovery, {}
    return out


def count_recovery(environment: Any, deltas: dict[str, int]) -> None:
    """A user's recovery counter increments into this process's next batch (cheap, no I/O)."""
    st = getattr(environment, _ATTR, None) or _state(environment)
    (st.producer or _producer(st)).add_recovery(deltas)


def _payload(st: _State, worker: str, final: bool) -> dict[str, Any] | None:
    """This process's batch since the last one (None for a local run with nothing new)."""
    p = _producer(st)
    cpu = generator_cpu.take(st.environment) if st.is_worker else []
    dropped, p.dropped = p.dropped, 0
    st.dropped += dropped
    payload = payload_of(p, st.seq, final, st.dropped, cpu)
    for v in payload["rows"]:
        if v[2] in ("", "local", None):
            v[2] = worker
    if not (payload["rows"] or payload["aggs"] or payload["sends"] or payload["receipts"] or payload["recovery"]
            or cpu or final or st.is_worker):
        return None
    return payload


def _merge_unsent(st: _State, new: dict[str, Any]) -> dict[str, Any]:
    """A payload that could not be shipped, joined with the next one. Counts are never lost: cells
    of one key add up (bounded by the keys, not by the outage's length), receipts add up per
    message; rows beyond MAX_BUFFER are dropped sampled first, state rows last, sends and receipt
    ids beyond it oldest first, all counted in `dropped`."""
    old, st.unsent = st.unsent, None
    if old is None:
        return new
    limit = MAX_BUFFER
    receipts = dict(old["receipts"])
    for m, n in new["receipts"].items():
        receipts[m] = receipts.get(m, 0) + n
    if len(receipts) > limit:
        over = len(receipts) - limit
        for m in list(receipts)[:over]:
            del receipts[m]
        st.dropped += over
    agg = Aggregator()
    agg.merge_wire(old["aggs"])
    agg.merge_wire(new["aggs"])
    rows = old["rows"] + new["rows"]
    st.dropped += trim_rows(rows, limit)
    sends = old["sends"] + new["sends"]
    if len(sends) > limit:
        st.dropped += len(sends) - limit
        del sends[:len(sends) - limit]
    recovery = dict(old.get("recovery") or {})
    for k, n in (new.get("recovery") or {}).items():
        recovery[k] = recovery.get(k, 0) + n
    return {**new, "aggs": agg.drain(), "rows": rows, "sends": sends, "receipts": receipts, "dropped": st.dropped,
            "recovery": recovery}


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
    snap["node_resources"] = noderes.readings(st.environment, now)  # --sio-scrape's nodes, live
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
    except Exception as e:  # noqa: BLE001 - a stats bug must not stop the flusher or quitting (meta.json)
        log.error("sioscale event log: cannot write %s/sio_stats.json (%s: %s)", d, type(e).__name__, e)


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
    except Exception as e:  # noqa: BLE001 - logged; quitting goes on
        log.error("sioscale event log: cannot update %s (%s: %s)", path, type(e).__name__, e)


def _status(st: _State, final: bool) -> RunStatus:
    """The status of a run this event log owns (plain `locust --sio-run-dir`): running until the end,
    then ok or degraded by the same rules as `sioscale run` (contract.status), from the live stats."""
    if not final:
        return RunStatus(Status.RUNNING)
    try:
        return from_sio_stats(stats(st.environment))
    except Exception as e:  # noqa: BLE001 - the run ended: meta.json must not stay "running"
        log.error("sioscale event log: cannot compute the final stats (%s: %s)", type(e).__name__, e)
        return RunStatus(Status.DEGRADED, [f"the event log could not compute its final stats ({type(e).__name__})"])


# -- Locust event listeners (registered at import) ------------------------------------------
@events.init.add_listener
def _refresh_loop_clock(**_kw: Any) -> None:
    """Bring the gevent loop's cached clock to now, just before Locust arms its --run-time timer.

    Why: libev times a timer from the loop's cached "now", which a loop that has not run yet last read when
    it was created. Locust's start-up (imports, the locustfile, the run directory) runs between that and
    `spawn_later(run_time, quit)` without a loop iteration, so on a busy machine a 5 s run stopped after
    0.5 s (the runs of campaigns/recipes.toml on 2 shared cores); init fires just before the timer is armed.
    """
    gevent.get_hub().loop.update_now()


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
    # each step whatever the others did: a failing stats file must not leave meta.json "running"
    for name, step in (("flush", lambda: flush(environment)), ("finish files", lambda: _finish_files(st)),
                       ("sio_stats.json", lambda: write_stats(environment, final=True)),
                       ("meta.json", lambda: _write_meta(st, final=True))):
        try:
            step()
        except Exception:
            log.exception("sioscale event log: at quitting, %s failed", name)
