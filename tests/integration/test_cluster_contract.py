"""The pinned server contract, checked on both reference servers (python-socketio and Node.js).

Same test body for both: the events of docs/contracts.md, the x-served-by header on every
kind of answer, and cross-node room broadcasts through the Redis adapter.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import pytest
import requests
import socketio

from contract.config import ClusterConfig
from targets import probe
from targets.cluster import Cluster, node_server_problem

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["python", "node"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.param == "node":
        problem = node_server_problem()
        if problem:
            pytest.skip(f"Node.js server unavailable: {problem}")
    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="l4-round-robin", adapter="redis", server=request.param)
    with Cluster(cfg) as c:
        yield c


def _client(url: str) -> socketio.SimpleClient:
    c = socketio.SimpleClient()
    c.connect(url, transports=["websocket"], wait_timeout=5)
    return c


def test_events_answer_as_pinned(cluster: Cluster) -> None:
    c = _client(cluster.url)
    try:
        payload = {"id": "m1", "pad": "x" * 100, "nested": [1, 2.5, None, "é"]}
        assert c.call("echo", payload, timeout=5) == payload
        assert c.call("echo", "plain", timeout=5) == "plain"
        assert c.call("whoami", timeout=5) in ("n1", "n2")
        assert c.call("join", "room-a", timeout=5) is True
        msg = {"room": "room-a", "id": "b1", "sent": time.time(), "from": "u1", "pad": "p" * 10}
        c.emit("broadcast", msg)
        assert c.receive(timeout=5) == ["broadcast", msg]  # sender included, payload untouched
        assert c.call("leave", "room-a", timeout=5) is True
        # A broadcast acked when asked; bad input answered, not crashed on.
        assert c.call("broadcast", {"room": "room-a", "id": "b2"}, timeout=5) is True
        assert c.call("join", 42, timeout=5) is False
        assert c.call("broadcast", "not a dict", timeout=5) is False
        assert c.call("whoami", timeout=5) in ("n1", "n2")  # still connected
    finally:
        c.disconnect()


def test_every_answer_carries_the_node_header(cluster: Cluster) -> None:
    for node in cluster.info["nodes"]:
        nid, url = node["id"], node["url"]
        h = probe.handshake(url)
        assert (h.status, h.served_by) == (200, nid)
        up = probe.ws_upgrade(url)
        assert (up.status, up.served_by) == (101, nid)
        bad = probe.ws_upgrade(url, query="EIO=4&transport=websocket&sid=nosuchsid")
        assert bad.status in (400, 403) and bad.served_by == nid, (bad.status, bad.headers)
        r = requests.post(f"{url}/socket.io/?EIO=4&transport=polling&sid=nosuchsid", data="40", timeout=5)
        assert r.status_code == 400 and r.headers.get("x-served-by") == nid
        assert "Invalid session" in r.text or "Session ID unknown" in r.text, r.text


def test_redis_adapter_reaches_room_members_on_every_node(cluster: Cluster) -> None:
    clients = [_client(n["url"]) for n in cluster.info["nodes"] for _ in range(2)]
    try:
        nodes = {c.call("whoami", timeout=5) for c in clients}
        assert nodes == {"n1", "n2"}
        for c in clients:
            assert c.call("join", "all", timeout=5) is True
        msg = {"room": "all", "id": "x1", "sent": time.time(), "from": "u0", "pad": ""}
        clients[0].emit("broadcast", msg)
        for c in clients:
            assert c.receive(timeout=5) == ["broadcast", msg]
    finally:
        for c in clients:
            c.disconnect()


def test_node_server_serves_tls_itself_without_a_balancer() -> None:
    problem = node_server_problem()
    if problem:
        pytest.skip(f"Node.js server unavailable: {problem}")
    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct", server="node", tls=True)) as c:
        ctx = ssl.create_default_context(cafile=c.info["ca_file"])
        assert c.url.startswith("https://")
        assert probe.handshake(c.url, ssl_context=ctx).served_by == "n1"
        assert probe.ws_upgrade(c.url, ssl_context=ctx).status == 101
        with pytest.raises(ssl.SSLCertVerificationError):
            probe.handshake(c.url, ssl_context=ssl.create_default_context())
