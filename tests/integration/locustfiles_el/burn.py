"""Test locustfile: one user that keeps its process's CPU busy (no network).

Busy ~90% of each 100 ms, yielding the rest so Locust's own greenlets (its CPU monitor, the
event-log flusher) still run: generator.csv must show this process near one full core, which
is what a saturated load generator looks like.
"""

from __future__ import annotations

import time

import gevent
from locust import User, constant, task

import locustfiles.sio.eventlog  # registers the event log (and generator.csv)
import locustfiles.sio.options  # noqa: F401 - registers --sio-* options


class BurnUser(User):
    wait_time = constant(0)

    @task
    def burn(self) -> None:
        end = time.process_time() + 0.09
        while time.process_time() < end:
            pass
        gevent.sleep(0.01)
