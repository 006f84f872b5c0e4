"""Live Socket.IO stats: a pure, incremental aggregate over event rows (no Locust, no I/O).

The master feeds it every row of every worker (see eventlog.py), so the numbers are the same
whether one process or many produced the rows. Broadcast delivery follows the ONE definition
in docs/contracts.md ("Broadcast delivery, one definition"), which the analysis computes in
pandas over events.csv; this is the incremental version of it.

Why it is hand-written: rows of different workers arrive out of timestamp order (a receiver on
worker B may report before the sender on worker A), so delivery is judged against membership
*at the send's timestamp*, from each user's join/leave/disconnect history, not against the
current state. Sends older than `settle_s` (60 s) behind the newest row are folded into totals
and forgotten, which bounds memory and snapshot time on long runs; a row arriving later than
that (a receipt more than 60 s late) is counted in `late_rows_ignored`, not silently dropped.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from contract.fmt import num  # stdlib-only: no numpy/pandas in the workers (see test_fmt.py)
from contract.rows import DELIVERY_GRACE_S  # one definition for live stats and analysis

_MEMBERSHIP_STEPS = ("join", "leave", "disconnect")


def _is_ok(v: Any) -> bool:
    return str(v).strip() in ("1", "1.0", "True", "true")


# A server names its node in a header it chooses: one that names a new node on every answer would
# grow the per-node tables (and the tab) without end. Real clusters have tens of nodes.
MAX_DISTINCT_NODES = 1000
OTHER_NODES = "(other nodes)"


def _bounded(counter: Counter[str], key: str) -> str:
    """`key`, or OTHER_NODES once `counter` already holds MAX_DISTINCT_NODES other keys."""
    return key if key in counter or len(counter) < MAX_DISTINCT_NODES else OTHER_NODES


class Quantiles:
    """Latency distribution in bounded memory: values kept to 0.1 ms below 100 ms, 1 ms above.

    Percentiles are linearly interpolated like numpy/pandas' default, over the rounded
    values, so they agree with the analysis within the rounding step.
    """

    def __init__(self) -> None:
        self.counts: Counter[float] = Counter()
        self.n = 0
        self.total = 0.0

    def add(self, v: float) -> None:
        key = round(v, 1) if v < 100 else float(round(v))
        self.counts[key] += 1
        self.n += 1
        self.total += v

    def quantile(self, q: float) -> float | None:
        if self.n == 0:
            return None
        keys = sorted(self.counts)
        pos = q * (self.n - 1)
        lo_i, hi_i = math.floor(pos), math.ceil(pos)
        lo = hi = None
        seen = 0
        for k in keys:
            seen += self.counts[k]
            if lo is None and seen > lo_i:
                lo = k
            if seen > hi_i:
                hi = k
                break
        assert lo is not None and hi is not None
        return lo + (hi - lo) * (pos - lo_i)

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass
class _Send:
    room: str
    ts: float
    receivers: set[str] = field(default_factory=set)
    members: frozenset[str] | None = None  # members(room, ts), cached until the room's history changes
    version: int = -1


class LiveStats:
    """Feed rows with `add`; read a JSON-able dict with `snapshot`."""

    def __init__(self, settle_s: float = 60.0) -> None:
        self.settle_s = max(settle_s, DELIVERY_GRACE_S)
        self.totals: Counter[str] = Counter()
        self.users: set[str] = set()
        # connections: node -> total connects; session key -> node for sessions open now
        self.connects_by_node: Counter[str] = Counter()
        self.open_sessions: dict[tuple[str, str], str] = {}
        self.session_worker: dict[tuple[str, str], str] = {}  # open session -> the worker that opened it
        self.failures: Counter[tuple[str, str]] = Counter()
        self.steps: Counter[str] = Counter()
        self.node_switches: Counter[str] = Counter()
        self.reconnects = {"attempts": 0, "ok": 0, "failed": 0}
        self.reconnect_latency = Quantiles()
        # broadcast delivery
        self.delivery_latency = Quantiles()
        self.pending: dict[str, _Send] = {}
        self.early_recv: dict[str, set[str]] = defaultdict(set)  # recv seen before its send row
        self.settled_expected = 0
        self.settled_delivered = 0
        self.settled_sends = 0
        self.late_rows_ignored = 0
        self.settled_until = -math.inf
        # membership history: (user, room) -> sorted [(ts, +1 join / -1 leave)]; user -> disconnect ts
        self.history: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
        self.room_users: dict[str, set[str]] = defaultdict(set)
        self.user_rooms: dict[str, set[str]] = defaultdict(set)
        self.room_version: Counter[str] = Counter()  # bumped by every membership row of the room
        self.disconnects: dict[str, list[float]] = defaultdict(list)
        self.max_ts = -math.inf
        self.min_ts = math.inf
        self.reset_at: float | None = None

    def reset(self, now: float) -> None:
        """The web UI's "Reset stats": zero every counter, keep what is a state.

        Open sessions (connected now, per node) and room membership stay: the sessions are
        still there, and a later send must still be judged against its room's real members.
        Broadcasts sent before `now` are dropped and stay out of delivery (a receipt of one
        arriving later is not counted either), so the ratio covers the new window only.
        Rows that arrive after the reset are counted, whatever their timestamp, as Locust's
        own counters do with workers' reports.
        """
        self.reset_at = now
        self.totals = Counter()
        self.users = {u for u, _sid in self.open_sessions}
        self.connects_by_node = Counter()
        self.failures = Counter()
        self.steps = Counter()
        self.node_switches = Counter()
        self.reconnects = {"attempts": 0, "ok": 0, "failed": 0}
        self.reconnect_latency = Quantiles()
        self.delivery_latency = Quantiles()
        self.pending = {}
        self.early_recv = defaultdict(set)
        self.settled_expected = self.settled_delivered = self.settled_sends = 0
        self.late_rows_ignored = 0
        self.min_ts = math.inf

    # -- ingest -------------------------------------------------------------------------
    def add(self, row: dict[str, Any]) -> None:
        step = str(row.get("step", ""))
        ts = num(row.get("ts"))
        if ts is None:
            self.totals["bad_rows"] += 1
            return
        ok = _is_ok(row.get("ok", 1))
        user = str(row.get("user", ""))
        node = str(row.get("node", "") or "")
        self.totals["rows"] += 1
        self.steps[step] += 1
        if user:
            self.users.add(user)
        self.max_ts = max(self.max_ts, ts)
        self.min_ts = min(self.min_ts, ts)
        if not ok:
            self.totals["failures"] += 1
            self.failures[(step, str(row.get("error_kind", "") or "unknown"))] += 1

        if step == "connect" and ok:
            node = _bounded(self.connects_by_node, node or "?")
            self.connects_by_node[node] += 1
            key = (user, str(row.get("eio_sid", "")))
            self.open_sessions[key] = node
            self.session_worker[key] = str(row.get("worker", "") or "")
            self.totals["connects"] += 1
        elif step == "disconnect":
            self._close_session(user, str(row.get("eio_sid", "")))
            self.totals["disconnects"] += 1
        elif step == "node_switch":
            self.node_switches[_bounded(self.node_switches, str(row.get("error", "") or f"?->{node}"))] += 1
            self.totals["node_switches"] += 1
        elif step == "reconnect":
            self.reconnects["attempts"] += 1
            self.reconnects["ok" if ok else "failed"] += 1
            lat = num(row.get("latency_ms"))
            if ok and lat is not None:
                self.reconnect_latency.add(lat)
        if step in _MEMBERSHIP_STEPS:
            self._membership(step, ok, user, str(row.get("room", "")), ts)
        elif step == "broadcast_send" and ok:
            self._send(str(row.get("msg_id", "")), str(row.get("room", "")), ts)
        elif step == "broadcast_recv" and ok:
            self._recv(str(row.get("msg_id", "")), user, num(row.get("latency_ms")), ts)
        self._settle()

    def add_many(self, rows: Any) -> None:
        for r in rows:
            self.add(r)

    def _close_session(self, user: str, eio_sid: str) -> None:
        if (user, eio_sid) in self.open_sessions:
            del self.open_sessions[(user, eio_sid)]
            self.session_worker.pop((user, eio_sid), None)
            return
        # The session id was not known to the caller: the user's sessions all ended.
        for key in [k for k in self.open_sessions if k[0] == user]:
            del self.open_sessions[key]
            self.session_worker.pop(key, None)

    def _membership(self, step: str, ok: bool, user: str, room: str, ts: float) -> None:
        if ts <= self.settled_until:
            self.late_rows_ignored += 1
        if step == "disconnect":
            bisect.insort(self.disconnects[user], ts)
            for room_of_user in self.user_rooms.get(user, ()):
                self.room_version[room_of_user] += 1
            return
        self.room_version[room] += 1
        if step == "join":
            if ok:
                bisect.insort(self.history[(user, room)], (ts, 1))
                self.room_users[room].add(user)
                self.user_rooms[user].add(room)
        else:  # leave
            bisect.insort(self.history[(user, room)], (ts, -1))

    def _send(self, msg_id: str, room: str, ts: float) -> None:
        if self.reset_at is not None and ts < self.reset_at:
            self.early_recv.pop(msg_id, None)
            return  # sent before a reset: outside the window being measured
        if ts <= self.settled_until:
            self.late_rows_ignored += 1
            return
        s = _Send(room, ts)
        s.receivers |= self.early_recv.pop(msg_id, set())
        self.pending[msg_id] = s
        self.totals["broadcast_sends"] += 1

    def _recv(self, msg_id: str, user: str, latency: float | None, ts: float) -> None:
        if self.reset_at is not None and msg_id not in self.pending and ts - (latency or 0.0) / 1000.0 < self.reset_at:
            return  # a receipt of a broadcast sent before a reset
        self.totals["broadcast_recvs"] += 1
        if latency is not None:
            self.delivery_latency.add(latency)
        s = self.pending.get(msg_id)
        if s is not None:
            s.receivers.add(user)
        elif ts - (latency or 0.0) / 1000.0 <= self.settled_until:
            self.late_rows_ignored += 1  # its send was settled already: it cannot count any more
        else:
            # Its send row has not arrived yet (another worker), or was settled long ago.
            self.early_recv[msg_id].add(user)

    # -- delivery -----------------------------------------------------------------------
    def is_member(self, user: str, room: str, t: float) -> bool:
        """members(room, t) of docs/contracts.md: last ok join <= t, no leave/disconnect after it (<= t)."""
        hist = self.history.get((user, room))
        if not hist:
            return False
        last_join = None
        for ts, kind in hist:
            if ts > t:
                break
            if kind == 1:
                last_join = ts
        if last_join is None:
            return False
        if any(last_join < ts <= t and kind == -1 for ts, kind in hist):
            return False
        return not any(last_join < ts <= t for ts in self.disconnects.get(user, ()))

    def _judge(self, s: _Send) -> tuple[int, int]:
        version = self.room_version[s.room]
        if s.members is None or s.version != version:
            s.members = frozenset(u for u in self.room_users.get(s.room, ()) if self.is_member(u, s.room, s.ts))
            s.version = version
        return len(s.members), len(s.members & s.receivers)

    def _settle(self) -> None:
        """Fold sends far behind the newest row into totals; they can no longer change."""
        horizon = self.max_ts - self.settle_s
        if horizon <= self.settled_until:
            return
        # Only every so often (a second of progress), to keep add() cheap.
        if horizon - self.settled_until < 1.0 and self.settled_until != -math.inf:
            return
        done = [m for m, s in self.pending.items() if s.ts <= horizon]
        for m in done:
            exp, dlv = self._judge(self.pending.pop(m))
            self.settled_expected += exp
            self.settled_delivered += dlv
            self.settled_sends += 1
        self.settled_until = horizon
        for m in [m for m in self.early_recv if m not in self.pending]:
            # Receipts whose send is older than the horizon or never came: not countable.
            if len(self.early_recv) > 100_000:
                del self.early_recv[m]

    def delivery(self) -> dict[str, Any]:
        """Delivery ratio over every countable send: settled ones plus pending outside the grace window."""
        expected, delivered, sends, excluded = (self.settled_expected, self.settled_delivered,
                                                self.settled_sends, 0)
        end = self.max_ts
        for s in self.pending.values():
            if s.ts > end - DELIVERY_GRACE_S:
                excluded += 1
                continue
            exp, dlv = self._judge(s)
            expected += exp
            delivered += dlv
            sends += 1
        return {
            "sends_counted": sends,
            "sends_in_grace": excluded,
            "expected": expected,
            "delivered": delivered,
            "ratio": delivered / expected if expected else None,
            "latency_p50_ms": self.delivery_latency.quantile(0.50),
            "latency_p95_ms": self.delivery_latency.quantile(0.95),
            "latency_mean_ms": self.delivery_latency.mean(),
            "receipts": self.delivery_latency.n,
        }

    # -- output -------------------------------------------------------------------------
    def snapshot(self, lost_workers: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
        """A JSON-able dict: the Socket.IO tab's tables and sio_stats.json.

        `lost_workers`: workers that went missing. Their sessions are not "connected now" (no
        disconnect row will ever close them, and no load comes from them): they are counted apart
        as `sessions_lost_with_workers`, so the progress line and the tab show the live load only.
        """
        lost = 0
        if lost_workers:
            live = {k: n for k, n in self.open_sessions.items() if self.session_worker.get(k) not in lost_workers}
            lost = len(self.open_sessions) - len(live)
        else:
            live = self.open_sessions
        current = Counter(live.values())
        nodes = sorted(set(self.connects_by_node) | set(current))
        return {
            "totals": {
                "rows": self.totals["rows"],
                "users": len(self.users),
                "connects": self.totals["connects"],
                "connected_now": len(live),
                "sessions_lost_with_workers": lost,
                "disconnects": self.totals["disconnects"],
                "failures": self.totals["failures"],
                "node_switches": self.totals["node_switches"],
                "reconnects": self.reconnects["attempts"],
                "broadcast_sends": self.totals["broadcast_sends"],
                "broadcast_recvs": self.totals["broadcast_recvs"],
                "bad_rows": self.totals["bad_rows"],
                "late_rows_ignored": self.late_rows_ignored,
                "first_ts": None if self.min_ts == math.inf else self.min_ts,
                "last_ts": None if self.max_ts == -math.inf else self.max_ts,
            },
            "reset_at": self.reset_at,
            "nodes": [{"node": n, "connected_now": current.get(n, 0), "connects_total": self.connects_by_node.get(n, 0)}
                      for n in nodes],
            "failures": [{"step": s, "error_kind": k, "count": c}
                         for (s, k), c in sorted(self.failures.items(), key=lambda x: (-x[1], x[0]))],
            "node_switches": [{"switch": k, "count": c} for k, c in sorted(self.node_switches.items())],
            "steps": dict(sorted(self.steps.items())),
            "reconnects": {**self.reconnects,
                           "latency_p95_ms": self.reconnect_latency.quantile(0.95),
                           "latency_mean_ms": self.reconnect_latency.mean()},
            "delivery": self.delivery(),
        }
