"""The delivery ledger (locustfiles/sio/ledger.py) and the producer's column check: bad clocks,
bounded cost, pruned membership, a run-long late counter (issue 11 review 1.1, 1.3, 3.1, 3.2).

Hand-made inputs with answers worked out by hand, plus one random comparison against the
pre-review algorithm (every pending send walked every second), kept here as `NaiveLedger`.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest

from contract.aggregate import Aggregator
from contract.delivery import PRUNE_EVERY_S, RECEIPT_HORIZON_S, Membership
from contract.rowpolicy import RowPolicyConfig
from contract.rows import COLUMNS, DELIVERY_GRACE_S, make_row
from locustfiles.sio.ledger import Ledger
from locustfiles.sio.live import LiveStats, Producer, normalize


def _row(step: str, ts: float, **kw: Any) -> dict[str, Any]:
    return make_row(step, ts=ts, **kw)  # type: ignore[return-value]


def _room(s: LiveStats, room: str, users: list[str], ts: float) -> None:
    for u in users:
        s.add_state_row(_row("join", ts, user=u, room=room))  # type: ignore[arg-type]


def _cells(ts: float) -> list[list[Any]]:
    agg = Aggregator()
    agg.add(ts, "ping", "ping", "n1", "websocket", 1, "", 1.0)
    return agg.drain()


# -- 1.1: one future ts must not make every later send late ---------------------------------
def test_a_future_timestamp_does_not_make_later_sends_late() -> None:
    """The review's case: a row at now + 1e6 s, then 5 sends with 15 receipts (rooms of 3)."""
    t0 = time.time() - 100.0
    s = LiveStats()
    _room(s, "r", ["a", "b", "c"], t0)
    s.add_cells(_cells(time.time() + 1e6))  # a ping from a worker whose clock is wrong
    s.tick(force=True)
    s.add_sends([[f"m{i}", "r", t0 + 10 + i] for i in range(5)])
    s.ledger.add_receipts({f"m{i}": 3 for i in range(5)})
    s.add_cells(_cells(t0 + 20))
    s.tick(force=True)
    d = s.delivery()
    assert s.late_rows_ignored == 0
    assert (d["sends_counted"], d["expected"], d["delivered"]) == (5, 15, 15)
    rows = s.ledger.changed(True, 0.0)
    assert [r[1:4] for r in rows] == [[1, 3, 3]] * 5


def test_a_worker_clock_ahead_settles_by_the_masters_receive_time() -> None:
    """A worker 30 s ahead: the data time (bounded by the wall clock) never reaches its sends' ts;
    the master's receive clock settles them settle_s after they arrived, counted."""
    clock = [0.0]
    wall = 1_000_000.0
    led = Ledger(Membership(), 60.0, clock=lambda: clock[0], wall=lambda: wall)
    for u in ("a", "b"):
        led.membership.join(u, "r", wall - 50)
    led.add_send("ahead", "r", wall + 30)  # beyond wall + FUTURE_SLACK_S: the data time ignores it
    led.add_receipts({"ahead": 1})
    led.add_send("sane", "r", wall - 1)
    led.tick(wall, force=True)
    assert led.max_ts == wall and set(led.pending) == {"ahead", "sane"}
    clock[0] = 60.0
    led.tick(wall, force=True)
    assert not led.pending and led.late == 0
    assert {sec: b for sec, b in led.settled_buckets.items()} == {int(wall + 30): [1, 2, 1], int(wall - 1): [1, 2, 0]}
    led.add_receipts({"ahead": 1})  # after it settled: late, in both counters
    assert (led.late, led.late_total) == (1, 1)


# -- 1.3: a row lacking a column is counted once -------------------------------------------
@pytest.mark.parametrize(("step", "missing"), [
    ("broadcast_recv", "user"), ("connect", "eio_sid"), ("join", "room"), ("broadcast_send", "msg_id"),
    ("disconnect", "eio_sid"), ("ack", "user")])
def test_a_row_lacking_a_column_is_counted_once(step: str, missing: str) -> None:
    """eventlog.record's path: add; on KeyError/TypeError normalize and add again."""
    row = dict(make_row(step, ts=1_000_000.0, user="u", eio_sid="s", room="r", msg_id="m", latency_ms=1.0))
    del row[missing]
    p = Producer()
    try:
        p.add(row)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        r = normalize(row)
        assert r is not None and set(r) == set(COLUMNS)
        p.add(r)
    assert p.agg.events == 1
    assert sum(w[7] for w in p.agg.drain()) == 1
    assert p.policy.counts()["kept"] == 1


