"""Locust's --run-time timer counts from when it is armed, not from when the gevent loop was created.

libev times a timer from the loop's cached clock; a loop created early and not yet run keeps the clock of its
creation, so Locust's start-up time was taken off the run (a 5 s run stopped after 0.5 s on a busy machine).
The event log's init listener refreshes the clock; this checks it in a fresh process (a loop never run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = """
import time, gevent
from locust import events
from locust.env import Environment
import locustfiles.sio.eventlog  # registers its listeners
gevent.get_hub().loop            # the loop exists and has not run: its clock is now's
t0 = time.monotonic()
while time.monotonic() - t0 < {busy}:  # start-up work that does not yield (imports, the locustfile)
    pass
{fire}
t1 = time.monotonic()
gevent.spawn_later(1.0, lambda: None).join()  # what Locust's --run-time does
print(round(time.monotonic() - t1, 3))
"""


def _timer_seconds(fire: str) -> float:
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(busy=1.5, fire=fire)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_a_timer_armed_after_init_runs_its_whole_time() -> None:
    # without the init event, the 1 s timer fires at once: the loop's clock is 1.5 s old
    assert _timer_seconds("") < 0.5
    assert _timer_seconds("events.init.fire(environment=Environment(events=events), runner=None, web_ui=None)") >= 0.95
