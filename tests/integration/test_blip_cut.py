"""The blip fault's `cut` through HAProxy's runtime API (targets/blip.py) against the real balancer:
only the chosen users' connections close, the others keep talking, and the nodes stay up."""

from __future__ import annotations

import gevent
import locust  # noqa: F401 -- first, so gevent patches ssl before targets.telemetry imports redis
import pytest

from contract.config import ClusterConfig
from targets.blip import client_sessions, cut_sessions, pick_fraction
from targets.cluster import Cluster, node_server_problem
from targets.telemetry import HAPROXY_STATS_SOCKET

from .support import until_green
from .test_client_cluster import Probe, make_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))]


def test_cut_closes_only_the_chosen_users() -> None:
    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", server="node")
    with Cluster(cfg) as cluster:
        sock = cluster.workdir / HAPROXY_STATS_SOCKET
        env = make_env(cluster.url, sio_reconnect="false", sio_transports="websocket")
        users = [Probe(env) for _ in range(6)]
        try:
            for u in users:
                assert u.connect(), u.steps
            port = {u.user_id: u.session._ws._conn.sock.getsockname()[1] for u in users}
            assert sorted(s.src_port for s in client_sessions(sock)) == sorted(port.values())
            chosen = {port[users[0].user_id], port[users[3].user_id]}
            cut = cut_sessions(sock, lambda ss: [s for s in ss if s.src_port in chosen])
            assert {s.src_port for s in cut} == chosen
            until_green(lambda: users[0].session.closed and users[3].session.closed, 3, "the cut users' close")
            gevent.sleep(0.3)
            for i in (1, 2, 4, 5):  # everyone else is untouched and still served
                assert users[i].connected and users[i].call("whoami")[0] in ("n1", "n2")
            closes = [s for s in users[0].steps if s["name"] == "disconnect"]
            assert closes and closes[0]["error"].startswith("transport_closed"), users[0].steps
            # a fraction of what is left: round(0.5 * 4) = 2 more
            assert len(cut_sessions(sock, lambda ss: pick_fraction(ss, 0.5))) == 2
            until_green(lambda: sum(u.session.closed for u in users) == 4, 3, "the fraction's close")
            assert len(client_sessions(sock)) == 2 and not cluster.dead()
        finally:
            for u in users:
                u._teardown()
