"""The master's side of the event log's batches: check every part of a worker's payload, merge it
into the live stats and the files' queue (issue 11; the payload is described in eventlog.py).

Why each part is guarded on its own: a payload comes from another process (another version, a
bug, a hostile peer). One bad value (an inf where an int belongs, a timestamp from the future)
must cost only that item, counted in `malformed` (sio_stats.json's malformed_batch_parts,
eventlog.json's counts), never the rest of the batch: otherwise the live tab and the files
would differ by a whole batch.

Why timestamps from the future are refused: the delivery ledger settles by the newest time it
has seen, so one row dated a day ahead would settle (and turn late) every later send of the
run. Anything more than FUTURE_SLACK_S ahead of this process's own clock is dropped and counted.

Why a payload of another version (or of none: the old `sio_rows` row message, gone) is refused
whole, before its seq or CPU samples are taken: its parts may mean something else, and one way in
keeps the live tab and the files counted by one rule. It is counted as malformed `version`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from contract.aggregate import from_wire
from contract.rows import COLUMNS
from locustfiles.sio import generator_cpu
from locustfiles.sio.ledger import FUTURE_SLACK_S  # one bound: the ledger's data clock uses it too
from locustfiles.sio.live import STATE_STEPS, normalize
from locustfiles.sio.logstate import WorkerInfo, _State, _state
from locustfiles.sio.protocol.recovery import COUNTERS as RECOVERY_COUNTERS

SHIPPED_COUNTERS = frozenset((*RECOVERY_COUNTERS, "stream_received", "missed", "seq_duplicated", "seq_reordered"))
"""What a batch's `recovery` may count: the client's recovery counters and chat.py's numbered stream."""

log = logging.getLogger(__name__)

BATCH_VERSION = 2
MAX_COUNT = 2**53
"""A receipt count at or above this is not a count (floats lose integers beyond it)."""

_TS, _RUN, _WORKER, _USER, _STEP, _NAME, _LAT, _OK, _KIND = (COLUMNS.index(c) for c in (
    "ts", "run", "worker", "user", "step", "name", "latency_ms", "ok", "error_kind"))


def _bad(st: _State, part: str, worker: str, n: int = 1) -> None:
    """Count malformed payload parts; warn once per part (a broken worker must not flood the log)."""
    if n <= 0:
        return
    first = part not in st.malformed
    st.malformed[part] = st.malformed.get(part, 0) + n
    if first:
        log.warning("sioscale event log: worker %s sent a malformed batch part (%s); skipped and counted "
                    "(this warning is given once per part)", worker, part)


def ingest_batch(environment: Any, worker_id: str, data: Any, now: float | None = None) -> None:
    """The master's work for one worker's batch (no running Locust needed): the files' aggregates,
    the live stats (counts, sessions, membership, delivery) and the kept rows to write. `now`:
    this process's clock (tests); nothing dated after now + FUTURE_SLACK_S is taken."""
    st = _state(environment)
    if not isinstance(data, dict):
        _bad(st, "payload", worker_id)
        return
    if data.get("v") != BATCH_VERSION:  # another version (or none: the old sio_rows message) is refused whole
        _bad(st, "version", worker_id)
        return
    info = st.workers.setdefault(worker_id, WorkerInfo())
    if not _sequence(st, info, worker_id, data):
        return
    limit = (time.time() if now is None else now) + FUTURE_SLACK_S
    _guard(st, "cpu", worker_id, generator_cpu.receive, environment, worker_id, data.get("cpu"))
    _guard(st, "aggs", worker_id, _ingest_cells, st, info, worker_id, data.get("aggs"), limit)
    _guard(st, "rows", worker_id, _ingest_rows, st, worker_id, data.get("rows"), limit)
    _guard(st, "sends", worker_id, _ingest_sends, st, worker_id, data.get("sends"), limit)
    _guard(st, "receipts", worker_id, _ingest_receipts, st, worker_id, data.get("receipts"))
    _guard(st, "policy", worker_id, _ingest_policy, st, worker_id, data.get("policy"))
    _guard(st, "recovery", worker_id, _ingest_recovery, st, worker_id, data.get("recovery"))
    st.live.tick()


def _guard(st: _State, part: str, worker_id: str, fn: Any, *args: Any) -> Any:
    """fn(*args), or None with the part counted as malformed when it raises anything."""
    try:
        return fn(*args)
    except Exception:
        _bad(st, part, worker_id)
        log.debug("sioscale event log: %s of worker %s failed", part, worker_id, exc_info=True)
        return None


def _sequence(st: _State, info: WorkerInfo, worker_id: str, data: dict[str, Any]) -> bool:
    """Note the batch's seq (gaps) and the worker's own drop count; False for a seq already
    ingested (a batch sent twice: its counts must not count twice), counted in `duplicate_batch`."""
    try:
        seq = int(data.get("seq", info.last_seq + 1))
        dropped = int(data.get("dropped", 0))
    except (TypeError, ValueError, OverflowError):  # int(inf) is an OverflowError
        _bad(st, "seq", worker_id)
        seq, dropped = info.last_seq + 1, info.dropped
    if seq <= info.last_seq:
        info.duplicates += 1
        _bad(st, "duplicate_batch", worker_id)
        return False
    if seq > info.last_seq + 1:
        info.gaps += seq - info.last_seq - 1
    info.last_seq = seq
    info.batches += 1
    info.last_report = time.time()
    info.dropped = dropped
    if data.get("final"):
        info.final = True
    return True


