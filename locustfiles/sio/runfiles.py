"""The event log's run-directory writer: Arrow IPC streams while the run goes, Parquet when it ends.

Why this format (contract/eventfiles.py): every flush (about a second) appends one record batch
to each of events.arrows / aggregates.arrows / delivery.arrows. Each batch is serialized first
(an encapsulated IPC message, the bytes the stream format holds) and handed to the OS with
os.write at once (no user-space buffer), so a SIGKILLed run keeps every complete batch and a
reader stops at the last one. A write that fails halfway (ENOSPC) is cut back to where the batch
began (ftruncate), so a retry never appends after broken bytes that would hide every later batch. At the end (`compact`) each stream becomes
a Parquet file: aggregates merged by key with summed histograms, kept rows sorted by ts, the
newest delivery row per second; written to a temporary name, renamed, then the stream removed.

Strings are written plain (not dictionary-encoded) in the streams. Why: a batch is one second
of data, small, and written once; encoding it would cost the master CPU per flush for a file
that lives only until the run ends, while Parquet dictionary-encodes every text column by
itself at compaction. The readers accept both (analysis/runfiles.py).

Errors are the caller's (the event log keeps the data and retries): an exception from `write`
leaves the writer usable and the stream whole; the stream of a kind is created at its first
non-empty batch. A RunFiles removes an earlier run's event files when it is made, so a reader
never prefers an old Parquet file to this run's stream. `compact` checks that each stream reads
back with every row written to it before it removes the stream.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from contract.aggregate import AGG_COLUMNS, Aggregator
from contract.eventfiles import AGGREGATES, DELIVERY, EVENTS, FILES, FINAL_SUFFIX, STREAM_SUFFIX

log = logging.getLogger(__name__)

_TYPES: dict[str, pa.DataType] = {
    "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(), "int8": pa.int8(), "string": pa.string(),
    "list<int32>": pa.list_(pa.int32()), "list<int64>": pa.list_(pa.int64()),
}


def schema(kind: str) -> pa.Schema:
    """The Arrow schema of one kind of file, from contract.eventfiles (plain strings)."""
    return pa.schema([(c, _TYPES[t]) for c, t in FILES[kind].items()])


def _batch(kind: str, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """Row lists (the kind's column order) as one typed record batch. A value of another type in a
    text column (a worker's bug, a hand-made row) is written as its str(); other columns must
    already hold their types (the event log checks them when it ingests)."""
    sch = schema(kind)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in sch.names]
    arrays = []
    for c, f in zip(cols, sch, strict=True):
        try:
            arrays.append(pa.array(c, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            if f.type != pa.string():
                raise
            arrays.append(pa.array(["" if x is None else str(x) for x in c], type=f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=sch)


def aggregate_rows(wires: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """contract.aggregate wire lists as aggregates-file rows (`hist` split into buckets and counts)."""
    out = []
    for w in wires:
        pairs = w[13]
        lo, hi = w[10], w[11]
        out.append([*w[:10], None if lo is None or not math.isfinite(lo) else lo,
                    None if hi is None or not math.isfinite(hi) else hi, w[12], pairs[0::2], pairs[1::2]])
    return out


class RunFiles:
    """One run directory's three streams (the master's or the local runner's)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._fds: dict[str, int] = {}
        self._ends: dict[str, int] = {}  # kind -> bytes of complete batches in its stream
        self.batches: dict[str, int] = {k: 0 for k in FILES}
        self.rows: dict[str, int] = {k: 0 for k in FILES}
        self.remove_stale()

    def path(self, kind: str, final: bool = False) -> Path:
        return self.run_dir / f"{kind}{FINAL_SUFFIX if final else STREAM_SUFFIX}"

    def _tmp(self, kind: str) -> Path:
        dst = self.path(kind, final=True)
        return dst.with_name(f".{dst.name}.tmp")

    def remove_stale(self) -> None:
        """Remove an earlier run's event files in this directory (a plain `locust --sio-run-dir`
        reusing it): readers prefer Parquet, so an old one would win over this run's stream, and
        a kind this run never writes would show the old run's data."""
        for kind in FILES:
            for p in (self.path(kind), self.path(kind, final=True), self._tmp(kind)):
                try:
                    p.unlink(missing_ok=True)
                except (FileNotFoundError, NotADirectoryError):
                    pass  # no run directory yet: nothing stale in it
                except OSError as e:  # a directory in the way, no permission: say it, once per file
                    log.error("sioscale event log: cannot remove %s, left from an earlier run (%s)", p, e)

    def _open(self, kind: str) -> int:
        fd = self._fds.get(kind)
        if fd is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path(kind), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds[kind], self._ends[kind] = fd, 0
            try:
                self._append(kind, schema(kind).serialize())
            except BaseException:
                self._fds.pop(kind)
                os.close(fd)
                raise
        return fd

    def _append(self, kind: str, data: pa.Buffer) -> None:
        """All of `data` at the end of the stream, or nothing: a failed write is cut back."""
        fd, start = self._fds[kind], self._ends[kind]
        view = memoryview(data)
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        except BaseException:
            try:
                os.ftruncate(fd, start)
                os.lseek(fd, start, os.SEEK_SET)
            except OSError as e:  # the stream cannot be mended: readers stop at the broken batch
                log.error("sioscale event log: cannot cut %s back after a failed write (%s)", self.path(kind), e)
            raise
        self._ends[kind] = start + len(view)

    def write(self, kind: str, rows: Sequence[Sequence[Any]]) -> None:
        """Append one batch (rows in the kind's column order); nothing for no rows. Any exception:
        nothing written (the stream ends with its last complete batch)."""
        if not rows:
            return
        data = _batch(kind, rows).serialize()
        self._open(kind)
        self._append(kind, data)
        self.batches[kind] += 1
        self.rows[kind] += len(rows)

    def close(self) -> None:
        for kind in list(self._fds):
            os.close(self._fds.pop(kind))

    def compact(self) -> dict[str, int]:
        """Close the streams and turn each into its Parquet file; returns the rows per final file.
        A stream that cannot be read, does not read back every row written to it, or cannot be
        compacted stays as it is (readers fall back to it); the other kinds still compact."""
        self.close()
        out: dict[str, int] = {}
        for kind in FILES:
            src = self.path(kind)
            if not src.exists():
                continue
            tmp = self._tmp(kind)
            try:
                stream = read_stream(src)
                if stream.num_rows != self.rows[kind]:
                    log.error("sioscale event log: %s reads back %d rows of the %d written; the stream stays "
                              "(not compacted)", src, stream.num_rows, self.rows[kind])
                    continue
                table = _COMPACT[kind](stream)
                pq.write_table(table, tmp)
                os.replace(tmp, self.path(kind, final=True))
            except Exception as e:  # noqa: BLE001 - one kind's failure must not stop the others
                log.error("sioscale event log: cannot compact %s (%s); the stream stays (readers read it)", src, e)
                tmp.unlink(missing_ok=True)
                continue
            src.unlink()
            out[kind] = table.num_rows
        return out


def read_stream(path: Path) -> pa.Table:
    """Every complete batch of a stream (a cut last batch is left out)."""
    batches = []
    with pa.OSFile(str(path), "rb") as f:
        reader = ipc.open_stream(f)
        sch = reader.schema
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (OSError, pa.ArrowException):
                break
    return pa.Table.from_batches(batches, schema=sch)


def _compact_events(t: pa.Table) -> pa.Table:
    return t.sort_by("ts")


def _compact_aggregates(t: pa.Table) -> pa.Table:
    """Cells of one key written in several batches merged into one (counts and histograms summed)."""
    agg = Aggregator()
    d = t.to_pydict()
    n = t.num_rows
    names = list(AGG_COLUMNS[:-1])
    wires = []
    for i in range(n):
        lo, hi = d["lat_min_ms"][i], d["lat_max_ms"][i]
        buckets, counts = d["hist_bucket"][i] or [], d["hist_count"][i] or []
        pairs = [x for pair in zip(buckets, counts, strict=True) for x in pair]
        w = [d[c][i] for c in names]
        w[10], w[11] = lo, hi
        wires.append([*w, pairs])
    agg.merge_wire(wires)
    rows = sorted(aggregate_rows(agg.drain()), key=lambda r: (r[0], *r[1:7]))
    return _batch_table(AGGREGATES, rows)


def _compact_delivery(t: pa.Table) -> pa.Table:
    newest: dict[int, list[Any]] = {}
    for r in zip(*t.to_pydict().values(), strict=True):
        prev = newest.get(r[0])
        if prev is None or r[5] >= prev[5]:
            newest[r[0]] = list(r)
    return _batch_table(DELIVERY, [newest[s] for s in sorted(newest)])


def _batch_table(kind: str, rows: list[list[Any]]) -> pa.Table:
    return pa.Table.from_batches([_batch(kind, rows)])


_COMPACT = {EVENTS: _compact_events, AGGREGATES: _compact_aggregates, DELIVERY: _compact_delivery}

__all__ = ["RunFiles", "aggregate_rows", "read_stream", "schema"]
