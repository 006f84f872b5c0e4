"""The blip's `silent` mode against the real Node.js server (issue 14): Redis Streams + recovery, two
nodes behind HAProxy cookie, pingInterval 1 s and pingTimeout 1 s so that a node notices a silent
client within about 2 s.

The choice is the runner's: `Cluster.blip(mode="silent")` picks connections at HAProxy, and
`silent.apply` (what every Locust process does with the order file) must reach exactly the users
holding them. A silenced connection gets no FIN: HAProxy still lists it until the node's ping
timeout. Then the two cases the issue names:
- the client is back before the node noticed (0.3 s): its CONNECT asks for a session the node has
  not stored yet, so it is not recovered and the broadcasts of the gap are lost;
- the client is back after the node's ping timeout (3 s): the node stored the session when it
  dropped the connection, so it is recovered with the gap replayed.
What is asserted is what the client recorded (`recover` rows, the numbered stream it received).
"""

from __future__ import annotations

import random
import time

import gevent
import locust  # noqa: F401 -- first, so gevent patches ssl before targets.telemetry imports redis
import pytest

from contract.config import ClusterConfig
from contract.control import SilentOrder
from locustfiles.sio import silent
from targets.blip import client_sessions
from targets.cluster import Cluster, node_server_problem
from targets.telemetry import HAPROXY_STATS_SOCKET

from .support import until_green
from .test_client_cluster import Probe, make_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))]


def _gaps(ids: list[int]) -> int:
    """Messages missing between the first and the last received (a numbered stream)."""
    return (max(ids) - min(ids) + 1 - len(set(ids))) if ids else 0


def _silence(cluster: Cluster, env, users: list[Probe], seq: int, duration: float, rng: random.Random,
             gone: frozenset[str] = frozenset()) -> tuple[set[str], frozenset[str]]:
    """The runner's choice at HAProxy (a third of the connections, not those an earlier blip abandoned),
    carried out as a Locust process does: (the users hit, the connections chosen)."""
    rec = cluster.blip(1 / 3, mode="silent", rng=rng, exclude=gone)
    # the 6 users and the sender, less those left out: no connection an earlier blip abandoned among them
    assert rec["sessions"] == 7 - (6 - len(users)), rec
    assert rec["silenced"] == len(rec["addrs"]) == round(rec["sessions"] / 3) > 0, rec
    owners = {u.user_id for u in users if u.local_addresses() & set(rec["addrs"])}
    hit = silent.apply(env, SilentOrder(seq, time.time(), duration, frozenset(rec["addrs"])))
    assert set(hit) == owners and len(hit) >= 1, (hit, owners)
    # no FIN: HAProxy still holds every chosen connection right after the clients dropped them
    gevent.sleep(0.2)
    assert set(rec["addrs"]) <= {s.src for s in client_sessions(cluster.workdir / HAPROXY_STATS_SOCKET)}
    return set(hit), frozenset(rec["addrs"])


def test_silent_blip_hits_only_the_chosen_and_recovers_only_after_the_servers_ping_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("locustfiles.sio.user.reconnect_delay_ms", lambda attempt, rand: 200)
    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", adapter="redis-streams", server="node",
                        recovery=True, ping_interval=1, ping_timeout=1)
    with Cluster(cfg) as cluster:
        env = make_env(cluster.url, sio_reconnect="true", sio_transports="websocket")
        users = [Probe(env) for _ in range(6)]
        sender = Probe(make_env(cluster.url, sio_reconnect="true", sio_transports="websocket"))  # never chosen
        got: dict[str, list[int]] = {u.user_id: [] for u in users}
        n = [0]

        def send() -> None:
            while True:
                sender.emit("broadcast", {"room": "r", "id": f"s-{n[0]}", "sent": time.time(), "from": "s", "pad": ""})
                n[0] += 1
                gevent.sleep(0.1)

        pump = None
        try:
            for u in (*users, sender):
                u.on("broadcast", lambda p, uid=u.user_id: got.get(uid, []).append(int(p["id"][2:])))
                u.on_reconnected = lambda u=u: u.call("join", "r")  # as chat.py: a new session rejoins
                assert u.connect(), u.steps
                assert u.call("join", "r") == [True]
            gevent.sleep(0.3)  # the Streams adapter reads from "$": let its readers block first
            pump = gevent.spawn(send)
            until_green(lambda: all(len(ids) >= 3 for ids in got.values()), 5, "the stream everywhere")

            rng = random.Random(4)
            early, gone = _silence(cluster, env, users, 1, 0.3, rng)  # back before the node's ping timeout
            gevent.sleep(0.5)  # the early ones are back on new connections; their old ones are still open
            back = frozenset().union(*(u.local_addresses() for u in users if u.user_id in early))
            late, _ = _silence(cluster, env, [u for u in users if u.user_id not in early], 2, 3.0, rng, gone | back)
            until_green(lambda: all(any(s["name"] == "recover" for s in u.steps) for u in users
                                    if u.user_id in early | late), 8, "the silenced users' reconnects")
            gevent.sleep(0.6)
            untouched = [u for u in users if u.user_id not in early | late]
            assert untouched and all(not any(s["name"] in ("disconnect", "reconnect", "recover") for s in u.steps)
                                     for u in untouched)
            assert all(_gaps(got[u.user_id]) == 0 for u in untouched)
            for u in users:
                if u.user_id not in early | late:
                    continue
                lost = [s for s in u.steps if s["name"] == "disconnect"]
                assert len(lost) == 1 and lost[0]["error"].startswith("network_lost"), u.steps
                (rec,) = [s for s in u.steps if s["name"] == "recover"]
                print(f"{'early' if u.user_id in early else 'late'} {u.user_id}: recover {rec['error'] or 'ok'}, "
                      f"replayed {u.recovery.counts['replayed']}, missed {_gaps(got[u.user_id])}")
                if u.user_id in early:  # the node had stored nothing yet: a new session, the gap lost
                    assert rec["error"].startswith("not_recovered"), rec
                    assert _gaps(got[u.user_id]) > 0
                else:  # stored at the node's ping timeout, before the client came back
                    assert rec["error"] == "", rec
                    assert u.recovery.counts["replayed"] > 0 and _gaps(got[u.user_id]) == 0
        finally:
            if pump is not None:
                pump.kill()
            for u in (*users, sender):
                u._teardown()
