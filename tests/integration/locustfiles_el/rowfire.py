"""Test locustfile: users that fire known event rows (no network), to check the event log and
the live stats end to end through real Locust runners (local, --processes, master+workers).

Each process writes how many steps it produced (ROWFIRE_COUNTS_DIR, at every test stop) and,
optionally, a journal of every step's ts as it is produced (ROWFIRE_JOURNAL, unbuffered appends:
it survives SIGKILL, the reference for the SIGKILL test). Names are per step and process
(rf:<step>:<pid>), so the aggregates hold a few cells a second, as with a real scenario.
"""

from __future__ import annotations

import itertools
import json
import os

from locust import User, constant, events, task
from locust.runners import WorkerRunner

import locustfiles.sio.options  # registers --sio-* options
import locustfiles.sio.webui  # noqa: F401 - registers the Socket.IO tab
from contract.rows import make_row
from locustfiles.sio import eventlog

_ids = itertools.count()
NODES = ("n1", "n2", "n3")
_journal_fd: int | None = None


def _emit(environment, step: str, **kw) -> None:
    global _journal_fd
    name = f"rf:{step}:{os.getpid()}"
    row = make_row(step, name=name, **kw)
    eventlog.record(environment, row)
    path = os.environ.get("ROWFIRE_JOURNAL")
    if path:
        if _journal_fd is None:
            _journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_journal_fd, f"{row['ts']!r} {name}\n".encode())


class RowUser(User):
    """connect on start; each iteration one ack row and one failed poll; disconnect on stop."""

    wait_time = constant(float(os.environ.get("ROWFIRE_WAIT", "0.05")))

    def on_start(self) -> None:
        self.uid = f"p{os.getpid()}-{next(_ids)}"
        self.node = NODES[sum(map(ord, self.uid)) % 3]
        self.sid = f"sid-{self.uid}"
        _emit(self.environment, "connect", user=self.uid, eio_sid=self.sid, node=self.node, latency_ms=1.0)

    @task
    def fire(self) -> None:
        _emit(self.environment, "ack", user=self.uid, eio_sid=self.sid, node=self.node, latency_ms=2.0)
        _emit(self.environment, "poll", user=self.uid, eio_sid=self.sid, node="n9", ok=0,
              error_kind="session_unknown", error="Session ID unknown")

    def on_stop(self) -> None:
        _emit(self.environment, "disconnect", user=self.uid, eio_sid=self.sid, node=self.node)


def _dump_counts(environment, **_kw) -> None:
    out = os.environ.get("ROWFIRE_COUNTS_DIR")
    if not out:
        return
    runner = environment.runner
    wid = runner.client_id if isinstance(runner, WorkerRunner) else "local"
    st = eventlog._state(environment)
    with open(os.path.join(out, f"{os.getpid()}.json"), "w") as f:
        json.dump({"worker": wid, "produced": st.produced}, f)


events.test_stop.add_listener(_dump_counts)
events.quitting.add_listener(_dump_counts)