# -- 3.1: bounded cost ------------------------------------------------------------------------
def _busy_ledger(rooms: int = 20, per_room: int = 30) -> tuple[Ledger, float]:
    """`rooms` rooms of 3 members with `per_room` pending sends each (one receipt short)."""
    t0 = 1_000_000.0
    led = Ledger(Membership(), 60.0, clock=lambda: 0.0, wall=lambda: t0 + 1000)
    for r in range(rooms):
        for u in range(3):
            led.membership.join(f"u{r}-{u}", f"r{r}", t0)
    for i in range(per_room):
        for r in range(rooms):
            led.add_send(f"m{r}-{i}", f"r{r}", t0 + 1 + i)
            led.add_receipts({f"m{r}-{i}": 2})
    led.tick(t0 + per_room, force=True)
    return led, t0


def test_a_membership_change_rejudges_only_its_room_from_its_time() -> None:
    led, t0 = _busy_ledger()
    assert len(led.pending) == 600 and led.rejudged == 0
    rows = led.changed(False, 0.0)
    led.commit(rows)
    assert led.changed(False, 0.0) == []
    # u0-0 leaves r0 just before the last 3 of its sends: only those 3 are judged again
    led.membership.leave("u0-0", "r0", t0 + 27.5)
    led.bump(["r0"], t0 + 27.5)
    rows = led.changed(False, 0.0)
    assert led.rejudged == 3
    # the seconds that moved, and only them: one send in each expects 2 (not 3) and got 2
    assert [r[:4] for r in rows] == [[int(t0) + 28 + i, 20, 59, 40] for i in range(3)]
    led.commit(rows)
    led.tick(t0 + 40, force=True)  # r0's last 3 sends are complete now: settled by the quick rule
    assert len(led.pending) == 597 and [m for m in ("m0-27", "m0-28", "m0-29") if m in led.pending] == []


def test_ticks_without_progress_judge_nothing_again() -> None:
    led, t0 = _busy_ledger()
    for i in range(5):
        led.tick(t0 + 30 + i, force=True)
        led.live()
        led.commit(led.changed(False, 0.0))
    assert led.rejudged == 0


# -- 3.2: pruned membership, run-long late counter ----------------------------------------------
def test_membership_intervals_are_pruned_below_the_settled_horizon() -> None:
    s = LiveStats(settle_s=5.0)
    t0 = 1_000_000.0
    for i in range(200):  # a join/leave cycle a second, a send in each membership
        s.add_many([_row("join", t0 + i, user="a", room="r"), _row("join", t0 + i, user="b", room="r"),
                    _row("broadcast_send", t0 + i + 0.1, user="a", room="r", msg_id=f"m{i}"),
                    _row("broadcast_recv", t0 + i + 0.2, user="a", room="r", msg_id=f"m{i}", latency_ms=100.0),
                    _row("broadcast_recv", t0 + i + 0.2, user="b", room="r", msg_id=f"m{i}", latency_ms=100.0),
                    _row("leave", t0 + i + 0.5, user="b", room="r")])
    assert len(s.membership.intervals[("b", "r")]) <= 20  # not 200
    d = s.delivery()
    assert (d["sends_counted"], d["sends_in_grace"], d["expected"], d["delivered"]) == (198, 2, 396, 396)


def test_prune_keeps_every_answer_at_or_after_the_horizon() -> None:
    rng = random.Random(3)
    for _ in range(30):
        m = Membership()
        t = 0.0
        for _ in range(60):
            t += rng.choice([0.0, 0.5, 1.0])
            u, op = rng.choice("abc"), rng.random()
            if op < 0.5:
                m.join(u, "r", t if rng.random() < 0.9 else t - 5)  # now and then out of order
            elif op < 0.8:
                m.leave(u, "r", t)
            else:
                m.disconnect(u, t)
        before = rng.uniform(0, t)
        probes = [before + x * 0.25 for x in range(int((t - before) * 4) + 8)]
        want = [m.count("r", p) for p in probes] + [m.is_member(u, "r", p) for u in "abc" for p in probes]
        m.prune(before)
        assert [m.count("r", p) for p in probes] + [m.is_member(u, "r", p) for u in "abc" for p in probes] == want


