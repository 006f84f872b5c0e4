"""`sioscale cluster` flags -> ClusterConfig, and supervisor errors raised before anything starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from contract.config import ClusterConfig, ConfigError
from sioscale import cmd_cluster
from targets.cluster import Cluster, ClusterError, find_binary
from targets.procs import Child


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cmd_cluster.add_parser(sub)
    return parser.parse_args(["cluster", *argv])


def test_flags_build_the_config() -> None:
    a = _parse("--nodes", "4", "--balancer", "haproxy", "--policy", "l4-round-robin", "--adapter", "redis",
               "--server", "node", "--tls", "--port", "8080")
    assert a.func is cmd_cluster.main
    assert cmd_cluster.config_from_args(a) == ClusterConfig(
        nodes=4, balancer="haproxy", policy="l4-round-robin", adapter="redis", server="node", tls=True, port=8080)


def test_defaults_and_implied_values() -> None:
    assert cmd_cluster.config_from_args(_parse()) == ClusterConfig()
    assert cmd_cluster.config_from_args(_parse("--balancer", "none")).policy == "direct"
    c = cmd_cluster.config_from_args(_parse("--redis-url", "redis://127.0.0.1:6379/0"))
    assert (c.adapter, c.redis_url) == ("redis", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="redis_url is only used with a Redis adapter"):
        cmd_cluster.config_from_args(_parse("--redis-url", "redis://x", "--adapter", "memory"))
    assert cmd_cluster.config_from_args(_parse("--host", "127.0.0.3")).host == "127.0.0.3"


@pytest.mark.parametrize("command", ["cluster", "run"])
def test_cluster_and_run_share_one_definition_of_the_cluster_flags(command: str) -> None:
    """`sioscale cluster` and `sioscale run` build a cluster from the same flags by the same rules."""
    from sioscale.cli import build_parser
    from sioscale.cliargs import cluster_from_args

    parser = build_parser()

    def cfg(*argv: str) -> ClusterConfig:
        return cluster_from_args(parser.parse_args([command, *argv]))

    assert cfg() == ClusterConfig()
    assert cfg("--balancer", "none").policy == "direct"
    c = cfg("--nodes", "2", "--balancer", "caddy", "--policy", "ip-hash", "--server", "node", "--tls",
            "--port", "8081", "--host", "127.0.0.2", "--redis-url", "redis://127.0.0.1:6390/0")
    assert c == ClusterConfig(nodes=2, balancer="caddy", policy="ip-hash", adapter="redis", server="node",
                              tls=True, port=8081, host="127.0.0.2", redis_url="redis://127.0.0.1:6390/0")
    with pytest.raises(ConfigError, match="only used with a Redis adapter"):
        cfg("--adapter", "memory", "--redis-url", "redis://127.0.0.1:6390/0")
    with pytest.raises(ConfigError, match="loopback"):
        cfg("--host", "10.0.0.1")
    with pytest.raises(SystemExit):  # argparse: choices are listed in the usage error
        parser.parse_args([command, "--balancer", "envoy"])


@pytest.mark.parametrize(
    "argv,msg",
    [
        (("--balancer", "caddy", "--policy", "source"), "not valid for balancer 'caddy'"),
        (("--nodes", "0"), "nodes = 0"),
        (("--host", "0.0.0.0"), "loopback"),
        (("--port", "70000"), "port = 70000"),
        (("--host", "localhost"), "host = 'localhost'"),
        (("--redis-url", "127.0.0.1:6379"), "redis_url = '127.0.0.1:6379': a URL starting with redis://"),
    ],
)
def test_bad_flags_are_config_errors(argv: tuple[str, ...], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        cmd_cluster.config_from_args(_parse(*argv))


def test_bad_choices_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        _parse("--server", "go")
    assert ei.value.code == 2 and "invalid choice: 'go'" in capsys.readouterr().err


def test_memory_adapter_never_hands_nodes_a_redis_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth behind validate(): a memory cluster built around validation uses no Redis."""
    url = "redis://127.0.0.1:1/0"
    redis = Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct", adapter="redis", redis_url=url),
                    workdir=tmp_path)
    assert redis._make_node("n1", 1234).argv[-2:] == ["--redis-url", url]
    monkeypatch.setattr(ClusterConfig, "validate", lambda self: self)  # as a caller skipping validation could
    c = Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct", adapter="memory", redis_url=url),
                workdir=tmp_path)
    assert c.redis_url is None  # what info["redis_url"] reports
    assert "--redis-url" not in c._make_node("n1", 1234).argv
    c.redis_url = url  # even with one set, the memory adapter's nodes do not get it
    assert "--redis-url" not in c._make_node("n1", 1234).argv


