"""One process's side of the event log: what `eventlog.record` does with every row (no I/O).

Why a module of its own: `LiveStats.add` (live.py) must count a row exactly as a worker and the
master would, so both use this one definition; live.py is the master's view, ledger.py its
delivery accounting, this the producing side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contract.aggregate import Aggregator
from contract.delivery import Receipts
from contract.fmt import num  # stdlib-only: no numpy/pandas in the workers (see test_fmt.py)
from contract.rowpolicy import RowClass, RowPolicy, RowPolicyConfig, classify
from contract.rows import COLUMNS, Row, is_ok

_MEMBERSHIP_STEPS = frozenset({"join", "leave", "disconnect"})
_COLUMN_SET = frozenset(COLUMNS)


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
    """The row is counted in the aggregator (exact), fed to the receipts (delivery at the
    receivers), an ok broadcast_send goes to `sends` (every one), and the row is kept only if the
    row policy keeps it. `max_held` bounds the rows held between two flushes: past it only state
    rows are still held, up to twice it (all of it counted in `dropped`).
    """

    __slots__ = ("agg", "dropped", "max_held", "policy", "receipts", "recovery", "rows", "sends")

    def __init__(self, config: RowPolicyConfig | None = None, max_held: int = 1_000_000) -> None:
        self.agg = Aggregator()
        self.receipts = Receipts()
        self.policy = RowPolicy(config)
        self.rows: list[Row] = []
        self.sends: list[list[Any]] = []
        self.dropped = 0  # kept rows and sends that did not fit in max_held (their counts stay exact)
        self.max_held = max_held
        # the users' connection-state recovery counters (protocol/recovery.py COUNTERS) since the last
        # batch: counts, not rows, so they survive Locust's distributed mode as exactly as the cells
        self.recovery: dict[str, int] = {}

    def add_recovery(self, deltas: dict[str, int]) -> None:
        """Add a user's recovery counter increments (what changed since it last shipped)."""
        for k, n in deltas.items():
            if n:
                self.recovery[k] = self.recovery.get(k, 0) + n

    def add(self, row: Row) -> bool:
        """Count one well-typed row with every column (contract.rows.make_row: ts float, ok int,
        latency float or None); True when it is kept. TypeError/KeyError, before anything is
        counted, for any other row (the caller then normalizes it and adds it once)."""
        if not row.keys() >= _COLUMN_SET:  # checked first: a missing user must not count the step twice
            raise KeyError(f"not a full row, lacks {sorted(_COLUMN_SET - row.keys())}")
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
        n = len(self.rows)
        if n >= self.max_held and (n >= 2 * self.max_held or not _is_state(step, ok)):
            self.dropped += 1  # sampled and failure rows first: the state rows explain the run
            return False
        self.rows.append(row)
        return True


def _is_state(step: str, ok: int) -> bool:
    """A row the analysis needs whatever else is dropped (sessions, membership): logstate's rule."""
    return step == "disconnect" or classify(step, ok == 1) is RowClass.STATE


__all__ = ["Producer", "normalize"]
