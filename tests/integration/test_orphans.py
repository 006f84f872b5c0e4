"""A SIGKILL at any moment of `sioscale run` or `sioscale campaign` leaves no process and no bound port,
and a report that says what happened.

SIGKILL runs no cleanup code in sioscale: only the kernel's parent-death signal (armed in every
cluster child, in the Locust master and -- by locustfiles/sio/lifeline.py -- in every Locust
worker that `--processes` forks) can stop what it started. Each test watches the whole process
tree of a real sioscale (nodes, Locust master, forked workers) from its start, kills sioscale at
one moment, and then expects every process it ever saw to be gone and every port they listened
on to be free within a few seconds. Before lifeline.py, both `--processes 2` workers ran on
under PID 1 for ~60 s (until their heartbeat to the dead master timed out).

Two of the moments also read the report of what was left (issue 9, part 3), on the same kill
rather than a second run of their own: a run SIGKILLed under load is reported interrupted (meta.json
still says "running": nobody could finish it) on the report's first screen, and `sioscale check`
fails it; a campaign SIGKILLed while config 2 starts is reported with config 1 ok and config 2
interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from targets.procs import port_is_free
from tests.integration.support import SIOSCALE, first_screen, report_of, running, still_running

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 5.0
RUN = [sys.executable, "-m", "sioscale.cli", "run", "--nodes", "2", "-u", "4", "-r", "4", "--processes", "2"]
DIRECT = ["--balancer", "none", "--policy", "direct"]
FULL = ["--balancer", "haproxy", "--policy", "cookie", "--adapter", "redis"]  # every kind of child


class Watched:
    """Every descendant of one process seen so far, and every TCP port they listened on.

    Why polling: the tree changes at each phase (nodes, then Locust, then its forked workers), and
    after a SIGKILL orphans are re-parented, so the tree must be recorded *before* the kill.
    psutil.Process keeps each process's start time, so a recycled pid is never mistaken for it.
    """

    def __init__(self, root: subprocess.Popen) -> None:
        self.root = root
        self.procs: dict[int, psutil.Process] = {}
        self.cmds: dict[int, str] = {}  # read while alive: a dead process's command line is gone
        self.ports: set[int] = set()

    def poll(self) -> None:
        try:
            kids = psutil.Process(self.root.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for q in kids:
            self.procs.setdefault(q.pid, q)
            try:
                # re-read while alive: seen between fork and exec, a child still shows sioscale's command line
                cmd = " ".join(q.cmdline())
                if cmd:  # a zombie's is empty: keep what it was
                    self.cmds[q.pid] = cmd
                self.ports.update(c.laddr.port for c in q.net_connections(kind="tcp")
                                  if c.status == psutil.CONN_LISTEN)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass

    def cmdlines(self) -> list[str]:
        return list(self.cmds.values())

    def alive(self) -> list[str]:
        return still_running(self.procs.values())

    def bound(self) -> list[int]:
        return sorted(p for p in self.ports if not port_is_free(p))

    def kill_everything(self) -> None:
        """The test's own cleanup: whatever survived (a failing test) is killed, group by group."""
        for q in [*self.procs.values()]:
            try:
                q.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.root.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.root.wait(10)


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Watched]:
    err = (tmp_path / "sioscale.err").open("w")
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    return p, Watched(p)


