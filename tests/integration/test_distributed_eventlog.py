"""The event log and the Socket.IO stats through real Locust runners.

A test locustfile (locustfiles_el/rowfire.py) fires known steps and each process writes how many
it produced, so "complete" is checked count by count: every step any worker produced is counted
in the master's aggregates file, and the master's numbers equal the sum of what the workers saw
(with --sio-log-all, every row is kept as well). Loads are tiny (a handful of users, a few
seconds, no network).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analysis.runfiles import read_aggregates, read_rows
from tests.integration.support import LOCUST, Procs, free_port, get_json, log_of, processes, read_counts

pytestmark = pytest.mark.slow


def aggregates(run: Path) -> pd.DataFrame:
    """The run's aggregate cells (Parquet, or the stream up to its last complete batch) with text as str."""
    agg = read_aggregates(run)
    assert agg is not None, f"no aggregates in {run}"
    for c in ("step", "name", "node", "transport", "error_kind"):
        agg[c] = agg[c].astype(str)
    return agg


def counted(run: Path) -> int:
    agg = read_aggregates(run, ["count"]) if (run / "aggregates.arrows").exists() or \
        (run / "aggregates.parquet").exists() else None
    return 0 if agg is None else int(agg["count"].sum())


def assert_stats_match_aggregates(stats: dict, agg: pd.DataFrame) -> None:
    """The master's numbers are exactly those of the aggregates file."""
    steps = agg.groupby("step")["count"].sum()
    assert stats["totals"]["rows"] == int(agg["count"].sum())
    assert stats["totals"]["failures"] == int(agg.loc[agg["ok"] == 0, "count"].sum()) == steps["poll"]
    assert stats["totals"]["connects"] == steps["connect"]
    assert stats["totals"]["disconnects"] == steps["disconnect"]
    assert stats["failures"] == [{"step": "poll", "error_kind": "session_unknown", "count": int(steps["poll"])}]
    by_node = agg[agg["step"] == "connect"].groupby("node")["count"].sum()
    assert {n["node"]: n["connects_total"] for n in stats["nodes"]} == {k: int(v) for k, v in by_node.items()}


