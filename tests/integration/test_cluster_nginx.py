"""Each nginx policy routes as it claims: real nginx, real python-socketio nodes, real SocketIOUsers.

A user's node is read from the `x-served-by` header each node stamps on its answers (through
nginx, which passes it on), per step, so "sticky" means every step of a user was served by one
node and "spread" means the users ended on more than one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from contract.config import SPREAD_SOURCE_RANGE, ClusterConfig, parse_campaign
from sioscale.runner import execute_run
from targets import nginx, probe
from targets.cluster import Cluster, ClusterError, find_binary
from targets.procs import port_is_free
from targets.telemetry import _ProcessMeter
from tests.integration.support import run_rows
from tests.integration.test_client_cluster import (
    close_all,
    connect_all,
    sticky_nodes,
    try_connect,
)

pytestmark = pytest.mark.slow

NODES = {"n1", "n2", "n3"}
NARROW = "127.0.0.2-127.0.0.13"  # 12 addresses in one /24


@pytest.fixture(scope="module", autouse=True)
def _have_nginx() -> None:
    try:
        find_binary("nginx")
    except ClusterError as e:
        pytest.skip(str(e))


def _cluster(policy: str, tls: bool = False, nodes: int = 3, workdir: Path | None = None) -> Cluster:
    return Cluster(ClusterConfig(nodes=nodes, balancer="nginx", policy=policy, tls=tls), workdir=workdir)


# ------------------------------------------------------------------ l7-round-robin
def test_l7_round_robin_breaks_polling_and_spreads_websockets() -> None:
    with _cluster("l7-round-robin") as c:
        ok, fails = try_connect(c.url, 4, sio_timeout=3.0)
        assert not all(ok) and any(f.startswith("session_unknown") for f in fails), fails
        counts = Counter(probe.ws_upgrade(c.url).served_by for _ in range(30))
        assert counts == {"n1": 10, "n2": 10, "n3": 10}, counts  # one decision per request, in turn
        ws = connect_all(c.url, 3, sio_transports="websocket")
        try:
            assert all(u.connected and u.call("echo", 1) == [1] for u in ws)
        finally:
            close_all(ws)


# ------------------------------------------------------- ip-hash / hash-consistent
@pytest.mark.parametrize("policy", ["ip-hash", "hash-consistent"])
def test_source_hash_is_sticky_and_spreads_sources_over_several_24s(policy: str) -> None:
    with _cluster(policy) as c:
        us = connect_all(c.url, 12, sio_source_range=SPREAD_SOURCE_RANGE)
        try:
            spread = Counter(sticky_nodes(us))
        finally:
            close_all(us)
        assert len(spread) >= 2, spread
        narrow = connect_all(c.url, 12, sio_source_range=NARROW)
        try:
            in_one_24 = Counter(sticky_nodes(narrow))
        finally:
            close_all(narrow)
        if policy == "ip-hash":
            assert len(in_one_24) == 1, in_one_24  # ip_hash keys on 3 octets: one /24 is one client
        else:
            assert len(in_one_24) >= 2, in_one_24  # the whole address is hashed


# --------------------------------------------------------------------- header-hash
def test_header_hash_is_sticky_per_user_and_spreads_users() -> None:
    with _cluster("header-hash") as c:
        us = connect_all(c.url, 12, sio_user_header=True)
        try:
            spread = Counter(sticky_nodes(us))
        finally:
            close_all(us)
        assert len(spread) >= 2, spread
        # the same user id lands on the same node on a new session (the hash is of the id alone)
        again = probe.ws_upgrade(c.url, headers={"X-SIO-User": us[0].user_id}).served_by
        assert again == next(s["node"] for s in us[0].steps if s["node"])
        # without the header the key is empty and nginx falls back to round robin: polling breaks
        ok, fails = try_connect(c.url, 3, sio_timeout=3.0)
        assert not any(ok) and any(f.startswith("session_unknown") for f in fails), fails


# ------------------------------------------------------------------ l4-round-robin
def test_l4_round_robin_carries_websocket_only_sessions_and_spreads_them() -> None:
    with _cluster("l4-round-robin") as c:
        ws = connect_all(c.url, 6, sio_transports="websocket")
        try:
            spread = Counter(sticky_nodes(ws))
        finally:
            close_all(ws)
        assert spread == {"n1": 2, "n2": 2, "n3": 2}, spread


# ---------------------------------------------------------------------- least-conn
def test_least_conn_sends_new_connections_to_the_least_loaded_node() -> None:
    with _cluster("least-conn") as c:
        held = [probe.ws_upgrade(c.url, keep_open=True) for _ in range(15)]
        try:
            assert all(u.status == 101 for u in held)
            assert Counter(u.served_by for u in held) == {"n1": 5, "n2": 5, "n3": 5}
            for u in [u for u in held if u.served_by == "n2"][:3]:
                u.close()
            time.sleep(0.3)
            fresh = [probe.ws_upgrade(c.url, keep_open=True) for _ in range(3)]
            held += fresh
            assert [u.served_by for u in fresh] == ["n2"] * 3
        finally:
            for u in held:
                u.close()
        us = connect_all(c.url, 6)  # polling first: least_conn is no stickiness, but short sessions pass
        close_all(us)


# ----------------------------------------------------------------------------- TLS
@pytest.mark.parametrize("policy", ["hash-consistent", "l4-round-robin"])
def test_tls_terminates_at_nginx_for_l7_and_at_the_tcp_listener_for_l4(policy: str) -> None:
    with _cluster(policy, tls=True, nodes=2) as c:
        assert c.url.startswith("https://")
        ws = connect_all(c.url, 4, sio_transports="websocket", sio_ca_file=c.info["ca_file"])
        try:
            nodes = sticky_nodes(ws)
            assert all(u.call("echo", {"tls": True}) == [{"tls": True}] for u in ws)
        finally:
            close_all(ws)
        assert set(nodes) <= {"n1", "n2"}
        if policy == "l4-round-robin":
            assert Counter(nodes) == {"n1": 2, "n2": 2}


# ------------------------------------------------- processes: group, sweep, telemetry
def test_worker_of_a_killed_master_is_swept_and_telemetry_sums_master_and_worker(tmp_path: Path) -> None:
    with _cluster("l7-round-robin", nodes=1, workdir=tmp_path) as c:  # the killed master is a death: logs kept
        assert c.balancer is not None and c.balancer.pid is not None
        master = psutil.Process(c.balancer.pid)
        [worker] = master.children()
        assert " ".join(worker.cmdline()).startswith(nginx.WORKER_TITLE)
        assert os.getpgid(worker.pid) == master.pid  # one group: stop_all's killpg reaches the worker
        assert nginx.sweep_orphans(tmp_path / "elsewhere") == [] and worker.is_running()  # its master lives
        meter = _ProcessMeter()
        alone, both = meter.sample(master.pid), _ProcessMeter().sample(master.pid, tree=True)
        assert both["rss_bytes"] > alone["rss_bytes"] and both["open_fds"] > alone["open_fds"]
        os.kill(master.pid, signal.SIGKILL)
        master.wait(5)
        time.sleep(0.2)
        assert worker.is_running()  # nginx workers outlive a SIGKILLed master
        assert worker.pid in nginx.sweep_orphans(c.workdir)
        worker.wait(5)


SUPERVISOR = """
import json, sys, time
from contract.config import ClusterConfig
from targets.cluster import Cluster
c = Cluster(ClusterConfig(nodes=1, balancer="nginx", policy="l7-round-robin"))
c.start()
print(json.dumps({"pids": [c.balancer.pid] + [ch.pid for ch in c.nodes.values()], "port": c.balancer_port}), flush=True)
time.sleep(60)
"""


def test_a_sigkilled_supervisor_leaves_no_nginx_master_nor_worker() -> None:
    """The master's parent-death signal is SIGTERM, which nginx passes on to its worker."""
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    seen: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        master = psutil.Process(info["pids"][0])
        seen = [master, *master.children(), *(psutil.Process(p) for p in info["pids"][1:])]
        assert len(seen) == 3  # master, its worker, the node
        proc.kill()
        proc.wait(5)
        gone, alive = psutil.wait_procs(seen, timeout=5)
        assert not alive, [(p.pid, p.name()) for p in alive]
        assert port_is_free(info["port"])
    finally:
        proc.kill()
        for p in seen:
            with contextlib.suppress(psutil.Error):
                p.kill()


