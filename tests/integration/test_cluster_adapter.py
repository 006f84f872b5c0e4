"""Room broadcasts with and without the Redis adapter, and Redis as a fault (stop/start).

Without an adapter a broadcast reaches only the room members on the sender's node; with the
Redis adapter it reaches members on every node. Both are measured with python-socketio's own
client over websocket-only connections spread by L4 round-robin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import socketio

from contract.config import ClusterConfig
from targets.cluster import Cluster, ClusterError
from targets.procs import port_is_free

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cfg = ClusterConfig(nodes=3, balancer="haproxy", policy="l4-round-robin", adapter=request.param)
    with Cluster(cfg) as c:
        yield c


def _connect_members(url: str, n: int, room: str) -> tuple[list[socketio.SimpleClient], list[str]]:
    clients, nodes = [], []
    for _ in range(n):
        c = socketio.SimpleClient()
        c.connect(url, transports=["websocket"], wait_timeout=5)
        clients.append(c)
        nodes.append(c.call("whoami", timeout=5))
        assert c.call("join", room, timeout=5) is True
    return clients, nodes


def _receivers(clients: list[socketio.SimpleClient], msg: dict, wait: float = 1.5) -> list[int]:
    got = []
    for i, c in enumerate(clients):
        try:
            ev = c.receive(timeout=wait)
        except socketio.exceptions.TimeoutError:
            continue
        if ev == ["broadcast", msg]:
            got.append(i)
    return got


@pytest.mark.parametrize("cluster", ["memory"], indirect=True)
def test_memory_adapter_reaches_only_the_senders_node(cluster: Cluster) -> None:
    clients, nodes = _connect_members(cluster.url, 6, "r")
    try:
        assert set(nodes) == {"n1", "n2", "n3"}  # round-robin: members on every node
        msg = {"room": "r", "id": "m-mem", "sent": time.time(), "from": "u0", "pad": ""}
        clients[0].emit("broadcast", msg)
        got = _receivers(clients, msg, wait=1.0)
        assert sorted(got) == [i for i, n in enumerate(nodes) if n == nodes[0]], (got, nodes)
    finally:
        for c in clients:
            c.disconnect()


@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_redis_adapter_reaches_every_node_and_survives_a_redis_restart(cluster: Cluster) -> None:
    clients, nodes = _connect_members(cluster.url, 6, "r")
    try:
        assert set(nodes) == {"n1", "n2", "n3"}
        msg = {"room": "r", "id": "m-redis", "sent": time.time(), "from": "u0", "pad": ""}
        clients[0].emit("broadcast", msg)
        assert sorted(_receivers(clients, msg, wait=5)) == list(range(6))

        redis_port = int(cluster.redis_url.rsplit(":", 1)[1].split("/")[0])
        cluster.stop_redis()
        assert port_is_free(redis_port)
        lost = {"room": "r", "id": "m-lost", "sent": time.time(), "from": "u0", "pad": ""}
        clients[0].emit("broadcast", lost)
        # Redis down: at most the sender's own node can deliver.
        assert set(_receivers(clients, lost)) <= {i for i, n in enumerate(nodes) if n == nodes[0]}

        cluster.start_redis()
        assert not port_is_free(redis_port)
        # The adapters reconnect on their own; give them a few seconds, then every member is reached.
        deadline = time.monotonic() + 20
        while True:
            probe_msg = {"room": "r", "id": f"m-{time.monotonic()}", "sent": time.time(), "from": "u0", "pad": ""}
            clients[0].emit("broadcast", probe_msg)
            got = _receivers(clients, probe_msg, wait=1.0)
            if len(got) == 6 or time.monotonic() > deadline:
                break
            for c in clients:  # drain partial deliveries before the next try
                while True:
                    try:
                        c.receive(timeout=0.05)
                    except socketio.exceptions.TimeoutError:
                        break
        assert len(got) == 6, got
    finally:
        for c in clients:
            c.disconnect()


@pytest.mark.parametrize("cluster", ["memory"], indirect=True)
def test_redis_hooks_refuse_on_a_cluster_without_redis(cluster: Cluster) -> None:
    with pytest.raises(ClusterError, match="no Redis of its own"):
        cluster.stop_redis()
