"""LiveStats.reset (the web UI's "Reset stats"): counters restart, states stay, worked out by hand."""

from __future__ import annotations

from contract.rows import make_row
from locustfiles.sio.live import LiveStats

T0 = 1_000_000.0


def R(step: str, t: float, **kw):  # short helper for readable tables
    return make_row(step, ts=T0 + t, **kw)


def _room(s: LiveStats) -> None:
    s.add_many([
        R("connect", 0, user="a", eio_sid="s1", node="n1"),
        R("connect", 0, user="b", eio_sid="s2", node="n2"),
        R("connect", 0, user="c", eio_sid="s3", node="n2"),
        R("join", 1, user="a", room="r"),
        R("join", 1, user="b", room="r"),
        R("poll", 2, user="c", ok=0, error_kind="session_unknown"),
        R("broadcast_send", 3, user="a", room="r", msg_id="m1"),
        R("broadcast_recv", 3.1, user="a", room="r", msg_id="m1", latency_ms=100.0),
    ])


def test_reset_zeroes_counters_keeps_open_sessions() -> None:
    s = LiveStats()
    _room(s)
    s.reset(T0 + 5)
    snap = s.snapshot()
    t = snap["totals"]
    assert (t["rows"], t["connects"], t["failures"], t["broadcast_sends"], t["broadcast_recvs"]) == (0, 0, 0, 0, 0)
    assert t["connected_now"] == 3 and t["users"] == 3 and t["first_ts"] is None
    assert {n["node"]: (n["connected_now"], n["connects_total"]) for n in snap["nodes"]} == {
        "n1": (1, 0), "n2": (2, 0)}
    assert snap["failures"] == [] and snap["steps"] == {} and snap["reset_at"] == T0 + 5
    assert snap["delivery"]["expected"] == 0 and snap["delivery"]["ratio"] is None
    s.add(R("disconnect", 6, user="c", eio_sid="s3"))  # a session opened before the reset closes
    assert s.snapshot()["totals"]["connected_now"] == 2


def test_after_reset_delivery_uses_kept_membership_and_ignores_older_sends() -> None:
    s = LiveStats()
    _room(s)
    s.reset(T0 + 5)
    s.add_many([
        # m1 was sent before the reset: b's late receipt must not count anywhere
        R("broadcast_recv", 5.5, user="b", room="r", msg_id="m1", latency_ms=2500.0),
        # a send from before the reset arriving late (another worker's batch): not judged
        R("broadcast_send", 4.9, user="b", room="r", msg_id="m0"),
        R("broadcast_recv", 5.6, user="a", room="r", msg_id="m0", latency_ms=700.0),
        # after the reset: members a and b (joined before it), only a receives
        R("broadcast_send", 6, user="a", room="r", msg_id="m2"),
        R("broadcast_recv", 6.01, user="a", room="r", msg_id="m2", latency_ms=10.0),
        R("echo", 20, user="a"),  # moves the end past the grace window
    ])
    d = s.snapshot()["delivery"]
    assert (d["sends_counted"], d["expected"], d["delivered"]) == (1, 2, 1)
    # receipts (and their latencies) come from the aggregates, counted by receipt like Locust's own
    # counters: every receipt that arrived after the reset, whatever its send's time
    assert d["receipts"] == 3
    assert s.snapshot()["totals"]["broadcast_sends"] == 1  # m0 arrived after the reset but was sent before


def test_no_reset_no_reset_at() -> None:
    s = LiveStats()
    _room(s)
    assert s.snapshot()["reset_at"] is None
