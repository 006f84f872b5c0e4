"""Per-second aggregate cells (contract/aggregate.py) as frames: derive, merge, read percentiles.

Why: counts and latency percentiles at scale come from cells, not rows (issue 11). A schema-2 run
stores the cells; a schema-1 run (events.csv, every row) has them derived here from its rows by
the same rule (`aggregates_from_rows`), so every figure has one code path whatever the run's
age. Counts are exact; percentiles are read from merged histograms with the semantics of
contract.histogram.quantile_from (numpy's linear interpolation over bucket midpoints, the exact
min and max at the ends), within contract.histogram.RELATIVE_ERROR of numpy over the raw values.

A cells frame has the columns of contract.eventfiles.AGGREGATE_TYPES (hist_bucket and hist_count
as object columns holding one int64 array per cell) plus `config` and the config labels. One key
may appear in several cells (a stream's batches): `merge` sums them like any other grouping.
Pure functions, vectorised with numpy: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from contract.config import LABEL_KEYS
from contract.histogram import BASE, MAX_BUCKET, MAX_LATENCY_MS, MIN_MS

KEY: tuple[str, ...] = ("second", "step", "name", "node", "transport", "ok", "error_kind")
"""contract.aggregate.AggKey's fields: the key of a cell as the worker makes it."""
VALUES: tuple[str, ...] = ("count", "lat_count", "lat_sum_ms", "lat_min_ms", "lat_max_ms", "max_ts",
                           "hist_bucket", "hist_count")
CELL_COLUMNS: tuple[str, ...] = (*KEY, *VALUES)
_LN_MIN = math.log(MIN_MS)
_INV_LN_BASE = 1.0 / math.log(BASE)
_NB = 1 << 21
"""Bucket indexes stay far below this (24 h is bucket 1,272): (group, bucket) packs into one int64."""
_TEXT = ("step", "name", "node", "transport", "error_kind")


def bucket_of(ms: np.ndarray) -> np.ndarray:
    """contract.histogram.bucket_of over an array (values below MIN_MS, and negatives, in bucket 0)."""
    ms = np.asarray(ms, dtype=float)
    out = np.zeros(ms.shape, dtype=np.int64)
    pos = ms >= MIN_MS
    top = ms >= MAX_LATENCY_MS  # also inf: the top bucket, as the contract's
    out[pos & ~top] = ((np.log(ms[pos & ~top]) - _LN_MIN) * _INV_LN_BASE).astype(np.int64) + 1
    out[top] = MAX_BUCKET
    return out


def bucket_value(i: np.ndarray) -> np.ndarray:
    """contract.histogram.bucket_value over an array: a bucket's midpoint, 0 for bucket 0."""
    i = np.asarray(i, dtype=np.int64)
    low = MIN_MS * np.power(BASE, np.clip(i - 1, 0, MAX_BUCKET - 1).astype(float))
    return np.where(i <= 0, 0.0, low * (1 + BASE) / 2)


def is_cells(frame: pd.DataFrame) -> bool:
    """A cells frame (rather than event rows)?"""
    return "count" in frame.columns and "hist_bucket" in frame.columns


def empty_cells(extra: Sequence[str] = ()) -> pd.DataFrame:
    """A cells frame with no cell (typed), plus `extra` text columns (config and its labels)."""
    cols: dict[str, pd.Series] = {c: pd.Series(dtype="category") for c in extra}
    cols.update({"second": pd.Series(dtype="int64"), **{c: pd.Series(dtype="category") for c in _TEXT},
                 "ok": pd.Series(dtype="int8"), "count": pd.Series(dtype="int64"),
                 "lat_count": pd.Series(dtype="int64"), "lat_sum_ms": pd.Series(dtype="float64"),
                 "lat_min_ms": pd.Series(dtype="float64"), "lat_max_ms": pd.Series(dtype="float64"),
                 "max_ts": pd.Series(dtype="float64"), "hist_bucket": pd.Series(dtype=object),
                 "hist_count": pd.Series(dtype=object)})
    return pd.DataFrame(cols)[[*extra, *CELL_COLUMNS]]


