"""Broadcast delivery counted where it happens: membership and receipts, exact, without receipt rows.

docs/contracts.md "Broadcast delivery, one definition": expected = |members(room, ts)| of each
ok broadcast_send; delivered = distinct members at ts with a receipt. Receipt rows are sampled
now (contract.rowpolicy), so delivery can no longer be a join of rows. Instead:
- each worker counts, per message id, the distinct receivers of its own users that were members
  of the room when the message was sent (`Receipts`, judged by `Membership` from the receiver's
  own join/leave/disconnect rows, which the worker records in order);
- senders ship every ok send (msg_id, room, ts) beside the aggregates;
- the master holds the membership of every user (state rows are always kept), so it counts
  expected = `Membership.count(room, ts)` and delivered = the sum of the workers' counts, capped.
The send time a receiver judges by is the payload's `sent` (the chat scenario logs its send row
with that same ts), or `ts - latency` for a scenario that logs only latency.
Stdlib only (contract layer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from contract.rows import is_ok

DEDUP_GENERATION = 50_000
"""Receipts remembered for dropping duplicates before the oldest half is forgotten (two generations)."""
RECEIPT_HORIZON_S = 120.0
"""A worker forgets membership intervals that ended this long before its newest row: a receipt
of a message sent that long ago is late at the master anyway (its send settled after 60 s)."""
PRUNE_EVERY_S = 10.0


class Membership:
    """members(room, t) from join/leave/disconnect rows, each user's rows in their order."""

    __slots__ = ("intervals", "last_change", "open_count", "open_rooms", "room_users")

    def __init__(self) -> None:
        # (user, room) -> [[start, end], ...], end = inf while open
        self.intervals: dict[tuple[str, str], list[list[float]]] = {}
        self.open_rooms: dict[str, set[str]] = {}  # user -> rooms open now
        self.room_users: dict[str, set[str]] = {}  # room -> users ever in it (since the last prune)
        # count()'s fast path: room -> members now, and the largest start or end ts ever set in it
        self.open_count: dict[str, int] = {}
        self.last_change: dict[str, float] = {}

    def on_row(self, row: Mapping[str, Any]) -> bool:
        """Apply a row if it is a membership row; True if it changed anything."""
        step = row.get("step")
        if step == "join":
            return is_ok(row.get("ok")) and self.join(str(row["user"]), str(row.get("room", "")), float(row["ts"]))
        if step == "leave":
            return self.leave(str(row["user"]), str(row.get("room", "")), float(row["ts"]))
        if step == "disconnect":
            return self.disconnect(str(row["user"]), float(row["ts"]))
        return False

    def join(self, user: str, room: str, ts: float) -> bool:
        rooms = self.open_rooms.setdefault(user, set())
        if room in rooms:
            return False  # already a member: a second join opens nothing
        rooms.add(room)
        self.intervals.setdefault((user, room), []).append([ts, math.inf])
        self.room_users.setdefault(room, set()).add(user)
        self._changed(room, ts, 1)
        return True

    def _changed(self, room: str, ts: float, delta: int) -> None:
        self.open_count[room] = self.open_count.get(room, 0) + delta
        if ts > self.last_change.get(room, -math.inf):
            self.last_change[room] = ts

    def leave(self, user: str, room: str, ts: float) -> bool:
        rooms = self.open_rooms.get(user)
        if not rooms or room not in rooms:
            return False
        rooms.discard(room)
        self.intervals[(user, room)][-1][1] = ts
        self._changed(room, ts, -1)
        return True

    def disconnect(self, user: str, ts: float) -> bool:
        rooms = self.open_rooms.pop(user, None)
        if not rooms:
            return False
        for room in rooms:
            self.intervals[(user, room)][-1][1] = ts
            self._changed(room, ts, -1)
        return True

    def prune(self, before: float) -> int:
        """Forget intervals that ended at or before `before`; returns how many went.

        Why: every join/leave cycle adds an interval, for the whole run; the master prunes below
        the oldest send it can still judge. Only a leading run of ended intervals goes: is_member(t)
        is decided by the last interval (in list order) starting at or before t, so for any
        t >= before it answers the same without them (a dropped decider said "no", and so does
        finding none), whatever order a user's rows came in.
        A user left with no interval in a room is no longer one of the room's users.
        """
        gone = 0
        for key in [k for k, ivs in self.intervals.items() if ivs[0][1] <= before]:
            ivs = self.intervals[key]
            n = 0
            while n < len(ivs) and ivs[n][1] <= before:
                n += 1
            gone += n
            if n < len(ivs):
                del ivs[:n]
                continue
            del self.intervals[key]
            user, room = key
            users = self.room_users.get(room)
            if users is not None:
                users.discard(user)
                if not users:
                    del self.room_users[room]
        return gone

    def is_member(self, user: str, room: str, t: float) -> bool:
        """Joined at or before t, not left or disconnected at or before t (end > t)."""
        for start, end in reversed(self.intervals.get((user, room), ())):
            if start <= t:
                return end > t
        return False

    def count(self, room: str, t: float) -> int:
        """|members(room, t)|. At or after every start and end set in the room (a send of now, the
        usual case) every interval started by t, so the last of each user's decides: open or not."""
        last = self.last_change.get(room)
        if last is None:
            return 0
        if t >= last:
            return self.open_count[room]
        return sum(1 for u in self.room_users.get(room, ()) if self.is_member(u, room, t))


