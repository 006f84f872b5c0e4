"""Connection-state recovery against the real Node.js server (issue 14): two nodes behind HAProxy
cookie, recovery on, a client's connection cut while its node stays alive: from the client side
(its socket shut abruptly) or at the balancer (HAProxy's `shutdown session`, the blip's `cut`).

With the Redis Streams adapter the node that saw the close stores the session, so the reconnect --
sent to the *other* node on purpose -- comes back `recovered` with the broadcasts of the gap replayed
and its room kept. With the Redis pub/sub adapter nothing is stored: a fresh session, the gap lost.
The in-memory adapter recovers on one node (its offsets are yeast ids, Streams' are stream ids).
What is asserted is what a load test records: the `recover` step SocketIOUser reports and the
events its handler saw.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import gevent
import locust  # noqa: F401 -- first, so gevent patches ssl before targets.telemetry imports redis
import pytest

from contract.config import ClusterConfig
from contract.wire import NODE_COOKIE
from locustfiles.sio import eventlog
from targets.blip import cut_sessions
from targets.cluster import Cluster, node_server_problem
from targets.telemetry import HAPROXY_STATS_SOCKET

from .test_client_cluster import Probe, make_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))]

RECONNECT_DELAY_MS = 1500  # fixed, so the gap's broadcasts are sure to fall inside it


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.02)


def _broadcast(sender: Probe, msg_id: str) -> None:
    sender.emit("broadcast", {"room": "r", "id": msg_id, "sent": time.time(), "from": sender.user_id, "pad": ""})


def _cut(cluster: Cluster, victim: Probe, how: str) -> None:
    """Close the victim's connection: its own socket shut abruptly, or HAProxy's `shutdown session`."""
    if how == "client":
        victim.session._ws._conn.sock.shutdown(socket.SHUT_RDWR)  # no close frame; the node stays up
        return
    port = victim.session._ws._conn.sock.getsockname()[1]
    cut = cut_sessions(cluster.workdir / HAPROXY_STATS_SOCKET, lambda ss: [s for s in ss if s.src_port == port])
    assert len(cut) == 1


@pytest.mark.parametrize("adapter,nodes,recovers,how", [
    ("redis-streams", 2, True, "client"),
    ("redis", 2, False, "client"),
    ("redis-streams", 2, True, "haproxy"),
    ("memory", 1, True, "client"),  # one node: the in-memory adapter's yeast offsets on the wire
])
def test_a_cut_connection_is_recovered_only_by_an_adapter_that_stores_sessions(
        adapter: str, nodes: int, recovers: bool, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("locustfiles.sio.user.reconnect_delay_ms", lambda attempt, rand: RECONNECT_DELAY_MS)
    cfg = ClusterConfig(nodes=nodes, balancer="haproxy", policy="cookie", adapter=adapter, server="node",
                        recovery=True)
    with Cluster(cfg) as cluster:
        env = make_env(cluster.url, sio_reconnect="true")
        users = [Probe(env) for _ in range(3)]
        got: dict[str, list[str]] = {u.user_id: [] for u in users}
        try:
            for u in users:
                u.on("broadcast", lambda p, uid=u.user_id: got[uid].append(p["id"]))
                assert u.connect(), u.steps
                assert u.call("join", "r") == [True]
            _until(lambda: all(u.session.proto.transport == "websocket" for u in users), 5, "the upgrades")
            sender, victim, witness = users
            time.sleep(0.3)  # the Streams adapter reads from "$": let its readers block first
            _broadcast(sender, "m0")
            _until(lambda: all("m0" in ids for ids in got.values()), 5, "m0 everywhere")  # the victim has an offset
            first_node = victim.session.proto.node
            other = first_node if nodes == 1 else "n2" if first_node == "n1" else "n1"
            victim._http.cookies.update([f"{NODE_COOKIE}={other}"])  # the reconnect goes to the other node
            old = victim.session
            _cut(cluster, victim, how)
            _until(lambda: old.closed, 3, "the cut to be seen")
            gevent.sleep(0.2)  # the node saw the close and stored the session
            for i in (1, 2, 3):
                _broadcast(sender, f"m{i}")
            _until(lambda: "m3" in got[witness.user_id], 5, "the gap's broadcasts at the witness")
            _until(lambda: victim.session is not old and victim.connected, 8, "the reconnect")
            gevent.sleep(0.5)  # a replay is delivered right after the CONNECT reply
            recover = [s for s in victim.steps if s["name"] == "recover"]
            assert len(recover) == 1, victim.steps
            assert victim.session.proto.node == other
            gap = [m for m in got[victim.user_id] if m in ("m1", "m2", "m3")]
            if recovers:
                assert recover[0]["error"] == "", recover
                assert gap == ["m1", "m2", "m3"], got  # each missed broadcast replayed once, in order
                assert victim.recovery.counts["recovered"] == 1 and victim.recovery.counts["replayed"] == 3
                assert victim.recovery.counts["duplicated"] == 0
                _broadcast(sender, "m4")  # its room came back with the session: no rejoin needed
                _until(lambda: "m4" in got[victim.user_id], 5, "m4 at the recovered victim")
            else:
                assert recover[0]["error"].startswith("not_recovered"), recover
                assert "appended none" in recover[0]["error"]  # pub/sub adds no offset: it stores no packets
                assert gap == [], got
                assert victim.recovery.counts["not_recovered"] == 1
            assert got[witness.user_id].count("m1") == 1
            assert victim.recovery.counts["bad_offset"] == 0  # every offset the real server sent was read
        finally:
            for u in users:
                u._teardown()
        # the victim's counters went into the event log's batch as counts (what a worker ships)
        shipped = eventlog.payload_of(eventlog._state(env).producer, seq=0)["recovery"]
        assert shipped.get("recovered" if recovers else "not_recovered") == 1 and shipped.get("attempts") == 1, shipped
