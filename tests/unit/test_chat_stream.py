"""chat.py's numbered stream per sender (issue 14 part 4): what one receiver counts as missed,
duplicated and late, from exact id sequences; and what summary.json's recovery block makes of it."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from analysis.recovery import recovery_block
from locustfiles.chat import CATCH_UP_HORIZON_S, CatchUp, StreamCounts
from locustfiles.sio.ingest import SHIPPED_COUNTERS


def _feed(ids: list[str]) -> Counter[str]:
    s, total = StreamCounts(), Counter[str]()
    for i in ids:
        total.update(s.see(i))
    return total


def test_in_order_streams_of_two_senders_miss_nothing() -> None:
    ids = [f"{u}-{n}" for n in range(5, 9) for u in ("a", "b-w1-3")]  # a late joiner: first seen is the baseline
    assert _feed(ids) == {"stream_received": 8}


def test_a_gap_is_missed_a_repeat_duplicated_and_a_late_one_reordered() -> None:
    c = _feed(["a-0", "a-1", "a-4", "a-4", "a-2", "a-5", "b-0", "b-3"])
    assert c == {"stream_received": 8, "missed": 2 + 2, "seq_duplicated": 1, "seq_reordered": 1}
    # net missed: a-3 (a-2 came late) and b-1, b-2
    assert recovery_block(None, client={"attempts": 1, **c}) is None  # no lost session: no block
    ev = pd.DataFrame([{"step": "disconnect", "ok": 0, "latency_ms": None}])
    b = recovery_block(ev, client=dict(c))
    assert b is not None and (b["missed"], b["duplicated"], b["reordered"]) == (3, 1, 1)


def test_ids_that_are_not_numbered_are_ignored_and_every_counter_may_be_shipped() -> None:
    assert _feed(["", "abc", "a-x", "-"]) == {}
    assert {"stream_received", "missed", "seq_duplicated", "seq_reordered"} <= SHIPPED_COUNTERS


def test_without_a_stream_missed_is_not_measured() -> None:
    ev = pd.DataFrame([{"step": "disconnect", "ok": 0, "latency_ms": None}])
    b = recovery_block(ev, client={"attempts": 1, "duplicated": 2, "backwards": 3})
    assert b is not None and (b["missed"], b["duplicated"], b["reordered"]) == (None, 2, 3)


def test_catch_up_ends_at_the_last_replayed_message_once_every_sender_sent_again() -> None:
    c = CatchUp()
    c.see("a", 4, 3, 99.0, 99.1)  # before the loss: "a" was at 4
    c.see("b", 7, 6, 99.2, 99.3)
    assert c.start(100.0, {"a", "b"}) is None  # T_r = 100
    # the replay: what a and b sent while the receiver was away, delivered after T_r
    assert c.see("a", 5, 4, 99.5, 100.010) is None
    assert c.see("b", 8, 7, 99.6, 100.020) is None
    assert c.see("a", 6, 5, 100.3, 100.301) is None  # a's first newer message: a is whole since 100.010
    ms, ok, senders, gaps = c.see("b", 9, 8, 100.4, 100.401)
    assert (round(ms), ok, senders, gaps) == (20, True, 2, 0)  # b's replay ended at 100.020
    assert c.finish() is None  # once


def test_catch_up_without_a_replay_is_zero_and_a_gap_is_never_whole() -> None:
    c = CatchUp()
    c.see("a", 1, 0, 9.0, 9.0)
    c.start(10.0, {"a"})
    assert c.see("a", 2, 1, 10.5, 10.5) == (0.0, True, 1, 0)  # nothing was missed: caught up at once
    c.start(20.0, {"a"})
    assert c.see("a", 9, 2, 20.5, 20.5) == (0.0, False, 1, 1)  # 3..8 lost (not recovered): never whole


def test_catch_up_leaves_out_senders_gone_quiet_and_ends_at_the_horizon_or_the_next_reconnect() -> None:
    c = CatchUp()
    c.start(0.0, set())
    assert c.t_r is None  # nobody followed: nothing to catch up on
    c.start(100.0, {"a", "b"})
    c.see("a", 1, 0, 99.0, 100.2)
    c.see("a", 2, 1, 100.1, 100.3)  # a done; b never sends again
    ms, ok, senders, gaps = c.see("a", 3, 2, 100.0 + CATCH_UP_HORIZON_S + 1, 100.0 + CATCH_UP_HORIZON_S + 1)
    assert (round(ms), ok, senders, gaps) == (200, True, 1, 0)
    c.start(200.0, {"a"})
    c.see("a", 4, 3, 199.0, 200.5)
    assert c.start(300.0, {"a"}) is None  # a never sent a newer one: no result for that reconnect