def test_processes_2_every_step_counted_every_row_kept_with_log_all(procs: Procs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    counts = tmp_path / "counts"
    counts.mkdir()
    p = procs.start([*LOCUST, "--headless", "-u", "6", "-r", "6", "-t", "4s", *processes(2),
                     "--sio-run-dir", str(run), "--sio-log-all"], "locust", ROWFIRE_COUNTS_DIR=str(counts))
    assert p.wait(timeout=90) == 0, log_of(tmp_path)
    produced = read_counts(counts)
    assert len(produced) == 2, (produced, log_of(tmp_path))
    assert not list(run.glob("*.arrows")), "the streams were not compacted"
    agg = aggregates(run)
    assert int(agg["count"].sum()) == sum(produced.values())
    rows = read_rows(run)
    per_worker = Counter(rows["worker"].astype(str))
    assert dict(per_worker) == produced  # every worker's every row, nothing else
    steps = Counter(rows["step"].astype(str))
    assert steps == {k: int(v) for k, v in agg.groupby("step")["count"].sum().items()}
    assert steps["connect"] == steps["disconnect"] == 6  # the users' last rows (on_stop) made it
    assert set(rows["run"].astype(str)) == {"run"}
    stats = json.loads((run / "sio_stats.json").read_text())
    assert_stats_match_aggregates(stats, agg)
    assert stats["totals"]["connected_now"] == 0
    assert {w["id"]: (w["rows"], w["status"]) for w in stats["workers"]} == {
        w: (n, "done") for w, n in produced.items()}
    assert stats["eventlog"]["kept_rows"] == len(rows) and stats["eventlog"]["sampled_out"] == 0
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["locust"]["eventlog"]["events"] == sum(produced.values())
    assert meta["locust"]["eventlog"]["rows"] == len(rows)
    el = json.loads((run / "eventlog.json").read_text())
    assert el["final"] and el["policy"]["log_all"] and el["counts"]["events"] == sum(produced.values())


def test_master_and_workers_worker_killed_midway_is_reported_missing(procs: Procs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    counts = tmp_path / "counts"
    counts.mkdir()
    port = free_port()
    master = procs.start([*LOCUST, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                          "--expect-workers", "2", "--headless", "-u", "6", "-r", "6", "-t", "7s",
                          "--sio-run-dir", str(run), "--sio-run-name", "dist"], "master",
                         ROWFIRE_COUNTS_DIR=str(counts))
    worker_args = [*LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    survivor = procs.start(worker_args, "worker_a", ROWFIRE_COUNTS_DIR=str(counts))
    victim = procs.start(worker_args, "worker_b", ROWFIRE_COUNTS_DIR=str(counts))
    # let the test run, then kill one worker mid-run (as a machine dying would)
    deadline = time.monotonic() + 30
    while counted(run) < 100:
        assert time.monotonic() < deadline, log_of(tmp_path)
        time.sleep(0.2)
    time.sleep(1.0)
    procs.kill(victim)
    victim.wait(timeout=10)
    master.wait(timeout=90)  # its exit code may be 1: a worker went missing
    survivor.wait(timeout=30)
    produced = read_counts(counts)
    stats = json.loads((run / "sio_stats.json").read_text())
    per_worker = {w["id"]: w["rows"] for w in stats["workers"]}
    assert len(per_worker) == 2, per_worker
    assert len(produced) == 1, produced  # only the survivor could say what it produced
    (alive, n_alive), = produced.items()
    assert per_worker[alive] == n_alive  # the survivor's steps are all counted
    dead = next(w for w in per_worker if w != alive)
    assert per_worker[dead] > 0  # the dead worker's steps up to its death were kept
    agg = aggregates(run)
    assert int(agg["count"].sum()) == n_alive + per_worker[dead]
    assert_stats_match_aggregates(stats, agg)
    assert [w["id"] for w in stats["missing_workers"]] == [dead]
    missing = stats["missing_workers"][0]
    assert missing["rows"] == per_worker[dead] and missing["last_report"] is not None
    rows = read_rows(run, ["run", "worker"])
    assert set(rows["run"].astype(str)) == {"dist"} and set(rows["worker"].astype(str)) == {alive, dead}


def test_sigkill_of_the_master_loses_at_most_the_last_flush(procs: Procs, tmp_path: Path) -> None:
    """SIGKILL the whole locust process group (master and its forked workers) mid-run: the streams read
    back to their last complete batch, and every second that ended 1.5 s before the kill is complete."""
    run = tmp_path / "run"
    journal = tmp_path / "journal.txt"
    p = procs.start([*LOCUST, "--headless", "-u", "4", "-r", "4", "-t", "60s", *processes(2),
                     "--sio-run-dir", str(run)], "locust", ROWFIRE_JOURNAL=str(journal))
    deadline = time.monotonic() + 40
    while not journal.exists() or journal.stat().st_size < 40_000:
        assert time.monotonic() < deadline and p.poll() is None, log_of(tmp_path)
        time.sleep(0.1)
    killed_at = time.time()
    procs.kill(p)
    p.wait(timeout=10)
    produced = Counter(int(float(ln.split()[0])) for ln in journal.read_text().splitlines() if ln.strip())
    assert not list(run.glob("*.parquet")), "a killed run cannot have compacted"
    agg = aggregates(run)
    on_disk = agg.groupby("second")["count"].sum()
    assert agg["max_ts"].max() >= killed_at - 1.5, (killed_at, agg["max_ts"].max())  # <= 1.5 s lost
    complete = [s for s in produced if s + 1 <= killed_at - 1.5]
    assert len(complete) >= 3
    short = {s: (produced[s], int(on_disk.get(s, 0))) for s in complete if produced[s] != on_disk.get(s, 0)}
    assert not short, f"seconds that ended 1.5 s before the kill are incomplete (produced, on disk): {short}"
    assert len(read_rows(run, ["ts"])) > 0  # the kept rows' stream reads back too


def test_web_ui_tab_data_under_processes_2_equals_workers_sum(procs: Procs, tmp_path: Path) -> None:
    counts = tmp_path / "counts"
    counts.mkdir()
    port = free_port()
    procs.start([*LOCUST, "--autostart", "-u", "6", "-r", "6", "-t", "4s", *processes(2),
                 "--web-host", "127.0.0.1", "--web-port", str(port)], "locust",
                ROWFIRE_COUNTS_DIR=str(counts))  # no --sio-run-dir: the tab must work without one
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    live_seen = None
    while True:
        assert time.monotonic() < deadline, log_of(tmp_path)
        try:
            req = get_json(base + "/stats/requests")
        except OSError:
            time.sleep(0.3)
            continue
        ext = {e["key"]: e["data"] for e in req.get("extended_stats", [])}
        assert "socketio" in ext
        if req.get("state") == "running" and live_seen is None:
            by = {(r["section"], r["metric"]): r["value"] for r in ext["socketio"]}
            if by.get(("Totals", "connected now")) == "6":
                live_seen = by
        if req.get("state") == "stopped":
            break
        time.sleep(0.3)
    assert live_seen is not None, "the tab never showed the 6 connected users while running"
    time.sleep(0.5)
    stats = get_json(base + "/sio/stats")
    produced = read_counts(counts)
    assert len(produced) == 2
    assert {w["id"]: w["rows"] for w in stats["workers"]} == produced
    assert stats["totals"]["rows"] == sum(produced.values())
    assert stats["totals"]["connects"] == stats["totals"]["disconnects"] == 6
    assert stats["totals"]["connected_now"] == 0
    # every row but connect/disconnect is an ack/poll pair
    assert stats["totals"]["failures"] == (sum(produced.values()) - 12) // 2
    # the tab (via /stats/requests) and the CSV download show the same numbers as /sio/stats
    tab = {(r["section"], r["metric"]): r["value"]
           for r in next(e["data"] for e in get_json(base + "/stats/requests")["extended_stats"])}
    assert tab[("Totals", "failed steps")] == str(stats["totals"]["failures"])
    with urllib.request.urlopen(base + "/sio/stats/csv", timeout=5) as r:
        body = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/csv")
    assert f"Totals,failed steps,{stats['totals']['failures']}," in body


def test_worker_joining_late_is_counted_completely(procs: Procs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    counts = tmp_path / "counts"
    counts.mkdir()
    port = free_port()
    master = procs.start([*LOCUST, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                          "--expect-workers", "1", "--headless", "-u", "6", "-r", "6", "-t", "7s",
                          "--sio-run-dir", str(run)], "master", ROWFIRE_COUNTS_DIR=str(counts))
    worker_args = [*LOCUST, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    procs.start(worker_args, "worker_a", ROWFIRE_COUNTS_DIR=str(counts))
    deadline = time.monotonic() + 30
    while counted(run) < 50:
        assert time.monotonic() < deadline, log_of(tmp_path)
        time.sleep(0.2)
    procs.start(worker_args, "worker_b", ROWFIRE_COUNTS_DIR=str(counts))  # joins mid-run
    master.wait(timeout=90)
    time.sleep(1.0)  # workers write their counts as they quit
    produced = read_counts(counts)
    assert len(produced) == 2, (produced, log_of(tmp_path))
    stats = json.loads((run / "sio_stats.json").read_text())
    assert {w["id"]: w["rows"] for w in stats["workers"]} == produced
    agg = aggregates(run)
    assert int(agg["count"].sum()) == sum(produced.values())
    assert_stats_match_aggregates(stats, agg)
    assert stats["missing_workers"] == []
    steps = agg.groupby("step")["count"].sum()
    assert steps["connect"] == steps["disconnect"] >= 6  # users moved to the late worker stopped cleanly
