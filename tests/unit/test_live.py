"""LiveStats against small hand-made row lists, whose right answers are worked out by hand.

Rows go through `LiveStats.add`, the same producer -> cells / state rows / receipts / ledger path a
worker and the master run (issue 11). Latency quantiles come from merged histograms (1 % error).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from contract.histogram import RELATIVE_ERROR, Histogram
from contract.rows import make_row
from locustfiles.sio.live import DELIVERY_GRACE_S, LiveStats

T0 = 1_000_000.0


def R(step: str, t: float, **kw):  # short helper for readable tables
    return make_row(step, ts=T0 + t, **kw)


def test_connections_per_node_current_and_total() -> None:
    s = LiveStats()
    s.add_many([
        R("connect", 0, user="a", eio_sid="s1", node="n1"),
        R("connect", 0.1, user="b", eio_sid="s2", node="n2"),
        R("connect", 0.2, user="c", eio_sid="s3", node="n1"),
        R("disconnect", 1, user="a", eio_sid="s1", node="n1"),
        R("connect", 2, user="a", eio_sid="s4", node="n2"),  # a reconnects elsewhere
        R("connect", 2.5, user="d", eio_sid="s5", node="n3", ok=0, error_kind="timeout"),  # failed: not counted
        R("disconnect", 3, user="c", node="n1"),  # no eio_sid: closes c's sessions
    ])
    snap = s.snapshot()
    nodes = {n["node"]: n for n in snap["nodes"]}
    assert nodes["n1"] == {"node": "n1", "connected_now": 0, "connects_total": 2}
    assert nodes["n2"] == {"node": "n2", "connected_now": 2, "connects_total": 2}
    assert "n3" not in nodes
    assert snap["totals"]["connected_now"] == 2
    assert snap["totals"]["connects"] == 4
    assert snap["totals"]["users"] == 4
    assert snap["totals"]["disconnects"] == 2


def test_failures_by_step_and_kind_switches_and_reconnects() -> None:
    s = LiveStats()
    s.add_many([
        R("poll", 0, user="a", ok=0, error_kind="session_unknown"),
        R("poll", 1, user="b", ok=0, error_kind="session_unknown"),
        R("upgrade", 2, user="a", ok=0, error_kind="upgrade_failed"),
        R("poll", 3, user="a", ok=0, error_kind="http_502"),
        R("node_switch", 4, user="a", node="n2", error="n1->n2"),
        R("node_switch", 5, user="b", node="n2", error="n1->n2"),
        R("node_switch", 6, user="b", node="n3", error="n2->n3"),
        R("reconnect", 7, user="a", ok=1, latency_ms=1000.0),
        R("reconnect", 8, user="b", ok=1, latency_ms=3000.0),
        R("reconnect", 9, user="c", ok=0, error_kind="connection_refused"),
    ])
    snap = s.snapshot()
    assert snap["failures"][0] == {"step": "poll", "error_kind": "session_unknown", "count": 2}
    assert {(f["step"], f["error_kind"]): f["count"] for f in snap["failures"]} == {
        ("poll", "session_unknown"): 2, ("upgrade", "upgrade_failed"): 1, ("poll", "http_502"): 1,
        ("reconnect", "connection_refused"): 1}
    assert snap["totals"]["failures"] == 5
    assert snap["node_switches"] == [{"switch": "n1->n2", "count": 2}, {"switch": "n2->n3", "count": 1}]
    assert snap["reconnects"]["attempts"] == 3 and snap["reconnects"]["ok"] == 2 and snap["reconnects"]["failed"] == 1
    assert snap["reconnects"]["latency_mean_ms"] == pytest.approx(2000.0)


def _chat_rows() -> list:
    """Room r: a, b, c join; m1 sent by a reaches a, b (c missed it: an adapter-less cluster).
    b leaves; m2 reaches a only (b is no member any more, its receipt must not count).
    d joins late; its receipt of m1 must not count. m3 is within the grace window of the end."""
    return [
        R("join", 0.0, user="a", room="r"),
        R("join", 0.1, user="b", room="r"),
        R("join", 0.2, user="c", room="r"),
        R("join", 0.3, user="x", room="other"),
        R("join", 0.4, user="e", room="r", ok=0, error_kind="timeout"),  # failed join: never a member
        R("broadcast_send", 1.0, user="a", room="r", msg_id="m1"),
        R("broadcast_recv", 1.01, user="a", room="r", msg_id="m1", latency_ms=10.0),
        R("broadcast_recv", 1.02, user="b", room="r", msg_id="m1", latency_ms=20.0),
        R("join", 1.5, user="d", room="r"),
        R("broadcast_recv", 1.6, user="d", room="r", msg_id="m1", latency_ms=600.0),
        R("leave", 2.0, user="b", room="r"),
        R("disconnect", 2.5, user="c"),
        R("broadcast_send", 3.0, user="a", room="r", msg_id="m2"),
        R("broadcast_recv", 3.01, user="a", room="r", msg_id="m2", latency_ms=10.0),
        R("broadcast_recv", 3.05, user="b", room="r", msg_id="m2", latency_ms=50.0),
        R("broadcast_send", 9.0, user="a", room="r", msg_id="m3"),
        R("ack", 10.0, user="a", latency_ms=1.0),
    ]


def test_broadcast_delivery_follows_the_one_definition() -> None:
    s = LiveStats()
    s.add_many(_chat_rows())
    d = s.snapshot()["delivery"]
    # m1: members a,b,c -> expected 3, delivered 2 (d was no member at send time).
    # m2: members a,d (b left, c disconnected) -> expected 2, delivered 1 (a).
    # m3: at 9.0, within 2 s of the last row (10.0): excluded.
    assert d["expected"] == 5
    assert d["delivered"] == 3
    assert d["ratio"] == pytest.approx(3 / 5)
    assert d["sends_counted"] == 2 and d["sends_in_grace"] == 1
    # latency over every receipt row, linear interpolation as numpy's default
    lat = [10.0, 20.0, 600.0, 10.0, 50.0]
    assert d["latency_p95_ms"] == pytest.approx(np.percentile(lat, 95), rel=RELATIVE_ERROR)
    assert d["receipts"] == 5


def _arrival(rows: list, workers: int, rng: random.Random) -> list:
    """Rows of several workers as the master sees them: each worker ships its rows of a second as one
    batch, in order, up to 2 s late; batches of different workers interleave at random (a receipt may
    come before its send, a join after a send)."""
    batches: dict[tuple[int, int], list] = {}
    for r in rows:
        batches.setdefault((sum(map(ord, r["user"])) % workers, int(r["ts"] - T0)), []).append(r)
    arrive: dict[tuple[int, int], float] = {}
    last = [0.0] * workers
    for w, sec in sorted(batches):
        last[w] = arrive[(w, sec)] = max(last[w], sec + rng.uniform(0, 2))
    return [r for key in sorted(batches, key=arrive.__getitem__) for r in batches[key]]


def test_delivery_is_the_same_in_any_arrival_order() -> None:
    """Workers ship batches independently: a receipt may arrive before its send, a join after it."""
    rows = _chat_rows()
    expected = LiveStats()
    expected.add_many(rows)
    want = expected.snapshot()["delivery"]
    rng = random.Random(7)
    for _ in range(20):
        s = LiveStats()
        s.add_many(_arrival(rows, 3, rng))
        got = s.snapshot()["delivery"]
        assert (got["expected"], got["delivered"], got["sends_counted"]) == (5, 3, 2)
        assert got["latency_p95_ms"] == pytest.approx(want["latency_p95_ms"])


def test_settled_sends_keep_their_counts_and_late_rows_are_counted() -> None:
    s = LiveStats(settle_s=5.0)
    s.add_many([
        R("join", 0, user="a", room="r"),
        R("join", 0, user="b", room="r"),
        R("broadcast_send", 1, user="a", room="r", msg_id="m1"),
        R("broadcast_recv", 1.1, user="a", room="r", msg_id="m1", latency_ms=5.0),
    ])
    # time moves on far beyond the settle horizon: m1 is folded into totals
    for i in range(30):
        s.add(R("ack", 2 + i, user="a", latency_ms=1.0))
    assert "m1" not in s.ledger.pending
    assert s.ledger.live_expected == 2 and s.ledger.live_delivered == 1
    # a receipt that shows up far too late is not silently mixed in
    s.add(R("broadcast_send", 1.5, user="b", room="r", msg_id="m0"))
    assert s.snapshot()["totals"]["late_rows_ignored"] == 1
    d = s.snapshot()["delivery"]
    assert (d["expected"], d["delivered"]) == (2, 1)


def test_equal_timestamps_join_after_leave_is_a_member() -> None:
    s = LiveStats()
    s.add_many([
        R("join", 0, user="a", room="r"),
        R("leave", 1, user="a", room="r"),
        R("join", 1, user="a", room="r"),
        R("broadcast_send", 1, user="a", room="r", msg_id="m"),
        R("ack", 10, user="a", latency_ms=1.0),
    ])
    assert s.is_member("a", "r", T0 + 1)
    assert s.snapshot()["delivery"]["expected"] == 1


def test_bad_rows_are_counted_not_raised() -> None:
    s = LiveStats()
    s.add({"step": "ack", "ts": "not a number"})
    s.add({"step": "ack", "ts": ""})
    s.add({"step": "broadcast_recv", "ts": T0, "ok": "1", "latency_ms": "abc", "msg_id": "q", "user": "u"})
    snap = s.snapshot()
    assert snap["totals"]["bad_rows"] == 2
    assert snap["totals"]["rows"] == 1
    assert snap["delivery"]["receipts"] == 0


def test_rows_read_back_from_csv_strings_count_the_same() -> None:
    """The master may also be fed rows parsed from events.csv (all strings)."""
    rows = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in _chat_rows()]
    s = LiveStats()
    s.add_many(rows)
    d = s.snapshot()["delivery"]
    assert (d["expected"], d["delivered"]) == (5, 3)


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_histogram_quantiles_match_numpy_within_the_stated_error(n: int) -> None:
    rng = random.Random(n)
    vals = [rng.expovariate(1 / 40) for _ in range(n)]
    h = Histogram()
    for v in vals:
        h.add(v)
    for p in (0.5, 0.95, 0.99):
        assert h.quantile(p) == pytest.approx(np.percentile(vals, p * 100), rel=RELATIVE_ERROR, abs=1e-3)
    assert Histogram().quantile(0.95) is None


def test_grace_constant_is_the_one_shared_definition() -> None:
    """Live stats and analysis must use the very same constant (rows.py), not two literals."""
    metrics = pytest.importorskip("analysis.metrics")
    from locustfiles.sio import live, rows
    assert live.DELIVERY_GRACE_S is rows.DELIVERY_GRACE_S
    assert metrics.DELIVERY_GRACE_S is rows.DELIVERY_GRACE_S
    assert DELIVERY_GRACE_S is rows.DELIVERY_GRACE_S
    assert metrics.broadcast_delivery.__defaults__ == (rows.DELIVERY_GRACE_S,)


def _random_rows(seed: int) -> list:
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(8)]
    rooms = ["r1", "r2"]
    rows, t = [], 0.0
    for i in range(300):
        t += rng.choice([0.0, 0.01, 0.1, 0.3])  # equal timestamps on purpose
        u, room = rng.choice(users), rng.choice(rooms)
        k = rng.random()
        if k < 0.25:
            rows.append(R("join", t, user=u, room=room, ok=int(rng.random() > 0.1)))
        elif k < 0.35:
            rows.append(R("leave", t, user=u, room=room))
        elif k < 0.4:
            rows.append(R("disconnect", t, user=u))
        elif k < 0.6:
            # a send on a closing session fails (ok=0) and never reaches the wire: no receipts
            ok = int(rng.random() > 0.2)
            rows.append(R("broadcast_send", t, user=u, room=room, msg_id=f"m{i}", ok=ok,
                          error_kind="" if ok else "transport_closed"))
        else:
            sends = [r for r in rows if r["step"] == "broadcast_send" and r["ok"]]
            if sends:
                m = rng.choice(sends)
                rows.append(R("broadcast_recv", t, user=u, room=m["room"], msg_id=m["msg_id"],
                              latency_ms=(t + T0 - m["ts"]) * 1000))
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_the_analysis_implementation(seed: int) -> None:
    """The same definition is implemented in pandas by the analysis; both must count the same."""
    metrics = pytest.importorskip("analysis.metrics")
    pd = pytest.importorskip("pandas")
    rows = _random_rows(seed)
    s = LiveStats()
    s.add_many(rows)
    d = s.snapshot()["delivery"]
    df = pd.DataFrame(rows).assign(config="c")
    summary, detail = metrics.broadcast_delivery(df)
    assert any(not r["ok"] for r in rows if r["step"] == "broadcast_send")  # the case that once disagreed
    assert int(detail["expected"].sum()) == d["expected"]
    assert int(detail["delivered"].sum()) == d["delivered"]
    assert int(summary["sent"].sum()) == d["sends_counted"]


def test_membership_rows_arriving_after_a_snapshot_change_the_judgement() -> None:
    """Snapshots cache members(room, ts) per send; another worker's late membership rows must invalidate it."""
    s = LiveStats()
    s.add_many([R("join", 0, user="a", room="r"), R("broadcast_send", 5, user="a", room="r", msg_id="m"),
                R("ack", 10, user="a", latency_ms=1.0)])
    assert (s.delivery()["expected"], s.delivery()["delivered"]) == (1, 0)
    # worker B's batch, late: b joined before the send and received it
    s.add_many([R("join", 1, user="b", room="r"), R("broadcast_recv", 5.1, user="b", room="r", msg_id="m",
                                                    latency_ms=100.0)])
    assert (s.delivery()["expected"], s.delivery()["delivered"]) == (2, 1)
    # worker C's batch: c joined and left before the send (no member), d was a member at the send
    s.add_many([R("join", 2, user="c", room="r"), R("disconnect", 3, user="c"), R("join", 4, user="d", room="r")])
    assert (s.delivery()["expected"], s.delivery()["delivered"]) == (3, 1)


