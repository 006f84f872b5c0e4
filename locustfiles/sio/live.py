"""Live Socket.IO stats: incremental aggregates over the event log's batches (no Locust, no I/O).

Since issue 11 the master no longer sees every row. It receives, per worker and per second:
aggregate cells (contract.aggregate: exact counts and latency histograms), the kept rows
(contract.rowpolicy: every state row, budgeted failures, a sample), every ok broadcast send
(msg_id, room, ts) and the workers' receipt counts per message (contract.delivery.Receipts).
`LiveStats` turns them into the Socket.IO tab and sio_stats.json:
- counts (totals, steps, failures by step x kind, reconnects, latency quantiles) come from the
  cells (`add_cells`), so they are exact whatever the sampling;
- sessions, connects per node now, room membership and node-switch labels come from the state
  rows (`add_state_row`), which are always kept;
- broadcast delivery comes from the `Ledger` (ledger.py): expected = Membership.count(room, ts)
  per send, delivered = the sum of the workers' receipt counts, capped at expected
  (docs/contracts.md, "Broadcast delivery, one definition"). A send settles once the newest ts
  (bounded by the master's wall clock) is `settle_s` (60 s) past it, or DELIVERY_GRACE_S + 1 s
  past it with every expected receipt in, or `settle_s` after it reached the master; a row
  arriving for a settled send is counted in `late_rows_ignored`, not silently dropped.

`add(row)` / `add_many(rows)` (tests, re-counting a file) route a row through the same code a
worker and the master run: a `Producer` (producer.py, the worker's side: aggregator, receipts,
sends) whose output goes straight into `add_cells`, `add_state_row` and the ledger.
The ledger also gives the per-second delivery rows of the run directory (`Ledger.changed`).
`Producer`, `normalize`, `Ledger` and `SETTLED_GENERATION` are importable from here as before.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from contract.aggregate import from_wire
from contract.delivery import Membership
from contract.histogram import Histogram
from contract.rowpolicy import RowPolicyConfig
from contract.rows import DELIVERY_GRACE_S, Row  # one definition for live stats and analysis
from locustfiles.sio.ledger import SETTLED_GENERATION, Ledger
from locustfiles.sio.producer import Producer, normalize

STATE_STEPS = frozenset({"connect", "disconnect", "node_switch", "join", "leave"})
"""The steps whose kept rows change the live state (sessions, membership, switch labels)."""
NOT_KEPT_SWITCHES = "(rows not kept)"
"""The node-switch table's label for switches counted in the aggregates whose rows were not kept."""

# A server names its node in a header it chooses: one that names a new node on every answer would
# grow the per-node tables (and the tab) without end. Real clusters have tens of nodes.
MAX_DISTINCT_NODES = 1000
OTHER_NODES = "(other nodes)"


def _bounded(counter: Counter[str], key: str) -> str:
    """`key`, or OTHER_NODES once `counter` already holds MAX_DISTINCT_NODES other keys."""
    return key if key in counter or len(counter) < MAX_DISTINCT_NODES else OTHER_NODES


