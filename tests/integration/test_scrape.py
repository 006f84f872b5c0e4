"""`sioscale run --url ... --scrape [ID=]URL` against real endpoints (issue 12, part 3).

One real python node is "the user's own cluster": the load goes to it by --url and its own
/metrics is scraped (python's default process names and sioscale's gauges). Beside it, a stdlib
HTTP server plays three more of the user's endpoints: prom-client-style text whose CPU counter
advances, one that hangs past the timeout, and one that answers garbage. resources.csv must hold
the first two's rows every second and the others' warnings, and the run must end ok.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.support import ROOT, Procs, free_port

pytestmark = pytest.mark.slow


class _UserEndpoints(BaseHTTPRequestHandler):
    """/metrics: prom-client's default names, 0.1 s of CPU more at each read; /hang; /garbage."""

    cpu = 0.0
    lock = threading.Lock()
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/hang":
            self.release.wait(3)  # far past the sampler's 0.5 s timeout
            body = b"process_open_fds 1\n"
        elif self.path == "/garbage":
            body = b"<html><body>502 Bad Gateway</body></html>"
        else:
            with self.lock:
                type(self).cpu += 0.1
                cpu = type(self).cpu
            body = ("# TYPE process_cpu_seconds_total counter\n"
                    f"process_cpu_seconds_total {cpu:.3f}\n"
                    "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 52428800\n"
                    "# TYPE nodejs_eventloop_lag_p99_seconds gauge\nnodejs_eventloop_lag_p99_seconds 0.004\n"
                    '# TYPE socket_io_connected gauge\nsocket_io_connected{namespace="/"} 3\n').encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the sampler gave up on /hang: its socket is closed

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoints() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _UserEndpoints)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        _UserEndpoints.release.set()
        srv.shutdown()
        srv.server_close()


def _wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_run_against_url_scrapes_the_users_endpoints_into_resources_csv(
        procs: Procs, endpoints: int, tmp_path: Path) -> None:
    port = free_port()
    procs.start([sys.executable, "-m", "targets.app", "--id", "n1", "--port", str(port)], "node")
    node = f"http://127.0.0.1:{port}"
    _wait_http(node + "/metrics")
    ep = f"http://127.0.0.1:{endpoints}"
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "sioscale.cli", "run", "--url", node, "--out", str(run_dir), "-u", "3", "-r", "30",
         "-t", "3", "--transports", "websocket", "--message-rate", "0.5",
         "--scrape", f"mine={node}/metrics", "--scrape", f"{ep}/metrics",
         "--scrape", f"hung={ep}/hang", "--scrape", f"junk={ep}/garbage"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    fake = f"127.0.0.1:{endpoints}"
    assert meta["telemetry"]["scrape"] == [
        {"id": "mine", "url": f"{node}/metrics"}, {"id": fake, "url": f"{ep}/metrics"},
        {"id": "hung", "url": f"{ep}/hang"}, {"id": "junk", "url": f"{ep}/garbage"}]
    with (run_dir / "resources.csv").open() as f:
        rows = list(csv.DictReader(f))
    samples = meta["telemetry"]["samples"]
    assert samples >= 3

    def values(id_: str, metric: str) -> list[float]:
        return [float(r["value"]) for r in rows if r["id"] == id_ and r["metric"] == metric]

    assert {r["component"] for r in rows} == {"node"}
    # the real node: python's default process names and its own count of the 3 users (a busy machine
    # may make one read of it late: a timeout warning, so one sample less is allowed)
    assert len(values("mine", "rss_bytes")) >= samples - 1 and min(values("mine", "rss_bytes")) > 1e6
    assert len(values("mine", "cpu_percent")) >= samples - 2  # a rate from the second scrape on
    assert max(values("mine", "clients")) == 3 and values("mine", "event_loop_lag_ms")
    # the prom-client-style page: 0.1 s of CPU per one-second scrape is about 10 % of a core (a late
    # tick shortens the next interval, hence the wide band)
    cpu = values(fake, "cpu_percent")
    assert len(cpu) >= samples - 2 and all(3 <= v <= 34 for v in cpu), cpu
    assert set(values(fake, "clients")) == {3.0} and set(values(fake, "event_loop_lag_ms")) == {4.0}
    # the hung and garbage ones: a warning every second, never a value, and the run went on
    assert len(values("hung", "warning:timeout")) == samples and len(values("junk", "warning:garbage")) == samples
    assert {r["metric"] for r in rows if r["id"] in ("hung", "junk")} == {"warning:timeout", "warning:garbage"}
    assert meta["status"] == "ok", meta["status_reasons"]
