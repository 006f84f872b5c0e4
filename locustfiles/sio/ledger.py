"""The master's broadcast delivery ledger: sends, receipt counts and membership -> delivery per send.

docs/contracts.md "Broadcast delivery, one definition": expected = |members(room, ts)| of each ok
send, delivered = the workers' receipt counts, capped at expected. A send settles (its numbers
are final, data for it afterwards is counted as late) when
- the newest data time is `settle_s` (60 s) past its ts, or DELIVERY_GRACE_S + 1 s past it with
  every expected receipt in; or
- the master's own clock is `settle_s` past the moment the send arrived.
The data time is the largest ts seen that is not ahead of the master's wall clock by more than
FUTURE_SLACK_S: one bad ts, or a worker whose clock runs ahead, cannot settle (and so make
"late") the sends of every other worker. The receive clock settles the sends of such a worker,
whose ts the data time never reaches.

Why a module of its own and these structures (review 3.1): with partial loss every send stays
pending 60 s, 300k sends at 10,000 users. Nothing here walks all pending sends per second:
- settling pops queues ordered by ts, by arrival, and (complete sends only) by ts again;
- a membership change marks its room stale from the change's ts; only that room's pending sends
  at or after it are re-judged (`rejudged` counts them), through an index by room sorted by ts;
- the per-second delivery rows are running sums, and `changed` writes only the seconds that moved.
Membership intervals that ended before every send that can still be judged are pruned.
"""

from __future__ import annotations

import heapq
import math
import time
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from contract.delivery import Membership
from contract.rows import DELIVERY_GRACE_S

SETTLED_GENERATION = 200_000
"""Settled message ids remembered (two generations) to tell a late receipt from an early one."""
FUTURE_SLACK_S = 10.0
"""How far ahead of the master's wall clock a ts may be and still move the ledger's data time."""
PRUNE_EVERY_S = 10.0
"""Membership intervals are pruned when the settled horizon moved this far since the last prune."""


def _ts(s: _Send) -> float:
    return s.ts



def _add_send(buckets: dict[int, list[int]], sec: int, expected: int, delivered: int) -> None:
    """One send into a per-second [sends, expected, delivered] bucket."""
    b = buckets.get(sec)
    if b is None:
        b = buckets[sec] = [0, 0, 0]
    b[0] += 1
    b[1] += expected
    b[2] += delivered

class _Send:
    """One pending ok broadcast_send; `expected` is members(room, ts) as last judged."""

    __slots__ = ("arrived", "delivered", "done", "expected", "live", "msg_id", "queued", "room", "seq", "ts")

    def __init__(self, msg_id: str, room: str, ts: float, delivered: int, arrived: float, live: bool,
                 seq: int) -> None:
        self.msg_id, self.room, self.ts, self.delivered = msg_id, room, ts, delivered
        self.arrived, self.live, self.seq = arrived, live, seq
        self.expected = 0
        self.done = False  # settled
        self.queued = False  # in the complete-sends queue

    def capped(self) -> int:
        return min(self.delivered, self.expected)


