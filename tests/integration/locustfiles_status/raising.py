"""Test locustfile: users that raise, as every user did with a bad --sio-source-range.

RAISING_AT=start: every user raises in on_start, before any step (nothing is measured).
RAISING_AT=task (default): users connect (rows are recorded), then their task raises.
"""

from __future__ import annotations

import os

from locust import constant, task

from locustfiles.sio import SocketIOUser


class RaisingUser(SocketIOUser):
    wait_time = constant(0.5)

    def on_start(self) -> None:
        if os.environ.get("RAISING_AT") == "start":
            raise RuntimeError("raising.py: every user raises before its first step")
        self.connect()

    @task
    def boom(self) -> None:
        raise RuntimeError("raising.py: the task raised")
