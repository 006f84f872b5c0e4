"""SocketIOUser against real python-socketio nodes, direct and through real HAProxy.

Each check drives real users (real sockets, real balancer) and reads the Locust request events
they fire, so what is asserted is what a load test would report.
"""

from __future__ import annotations

import argparse
import time

import gevent
import pytest
from locust.env import Environment
from locust.event import Events

from contract.config import ClusterConfig
from locustfiles.sio import SioError, SocketIOUser
from targets.cluster import Cluster

pytestmark = pytest.mark.slow


class Probe(SocketIOUser):
    """A bare SocketIOUser driven from the test greenlet."""

    abstract = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.steps: list[dict] = []
        environment.events.request.add_listener(self._seen)

    def _seen(self, request_type, name, response_time, exception, context, **_kw) -> None:
        if context.get("user") == self.user_id:
            self.steps.append({"type": request_type, "name": name, "ms": response_time, "node": context.get("node"),
                               "error": str(exception) if exception else ""})

    def failures(self) -> list[str]:
        return [s["error"] for s in self.steps if s["error"]]

    def names(self) -> list[str]:
        return [s["name"] for s in self.steps]


def make_env(url: str, **opts) -> Environment:
    env = Environment(events=Events(), host=url)
    env.parsed_options = argparse.Namespace(**{"sio_timeout": 5.0, "sio_reconnect": "false", **opts})
    return env


def users(url: str, n: int, **opts) -> list[Probe]:
    env = make_env(url, **opts)
    return [Probe(env) for _ in range(n)]


def close_all(us: list[Probe]) -> None:
    for u in us:
        u._teardown()


def try_connect(url: str, n: int, **opts) -> tuple[list[bool], list[str]]:
    """n users each try to connect once, then all close: (who connected, every failure they logged)."""
    us = users(url, n, **opts)
    try:
        ok = [u.connect() for u in us]
    finally:
        close_all(us)
    return ok, [f for u in us for f in u.failures()]


def connect_all(url: str, n: int, **opts: object) -> list[Probe]:
    """n users connect at once (each its own greenlet, 20 s in all); the caller closes them."""
    us = users(url, n, **opts)
    gevent.joinall([gevent.spawn(u.connect) for u in us], timeout=20)
    return us


def sticky_nodes(us: list[Probe]) -> list[str]:
    """Each user's one node (asserting every step of it, and `whoami`, named that node)."""
    out = []
    for u in us:
        assert u.connected, u.steps
        served = {s["node"] for s in u.steps}
        node = u.call("whoami")[0]
        assert served == {node}, u.steps
        out.append(node)
    assert not [f for u in us for f in u.failures()]
    return out


@pytest.fixture(scope="module")
def direct():
    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct")) as c:
        yield c


@pytest.mark.parametrize("transports", ["polling,websocket", "websocket", "polling"])
def test_transports_direct(direct: Cluster, transports: str) -> None:
    [u] = users(direct.url, 1, sio_transports=transports)
    try:
        assert u.connect(), u.steps
        assert u.call("echo", {"x": [1, 2]}) == [{"x": [1, 2]}]
        assert u.call("join", "r1") == [True]
        u.emit("broadcast", {"room": "r1", "id": "m1"})
        assert u.wait_for("broadcast", 3) == [{"room": "r1", "id": "m1"}]
        assert u.call("whoami") == ["n1"]
        u.disconnect()
    finally:
        close_all([u])
    names = u.names()
    expected = {"polling,websocket": ["handshake", "upgrade_probe", "upgrade", "connect"],
                "websocket": ["handshake", "connect"], "polling": ["handshake", "connect"]}[transports]
    seen = [n for n in names if n in ("handshake", "upgrade_probe", "upgrade", "connect")]
    # Each step once, the handshake first, the probe before the upgrade. The CONNECT ack
    # (40{sid}) races the probe, as in a browser: it may be reported before or after it.
    assert sorted(seen) == sorted(expected) and seen[0] == "handshake", seen
    if "upgrade" in expected:
        assert seen.index("upgrade_probe") < seen.index("upgrade"), seen
    assert {"ack:echo", "ack:join", "emit:broadcast", "disconnect"} <= set(names)
    assert not u.failures()
    assert all(s["node"] == "n1" for s in u.steps if s["name"] in ("handshake", "connect"))
    assert u.session.closed and not u.session._polls and u._http.open_connections == 0


