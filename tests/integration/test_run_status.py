"""A run's status tells the truth, through the real CLI, Locust and cluster (issue 9, part 3):

- a SIGKILLed `sioscale run` is reported interrupted (not ok) on the report's first screen, and
  `sioscale check` fails it;
- a Locust worker SIGKILLed under `--processes 2` makes the run degraded (exit 3), is named on the
  first screen, and the progress line and sio_stats.json stop counting its connections;
- users that raise (Locust exceptions) never end `ok` with exit code 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.test_cli_interrupt import _kill_all, _tree, _wait_for_load, _wait_gone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SIOSCALE = [sys.executable, "-m", "sioscale.cli"]
SMALL = ["--balancer", "none", "--policy", "direct", "--nodes", "1"]
RAISING = Path(__file__).parent / "locustfiles_status" / "raising.py"


def _first_screen(html: str) -> str:
    """The top of the page: everything before the second section (the configuration matrix)."""
    return html.split('<section id="matrix"', 1)[0]


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "run"
    err = (tmp_path / "sioscale.err").open("w")
    p = subprocess.Popen([*SIOSCALE, "run", *SMALL, *args, "--out", str(run_dir)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                         env={**os.environ, **(env or {})})
    return p, run_dir


def _report(run_dir: Path, out: Path) -> dict:
    rep = subprocess.run([*SIOSCALE, "report", str(run_dir), "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert rep.returncode == 0 and "Traceback" not in rep.stderr, rep.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_sigkilled_run_is_reported_interrupted(tmp_path: Path) -> None:
    p, run_dir = _start(tmp_path, "-u", "3", "-t", "40")
    tree: list[psutil.Process] = []
    try:
        _wait_for_load(p, run_dir, tmp_path)
        tree = _tree(p.pid)
        time.sleep(1.5)  # a second of rows on disk
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)
        assert not _wait_gone(tree, run_dir, timeout=10)
        assert json.loads((run_dir / "meta.json").read_text())["status"] == "running"  # nobody could finish it
        summary = _report(run_dir, tmp_path / "rep")
        (cfg,) = summary["configs"]
        assert cfg["status"] == "interrupted", cfg.get("status_reasons")
        assert any("gone" in r and "running" in r for r in cfg["status_reasons"]), cfg["status_reasons"]
        top = _first_screen((tmp_path / "rep" / "index.html").read_text())
        assert "interrupted" in top and "is gone but meta.json still says running" in top
        assert '<span class="pill ok">' not in top
        chk = subprocess.run([*SIOSCALE, "check", str(tmp_path / "rep"), "--connect-ratio", "0.5"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert chk.returncode == 1, chk.stdout + chk.stderr
        assert "interrupted" in chk.stderr
    finally:
        _kill_all(p, tree)


def _workers(p: subprocess.Popen) -> list[psutil.Process]:
    """The Locust workers: the children of the Locust master (forked by --processes)."""
    for q in psutil.Process(p.pid).children():
        if "locust" in " ".join(q.cmdline()):
            return q.children()
    return []


def test_worker_killed_under_processes_2_degrades_the_run(tmp_path: Path) -> None:
    p, run_dir = _start(tmp_path, "-f", "locustfiles/hold.py", "-u", "4", "-r", "4", "-t", "20", "--processes", "2")
    tree: list[psutil.Process] = []
    try:
        _wait_for_load(p, run_dir, tmp_path, timeout=90)
        deadline = time.monotonic() + 30
        while json.loads((run_dir / "sio_stats.json").read_text())["totals"]["connected_now"] < 4:
            assert time.monotonic() < deadline, (tmp_path / "sioscale.err").read_text()[-2000:]
            time.sleep(0.3)
        tree = _tree(p.pid)
        workers = _workers(p)
        assert len(workers) == 2, [" ".join(q.cmdline()) for q in tree]
        workers[0].kill()  # SIGKILL: no final batch, no goodbye
        rc = p.wait(90)
        err = (tmp_path / "sioscale.err").read_text()
        assert rc == 3, err[-3000:]
        assert "Traceback" not in err
        meta = json.loads((run_dir / "meta.json").read_text())
        assert meta["status"] == "degraded", meta
        assert any("went missing" in r for r in meta["status_reasons"]), meta["status_reasons"]
        # the progress line stops counting the dead worker's 2 sessions once it is missing
        lines = [ln for ln in err.splitlines() if " connected " in ln]
        assert any("missing" in ln for ln in lines), lines
        for ln in [ln for ln in lines if "missing" in ln]:
            assert int(re.search(r"connected (\d+)", ln).group(1)) <= 2, ln
        stats = json.loads((run_dir / "sio_stats.json").read_text())
        assert stats["totals"]["connected_now"] == 0, stats["totals"]  # the survivors disconnected at the end
        assert len(stats["missing_workers"]) == 1
        summary = _report(run_dir, tmp_path / "rep")
        (cfg,) = summary["configs"]
        assert cfg["status"] == "degraded"
        top = _first_screen((tmp_path / "rep" / "index.html").read_text())
        assert "went missing" in top and "degraded" in top
        assert not _wait_gone(tree, run_dir, timeout=10)
    finally:
        _kill_all(p, tree)


@pytest.mark.parametrize(("at", "status", "code"), [("task", "degraded", 3), ("start", "failed", 1)])
def test_users_raising_never_end_ok(tmp_path: Path, at: str, status: str, code: int) -> None:
    """Locust exceptions (what a bad source range did to every user) make the run degraded, or failed
    when nothing was measured — never ok with exit code 0."""
    proc = subprocess.run([*SIOSCALE, "run", *SMALL, "-f", str(RAISING), "-u", "2", "-r", "2", "-t", "4",
                           "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAISING_AT": at})
    assert proc.returncode == code, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == status, meta
    assert any("exception" in r for r in meta["status_reasons"]), meta["status_reasons"]
    summary = _report(tmp_path / "run", tmp_path / "rep")
    assert summary["configs"][0]["status"] == status
    assert "exception" in _first_screen((tmp_path / "rep" / "index.html").read_text())


CAMPAIGN = """name = "killed"
[cluster]
balancer = "none"
policy = "direct"
[axes]
nodes = [1, 2]
[load]
locustfile = "locustfiles/hold.py"
users = 3
spawn_rate = 3
duration = 6
"""


def test_sigkilled_campaign_leaves_a_report_that_says_what_happened(tmp_path: Path) -> None:
    """SIGKILL mid-campaign (config 2 under load): nothing stays running, and a report of the campaign
    directory shows config 1 ok and config 2 interrupted, on its first screen."""
    f = tmp_path / "c.toml"
    f.write_text(CAMPAIGN)
    out_dir = tmp_path / "o"
    err_path = tmp_path / "sioscale.err"  # where _wait_for_load looks when the load never starts
    with err_path.open("w") as err:
        p = subprocess.Popen([*SIOSCALE, "campaign", str(f), "--out", str(out_dir)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        second = out_dir / "runs" / "none-direct-poll+ws-memory-python-2n"
        _wait_for_load(p, second, tmp_path, timeout=120)
        tree = _tree(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)
        assert not _wait_gone(tree, second, timeout=10)
        summary = _report(out_dir, tmp_path / "rep")
        assert {c["name"]: c["status"] for c in summary["configs"]} == {
            "none-direct-poll+ws-memory-python-1n": "ok", "none-direct-poll+ws-memory-python-2n": "interrupted"}
        assert summary["status"] == "interrupted"
        top = _first_screen((tmp_path / "rep" / "index.html").read_text())
        assert "1 of 2 configuration(s) not ok" in top and "none-direct-poll+ws-memory-python-2n" in top
    finally:
        _kill_all(p, tree)