# ------------------------------------------------------------- real runs (the runner)
RUNS = """
name = "nginx-runs"
[cluster]
nodes = 3
balancer = "nginx"
[axes]
policy = ["ip-hash", "header-hash"]
[load]
locustfile = "locustfiles/hold.py"
users = 8
spawn_rate = 8
duration = 3
log_all = true
"""


def test_runner_gives_ip_hash_a_spread_source_range_and_header_hash_the_user_header(tmp_path: Path) -> None:
    """Real `execute_run`s with no source range and no header option given: both policies keep
    every user on one node through polling and the upgrade, and spread users over nodes."""
    for cfg in parse_campaign(RUNS).runs():
        run_dir = tmp_path / cfg.cluster.policy
        meta = execute_run(cfg, run_dir)
        assert meta["status"] == "ok", meta.get("status_reasons")
        want = SPREAD_SOURCE_RANGE if cfg.cluster.policy == "ip-hash" else None
        assert meta["load"]["source_range"] == want  # what the run used, recorded
        rows = run_rows(run_dir)
        assert rows and all(r["ok"] == "1" for r in rows), [r for r in rows if r["ok"] != "1"][:3]
        per_user: dict[str, set[str]] = {}
        for r in rows:
            if r["node"]:
                per_user.setdefault(r["user"], set()).add(r["node"])
        assert len(per_user) == 8 and all(len(n) == 1 for n in per_user.values()), per_user
        assert len({n for ns in per_user.values() for n in ns}) >= 2, per_user
