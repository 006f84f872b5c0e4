"""The benchmarks' local nodes die with the benchmark, even when it is SIGKILLed.

Why: a benchmark killed with SIGKILL (a CI timeout, an impatient Ctrl-\\) once leaked a
`targets.app` node for 25 minutes on the shared machine. The nodes now come from the
project's supervisor (own process group + PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import psutil
import pytest

from tests.integration.support import ROOT

pytestmark = pytest.mark.slow

SCRIPT = """
import time
from benchmarks._server import python_node
with python_node() as url:
    print(url, flush=True)
    time.sleep(120)
"""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _kill_listeners(port: int) -> None:
    """Test cleanup for a leaked node: kill the process group of whatever listens on `port`."""
    for c in psutil.net_connections(kind="tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(c.pid), signal.SIGKILL)


def test_sigkilled_benchmark_leaves_no_node() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    port = None
    try:
        line = p.stdout.readline()  # bounded: the supervisor gives up on a node after 30 s
        assert line.startswith("http://127.0.0.1:"), line
        port = urlsplit(line.strip()).port
        assert _listening(port)
        os.kill(p.pid, signal.SIGKILL)  # only the benchmark: no chance to run its finally
        p.wait(5)
        deadline = time.monotonic() + 5
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _listening(port), f"node on port {port} outlived its SIGKILLed benchmark"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)
        if port is not None:
            _kill_listeners(port)
