"""Latency histograms that merge exactly: log-linear buckets with a stated relative error of 1 %.

Why: percentiles cannot be merged, histograms can. Workers aggregate every step's latency per
second into one of these; the master and the analysis add bucket counts (exact), and every
percentile is read from the merged counts. Why by hand rather than `hdrhistogram`: the bucket
rule is four lines, the analysis needs the same rule vectorised in numpy (analysis/aggregates.py)
and an encoding that a Parquet list column holds as is; a library's own serialisation would be
a second format to keep in step. Stdlib only (contract layer).

Buckets (latency in ms):
- bucket 0 holds [0, MIN_MS);
- bucket i >= 1 holds [MIN_MS * BASE**(i-1), MIN_MS * BASE**i).
A value is read back as its bucket's midpoint, at most (BASE - 1) / 2 = 1 % from the true value
(bucket 0 reads back as 0). 24 h in ms is bucket 1,272, so a histogram holds at most ~1,300
buckets whatever the load; a typical step fills a few dozen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

BASE = 1.02
MIN_MS = 0.001
RELATIVE_ERROR = (BASE - 1) / 2
"""The stated bound: |read-back value - true value| <= RELATIVE_ERROR * true value (values >= MIN_MS)."""
_INV_LN_BASE = 1.0 / math.log(BASE)
_LN_MIN = math.log(MIN_MS)
MAX_LATENCY_MS = 24 * 3600 * 1000.0
"""The longest latency counted (the loader blanks longer ones as impossible): a step still counts,
its latency does not (contract.aggregate.Aggregator.add)."""
MAX_BUCKET = int((math.log(MAX_LATENCY_MS) - _LN_MIN) * _INV_LN_BASE) + 1
"""The bucket of MAX_LATENCY_MS (1,272): bucket_of never returns more, and a shipped histogram
with a higher index is malformed."""


def bucket_of(ms: float) -> int:
    """The bucket index of a latency in ms (negative values count as 0; callers drop NaN/inf)."""
    if ms < MIN_MS:
        return 0
    if ms >= MAX_LATENCY_MS:  # also inf: the top bucket, never an index past it
        return MAX_BUCKET
    return int((math.log(ms) - _LN_MIN) * _INV_LN_BASE) + 1


def bucket_value(i: int) -> float:
    """The value a bucket reads back as: its midpoint (0 for bucket 0)."""
    if i <= 0:
        return 0.0
    i = min(i, MAX_BUCKET)
    low = MIN_MS * BASE ** (i - 1)
    return low * (1 + BASE) / 2


class Histogram:
    """Counts per bucket plus exact count, sum, min and max (for means and bounds)."""

    __slots__ = ("buckets", "max", "min", "n", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.n = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, ms: float) -> None:
        i = bucket_of(ms)
        b = self.buckets
        b[i] = b.get(i, 0) + 1
        self.n += 1
        self.total += ms
        if ms < self.min:
            self.min = ms
        if ms > self.max:
            self.max = ms

    def merge(self, other: Histogram) -> None:
        b = self.buckets
        for i, c in other.buckets.items():
            b[i] = b.get(i, 0) + c
        self.n += other.n
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def merge_pairs(self, pairs: Sequence[int], n: int, total: float, lo: float, hi: float) -> None:
        """Merge a histogram shipped as `pairs()` plus its count, sum, min and max."""
        b = self.buckets
        for k in range(0, len(pairs) - 1, 2):
            i = int(pairs[k])
            b[i] = b.get(i, 0) + int(pairs[k + 1])
        self.n += n
        self.total += total
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    def pairs(self) -> list[int]:
        """The buckets as a flat [index, count, index, count, ...] list, by index (a compact message)."""
        out: list[int] = []
        for i in sorted(self.buckets):
            out.append(i)
            out.append(self.buckets[i])
        return out

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile with numpy's default (linear) interpolation between ranks, over the
        buckets' read-back values, clamped to the exact min and max: within RELATIVE_ERROR of
        what numpy gives over the raw values."""
        return quantile_from(self.buckets.items(), self.n, q, self.min, self.max)


def quantile_from(buckets: Iterable[tuple[int, int]], n: int, q: float,
                  lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """`Histogram.quantile` over (bucket, count) pairs totalling n (shared with the analysis)."""
    if n <= 0:
        return None
    pos = min(max(q, 0.0), 1.0) * (n - 1)
    lo_rank, hi_rank = math.floor(pos), math.ceil(pos)
    v_lo = v_hi = None
    seen = 0
    for i, c in sorted(buckets):
        seen += c
        if v_lo is None and seen > lo_rank:
            v_lo = bucket_value(i)
        if seen > hi_rank:
            v_hi = bucket_value(i)
            break
    if v_lo is None or v_hi is None:  # counts short of n: read the last bucket
        return None if v_lo is None else min(max(v_lo, lo), hi)
    if lo_rank == 0 and math.isfinite(lo):
        v_lo = lo  # the lowest rank is the exact minimum
    if hi_rank == n - 1 and math.isfinite(hi):
        v_hi = hi  # the highest rank is the exact maximum
        if lo_rank == hi_rank:
            v_lo = hi
    v = v_lo + (v_hi - v_lo) * (pos - lo_rank)
    return min(max(v, lo), hi)


__all__ = ["BASE", "MAX_BUCKET", "MAX_LATENCY_MS", "MIN_MS", "RELATIVE_ERROR", "Histogram", "bucket_of", "bucket_value", "quantile_from"]
