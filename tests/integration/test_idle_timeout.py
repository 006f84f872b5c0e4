"""The balancer's idle timeout against Engine.IO's heartbeat, through the real CLI, HAProxy and nodes (issue 15
part 3): the classic ELB's SSL listener (TLS terminated at an L4 listener) with a short idle timeout; quiet
websocket sessions live while pingInterval is below it and die at it when pingInterval is above."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("ping", "alive"), [(1, True), (4, False)])
def test_heartbeats_keep_quiet_sessions_through_the_idle_timeout_and_a_slower_ping_does_not(
        tmp_path: Path, ping: int, alive: bool) -> None:
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "sioscale.cli", "run", "--nodes", "2", "--policy", "l4-round-robin",
                        "--tls", "--idle-timeout", "2", "--ping-interval", str(ping), "-f", "locustfiles/hold.py",
                        "--transports", "websocket", "-u", "4", "-r", "4", "-t", "5", "--no-reconnect",
                        "--out", str(out), "--report"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode in (0, 3), p.stderr[-3000:]
    assert out.name.endswith("run")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["idle_timeout"] == 2 and meta["config"]["ping_interval"] == ping
    assert "timeout tunnel 2000ms" in (out / "cluster" / "haproxy.cfg").read_text()
    c = json.loads((out / "report" / "summary.json").read_text())["configs"][0]
    s = c["sessions"]
    assert c["options"] == {"recovery": False, "idle_timeout": 2, "ping_interval": ping, "http_protocol": "http/1.1"}
    assert s["connected"] == 4, s
    verdicts = " ".join(c["verdicts"])
    if alive:
        assert s["failed"] == 0 and "kept the sessions alive through the balancer's 2 s idle timeout" in verdicts
    else:
        assert s["failed"] == 4 and set(s["end_kinds"]) == {"transport_closed"}, s
        assert 1.5 <= s["lifetime_s"]["p50"] <= 3.5  # closed at the 2 s idle timeout, before the 4 s ping
        assert "the balancer's 2 s idle timeout closed 100% of the connected sessions" in verdicts
