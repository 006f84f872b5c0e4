"""The event log and the Socket.IO stats through real Locust runners.

A test locustfile (locustfiles_el/rowfire.py) fires rows with unique names and each process
writes how many it produced, so "complete" is checked row by row: every row any worker
produced is in the master's events.csv, and the master's numbers equal the sum of what the
workers saw. Loads are tiny (a handful of users, a few seconds, no network).
"""

from __future__ import annotations

import csv
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.support import LOCUST, Procs, free_port, get_json, log_of, processes, read_counts

pytestmark = pytest.mark.slow


def read_events(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_stats_match_rows(stats: dict, rows: list[dict[str, str]]) -> None:
    """The master's numbers are exactly those of the complete row set."""
    steps = Counter(r["step"] for r in rows)
    assert stats["totals"]["rows"] == len(rows)
    assert stats["totals"]["failures"] == sum(1 for r in rows if r["ok"] == "0") == steps["poll"]
    assert stats["totals"]["connects"] == steps["connect"]
    assert stats["totals"]["disconnects"] == steps["disconnect"]
    assert stats["failures"] == [{"step": "poll", "error_kind": "session_unknown", "count": steps["poll"]}]
    by_node = Counter(r["node"] for r in rows if r["step"] == "connect")
    assert {n["node"]: n["connects_total"] for n in stats["nodes"]} == dict(by_node)


def test_processes_2_events_csv_complete_and_stats_summed(procs: Procs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    counts = tmp_path / "counts"
    counts.mkdir()
    p = procs.start([*LOCUST, "--headless", "-u", "6", "-r", "6", "-t", "4s", *processes(2),
                     "--sio-run-dir", str(run)], "locust", ROWFIRE_COUNTS_DIR=str(counts))
    assert p.wait(timeout=90) == 0, log_of(tmp_path)
    produced = read_counts(counts)
    assert len(produced) == 2, (produced, log_of(tmp_path))
    rows = read_events(run / "events.csv")
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)), "a row was written twice"
    per_worker = Counter(r["worker"] for r in rows)
    assert dict(per_worker) == produced  # every worker's every row, nothing else
    steps = Counter(r["step"] for r in rows)
    assert steps["connect"] == steps["disconnect"] == 6  # the users' last rows (on_stop) made it
    assert {r["run"] for r in rows} == {"run"}
    stats = json.loads((run / "sio_stats.json").read_text())
    assert_stats_match_rows(stats, rows)
    assert stats["totals"]["connected_now"] == 0
    assert {w["id"]: (w["rows"], w["status"]) for w in stats["workers"]} == {
        w: (n, "done") for w, n in produced.items()}
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["locust"]["eventlog"]["rows"] == len(rows)


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
    while not (run / "events.csv").exists() or len(read_events(run / "events.csv")) < 100:
        assert time.monotonic() < deadline, log_of(tmp_path)
        time.sleep(0.2)
    time.sleep(1.0)
    procs.kill(victim)
    victim.wait(timeout=10)
    master.wait(timeout=90)  # its exit code may be 1: a worker went missing
    survivor.wait(timeout=30)
    produced = read_counts(counts)
    rows = read_events(run / "events.csv")
    per_worker = Counter(r["worker"] for r in rows)
    assert len(per_worker) == 2, per_worker
    assert len(produced) == 1, produced  # only the survivor could say what it produced
    (alive, n_alive), = produced.items()
    assert per_worker[alive] == n_alive  # the survivor's rows are all there
    dead = next(w for w in per_worker if w != alive)
    assert per_worker[dead] > 0  # the dead worker's rows up to its death were kept
    stats = json.loads((run / "sio_stats.json").read_text())
    assert_stats_match_rows(stats, rows)
    assert [w["id"] for w in stats["missing_workers"]] == [dead]
    missing = stats["missing_workers"][0]
    assert missing["rows"] == per_worker[dead] and missing["last_report"] is not None
    assert {r["run"] for r in rows} == {"dist"}


def test_sigkill_keeps_every_row_older_than_a_second(procs: Procs, tmp_path: Path) -> None:
    run = tmp_path / "run"
    journal = tmp_path / "journal.txt"
    p = procs.start([*LOCUST, "--headless", "-u", "4", "-r", "4", "-t", "60s", "--sio-run-dir", str(run)],
                    "locust", ROWFIRE_JOURNAL=str(journal))
    deadline = time.monotonic() + 30
    while not journal.exists() or journal.stat().st_size < 20_000:
        assert time.monotonic() < deadline and p.poll() is None, log_of(tmp_path)
        time.sleep(0.1)
    killed_at = time.time()
    procs.kill(p)
    p.wait(timeout=10)
    produced = [ln.split() for ln in journal.read_text().splitlines() if ln.strip()]
    old = {name for ts, name in produced if float(ts) < killed_at - 1.0}
    assert len(old) > 100
    on_disk = {r["name"] for r in read_events(run / "events.csv")}
    missing = old - on_disk
    assert not missing, f"{len(missing)} rows older than 1 s lost, e.g. {sorted(missing)[:3]}"


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
    while not (run / "events.csv").exists() or len(read_events(run / "events.csv")) < 50:
        assert time.monotonic() < deadline, log_of(tmp_path)
        time.sleep(0.2)
    procs.start(worker_args, "worker_b", ROWFIRE_COUNTS_DIR=str(counts))  # joins mid-run
    master.wait(timeout=90)
    time.sleep(1.0)  # workers write their counts as they quit
    produced = read_counts(counts)
    rows = read_events(run / "events.csv")
    assert len(produced) == 2, (produced, log_of(tmp_path))
    assert dict(Counter(r["worker"] for r in rows)) == produced
    stats = json.loads((run / "sio_stats.json").read_text())
    assert_stats_match_rows(stats, rows)
    assert stats["missing_workers"] == []
    steps = Counter(r["step"] for r in rows)
    assert steps["connect"] == steps["disconnect"] >= 6  # users moved to the late worker stopped cleanly
