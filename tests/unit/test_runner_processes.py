"""The locust command of a `--processes` run: its master is private to the run; its workers die with it
(the at-fork hook, checked here without starting a process)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from contract.config import ClusterConfig, LoadConfig, RunConfig
from sioscale.runner import locust_command


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_processes_get_a_private_loopback_master_port(tmp_path: Path) -> None:
    cfg = RunConfig("r", ClusterConfig(), LoadConfig(processes=3))
    a = locust_command(cfg, "http://127.0.0.1:1", tmp_path)
    assert _value(a, "--processes") == "3"
    assert _value(a, "--master-bind-host") == "127.0.0.1"
    assert _value(a, "--master-bind-port") == _value(a, "--master-port") != "5557"


def test_single_process_has_no_master_flags(tmp_path: Path) -> None:
    cmd = locust_command(RunConfig("r", ClusterConfig(), LoadConfig()), "http://127.0.0.1:1", tmp_path)
    assert "--processes" not in cmd and "--master-bind-port" not in cmd


def test_the_locust_client_registers_the_worker_lifeline_once() -> None:
    """Importing locustfiles.sio (every sioscale locustfile does, before Locust forks) arms the hook."""
    import locustfiles.sio  # noqa: F401
    from locustfiles.sio import lifeline

    assert lifeline._registered
    assert lifeline.register() is False  # a second call adds no second hook


def test_the_lifeline_arms_only_forks_from_the_os_main_thread() -> None:
    """PR_SET_PDEATHSIG follows the forking OS thread: a fork from any other would die with that thread.

    Greenlets all run on the main thread, so Locust's gevent.fork qualifies from any greenlet.
    """
    from gevent import monkey

    from locustfiles.sio import lifeline

    lifeline._before_fork()
    assert lifeline._forking_pid == os.getpid()
    start_real_thread = monkey.get_original("_thread", "start_new_thread")
    seen: list[int | None] = []

    def in_thread() -> None:
        lifeline._before_fork()
        seen.append(lifeline._forking_pid)

    start_real_thread(in_thread, ())
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [None]
