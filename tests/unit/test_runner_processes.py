"""The locust command of a `--processes` run: its master is private to the run (no processes started)."""

from __future__ import annotations

from pathlib import Path

from sioscale.config import ClusterConfig, LoadConfig, RunConfig
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
