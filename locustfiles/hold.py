"""Hold: connect and stay connected (heartbeats only) -- how many idle sessions a cluster keeps.

locust -f locustfiles/hold.py --host http://127.0.0.1:8000 --headless -u 100 -r 50 -t 60s
"""

from __future__ import annotations

from locust import constant, task

from locustfiles.sio import SocketIOUser


class HoldUser(SocketIOUser):
    wait_time = constant(5)

    def on_start(self) -> None:
        self.connect()

    @task
    def hold(self) -> None:
        """Nothing to send: the core answers pings, a lost session reconnects by itself."""
