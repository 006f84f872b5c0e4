"""Issue 13: an L4 TLS passthrough to nodes that speak HTTP/2 -- one connection, one node.

Three Node.js socket.io nodes serve TLS themselves with `--http2` (node's HTTP/2 server, ALPN h2,
allowHTTP1); in front of them a per-connection round-robin TCP forwarder (what HAProxy `mode tcp`
without TLS termination does). The browser pool's user rides one HTTP/2 connection for every
poll, so its session stays on one node and connects, as if the balancer were sticky; the Node.js
client's pattern (a connection per concurrent request, HTTP/1.1) meets a second node at its first
poll and gets `session_unknown`. Users connect one at a time, so the round-robin is deterministic.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent import socket as gsocket

from targets.procs import free_port
from targets.tls import make_tls
from tests.integration.support import ROOT, Procs, await_port
from tests.integration.test_client_cluster import close_all, users

pytestmark = pytest.mark.slow

SERVER_JS = ROOT / "targets" / "node" / "server.js"
NODES = 3


class RoundRobinForwarder:
    """Each accepted TCP connection goes to the next upstream port, bytes copied both ways."""

    def __init__(self, ports: list[int]) -> None:
        self._next = itertools.cycle(ports)
        self._lsock = gsocket.socket()
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        self._greenlets: list[gevent.Greenlet] = [gevent.spawn(self._accept)]
        self._socks: list = []

    def _accept(self) -> None:
        while True:
            client, _ = self._lsock.accept()
            up = gsocket.create_connection(("127.0.0.1", next(self._next)))
            self._socks += [client, up]
            self._greenlets += [gevent.spawn(self._pipe, client, up), gevent.spawn(self._pipe, up, client)]

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        gevent.killall(self._greenlets, block=True, timeout=2)
        for s in [self._lsock, *self._socks]:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def passthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not (ROOT / "targets" / "node" / "node_modules" / "socket.io").is_dir():
        pytest.skip("targets/node/node_modules/socket.io is not installed (npm ci in targets/node)")
    tmp = Path(tmp_path_factory.mktemp("h2nodes"))
    tls = make_tls(tmp)
    procs = Procs(tmp)
    fwd = None
    try:
        ports = [free_port("127.0.0.1") for _ in range(NODES)]
        for i, port in enumerate(ports, 1):
            procs.start(["node", str(SERVER_JS), "--id", f"n{i}", "--port", str(port), "--certfile",
                         str(tls.cert_file), "--keyfile", str(tls.key_file), "--http2"], f"n{i}")
        for port in ports:
            await_port(port, timeout=15.0)
        fwd = RoundRobinForwarder(ports)
        yield f"https://127.0.0.1:{fwd.port}", str(tls.ca_file)
    finally:
        if fwd is not None:
            fwd.close()
        procs.close()


@pytest.mark.parametrize("pool", ["browser", "node"])
def test_one_h2_connection_keeps_the_session_on_one_node(passthrough: tuple[str, str], pool: str) -> None:
    url, ca = passthrough
    us = users(url, 3, sio_transports="polling", sio_http_pool=pool, sio_ca_file=ca)
    try:
        connected = [u.connect() for u in us]  # one at a time: the round-robin is deterministic
        if pool == "browser":
            assert all(connected), [u.failures() for u in us]
            for u in us:
                assert u.call("echo", "hi") == ["hi"]
                assert u._http is not None and u._http.protocol == "h2" and u._http.connections_opened == 1
                assert len({s["node"] for s in u.steps if s["node"]}) == 1, u.steps  # never a second node
            assert len({next(s["node"] for s in u.steps if s["node"]) for u in us}) == NODES  # spread over all
            assert not [f for u in us for f in u.failures()]
        else:
            assert not any(connected), [u.steps for u in us]
            assert all(any("nvalid session" in f or "unknown" in f.lower() for f in u.failures()) for u in us), \
                [u.failures() for u in us]
    finally:
        close_all(us)
