"""Resource-limited nodes for real: a python node in a 0.25-CPU cgroup under websocket load, an OOM kill.

Needs writable cgroups (root; CI runs as root on a machine with v1 `cpu` and `memory`); skipped
where targets.cgroups.detect says they cannot be had. Whole file: ~7 s (the limited node imports slowly at 0.25 CPU).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil
import pytest
import socketio

from contract.config import ClusterConfig
from targets.cgroups import CgroupError, NodeLimits, detect
from targets.cluster import Cluster, ClusterError

DEAD_PID = 99_999_999  # above any pid_max: a supervisor that is gone


def _layout_or_skip():
    try:
        return detect(cpu=True, memory=True)
    except CgroupError as e:
        pytest.skip(str(e))


def _direct(**kw) -> ClusterConfig:
    return ClusterConfig(nodes=1, balancer="none", policy="direct", **kw)


def _flood(url: str, stop: threading.Event, errors: list[str]) -> None:
    """One websocket client calling `echo` back to back: CPU work for the node, one message in flight.

    Why acked, not fire-and-forget: a throttled node reads slowly, so unacked emits pile up in the
    client's send queue without bound. Under gevent's patched threads (Locust imported earlier in
    the same pytest process) the emit loop also never yields, and the queue grew to 24 GB (OOM)."""
    c = socketio.SimpleClient()
    try:
        c.connect(url, transports=["websocket"], wait_timeout=5)
        payload = {"pad": "x" * 2000, "n": list(range(50))}
        while not stop.is_set():
            c.call("echo", payload, timeout=5)
    except Exception as e:  # noqa: BLE001 - reported by the test, not lost in a thread
        errors.append(repr(e))
    finally:
        c.disconnect()


def _cpu_samples(pid: int, seconds: int) -> list[float]:
    """CPU of one process per 1-second window, as a share of one core (psutil cpu_times deltas)."""
    p = psutil.Process(pid)
    out = []
    t0, c0 = time.monotonic(), sum(p.cpu_times()[:2])
    for _ in range(seconds):
        time.sleep(1.0)
        t1, c1 = time.monotonic(), sum(p.cpu_times()[:2])
        out.append((c1 - c0) / (t1 - t0))
        t0, c0 = t1, c1
    return out


def test_cpu_limited_node_stays_under_its_quota(tmp_path: Path) -> None:
    """0.25 CPU: every 1-s sample <= 27 % of a core under load, the kernel throttled it, all cleaned up."""
    layout = _layout_or_skip()
    leftovers = []
    for parent in layout.parents():  # a SIGKILLed supervisor's groups, to be swept at the next start
        parent.mkdir(exist_ok=True)
        leftovers.append(parent / f"sioscale-{DEAD_PID}-n1")
        leftovers[-1].mkdir(exist_ok=True)
    with Cluster(_direct(node_cpus=0.25, node_memory_mb=128), workdir=tmp_path / "w") as c:
        assert set(map(str, leftovers)) <= set(c.cgroup_leftovers)
        assert not any(p.exists() for p in leftovers)
        g, pid = c.node_groups["n1"], c.nodes["n1"].pid
        assert pid is not None and all(pid in [int(x) for x in Path(f).read_text().split()] for f in g.procs_files())
        assert g.cpu_quota() == (25_000, 100_000)
        assert g.memory_limit() == 128 << 20
        if layout.version == 1:
            assert (g.memory_dir / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
            assert (g.cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "25000"
        info = json.loads(json.dumps(c.info))
        assert info["node_limits"] == {"cpus": 0.25, "memory_mb": 128, "cgroup_version": layout.version,
                                       "groups": {"n1": [str(p) for p in g.paths]}}
        stop, errors = threading.Event(), []
        threads = [threading.Thread(target=_flood, args=(c.url, stop, errors), daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            before = g.cpu_stat()
            samples = _cpu_samples(pid, 3)
            after = g.cpu_stat()
            for _ in range(6):  # a machine saturated by others can keep the node under its quota for a while
                if after["nr_throttled"] > before["nr_throttled"]:
                    break
                samples += _cpu_samples(pid, 1)
                after = g.cpu_stat()
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
        assert not errors, errors
        assert c.deaths == []
        # start_node (a fault's restart) starts this same Child again: it joins the same group
        assert c.nodes["n1"].cgroup_procs == tuple(g.procs_files())
        paths = g.paths
    assert all(s <= 0.27 for s in samples), samples
    assert max(samples) >= 0.15, f"the load did not reach the quota: {samples}"
    assert after["nr_throttled"] > before["nr_throttled"] and after["throttled_usec"] > before["throttled_usec"]
    assert not any(p.exists() for p in paths)  # the node groups are gone after stop


def test_node_under_its_memory_limit_dies_with_reason_oom(tmp_path: Path) -> None:
    """A limit below the node's startup RSS (~54 MB for python): the kernel OOM-kills it, and we say so."""
    _layout_or_skip()
    c = Cluster(_direct(node_memory_mb=64), workdir=tmp_path / "w")
    c.limits = NodeLimits(memory_mb=16)  # below what validation allows: the way to an OOM kill in 1 s
    with pytest.raises(ClusterError, match=r"^node n1 was OOM-killed during start under its 16 MiB memory limit"):
        c.start()
    assert [(d["node"], d["signal"], d["reason"], d["memory_limit_mb"]) for d in c.deaths] == [
        ("n1", "SIGKILL", "oom", 16)]
    assert json.loads((tmp_path / "w" / "deaths.json").read_text())[0]["reason"] == "oom"
    assert not any(p.exists() for g in c.node_groups.values() for p in g.paths)