def test_cluster_refuses_an_invalid_config_with_a_cluster_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="choose one of: l7-round-robin, cookie, ip-hash"):
        Cluster(ClusterConfig(balancer="caddy", policy="leastconn"), workdir=tmp_path)


def test_binary_override_that_is_not_executable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "haproxy"
    f.write_text("not a program")
    monkeypatch.setenv("SIOSCALE_HAPROXY", str(f))
    with pytest.raises(ClusterError, match="SIOSCALE_HAPROXY=.*point it at an executable"):
        find_binary("haproxy")


def test_fault_hooks_name_the_node_list(tmp_path: Path) -> None:
    c = Cluster(ClusterConfig(nodes=2), workdir=tmp_path)
    with pytest.raises(ClusterError, match="no node 'n7': this cluster has n1, n2"):
        c.stop_node("n7")


def test_log_tail_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("a\n\nb\nc\nTraceback...\nValueError: boom\n")
    assert Child("x", ["true"], log).log_tail() == "c | Traceback... | ValueError: boom"
    assert Child("y", ["true"], tmp_path / "missing.log").log_tail() == ""


def test_missing_node_modules_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import targets.cluster as tc

    monkeypatch.setattr(tc, "NODE_DIR", tmp_path)
    monkeypatch.setenv("SIOSCALE_NODEJS", "/bin/true")
    problem = tc.node_server_problem()
    assert problem and "make node" in problem and "npm ci" in problem
    with pytest.raises(ClusterError, match="--server node unavailable: .*make node"):
        Cluster(ClusterConfig(nodes=1, server="node"), workdir=tmp_path / "w").start()
    monkeypatch.setenv("SIOSCALE_NODEJS", str(tmp_path / "no-node"))
    assert "SIOSCALE_NODEJS" in (tc.node_server_problem() or "")


@pytest.mark.parametrize("command", ["cluster", "run"])
def test_adapter_and_recovery_flags(command: str) -> None:
    """--adapter takes the four adapters and --recovery the Node.js server's recovery; what a server cannot
    do is refused in one line that names what works (issue 14)."""
    from sioscale.cli import build_parser
    from sioscale.cliargs import cluster_from_args

    parser = build_parser()

    def cfg(*argv: str) -> ClusterConfig:
        return cluster_from_args(parser.parse_args([command, *argv]))

    c = cfg("--server", "node", "--adapter", "redis-streams", "--recovery")
    assert (c.adapter, c.recovery, c.server) == ("redis-streams", True, "node")
    c = cfg("--server", "node", "--adapter", "redis-sharded", "--redis-url", "redis://127.0.0.1:6390/0")
    assert (c.adapter, c.redis_url) == ("redis-sharded", "redis://127.0.0.1:6390/0")  # the url keeps the adapter
    assert cfg("--server", "node", "--recovery").recovery is True  # memory recovers on one node
    assert cfg().recovery is False
    for argv, needle in [(("--adapter", "redis-streams"), "not available on server = 'python' (it takes memory, "
                                                          "redis); use server = 'node'"),
                         (("--adapter", "redis-sharded"), "use server = 'node'"),
                         (("--recovery",), "recovery = true needs server = 'node'")]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")) as ei:
            cfg(*argv)
        assert "\n" not in str(ei.value)
