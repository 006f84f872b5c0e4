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
- broadcast delivery comes from the `Ledger`: expected = Membership.count(room, ts) per send,
  delivered = the sum of the workers' receipt counts, capped at expected (docs/contracts.md,
  "Broadcast delivery, one definition"). A send settles once the newest ts is `settle_s` (60 s)
  past it, or DELIVERY_GRACE_S + 1 s past it with every expected receipt in; a row arriving for
  a settled send is counted in `late_rows_ignored`, not silently dropped.

`add(row)` / `add_many(rows)` (tests, the legacy row message, re-counting a file) route a row
through the same code a worker and the master run: a `Producer` (the worker's side: aggregator,
receipts, sends) whose output goes straight into `add_cells`, `add_state_row` and the ledger.
The ledger also gives the per-second delivery rows of the run directory (`Ledger.changed`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from contract.aggregate import Aggregator, from_wire
from contract.delivery import Membership, Receipts
from contract.fmt import num  # stdlib-only: no numpy/pandas in the workers (see test_fmt.py)
from contract.histogram import Histogram
from contract.rowpolicy import RowPolicy, RowPolicyConfig
from contract.rows import COLUMNS, DELIVERY_GRACE_S, Row, is_ok  # one definition for live stats and analysis

_MEMBERSHIP_STEPS = frozenset({"join", "leave", "disconnect"})
STATE_STEPS = frozenset({"connect", "disconnect", "node_switch", "join", "leave"})
"""The steps whose kept rows change the live state (sessions, membership, switch labels)."""
SETTLED_GENERATION = 200_000
"""Settled message ids remembered (two generations) to tell a late receipt from an early one."""
NOT_KEPT_SWITCHES = "(rows not kept)"
"""The node-switch table's label for switches counted in the aggregates whose rows were not kept."""

# A server names its node in a header it chooses: one that names a new node on every answer would
# grow the per-node tables (and the tab) without end. Real clusters have tens of nodes.
MAX_DISTINCT_NODES = 1000
OTHER_NODES = "(other nodes)"


def _bounded(counter: Counter[str], key: str) -> str:
    """`key`, or OTHER_NODES once `counter` already holds MAX_DISTINCT_NODES other keys."""
    return key if key in counter or len(counter) < MAX_DISTINCT_NODES else OTHER_NODES


def normalize(row: Mapping[str, Any]) -> Row | None:
    """A row as typed values (CSV strings and hand-made dicts too); None when its ts is not a number."""
    ts = num(row.get("ts"))
    if ts is None:
        return None
    out: dict[str, Any] = {c: ("" if row.get(c) is None else str(row.get(c))) for c in COLUMNS}
    ok = 1 if is_ok(row.get("ok", 1)) else 0
    lat = num(row.get("latency_ms"))
    out.update(ts=float(ts), ok=ok, latency_ms=None if lat is None or lat < 0 else float(lat),
               error_kind=out["error_kind"] or ("" if ok else "unknown"))
    out["name"] = out["name"] or out["step"]
    return out  # type: ignore[return-value]


class Producer:
    """One process's side of the event log: what `eventlog.record` does with every row.

    Why here (not in eventlog.py): `LiveStats.add` must count a row exactly as a worker and the
    master would, so both use this one definition. The row is counted in the aggregator (exact),
    fed to the receipts (delivery at the receivers), an ok broadcast_send goes to `sends` (every
    one), and the row is kept only if the row policy keeps it (bounded by `max_held`).
    """

    __slots__ = ("agg", "dropped", "max_held", "policy", "receipts", "rows", "sends")

    def __init__(self, config: RowPolicyConfig | None = None, max_held: int = 1_000_000) -> None:
        self.agg = Aggregator()
        self.receipts = Receipts()
        self.policy = RowPolicy(config)
        self.rows: list[Row] = []
        self.sends: list[list[Any]] = []
        self.dropped = 0  # kept rows and sends that did not fit in max_held (their counts stay exact)
        self.max_held = max_held

    def add(self, row: Row) -> bool:
        """Count one well-typed row (contract.rows.make_row: ts float, ok int, latency float or None);
        True when it is kept. TypeError/KeyError, before anything is counted, for any other row."""
        step, ok, ts, lat = row["step"], row["ok"], row["ts"], row["latency_ms"]
        if type(ts) is not float or type(ok) is not int or (lat is not None and type(lat) is not float):
            raise TypeError("not a typed row (contract.rows.make_row); normalize() it first")  # before counting
        self.agg.add(ts, step, row["name"], row["node"], row["transport"], 1 if ok else 0,
                     row["error_kind"] or ("" if ok else "unknown"), lat)
        if step == "broadcast_recv" or step in _MEMBERSHIP_STEPS:
            self.receipts.on_row(row)
        elif step == "broadcast_send" and ok:
            if len(self.sends) < self.max_held:
                self.sends.append([row["msg_id"], row["room"], row["ts"]])
            else:
                self.dropped += 1
        if not self.policy.keep(row):
            return False
        if len(self.rows) >= self.max_held:
            self.dropped += 1
            return False
        self.rows.append(row)
        return True


class Ledger:
    """Broadcast delivery per send, from sends, receipt counts and the master's membership.

    One ledger serves the live view (reset by the web UI) and the run directory's per-second
    rows (never reset): `reset` only moves the live window.
    """

    def __init__(self, membership: Membership, settle_s: float = 60.0) -> None:
        self.membership = membership
        self.settle_s = max(settle_s, DELIVERY_GRACE_S + 1.0)
        # msg_id -> [room, ts, delivered, expected (cached), room version of the cache, live]
        self.pending: dict[str, list[Any]] = {}
        self.early: dict[str, list[float]] = {}  # msg_id -> [receipts, newest ts when they came]
        self.settled_ids: set[str] = set()
        self._old_ids: set[str] = set()
        self.room_version: Counter[str] = Counter()
        self.max_ts = -math.inf
        self.settled_until = -math.inf
        self._last_settle = -math.inf
        self.late = 0
        # run-directory rows: second -> [sent, expected, delivered] of settled sends
        self.settled_buckets: dict[int, list[int]] = {}
        self.dirty: set[int] = set()
        self.written: dict[int, tuple[int, int, int, int]] = {}
        # live window (web UI reset)
        self.live_from: float | None = None
        self.live_sends = self.live_settled_sends = self.live_expected = self.live_delivered = 0

    def reset(self, now: float) -> None:
        self.live_from = now
        for s in self.pending.values():
            s[5] = False
        self.live_sends = self.live_settled_sends = self.live_expected = self.live_delivered = 0
        self.late = 0

    def bump(self, rooms: Iterable[str], ts: float) -> None:
        """Membership of these rooms changed at ts: cached expected counts are stale."""
        for r in rooms:
            self.room_version[r] += 1
        if ts <= self.settled_until:
            self.late += 1

    def add_send(self, msg_id: str, room: str, ts: float) -> None:
        if ts <= self.settled_until or msg_id in self.settled_ids or msg_id in self.pending:
            self.late += 1  # its fate was settled already (or a duplicate): it cannot count any more
            return
        early = self.early.pop(msg_id, None)
        live = self.live_from is None or ts >= self.live_from
        self.pending[msg_id] = [room, ts, int(early[0]) if early else 0, 0, -1, live]
        if live:
            self.live_sends += 1
        self.max_ts = max(self.max_ts, ts)

    def add_receipts(self, counts: Mapping[str, int]) -> None:
        for msg_id, n in counts.items():
            s = self.pending.get(msg_id)
            if s is not None:
                s[2] += n
            elif msg_id in self.settled_ids or msg_id in self._old_ids:
                self.late += n
            else:  # its send has not arrived yet (another worker's batch)
                e = self.early.get(msg_id)
                if e is None:
                    self.early[msg_id] = [n, self.max_ts]
                else:
                    e[0] += n

    def expected(self, s: list[Any]) -> int:
        v = self.room_version[s[0]]
        if s[4] != v:
            s[3] = self.membership.count(s[0], s[1])
            s[4] = v
        return int(s[3])

    def tick(self, newest: float, force: bool = False) -> None:
        """Settle what can no longer change (once per second of progress unless forced)."""
        self.max_ts = max(self.max_ts, newest)
        if not force and self.max_ts - self._last_settle < 1.0:
            return
        self._last_settle = self.max_ts
        horizon, quick = self.max_ts - self.settle_s, self.max_ts - (DELIVERY_GRACE_S + 1.0)
        done = []
        for m, s in self.pending.items():
            if s[1] <= horizon:
                done.append(m)
            elif s[1] <= quick and s[2] >= self.expected(s):
                done.append(m)
        for m in done:
            self._settle(m, self.pending.pop(m))
        self.settled_until = max(self.settled_until, horizon)
        for m in [m for m, e in self.early.items() if e[1] <= horizon]:
            self.late += int(self.early.pop(m)[0])  # receipts whose send never came in time

    def _settle(self, msg_id: str, s: list[Any]) -> None:
        exp = self.expected(s)
        dlv = min(s[2], exp)
        sec = int(s[1])
        b = self.settled_buckets.get(sec)
        if b is None:
            b = self.settled_buckets[sec] = [0, 0, 0]
        b[0] += 1
        b[1] += exp
        b[2] += dlv
        self.dirty.add(sec)
        if s[5]:
            self.live_settled_sends += 1
            self.live_expected += exp
            self.live_delivered += dlv
        self.settled_ids.add(msg_id)
        if len(self.settled_ids) > SETTLED_GENERATION:
            self._old_ids, self.settled_ids = self.settled_ids, set()

    def live(self) -> tuple[int, int, int, int]:
        """(sends counted, sends in the grace window, expected, delivered) of the live window."""
        sends, excluded = self.live_settled_sends, 0
        expected, delivered = self.live_expected, self.live_delivered
        end = self.max_ts - DELIVERY_GRACE_S
        for s in self.pending.values():
            if not s[5]:
                continue
            if s[1] > end:
                excluded += 1
                continue
            exp = self.expected(s)
            sends += 1
            expected += exp
            delivered += min(s[2], exp)
        return sends, excluded, expected, delivered

    def changed(self, final: bool, written: float) -> list[list[Any]]:
        """The run directory's delivery rows (contract.eventfiles.DELIVERY_TYPES) whose numbers
        changed since the last `commit`; with `final`, every second with the grace window applied."""
        seconds = (set(self.settled_buckets) | set(self.written)) if final else self.dirty
        now: dict[int, list[int]] = {sec: list(self.settled_buckets.get(sec, (0, 0, 0))) for sec in seconds}
        end = self.max_ts - DELIVERY_GRACE_S
        for s in self.pending.values():
            if final and s[1] > end:
                continue
            sec = int(s[1])
            b = now.get(sec)
            if b is None:
                b = now[sec] = list(self.settled_buckets.get(sec, (0, 0, 0)))
            exp = self.expected(s)
            b[0] += 1
            b[1] += exp
            b[2] += min(s[2], exp)
        out = []
        for sec in sorted(now):
            vals = (*now[sec], 1 if final else 0)
            if final or self.written.get(sec) != vals:
                out.append([sec, *vals, written])
        return out

    def commit(self, rows: list[list[Any]]) -> None:
        """The rows of `changed` are on disk."""
        for r in rows:
            self.written[int(r[0])] = (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            self.dirty.discard(int(r[0]))


class LiveStats:
    """Feed batches with `add_cells` / `add_state_row` / `ledger`, or rows with `add`; read `snapshot`."""

    def __init__(self, settle_s: float = 60.0) -> None:
        self.membership = Membership()
        self.ledger = Ledger(self.membership, settle_s)
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
        return self.ledger.late

    # -- ingest: a worker's batch ---------------------------------------------------------
    def add_cells(self, wires: Iterable[list[Any]]) -> int:
        """Count aggregate cells (contract.aggregate wire lists); returns how many were malformed."""
        bad = 0
        for w in wires:
            try:
                key, n, lat_n, lat_sum, lo, hi, max_ts, pairs = from_wire(w)
            except (TypeError, ValueError, IndexError):
                bad += 1
                continue
            self._count(key.step, key.node, key.ok, key.error_kind, n, max_ts, key.second)
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

    def seen(self, user: str, ts: float) -> None:
        """A kept row of another step: its user and time only (add_state_row's cheap part)."""
        if user:
            self.users.add(user)
        if ts < self.min_ts:
            self.min_ts = ts

    def add_sends(self, sends: Iterable[list[Any]]) -> None:
        for msg_id, room, ts in sends:
            self.ledger.add_send(str(msg_id), str(room), float(ts))

    def set_policy(self, source: str, counts: Mapping[str, int], sample_rate: float | None = None) -> None:
        """A process's row-policy counts (cumulative, as RowPolicy.counts gives them)."""
        self.policy[source] = {k: int(v) for k, v in counts.items()}
        if sample_rate is not None:
            self.sample_rate = sample_rate

    def tick(self, force: bool = False) -> None:
        self.ledger.tick(self.max_ts, force)

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
        """Count one row as if a worker recorded it and shipped it at once (every row is kept)."""
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
        if p.sends:
            self.add_sends(p.sends)
            p.sends.clear()
        if p.receipts.counts:
            self.ledger.add_receipts(p.receipts.drain())
        self.set_policy("add", p.policy.counts())
        self.tick()

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
            "eventlog": self.eventlog_block(),
        }