class Receipts:
    """A worker's delivered counts per message id, from its own users' receipts."""

    __slots__ = ("_newest", "_old", "_pruned", "_seen", "counts", "duplicates", "membership", "not_members")

    def __init__(self, membership: Membership | None = None) -> None:
        self.membership = membership or Membership()
        self._newest = self._pruned = -math.inf
        self.counts: dict[str, int] = {}
        self._seen: set[tuple[str, str]] = set()
        self._old: set[tuple[str, str]] = set()
        self.duplicates = 0
        self.not_members = 0

    def on_row(self, row: Mapping[str, Any]) -> None:
        """Feed every row this worker records (membership rows and ok receipts)."""
        step = row.get("step")
        if step == "broadcast_recv":
            if is_ok(row.get("ok")):
                ts = float(row["ts"])
                lat = row.get("latency_ms")
                sent = ts - (float(lat) / 1000.0 if lat not in (None, "") else 0.0)
                self.receive(str(row["user"]), str(row.get("msg_id", "")), str(row.get("room", "")), sent)
                self._tick(ts)
        elif step in ("join", "leave", "disconnect"):
            self.membership.on_row(row)
            self._tick(float(row["ts"]))

    def _tick(self, ts: float) -> None:
        """Prune the membership every PRUNE_EVERY_S of this worker's time (bounded memory)."""
        if ts > self._newest and ts <= time.time() + PRUNE_EVERY_S:  # a far-future ts must not prune now
            self._newest = ts
            if ts - self._pruned >= PRUNE_EVERY_S and math.isfinite(ts):
                self._pruned = ts
                self.membership.prune(ts - RECEIPT_HORIZON_S)

    def receive(self, user: str, msg_id: str, room: str, sent: float) -> None:
        key = (user, msg_id)
        if key in self._seen or key in self._old:
            self.duplicates += 1
            return
        self._seen.add(key)
        if len(self._seen) > DEDUP_GENERATION:
            self._old, self._seen = self._seen, set()
        if not self.membership.is_member(user, room, sent):
            self.not_members += 1
            return
        self.counts[msg_id] = self.counts.get(msg_id, 0) + 1

    def drain(self) -> dict[str, int]:
        out, self.counts = self.counts, {}
        return out


__all__ = ["RECEIPT_HORIZON_S", "Membership", "Receipts"]
