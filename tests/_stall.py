"""One way to measure how long the gevent hub was kept from running: `StallMeter`.

A greenlet wakes every `every` s; a wake-up that comes late counts as a stall only for as long
as the hub's own thread was using the CPU meanwhile (thread CPU time). Why not the wall-time
lateness alone: on a shared 2-core machine the OS preempts this process for 100 ms and more
whenever the other processes run, and a wall-time meter then reports a stall the client never
caused (see commit d098629). A reader that keeps the hub from running burns this thread's CPU
reading the flood, so it is still caught. Why the thread's CPU time, not the process's: the
flooding servers of some tests are native threads of this process, and their work is theirs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent


class StallMeter:
    """Start at once; `stop()` returns the largest stall (s), also kept as `max_stall`.

    `max_late` is the largest wall-time lateness, whoever used the CPU meanwhile (for reports,
    not for assertions). `on_tick(now)` runs after each wake-up (e.g. to sample RSS).
    """

    def __init__(self, every: float = 0.005, on_tick: Callable[[float], None] | None = None) -> None:
        self.every = every
        self.on_tick = on_tick
        self.max_stall = 0.0
        self.max_late = 0.0
        # from now: a meter that never gets to run still measures the whole gap at stop()
        self._t, self._c = time.monotonic(), time.thread_time()
        self._g = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            gevent.sleep(self.every)
            now = self._mark()
            if self.on_tick is not None:
                self.on_tick(now)

    def _mark(self) -> float:
        now, cpu = time.monotonic(), time.thread_time()
        late = max(0.0, now - self._t - self.every)
        self.max_late = max(self.max_late, late)
        self.max_stall = max(self.max_stall, min(late, cpu - self._c))
        self._t, self._c = now, cpu
        return now

    def stop(self) -> float:
        self._g.kill()
        self._mark()
        return self.max_stall
