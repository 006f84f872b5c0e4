"""A real python-socketio server that ends or refuses the namespace: the user must not reconnect.

socket.io-client reconnects after a lost transport, but not after `io server disconnect` (the
server sent DISCONNECT) nor after CONNECT_ERROR (docs/protocol.md §4.2): the app decides. The
reference app has no hook to kick a client, so this test serves a tiny app of its own under
uvicorn, in its own process group (the `procs` fixture kills it when the test ends).
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import gevent
import pytest

from locustfiles.sio import eventlog
from targets.procs import free_port
from tests.integration.support import Procs
from tests.integration.test_client_cluster import Probe, make_env

pytestmark = pytest.mark.slow

APP = '''
import socketio

sio = socketio.AsyncServer(async_mode="asgi")


@sio.event
async def connect(sid, environ, auth=None):
    if isinstance(auth, dict) and auth.get("reject"):
        raise socketio.exceptions.ConnectionRefusedError("not authorized")


@sio.on("echo")
async def echo(sid, *args):
    return args[0] if args else None


@sio.on("kick")
async def kick(sid, *args):
    await sio.disconnect(sid)


app = socketio.ASGIApp(sio)
'''

# the first reconnect attempt comes 0.5-1.5 s after a loss (backoff.py); wait past it
RECONNECT_WINDOW_S = 2.5


@pytest.fixture(scope="module")
def kick_server(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("kick")
    (tmp / "kick_app.py").write_text(APP)
    port = free_port()
    procs = Procs(tmp)
    try:
        p = procs.start([sys.executable, "-m", "uvicorn", "kick_app:app", "--host", "127.0.0.1", "--port", str(port),
                         "--log-level", "warning"], "kick_app")
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, (tmp / "kick_app.log").read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.close()


def _rows(u: Probe) -> list[dict]:
    return [r for r in eventlog._state(u.environment).buffer if r["user"] == u.user_id]


@pytest.mark.parametrize("transports", ["polling,websocket", "websocket", "polling"])
def test_no_reconnect_after_server_disconnect(kick_server: str, transports: str) -> None:
    u = Probe(make_env(kick_server, sio_reconnect="true", sio_transports=transports))
    try:
        assert u.connect(), u.steps
        assert u.call("echo", 1) == [1]
        u.emit("kick")
        gevent.sleep(RECONNECT_WINDOW_S)
        assert not u.connected
    finally:
        u._teardown()
    rows = _rows(u)
    steps = [r["step"] for r in rows]
    assert "reconnect" not in steps, rows
    assert steps.count("connect") == 1, rows
    [d] = [r for r in rows if r["step"] == "disconnect"]
    assert d["ok"] == 0 and d["error_kind"] == "transport_closed"
    assert d["error"].startswith("io server disconnect"), d


def test_no_reconnect_after_namespace_rejected(kick_server: str) -> None:
    u = Probe(make_env(kick_server, sio_reconnect="true", sio_transports="websocket"))
    try:
        assert not u.connect(auth={"reject": True})
        gevent.sleep(RECONNECT_WINDOW_S)
        # the app may retry by hand, as with socket.io-client: connect() again works
        assert u.connect()
    finally:
        u._teardown()
    rows = _rows(u)
    assert "reconnect" not in [r["step"] for r in rows], rows
    connects = [r for r in rows if r["step"] == "connect"]
    assert [(r["ok"], r["error_kind"]) for r in connects] == [(0, "namespace_rejected"), (1, "")], connects
    assert "not authorized" in connects[0]["error"]
