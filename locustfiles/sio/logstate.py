"""The event log's per-process state, shared by its modules (eventlog.py: record and ship;
ingest.py: the master's checks and merge; writer.py: the run directory's files).

Why a module of its own: the three modules read and change one state object per Locust
environment; keeping it here lets each of them import it without importing the others.
Stdlib and locustfiles.sio.live only (no pyarrow: workers import it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from locust.runners import MasterRunner, WorkerRunner

from contract.aggregate import Aggregator
from contract.options import SioOptions
from contract.rowpolicy import RowClass, RowPolicyConfig, classify
from contract.rows import COLUMNS, Row
from locustfiles.sio.live import LiveStats, Producer

if TYPE_CHECKING:
    from locustfiles.sio.runfiles import RunFiles  # pyarrow: the writer's process only

MAX_BUFFER = 1_000_000
"""Kept rows (and sends, and receipt ids) held in a process that cannot ship or write them; beyond
this they are counted as dropped, sampled and failure rows before state rows. Aggregate cells are
never dropped: they are merged by key (a few per second and key)."""
ATTR = "_sioscale_eventlog"

_STEP, _OK = COLUMNS.index("step"), COLUMNS.index("ok")


@dataclass
class WorkerInfo:
    """What the master knows about one worker's batch stream (to say what is missing)."""

    rows: int = 0  # events (steps) its batches counted
    batches: int = 0
    last_seq: int = -1
    gaps: int = 0  # batches that never arrived (sequence numbers skipped)
    duplicates: int = 0  # batches whose seq had been ingested already (dropped)
    last_report: float = 0.0
    final: bool = False
    dropped: int = 0  # rows the worker itself had to drop (buffer full)


@dataclass
class _State:
    environment: Any
    producer: Producer | None = None  # this process's side (record())
    unsent: dict[str, Any] | None = None  # a worker's payload that could not be shipped (retried)
    to_write: list[list[Any]] = field(default_factory=list)  # ingested kept rows, not yet on disk
    file_agg: Aggregator = field(default_factory=Aggregator)  # ingested cells, not yet on disk
    live: LiveStats = field(default_factory=LiveStats)
    files: RunFiles | None = None
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)  # payload part -> malformed items
    rows_written: int = 0
    events_written: int = 0
    produced: int = 0  # steps record()ed in this process (tests compare it with the master's counts)
    dropped: int = 0
    seq: int = 0
    started: float | None = None
    ended: float | None = None
    greenlets: list[Any] = field(default_factory=list)
    user_worker: dict[str, str] = field(default_factory=dict)
    stats_cache: tuple[float, int, dict[str, Any]] | None = None
    colliding_users: set[str] = field(default_factory=set)
    wrote_meta: bool = False
    compacted: dict[str, int] | None = None
    last_stats_write: float = 0.0
    last_write_error: float = -1e9

    # -- roles -------------------------------------------------------------------------
    @property
    def runner(self) -> Any:
        return getattr(self.environment, "runner", None)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    @property
    def run_dir(self) -> Path | None:
        d = SioOptions.from_environment(self.environment).run_dir
        return Path(d) if d else None

    @property
    def run_name(self) -> str:
        name = SioOptions.from_environment(self.environment).run_name
        if name:
            return name
        d = self.run_dir
        return d.resolve().name if d else ""

    @property
    def buffer(self) -> list[Row]:
        """The kept rows recorded in this process and not shipped/ingested yet (tests read them)."""
        return self.producer.rows if self.producer is not None else []

    @property
    def late_rows(self) -> int:
        """Late rows over the whole run (eventlog.json): the ledger's run-long counter, which the web
        UI's reset leaves alone (its `late` restarts with the live window)."""
        return int(self.live.ledger.late_total)


def policy_config(environment: Any) -> RowPolicyConfig:
    """The row policy of the --sio-sample-rate/--sio-first-rows/--sio-failure-rows/--sio-log-all options.

    The command line refuses values out of range at parse time; Locust's web UI start form sets
    options without the parser, so a value out of range can still arrive here. It must not make every
    user step raise (record() builds the policy): it is said once, and the table's defaults are used."""
    try:
        o = SioOptions.from_environment(environment)
        return RowPolicyConfig(sample_rate=o.sample_rate, first_n=o.first_rows, failure_rows_per_s=o.failure_rows,
                               log_all=o.log_all)
    except (TypeError, ValueError) as e:
        if not getattr(environment, "_sioscale_bad_policy_said", False):
            logging.getLogger(__name__).error("sioscale event log: %s; the row policy's defaults are used instead", e)
            try:
                environment._sioscale_bad_policy_said = True
            except AttributeError:
                pass
        return RowPolicyConfig()


def _state(environment: Any) -> _State:
    st = getattr(environment, ATTR, None)
    if st is None:
        st = _State(environment)
        st.live.sample_rate = policy_config(environment).sample_rate
        setattr(environment, ATTR, st)
    return st


def is_state_row(values: list[Any]) -> bool:
    """A row (COLUMNS order) the analysis needs whatever else is dropped: sessions, membership."""
    step = values[_STEP]
    return step == "disconnect" or classify(step, values[_OK] == 1) is RowClass.STATE


def trim_rows(rows: list[list[Any]], limit: int) -> int:
    """Cut `rows` (oldest first) to `limit`, sampled and failure rows before state rows; returns
    how many were dropped (the caller counts them: counts stay exact in the aggregates)."""
    over = len(rows) - limit
    if over <= 0:
        return 0
    others = [i for i, v in enumerate(rows) if not is_state_row(v)]
    drop = set(others[:over])
    if len(drop) < over:  # state rows alone exceed the limit: the oldest of them go too
        rest = [i for i in range(len(rows)) if i not in drop]
        drop.update(rest[:over - len(drop)])
    rows[:] = [v for i, v in enumerate(rows) if i not in drop]
    return over


__all__ = ["ATTR", "MAX_BUFFER", "WorkerInfo", "is_state_row", "policy_config", "trim_rows"]
