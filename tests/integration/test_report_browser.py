"""The report as a person sees it: headless Chromium renders index.html offline; plots and tables are there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from analysis.report import write_report
from tests.synth import SynthConfig, seed_campaign, write_run

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run chromium in its own process group and kill the whole group on timeout or error."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-extensions", "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("browser")
    dirs = seed_campaign(root / "runs", users=30, duration=8)
    dirs.append(write_run(root / "runs" / "ramp", SynthConfig(
        "ramp", transports=("websocket",), policy="l4-round-robin", adapter="redis",
        steps=((15, 4), (30, 4), (45, 4), (60, 4)), capacity_per_node=8, timeout_s=1.0, spawn_rate=60, seed=7)))
    write_report(dirs, root / "report", thresholds={"p95_ack_ms": 50.0})
    return root


def test_rendered_dom_has_plots_tables_and_verdicts(report: Path) -> None:
    r = _chromium(["--dump-dom", (report / "report" / "index.html").as_uri()], report)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert dom.count("<svg") >= 8  # 7 overview plots + the ramp's capacity plot
    assert dom.count("<table") >= 8
    assert "needs sticky sessions" in dom and "Redis adapter vs memory" in dom
    assert "users per node" in dom and "Nodes needed" in dom


def test_screenshot_is_drawn(report: Path) -> None:
    shot = report / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars",
                   (report / "report" / "index.html").as_uri()], report)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000  # a page with plots, not a blank one
