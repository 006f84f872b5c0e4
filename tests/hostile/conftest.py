"""The hostile server as a module-scoped process, and the per-mode timing table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE: list[tuple[str, str, float, str]] = []  # (test, outcome, seconds, note), printed at the end


class HostileServer:
    """A running `python -m tests.hostile.server`: the URL of each mode and its observations."""

    def __init__(self, proc: subprocess.Popen, ports: dict, log: Path) -> None:
        self.proc, self.log = proc, log
        self.control = ports["control"]
        self.ports: dict[str, int] = ports["modes"]

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.ports[mode]}"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def start_server(tmp: Path, modes: str = "all") -> HostileServer:
    """Start the server in its own process group; wait (bounded) for its port file."""
    port_file, log = tmp / "ports.json", tmp / "hostile-server.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "tests.hostile.server", "--port-file", str(port_file),
                                 "--modes", modes], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    srv = None
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hostile server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        srv = HostileServer(proc, json.loads(port_file.read_text()), log)
        return srv
    finally:
        if srv is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    srv = start_server(tmp_path_factory.mktemp("hostile"))
    try:
        yield srv
    finally:
        srv.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """The suite's modes and the time each took (issue 9 asks to quote them)."""
    if not TABLE:
        return
    tr = terminalreporter
    tr.section("hostile modes")
    for name, outcome, seconds, note in TABLE:
        tr.write_line(f"{name:32} {outcome:7} {seconds:6.2f} s  {note}")