class Ledger:
    """Broadcast delivery per send, from sends, receipt counts and the master's membership.

    One ledger serves the live view (reset by the web UI) and the run directory's per-second
    rows (never reset): `reset` only moves the live window. `late` is the live window's count of
    data that came after its send settled; `late_total` is the run's (never reset).
    `clock` is the master's receive clock; `now` arguments override it (a replay passes its
    data time), `wall` bounds the data time.
    """

    def __init__(self, membership: Membership, settle_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.membership = membership
        self.settle_s = max(settle_s, DELIVERY_GRACE_S + 1.0)
        self.clock, self.wall = clock, wall
        self.pending: dict[str, _Send] = {}
        self.early: dict[str, list[float]] = {}  # msg_id -> [receipts, data time, receive time when they came]
        self._early_order: deque[tuple[str, list[float]]] = deque()
        self.settled_ids: set[str] = set()
        self._old_ids: set[str] = set()
        self.max_ts = -math.inf  # the data time (bounded by the wall clock, see the module doc)
        self.settled_until = -math.inf  # sends at or before this ts are late
        self._last_settle = self._last_recv = self._pruned = -math.inf
        self.late = self.late_total = 0
        self.rejudged = 0  # sends whose expected count was computed again after a membership change
        self._seq = 0
        self._by_ts: list[tuple[float, int, _Send]] = []
        self._by_arrival: deque[_Send] = deque()
        self._complete: list[tuple[float, int, _Send]] = []
        self._by_room: dict[str, list[_Send]] = {}
        self._by_sec: dict[int, dict[int, _Send]] = {}
        self._stale: dict[str, float] = {}  # room -> earliest ts of a membership change not judged yet
        # run-directory rows: second -> [sent, expected, delivered], of settled sends / of every send
        self.settled_buckets: dict[int, list[int]] = {}
        self.seconds: dict[int, list[int]] = {}
        self.dirty: set[int] = set()
        self.written: dict[int, tuple[int, int, int, int]] = {}
        # live window (web UI reset)
        self.live_from: float | None = None
        self.live_sends = self.live_settled_sends = self.live_expected = self.live_delivered = 0
        self._live_pending = [0, 0, 0]  # sends, expected, delivered of live pending sends

    # -- clocks ---------------------------------------------------------------------------
    def see(self, ts: float) -> None:
        """Move the data time to ts unless ts is ahead of the master's wall clock (+ slack)."""
        if ts > self.max_ts and ts <= self.wall() + FUTURE_SLACK_S:
            self.max_ts = ts

    def _late(self, n: int = 1) -> None:
        self.late += n
        self.late_total += n

    def reset(self, now: float) -> None:
        self.live_from = now
        for s in self.pending.values():
            s.live = False
        self.live_sends = self.live_settled_sends = self.live_expected = self.live_delivered = 0
        self._live_pending = [0, 0, 0]
        self.late = 0

    # -- input ----------------------------------------------------------------------------
    def bump(self, rooms: Iterable[str], ts: float) -> None:
        """Membership of these rooms changed at ts: their sends at or after ts are judged again."""
        stale = self._stale
        for r in rooms:
            t = stale.get(r)
            if t is None or ts < t:
                stale[r] = ts
        if ts <= self.settled_until:
            self._late()

    def add_send(self, msg_id: str, room: str, ts: float, now: float | None = None) -> None:
        if ts > self.max_ts:
            self.see(ts)
        if ts <= self.settled_until or msg_id in self.settled_ids or msg_id in self.pending:
            self._late()  # its fate was settled already (or a duplicate): it cannot count any more
            return
        early = self.early.pop(msg_id, None)
        delivered = int(early[0]) if early else 0
        live = self.live_from is None or ts >= self.live_from
        self._seq = seq = self._seq + 1
        s = _Send(msg_id, room, ts, delivered, self.clock() if now is None else now, live, seq)
        self.pending[msg_id] = s
        same_room = self._by_room.get(room)
        if same_room is None:
            self._by_room[room] = [s]
        elif same_room[-1].ts <= ts:
            same_room.append(s)  # the usual case: sends of a room come in order
        else:
            insort(same_room, s, key=_ts)
        sec = int(ts)
        by_sec = self._by_sec.get(sec)
        if by_sec is None:
            by_sec = self._by_sec[sec] = {}
        by_sec[seq] = s
        heapq.heappush(self._by_ts, (ts, seq, s))
        self._by_arrival.append(s)
        s.expected = exp = self.membership.count(room, ts)
        capped = delivered if delivered < exp else exp
        _add_send(self.seconds, sec, exp, capped)
        self.dirty.add(sec)
        if live:
            self.live_sends += 1
            lp = self._live_pending
            lp[0] += 1
            lp[1] += exp
            lp[2] += capped
        if delivered >= exp:
            s.queued = True
            heapq.heappush(self._complete, (ts, seq, s))

    def add_receipts(self, counts: Mapping[str, int], now: float | None = None) -> None:
        for msg_id, n in counts.items():
            s = self.pending.get(msg_id)
            if s is not None:
                self._count(s, s.delivered + n, s.expected)
            elif msg_id in self.settled_ids or msg_id in self._old_ids:
                self._late(n)
            else:  # its send has not arrived yet (another worker's batch)
                e = self.early.get(msg_id)
                if e is None:
                    e = self.early[msg_id] = [n, self.max_ts, self.clock() if now is None else now]
                    self._early_order.append((msg_id, e))
                else:
                    e[0] += n

    # -- running sums ---------------------------------------------------------------------
    def _count(self, s: _Send, delivered: int, expected: int) -> None:
        """Set a pending send's numbers, keeping every running sum right."""
        d_exp = expected - s.expected
        d_dlv = min(delivered, expected) - s.capped()
        s.delivered, s.expected = delivered, expected
        if d_exp or d_dlv:
            sec = int(s.ts)
            b = self.seconds[sec]
            b[1] += d_exp
            b[2] += d_dlv
            self.dirty.add(sec)
            if s.live:
                lp = self._live_pending
                lp[1] += d_exp
                lp[2] += d_dlv
        if delivered >= expected and not s.queued:
            s.queued = True
            heapq.heappush(self._complete, (s.ts, s.seq, s))

    def _refresh(self) -> None:
        """Judge again the pending sends of rooms whose membership changed, from the change on."""
        if not self._stale:
            return
        count = self.membership.count
        for room, t in self._stale.items():
            sends = self._by_room.get(room)
            if not sends:
                continue
            for s in sends[bisect_left(sends, t, key=_ts):]:
                self.rejudged += 1
                self._count(s, s.delivered, count(room, s.ts))
        self._stale.clear()

    # -- settling -------------------------------------------------------------------------
    def tick(self, newest: float, force: bool = False, now: float | None = None) -> None:
        """Settle what can no longer change (once per second of progress of either clock unless forced)."""
        self.see(newest)
        recv = self.clock() if now is None else now
        if not force and self.max_ts - self._last_settle < 1.0 and recv - self._last_recv < 1.0:
            return
        self._last_settle, self._last_recv = self.max_ts, recv
        self._refresh()
        horizon, quick, recv_horizon = self.max_ts - self.settle_s, self.max_ts - (DELIVERY_GRACE_S + 1.0), \
            recv - self.settle_s
        by_ts, complete, arrivals = self._by_ts, self._complete, self._by_arrival
        while by_ts and by_ts[0][0] <= horizon:
            s = heapq.heappop(by_ts)[2]
            if not s.done:
                self._settle(s)
        while arrivals and arrivals[0].arrived <= recv_horizon:
            s = arrivals.popleft()
            if not s.done:
                self._settle(s)
        while complete and complete[0][0] <= quick:
            s = heapq.heappop(complete)[2]
            s.queued = False
            if not s.done and s.delivered >= s.expected:
                self._settle(s)
        self.settled_until = max(self.settled_until, horizon)
        order = self._early_order
        while order and (order[0][1][1] <= horizon or order[0][1][2] <= recv_horizon):
            m, e = order.popleft()
            if self.early.get(m) is e:
                del self.early[m]
                self._late(int(e[0]))  # receipts whose send never came in time
        self._tidy()

    def _settle(self, s: _Send) -> None:
        s.done = True
        del self.pending[s.msg_id]
        sends = self._by_room[s.room]
        i = bisect_left(sends, s.ts, key=_ts)
        while sends[i] is not s:
            i += 1
        del sends[i]
        if not sends:
            del self._by_room[s.room]
        sec = int(s.ts)
        bucket = self._by_sec[sec]
        del bucket[s.seq]
        if not bucket:
            del self._by_sec[sec]
        exp, dlv = s.expected, s.capped()
        _add_send(self.settled_buckets, sec, exp, dlv)
        if s.live:
            lp = self._live_pending
            lp[0] -= 1
            lp[1] -= exp
            lp[2] -= dlv
            self.live_settled_sends += 1
            self.live_expected += exp
            self.live_delivered += dlv
        self.settled_ids.add(s.msg_id)
        if len(self.settled_ids) > SETTLED_GENERATION:
            self._old_ids, self.settled_ids = self.settled_ids, set()

    def _tidy(self) -> None:
        """Drop queue entries of settled sends when they outnumber the live ones; prune membership."""
        n = len(self.pending) + 1000
        if len(self._by_ts) > 2 * n:
            self._by_ts = [e for e in self._by_ts if not e[2].done]
            heapq.heapify(self._by_ts)
        if len(self._complete) > 2 * n:
            self._complete = [e for e in self._complete if not e[2].done]
            heapq.heapify(self._complete)
        by_ts = self._by_ts
        while by_ts and by_ts[0][2].done:
            heapq.heappop(by_ts)
        # every send still judged has ts >= this: pending ones, and new ones (older ones are late)
        horizon = min(self.settled_until, by_ts[0][0]) if by_ts else self.settled_until
        if horizon - self._pruned >= PRUNE_EVERY_S:
            self.membership.prune(horizon)
            self._pruned = horizon

    # -- output ---------------------------------------------------------------------------
    def live(self) -> tuple[int, int, int, int]:
        """(sends counted, sends in the grace window, expected, delivered) of the live window."""
        self._refresh()
        lp = self._live_pending
        sends = self.live_settled_sends + lp[0]
        expected, delivered = self.live_expected + lp[1], self.live_delivered + lp[2]
        excluded = 0
        end = self.max_ts - DELIVERY_GRACE_S
        for sec, bucket in self._by_sec.items():
            if sec + 1 <= end:
                continue
            for s in bucket.values():
                if s.live and s.ts > end:
                    excluded += 1
                    expected -= s.expected
                    delivered -= s.capped()
        return sends - excluded, excluded, expected, delivered

    def changed(self, final: bool, written: float) -> list[list[Any]]:
        """The run directory's delivery rows (contract.eventfiles.DELIVERY_TYPES) whose numbers
        changed since the last `commit`; with `final`, every second with the grace window applied."""
        self._refresh()
        if final:
            return self._final(written)
        out = []
        for sec in sorted(self.dirty):
            vals = (*self.seconds[sec], 0)
            if self.written.get(sec) != vals:
                out.append([sec, *vals, written])
            else:
                self.dirty.discard(sec)
        return out

    def _final(self, written: float) -> list[list[Any]]:
        """Every second: settled sends plus pending ones outside the grace window (once, at the end)."""
        now = {sec: list(self.settled_buckets.get(sec, (0, 0, 0))) for sec in set(self.settled_buckets) | set(self.written)}
        end = self.max_ts - DELIVERY_GRACE_S
        for s in self.pending.values():
            if s.ts > end:
                continue
            sec = int(s.ts)
            b = now.get(sec)
            if b is None:
                b = now[sec] = list(self.settled_buckets.get(sec, (0, 0, 0)))
            b[0] += 1
            b[1] += s.expected
            b[2] += s.capped()
        return [[sec, *now[sec], 1, written] for sec in sorted(now)]

    def commit(self, rows: list[list[Any]]) -> None:
        """The rows of `changed` are on disk."""
        for r in rows:
            self.written[int(r[0])] = (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            self.dirty.discard(int(r[0]))


__all__ = ["FUTURE_SLACK_S", "SETTLED_GENERATION", "Ledger"]
