"""Faults in a run: a node stopped mid-run through the campaign's [[faults]], against the real cluster.

What a failover finding needs: the fault lands at its time, the sessions it killed are seen
(disconnect, not ok), and they come back on the surviving nodes (reconnect, ok).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config import parse_campaign
from sioscale.runner import execute_run
from tests.integration.support import run_rows

CAMPAIGN = """
name = "failover-test"
[cluster]
nodes = 3
policy = "cookie"
adapter = "memory"
[load]
locustfile = "locustfiles/hold.py"
users = 9
spawn_rate = 9
duration = 9
transports = ["websocket"]
[[faults]]
at = 4
action = "stop_node"
target = "n2"
"""


@pytest.mark.slow
def test_stop_node_mid_run_sessions_fail_over(tmp_path: Path) -> None:
    (cfg,) = parse_campaign(CAMPAIGN).runs()
    meta = execute_run(cfg, tmp_path / "run")
    assert meta["status"] == "ok", meta.get("error")
    (stop,) = meta["faults"]
    assert stop["action"] == "stop_node" and stop["target"] == "n2" and stop["error"] is None
    rows = run_rows(tmp_path / "run")
    connects = [r for r in rows if r["step"] == "connect" and r["ok"] == "1" and float(r["ts"]) < stop["ts"]]
    on_n2 = {r["user"] for r in connects if r["node"] == "n2"}
    assert on_n2, "cookie policy spread 9 users and none landed on n2?"
    lost = {r["user"] for r in rows if r["step"] == "disconnect" and r["ok"] == "0" and float(r["ts"]) >= stop["ts"]}
    assert on_n2 <= lost, (on_n2, lost)
    back = [r for r in rows if r["step"] == "reconnect" and r["ok"] == "1" and r["user"] in on_n2]
    assert {r["user"] for r in back} == on_n2
    assert all(r["node"] in ("n1", "n3") for r in back)
    # nobody else was disturbed
    assert not {r["user"] for r in rows if r["step"] == "disconnect" and r["ok"] == "0"} - on_n2
    # the report shows what was injected, next to the time series it explains
    from analysis.report import write_report

    summary = write_report([tmp_path / "run"], tmp_path / "report")
    (c,) = summary["configs"]
    assert c["faults"][0] == {"at": 4, "action": "stop_node", "target": "n2", "error": None}
    assert "stop_node n2 at 4 s" in (tmp_path / "report" / "index.html").read_text()
