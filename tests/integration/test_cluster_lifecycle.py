"""Start, stop, faults and bad input of the cluster supervisor and `sioscale cluster`, on real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from contract.config import ClusterConfig
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


# ------------------------------------------------------------------ unplanned deaths
def _read_line(p: subprocess.Popen[str], timeout: float) -> str:
    """One stdout line, or AssertionError after `timeout` (a hang must fail the test, not block it)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    try:
        assert sel.select(timeout), f"no line on stdout within {timeout} s"
        return p.stdout.readline()
    finally:
        sel.close()


def _served_by_through(url: str, tries: int = 30) -> set[str]:
    return {s for s in (_served_by_or_error(url) for _ in range(tries)) if s and not s.startswith("error")}


def test_cli_a_node_crash_is_recorded_the_rest_keep_serving_and_the_logs_stay() -> None:
    """Before: the whole cluster was torn down, exit 1, pointing at a workdir it had just deleted."""
    p = _cli("--nodes", "3", "--balancer", "haproxy", "--policy", "l4-round-robin")
    workdir: Path | None = None
    try:
        info = json.loads(_read_line(p, 60))
        workdir = Path(info["workdir"])
        victim = info["nodes"][1]
        os.killpg(victim["pid"], signal.SIGKILL)  # as the OOM killer would
        death = json.loads(_read_line(p, 5))["death"]
        assert (death["kind"], death["node"], death["name"]) == ("node", "n2", "node n2")
        assert death["signal"] == "SIGKILL" and death["exit_code"] is None and death["pid"] == victim["pid"]
        assert Path(death["log"]) == workdir / "node-n2.log" and Path(death["log"]).is_file()
        assert isinstance(death["log_tail"], list)  # a quiet node's log may well be empty
        assert abs(death["ts"] - time.time()) < 5
        time.sleep(1.0)
        assert p.poll() is None, p.stderr.read()  # still running
        deadline = time.monotonic() + 10  # HAProxy's health check takes n2 out within ~2 s
        while (seen := _served_by_through(info["url"])) != {"n1", "n3"} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert seen == {"n1", "n3"}, seen
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
        err = p.stderr.read()
        assert "node n2 died (killed by SIGKILL); the rest keep running" in err, err
        assert f"logs kept in {workdir}" in err, err
        assert "Traceback" not in err
        assert (workdir / "node-n2.log").is_file() and (workdir / "haproxy.cfg").is_file()  # kept, as promised
        assert json.loads((workdir / "deaths.json").read_text())[0]["node"] == "n2"
        _assert_gone(info)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_cli_stops_with_exit_1_when_nothing_can_serve_and_keeps_the_logs_it_names() -> None:
    p = _cli("--nodes", "2", "--balancer", "haproxy", "--policy", "cookie")
    workdir: Path | None = None
    try:
        info = json.loads(_read_line(p, 60))
        workdir = Path(info["workdir"])
        balancer_pid = next(q.pid for q in psutil.Process(p.pid).children() if "haproxy" in q.name())
        os.killpg(balancer_pid, signal.SIGKILL)
        death = json.loads(_read_line(p, 5))["death"]
        assert death["kind"] == "balancer" and death["node"] is None and death["signal"] == "SIGKILL"
        assert p.wait(timeout=10) == 1
        err = p.stderr.read()
        assert "nothing left to serve" in err and f"logs kept in {workdir}" in err, err
        assert workdir.is_dir() and (workdir / "haproxy.log").exists()
        _assert_gone(info)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_deaths_are_recorded_once_planned_stops_never(tmp_path: Path) -> None:
    """What the runner sees through the same class: crash, planned stop, restart, second crash."""
    cfg = ClusterConfig(nodes=2, balancer="none", policy="direct")
    with Cluster(cfg, workdir=tmp_path) as c:
        c.stop_node("n2")  # planned: not a death
        assert c.check_deaths() == [] and c.deaths == []
        c.start_node("n2")
        first = c.nodes["n2"].pid
        os.killpg(first, signal.SIGKILL)
        c.nodes["n2"].proc.wait(5)
        c.start_node("n2")  # records the crash before the restart replaces the process
        assert [(d["node"], d["pid"], d["signal"]) for d in c.deaths] == [("n2", first, "SIGKILL")]
        os.killpg(c.nodes["n2"].pid, signal.SIGTERM)  # not from us: a crash too (uvicorn re-raises it)
        c.nodes["n2"].proc.wait(10)
        new = c.check_deaths()
        assert [(d["node"], d["signal"], d["exit_code"]) for d in new] == [("n2", "SIGTERM", None)]
        assert c.check_deaths() == []  # once
        assert c.serving()  # n1 (the URL) is up
    assert len(c.deaths) == 2
    assert [d["pid"] for d in json.loads((tmp_path / "deaths.json").read_text())] == [d["pid"] for d in c.deaths]


def test_a_death_by_exit_code_names_the_code_and_the_last_log_lines(tmp_path: Path) -> None:
    from targets.cluster import _death_record
    from targets.procs import Child

    ch = Child("node n1", [sys.executable, "-c", "import sys; print('\\n'.join(map(str, range(30)))); "
                           "print('boom', file=sys.stderr); sys.exit(7)"], tmp_path / "n1.log")
    ch.start()
    ch.proc.wait(10)
    d = _death_record("node", "n1", ch)
    assert (d["exit_code"], d["signal"], d["node"]) == (7, None, "n1")
    assert d["log_tail"] == [*map(str, range(21, 30)), "boom"]


def _cmdline(q: psutil.Process) -> str:
    try:
        return " ".join(q.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):  # short-lived children (version probes) come and go
        return ""


def test_a_node_killed_during_sioscale_run_is_recorded_in_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "sioscale.cli", "run", "--balancer", "haproxy", "--policy", "cookie",
                          "--nodes", "2", "-u", "4", "-t", "6", "--out", str(run_dir)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        victim = None
        while victim is None and time.monotonic() < deadline:  # once Locust runs, the cluster is up
            kids = {q: _cmdline(q) for q in psutil.Process(p.pid).children()}
            if any("-m locust" in c for c in kids.values()):
                victim = next(q for q, c in kids.items() if "--id n2" in c)
            time.sleep(0.2)
        assert victim is not None, "the run never started Locust"
        os.killpg(victim.pid, signal.SIGKILL)
        assert p.wait(60) == 3, p.stderr.read()[-2000:]  # 3: degraded (contract.status.EXIT_CODES)
        deaths = json.loads((run_dir / "cluster" / "deaths.json").read_text())
        assert [(d["node"], d["signal"]) for d in deaths] == [("n2", "SIGKILL")]
        assert (run_dir / "cluster" / "node-n2.log").is_file()
        meta = json.loads((run_dir / "meta.json").read_text())
        assert [(d["node"], d["signal"]) for d in meta["deaths"]] == [("n2", "SIGKILL")]
        assert meta["status"] == "degraded" and any("node n2 died" in r for r in meta["status_reasons"]), meta
        assert "node n2 died at" in p.stderr.read()  # the progress line said so while the run went on
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
