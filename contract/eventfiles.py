"""The event log's files in a run directory, schema version 2 (issue 11): names, columns, types.

Why these formats: the master appends one Arrow IPC *stream* batch per flush (about a second) to
each `*.arrows` file and flushes it to the OS; a reader takes every complete batch, so a run
killed with SIGKILL loses at most the last flush. When the run ends the streams are compacted to
Parquet (`*.parquet`, aggregates merged by key) and the streams removed. A reader prefers the
Parquet file and falls back to the stream (a killed run, or a compaction that did not finish).
Schema version 1 is the CSV layout (`events.csv`, every row); `sioscale report` reads both.

Types are named here as strings (this layer is stdlib only); the writer and the readers map them
to pyarrow types ("string": plain or dictionary-encoded, readers accept both; the event log writes
it plain in its streams, see locustfiles/sio/runfiles.py, and Parquet dictionary-encodes it).
"""

from __future__ import annotations

from contract.rows import COLUMNS

SCHEMA_VERSION = 2
EVENTLOG_JSON = "eventlog.json"
"""{"schema_version": 2, "policy": RowPolicyConfig.as_json(), "histogram": {...}, "files": {...},
"counts": {...}} written by the event log at start and at the end (its one writer)."""

EVENTS = "events"
AGGREGATES = "aggregates"
DELIVERY = "delivery"
STREAM_SUFFIX = ".arrows"
FINAL_SUFFIX = ".parquet"
LEGACY_EVENTS_CSV = "events.csv"

EVENT_TYPES: dict[str, str] = {
    "ts": "float64", "run": "string", "worker": "string", "user": "string", "eio_sid": "string",
    "sio_sid": "string", "step": "string", "name": "string", "transport": "string", "node": "string",
    "latency_ms": "float64", "ok": "int8", "error_kind": "string", "error": "string", "room": "string",
    "msg_id": "string",
}
"""Kept event rows: contract.rows.COLUMNS, typed (latency_ms null where a step has none)."""

AGGREGATE_TYPES: dict[str, str] = {
    "second": "int64", "step": "string", "name": "string", "node": "string", "transport": "string",
    "ok": "int8", "error_kind": "string", "count": "int64", "lat_count": "int64", "lat_sum_ms": "float64",
    "lat_min_ms": "float64", "lat_max_ms": "float64", "max_ts": "float64",
    "hist_bucket": "list<int32>", "hist_count": "list<int64>",
}
"""contract.aggregate.AGG_COLUMNS with `hist` as two parallel lists. In a stream one key may
appear in several batches (one per flush): a reader sums counts and histograms by key."""

DELIVERY_TYPES: dict[str, str] = {
    "second": "int64", "sent": "int64", "expected": "int64", "delivered": "int64", "final": "int8",
    "written": "float64",
}
"""Broadcast delivery by the send's second (docs/contracts.md, one definition). The master
rewrites a second while its sends can still change; a reader keeps the row with the largest
`written` per second. `final` = 1 once the run ended (grace window applied exactly); in a killed
run no row is final and the reader leaves out the seconds within DELIVERY_GRACE_S of its end."""

FILES: dict[str, dict[str, str]] = {EVENTS: EVENT_TYPES, AGGREGATES: AGGREGATE_TYPES, DELIVERY: DELIVERY_TYPES}

assert tuple(EVENT_TYPES) == COLUMNS, "EVENT_TYPES must follow contract.rows.COLUMNS"

__all__ = ["AGGREGATES", "AGGREGATE_TYPES", "DELIVERY", "DELIVERY_TYPES", "EVENTLOG_JSON", "EVENTS", "EVENT_TYPES",
           "FILES", "FINAL_SUFFIX", "LEGACY_EVENTS_CSV", "SCHEMA_VERSION", "STREAM_SUFFIX"]
