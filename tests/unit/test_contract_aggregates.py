"""The ground of issue 11: histogram error bound, exact aggregate merges, the row policy, delivery at receivers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.aggregate import AGG_COLUMNS, AggKey, Aggregator
from contract.delivery import Membership, Receipts
from contract.histogram import MIN_MS, RELATIVE_ERROR, Histogram, bucket_of, bucket_value
from contract.rowpolicy import RowClass, RowPolicy, RowPolicyConfig, classify
from contract.rows import make_row

latencies = st.floats(min_value=MIN_MS, max_value=8.64e7, allow_nan=False, allow_infinity=False)


@given(latencies)
def test_bucket_reads_back_within_the_stated_error(v: float) -> None:
    assert abs(bucket_value(bucket_of(v)) - v) <= RELATIVE_ERROR * v * (1 + 1e-9)


def test_sub_resolution_values_read_back_as_zero_and_buckets_are_bounded() -> None:
    assert bucket_of(0.0) == 0 and bucket_of(-5.0) == 0 and bucket_value(0) == 0.0
    assert bucket_of(8.64e7) < 1300  # 24 h in ms


@given(st.lists(latencies, min_size=1, max_size=300), st.sampled_from([0.0, 0.5, 0.95, 0.99, 1.0]))
def test_quantiles_within_error_of_numpy(values: list[float], q: float) -> None:
    h = Histogram()
    for v in values:
        h.add(v)
    want = float(np.quantile(values, q))
    got = h.quantile(q)
    assert got is not None
    assert abs(got - want) <= RELATIVE_ERROR * want * (1 + 1e-9) + 1e-12


def test_merged_histograms_equal_one_histogram_of_all_values() -> None:
    rnd = random.Random(7)
    values = [rnd.lognormvariate(2, 1.5) for _ in range(5000)]
    whole, parts = Histogram(), [Histogram() for _ in range(4)]
    for i, v in enumerate(values):
        whole.add(v)
        parts[i % 4].add(v)
    merged = Histogram()
    for p in parts:
        merged.merge(p)
    assert merged.buckets == whole.buckets and merged.n == whole.n
    assert merged.min == whole.min and merged.max == whole.max
    assert merged.quantile(0.95) == whole.quantile(0.95)
    assert math.isclose(merged.total, whole.total)


def _rows(n: int) -> list[dict]:
    rnd = random.Random(3)
    out = []
    for i in range(n):
        ok = rnd.random() > 0.1
        out.append(make_row(rnd.choice(["ack", "ping", "broadcast_recv"]), ts=1000.0 + i / 100, user=f"u{i % 7}",
                            node=f"n{i % 3}", latency_ms=rnd.random() * 50 if rnd.random() > 0.2 else None,
                            ok=1 if ok else 0, error_kind="" if ok else "timeout"))
    return out


def test_aggregates_shipped_and_merged_keep_exact_counts() -> None:
    rows = _rows(3000)
    workers = [Aggregator() for _ in range(3)]
    for i, r in enumerate(rows):
        workers[i % 3].add_row(r)
    master = Aggregator()
    for w in workers:
        wire = w.drain()
        assert all(len(cell) == len(AGG_COLUMNS) for cell in wire)
        assert master.merge_wire(wire) == 0
    assert master.events == len(rows)
    by_step: dict[str, int] = {}
    for key, cell in master.cells.items():
        by_step[key.step] = by_step.get(key.step, 0) + cell.count
    for step in ("ack", "ping", "broadcast_recv"):
        assert by_step[step] == sum(1 for r in rows if r["step"] == step)
    lat_n = sum(c.hist.n for c in master.cells.values())
    assert lat_n == sum(1 for r in rows if r["latency_ms"] is not None)


def test_malformed_wire_cells_are_counted_not_merged() -> None:
    a = Aggregator()
    a.add(10.2, "ack", "ack:echo", "n1", "websocket", 1, "", 3.0)
    good = a.drain()[0]
    bad_hist = list(good)
    bad_hist[-1] = [5, 99]  # histogram does not add up to lat_count
    m = Aggregator()
    assert m.merge_wire([good, ["x"], bad_hist, [*good[:7], -1, *good[8:]], None]) == 4  # type: ignore[list-item]
    assert m.events == 1 and list(m.cells) == [AggKey(10, "ack", "ack:echo", "n1", "websocket", 1, "")]


def test_failed_steps_keep_their_kind_and_ok_steps_none() -> None:
    a = Aggregator()
    a.add(1.0, "connect", "connect", "n1", "polling", 0, "session_unknown", None)
    a.add(1.5, "connect", "connect", "n1", "polling", 1, "ignored", 2.0)
    keys = set(a.cells)
    assert AggKey(1, "connect", "connect", "n1", "polling", 0, "session_unknown") in keys
    assert AggKey(1, "connect", "connect", "n1", "polling", 1, "") in keys


# -- row policy ---------------------------------------------------------------------------------------
def test_classes() -> None:
    assert classify("connect", True) is RowClass.STATE
    assert classify("join", False) is RowClass.STATE
    assert classify("connect", False) is RowClass.FAILURE
    assert classify("broadcast_recv", True) is RowClass.SAMPLED
    assert classify("my_scenario_step", True) is RowClass.SAMPLED


def test_sampled_rows_first_n_then_one_in_k_deterministically() -> None:
    cfg = RowPolicyConfig(sample_rate=0.1, first_n=3)
    rows = [make_row("ack", ts=1.0 + i, user=f"u{i % 4}") for i in range(4000)]
    p1, p2 = RowPolicy(cfg), RowPolicy(cfg)
    kept = [p1.keep(r) for r in rows]
    again = [p2.keep(r) for r in rows]
    assert kept == again  # deterministic
    per_user = 1000
    expect = 4 * (3 + math.ceil((per_user - 3) / 10))
    assert abs(sum(kept) - expect) <= 4
    for u in range(4):
        assert all(kept[u + 4 * i] for i in range(3))  # each user's first rows


def test_state_rows_always_failures_budgeted_with_first_of_each_kind_kept() -> None:
    p = RowPolicy(RowPolicyConfig(sample_rate=0.0, first_n=0, failure_rows_per_s=5))
    assert p.keep(make_row("connect", ts=1.0, user="a", eio_sid="s1"))
    fails = [make_row("poll", ts=2.0, user=f"u{i % 50}", ok=0, error_kind="session_unknown") for i in range(500)]
    kept = sum(p.keep(r) for r in fails)
    assert kept == 50 + 5  # the first of each user's kind, then the budget of this second
    assert p.failures_over_budget == 500 - kept
    # the end of a connected session is kept even over budget; a never-connected one is a failure
    assert p.keep(make_row("disconnect", ts=2.0, user="a", eio_sid="s1", ok=0, error_kind="transport_closed"))
    assert p.keep(make_row("disconnect", ts=2.0, user="b", eio_sid="s9", ok=0, error_kind="transport_closed"))
    assert not p.keep(make_row("disconnect", ts=2.0, user="b", eio_sid="s9", ok=0, error_kind="transport_closed"))
    assert not p.keep(make_row("ack", ts=3.0, user="a"))  # rate 0, first_n 0
    assert p.keep(make_row("leave", ts=3.0, user="a", ok=0, error_kind="timeout"))


def test_log_all_keeps_everything() -> None:
    p = RowPolicy(RowPolicyConfig(sample_rate=0.0, first_n=0, failure_rows_per_s=0, log_all=True))
    rows = _rows(500)
    assert all(p.keep(r) for r in rows)


@pytest.mark.parametrize("bad", [{"sample_rate": 1.5}, {"sample_rate": -0.1}, {"first_n": -1}, {"failure_rows_per_s": -2}])
def test_policy_config_refuses_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        RowPolicyConfig(**bad)


# -- delivery at receivers -----------------------------------------------------------------------------
def test_membership_follows_the_one_definition() -> None:
    m = Membership()
    m.join("a", "r", 10.0)
    m.join("a", "r", 11.0)  # already a member: nothing new
    m.leave("a", "r", 20.0)
    m.join("a", "r", 30.0)
    m.disconnect("a", 40.0)
    assert not m.is_member("a", "r", 9.99)
    assert m.is_member("a", "r", 10.0) and m.is_member("a", "r", 19.99)
    assert not m.is_member("a", "r", 20.0) and not m.is_member("a", "r", 25.0)
    assert m.is_member("a", "r", 30.0) and not m.is_member("a", "r", 40.0)
    m.join("b", "r", 5.0)
    assert m.count("r", 15.0) == 2 and m.count("r", 25.0) == 1


def test_receipts_count_distinct_members_at_send_time() -> None:
    rc = Receipts()
    for r in (make_row("join", ts=10.0, user="a", room="r"), make_row("join", ts=10.0, user="b", room="r"),
              make_row("join", ts=50.0, user="late", room="r")):
        rc.on_row(r)
    recv = [make_row("broadcast_recv", ts=20.5, user=u, room="r", msg_id="m1", latency_ms=500.0)
            for u in ("a", "b", "a", "late")]  # a twice; late joined after the send
    for r in recv:
        rc.on_row(r)
    assert rc.drain() == {"m1": 2}
    assert rc.duplicates == 1 and rc.not_members == 1
    assert rc.drain() == {}


def _cell(**change: object) -> list:
    a = Aggregator()
    a.add(1_700_000_000.25, "ack", "ack:echo", "n1", "websocket", 1, "", 3.0)
    w = a.drain()[0]
    names = list(AGG_COLUMNS)
    for k, v in change.items():
        w[names.index(k)] = v
    return w


@pytest.mark.parametrize("change", [
    {"second": math.inf}, {"second": 2**63}, {"second": -5}, {"second": 1.5}, {"second": True},
    {"count": math.inf}, {"count": 2**60}, {"count": math.nan}, {"lat_sum_ms": math.inf},
    {"max_ts": 1_700_000_005.0}, {"max_ts": math.nan}, {"hist": [2**31, 1]}, {"hist": [5000, 1]},
    {"hist": [math.inf, 1]}, {"hist": "ab"}, {"lat_min_ms": -1.0}, {"lat_max_ms": 1e306},
])
def test_values_no_process_could_ship_are_refused_not_overflowed(change: dict) -> None:
    """A future second, an inf or a bucket past 24 h would overflow the live tab or the Parquet columns."""
    m = Aggregator()
    assert m.merge_wire([_cell(**change)]) == 1 and m.events == 0
    assert m.merge_wire([_cell()]) == 0 and m.events == 1


def test_latencies_past_a_day_count_the_step_not_the_latency() -> None:
    a = Aggregator()
    for v in (math.inf, math.nan, 1e306, -1.0, 25 * 3600 * 1000.0, 5.0):
        a.add(10.0, "ack", "ack", "", "", 1, "", v)
    (cell,) = a.cells.values()
    assert cell.count == 6 and cell.hist.n == 1
    h = Histogram()
    h.add(1e306)  # a Histogram fed directly still reads back (top bucket), never overflows
    assert h.quantile(0.5) is not None and bucket_value(10**6) == bucket_value(bucket_of(8.64e7))
