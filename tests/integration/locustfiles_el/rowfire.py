"""Test locustfile: users that fire known event rows (no network), to check the event log and
the live stats end to end through real Locust runners (local, --processes, master+workers)."""

from __future__ import annotations

import itertools
import os

from locust import User, constant, events, task

import locustfiles.sio.options  # noqa: F401 - registers --sio-* options
import locustfiles.sio.webui  # noqa: F401 - registers the Socket.IO tab

from locustfiles.sio import eventlog
from locustfiles.sio.rows import make_row

_ids = itertools.count()
NODES = ("n1", "n2", "n3")


class RowUser(User):
    """Each iteration: one failed poll row and one ack row; connect on start, disconnect on stop."""

    wait_time = constant(float(os.environ.get("ROWFIRE_WAIT", "0.05")))

    def on_start(self) -> None:
        self.uid = f"p{os.getpid()}-{next(_ids)}"
        self.node = NODES[hash(self.uid) % 3]
        self.sid = f"sid-{self.uid}"
        eventlog.record(self.environment, make_row("connect", user=self.uid, eio_sid=self.sid, node=self.node,
                                                   latency_ms=1.0))

    @task
    def fire(self) -> None:
        eventlog.record(self.environment, make_row("ack", user=self.uid, eio_sid=self.sid, node=self.node,
                                                   latency_ms=2.0))
        eventlog.record(self.environment, make_row("poll", user=self.uid, eio_sid=self.sid, node="n9", ok=0,
                                                   error_kind="session_unknown", error="Session ID unknown"))

    def on_stop(self) -> None:
        eventlog.record(self.environment, make_row("disconnect", user=self.uid, eio_sid=self.sid,
                                                   node=self.node))


@events.quitting.add_listener
def _dump_counts(environment, **_kw) -> None:  # noqa: ANN001
    """Each process says how many rows it produced, so the test can compare with the master's file."""
    out = os.environ.get("ROWFIRE_COUNTS_DIR")
    if out:
        st = eventlog._state(environment)
        with open(os.path.join(out, f"{os.getpid()}.count"), "w") as f:
            f.write(str(st.produced))
