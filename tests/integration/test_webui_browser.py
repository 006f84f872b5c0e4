"""The Socket.IO tab as a person sees it: headless Chromium renders Locust's React UI during a
real `--processes 2` run, and the tab shows the master's aggregated numbers."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.support import LOCUST, Procs, free_port, get_json, log_of, processes

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], tmp: Path) -> str:
    """Run headless Chromium in its own process group (killed if it overruns)."""
    p = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return out


def _cells(dom: str) -> list[list[str]]:
    rows = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", dom, flags=re.S):
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", td)).strip()
                     for td in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, flags=re.S)])
    return rows


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_socketio_tab_renders_live_numbers(procs: Procs, tmp_path: Path) -> None:
    port = free_port()
    procs.start([*LOCUST, "--autostart", "-u", "6", "-r", "6", "-t", "60s", *processes(2),
                 "--web-host", "127.0.0.1", "--web-port", str(port)], "locust", ROWFIRE_WAIT="0.5")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, log_of(tmp_path)
        try:
            s = get_json(base + "/sio/stats")
            if s["totals"]["connected_now"] == 6 and len(s["workers"]) == 2:
                break
        except OSError:
            pass
        time.sleep(0.3)
    url = f"{base}/?tab=socketio"
    dom = _chromium(["--virtual-time-budget=8000", "--dump-dom", url], tmp_path)
    _chromium(["--virtual-time-budget=8000", "--window-size=1400,1000", f"--screenshot={tmp_path / 'tab.png'}", url],
              tmp_path)
    assert re.search(r">Socket\.IO<", dom), "the tab is not in the page"
    table = {tuple(r[:2]): r[2:] for r in _cells(dom) if len(r) == 4}
    assert ("Section", "Metric") in table, "the tab's table did not render"
    assert table[("Totals", "connected now")][0] == "6"
    assert table[("Totals", "connects")][0] == "6"
    nodes = {k[1]: int(v[0]) for k, v in table.items() if k[0] == "Node"}
    assert sum(nodes.values()) == 6 and set(nodes) <= {"n1", "n2", "n3"}
    workers = [k[1] for k in table if k[0] == "Worker"]
    assert len(workers) == 2
    failed = int(table[("Totals", "failed steps")][0])
    assert failed > 0 and int(table[("Failures", "poll × session_unknown")][0]) == failed
    # the rendered numbers come from the same aggregate as the JSON endpoint (read after: it only grows)
    assert get_json(base + "/sio/stats")["totals"]["failures"] >= failed
    assert (tmp_path / "tab.png").stat().st_size > 10_000
    with urllib.request.urlopen(base + "/", timeout=5) as r:
        assert b"extended_tabs" in r.read()
