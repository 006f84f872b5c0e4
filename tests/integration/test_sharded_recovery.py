"""The sharded Redis adapter with connection-state recovery on, against the real Node.js server (issue 14).

The finding behind campaigns/recovery.toml's redis-sharded + recovery row (34 % delivery once):
@socket.io/redis-adapter 8.3's `createShardedAdapter` is a socket.io-adapter ClusterAdapter whose
publish resolves to "", so with `connectionStateRecovery` every event without ack gets an offset
appended that is none: "" on the node that published it, null (JS undefined) on the others. The
client left the null among the handler's arguments, and a handler of one argument raised TypeError
on every broadcast from another node. Now both are taken off and counted (`bad_offset`), each
broadcast reaches every member once, and a cut session is still not recovered (the adapter stores
nothing): the server's behaviour, recorded as such.
"""

from __future__ import annotations

import gevent
import locust  # noqa: F401 -- first, so gevent patches ssl before targets.telemetry imports redis
import pytest

from contract.config import ClusterConfig
from targets.cluster import SHARDED_MIN_REDIS, Cluster, ClusterError, find_redis_server, node_server_problem

from .test_client_cluster import Probe, make_env
from .test_recovery_node import _broadcast, _cut, _until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))]


def test_sharded_adapter_offsets_are_none_every_member_still_gets_each_broadcast_and_nothing_recovers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        find_redis_server(SHARDED_MIN_REDIS)
    except ClusterError as e:
        pytest.skip(str(e))
    monkeypatch.setattr("locustfiles.sio.user.reconnect_delay_ms", lambda attempt, rand: 300)
    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", adapter="redis-sharded", server="node",
                        recovery=True)
    with Cluster(cfg) as cluster:
        env = make_env(cluster.url, sio_reconnect="true")
        users = [Probe(env) for _ in range(4)]
        got: dict[str, list[str]] = {u.user_id: [] for u in users}
        try:
            for u in users:
                u.on("broadcast", lambda p, uid=u.user_id: got[uid].append(p["id"]))  # one argument, as chat.py's
                assert u.connect(), u.steps
                assert u.call("join", "r") == [True]
            nodes = {u.session.proto.node for u in users}
            assert nodes == {"n1", "n2"}, nodes  # members on both nodes: "" and null both on the wire
            sender, victim = users[0], users[1]
            for i in range(3):
                _broadcast(sender, f"m{i}")
            _until(lambda: all(len(ids) >= 3 for ids in got.values()), 5, "3 broadcasts at every member")
            assert all(ids == ["m0", "m1", "m2"] for ids in got.values()), got
            counts = [u.recovery.counts for u in users]
            assert sum(c["bad_offset"] for c in counts) >= 12 and not any(c["duplicated"] for c in counts)
            old = victim.session
            _cut(cluster, victim, "client")
            _until(lambda: old.closed, 3, "the cut to be seen")
            _until(lambda: victim.session is not old and victim.connected, 8, "the reconnect")
            gevent.sleep(0.2)
            (recover,) = [s for s in victim.steps if s["name"] == "recover"]
            assert recover["error"].startswith("not_recovered") and "only empty offsets" in recover["error"], recover
            assert victim.recovery.counts["replay_without_recovery"] == 0
        finally:
            for u in users:
                u._teardown()
