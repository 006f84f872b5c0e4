"""The event log: every client step's row, from every worker, into one `RUN_DIR/events.csv`.

Why it is built this way:
- `record()` is called for every client step, so it only appends to a list; a background
  greenlet ships the rows (worker -> master, with Locust's own messages) or writes them (master
  or local runner) every `FLUSH_INTERVAL_S`. A run killed with SIGKILL therefore keeps every
  row older than about one flush interval (rows are handed to the OS, which keeps them).
- Only the master (or the local runner) writes the file and feeds the live stats, so
  `--processes N` and multi-machine runs produce one complete file and one set of numbers.
  Rows flow to the master even when `--sio-run-dir` is empty: the web UI's Socket.IO tab is
  computed from them.
- Stop ordering: a worker flushes in its `test_stop` listener, which Locust runs before it
  sends `client_stopped`; the master's `test_stop` then waits (bounded) until every live worker
  has sent its final batch, asking stragglers with a `sio_flush` message. That also covers
  headless `--run-time` ends, where Locust's master fires `test_stop` before telling workers to
  quit and gives them only 0.5 s afterwards.
- The generator's own CPU samples (generator_cpu.py) ride the same batches and flushes into
  `RUN_DIR/generator.csv`, so they survive a SIGKILL the same way.
"""

from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from contract import environment  # stdlib-only, like contract.jsonfile (test_fmt.py checks)
from contract.jsonfile import write_json
from contract.options import SioOptions
from contract.rows import COLUMNS, Row, append_csv
from contract.status import RunStatus, Status, from_sio_stats, writer_identity  # stdlib-only too
from locustfiles.sio import generator_cpu
from locustfiles.sio.live import LiveStats

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
"""How often buffered rows are written (master/local) or shipped (worker)."""
STATS_INTERVAL_S = 2.0
"""How often sio_stats.json is rewritten during a headless run (the UI reads it live anyway)."""
FINAL_WAIT_S = 15.0
"""How long the master waits at test stop for workers' final batches before saying who is missing."""
MAX_BUFFER = 1_000_000
"""Rows held on a worker that cannot reach its master; beyond this, rows are counted as dropped."""
MSG_ROWS = "sio_rows"
MSG_FLUSH = "sio_flush"
_ATTR = "_sioscale_eventlog"
_ROW_VALUES = operator.itemgetter(*COLUMNS)
STATS_CACHE_S = 1.0
"""stats() is asked by every UI poll and the stats file; one snapshot a second serves them all."""


@dataclass
class WorkerInfo:
    """What the master knows about one worker's row stream (to say what is missing)."""

    rows: int = 0
    batches: int = 0
    last_seq: int = -1
    gaps: int = 0  # batches that never arrived (sequence numbers skipped)
    last_report: float = 0.0
    final: bool = False
    dropped: int = 0  # rows the worker itself had to drop (buffer full)


@dataclass
class _State:
    environment: Any
    buffer: list[Row] = field(default_factory=list)  # recorded here, not yet shipped/ingested
    to_write: list[Row] = field(default_factory=list)  # ingested (counted live), not yet on disk
    live: LiveStats = field(default_factory=LiveStats)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    rows_written: int = 0
    produced: int = 0  # rows record()ed in this process (tests compare it with the master's file)
    dropped: int = 0
    seq: int = 0
    started: float | None = None
    ended: float | None = None
    greenlets: list[Any] = field(default_factory=list)
    user_worker: dict[str, str] = field(default_factory=dict)
    stats_cache: tuple[float, int, dict[str, Any]] | None = None
    colliding_users: set[str] = field(default_factory=set)
    wrote_meta: bool = False
    header_checked: bool = False
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


def _state(environment: Any) -> _State:
    st = getattr(environment, _ATTR, None)
    if st is None:
        st = _State(environment)
        setattr(environment, _ATTR, st)
    return st


def record(environment: Any, row: Row) -> None:
    """Queue one event row; cheap and non-blocking (the flusher greenlet does the I/O)."""
    st = _state(environment)
    st.produced += 1
    if len(st.buffer) >= MAX_BUFFER:
        st.dropped += 1
        return
    st.buffer.append(row)


def live_stats(environment: Any) -> LiveStats:
    """The master's (or local runner's) aggregate over every row seen so far."""
    return _state(environment).live


