"""Local python-socketio servers for the client benchmarks: own process group, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The reference app when the targets part provides it, else this minimal equivalent.
_FALLBACK_APP = """
import socketio
sio = socketio.AsyncServer(async_mode="asgi")
@sio.event
async def echo(sid, data=None):
    return data
app = socketio.ASGIApp(sio)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout:g}s")


@contextlib.contextmanager
def python_node(node_id: str = "n1", port: int | None = None) -> Iterator[str]:
    """One python-socketio node under uvicorn; yields its base URL."""
    port = port or free_port()
    if (ROOT / "targets" / "app.py").exists():
        cmd = [sys.executable, "-m", "targets.app", "--id", node_id, "--port", str(port)]
        cwd = ROOT
    else:
        d = Path(os.environ.get("TMPDIR", "/tmp")) / f"sioscale-bench-{os.getpid()}"
        d.mkdir(exist_ok=True)
        (d / "bench_app.py").write_text(_FALLBACK_APP)
        cmd = [sys.executable, "-m", "uvicorn", "bench_app:app", "--port", str(port), "--log-level", "warning"]
        cwd = d
    proc = subprocess.Popen(cmd, cwd=cwd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
