"""HTTP/2 in the browser pool against a real balancer (issue 13): Caddy with --tls offers h2 by
ALPN, as it does by default, and every polling request of a user becomes a stream on one TCP
connection (the WebSocket keeps a connection of its own: Caddy does not advertise
SETTINGS_ENABLE_CONNECT_PROTOCOL). The count of TCP connections is the kernel's (psutil), not
the client's idea of it. The `node` pool offers no ALPN and stays on HTTP/1.1.
"""

from __future__ import annotations

import os

import gevent
import psutil
import pytest

from contract.config import ClusterConfig
from targets.cluster import Cluster
from tests.integration.test_client_cluster import Probe, close_all, users

pytestmark = pytest.mark.slow

USERS = 3


@pytest.fixture(scope="module")
def caddy_tls():
    with Cluster(ClusterConfig(nodes=2, balancer="caddy", policy="cookie", tls=True)) as c:
        yield c


def _tcp_to(port: int) -> int:
    """This process's established TCP connections to the balancer's port."""
    return sum(1 for c in psutil.Process(os.getpid()).net_connections("tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def _chat(us: list[Probe]) -> None:
    """Connect everyone at once, then several acked emits each (POSTs beside the parked poll)."""
    gevent.joinall([gevent.spawn(u.connect) for u in us], timeout=15)
    assert all(u.connected for u in us), [u.failures() for u in us]
    for i in range(4):
        for u in us:
            assert u.call("echo", f"m{i}" * 5000) == [f"m{i}" * 5000]


@pytest.mark.parametrize(("transports", "tcp_per_user"), [("polling", 1), ("polling,websocket", 2)])
def test_one_connection_per_user_carries_every_poll(caddy_tls: Cluster, transports: str, tcp_per_user: int) -> None:
    us = users(caddy_tls.url, USERS, sio_transports=transports, sio_http_pool="browser",
               sio_ca_file=str(caddy_tls.tls.ca_file))
    try:
        _chat(us)
        gevent.sleep(0.2)
        assert _tcp_to(caddy_tls.balancer_port) == USERS * tcp_per_user
        for u in us:
            http = u._http
            assert http is not None and http.protocol == "h2"
            assert http.connections_opened == 1, list(http.served)
            assert {cid for _, cid in http.served} == {1}
            if transports == "polling":  # GETs and POSTs side by side on the one session
                assert sum(1 for m, _ in http.served if m == "POST") >= 5
        assert not [f for u in us for f in u.failures()]
    finally:
        close_all(us)


def test_the_node_pool_stays_on_http11(caddy_tls: Cluster) -> None:
    [u] = users(caddy_tls.url, 1, sio_transports="polling", sio_ca_file=str(caddy_tls.tls.ca_file),
                sio_http_pool="node")
    try:
        _chat([u])
        assert u._http is not None and u._http.protocol == "http/1.1"  # Node's client: no ALPN, no h2
        assert u._http.connections_opened >= 2  # a parked GET and each POST on connections of their own
    finally:
        close_all([u])
