"""Per-second step aggregates: exact counts and latency histograms by step × node × outcome.

Why: one CSV row per step shipped to one master caps a run near 24,000 rows/s (issue 11). A
worker adds every step to the `Aggregator` of its process and ships what a second gathered as
one compact list (`drain`); the master merges the lists (`merge_wire`) and writes them, and the
analysis adds the same cells again. Counts are exact at every stage; latency percentiles come
from merged histograms (contract.histogram, relative error 1 %). Kept rows (contract.rowpolicy)
explain; aggregates count. Stdlib only (contract layer).

A cell's key is `AggKey` (second, step, name, node, transport, ok, error_kind); its value is
the number of steps, the latency histogram of the steps that have one, and the newest ts seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from contract.histogram import MAX_BUCKET, MAX_LATENCY_MS, Histogram
from contract.rows import is_ok


class AggKey(NamedTuple):
    second: int  # floor(ts), epoch seconds
    step: str
    name: str
    node: str
    transport: str
    ok: int  # 1 / 0
    error_kind: str  # "" when ok


AGG_COLUMNS: tuple[str, ...] = (
    *AggKey._fields,
    "count",  # steps in the cell
    "lat_count",  # of which with a latency
    "lat_sum_ms",
    "lat_min_ms",  # None when lat_count == 0
    "lat_max_ms",
    "max_ts",  # the newest step's ts in the cell (run ends, delivery grace)
    "hist",  # flat [bucket, count, bucket, count, ...] (contract.histogram)
)
"""A cell on the wire (worker -> master message) and, with `hist` split in two list columns,
in the run directory (contract.eventfiles)."""


class Cell:
    __slots__ = ("count", "hist", "max_ts")

    def __init__(self) -> None:
        self.count = 0
        self.hist = Histogram()
        self.max_ts = -math.inf


class Aggregator:
    """Cells of one process (worker) or of the merged stream (master), until drained."""

    __slots__ = ("cells", "events")

    def __init__(self) -> None:
        self.cells: dict[AggKey, Cell] = {}
        self.events = 0  # steps counted since creation (benchmarks, tests)

    def add(self, ts: float, step: str, name: str, node: str, transport: str, ok: int, error_kind: str,
            latency_ms: float | None) -> None:
        key = AggKey(int(ts), step, name, node, transport, ok, "" if ok else error_kind)
        cell = self.cells.get(key)
        if cell is None:
            cell = self.cells[key] = Cell()
        cell.count += 1
        if latency_ms is not None and 0 <= latency_ms <= MAX_LATENCY_MS:  # NaN compares False
            cell.hist.add(latency_ms)
        if ts > cell.max_ts:
            cell.max_ts = ts
        self.events += 1

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Count one event row (contract.rows.Row)."""
        lat = row.get("latency_ms")
        ok = 1 if is_ok(row.get("ok", 1)) else 0
        self.add(float(row["ts"]), str(row.get("step", "")), str(row.get("name", "") or row.get("step", "")),
                 str(row.get("node", "") or ""), str(row.get("transport", "") or ""), ok,
                 str(row.get("error_kind", "") or ("" if ok else "unknown")),
                 None if lat is None or lat == "" else float(lat))

    def drain(self) -> list[list[Any]]:
        """Every cell as a wire list (AGG_COLUMNS order), and start empty."""
        cells, self.cells = self.cells, {}
        return [to_wire(k, c) for k, c in cells.items()]

    def merge_wire(self, rows: Iterable[list[Any]]) -> int:
        """Merge wire lists (from `drain`, any process); returns how many were malformed and skipped."""
        bad = 0
        for w in rows:
            try:
                key, n, lat_n, lat_sum, lo, hi, max_ts, pairs = from_wire(w)
            except (TypeError, ValueError, IndexError, OverflowError):
                bad += 1
                continue
            cell = self.cells.get(key)
            if cell is None:
                cell = self.cells[key] = Cell()
            cell.count += n
            if lat_n:
                cell.hist.merge_pairs(pairs, lat_n, lat_sum, lo, hi)
            cell.max_ts = max(cell.max_ts, max_ts)
            self.events += n
        return bad


def to_wire(k: AggKey, c: Cell) -> list[Any]:
    h = c.hist
    return [*k, c.count, h.n, h.total, h.min if h.n else None, h.max if h.n else None, c.max_ts, h.pairs()]


MAX_SECOND = 2**40
"""Cells' seconds are epoch seconds: anything at or past this (year ~36,800) is not a time."""
MAX_COUNT = 2**53
"""Counts stay exact in a float64 (pandas sums) below this."""


def _int(v: Any, what: str) -> int:
    """An integer from a wire value: an int, or a float that is one; never a bool, NaN or inf."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"aggregate cell: {what} {v!r} is not a number")
    if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
        raise ValueError(f"aggregate cell: {what} {v!r} is not a whole number")
    return int(v)


def _float(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"aggregate cell: {what} {v!r} is not a finite number")
    return float(v)


def from_wire(w: list[Any]) -> tuple[AggKey, int, int, float, float, float, float, list[int]]:
    """A wire list checked and typed; ValueError/TypeError when it cannot be one.

    Every value a process could not have produced is refused here, so that nothing downstream (the
    live tab, the Parquet writer's int64/int32 columns, the analysis) meets an overflow: numbers
    finite, counts 0..2**53, histogram buckets 0..MAX_BUCKET adding up to the latency count, and
    the newest ts inside the cell's second."""
    if not isinstance(w, list | tuple) or len(w) != len(AGG_COLUMNS):
        raise ValueError(f"aggregate cell is not a list of {len(AGG_COLUMNS)} fields")
    second = _int(w[0], "second")
    if not 0 <= second < MAX_SECOND:
        raise ValueError(f"aggregate cell: second {second} is not an epoch second")
    key = AggKey(second, str(w[1]), str(w[2]), str(w[3]), str(w[4]), 1 if _int(w[5], "ok") else 0, str(w[6]))
    n, lat_n = _int(w[7], "count"), _int(w[8], "lat_count")
    lat_sum = _float(w[9], "lat_sum_ms")
    lo = _float(w[10], "lat_min_ms") if w[10] is not None else math.inf
    hi = _float(w[11], "lat_max_ms") if w[11] is not None else -math.inf
    max_ts = _float(w[12], "max_ts")
    if not isinstance(w[13], list | tuple):
        raise TypeError("aggregate cell: hist is not a list")
    pairs = [_int(x, "hist") for x in w[13]]
    if not (0 <= lat_n <= n < MAX_COUNT) or len(pairs) % 2 or not second <= max_ts < second + 1:
        raise ValueError("aggregate cell with negative or inconsistent counts, or a ts outside its second")
    if lat_n and (not 0 <= lo <= hi <= MAX_LATENCY_MS or lat_sum < 0):
        raise ValueError("aggregate cell with latency bounds that no histogram could have")
    if sum(pairs[1::2]) != lat_n or any(c < 0 for c in pairs[1::2]) or any(not 0 <= i <= MAX_BUCKET for i in pairs[0::2]):
        raise ValueError("aggregate cell whose histogram does not add up to its latency count")
    return key, n, lat_n, lat_sum, lo, hi, max_ts, pairs


__all__ = ["AGG_COLUMNS", "MAX_COUNT", "MAX_SECOND", "AggKey", "Aggregator", "Cell", "from_wire", "to_wire"]