def _watch_until(w: Watched, moment: Callable[[Watched], bool], tmp_path: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        w.poll()
        if moment(w):
            return
        assert w.root.poll() is None, "sioscale ended before the moment: " + (tmp_path / "sioscale.err").read_text()[-2000:]
        time.sleep(0.05)
    raise AssertionError("the moment never came: " + (tmp_path / "sioscale.err").read_text()[-2000:])


def _kill_and_expect_nothing_left(w: Watched) -> None:
    """SIGKILL sioscale; then every process it ever had must be gone and every port free, soon."""
    assert w.procs, "no child was ever seen"
    os.kill(w.root.pid, signal.SIGKILL)
    w.root.wait(5)
    t0 = time.monotonic()
    while (w.alive() or w.bound()) and time.monotonic() - t0 < GONE_WITHIN_S:
        time.sleep(0.1)
    assert not w.alive(), f"still running {GONE_WITHIN_S:.0f} s after sioscale was SIGKILLed: {w.alive()}"
    assert not w.bound(), f"ports still bound after sioscale was SIGKILLed: {w.bound()}"


# ----------------------------------------------------------------------------- moments
def _has(w: Watched, text: str) -> bool:
    return any(text in c for c in w.cmdlines())


def _nodes_starting(w: Watched) -> bool:
    return _has(w, "targets.app")


def _workers_forked(w: Watched) -> bool:
    # the master plus its two forked workers: three processes on the locust command line
    return sum("-m locust" in c for c in w.cmdlines()) >= 3


def _under_load(run_dir: Path) -> Callable[[Watched], bool]:
    def moment(w: Watched) -> bool:
        try:
            stats = json.loads((run_dir / "sio_stats.json").read_text())
            return stats["totals"]["connected_now"] >= 1 and _workers_forked(w)
        except (OSError, ValueError, KeyError, TypeError):
            return False
    return moment


def _tearing_down(w: Watched) -> bool:
    """Locust has ended (after its workers had run) while the cluster is still up: the cluster's stop."""
    locusts = [w.procs[pid] for pid, cmd in w.cmds.items() if "-m locust" in cmd]
    if len(locusts) < 3:
        return False
    return all(not running(q) for q in locusts) and any(running(q) for q in w.procs.values())


# ------------------------------------------------------------------------------- run
@pytest.mark.slow
@pytest.mark.parametrize("moment", ["nodes-starting", "workers-forked", "under-load", "under-load-haproxy-redis",
                                    "teardown"])
def test_sigkill_of_run_processes_2_leaves_no_process(tmp_path: Path, moment: str) -> None:
    run_dir = tmp_path / "run"
    duration = "3" if moment == "teardown" else "30"
    cluster = FULL if moment.endswith("haproxy-redis") else DIRECT
    p, w = _start([*RUN, *cluster, "-t", duration, "--out", str(run_dir)], tmp_path)
    when = {"nodes-starting": _nodes_starting, "workers-forked": _workers_forked,
            "under-load": _under_load(run_dir), "under-load-haproxy-redis": _under_load(run_dir),
            "teardown": _tearing_down}[moment]
    try:
        _watch_until(w, when, tmp_path)
        if moment == "under-load":
            time.sleep(1.5)  # a second of rows on disk, for the report below
        _kill_and_expect_nothing_left(w)
        if cluster is FULL:
            assert _has(w, "haproxy") and any(c.split(" ", 1)[0].endswith("redis-server") for c in w.cmdlines()), w.cmdlines()
        if moment == "under-load":
            _expect_reported_interrupted(run_dir, tmp_path)
    finally:
        w.kill_everything()


def _expect_reported_interrupted(run_dir: Path, tmp_path: Path) -> None:
    """The killed run: "running" on disk, interrupted in the report (first screen), failed by `check`."""
    assert json.loads((run_dir / "meta.json").read_text())["status"] == "running"  # nobody could finish it
    summary = report_of(run_dir, tmp_path / "rep")
    (cfg,) = summary["configs"]
    assert cfg["status"] == "interrupted", cfg.get("status_reasons")
    assert any("gone" in r and "running" in r for r in cfg["status_reasons"]), cfg["status_reasons"]
    top = first_screen((tmp_path / "rep" / "index.html").read_text())
    assert "interrupted" in top and "is gone but meta.json still says running" in top
    assert '<span class="pill ok">' not in top
    chk = subprocess.run([*SIOSCALE, "check", str(tmp_path / "rep"), "--connect-ratio", "0.5"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert chk.returncode == 1, chk.stdout + chk.stderr
    assert "interrupted" in chk.stderr


# -------------------------------------------------------------------------- campaign
CAMPAIGN = """name = "killed"
[cluster]
balancer = "none"
policy = "direct"
[axes]
nodes = [1, 2]
[load]
users = 4
spawn_rate = 4
duration = 8
processes = 2
"""
# duration: long enough that the master's sio_stats.json shows a connected user before the load ends (with
# 3 s a busy CI machine's campaign ran config 1 through without one: 'connected 0' at 5 s, then done)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["config-1-under-load", "config-2-starting"])
def test_sigkill_of_campaign_leaves_no_process(tmp_path: Path, moment: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(CAMPAIGN)
    out = tmp_path / "o"
    p, w = _start([sys.executable, "-m", "sioscale.cli", "campaign", str(f), "--out", str(out)], tmp_path)
    first = out / "runs" / "none-direct-poll+ws-memory-python-1n"
    second_nodes = [False]

    def config_2_starting(w_: Watched) -> bool:
        # config 2 has two nodes: its n2 is the first process of the campaign that says `--id n2`
        second_nodes[0] = second_nodes[0] or _has(w_, "--id n2")
        return second_nodes[0]

    when = _under_load(first) if moment == "config-1-under-load" else config_2_starting
    try:
        _watch_until(w, when, tmp_path)
        _kill_and_expect_nothing_left(w)
        if moment == "config-2-starting":
            # the report of the campaign directory says what happened, on its first screen
            summary = report_of(out, tmp_path / "rep")
            second = "none-direct-poll+ws-memory-python-2n"
            assert {c["name"]: c["status"] for c in summary["configs"]} == {first.name: "ok", second: "interrupted"}
            assert summary["status"] == "interrupted"
            top = first_screen((tmp_path / "rep" / "index.html").read_text())
            assert "1 of 2 configuration(s) not ok" in top and second in top
    finally:
        w.kill_everything()


# --------------------------------------------------------------------------- cluster
@pytest.mark.slow
def test_sigkill_of_sioscale_cluster_leaves_no_process(tmp_path: Path) -> None:
    p, w = _start([sys.executable, "-m", "sioscale.cli", "cluster", "--nodes", "2", "--balancer", "haproxy",
                   "--policy", "cookie", "--adapter", "redis", "--workdir", str(tmp_path / "c")], tmp_path)
    try:
        # up: two nodes, Redis and HAProxy each listening
        _watch_until(w, lambda w_: _has(w_, "haproxy") and len(w_.ports) >= 4, tmp_path)
        _kill_and_expect_nothing_left(w)
    finally:
        w.kill_everything()


# ------------------------------------------------------------------ the helper itself
_FORKER = """
import os, sys, time
sys.path.insert(0, {root!r})
import locustfiles.sio.lifeline  # noqa: F401 -- the at-fork hook, as a Locust master has it
from gevent import monkey  # Locust patched threads into greenlets: take a real OS thread
real_thread = monkey.get_original("_thread", "start_new_thread")
real_fork = monkey.get_original("os", "fork")
def child():
    time.sleep(60)
    os._exit(0)
def fork_from_thread(out):
    pid = real_fork()
    if pid == 0:
        child()
    out.append(pid)
pid = real_fork()
if pid == 0:
    child()
pids = [pid]
real_thread(fork_from_thread, (pids,))
while len(pids) < 2:
    time.sleep(0.01)
time.sleep(0.2)  # that thread has ended by now
print(" ".join(map(str, pids)), flush=True)
time.sleep(60)
"""


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_child_forked_from_the_main_thread_dies_with_its_parent_one_from_a_thread_does_not() -> None:
    """The hook arms the signal only where it means 'parent died': forks from the OS main thread.

    A fork from another thread would get a signal that fires when *that thread* ends, killing a
    healthy child -- so such a child must outlive its thread (and is left to its parent).
    """
    p = subprocess.Popen([sys.executable, "-c", _FORKER.format(root=str(ROOT))], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        main_child, thread_child = map(int, p.stdout.readline().split())
        assert not _gone(thread_child, 0.5), "a child forked from a thread died when its thread ended"
        p.kill()
        p.wait(5)
        assert _gone(main_child, 3), "the main thread's child outlived its SIGKILLed parent"
        assert not _gone(thread_child, 0.3)  # not armed: the parent's death does not reach it
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


_LATE_ARMER = """
import os, sys, time
from contract.pdeathsig import die_with_parent
parent = os.getpid()
if os.fork() == 0:
    while os.getppid() == parent:  # the parent dies between our fork and our prctl
        time.sleep(0.01)
    die_with_parent(parent)
    open(sys.argv[1], "w").write("survived")
    os._exit(0)
os._exit(0)
"""


@pytest.mark.slow
def test_a_child_whose_parent_died_before_it_armed_the_signal_ends_itself(tmp_path: Path) -> None:
    """The fork/prctl race: a child orphaned before arming must not run on (the signal would never come)."""
    flag = tmp_path / "survived"
    subprocess.run([sys.executable, "-c", _LATE_ARMER, str(flag)], cwd=ROOT, timeout=30, check=True)
    time.sleep(1.0)  # the orphan notices its parent is gone within ~10 ms, then arms
    assert not flag.exists(), "the orphaned child ran on past die_with_parent"