def test_count_is_the_number_of_members_whatever_the_rows_order() -> None:
    """count()'s fast path (t at or after every change in the room) against is_member per user."""
    rng = random.Random(5)
    for _ in range(40):
        m = Membership()
        t = 0.0
        for _ in range(40):
            t += rng.choice([0.0, 0.5, 1.0])
            u, room, op = rng.choice("abcd"), rng.choice("xy"), rng.random()
            ts = t if rng.random() < 0.8 else t - rng.uniform(0, 5)  # now and then out of order
            if op < 0.5:
                m.join(u, room, ts)
            elif op < 0.8:
                m.leave(u, room, ts)
            else:
                m.disconnect(u, ts)
            for room in "xy":
                for p in (t - 3, t - 0.5, t, t + 0.25, t + 10, *(iv[1] for ivs in m.intervals.values() for iv in ivs if iv[1] < math.inf)):
                    assert m.count(room, p) == sum(m.is_member(v, room, p) for v in "abcd")


def test_late_total_survives_a_reset() -> None:
    s = LiveStats(settle_s=5.0)
    t0 = 1_000_000.0
    s.add_many([_row("join", t0, user="a", room="r"), _row("broadcast_send", t0 + 1, user="a", room="r", msg_id="m")])
    s.add_many([_row("ack", t0 + 2 + i, user="a", latency_ms=1.0) for i in range(10)])
    s.add(_row("broadcast_recv", t0 + 12, user="a", room="r", msg_id="m", latency_ms=11_000.0))
    assert (s.late_rows_ignored, s.late_rows_total) == (1, 1)
    s.reset(t0 + 13)
    assert (s.late_rows_ignored, s.late_rows_total, s.ledger.late_total) == (0, 1, 1)


# -- the same numbers as the pre-review algorithm ------------------------------------------------
class NaiveLedger:
    """The pre-review ledger, data time only: every pending send walked on every tick."""

    def __init__(self, membership: Membership, settle_s: float) -> None:
        self.m, self.settle_s = membership, max(settle_s, DELIVERY_GRACE_S + 1.0)
        self.pending: dict[str, list[Any]] = {}
        self.early: dict[str, list[float]] = {}
        self.settled: set[str] = set()
        self.buckets: dict[int, list[int]] = {}
        self.max_ts = self.settled_until = self.last = -math.inf
        self.late = 0

    def bump(self, ts: float) -> None:
        self.late += ts <= self.settled_until

    def add_send(self, msg_id: str, room: str, ts: float) -> None:
        if ts <= self.settled_until or msg_id in self.settled or msg_id in self.pending:
            self.late += 1
            return
        e = self.early.pop(msg_id, None)
        self.pending[msg_id] = [room, ts, int(e[0]) if e else 0]
        self.max_ts = max(self.max_ts, ts)

    def add_receipts(self, counts: dict[str, int]) -> None:
        for m, n in counts.items():
            if m in self.pending:
                self.pending[m][2] += n
            elif m in self.settled:
                self.late += n
            else:
                self.early.setdefault(m, [0, self.max_ts])[0] += n

    def tick(self, newest: float) -> None:
        self.max_ts = max(self.max_ts, newest)
        if self.max_ts - self.last < 1.0:
            return
        self.last = self.max_ts
        horizon, quick = self.max_ts - self.settle_s, self.max_ts - DELIVERY_GRACE_S - 1.0
        for m, (room, ts, d) in list(self.pending.items()):
            exp = self.m.count(room, ts)
            if ts <= horizon or (ts <= quick and d >= exp):
                del self.pending[m]
                self.settled.add(m)
                b = self.buckets.setdefault(int(ts), [0, 0, 0])
                b[0], b[1], b[2] = b[0] + 1, b[1] + exp, b[2] + min(d, exp)
        self.settled_until = max(self.settled_until, horizon)
        for m in [m for m, e in self.early.items() if e[1] <= horizon]:
            self.late += int(self.early.pop(m)[0])

    def final(self) -> list[list[int]]:
        now = {sec: list(b) for sec, b in self.buckets.items()}
        for room, ts, d in self.pending.values():
            if ts <= self.max_ts - DELIVERY_GRACE_S:
                exp = self.m.count(room, ts)
                b = now.setdefault(int(ts), [0, 0, 0])
                b[0], b[1], b[2] = b[0] + 1, b[1] + exp, b[2] + min(d, exp)
        return [[sec, *now[sec]] for sec in sorted(now)]


