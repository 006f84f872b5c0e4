"""chat.py's numbered stream per sender (issue 14 part 4): what one receiver counts as missed,
duplicated and late, from exact id sequences; and what summary.json's recovery block makes of it."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from analysis.recovery import recovery_block
from locustfiles.chat import StreamCounts
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
