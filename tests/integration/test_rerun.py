"""A run into a directory that holds an earlier run (a campaign run again into the same
reports/NAME) replaces it: the event log and generator CSV are appended to, and without this the
second run's figures mixed both runs' rows (found by the loader's window check on a second
`make seed`: half of every events.csv was outside its run's window). Real cluster, real Locust.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.load import load_run
from contract.config import parse_campaign
from sioscale.runner import execute_run
from tests.integration.support import run_rows

CAMPAIGN = """
name = "rerun"
[cluster]
nodes = 1
balancer = "none"
policy = "direct"
[load]
locustfile = "locustfiles/hold.py"
users = 2
spawn_rate = 2
duration = 3
transports = ["websocket"]
"""


@pytest.mark.slow
def test_a_second_run_into_the_same_directory_replaces_the_first(tmp_path: Path) -> None:
    (cfg,) = parse_campaign(CAMPAIGN).runs()
    run_dir = tmp_path / "run"
    execute_run(cfg, run_dir)
    (run_dir / "notes.txt").write_text("mine")  # a file the run did not write stays
    said: list[str] = []
    meta = execute_run(cfg, run_dir, progress=said.append)
    assert meta["status"] == "ok", meta.get("status_reasons")
    assert any("replacing the previous run" in s and "events.parquet" in s for s in said), said
    ts = [float(r["ts"]) for r in run_rows(run_dir)]
    lo, hi = meta["started"], meta["ended"]
    assert ts and all(lo - 1 <= t <= hi + 1 for t in ts), (lo, hi, min(ts), max(ts))
    assert not [w for w in load_run(run_dir).warnings if "dropped" in w]
    assert json.loads((run_dir / "meta.json").read_text())["started"] == lo
    assert (run_dir / "notes.txt").read_text() == "mine"
