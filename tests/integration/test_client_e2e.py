"""End-to-end checks of client features that only the real parts can prove.

Source-address spreading through HAProxy's source hash, TLS through a balancer with a private
CA, node attribution from the sticky cookies when the node header is absent, the hold and
churn scenarios under the real `locust` command, the web UI's "Reset stats" reaching the
Socket.IO tab under `--processes` (`--processes 4` with every row kept: test_eventlog_scale.py).
Every load is small (at most 12 users, a few seconds) and every process is killed at the end.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import gevent
import pytest

from contract.config import ClusterConfig
from targets.cluster import Cluster
from tests.integration.support import ROOT, Procs, free_port, log_of, processes, run_rows
from tests.integration.test_client_cluster import Probe, close_all, users

pytestmark = pytest.mark.slow

LOCUST = [str(ROOT / ".venv/bin/locust")]


def connect_all(us: list[Probe], timeout: float = 20) -> None:
    gevent.joinall([gevent.spawn(u.connect) for u in us], timeout=timeout)


def node_per_user(us: list[Probe]) -> dict[str, set[str]]:
    """The node attribution of every step each user saw (one entry per user)."""
    return {u.user_id: {s["node"] for s in u.steps} for u in us}


# -- 1. source-address spreading ------------------------------------------------------------------
def test_source_range_spreads_users_over_source_hash() -> None:
    with Cluster(ClusterConfig(nodes=3, balancer="haproxy", policy="source")) as c:
        spread = users(c.url, 12, sio_source_range="127.0.0.2-127.0.0.40", sio_transports="polling,websocket")
        try:
            connect_all(spread)
            assert all(u.connected for u in spread), [u.failures() for u in spread]
            for u in spread:  # the node header says who served; whoami confirms it
                assert u.call("whoami") == [next(iter({s["node"] for s in u.steps}))]
        finally:
            close_all(spread)
        seen = node_per_user(spread)
        assert all(len(n) == 1 for n in seen.values()), seen  # one source address -> one node
        assert len(set().union(*seen.values())) >= 2, seen  # 12 addresses hashed over 3 nodes
        assert not [f for u in spread for f in u.failures()]

        same = users(c.url, 8, sio_transports="polling,websocket")
        try:
            connect_all(same)
            assert all(u.connected for u in same), [u.failures() for u in same]
        finally:
            close_all(same)
        nodes = set().union(*node_per_user(same).values())
        assert len(nodes) == 1, nodes  # one source address (127.0.0.1): every user on one node


# -- 2. TLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_cluster():
    with Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", tls=True)) as c:
        yield c


def test_tls_with_ca_file_polling_then_websocket(tls_cluster: Cluster) -> None:
    url, ca = tls_cluster.info["url"], tls_cluster.info["ca_file"]
    assert url.startswith("https://") and Path(ca).is_file()
    us = users(url, 3, sio_ca_file=ca)
    try:
        connect_all(us)
        assert all(u.connected for u in us), [u.failures() for u in us]
        deadline = time.monotonic() + 5  # CONNECT may be acked over polling before the upgrade ends
        while time.monotonic() < deadline and any(u.session.proto.transport != "websocket" for u in us):
            gevent.sleep(0.05)
        for u in us:
            assert u.session.proto.transport == "websocket", u.steps  # upgraded over wss
            assert u.call("echo", {"tls": True}) == [{"tls": True}]
            assert u.call("join", "secure") == [True]
        us[0].emit("broadcast", {"room": "secure", "id": "m1"})
        assert us[0].wait_for("broadcast", 3) == [{"room": "secure", "id": "m1"}]
    finally:
        close_all(us)
    for u in us:
        names = [n for n in u.names() if n in ("handshake", "upgrade_probe", "upgrade", "connect")]
        # polling first, then the wss upgrade (CONNECT may be acked before or after it)
        assert sorted(names) == ["connect", "handshake", "upgrade", "upgrade_probe"], names
        assert names[0] == "handshake" and names.index("upgrade_probe") < names.index("upgrade")
    assert not [f for u in us for f in u.failures()]


def test_tls_without_ca_is_a_classified_handshake_failure(tls_cluster: Cluster) -> None:
    [u] = users(tls_cluster.info["url"], 1, sio_timeout=5.0)
    try:
        t0 = time.monotonic()
        assert u.connect() is False  # no exception, no hang
        assert time.monotonic() - t0 < 5
    finally:
        close_all([u])
    failed = [s for s in u.steps if s["error"]]
    assert failed and failed[0]["name"] == "handshake", u.steps
    assert failed[0]["error"].startswith("protocol_error") and "certificate" in failed[0]["error"], failed


def test_tls_insecure_connects(tls_cluster: Cluster) -> None:
    [u] = users(tls_cluster.info["url"], 1, sio_insecure=True)
    try:
        assert u.connect(), u.steps
        assert u.call("echo", 7) == [7]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and u.session.proto.transport != "websocket":
            gevent.sleep(0.05)
        assert u.session.proto.transport == "websocket"
    finally:
        close_all([u])
    assert not u.failures()


# -- 4. node attribution from the sticky cookie ------------------------------------------------------
@pytest.mark.parametrize("balancer", ["haproxy", "caddy"])
def test_node_from_sticky_cookie_without_node_header(balancer: str) -> None:
    with Cluster(ClusterConfig(nodes=3, balancer=balancer, policy="cookie")) as c:
        us = users(c.url, 8, sio_node_header="x-not-there")
        try:
            connect_all(us)
            assert all(u.connected for u in us), [u.failures() for u in us]
            truth = {u.user_id: u.call("whoami")[0] for u in us}
        finally:
            close_all(us)
        assert not [f for u in us for f in u.failures()]
    seen = node_per_user(us)
    for u in us:
        assert len(seen[u.user_id]) == 1, u.steps  # every step of the session: the same attribution
        assert "" not in seen[u.user_id]
    labels = {uid: next(iter(n)) for uid, n in seen.items()}
    if balancer == "haproxy":
        assert labels == truth  # SIOSCALE_NODE's value is the node id
    else:
        assert all(v.startswith("lb:") and len(v) > 3 for v in labels.values()), labels
        # Caddy's opaque value maps one to one onto the real nodes
        assert len({(labels[k], truth[k]) for k in labels}) == len(set(labels.values())) == len(set(truth.values()))
    assert len(set(labels.values())) >= 2  # sessions spread


# -- 3. hold and churn under the real locust command ------------------------------------------------
@pytest.fixture(scope="module")
def cookie_cluster():
    with Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie")) as c:
        yield c


def run_headless(procs: Procs, tmp_path: Path, locustfile: str, host: str, *extra: str) -> list[dict[str, str]]:
    run = tmp_path / "run"
    p = procs.start([*LOCUST, "-f", str(ROOT / locustfile), "--host", host, "--headless", "-u", "6", "-r", "6",
                     "-t", "5s", "--sio-run-dir", str(run), "--only-summary", *extra], "locust")
    assert p.wait(timeout=60) == 0, log_of(tmp_path)
    return run_rows(run)


def test_hold_sessions_stay_connected(procs: Procs, tmp_path: Path, cookie_cluster: Cluster) -> None:
    rows = run_headless(procs, tmp_path, "locustfiles/hold.py", cookie_cluster.url)
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_user[r["user"]].append(r)
    assert len(by_user) == 6
    end = max(float(r["ts"]) for r in rows)
    for user, rs in by_user.items():
        steps = [r["step"] for r in rs]
        assert steps.count("connect") == 1 and steps.count("disconnect") == 1, (user, steps)
        assert all(r["ok"] == "1" for r in rs), rs
        connect = next(r for r in rs if r["step"] == "connect")
        disc = next(r for r in rs if r["step"] == "disconnect")
        # held until Locust stopped the run (5 s), then a clean client disconnect
        assert float(disc["ts"]) - float(connect["ts"]) > 3.5 and end - float(disc["ts"]) < 2.5
        assert "reconnect" not in steps and "node_switch" not in steps
        assert len({r["node"] for r in rs}) == 1 and len({r["eio_sid"] for r in rs}) == 1
    stats = json.loads((tmp_path / "run" / "sio_stats.json").read_text())
    assert stats["totals"]["connects"] == stats["totals"]["disconnects"] == 6
    assert stats["totals"]["failures"] == 0 and stats["totals"]["connected_now"] == 0


def test_churn_repeats_clean_sessions(procs: Procs, tmp_path: Path, cookie_cluster: Cluster) -> None:
    # every row kept: the test reads each session's sequence of acks (the default keeps a sample)
    rows = run_headless(procs, tmp_path, "locustfiles/churn.py", cookie_cluster.url, "--sio-log-all")
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_user[r["user"]].append(r)
    assert len(by_user) == 6
    assert all(r["ok"] == "1" for r in rows), [r for r in rows if r["ok"] != "1"][:5]
    for user, rs in by_user.items():
        sessions = [r["eio_sid"] for r in rs if r["step"] == "connect"]
        assert len(sessions) >= 2, (user, [r["step"] for r in rs])  # repeated connect/disconnect cycles
        assert len(set(sessions)) == len(sessions)  # a new Engine.IO session each time
        for sid in sessions[:-1]:  # every finished cycle: 3 acked echos, then one clean disconnect
            steps = [r["step"] for r in rs if r["eio_sid"] == sid]
            assert steps.count("ack") == 3 and steps.count("disconnect") == 1 and steps[-1] == "disconnect", steps
    stats = json.loads((tmp_path / "run" / "sio_stats.json").read_text())
    connects = sum(1 for r in rows if r["step"] == "connect")
    assert stats["totals"]["connects"] == connects == stats["totals"]["disconnects"]
    assert stats["totals"]["failures"] == 0 and stats["totals"]["connected_now"] == 0


# -- 5. "Reset stats" in the web UI resets the Socket.IO tab (master owns the numbers) --------------
def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_web_ui_reset_stats_resets_socketio_tab(procs: Procs, tmp_path: Path, cookie_cluster: Cluster) -> None:
    run = tmp_path / "run"
    port = free_port()
    procs.start([*LOCUST, "-f", str(ROOT / "locustfiles/chat.py"), "--host", cookie_cluster.url, "--autostart",
                 "-u", "4", "-r", "4", "-t", "60s", *processes(2), "--sio-room-size", "2",
                 "--sio-message-rate", "4", "--sio-run-dir", str(run), "--web-host", "127.0.0.1",
                 "--web-port", str(port)], "locust")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 45
    before = None
    while before is None or before["totals"]["broadcast_sends"] < 10:
        assert time.monotonic() < deadline, log_of(tmp_path)
        time.sleep(0.5)
        try:
            before = get_json(base + "/sio/stats")
        except OSError:
            continue
    assert before["totals"]["connects"] == 4 and before["totals"]["connected_now"] == 4
    rows_before = before["totals"]["rows"]
    req = urllib.request.Request(base + "/stats/reset", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.read() == b"ok"
    after = get_json(base + "/sio/stats")
    t = after["totals"]
    assert t["rows"] < rows_before and t["connects"] == 0 and t["broadcast_sends"] < before["totals"]["broadcast_sends"]
    assert t["connected_now"] == 4  # the sessions are still open: a state, not a counter
    assert {n["node"]: n["connected_now"] for n in after["nodes"]} == {
        n["node"]: n["connected_now"] for n in before["nodes"]}
    assert after["reset_at"] is not None
    # counting goes on after the reset, and delivery is judged on the new window only
    time.sleep(3.5)
    later = get_json(base + "/sio/stats")
    assert later["totals"]["broadcast_sends"] > t["broadcast_sends"]
    d = later["delivery"]
    # only broadcasts sent after the reset are judged (memory adapter: rooms split over 2 nodes lose some)
    assert d["expected"] > 0 and 0 < d["ratio"] <= 1.0
    assert d["sends_counted"] + d["sends_in_grace"] <= later["totals"]["broadcast_sends"]
    assert later["totals"]["failures"] == 0
    # the files are the append-only record: the reset did not touch them (4 connects, every state row kept)
    rows = run_rows(run)
    assert sum(1 for r in rows if r["step"] == "connect") == 4
    tab = {(e["section"], e["metric"]): e["value"] for e in next(
        x["data"] for x in get_json(base + "/stats/requests")["extended_stats"])}
    assert tab[("Totals", "connected now")] == "4"

