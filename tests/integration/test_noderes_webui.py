"""The Socket.IO tab's live node resources against a real cluster (issue 12 part 6, `--sio-scrape`).

A real local cluster (2 python nodes behind HAProxy, cookie policy) and a real Locust with its web UI
and 2 worker processes, whose hold.py users stay connected. `--sio-scrape` is the cluster's own
"scrape" value plus two bad targets: a TCP listener that accepts and never answers (hang) and one
that answers bytes that are not HTTP (junk). The master must show each node's CPU, RSS, lag and
its server-side client count (equal to the tab's client-side count per node), keep the good nodes'
readings fresh while the hung read times out, show both warnings, and poll from the master only
(the junk listener sees one read per 2 s, not one per process).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.config import ClusterConfig
from targets.cluster import Cluster
from tests.integration.support import ROOT, Procs, free_port, get_json, log_of, processes

pytestmark = pytest.mark.slow

USERS = 4


class _Listener:
    """A TCP listener on 127.0.0.1 that counts connections; `answer` None: accept and never answer."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer, self.accepted, self.held = answer, 0, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.answer is None:
                self.held.append(conn)  # open, silent
                continue
            try:
                conn.recv(4096)
                conn.sendall(self.answer)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def bad_targets() -> Iterator[tuple[_Listener, _Listener]]:
    hang, junk = _Listener(None), _Listener(b"SSH-2.0-OpenSSH_9.6\r\n")
    try:
        yield hang, junk
    finally:
        hang.close()
        junk.close()


def _tab_rows(base: str) -> dict[str, dict[str, str]]:
    """The tab's "Node resources" rows from the poll the React UI makes (/stats/requests extended_stats)."""
    with urllib.request.urlopen(base + "/stats/requests", timeout=5) as r:
        data = json.loads(r.read())
    (tab,) = [t for t in data["extended_stats"] if t["key"] == "socketio"]
    return {row["metric"]: row for row in tab["data"] if row["section"] == "Node resources"}


def test_the_tab_shows_each_node_live_and_a_hung_or_junk_target_as_a_warning(
        procs: Procs, tmp_path: Path, bad_targets: tuple[_Listener, _Listener]) -> None:
    hang, junk = bad_targets
    with Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", server="python")) as cluster:
        scrape = cluster.info["scrape"]
        assert scrape == ",".join(f"{n['id']}={n['url']}/metrics" for n in cluster.info["nodes"])
        scrape += f",hang=http://127.0.0.1:{hang.port}/metrics,junk=http://127.0.0.1:{junk.port}/metrics"
        port = free_port()
        procs.start([str(ROOT / ".venv/bin/python"), "-m", "locust", "-f", str(ROOT / "locustfiles/hold.py"),
                     "--host", cluster.url, "--autostart", "-u", str(USERS), "-r", str(USERS), "-t", "60s",
                     *processes(2), "--web-host", "127.0.0.1", "--web-port", str(port), "--sio-scrape", scrape],
                    "locust")
        base = f"http://127.0.0.1:{port}"
        s = _settled(base, tmp_path)
        t_window, junk0 = time.monotonic(), junk.accepted
        # a window of reads: the nodes' readings stay fresh (the hung target holds no one up)
        ages: list[float] = []
        while time.monotonic() - t_window < 4.5:
            s = get_json(base + "/sio/stats")
            ages += [n["age_s"] for n in s["node_resources"] if n["id"] in ("n1", "n2")]
            time.sleep(0.5)
        window = time.monotonic() - t_window
        reads_at_junk = junk.accepted - junk0
        rows = _tab_rows(base)
    by = {n["id"]: n for n in s["node_resources"]}
    assert list(by) == ["n1", "n2", "hang", "junk"]
    client_side = {n["node"]: n["connected_now"] for n in s["nodes"]}
    for nid in ("n1", "n2"):
        n = by[nid]
        assert n["error"] is None, n
        assert n["clients"] == client_side.get(nid, 0), (n, client_side)
        assert 0.0 <= n["cpu_percent"] < 150.0, n  # a nearly idle node: plausible, not exact
        assert n["rss_bytes"] > 10 * 2**20 and n["event_loop_lag_ms"] is not None and n["event_loop_lag_ms"] >= 0
        assert rows[nid]["value"].endswith(" %") and "MiB" in rows[nid]["detail"]
        assert f"{int(n['clients'])} clients" in rows[nid]["detail"]
    assert sum(client_side.values()) == USERS
    assert max(ages) <= 2.6, ages  # polled every 2 s, each good read within ~0.1 s of its tick
    assert by["hang"]["error"] == "timeout" and by["hang"]["age_s"] is None
    assert by["junk"]["error"] == "garbage" and by["junk"]["age_s"] is None and "not HTTP" in by["junk"]["detail"]
    assert rows["hang"]["detail"].startswith("warning: timeout") and rows["junk"]["value"] == "–"
    # the master alone polls: one read per 2 s (3 processes polling would triple it)
    assert 1 <= reads_at_junk <= window / 2 + 1, (reads_at_junk, window)
    assert hang.accepted <= junk.accepted + 1  # a hung read is never started twice at once


def _settled(base: str, tmp_path: Path) -> dict:
    """/sio/stats once every user is connected and both nodes have a CPU reading (two good reads)."""
    deadline = time.monotonic() + 25
    while True:
        assert time.monotonic() < deadline, log_of(tmp_path)
        try:
            s = get_json(base + "/sio/stats")
            nodes = {n["id"]: n for n in s.get("node_resources", [])}
            if (s["totals"]["connected_now"] == USERS and all(
                    nodes.get(i, {}).get("cpu_percent") is not None for i in ("n1", "n2"))
                    and sum(nodes[i]["clients"] or 0 for i in ("n1", "n2")) == USERS):
                return s
        except OSError:
            pass
        time.sleep(0.3)
