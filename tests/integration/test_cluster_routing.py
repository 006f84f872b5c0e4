"""Each balancer policy routes as it claims, measured on real HAProxy/Caddy and real nodes.

Routing is read from the `x-served-by` header every node stamps on its answers (the 101 of a
WebSocket upgrade, polling answers, 400 refusals), so these tests see what the balancer did,
not what its config says.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from contract.config import CADDY_COOKIE, ClusterConfig
from contract.config import NODE_COOKIE as HAPROXY_COOKIE
from targets import probe
from targets.cluster import Cluster

pytestmark = pytest.mark.slow

NODES = ("n1", "n2", "n3")


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    balancer, policy = request.param
    with Cluster(ClusterConfig(nodes=3, balancer=balancer, policy=policy)) as c:
        yield c


@pytest.mark.parametrize(
    "cluster",
    [("haproxy", "l4-round-robin"), ("haproxy", "l7-round-robin"), ("caddy", "l7-round-robin")],
    indirect=True,
    ids=lambda p: "-".join(p),
)
def test_round_robin_spreads_websocket_connections_evenly(cluster: Cluster) -> None:
    counts = Counter(probe.ws_upgrade(cluster.url).served_by for _ in range(300))
    assert set(counts) == set(NODES), counts
    for node in NODES:
        assert 90 <= counts[node] <= 110, counts  # within +-10 % of a third


@pytest.mark.parametrize("cluster", [("haproxy", "leastconn")], indirect=True, ids=lambda p: "-".join(p))
def test_leastconn_sends_new_connections_to_the_least_loaded_node(cluster: Cluster) -> None:
    held = [probe.ws_upgrade(cluster.url, keep_open=True) for _ in range(30)]
    try:
        assert all(u.status == 101 for u in held)
        counts = Counter(u.served_by for u in held)
        assert counts == {"n1": 10, "n2": 10, "n3": 10}, counts
        # Free 5 slots on n2: the next 5 connections must all land there.
        on_n2 = [u for u in held if u.served_by == "n2"][:5]
        for u in on_n2:
            u.close()
        time.sleep(0.5)  # HAProxy counts a tunnel as closed once both sides have seen the FIN
        fresh = [probe.ws_upgrade(cluster.url, keep_open=True) for _ in range(5)]
        held += fresh
        assert [u.served_by for u in fresh] == ["n2"] * 5
    finally:
        for u in held:
            u.close()


@pytest.mark.parametrize(
    "cluster", [("haproxy", "source"), ("caddy", "ip-hash")], indirect=True, ids=lambda p: "-".join(p)
)
def test_source_hash_pins_one_source_ip_to_one_node(cluster: Cluster) -> None:
    one_ip = Counter(probe.ws_upgrade(cluster.url, source="127.0.0.1").served_by for _ in range(60))
    assert len(one_ip) == 1 and sum(one_ip.values()) == 60, one_ip
    many_ips = Counter(probe.ws_upgrade(cluster.url, source=f"127.0.0.{i}").served_by for i in range(2, 62))
    assert len(many_ips) >= 2, many_ips  # the hash does spread distinct sources


def _sticky_session(url: str, cookie_name: str) -> tuple[list[str | None], str | None]:
    """Handshake, CONNECT, one poll and the upgrade of one session with a cookie jar.

    Returns the node of each of the four requests and the sticky cookie's value.
    """
    with requests.Session() as s:
        r = s.get(f"{url}/socket.io/?EIO=4&transport=polling", timeout=5)
        assert r.status_code == 200 and r.text.startswith("0{"), r.text
        sid = json.loads(r.text[1:])["sid"]
        seen = [r.headers.get("x-served-by")]
        r = s.post(f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}", data="40", timeout=5)
        assert r.status_code == 200, (r.status_code, r.text)
        seen.append(r.headers.get("x-served-by"))
        r = s.get(f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}", timeout=5)
        assert r.status_code == 200 and r.text.startswith("40"), r.text  # the CONNECT answer
        seen.append(r.headers.get("x-served-by"))
        cookie = s.cookies.get(cookie_name)
        up = probe.ws_upgrade(url, query=f"EIO=4&transport=websocket&sid={sid}",
                              headers={"Cookie": f"{cookie_name}={cookie}"} if cookie else None)
        assert up.status == 101, (up.status, up.body)
        seen.append(up.served_by)
    return seen, cookie


@pytest.mark.parametrize(
    "cluster", [("haproxy", "cookie"), ("caddy", "cookie")], indirect=True, ids=lambda p: "-".join(p)
)
def test_cookie_keeps_every_request_of_a_session_on_one_node(cluster: Cluster) -> None:
    name = HAPROXY_COOKIE if cluster.config.balancer == "haproxy" else CADDY_COOKIE
    per_session = []
    for _ in range(24):
        seen, cookie = _sticky_session(cluster.url, name)
        assert cookie, f"no {name} cookie set"
        assert len(set(seen)) == 1 and seen[0] in NODES, seen
        if cluster.config.balancer == "haproxy":
            assert cookie == seen[0]  # HAProxy's cookie value is the node id
        per_session.append(seen[0])
    spread = Counter(per_session)
    assert set(spread) == set(NODES), spread  # new sessions still spread over every node


@pytest.mark.parametrize(
    "cluster",
    [("haproxy", "l7-round-robin"), ("caddy", "l7-round-robin")],
    indirect=True,
    ids=lambda p: "-".join(p),
)
def test_l7_round_robin_breaks_polling_sessions(cluster: Cluster) -> None:
    refused = 0
    for _ in range(10):
        with requests.Session() as s:
            r = s.get(f"{cluster.url}/socket.io/?EIO=4&transport=polling", timeout=5)
            assert r.status_code == 200
            opener = r.headers["x-served-by"]
            sid = json.loads(r.text[1:])["sid"]
            r = s.post(f"{cluster.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data="40", timeout=5)
            if r.status_code == 400:
                assert "Invalid session" in r.text, r.text
                assert r.headers["x-served-by"] != opener  # refused by a node that never saw the sid
                refused += 1
    # Strict per-request rotation over 3 nodes sends every 2nd request elsewhere.
    assert refused == 10