def test_node_header_option_in_the_servers_case(direct: Cluster) -> None:
    # the node stamps "x-served-by"; an option written "X-Served-By" must still attribute
    # (no balancer here, so there is no sticky cookie to fall back on)
    [u] = users(direct.url, 1, sio_node_header="X-Served-By")
    try:
        assert u.connect(), u.steps
        assert u.call("echo", 1) == [1]
    finally:
        close_all([u])
    assert {s["node"] for s in u.steps if s["name"] in ("handshake", "connect", "ack:echo")} == {"n1"}, u.steps


def test_polling_uses_two_keepalive_connections(direct: Cluster) -> None:
    [u] = users(direct.url, 1, sio_transports="polling")
    try:
        assert u.connect()
        for i in range(5):
            u.call("echo", i)
        # the parked GET and the POSTs: two connections, reused (not one per request)
        assert u._http.connections_opened == 2
    finally:
        close_all([u])


@pytest.fixture(scope="module")
def haproxy_cookie():
    with Cluster(ClusterConfig(nodes=3, balancer="haproxy", policy="cookie")) as c:
        yield c


def test_cookie_sticky_polling_upgrade(haproxy_cookie: Cluster) -> None:
    us = users(haproxy_cookie.url, 6)
    try:
        gevent.joinall([gevent.spawn(u.connect) for u in us], timeout=20)
        assert all(u.connected for u in us), [u.failures() for u in us]
        nodes = set()
        for u in us:
            served = {s["node"] for s in u.steps}
            assert len(served) == 1, u.steps  # sticky: every step of a user on one node
            node = u.call("whoami")[0]
            assert served == {node}
            nodes.add(node)
        assert len(nodes) >= 2  # the balancer spread users, the jar kept each one sticky
    finally:
        close_all(us)
    assert not [f for u in us for f in u.failures()]


def test_l7_round_robin_polling_fails_session_unknown() -> None:
    with Cluster(ClusterConfig(nodes=3, balancer="haproxy", policy="l7-round-robin")) as c:
        us = users(c.url, 4, sio_timeout=3.0)
        try:
            ok = [u.connect() for u in us]
        finally:
            close_all(us)
        fails = [f for u in us for f in u.failures()]
        assert fails and not all(ok)
        assert any(f.startswith("session_unknown") for f in fails), fails
        assert any(n == "node_switch" for u in us for n in u.names())
        # websocket-only needs no stickiness: one TCP connection
        ws = users(c.url, 4, sio_transports="websocket")
        try:
            assert all(u.connect() for u in ws)
            assert all(u.call("echo", 1) == [1] for u in ws)
        finally:
            close_all(ws)
        assert not [f for u in ws for f in u.failures()]


def test_reconnect_after_node_killed() -> None:
    with Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie")) as c:
        [u] = users(c.url, 1, sio_reconnect="true")
        try:
            assert u.connect()
            first = u.call("whoami")[0]
            c.stop_node(first)
            deadline = time.monotonic() + 12
            while time.monotonic() < deadline and "reconnect" not in [
                s["name"] for s in u.steps if not s["error"]
            ]:
                gevent.sleep(0.2)
            assert u.connected, u.steps
            assert u.call("whoami")[0] != first
            rec = [s for s in u.steps if s["name"] == "reconnect" and not s["error"]]
            assert rec and 400 <= rec[0]["ms"] <= 12000  # backoff 0.5-1.5 s, then a new session
            assert any(s["name"] == "disconnect" and s["error"] for s in u.steps)  # the loss, classified
        finally:
            close_all([u])


def test_call_after_close_fails_fast(direct: Cluster) -> None:
    [u] = users(direct.url, 1, sio_transports="websocket")
    try:
        assert u.connect()
        u.disconnect()
        t0 = time.monotonic()
        with pytest.raises(SioError, match="^transport_closed"):
            u.call("echo", 1)
        assert time.monotonic() - t0 < 1
    finally:
        close_all([u])
