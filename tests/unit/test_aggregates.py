"""analysis/aggregates.py: the vectorised cells agree with contract.aggregate/histogram, value for value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import aggregates as A
from contract import histogram as H
from contract.aggregate import Aggregator
from contract.rows import make_row

T0 = 1_760_000_000.0


def test_bucket_rule_is_the_contracts() -> None:
    rng = np.random.default_rng(1)
    ms = np.concatenate([rng.lognormal(1.0, 3.0, 20_000), [0.0, -1.0, H.MIN_MS, 0.000999, 1.0, 86_400_000.0],
                         H.MIN_MS * H.BASE ** np.arange(0, 1300, 7, dtype=float)])
    assert A.bucket_of(ms).tolist() == [H.bucket_of(float(x)) for x in ms]
    idx = np.arange(0, 1400)
    assert np.allclose(A.bucket_value(idx), [H.bucket_value(int(i)) for i in idx], rtol=1e-15, atol=0)


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ok = int(rng.random() > 0.1)
        step = str(rng.choice(["ack", "connect", "broadcast_recv", "emit"]))
        lat = None if step == "emit" or rng.random() < 0.05 else float(rng.gamma(2.0, 5.0))
        rows.append(dict(make_row(step, ts=T0 + rng.random() * 20, node=str(rng.choice(["n1", "n2", ""])),
                                  transport="websocket", ok=ok, latency_ms=lat,
                                  error_kind="" if ok else str(rng.choice(["timeout", "session_unknown"])))))
    return rows


def test_cells_from_rows_are_the_workers_cells() -> None:
    rows = _rows(3000)
    agg = Aggregator()
    for r in rows:
        agg.add_row(r)
    want = {(int(w[0]), *w[1:7]): (w[7], w[8], w[9], w[10], w[11], w[13]) for w in agg.drain()}
    df = pd.DataFrame(rows)
    df["config"] = "c"
    cells = A.aggregates_from_rows(df)
    assert len(cells) == len(want) and int(cells["count"].sum()) == len(rows)
    for r in cells.itertuples(index=False):
        key = (int(r.second), str(r.step), str(r.name), str(r.node), str(r.transport), int(r.ok), str(r.error_kind))
        n, lat_n, lat_sum, lo, hi, pairs = want[key]
        assert (r.count, r.lat_count) == (n, lat_n)
        assert r.lat_sum_ms == pytest.approx(lat_sum)
        if lat_n:
            assert (r.lat_min_ms, r.lat_max_ms) == (lo, hi)
        got = [int(x) for bc in zip(r.hist_bucket, r.hist_count, strict=True) for x in bc]
        assert got == pairs


def test_merged_percentiles_are_the_contracts_and_within_one_percent_of_numpy() -> None:
    rows = _rows(5000, seed=3)
    df = pd.DataFrame(rows)
    df["config"] = "c"
    cells = A.aggregates_from_rows(df)
    ok = cells[(cells["ok"] == 1) & (cells["lat_count"] > 0)]
    merged = A.merge(ok, ["step", "node"])
    qs = [0.0, 0.5, 0.95, 0.99, 1.0]
    got = A.quantiles(merged, qs)
    raw = df[(df["ok"] == 1) & df["latency_ms"].notna()]
    for i, m in enumerate(merged.itertuples(index=False)):
        h = H.Histogram()
        vals = raw[(raw["step"] == m.step) & (raw["node"] == m.node)]["latency_ms"].to_numpy(dtype=float)
        for v in vals:
            h.add(float(v))
        assert m.lat_count == len(vals) and m.count >= len(vals)
        for j, q in enumerate(qs):
            assert got[i, j] == pytest.approx(h.quantile(q), rel=1e-12)
            assert got[i, j] == pytest.approx(float(np.quantile(vals, q)), rel=H.RELATIVE_ERROR)


def test_merge_of_split_cells_is_the_merge_of_the_whole() -> None:
    rows = _rows(2000, seed=5)
    a, b = Aggregator(), Aggregator()
    for i, r in enumerate(rows):
        (a if i % 3 else b).add_row(r)
    whole = Aggregator()
    for r in rows:
        whole.add_row(r)

    def frame(cells: list[list]) -> pd.DataFrame:
        f = pd.DataFrame([[*w[:-1], np.array(w[-1][0::2]), np.array(w[-1][1::2])] for w in cells],
                         columns=list(A.CELL_COLUMNS))
        f["config"] = "c"
        return f

    split = A.merge(pd.concat([frame(a.drain()), frame(b.drain())], ignore_index=True), ["step"])
    one = A.merge(frame(whole.drain()), ["step"])
    assert split["count"].tolist() == one["count"].tolist()
    np.testing.assert_array_equal(A.quantiles(split, [0.5, 0.95]), A.quantiles(one, [0.5, 0.95]))
    for x, y in zip(split["hist_count"], one["hist_count"], strict=True):
        assert x.tolist() == y.tolist()


def test_empty_and_short_histograms_read_as_nan() -> None:
    f = pd.DataFrame({"config": ["c", "c"], "step": ["ack", "emit"], "count": [3, 2], "lat_count": [3, 0],
                      "lat_sum_ms": [3.0, 0.0], "lat_min_ms": [1.0, math.nan], "lat_max_ms": [1.0, math.nan],
                      "max_ts": [T0, T0], "hist_bucket": [np.array([350]), np.array([], dtype=np.int64)],
                      "hist_count": [np.array([2]), np.array([], dtype=np.int64)]})  # 2 counted, 3 claimed
    q = A.quantiles(f, [0.5])
    assert np.isnan(q).all()
    assert len(A.aggregates_from_rows(pd.DataFrame(columns=["ts", "step", "ok", "latency_ms", "config"]))) == 0


def test_time_bins_start_at_the_first_second() -> None:
    f = pd.DataFrame({"config": ["c", "c", "d"], "second": [100, 104, 7]})
    assert A.time_bins(f, {"c": 100.7, "d": 7.0}, 2.0).tolist() == [0.0, 4.0, 0.0]
