"""The event log's run-directory workflow on the master (or local runner): one batch per flush to
each stream, eventlog.json at the start and the end, compaction to Parquet when the run ends.

Why here: eventlog.py records and ships (every process), ingest.py checks and merges (the
master); this module decides what reaches the disk and keeps what did not for the next flush.
The Arrow writer itself is runfiles.py (pyarrow), imported only when a run directory is set.

What a failed write keeps (review 2.2): whatever raised (a full disk, a value Arrow refuses),
the kept rows and the cells of that flush stay queued for the next one and the delivery rows
are not marked written, so nothing is lost, and the error is logged once per ERROR_LOG_S.
Rows queued that way are bounded by MAX_BUFFER (sampled rows go before state rows, counted).
"""

from __future__ import annotations

import logging
import time

from contract import histogram as hist
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
from locustfiles.sio.logstate import MAX_BUFFER, _State, policy_config, trim_rows

log = logging.getLogger(__name__)

ERROR_LOG_S = 10.0
"""A write error is logged at most once per this many seconds (the flusher retries every second)."""


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
    done = {k: False for k in FILES}
    try:
        from locustfiles.sio.runfiles import RunFiles, aggregate_rows  # the writer's process only

        if st.files is None:
            st.files = RunFiles(d)  # removes an earlier run's event files
            _write_eventlog_json(st, final=False)
        st.files.write(EVENTS, rows)  # typed by ingest_batch
        done[EVENTS] = True
        st.rows_written += len(rows)
        st.files.write(AGGREGATES, aggregate_rows(aggs))
        done[AGGREGATES] = True
        st.events_written += sum(a[7] for a in aggs)
        st.files.write(DELIVERY, delivery)
        done[DELIVERY] = True
        st.live.ledger.commit(delivery)
    except Exception as e:  # noqa: BLE001 - whatever it is, keep the data for the next flush
        _keep(st, e, rows if not done[EVENTS] else [], aggs if not done[AGGREGATES] else [])


def _keep(st: _State, e: BaseException, rows: list[list[object]], aggs: list[list[object]]) -> None:
    """What a failed write did not write goes back in the queues (rows bounded); logged once per 10 s."""
    if time.monotonic() - st.last_write_error > ERROR_LOG_S:
        log.error("sioscale event log: cannot write the event files in %s (%s: %s); keeping %d rows and %d cells "
                  "for the next flush (said once per %.0f s)", st.run_dir, type(e).__name__, e, len(rows), len(aggs),
                  ERROR_LOG_S)
        st.last_write_error = time.monotonic()
    if rows:
        st.to_write[:0] = rows
        st.dropped += trim_rows(st.to_write, MAX_BUFFER)
    if aggs:
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
           "compacted": sorted(st.compacted or ()),
           "counts": {"events": st.events_written, "rows_written": st.rows_written,
                      "kept_rows": live["kept_rows"], "sampled_out": live["sampled_out"],
                      "failures_over_budget": live["failures_over_budget"],
                      "dropped_rows": st.dropped + sum(i.dropped for i in st.workers.values()),
                      "malformed": dict(st.malformed),
                      "late_rows_ignored": st.late_rows}}
    try:
        d.mkdir(parents=True, exist_ok=True)
        write_json(d / EVENTLOG_JSON, doc)
    except OSError as e:
        log.error("sioscale event log: cannot write %s/%s (%s)", d, EVENTLOG_JSON, e)


def _finish_files(st: _State) -> None:
    """At quitting: the last batch with the final delivery rows, the streams to Parquet, eventlog.json.
    Each step runs whatever the one before it did (a failed compaction still gets eventlog.json)."""
    if st.run_dir is None:
        return
    try:
        _write(st, final=True)
    except Exception:
        log.exception("sioscale event log: the final write failed")
    if st.files is not None and st.compacted is None:
        try:
            st.compacted = st.files.compact()  # per kind: a kind that cannot be compacted keeps its stream
        except Exception as e:  # noqa: BLE001
            st.compacted = {}
            log.error("sioscale event log: cannot compact the event streams in %s (%s); the streams stay",
                      st.run_dir, e)
    _write_eventlog_json(st, final=True)


__all__ = ["ERROR_LOG_S", "_finish_files", "_write", "_write_eventlog_json"]