def _ingest_cells(st: _State, info: WorkerInfo, worker_id: str, aggs: Any, limit: float) -> None:
    """Aggregate cells into the live stats and the files' aggregator, each checked on its own."""
    if aggs is None:
        return
    if not isinstance(aggs, list):
        _bad(st, "aggs", worker_id)
        return
    bad = 0
    good = []
    for w in aggs:  # checked first, each on its own: one bad cell costs only itself
        try:
            key, *_rest, max_ts, _pairs = from_wire(w)
            if key.second > limit or max_ts > limit:
                raise ValueError("a cell from the future")
        except Exception:  # noqa: BLE001 - OverflowError, a histogram that cannot be: this cell only
            bad += 1
            continue
        good.append(w)
    file_agg = st.file_agg
    before = file_agg.events
    bad += st.live.add_cells(good)
    file_agg.merge_wire(good)
    info.rows += file_agg.events - before  # the steps of its well-formed cells
    _bad(st, "aggs", worker_id, bad)


def _typed(values: Any) -> list[Any] | None:
    """A shipped row as typed values in COLUMNS order: as is when a worker's producer made it (the
    fast path: the numbers' types and the step checked; the text columns are checked per batch by
    the writer, runfiles.RunFiles.write), else through live.normalize; None when it cannot be a row."""
    if type(values) is not list or len(values) != len(COLUMNS):
        return None
    ts, lat, ok = values[_TS], values[_LAT], values[_OK]
    if (type(ts) is float and math.isfinite(ts) and (ok == 0 or ok == 1) and type(ok) is int
            and (lat is None or (type(lat) is float and 0 <= lat < math.inf)) and type(values[_STEP]) is str
            and type(values[_USER]) is str):
        if not ok and not values[_KIND]:
            values[_KIND] = "unknown"
        if not values[_NAME]:
            values[_NAME] = values[_STEP]
        return values
    r = normalize(dict(zip(COLUMNS, values, strict=True)))
    if r is None or not math.isfinite(r["ts"]) or (r["latency_ms"] is not None and not math.isfinite(r["latency_ms"])):
        return None
    return [r[c] for c in COLUMNS]


def _ingest_rows(st: _State, worker_id: str, rows: Any, limit: float) -> None:
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
        try:
            v = _typed(values)
        except Exception:  # noqa: BLE001 - a value normalize cannot read: this row only
            v = None
        if v is None or v[_TS] > limit:
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


def _ingest_sends(st: _State, worker_id: str, sends: Any, limit: float) -> None:
    if sends is None:
        return
    if not isinstance(sends, list):
        _bad(st, "sends", worker_id)
        return
    ledger = st.live.ledger
    bad = 0
    for s in sends:
        try:
            msg_id, room, ts = s
            ts = float(ts)
            if not math.isfinite(ts) or ts > limit:
                raise ValueError("a send's ts not finite or from the future")
            ledger.add_send(str(msg_id), str(room), ts)
        except Exception:  # noqa: BLE001 - this send only
            bad += 1
    _bad(st, "sends", worker_id, bad)


def _ingest_receipts(st: _State, worker_id: str, receipts: Any) -> None:
    """Receipt counts per message id; each entry checked (a non-count costs only itself)."""
    if receipts is None:
        return
    if not isinstance(receipts, dict):
        _bad(st, "receipts", worker_id)
        return
    good = {str(m): n for m, n in receipts.items() if type(n) is int and 0 <= n < MAX_COUNT}
    _bad(st, "receipts", worker_id, len(receipts) - len(good))
    if good:
        st.live.ledger.add_receipts(good)


def _ingest_policy(st: _State, worker_id: str, policy: Any) -> None:
    if policy is None:
        return
    if isinstance(policy, dict) and all(type(v) is int and 0 <= v < MAX_COUNT for v in policy.values()):
        st.live.set_policy(worker_id, policy)
    else:
        _bad(st, "policy", worker_id)


def _ingest_recovery(st: _State, worker_id: str, recovery: Any) -> None:
    """Recovery counter increments; a counter we do not know or a non-count costs only itself."""
    if recovery is None:
        return
    if not isinstance(recovery, dict):
        _bad(st, "recovery", worker_id)
        return
    good = {k: n for k, n in recovery.items() if k in SHIPPED_COUNTERS and type(n) is int and 0 <= n < MAX_COUNT}
    _bad(st, "recovery", worker_id, len(recovery) - len(good))
    st.live.add_recovery(good)


__all__ = ["BATCH_VERSION", "FUTURE_SLACK_S", "ingest_batch"]
