"""Start, stop, faults and bad input of the cluster supervisor and `sioscale cluster`, on real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sioscale.config import ClusterConfig
from targets import probe
from targets.cluster import Cluster, ClusterError
from targets.procs import port_is_free

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _all_ports(info: dict) -> list[int]:
    ports = [n["port"] for n in info["nodes"]]
    if info["balancer"] != "none":
        ports.append(int(info["url"].rsplit(":", 1)[1]))
    if info["redis_url"]:
        ports.append(int(info["redis_url"].rsplit(":", 1)[1].split("/")[0]))
    return ports


def _assert_gone(info: dict, extra_pids: list[int] = ()) -> None:
    for n in info["nodes"]:
        assert n["pid"] is None or _pid_gone(n["pid"]), n
    for pid in extra_pids:
        assert _pid_gone(pid)
    for port in _all_ports(info):
        assert port_is_free(port), port


def test_teardown_leaves_nothing_even_after_a_node_crashed(tmp_path: Path) -> None:
    cfg = ClusterConfig(nodes=3, balancer="haproxy", policy="l4-round-robin", adapter="redis")
    with Cluster(cfg, workdir=tmp_path) as c:
        info = c.info
        extra = [c.balancer.pid, c.redis.pid]
        assert all(not port_is_free(p) for p in _all_ports(info))
        os.killpg(info["nodes"][1]["pid"], signal.SIGKILL)  # n2 crashes
        deadline = time.monotonic() + 5
        while "node n2" not in c.dead() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.dead() == ["node n2"]
    _assert_gone(info, extra)
    assert (tmp_path / "haproxy.cfg").exists() and (tmp_path / "node-n1.log").exists()  # logs kept for diagnosis


def _served_by_or_error(url: str) -> str | None:
    try:
        return probe.ws_upgrade(url, timeout=2).served_by
    except OSError as e:
        return f"error: {type(e).__name__}"


def test_fault_hooks_stop_and_start_nodes_and_the_balancer() -> None:
    cfg = ClusterConfig(nodes=3, balancer="haproxy", policy="l4-round-robin")
    with Cluster(cfg) as c:
        n2 = c.info["nodes"][1]
        c.stop_node("n2")
        assert _pid_gone(n2["pid"]) and port_is_free(n2["port"])
        # HAProxy's health check (inter 1s, fall 2) takes n2 out within ~2 s; after that every
        # connection is served by n1 or n3 (before it, connections routed to n2 fail).
        deadline = time.monotonic() + 10
        while True:
            after = Counter(_served_by_or_error(c.url) for _ in range(30))
            if set(after) == {"n1", "n3"} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(after) == {"n1", "n3"}, after
        c.start_node("n2")
        assert c.info["nodes"][1]["port"] == n2["port"] and c.info["nodes"][1]["pid"] != n2["pid"]
        deadline = time.monotonic() + 10
        while True:
            back = Counter(_served_by_or_error(c.url) for _ in range(30))
            if "n2" in back or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert set(back) == {"n1", "n2", "n3"}, back
        with pytest.raises(ClusterError, match="already running"):
            c.start_node("n2")
        with pytest.raises(ClusterError, match="no node 'n9'"):
            c.stop_node("n9")

        url = c.url
        c.stop_balancer()
        with pytest.raises(OSError):
            probe.handshake(url, timeout=1)
        c.start_balancer()
        assert c.url == url and probe.handshake(url).status == 200


def test_balancer_none_is_node_one_direct_and_has_no_balancer_hooks() -> None:
    with Cluster(ClusterConfig(nodes=2, balancer="none", policy="direct")) as c:
        assert c.url == c.info["nodes"][0]["url"]
        assert {probe.ws_upgrade(c.url).served_by for _ in range(10)} == {"n1"}
        with pytest.raises(ClusterError, match="no balancer"):
            c.stop_balancer()


@pytest.mark.parametrize(
    "balancer,policy",
    [("haproxy", "cookie"), ("caddy", "cookie"), ("none", "direct"), ("haproxy", "l4-round-robin")],
)
def test_tls_works_with_the_cluster_ca_and_fails_without_it(balancer: str, policy: str) -> None:
    with Cluster(ClusterConfig(nodes=2, balancer=balancer, policy=policy, tls=True)) as c:
        info = c.info
        assert info["url"].startswith("https://") and Path(info["ca_file"]).is_file()
        ctx = ssl.create_default_context(cafile=info["ca_file"])
        h = probe.handshake(info["url"], ssl_context=ctx)
        assert h.status == 200 and h.served_by in ("n1", "n2")
        up = probe.ws_upgrade(info["url"], ssl_context=ctx)
        assert up.status == 101 and up.served_by in ("n1", "n2")
        with pytest.raises(ssl.SSLCertVerificationError):
            probe.handshake(info["url"], ssl_context=ssl.create_default_context())


# --------------------------------------------------------------------------- bad input
def test_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ClusterError, match=rf"port {port} .*in use.*--port"):
            Cluster(ClusterConfig(nodes=1, balancer="haproxy", policy="cookie", port=port), workdir=tmp_path).start()
    assert not list(tmp_path.glob("node-*.log"))


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIOSCALE_CADDY", "/nonexistent/caddy")
    with pytest.raises(ClusterError, match="caddy not found at SIOSCALE_CADDY"):
        Cluster(ClusterConfig(nodes=1, balancer="caddy", policy="cookie")).start()


def test_node_dying_at_start_stops_everything_and_names_the_cause(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nothing listening: Redis "down"
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", adapter="redis",
                        redis_url=f"redis://127.0.0.1:{dead}/0")
    c = Cluster(cfg, workdir=tmp_path)
    with pytest.raises(ClusterError, match=r"node n\d exited with code 3 during start: .*cannot reach Redis") as e:
        c.start()
    assert "\n" not in str(e.value)
    for ch in c.nodes.values():
        assert ch.pid is not None and _pid_gone(ch.pid) and port_is_free(ch.port)
    assert c.balancer is None  # never got that far


def test_unknown_policy_for_the_balancer_is_refused_before_anything_starts() -> None:
    with pytest.raises(ClusterError, match="policy = 'ip-hash' is not valid for balancer 'haproxy'"):
        Cluster(ClusterConfig(balancer="haproxy", policy="ip-hash"))


# ------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sioscale.cmd_cluster", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def test_cli_prints_one_json_line_and_stops_every_child_on_sigterm() -> None:
    p = _cli("--nodes", "2", "--balancer", "caddy", "--policy", "ip-hash", "--adapter", "redis")
    try:
        line = p.stdout.readline()
        info = json.loads(line)
        assert info["balancer"] == "caddy" and info["policy"] == "ip-hash" and len(info["nodes"]) == 2
        assert probe.handshake(info["url"]).status == 200
        workdir = Path(info["workdir"])
        assert (workdir / "Caddyfile").is_file()
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 5
        assert p.stdout.read() == ""  # nothing else on stdout: child logs go to files
        _assert_gone(info)
        assert not workdir.exists()  # a temporary workdir is removed on a clean stop
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_cli_bad_flags_exit_2_with_one_line() -> None:
    p = _cli("--balancer", "caddy", "--policy", "source")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2 and out == ""
    assert err.strip().count("\n") == 0 and "policy = 'source' is not valid for balancer 'caddy'" in err


def test_relative_workdir_works_from_any_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sioscale campaign` passes run directories relative to the user's cwd (reports/NAME/runs/...)."""
    monkeypatch.chdir(tmp_path)
    cfg = ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", adapter="redis")
    with Cluster(cfg, workdir="reports/x/runs/y/cluster") as c:
        assert Path(c.info["workdir"]).is_absolute()
        assert probe.handshake(c.info["url"]).sid
    assert (tmp_path / "reports/x/runs/y/cluster/haproxy.cfg").is_file()