def test_a_receipt_for_a_settled_send_is_counted_as_late() -> None:
    s = LiveStats(settle_s=5.0)
    s.add_many([R("join", 0, user="a", room="r"), R("broadcast_send", 1, user="a", room="r", msg_id="m")])
    for i in range(10):
        s.add(R("ack", 2 + i, user="a", latency_ms=1.0))
    s.add(R("broadcast_recv", 12, user="a", room="r", msg_id="m", latency_ms=11_000.0))
    assert s.snapshot()["totals"]["late_rows_ignored"] == 1


def test_a_server_naming_a_new_node_on_every_answer_cannot_grow_the_tables() -> None:
    from locustfiles.sio.live import MAX_DISTINCT_NODES, OTHER_NODES

    s = LiveStats()
    n = MAX_DISTINCT_NODES + 500
    s.add_many([R("connect", i * 1e-3, user=f"u{i}", eio_sid=f"s{i}", node=f"node-{i}") for i in range(n)])
    s.add_many([R("node_switch", 1 + i * 1e-3, user="u0", node=f"x{i}", ok=0, error_kind="session_unknown",
                  error=f"a{i}->b{i}") for i in range(n)])
    snap = s.snapshot()
    assert len(snap["nodes"]) == MAX_DISTINCT_NODES + 1
    other = {x["node"]: x for x in snap["nodes"]}[OTHER_NODES]
    assert other["connects_total"] == other["connected_now"] == 500  # counts stay exact
    assert snap["totals"]["connects"] == n
    assert len(snap["node_switches"]) == MAX_DISTINCT_NODES + 1
    assert sum(x["count"] for x in snap["node_switches"]) == n