@pytest.mark.parametrize("seed", range(6))
def test_same_numbers_as_the_pre_review_ledger(seed: int) -> None:
    """Random rooms, joins/leaves arriving late, receipts before sends, settling with a short
    settle_s: late counts, live numbers and final rows equal the naive algorithm's."""
    rng = random.Random(seed)
    t0 = 1_000_000.0
    m_new, m_old = Membership(), Membership()
    new = Ledger(m_new, 5.0, clock=lambda: 0.0, wall=lambda: t0 + 1e4)
    old = NaiveLedger(m_old, 5.0)
    t, sent = t0, []
    for i in range(1500):
        t += rng.choice([0.0, 0.02, 0.1, 0.3])
        k, u, room = rng.random(), f"u{rng.randrange(8)}", f"r{rng.randrange(3)}"
        ts = t - rng.choice([0.0, 0.0, 0.5, 3.0])  # another worker's batch, late
        if k < 0.2:
            for m, led in ((m_new, new), (m_old, old)):
                rooms = [room] if m.join(u, room, ts) else []
                led.bump(rooms, ts) if led is new else led.bump(ts)
        elif k < 0.35:
            rooms = sorted(m_new.open_rooms.get(u, ()))
            if m_new.disconnect(u, ts):
                new.bump(rooms, ts)
            if m_old.disconnect(u, ts):
                old.bump(ts)
        elif k < 0.6:
            new.add_send(f"m{i}", room, ts)
            old.add_send(f"m{i}", room, ts)
            sent.append(f"m{i}")
        elif sent:
            counts = {rng.choice(sent[-30:]): rng.choice([1, 1, 2]), f"m{i + 1}": 1}  # and one early
            new.add_receipts(counts)
            old.add_receipts(counts)
        new.tick(t)
        old.tick(t)
        assert new.late == old.late
    assert set(new.pending) == set(old.pending)
    assert [r[:4] for r in new.changed(True, 0.0)] == old.final()


# -- 3.2: bounded buffers on the worker side --------------------------------------------------
def test_a_full_producer_drops_sampled_rows_and_keeps_state_rows_up_to_twice_its_bound() -> None:
    p = Producer(RowPolicyConfig(log_all=True), max_held=3)
    t0 = 1_000_000.0
    for i in range(3):
        assert p.add(make_row("ack", ts=t0 + i, user="u", latency_ms=1.0))
    assert not p.add(make_row("ack", ts=t0 + 3, user="u", latency_ms=1.0))  # full: a sampled row goes
    assert p.add(make_row("connect", ts=t0 + 4, user="v", eio_sid="s", node="n1"))  # a state row stays
    assert p.add(make_row("join", ts=t0 + 5, user="v", room="r"))
    assert p.add(make_row("disconnect", ts=t0 + 6, user="v", eio_sid="s"))
    assert not p.add(make_row("join", ts=t0 + 7, user="w", room="r"))  # twice the bound: no more
    assert [r["step"] for r in p.rows] == ["ack"] * 3 + ["connect", "join", "disconnect"]
    assert p.dropped == 2 and p.agg.events == 8  # counts stay exact


def test_a_workers_receipts_forget_old_memberships() -> None:
    p = Producer(RowPolicyConfig(log_all=True))
    t0 = 1_000_000.0
    for i in range(600):  # a join/leave cycle a second for 10 minutes
        p.add(make_row("join", ts=t0 + i, user="a", room="r"))
        p.add(make_row("broadcast_recv", ts=t0 + i + 0.2, user="a", room="r", msg_id=f"m{i}", latency_ms=100.0))
        p.add(make_row("leave", ts=t0 + i + 0.5, user="a", room="r"))
    assert len(p.receipts.membership.intervals[("a", "r")]) <= RECEIPT_HORIZON_S + PRUNE_EVERY_S + 1
    assert sum(p.receipts.drain().values()) == 600 and p.receipts.not_members == 0
