"""The v2 event log under a real chat against a real local Socket.IO server, `--processes 4`:
sio_stats.json (the Socket.IO tab's numbers), the aggregates and delivery files, and Locust's
own request counts all agree; with --sio-log-all the kept rows count exactly what the
aggregates count (issue 11, "the Socket.IO tab and sio_stats.json agree with the files").
About 10 s a test (not marked slow): 16 users for 6 s, one node.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from analysis.runfiles import read_aggregates, read_delivery, read_rows
from contract.config import ClusterConfig
from tests.integration.support import ROOT, Procs, log_of, processes, run_rows

USERS = 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from targets.cluster import Cluster

    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct"),
                 workdir=tmp_path_factory.mktemp("cluster")) as c:
        yield c


def _chat(procs: Procs, tmp_path: Path, url: str, name: str, *extra: str) -> Path:
    run = tmp_path / name
    p = procs.start([str(ROOT / ".venv/bin/locust"), "-f", str(ROOT / "locustfiles/chat.py"), "--host", url,
                     "--headless", "-u", str(USERS), "-r", str(USERS), "-t", "6s", *processes(4),
                     "--sio-room-size", "4", "--sio-message-rate", "2", "--csv", str(run / "locust"),
                     "--sio-run-dir", str(run), *extra], name)
    assert p.wait(timeout=120) == 0, log_of(tmp_path)
    return run


def _locust_requests(run: Path) -> tuple[int, int]:
    """Locust's own (requests, failures) over every name (its Aggregated row)."""
    with (run / "locust_stats.csv").open(newline="") as f:
        agg = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return int(agg["Request Count"]), int(agg["Failure Count"])


def _check_stats_equal_files(run: Path) -> tuple[dict, Counter]:
    stats = json.loads((run / "sio_stats.json").read_text())
    agg = read_aggregates(run)
    assert agg is not None and not list(run.glob("*.arrows")), "no compacted aggregates"
    steps = Counter({str(k): int(v) for k, v in agg.groupby(agg["step"].astype(str))["count"].sum().items()})
    assert stats["steps"] == dict(sorted(steps.items()))
    total = sum(steps.values())
    failures = int(agg.loc[agg["ok"] == 0, "count"].sum())
    assert (stats["totals"]["rows"], stats["totals"]["failures"]) == (total, failures)
    assert _locust_requests(run) == (total, failures)  # Locust counted the very same steps
    assert steps["connect"] >= USERS and steps["broadcast_recv"] > 0
    assert {w["status"] for w in stats["workers"]} == {"done"} and len(stats["workers"]) == 4
    assert sum(w["rows"] for w in stats["workers"]) == total
    d = read_delivery(run)
    assert d is not None and set(d["final"]) == {1}
    live = stats["delivery"]
    assert (int(d["sent"].sum()), int(d["expected"].sum()), int(d["delivered"].sum())) == (
        live["sends_counted"], live["expected"], live["delivered"])
    assert live["expected"] > 0 and live["ratio"] == pytest.approx(1.0)  # one node: every member receives
    return stats, steps


def test_processes_4_sampled_run_stats_files_and_locust_agree(procs: Procs, tmp_path: Path, cluster) -> None:
    run = _chat(procs, tmp_path, cluster.info["url"], "sampled")
    stats, steps = _check_stats_equal_files(run)
    kept = read_rows(run, ["step"])
    el = stats["eventlog"]
    assert el["kept_rows"] == len(kept) < sum(steps.values())
    assert el["kept_rows"] + el["sampled_out"] + el["failures_over_budget"] == sum(steps.values())
    kept_steps = Counter(kept["step"].astype(str))
    assert kept_steps["connect"] == steps["connect"] and kept_steps["join"] == steps["join"]  # state: all kept


def test_processes_4_log_all_rows_count_what_the_aggregates_count(procs: Procs, tmp_path: Path, cluster) -> None:
    run = _chat(procs, tmp_path, cluster.info["url"], "all", "--sio-log-all")
    stats, steps = _check_stats_equal_files(run)
    rows = read_rows(run, ["step", "ts", "msg_id", "worker", "user"])
    assert Counter(rows["step"].astype(str)) == steps
    assert stats["eventlog"]["sampled_out"] == 0 and len(set(rows["worker"].astype(str))) == 4
    # the send row carries the payload's own send time: no receipt precedes its send
    snd = rows[rows["step"].astype(str) == "broadcast_send"]
    sends = snd.groupby(snd["msg_id"].astype(str))["ts"].min()
    recv = rows[rows["step"].astype(str) == "broadcast_recv"]
    first = recv.groupby(recv["msg_id"].astype(str))["ts"].min()
    both = first.index.intersection(sends.index)
    assert len(both) > 0 and (first[both] >= sends[both]).all()
    # one definition: the row path (LiveStats.add over every kept row) gives the master's numbers
    from locustfiles.sio.live import LiveStats

    again = LiveStats()
    again.add_many(run_rows(run))
    want = again.snapshot()
    for k in ("rows", "users", "connects", "disconnects", "failures", "broadcast_sends", "broadcast_recvs"):
        assert stats["totals"][k] == want["totals"][k], k
    assert stats["nodes"] == want["nodes"] and stats["steps"] == want["steps"]
    assert (stats["delivery"]["expected"], stats["delivery"]["delivered"]) == (
        want["delivery"]["expected"], want["delivery"]["delivered"])
    per_user = rows.groupby(rows["user"].astype(str))["worker"].nunique()
    assert len(per_user) == USERS and (per_user == 1).all()  # user ids unique across the 4 workers
