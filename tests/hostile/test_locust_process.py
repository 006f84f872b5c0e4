"""The nastiest modes against a real `locust` process: the whole generator must hold.

In-process runs (test_modes.py) see inside the client; this sees what a user of sioscale sees:
`locust -f locustfiles/chat.py --headless -t 3s` against a mode must exit within its run time
plus the step timeout plus STARTUP_SLACK (interpreter start, imports, Locust's own shutdown),
print no traceback, write no Locust exception, classify every failed event row, and keep its
RSS bounded. The runs are concurrent (one locust per mode) to keep the suite quick; each
competes with a flooding server for the same 2 cores, as a real generator would.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.hostile.conftest import ROOT, TABLE, HostileServer
from tests.hostile.harness import classified
from tests.integration.support import run_rows

pytestmark = pytest.mark.slow

RUN_S = 3
TIMEOUT = 1.0
STARTUP_SLACK = 6.0
MAX_RSS_MB = 250.0
NASTY = ("trailer_endless", "ws_pong_flood", "sid_crlf", "chunked_endless_body", "eio_ping_flood")


def _locust(url: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chat.py"), "--headless",
            "-u", "3", "-r", "30", "-t", f"{RUN_S}s", "--host", url, "--csv", str(run_dir / "locust"),
            "--exit-code-on-error", "0", "--sio-run-dir", str(run_dir), "--sio-timeout", str(TIMEOUT),
            "--sio-message-rate", "10", "--sio-room-size", "3"]


def _problems(run_dir: Path, took: float, rss_mb: float, rc: int | None) -> list[str]:
    found = []
    if rc is None or took > RUN_S + TIMEOUT + STARTUP_SLACK:
        found.append(f"locust ran {took:.1f} s (exit code {rc}) > {RUN_S} + {TIMEOUT} + {STARTUP_SLACK} s")
    elif rc != 0:
        found.append(f"locust exit code {rc}")
    out = (run_dir / "out.log").read_text(errors="replace")
    if "Traceback" in out:
        found.append("traceback on stdout/stderr: " + out[out.index("Traceback"):][:600])
    exc = run_dir / "locust_exceptions.csv"
    rows = list(csv.DictReader(exc.open())) if exc.exists() else []
    found += [f"Locust exception: {r}"[:300] for r in rows[:3]]
    if not any((run_dir / f"events{ext}").exists() for ext in (".parquet", ".arrows")):
        found.append("no event rows file")
    else:  # every failure kind keeps its first rows (contract.rowpolicy), so each kind is seen here
        kinds = {r["error_kind"] for r in run_rows(run_dir) if r["ok"] == "0"}
        found += [f"unclassified event rows: {sorted(k for k in kinds if not classified(k))}"] \
            if not all(classified(k) for k in kinds) else []
    if rss_mb > MAX_RSS_MB:
        found.append(f"peak RSS {rss_mb:.0f} MB > {MAX_RSS_MB} MB")
    return found


def test_nasty_modes_under_a_real_locust(hostile: HostileServer, tmp_path: Path) -> None:
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for name in NASTY:
            d = tmp_path / name
            d.mkdir()
            with (d / "out.log").open("w") as log:
                procs[name] = (subprocess.Popen(_locust(hostile.url(name), d), cwd=ROOT, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)}), d)
        t0 = time.monotonic()
        peak = dict.fromkeys(NASTY, 0)
        took: dict[str, float] = {}
        deadline = t0 + RUN_S + TIMEOUT + STARTUP_SLACK + 5
        while len(took) < len(NASTY) and time.monotonic() < deadline:
            for name, (p, _d) in procs.items():
                if name in took:
                    continue
                if p.poll() is not None:
                    took[name] = time.monotonic() - t0
                    continue
                try:
                    peak[name] = max(peak[name], psutil.Process(p.pid).memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.1)
    finally:
        for p, _d in procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    report = {}
    for name, (p, d) in procs.items():
        t = took.get(name, time.monotonic() - t0)
        found = _problems(d, t, peak[name] / 2**20, p.returncode if name in took else None)
        TABLE.append((f"locust:{name}", "FAIL" if found else "ok", t, f"peak RSS {peak[name] / 2**20:.0f} MB"))
        if found:
            report[name] = found
    assert not report, "\n".join(f"{n}:\n  " + "\n  ".join(f) for n, f in report.items())
