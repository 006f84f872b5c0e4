"""locustfiles/steps.py under the real `locust` command: bad --sio-steps fail at start, a good
plan drives the user count stage by stage and ends when step_plan says it does."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contract.config import ClusterConfig, Step, step_plan
from targets.cluster import Cluster

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _locust(host: str, *args: str, timeout: float = 60) -> tuple[int, str, str, float]:
    cmd = [sys.executable, "-m", "locust", "-f", "locustfiles/chat.py,locustfiles/steps.py", "--headless",
           "--host", host, *args]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, out, err, time.monotonic() - t0


@pytest.mark.parametrize("steps", ["100", "a:b", "10:inf", "5:nan", ""])
def test_bad_sio_steps_exit_2_with_one_line_at_start(steps: str) -> None:
    # No server is needed: the check runs at Locust's init, before any user starts.
    rc, _out, err, _ = _locust("http://127.0.0.1:9", "--sio-steps", steps, "-r", "5", timeout=30)
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "/ERROR/" in line]
    assert len(errors) == 1 and "--sio-steps" in errors[0], err[-2000:]


def test_step_plan_drives_locust_and_ends_on_time(tmp_path: Path) -> None:
    steps, rate = (Step(2, 2.0), Step(4, 2.0)), 4.0
    end = step_plan(steps, rate)[-1][0]  # 0.5 + 2 + 0.5 + 2 = 5 s
    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct")) as c:
        rc, out, err, took = _locust(
            c.url, "--sio-steps", "2:2,4:2", "-r", f"{rate:g}", "--sio-message-rate", "0.5",
            "--csv", str(tmp_path / "locust"), "--csv-full-history", "--only-summary")
    assert rc == 0, err[-3000:]
    assert end <= took < end + 20  # the shape stops the run itself, after the last hold
    counts = [int(r["User Count"]) for r in csv.DictReader((tmp_path / "locust_stats_history.csv").open())
              if r["Name"] == "Aggregated"]
    assert 2 in counts and max(counts) == 4, counts
    assert counts.index(4) > counts.index(2)  # stage order: 2 users, then 4
