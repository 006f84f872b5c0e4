"""Chat: rooms of --sio-room-size users; each user sends acked `echo`s and room `broadcast`s.

locust -f locustfiles/chat.py --host http://127.0.0.1:8000 --headless -u 30 -r 30 -t 30s

Every user joins one room; rooms fill in spawn order, so each gets --sio-room-size users of
this process (prefixed with the worker index when distributed, so workers never share a room
by accident). Messages alternate echo (acked) and broadcast at --sio-message-rate per user per
second. A broadcast carries {"room", "id", "sent", "from", "pad"}; each receiver logs a
broadcast_recv row with latency = now - sent, the sender a broadcast_send row whose ts is that
same `sent`: delivery is judged against the room's members at that instant, by the receivers'
own workers and the master alike (contract/delivery.py).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from locust import constant_pacing, task
from locust.runners import WorkerRunner

from locustfiles.sio import SioError, SocketIOUser

_slots = itertools.count()


class ChatUser(SocketIOUser):
    def wait_time(self) -> float:
        rate = self.sio_options.message_rate
        return constant_pacing(1.0 / rate if rate > 0 else 1.0)(self)

    def on_start(self) -> None:
        size = max(1, self.sio_options.room_size)
        runner = self.environment.runner
        prefix = f"w{runner.worker_index}-" if isinstance(runner, WorkerRunner) else ""
        self.room = f"{prefix}room-{next(_slots) // size}"
        self.pad = "x" * self.sio_options.payload_size
        self._seq = itertools.count()
        self._turn = itertools.cycle(("echo", "broadcast"))
        self.on("broadcast", self._received)
        if self.connect():
            self._join()

    def on_reconnected(self) -> None:
        self._join()

    def _join(self) -> None:
        try:
            self.call("join", self.room, step="join", name="join", room=self.room)
            self.rooms.add(self.room)
        except SioError:
            pass  # recorded as a failed join step

    def _received(self, payload: Any) -> None:
        if not isinstance(payload, dict) or "sent" not in payload:
            return
        try:
            latency = max(0.0, (time.time() - float(payload["sent"])) * 1000.0)
        except (TypeError, ValueError):
            return
        self.log_step("broadcast_recv", "broadcast:broadcast", latency, True,
                      transport=self.session.proto.transport if self.session else "",
                      node=self.session.proto.node if self.session else "",
                      room=str(payload.get("room", "")), msg_id=str(payload.get("id", "")))

    @task
    def message(self) -> None:
        if not self.connected:
            return  # reconnecting in the background
        if next(self._turn) == "echo":
            try:
                self.call("echo", {"from": self.user_id, "pad": self.pad})
            except SioError:
                pass  # recorded as a failed ack:echo step
        else:
            msg_id = f"{self.user_id}-{next(self._seq)}"
            payload = {"room": self.room, "id": msg_id, "sent": time.time(), "from": self.user_id, "pad": self.pad}
            # the send row carries the payload's `sent`: the receivers judge membership at that instant
            self.emit("broadcast", payload, step="broadcast_send", name="broadcast_send:broadcast",
                      room=self.room, msg_id=msg_id, ts=payload["sent"])
