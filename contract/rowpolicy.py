"""Which event rows are kept in full: the ones that explain something (issue 11).

Why: counts come from aggregates (contract.aggregate), exact for every step. A row is kept where
it tells what a count cannot: a session's life, a failure's detail, a sample of the rest. The
decision is made where the row is produced (the worker), so the master never sees the rest.

Classes (`RowClass`):
- STATE: rows that change a session's or a room's state, or mark a session's life. Always kept:
  every row of `LIFECYCLE_STEPS` with ok=1, every `join`, `leave` and `recover`, and the `disconnect` of a
  session that had connected (the analysis counts open sessions and room members from them).
- FAILURE: any other ok=0 row. The first of each (user, step, error_kind) is always kept; after
  that at most `failure_rows_per_s` a second in this process; the rest are counted, not kept.
- SAMPLED: ok=1 rows of the high-volume steps (poll, ping, ack, emit, broadcast_send,
  broadcast_recv) and of a scenario's own steps. The first `first_n` per (user, step) are kept,
  then one in round(1 / sample_rate), at an offset fixed by the user id (deterministic: the same
  run keeps the same rows). sample_rate 0 keeps only the first ones; 1 keeps all.
- `log_all` keeps every row (the proof that the aggregates match the rows, on the same run).
Stdlib only (contract layer).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from contract.rows import is_ok

LIFECYCLE_STEPS = frozenset({
    "handshake", "connect", "upgrade_probe", "upgrade", "join", "leave", "node_switch", "disconnect",
    "reconnect", "recover",
})
ALWAYS_STEPS = frozenset({"join", "leave", "recover", "caught_up"})
"""Kept whatever their outcome: a failed leave still ends membership (docs/contracts.md); a failed
recover is a session that lost its rooms and missed packets, a state change as much as a success;
`caught_up` (one per reconnect of a chat receiver) is what the recovery table's catch-up time is read from."""

DEFAULT_SAMPLE_RATE = 0.01
"""A chat user makes ~6 rows a second, ~5 of them sampled: 10,000 users for an hour keep ~2 M
sampled rows at 1 %, tens of MB in Parquet (benchmarks/eventlog.py measures bytes per user-hour)."""
DEFAULT_FIRST_N = 5
DEFAULT_FAILURE_ROWS_PER_S = 500


class RowClass(StrEnum):
    STATE = "state"
    FAILURE = "failure"
    SAMPLED = "sampled"


@dataclass(frozen=True)
class RowPolicyConfig:
    sample_rate: float = DEFAULT_SAMPLE_RATE
    first_n: int = DEFAULT_FIRST_N
    failure_rows_per_s: int = DEFAULT_FAILURE_ROWS_PER_S
    log_all: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample rate {self.sample_rate!r}: between 0 and 1")
        if self.first_n < 0 or self.failure_rows_per_s < 0:
            raise ValueError("first rows and failure rows per second: 0 or more")

    @property
    def every(self) -> int:
        """Keep one sampled row in `every` (0: none after the first ones)."""
        return 0 if self.sample_rate <= 0 else max(1, round(1.0 / self.sample_rate))

    def as_json(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "sample_every": self.every, "first_n": self.first_n,
                "failure_rows_per_s": self.failure_rows_per_s, "log_all": self.log_all}


def classify(step: str, ok: bool) -> RowClass:
    """The class of a row, before the per-session rule for `disconnect` (see RowPolicy.keep)."""
    if step in ALWAYS_STEPS or (ok and step in LIFECYCLE_STEPS):
        return RowClass.STATE
    return RowClass.SAMPLED if ok else RowClass.FAILURE


class RowPolicy:
    """One process's keep/drop decisions and their counts (all exact)."""

    def __init__(self, config: RowPolicyConfig | None = None) -> None:
        self.config = config or RowPolicyConfig()
        self._every = self.config.every
        self._seen: dict[tuple[str, str], int] = {}  # (user, step) -> ok sampled-class rows seen
        self._offset: dict[str, int] = {}
        self._first_failures: set[tuple[str, str, str]] = set()
        self._connected: set[tuple[str, str]] = set()  # (user, eio_sid) with an ok connect, not yet ended
        self._second = -1
        self._failures_this_second = 0
        self.kept = 0
        self.sampled_out = 0
        self.failures_over_budget = 0

    def keep(self, row: Mapping[str, Any]) -> bool:
        kept = self._decide(row)
        if kept:
            self.kept += 1
        return kept

    def _decide(self, row: Mapping[str, Any]) -> bool:
        step = row["step"]
        ok = is_ok(row["ok"])
        user = row["user"]
        if step == "connect" and ok:
            self._connected.add((user, row["eio_sid"]))
        elif step == "disconnect" and self._end_session(user, row["eio_sid"]):
            return True  # a connected session's end: state, whatever its outcome
        if self.config.log_all:
            return True
        cls = classify(step, ok)
        if cls is RowClass.STATE:
            return True
        if cls is RowClass.FAILURE:
            return self._failure(row, step, user)
        key = (user, step)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        first_n = self.config.first_n
        if n < first_n:
            return True
        if self._every and (n - first_n + self._user_offset(user)) % self._every == 0:
            return True
        self.sampled_out += 1
        return False

    def _end_session(self, user: str, eio_sid: str) -> bool:
        if (user, eio_sid) in self._connected:
            self._connected.discard((user, eio_sid))
            return True
        if eio_sid:
            return False
        # no sid on the row: the user's sessions all ended (as LiveStats reads it)
        mine = [k for k in self._connected if k[0] == user]
        self._connected.difference_update(mine)
        return bool(mine)

    def _failure(self, row: Mapping[str, Any], step: str, user: str) -> bool:
        first = (user, step, row["error_kind"])
        if first not in self._first_failures:
            self._first_failures.add(first)
            return True
        second = int(row["ts"])
        if second != self._second:
            self._second, self._failures_this_second = second, 0
        if self._failures_this_second < self.config.failure_rows_per_s:
            self._failures_this_second += 1
            return True
        self.failures_over_budget += 1
        return False

    def _user_offset(self, user: str) -> int:
        off = self._offset.get(user)
        if off is None:
            off = self._offset[user] = zlib.crc32(user.encode("utf-8", "surrogatepass")) % self._every
        return off

    def counts(self) -> dict[str, int]:
        return {"kept": self.kept, "sampled_out": self.sampled_out, "failures_over_budget": self.failures_over_budget}


__all__ = ["ALWAYS_STEPS", "DEFAULT_FAILURE_ROWS_PER_S", "DEFAULT_FIRST_N", "DEFAULT_SAMPLE_RATE", "LIFECYCLE_STEPS",
           "RowClass", "RowPolicy", "RowPolicyConfig", "classify"]
