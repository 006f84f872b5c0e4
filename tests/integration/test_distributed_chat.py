"""The real chat scenario against a real local cluster under `locust --processes 2`, default row policy.

Checks, numbers not shapes: every step each worker recorded is counted in the master's aggregates
(exactly, though only a sample of rows is kept); the master's sio_stats.json equals those files;
every state row (connect, join, disconnect) is kept; and the broadcast delivery counted at the
receivers equals the delivery file's seconds and the analysis' figure of the run directory.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from analysis.runfiles import read_aggregates, read_delivery
from contract.config import ClusterConfig
from tests.integration.support import ROOT, Procs, log_of, processes, read_counts, report_of, run_rows

pytestmark = pytest.mark.slow

CHAT = Path(__file__).parent / "locustfiles_el" / "chat_counted.py"


def test_chat_processes_2_master_numbers_are_the_complete_rows(procs: Procs, tmp_path: Path) -> None:
    from targets.cluster import Cluster

    run = tmp_path / "run"
    counts = tmp_path / "counts"
    counts.mkdir()
    with Cluster(ClusterConfig(nodes=3, balancer="haproxy", policy="cookie", adapter="memory"),
                 workdir=tmp_path / "cluster") as c:
        p = procs.start([str(ROOT / ".venv/bin/locust"), "-f", str(CHAT), "--host", c.info["url"], "--headless",
                         "-u", "12", "-r", "12", "-t", "6s", *processes(2), "--sio-room-size", "4",
                         "--sio-message-rate", "2", "--sio-run-dir", str(run)], "locust",
                        ROWFIRE_COUNTS_DIR=str(counts))
        p.wait(timeout=120)
    produced = read_counts(counts)
    assert len(produced) == 2, log_of(tmp_path)
    agg = read_aggregates(run)
    assert agg is not None, log_of(tmp_path)
    agg["step"] = agg["step"].astype(str)
    steps = {k: int(v) for k, v in agg.groupby("step")["count"].sum().items()}
    assert sum(steps.values()) == sum(produced.values())  # every step of both workers, once
    rows = run_rows(run)
    kept = Counter(r["step"] for r in rows)
    assert kept["connect"] == steps["connect"] >= 12 and kept["join"] == steps["join"]
    assert kept["disconnect"] == steps["disconnect"]
    assert kept["broadcast_recv"] < steps["broadcast_recv"]  # sampled, yet counted exactly
    users = {r["user"] for r in rows}
    assert len(users) == 12  # user ids are unique across the two worker processes
    for u in users:
        assert len({r["worker"] for r in rows if r["user"] == u}) == 1

    stats = json.loads((run / "sio_stats.json").read_text())
    t = stats["totals"]
    assert t["rows"] == sum(steps.values())
    assert (t["connects"], t["disconnects"], t["broadcast_sends"], t["broadcast_recvs"]) == (
        steps["connect"], steps["disconnect"], steps["broadcast_send"], steps["broadcast_recv"])
    assert t["failures"] == int(agg.loc[agg["ok"] == 0, "count"].sum())
    assert stats["steps"] == steps
    by_node = Counter(r["node"] for r in rows if r["step"] == "connect" and r["ok"] == "1")
    assert {n["node"]: n["connects_total"] for n in stats["nodes"]} == dict(by_node)
    d = stats["delivery"]
    deliv = read_delivery(run)
    assert deliv is not None and deliv["final"].all()
    assert (d["expected"], d["delivered"]) == (int(deliv["expected"].sum()), int(deliv["delivered"].sum()))
    assert d["expected"] > 0

    # the report of the run directory says the same (summary.json's broadcast block)
    summary = report_of(run, tmp_path / "report")
    b = summary["configs"][0]["broadcast"]
    assert (b["expected"], b["delivered"]) == (d["expected"], d["delivered"])
