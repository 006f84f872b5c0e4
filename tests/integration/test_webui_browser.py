"""The Socket.IO tab as a person sees it: headless Chromium renders Locust's React UI during a
real `--processes 2` run, and the tab shows the master's aggregated numbers."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _Metrics(BaseHTTPRequestHandler):
    """A node's /metrics as python's prometheus_client writes it: the tab's "Node resources" row."""

    cpu = 1.0

    def do_GET(self) -> None:
        type(self).cpu += 0.2  # 0.2 s of CPU per 2 s read: about 10 % of a core
        body = (f"process_cpu_seconds_total {self.cpu:.2f}\nprocess_resident_memory_bytes 73400320\n"
                "sioscale_clients 7\nsioscale_event_loop_lag_ms 2.5\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/metrics"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_socketio_tab_renders_live_numbers(procs: Procs, tmp_path: Path, metrics_url: str) -> None:
    port = free_port()
    procs.start([*LOCUST, "--autostart", "-u", "6", "-r", "6", "-t", "60s", *processes(2),
                 "--web-host", "127.0.0.1", "--web-port", str(port), "--sio-scrape", f"n9={metrics_url}"],
                "locust", ROWFIRE_WAIT="0.5")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, log_of(tmp_path)
        try:
            s = get_json(base + "/sio/stats")
            if (s["totals"]["connected_now"] == 6 and len(s["workers"]) == 2
                    and s["node_resources"][0]["cpu_percent"] is not None):  # two reads of n9
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
    cpu, detail = table[("Node resources", "n9")]  # --sio-scrape: the node's own /metrics, read by the master
    assert cpu.endswith(" %") and 5.0 < float(cpu.split()[0]) < 15.0, cpu
    assert detail.startswith("RSS 70.0 MiB, lag p99 2.5 ms, 7 clients, read "), detail
    failed = int(table[("Totals", "failed steps")][0])
    assert failed > 0 and int(table[("Failures", "poll × session_unknown")][0]) == failed
    # the rendered numbers come from the same aggregate as the JSON endpoint (read after: it only grows)
    assert get_json(base + "/sio/stats")["totals"]["failures"] >= failed
    assert (tmp_path / "tab.png").stat().st_size > 10_000
    with urllib.request.urlopen(base + "/", timeout=5) as r:
        assert b"extended_tabs" in r.read()
