"""A run's status tells the truth, through the real CLI, Locust and cluster (issue 9, part 3):

- a Locust worker SIGKILLed under `--processes 2` makes the run degraded (exit 3), is named on the
  first screen, and the progress line and sio_stats.json stop counting its connections;
- users that raise (Locust exceptions) never end `ok` with exit code 0.

A SIGKILLed `sioscale run` or `campaign` (reported interrupted, `check` fails it) is checked on the
same kill as "no process left", in tests/integration/test_orphans.py: one run instead of two.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.support import SIOSCALE, first_screen, report_of
from tests.integration.test_cli_interrupt import _kill_all, _tree, _wait_for_load, _wait_gone

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--balancer", "none", "--policy", "direct", "--nodes", "1"]
RAISING = Path(__file__).parent / "locustfiles_status" / "raising.py"


def _start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    run_dir = tmp_path / "run"
    err = (tmp_path / "sioscale.err").open("w")
    p = subprocess.Popen([*SIOSCALE, "run", *SMALL, *args, "--out", str(run_dir)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                         env={**os.environ, **(env or {})})
    return p, run_dir


def _workers(p: subprocess.Popen) -> list[psutil.Process]:
    """The Locust workers: the children of the Locust master (forked by --processes)."""
    for q in psutil.Process(p.pid).children():
        if "locust" in " ".join(q.cmdline()):
            return q.children()
    return []


def test_worker_killed_under_processes_2_degrades_the_run(tmp_path: Path) -> None:
    p, run_dir = _start(tmp_path, "-f", "locustfiles/hold.py", "-u", "4", "-r", "4", "-t", "12", "--processes", "2")
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
        assert meta["locust"]["eventlog"]["rows"] > 0, meta  # the event log's block, copied by the runner
        # the progress line stops counting the dead worker's 2 sessions once it is missing
        lines = [ln for ln in err.splitlines() if " connected " in ln]
        assert any("missing" in ln for ln in lines), lines
        for ln in [ln for ln in lines if "missing" in ln]:
            assert int(re.search(r"connected (\d+)", ln).group(1)) <= 2, ln
        stats = json.loads((run_dir / "sio_stats.json").read_text())
        assert stats["totals"]["connected_now"] == 0, stats["totals"]  # the survivors disconnected at the end
        assert len(stats["missing_workers"]) == 1
        summary = report_of(run_dir, tmp_path / "rep")
        (cfg,) = summary["configs"]
        assert cfg["status"] == "degraded"
        top = first_screen((tmp_path / "rep" / "index.html").read_text())
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
    summary = report_of(tmp_path / "run", tmp_path / "rep")
    assert summary["configs"][0]["status"] == status
    assert "exception" in first_screen((tmp_path / "rep" / "index.html").read_text())