class LiveStats:
    """Feed batches with `add_cells` / `add_state_row` / `ledger`, or rows with `add`; read `snapshot`."""

    def __init__(self, settle_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.membership = Membership()
        self.ledger = Ledger(self.membership, settle_s, clock)
        self.settle_s = self.ledger.settle_s
        self._producer: Producer | None = None  # the `add` path's own "worker"
        self.node_names: Counter[str] = Counter()
        self.open_sessions: dict[tuple[str, str], str] = {}
        self.session_worker: dict[tuple[str, str], str] = {}  # open session -> the worker that opened it
        self.policy: dict[str, dict[str, int]] = {}  # source -> its RowPolicy.counts()
        self.sample_rate: float | None = None
        self.reset_at: float | None = None
        self._zero()

    def _zero(self) -> None:
        self.totals: Counter[str] = Counter()
        self.users: set[str] = {u for u, _sid in self.open_sessions}
        self.connects_by_node: Counter[str] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        self.steps: Counter[str] = Counter()
        self.node_switches: Counter[str] = Counter()
        self.reconnects = {"attempts": 0, "ok": 0, "failed": 0}
        self.reconnect_latency = Histogram()
        self.delivery_latency = Histogram()
        self.recovery: Counter[str] = Counter()  # the users' recovery counters (protocol/recovery.py), summed
        # the same per second of arrival here (epoch s): which fault's window a missed message falls in
        self.recovery_by_second: dict[int, Counter[str]] = {}
        self.max_ts = -math.inf
        self.min_ts = math.inf  # the oldest kept row's ts (exact: a run's first rows are connects, kept)
        self.min_cell = math.inf  # the oldest cell's second, when no row was kept

    def reset(self, now: float) -> None:
        """The web UI's "Reset stats": zero every counter, keep what is a state.

        Open sessions (connected now, per node) and room membership stay: the sessions are
        still there, and a later send must still be judged against its room's real members.
        Broadcasts sent before `now` stay out of delivery (receipts of them arriving later do
        not count either), so the ratio covers the new window only. Batches that arrive after
        the reset are counted, whatever their timestamps, as Locust's own counters do with
        workers' reports (so the receipt latencies too: they are counted by receipt).
        """
        self.reset_at = now
        max_ts = self.max_ts
        self._zero()
        self.max_ts = max_ts  # the newest time seen is a state (settling, the grace window)
        self.ledger.reset(now)

    @property
    def late_rows_ignored(self) -> int:
        """Data that came after its send settled, since the last reset (the live tab's)."""
        return self.ledger.late

    @property
    def late_rows_total(self) -> int:
        """The same over the whole run (a web UI reset does not zero it: eventlog.json's)."""
        return self.ledger.late_total

    # -- ingest: a worker's batch ---------------------------------------------------------
    def add_cells(self, wires: Iterable[list[Any]]) -> int:
        """Count aggregate cells (contract.aggregate wire lists); returns how many were malformed."""
        bad = 0
        ledger = self.ledger
        for w in wires:
            try:
                key, n, lat_n, lat_sum, lo, hi, max_ts, pairs = from_wire(w)
            except (TypeError, ValueError, IndexError):
                bad += 1
                continue
            self._count(key.step, key.node, key.ok, key.error_kind, n, max_ts, key.second)
            if max_ts > ledger.max_ts:  # per cell: one far-future cell must not hide the others' time
                ledger.see(max_ts)
            if lat_n and key.ok and key.step in ("reconnect", "broadcast_recv"):
                h = self.reconnect_latency if key.step == "reconnect" else self.delivery_latency
                h.merge_pairs(pairs, lat_n, lat_sum, lo, hi)
        return bad

    def _count(self, step: str, node: str, ok: int, kind: str, n: int, max_ts: float, second: int) -> None:
        t = self.totals
        t["rows"] += n
        self.steps[step] += n
        if max_ts > self.max_ts:
            self.max_ts = max_ts
        if second < self.min_cell:
            self.min_cell = float(second)
        if not ok:
            t["failures"] += n
            self.failures[(step, kind or "unknown")] += n
        if step == "connect":
            if ok:
                self.connects_by_node[self._node(node or "?")] += n
                t["connects"] += n
        elif step == "disconnect":
            t["disconnects"] += n
        elif step == "node_switch":
            t["node_switches"] += n
        elif step == "reconnect":
            self.reconnects["attempts"] += n
            self.reconnects["ok" if ok else "failed"] += n
        elif step == "broadcast_recv" and ok:
            t["broadcast_recvs"] += n

    def _node(self, node: str) -> str:
        name = _bounded(self.node_names, node)
        self.node_names[name] += 1
        return name

    def add_state_row(self, row: Row, worker: str = "") -> None:
        """Sessions, membership and switch labels from one kept row (counts come from cells)."""
        user = row["user"]
        ts = row["ts"]
        if user:
            self.users.add(user)
        if ts < self.min_ts:
            self.min_ts = ts
        step = row["step"]
        if step not in STATE_STEPS:
            return
        if step == "connect":
            if row["ok"]:
                key = (user, row["eio_sid"])
                self.open_sessions[key] = self._node(row["node"] or "?")
                self.session_worker[key] = worker or row["worker"] or ""
            return
        if step == "node_switch":
            self.node_switches[_bounded(self.node_switches, row["error"] or f"?->{row['node']}")] += 1
            return
        if step == "disconnect":
            self._close_session(user, row["eio_sid"])
            rooms = list(self.membership.open_rooms.get(user, ()))
            if self.membership.disconnect(user, ts):
                self.ledger.bump(rooms, ts)
        elif self.membership.on_row(row):
            self.ledger.bump((row["room"],), ts)

    def add_recovery(self, counts: Mapping[str, int]) -> None:
        """A batch's recovery counter increments (duplicated, backwards, replayed, ...)."""
        got = {k: n for k, n in counts.items() if n}
        self.recovery.update(got)
        if got:
            self.recovery_by_second.setdefault(int(time.time()), Counter()).update(got)

    def seen(self, user: str, ts: float) -> None:
        """A kept row of another step: its user and time only (add_state_row's cheap part)."""
        if user:
            self.users.add(user)
        if ts < self.min_ts:
            self.min_ts = ts

    def add_sends(self, sends: Iterable[list[Any]], now: float | None = None) -> None:
        """Ok broadcast sends (msg_id, room, ts); `now` is the receive time (default: the ledger's clock)."""
        for msg_id, room, ts in sends:
            self.ledger.add_send(str(msg_id), str(room), float(ts), now)

    def set_policy(self, source: str, counts: Mapping[str, int], sample_rate: float | None = None) -> None:
        """A process's row-policy counts (cumulative, as RowPolicy.counts gives them)."""
        self.policy[source] = {k: int(v) for k, v in counts.items()}
        if sample_rate is not None:
            self.sample_rate = sample_rate

    def tick(self, force: bool = False, now: float | None = None) -> None:
        """Let the ledger settle; `now` is the receive time (default: the ledger's clock)."""
        self.ledger.tick(self.max_ts, force, now)

    def _close_session(self, user: str, eio_sid: str) -> None:
        if (user, eio_sid) in self.open_sessions:
            del self.open_sessions[(user, eio_sid)]
            self.session_worker.pop((user, eio_sid), None)
            return
        # The session id was not known to the caller: the user's sessions all ended.
        for key in [k for k in self.open_sessions if k[0] == user]:
            del self.open_sessions[key]
            self.session_worker.pop(key, None)

    # -- ingest: one row (tests, legacy messages) ------------------------------------------
    def add(self, row: Mapping[str, Any]) -> None:
        """Count one row as if a worker recorded it and shipped it at once (every row is kept).

        A replay has no receive time: its data arrives at its data time (the ledger's bounded
        newest ts), so settling is the same whatever the machine's speed."""
        r = normalize(row)
        if r is None:
            self.totals["bad_rows"] += 1
            return
        p = self._producer
        if p is None:
            p = self._producer = Producer(RowPolicyConfig(log_all=True))
        p.add(r)
        self.add_cells(p.agg.drain())
        p.rows.clear()
        self.add_state_row(r)
        ledger = self.ledger
        ledger.see(r["ts"])
        if p.sends:
            self.add_sends(p.sends, ledger.max_ts)
            p.sends.clear()
        if p.receipts.counts:
            ledger.add_receipts(p.receipts.drain(), ledger.max_ts)
        self.set_policy("add", p.policy.counts())
        ledger.see(self.max_ts)
        self.tick(now=ledger.max_ts)

    def add_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for r in rows:
            self.add(r)

    # -- output -------------------------------------------------------------------------
    def is_member(self, user: str, room: str, t: float) -> bool:
        """members(room, t) of docs/contracts.md (contract.delivery.Membership)."""
        return self.membership.is_member(user, room, t)

    def delivery(self) -> dict[str, Any]:
        """Delivery ratio over every countable send: settled ones plus pending outside the grace window."""
        sends, excluded, expected, delivered = self.ledger.live()
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

    def eventlog_block(self) -> dict[str, Any]:
        tot: Counter[str] = Counter()
        for counts in self.policy.values():
            tot.update(counts)
        return {"kept_rows": tot["kept"], "sampled_out": tot["sampled_out"],
                "failures_over_budget": tot["failures_over_budget"], "sample_rate": self.sample_rate}

    def _first_ts(self) -> float | None:
        first = self.min_ts if self.min_ts != math.inf else self.min_cell
        return None if first == math.inf else first

    def _switches(self) -> list[dict[str, Any]]:
        out = [{"switch": k, "count": c} for k, c in sorted(self.node_switches.items())]
        rest = self.totals["node_switches"] - sum(self.node_switches.values())
        if rest > 0:  # switches counted whose rows were sampled out (failed ones over the budget)
            out.append({"switch": NOT_KEPT_SWITCHES, "count": rest})
        return out

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
        t = self.totals
        return {
            "totals": {
                "rows": t["rows"], "users": len(self.users), "connects": t["connects"],
                "connected_now": len(live), "sessions_lost_with_workers": lost, "disconnects": t["disconnects"],
                "failures": t["failures"], "node_switches": t["node_switches"],
                "reconnects": self.reconnects["attempts"], "broadcast_sends": self.ledger.live_sends,
                "broadcast_recvs": t["broadcast_recvs"], "bad_rows": t["bad_rows"],
                "late_rows_ignored": self.late_rows_ignored,
                "first_ts": self._first_ts(),
                "last_ts": None if self.max_ts == -math.inf else self.max_ts,
            },
            "reset_at": self.reset_at,
            "nodes": [{"node": n, "connected_now": current.get(n, 0), "connects_total": self.connects_by_node.get(n, 0)}
                      for n in nodes],
            "failures": [{"step": s, "error_kind": k, "count": c}
                         for (s, k), c in sorted(self.failures.items(), key=lambda x: (-x[1], x[0]))],
            "node_switches": self._switches(),
            "steps": dict(sorted(self.steps.items())),
            "reconnects": {**self.reconnects,
                           "latency_p95_ms": self.reconnect_latency.quantile(0.95),
                           "latency_mean_ms": self.reconnect_latency.mean()},
            "delivery": self.delivery(),
            "recovery": dict(sorted(self.recovery.items())),
            "recovery_by_second": {str(sec): dict(sorted(c.items()))
                                   for sec, c in sorted(self.recovery_by_second.items())},
            "eventlog": self.eventlog_block(),
        }


__all__ = ["DELIVERY_GRACE_S", "MAX_DISTINCT_NODES", "NOT_KEPT_SWITCHES", "OTHER_NODES", "SETTLED_GENERATION",
           "STATE_STEPS", "Ledger", "LiveStats", "Producer", "normalize"]
