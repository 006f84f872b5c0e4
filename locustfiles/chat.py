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


CATCH_UP_HORIZON_S = 10.0
"""How long after a reconnect a receiver waits for each followed sender's first newer message; a sender
silent that long (it left, or lost its own session) is left out of the catch-up."""


class CatchUp:
    """The time from a reconnect to caught up, for one receiver (issue 14 part 4).

    Definition. T_r is the moment the reconnected session's CONNECT reply arrived (wall clock, the
    clock of the payloads' `sent`; a recovered session's replay is delivered right after it). The
    receiver follows the senders it had heard from before the loss. It is caught up on sender s when
    it holds s's stream up to where s was at T_r: at the arrival of s's first message sent at or after
    T_r, everything s sent before T_r has either arrived or never will (one sender's stream comes in
    order, the replay first). Caught up on s at: the arrival of the message before that one when it
    arrived after T_r (a replayed or late message), else T_r itself (nothing to catch up). The
    receiver's time to caught up = the latest of these over its senders, minus T_r; ok when no
    sender's stream had a gap across T_r (n == the last one received + 1), else the stream was never
    whole again (missed messages, counted in `missed` too). Finished when every followed sender has
    sent again, or at CATCH_UP_HORIZON_S (senders not heard from again are left out; none heard: no
    result), or at the next loss or the user's end. Pure: `start`, `see` and `finish` return the
    result (ms, ok, senders caught up on, those with a gap) once, else None.
    """

    def __init__(self) -> None:
        self.t_r: float | None = None
        self.pending: set[str] = set()
        self.last_at: dict[str, float] = {}  # sender -> arrival time of its latest message (any session)
        self.at = 0.0  # the latest catch-up moment so far
        self.gaps = 0  # of those, the ones whose stream had a gap across T_r
        self.done = 0  # senders caught up on

    def start(self, t_r: float, senders: set[str]) -> tuple[float, bool, int, int] | None:
        """A reconnected session is up at t_r; any catch-up still open ends first (returned)."""
        out = self.finish()
        if senders:
            self.t_r, self.pending, self.at, self.gaps, self.done = t_r, set(senders), t_r, 0, 0
        return out

    def see(self, sender: str, n: int, last: int | None, sent: float,
            now: float) -> tuple[float, bool, int, int] | None:
        """Message n of `sender` (its last one received before this was `last`), sent at `sent`, arrived now."""
        prev_at, self.last_at[sender] = self.last_at.get(sender), now
        if self.t_r is None:
            return None
        if now - self.t_r > CATCH_UP_HORIZON_S:
            return self.finish()
        if sender not in self.pending or sent < self.t_r:
            return None
        self.pending.discard(sender)
        self.done += 1
        if last is not None and n != last + 1:
            self.gaps += 1
        if prev_at is not None and prev_at > self.t_r:
            self.at = max(self.at, prev_at)
        return self.finish() if not self.pending else None

    def finish(self) -> tuple[float, bool, int, int] | None:
        """(ms from T_r to caught up, ok, senders caught up on, those with a gap) once; None without a
        reconnect or a sender."""
        t_r, self.t_r = self.t_r, None
        if t_r is None or not self.done:
            return None
        return max(0.0, (self.at - t_r) * 1000.0), not self.gaps, self.done, self.gaps


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
        self.catch_up = CatchUp()
        self.on("broadcast", self._received)
        if self.connect():
            self._join()

    def on_reconnected(self) -> None:
        self._join()

    def on_session_connected(self, reconnect: bool) -> None:
        if reconnect:  # before the replay is delivered: T_r of the catch-up
            self._log_catch_up(self.catch_up.start(time.time(), set(self.streams.last)))

    def on_stop(self) -> None:
        self._log_catch_up(self.catch_up.finish())

    def _log_catch_up(self, result: tuple[float, bool, int, int] | None) -> None:
        """One `caught_up` row per finished catch-up (CatchUp says what it measures)."""
        if result is None:
            return
        ms, ok, senders, gaps = result
        self.log_step("caught_up", "caught_up", ms, ok, "" if ok else "messages_missed",
                      "" if ok else f"the streams of {gaps} of {senders} senders had a gap across the reconnect")

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
        msg_id = str(payload.get("id", ""))
        sender, _, tail = msg_id.rpartition("-")
        last = self.streams.last.get(sender)
        counts = self.streams.see(msg_id)
        if counts:
            eventlog.count_recovery(self.environment, counts)
            self._log_catch_up(self.catch_up.see(sender, int(tail), last, float(payload["sent"]), time.time()))

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
