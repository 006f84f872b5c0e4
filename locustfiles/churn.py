"""Churn: connect, a few acked events, disconnect, again -- connection setup as the workload.

locust -f locustfiles/churn.py --host http://127.0.0.1:8000 --headless -u 20 -r 20 -t 30s
"""

from __future__ import annotations

from locust import between, task

from locustfiles.sio import SioError, SocketIOUser

ACKED_EVENTS = 3


class ChurnUser(SocketIOUser):
    wait_time = between(0.5, 1.5)

    @task
    def session(self) -> None:
        if self.connect():
            for i in range(ACKED_EVENTS):
                try:
                    self.call("echo", {"i": i})
                except SioError:
                    break  # already a failed "ack:echo" step in the stats
        self.disconnect()
