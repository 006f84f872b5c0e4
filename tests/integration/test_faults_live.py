"""blip / pause_node / restart_node on a real cluster (issue 14 part 3): only the chosen users are
hit, a paused node is resumed (also when the cluster stops while it is paused), a restart is
graceful and the node serves again."""

from __future__ import annotations

import random

import gevent
import locust  # noqa: F401 -- first, so gevent patches ssl before targets.telemetry imports redis
import psutil
import pytest

from contract.config import ClusterConfig
from targets.cluster import Cluster, node_server_problem

from .support import until_green
from .test_client_cluster import Probe, make_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(node_server_problem() is not None, reason=str(node_server_problem()))]


def test_blip_cuts_the_fraction_and_a_target_only_its_nodes_users() -> None:
    with Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", server="node")) as cluster:
        env = make_env(cluster.url, sio_reconnect="false", sio_transports="websocket")
        users = [Probe(env) for _ in range(8)]
        try:
            for u in users:
                assert u.connect(), u.steps
            node = {u.user_id: u.call("whoami")[0] for u in users}
            on_n1 = {uid for uid, n in node.items() if n == "n1"}
            assert 0 < len(on_n1) < len(users), node  # both nodes hold users
            rec = cluster.blip(1.0, target="n1", rng=random.Random(1))
            assert rec == {"sessions": len(on_n1), "cut": len(on_n1), "cut_by_node": {"n1": len(on_n1)}}
            until_green(lambda: all(u.session.closed for u in users if u.user_id in on_n1), 3, "n1's users' close")
            gevent.sleep(0.3)
            assert all(not u.session.closed for u in users if u.user_id not in on_n1)  # n2's untouched
            left = [u for u in users if u.user_id not in on_n1]
            rec = cluster.blip(0.5, rng=random.Random(2))
            assert rec["sessions"] == len(left) and rec["cut"] == round(0.5 * len(left))
            until_green(lambda: sum(u.session.closed for u in left) == rec["cut"], 3, "the half's close")
            gevent.sleep(0.3)
            assert sum(u.session.closed for u in left) == rec["cut"] and not cluster.dead()
        finally:
            for u in users:
                u._teardown()


def test_pause_resume_restart_and_a_stop_while_paused() -> None:
    cluster = Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", server="node"))
    cluster.start()
    try:
        pid = cluster.nodes["n1"].pid
        cluster.pause_node("n1")
        until_green(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 2, "SIGSTOP")
        assert cluster.paused == {"n1"}
        cluster.resume_node("n1")
        until_green(lambda: psutil.Process(pid).status() != psutil.STATUS_STOPPED, 2, "SIGCONT")
        rec = cluster.restart_node("n2")
        assert rec["exit_code"] is not None and rec["down_s"] < 10  # it exited by itself, within the grace
        assert cluster.nodes["n2"].alive() and not cluster.dead()
        cluster.pause_node("n2")
        new_pid = cluster.nodes["n2"].pid
    finally:
        cluster.stop()  # must resume n2 first, or its port stays taken by a stopped process
    assert not psutil.pid_exists(new_pid) or psutil.Process(new_pid).status() == psutil.STATUS_ZOMBIE
    assert cluster.paused == set()
