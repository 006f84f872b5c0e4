"""The real chat scenario against a real local cluster under `locust --processes 2`.

Checks, numbers not shapes: every row each worker produced is in the master's events.csv;
the master's sio_stats.json equals the same aggregate recomputed from that file; and its
broadcast delivery equals the analysis' pandas implementation of the one definition.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from contract.config import ClusterConfig
from locustfiles.sio.live import LiveStats
from tests.integration.support import ROOT, Procs, log_of, processes, read_counts

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
    with (run / "events.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    produced = read_counts(counts)
    assert len(produced) == 2, log_of(tmp_path)
    assert dict(Counter(r["worker"] for r in rows)) == produced
    users = {r["user"] for r in rows}
    assert len(users) == 12  # user ids are unique across the two worker processes
    for u in users:
        assert len({r["worker"] for r in rows if r["user"] == u}) == 1

    stats = json.loads((run / "sio_stats.json").read_text())
    again = LiveStats()
    again.add_many(rows)
    want = again.snapshot()
    for k in ("rows", "users", "connects", "disconnects", "failures", "broadcast_sends", "broadcast_recvs"):
        assert stats["totals"][k] == want["totals"][k], k
    assert stats["totals"]["connects"] >= 12 and stats["totals"]["broadcast_sends"] > 0
    assert stats["nodes"] == want["nodes"]
    assert sum(n["connects_total"] for n in stats["nodes"]) == stats["totals"]["connects"]
    d = stats["delivery"]
    assert (d["expected"], d["delivered"]) == (want["delivery"]["expected"], want["delivery"]["delivered"])
    assert d["expected"] > 0

    metrics = pytest.importorskip("analysis.metrics")
    load = pytest.importorskip("analysis.load")
    frames = load.load_run(run)
    _summary, detail = metrics.broadcast_delivery(frames.events)
    assert int(detail["expected"].sum()) == d["expected"]
    assert int(detail["delivered"].sum()) == d["delivered"]
