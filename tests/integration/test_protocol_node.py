"""The protocol core against the reference implementation: Node.js socket.io 4.8 with
`allowEIO3: true`, so both EIO4 and EIO3 framing meet a real engine.io parser (python-engineio
4.x serves EIO4 only). Driven by the real gevent driver (locustfiles/sio/driver.py).

Short heartbeats (pingInterval 400 ms) so pings in both directions happen within a second.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import gevent
import pytest

from locustfiles.sio.driver import Session, SessionConfig
from locustfiles.sio.protocol.actions import AckReceived, Closed, Connected, EventReceived, StepResult
from targets.procs import free_port
from tests.integration.support import first_action

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "targets" / "node" / "node_modules"

SERVER_JS = r"""
const http = require("http");
const { Server } = require("socket.io");
const srv = http.createServer();
const io = new Server(srv, { allowEIO3: true, pingInterval: 400, pingTimeout: 800, cors: { origin: true } });
function handlers(nsp) {
  nsp.on("connection", (s) => {
    s.on("echo", (...a) => { const ack = a[a.length - 1]; if (typeof ack === "function") ack(...a.slice(0, -1)); });
    s.on("ask", () => s.emit("q", "question?", (ans) => s.emit("answered", ans)));
  });
}
handlers(io);
handlers(io.of("/admin"));
srv.listen(Number(process.argv[2]), "127.0.0.1", () => console.log("ready"));
"""


@pytest.fixture(scope="module")
def node_url(tmp_path_factory):
    if not (NODE_MODULES / "socket.io").is_dir():
        pytest.skip("targets/node/node_modules/socket.io is not installed (npm ci in targets/node)")
    script = tmp_path_factory.mktemp("node") / "eio3_server.js"
    script.write_text(SERVER_JS)
    port = free_port()
    proc = subprocess.Popen(["node", str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NODE_PATH": str(NODE_MODULES)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"node server exited: {proc.stdout.read().decode()[-500:]}")
            time.sleep(0.05)
        else:
            raise RuntimeError("node server did not listen within 15 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.mark.parametrize("eio", [3, 4])
@pytest.mark.parametrize("transports,namespace", [
    (("polling", "websocket"), "/"),
    (("websocket",), "/"),
    (("polling",), "/"),
    (("polling", "websocket"), "/admin"),
])
def test_session_against_node_socketio(node_url, eio, transports, namespace):
    actions: list = []
    s = Session(SessionConfig(url=node_url, eio=eio, transports=transports, namespace=namespace, timeout=5.0),
                lambda a, ctx: actions.append(a))
    try:
        s.start()
        conn = first_action(actions, lambda a: isinstance(a, Connected))
        assert conn.namespace == namespace and conn.sid
        if len(transports) == 2:
            first_action(actions, lambda a: isinstance(a, StepResult) and a.step == "upgrade")
            assert s.proto.transport == "websocket"
        # text with non-BMP characters (EIO3 counts UTF-16 units) and a binary attachment
        text = "héllo 😀 𝄞"
        ack_id = s.emit("echo", text, b"\x00\x01\xff", ack=True)
        ack = first_action(actions, lambda a: isinstance(a, AckReceived) and a.ack_id == ack_id)
        assert ack.args == [text, b"\x00\x01\xff"]
        # a server event that asks for an ack, answered through send_ack
        s.emit("ask")
        q = first_action(actions, lambda a: isinstance(a, EventReceived) and a.event == "q")
        assert q.args == ["question?"] and q.ack_id is not None
        s.send_ack(q.ack_id, "answer 😀")
        answered = first_action(actions, lambda a: isinstance(a, EventReceived) and a.event == "answered")
        assert answered.args == ["answer 😀"]
        # heartbeats in the version's direction keep the session alive
        gevent.sleep(1.0)
        pings = [a for a in actions if isinstance(a, StepResult) and a.step == "ping"]
        assert pings and all(p.ok for p in pings), pings
        assert not any(isinstance(a, Closed) for a in actions)
        s.disconnect()
        closed = first_action(actions, lambda a: isinstance(a, Closed))
        assert closed.error_kind == "", closed
        failures = [a for a in actions if isinstance(a, StepResult) and not a.ok]
        assert failures == []
        steps = [a.step for a in actions if isinstance(a, StepResult)]
        assert steps[0] == "handshake" and "connect" in steps and steps[-1] == "disconnect"
    finally:
        s.abort()


def test_node_unknown_sid_answers_are_session_unknown(node_url):
    """Node's real refusals for a sid it never issued (what a non-sticky balancer provokes):
    polling → 400 {"code":1,...}; WebSocket upgrade → raw 400 "Session ID unknown"."""
    import http.client

    from locustfiles.sio.protocol.classify import is_session_unknown
    from locustfiles.sio.protocol.client import ClientProtocol

    host, port = node_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/socket.io/?EIO=4&transport=polling&sid=NOPE&t=abc")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 400 and is_session_unknown(resp.status, body), body
    c = ClientProtocol(transports=("polling",))
    (hs,) = c.start(0.0)
    c.http_response(hs.rid, 200, b'0{"sid":"NOPE","upgrades":[],"pingInterval":25000,"pingTimeout":20000}', 0.01)
    a = c.http_response(2, resp.status, body, 0.02)
    assert a[-1].error_kind == "session_unknown"

    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall((f"GET /socket.io/?EIO=4&transport=websocket&sid=NOPE HTTP/1.1\r\nHost: {host}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        raw = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            raw += d
    head, _, ws_body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert status == 400, raw
    c = ClientProtocol()
    (hs,) = c.start(0.0)
    c.http_response(hs.rid, 200, b'0{"sid":"NOPE","upgrades":["websocket"],"pingInterval":25000,'
                                 b'"pingTimeout":20000}', 0.01)
    a = c.ws_failed(status, ws_body, "", "", 0.02)
    probe = [x for x in a if isinstance(x, StepResult)][0]
    assert (probe.step, probe.error_kind) == ("upgrade_probe", "session_unknown"), (raw, a)
    assert c.state == "connecting"  # a failed probe leaves the session on polling
