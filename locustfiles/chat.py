"""Chat: rooms of --sio-room-size users; each user sends acked `echo`s and room `broadcast`s.

locust -f locustfiles/chat.py --host http://127.0.0.1:8000 --headless -u 30 -r 30 -t 30s

Every user joins one room; rooms fill in spawn order, so each gets --sio-room-size users of
this process (prefixed with the worker index when distributed, so workers never share a room
by accident). Messages alternate echo (acked) and broadcast at --sio-message-rate per user per
second. A broadcast carries {"room", "id", "sent", "from", "pad"}; each receiver logs a
broadcast_recv row with latency = now - sent, the sender a broadcast_send row whose ts is that
same `sent`: delivery is judged against the room's members at that instant, by the receivers'
own workers and the master alike (contract/delivery.py).

The ids are a sequence per sender ("<user>-<n>", n = 0, 1, 2, ...): each receiver follows every
sender it hears from (StreamCounts) and counts the messages missed between two it received
(n jumped), delivered twice, or late (older than the last one, not seen before). Its first message
from a sender is the baseline, so a receiver that joins late or sits on another node (memory
adapter) misses nothing it could not have had; messages missed after its last receipt are not
counted (a lower bound). The counts go to the event log as counts (`eventlog.count_recovery`:
`stream_received`, `missed`, `seq_duplicated`, `seq_reordered`), not rows, so they add up across
Locust's workers; summary.json `recovery.missed` reads them.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from locust import constant_pacing, task
from locust.runners import WorkerRunner

from locustfiles.sio import SioError, SocketIOUser, eventlog

_slots = itertools.count()
_RECENT = 256  # ids remembered per sender to tell a duplicate from a late one


class StreamCounts:
    """One receiver's view of each sender's numbered stream; `see` returns the counter increments."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.recent: dict[str, deque[int]] = {}

    def see(self, msg_id: str) -> dict[str, int]:
        sender, sep, tail = msg_id.rpartition("-")
        if not sep or not tail.isdigit():
            return {}
        n = int(tail)
        out = {"stream_received": 1}
        last, recent = self.last.get(sender), self.recent.setdefault(sender, deque(maxlen=_RECENT))
        if last is None or n == last + 1:
            self.last[sender] = n
        elif n > last + 1:
            out["missed"] = n - last - 1
            self.last[sender] = n
        elif n in recent:
            out["seq_duplicated"] = 1
        else:  # older than the last one and not seen: late, so counted in `missed` when n jumped past it
            out["seq_reordered"] = 1  # (net missed = missed - seq_reordered: counts only ever add)
        recent.append(n)
        return out


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
        self.streams = StreamCounts()
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
        counts = self.streams.see(str(payload.get("id", "")))
        if counts:
            eventlog.count_recovery(self.environment, counts)

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
