"""The blip's `silent` mode end to end, in distributed mode: the runner picks at HAProxy, writes its
order to the run directory, and the two Locust worker processes (`processes = 2`) silence exactly
the users holding the chosen connections; meta.json, the event rows and the report agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.config import parse_campaign
from contract.control import SILENT_FILE
from sioscale.runner import execute_run
from targets.cluster import node_server_problem
from tests.integration.support import run_rows

CAMPAIGN = """
name = "silent-test"
[cluster]
nodes = 1
policy = "cookie"
server = "node"
recovery = true
ping_interval = 1
ping_timeout = 1
[load]
locustfile = "locustfiles/chat.py"
users = 8
spawn_rate = 8
duration = 9
processes = 2
message_rate = 2
transports = ["websocket"]
[[faults]]
# 6 s: fault times count from Locust's start, and two worker processes on a busy machine took over 4 s to
# connect anyone (a blip at 4 s once found 0 sessions)
at = 6
action = "blip"
mode = "silent"
fraction = 0.5
duration = 1
"""


@pytest.mark.slow
@pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))
def test_silent_blip_reaches_exactly_the_chosen_users_across_worker_processes(tmp_path: Path) -> None:
    (cfg,) = parse_campaign(CAMPAIGN).runs()
    meta = execute_run(cfg, tmp_path / "run")
    assert meta["status"] == "ok", meta.get("error")
    (blip,) = meta["faults"]
    k = blip["silenced"]  # half of the connections there were (8 once every user is up)
    assert blip["error"] is None and blip["mode"] == "silent" and k == round(blip["sessions"] / 2) >= 1, blip
    (order,) = json.loads((tmp_path / "run" / SILENT_FILE).read_text())["orders"]
    assert len(order["addrs"]) == k and order["duration"] == 1
    rows = run_rows(tmp_path / "run")
    lost = [r for r in rows if r["step"] == "disconnect" and r["ok"] == "0"]
    assert len(lost) == k and {r["error_kind"] for r in lost} == {"network_lost"}, lost  # the chosen, no one else
    assert len({r["user"] for r in lost}) == k and len({r["worker"] for r in rows}) == 2  # both workers' users
    back = {r["user"] for r in rows if r["step"] == "reconnect" and r["ok"] == "1"}
    assert back == {r["user"] for r in lost}
    from analysis.report import write_report

    summary = write_report([tmp_path / "run"], tmp_path / "report")
    (c,) = summary["configs"]
    assert c["recovery"]["disconnects"] == k and c["faults"][0]["silenced"] == k
    assert f"{k} of {blip['sessions']} connections silenced" in (tmp_path / "report" / "index.html").read_text()