def _codes(frame: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """(group code per row, one row of key values per group in code order)."""
    if not by:
        return np.zeros(len(frame), dtype=np.int64), pd.DataFrame(index=[0])
    g = frame.groupby(list(by), observed=True, sort=True, dropna=False)
    codes = g.ngroup().to_numpy(dtype=np.int64)
    first = np.unique(codes, return_index=True)[1]
    keys = frame.iloc[first][list(by)].reset_index(drop=True)
    return codes, keys


def _split(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """An object array of n_groups arrays: `values` cut where the (sorted) group changes."""
    out = np.empty(n_groups, dtype=object)
    bounds = np.searchsorted(group, np.arange(n_groups + 1), side="left")
    for k in range(n_groups):
        out[k] = values[bounds[k]:bounds[k + 1]]
    return out


def _hist_long(group: np.ndarray, bucket: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, ...]:
    """(group, bucket, count) summed per (group, bucket), sorted by group then bucket."""
    if not len(group):
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    packed, inv = np.unique(group * _NB + bucket, return_inverse=True)
    counts = np.bincount(inv.ravel(), weights=count.astype(float), minlength=len(packed)).astype(np.int64)
    return packed // _NB, packed % _NB, counts


def aggregates_from_rows(events: pd.DataFrame, extra: Sequence[str] | None = None) -> pd.DataFrame:
    """The cells a worker would have made of these rows (schema-1 runs: one code path for both).

    extra: columns carried as part of the key (default: `config` and any config label present).
    A row's latency enters its cell's histogram when 0 <= latency <= 24 h (contract.aggregate's rule);
    error_kind is "" on ok rows.
    """
    if extra is None:
        extra = [c for c in ("config", *LABEL_KEYS) if c in events.columns]
    extra = list(extra)
    if not len(events):
        return empty_cells(extra)
    ts = pd.to_numeric(events["ts"], errors="coerce").to_numpy(dtype=float)
    ok = (pd.to_numeric(events["ok"], errors="coerce").to_numpy(dtype=float) == 1).astype(np.int8)
    keyed = pd.DataFrame({c: events[c] for c in extra}, index=events.index)
    keyed["second"] = np.floor(ts).astype(np.int64)
    for c in _TEXT:
        keyed[c] = _text(events, c)
    if (keyed["name"] == "").any():  # a row without a name counts under its step (Aggregator.add_row)
        keyed["name"] = keyed["name"].astype(str).where(keyed["name"] != "", keyed["step"].astype(str))
        keyed["name"] = keyed["name"].astype("category")
    keyed["ok"] = ok
    kinds = keyed["error_kind"]
    if ((ok == 1) & (kinds != "").to_numpy()).any():
        kinds = kinds.cat.add_categories([""]) if "" not in kinds.cat.categories else kinds
        keyed["error_kind"] = kinds.mask(ok == 1, "")
    keyed = keyed.reset_index(drop=True)
    codes, keys = _codes(keyed, [*extra, *KEY])
    n = len(keys)
    lat = pd.to_numeric(events["latency_ms"], errors="coerce").to_numpy(dtype=float) \
        if "latency_ms" in events.columns else np.full(len(events), np.nan)
    valid = np.isfinite(lat) & (lat >= 0) & (lat <= MAX_LATENCY_MS)
    lc, lv = codes[valid], lat[valid]
    out = keys
    out["count"] = np.bincount(codes, minlength=n).astype(np.int64)
    out["lat_count"] = np.bincount(lc, minlength=n).astype(np.int64)
    out["lat_sum_ms"] = np.bincount(lc, weights=lv, minlength=n)
    out["lat_min_ms"] = pd.Series(lv).groupby(lc).min().reindex(range(n)).to_numpy()
    out["lat_max_ms"] = pd.Series(lv).groupby(lc).max().reindex(range(n)).to_numpy()
    out["max_ts"] = pd.Series(ts).groupby(codes).max().reindex(range(n)).to_numpy()
    g, b, c = _hist_long(lc, bucket_of(lv), np.ones(len(lc), dtype=np.int64))
    out["hist_bucket"] = _split(b, g, n)
    out["hist_count"] = _split(c, g, n)
    for col in (*extra, *_TEXT):
        out[col] = out[col].astype("category")
    return out[[*extra, *CELL_COLUMNS]]


def _text(events: pd.DataFrame, c: str) -> pd.Series:
    """A text column as a categorical ("" where missing)."""
    if c not in events.columns:
        return pd.Series("", index=events.index, dtype="category")
    col = events[c]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.fillna("").astype(str).astype("category")
    elif col.isna().any():
        col = (col.cat.add_categories([""]) if "" not in col.cat.categories else col).fillna("")
    return col


def _long(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every histogram entry of the cells: (cell position, bucket, count)."""
    hb, hc = cells["hist_bucket"].to_numpy(), cells["hist_count"].to_numpy()
    lens = np.fromiter((len(x) for x in hb), dtype=np.int64, count=len(hb))
    if not lens.sum():
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    pos = np.repeat(np.arange(len(hb), dtype=np.int64), lens)
    return (pos, np.concatenate([np.asarray(x, dtype=np.int64) for x in hb]),
            np.concatenate([np.asarray(x, dtype=np.int64) for x in hc]))


def merge(cells: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Cells summed by `by`: counts, latency counts and sums added, min/max/max_ts kept, histograms
    added bucket by bucket. One row per group (groups in sorted key order), the cells' columns
    minus the keys not in `by`."""
    by = list(by)
    if not len(cells):
        return empty_cells()[[c for c in VALUES]].assign(**{c: pd.Series(dtype=object) for c in by})[[*by, *VALUES]]
    codes, out = _codes(cells, by)
    n = len(out)
    lat_n = cells["lat_count"].to_numpy(dtype=np.int64)
    has = lat_n > 0
    out["count"] = np.bincount(codes, weights=cells["count"].to_numpy(dtype=float), minlength=n).astype(np.int64)
    out["lat_count"] = np.bincount(codes, weights=lat_n.astype(float), minlength=n).astype(np.int64)
    out["lat_sum_ms"] = np.bincount(codes[has], weights=cells["lat_sum_ms"].to_numpy(dtype=float)[has], minlength=n)
    out["lat_min_ms"] = pd.Series(cells["lat_min_ms"].to_numpy(dtype=float)[has]).groupby(codes[has]).min() \
        .reindex(range(n)).to_numpy()
    out["lat_max_ms"] = pd.Series(cells["lat_max_ms"].to_numpy(dtype=float)[has]).groupby(codes[has]).max() \
        .reindex(range(n)).to_numpy()
    out["max_ts"] = pd.Series(cells["max_ts"].to_numpy(dtype=float)).groupby(codes).max().reindex(range(n)).to_numpy()
    pos, b, c = _long(cells)
    g, b, c = _hist_long(codes[pos], b, c)
    out["hist_bucket"] = _split(b, g, n)
    out["hist_count"] = _split(c, g, n)
    return out


def quantiles(merged: pd.DataFrame, qs: Sequence[float]) -> np.ndarray:
    """Percentiles of each merged row's histogram, shape (rows, len(qs)); NaN where lat_count is 0.

    contract.histogram.quantile_from, vectorised: rank pos = q (n - 1) between its floor and ceil
    ranks, each read as its bucket's midpoint, the lowest rank as the exact min and the highest as
    the exact max, the result clamped to [min, max].
    """
    out = np.full((len(merged), len(qs)), np.nan)
    if not len(merged):
        return out
    pos_, b, c = _long(merged)
    n = merged["lat_count"].to_numpy(dtype=np.int64)
    lo = merged["lat_min_ms"].to_numpy(dtype=float)
    hi = merged["lat_max_ms"].to_numpy(dtype=float)
    lo = np.where(np.isnan(lo), -np.inf, lo)
    hi = np.where(np.isnan(hi), np.inf, hi)
    held = np.bincount(pos_, weights=c.astype(float), minlength=len(merged)).astype(np.int64)
    rows = np.flatnonzero((n > 0) & (held == n))  # a histogram short of its count cannot be read
    if not len(rows):
        return out
    cum = np.cumsum(c)
    base = np.concatenate([[0], np.cumsum(held)[:-1]])[rows]
    nn = n[rows]
    for j, q in enumerate(qs):
        p = min(max(float(q), 0.0), 1.0) * (nn - 1)
        lr, hr = np.floor(p).astype(np.int64), np.ceil(p).astype(np.int64)
        v_lo = bucket_value(b[np.searchsorted(cum, base + lr, side="right")])
        v_hi = bucket_value(b[np.searchsorted(cum, base + hr, side="right")])
        lo_r, hi_r = lo[rows], hi[rows]
        v_lo = np.where((lr == 0) & np.isfinite(lo_r), lo_r, v_lo)
        at_max = (hr == nn - 1) & np.isfinite(hi_r)
        v_hi = np.where(at_max, hi_r, v_hi)
        v_lo = np.where(at_max & (lr == hr), hi_r, v_lo)
        out[rows, j] = np.clip(v_lo + (v_hi - v_lo) * (p - lr), lo_r, hi_r)
    return out


def time_bins(cells: pd.DataFrame, t0: dict[str, float], bucket_s: float) -> np.ndarray:
    """Each cell's time bucket: seconds since the start of its config's first second, floored to bucket_s.

    Why the first second and not the first ts: a cell knows its second, not its rows' ts; binning
    from floor(t0) puts every row of a cell in the bucket its second is in (exact for whole-second
    buckets).
    """
    origin = cells["config"].astype(str).map({k: math.floor(v) for k, v in t0.items()}).to_numpy(dtype=float)
    return np.floor((cells["second"].to_numpy(dtype=float) - origin) / bucket_s) * bucket_s


def first_ts(frame: pd.DataFrame) -> dict[str, float]:
    """Each config's first event time from rows (ts) or cells (second)."""
    if not len(frame):
        return {}
    col = "second" if is_cells(frame) else "ts"
    return {str(k): float(v) for k, v in frame.groupby("config", observed=True)[col].min().items()}


__all__ = ["CELL_COLUMNS", "KEY", "VALUES", "aggregates_from_rows", "bucket_of", "bucket_value", "empty_cells",
           "first_ts", "is_cells", "merge", "quantiles", "time_bins"]