def flush(environment: Any, final: bool = False) -> None:
    """Ship (worker) or write (master/local) everything buffered now. Safe to call any time."""
    st = _state(environment)
    if st.is_worker:
        _ship(st, final)
        return
    rows, st.buffer = st.buffer, []
    _ingest(st, rows)
    pending, st.to_write = st.to_write, []
    if pending:
        _write(st, pending)
    generator_cpu.write(environment, st.run_dir)
    if st.run_dir is not None and time.time() - st.last_stats_write >= STATS_INTERVAL_S:
        write_stats(environment)


# -- worker side ----------------------------------------------------------------------------
def _ship(st: _State, final: bool) -> None:
    runner = st.runner
    rows, st.buffer = st.buffer, []
    wid = runner.client_id
    for r in rows:
        if r.get("worker") in ("", "local", None):
            r["worker"] = wid
    payload = {
        "seq": st.seq,
        "rows": [[r.get(c) for c in COLUMNS] for r in rows],
        "final": final,
        "dropped": st.dropped,
        "sent": time.time(),
        "cpu": generator_cpu.take(st.environment),  # this process's CPU samples (generator.csv)
    }
    try:
        runner.send_message(MSG_ROWS, payload)
        st.seq += 1
    except Exception as e:  # noqa: BLE001 - a lost master must not kill the worker's users
        log.warning("sioscale event log: could not ship %d rows to master (%s); will retry", len(rows), e)
        st.buffer[:0] = rows
        generator_cpu.give_back(st.environment, payload["cpu"])


def _on_flush_request(environment: Any, msg: Any, **_kw: Any) -> None:
    """Master asks for the final batch: stop users first, so no row is produced after it."""
    st = _state(environment)
    runner = st.runner
    if runner is not None and runner.state in (STATE_RUNNING, STATE_SPAWNING):
        runner.stop()  # fires test_stop, whose listener ships the final batch
    _ship(st, final=True)


# -- master / local side --------------------------------------------------------------------
def _on_rows(environment: Any, msg: Any, **_kw: Any) -> None:
    st = _state(environment)
    data = msg.data or {}
    wid = str(msg.node_id)
    info = st.workers.setdefault(wid, WorkerInfo())
    seq = int(data.get("seq", info.last_seq + 1))
    if seq > info.last_seq + 1:
        info.gaps += seq - info.last_seq - 1
    info.last_seq = max(info.last_seq, seq)
    info.batches += 1
    info.last_report = time.time()
    info.dropped = int(data.get("dropped", 0))
    if data.get("final"):
        info.final = True
    rows: list[Row] = []
    for values in data.get("rows", []):
        if len(values) != len(COLUMNS):
            log.warning("sioscale event log: worker %s sent a row with %d fields, expected %d; skipped",
                        wid, len(values), len(COLUMNS))
            continue
        rows.append(dict(zip(COLUMNS, values, strict=True)))  # type: ignore[arg-type]
    generator_cpu.receive(environment, wid, data.get("cpu"))
    info.rows += len(rows)
    for r in rows:  # a user id must belong to one worker, or per-user numbers mix two users up
        owner = st.user_worker.setdefault(str(r.get("user", "")), wid)
        if owner != wid and r.get("user"):
            st.colliding_users.add(str(r["user"]))
    _ingest(st, rows)  # live numbers at once; the file is written by the flusher


def _ingest(st: _State, rows: list[Row]) -> None:
    """Complete the rows, count them in the live stats and queue them for the file."""
    run = st.run_name
    for r in rows:
        if not r.get("run"):
            r["run"] = run
        if not r.get("worker"):
            r["worker"] = "local"
        st.live.add(r)
    st.to_write.extend(rows)


def _write(st: _State, rows: list[Row]) -> None:
    d = st.run_dir
    if d is None:
        return
    try:
        try:  # itemgetter over the columns: no per-cell Python work on the hot path
            values = list(map(_ROW_VALUES, rows))
        except KeyError:  # a caller's hand-made dict without every column
            values = [[r.get(c) for c in COLUMNS] for r in rows]
        append_csv(d / "events.csv", COLUMNS, values)
        st.rows_written += len(rows)
    except OSError as e:
        # Keep the rows for the next try rather than lose them; say why once per failure.
        if time.monotonic() - st.last_write_error > 10:  # say it, but not twice a second
            log.error("sioscale event log: cannot write %s/events.csv (%s); keeping %d rows", d, e, len(rows))
            st.last_write_error = time.monotonic()
        st.to_write[:0] = rows


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
    return {"options": _options(st), "eventlog": {"rows": st.rows_written, "dropped": st.dropped,
                                                  "started": st.started, "ended": st.ended},
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
        runner.register_message(MSG_ROWS, _on_rows)
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
    write_stats(environment, final=True)
    _write_meta(st, final=True)
