"""nginx as a balancer without starting it: the rendered config per policy, `nginx -t` on it,
and the one-line errors for a missing binary, a missing stream module and a config nginx refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config import (
    POLICIES,
    SPREAD_SOURCE_RANGE,
    ClusterConfig,
    LoadConfig,
    RunConfig,
    load_campaign,
    with_policy_defaults,
)
from sioscale.runner import locust_command
from targets import nginx
from targets.cluster import Cluster, ClusterError, find_binary
from targets.render import NGINX_IDLE_TIMEOUT_S, Backend, RenderError, nginx_config
from targets.tls import make_tls

NODES = [Backend("n1", "127.0.0.1", 9001), Backend("n2", "127.0.0.1", 9002)]
MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def _nginx() -> str:
    try:
        return find_binary("nginx")
    except ClusterError as e:
        pytest.skip(str(e))


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@pytest.mark.parametrize(
    "policy,directive",
    [
        ("ip-hash", "ip_hash;"),
        ("hash-consistent", "hash $remote_addr consistent;"),
        ("header-hash", "hash $http_x_sio_user consistent;"),
        ("least-conn", "least_conn;"),
    ],
)
def test_nginx_l7_policy_directive(policy: str, directive: str, tmp_path: Path) -> None:
    lines = _lines(nginx_config(policy, NODES, 8080, str(tmp_path), limit=4096))
    assert directive in lines
    assert "http {" in lines and "stream {" not in lines
    assert not any(ln.startswith("load_module") for ln in lines)  # L7 needs no stream module
    # WebSocket proxying and timeouts above Engine.IO's ping interval + timeout (25 + 20 s)
    assert {"proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $connection_upgrade;"} <= set(lines)
    assert f"proxy_read_timeout {NGINX_IDLE_TIMEOUT_S}s;" in lines and NGINX_IDLE_TIMEOUT_S > 45
    assert "server 127.0.0.1:9001 max_fails=1 fail_timeout=2s;" in lines


def test_nginx_round_robin_has_no_hash_and_every_file_is_in_the_workdir(tmp_path: Path) -> None:
    text = nginx_config("l7-round-robin", NODES, 8080, str(tmp_path), limit=4096)
    lines = _lines(text)
    assert not any(ln.startswith(("ip_hash", "hash ", "least_conn")) for ln in lines)
    assert f"pid {tmp_path}/nginx.pid;" in lines and "worker_processes 1;" in lines
    assert "error_log stderr warn;" in lines and "access_log off;" in lines
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert any(ln.startswith(f"{kind}_temp_path {tmp_path}/") for ln in lines), kind
    assert "/var/" not in text and "/run/" not in text


def test_nginx_l4_uses_the_stream_module_and_tls_on_the_tcp_listener(tmp_path: Path) -> None:
    lines = _lines(nginx_config("l4-round-robin", NODES, 8443, str(tmp_path), cert_file="/c.pem",
                                key_file="/k.pem", stream_module=MODULE, limit=4096))
    assert lines[0] == f"load_module {MODULE};"
    assert "stream {" in lines and "http {" not in lines
    assert "listen 127.0.0.1:8443 ssl;" in lines and "ssl_certificate /c.pem;" in lines
    assert "proxy_pass be_sio;" in lines


def test_nginx_render_refuses_half_tls_a_relative_workdir_and_a_foreign_policy() -> None:
    with pytest.raises(RenderError, match="both cert_file and key_file"):
        nginx_config("ip-hash", NODES, 80, "/tmp/x", cert_file="/c.pem")
    with pytest.raises(RenderError, match="absolute"):
        nginx_config("ip-hash", NODES, 80, "rel")
    with pytest.raises(RenderError, match="choose one of: " + ", ".join(POLICIES["nginx"])):
        nginx_config("cookie", NODES, 80, "/tmp/x")


@pytest.mark.parametrize("policy", POLICIES["nginx"])
@pytest.mark.parametrize("tls", [False, True])
def test_nginx_accepts_every_rendered_config(policy: str, tls: bool, tmp_path: Path) -> None:
    """`nginx -t` (the real binary) on every policy's file, with and without TLS."""
    binary = _nginx()
    files = make_tls(tmp_path / "tls") if tls else None
    module = nginx.stream_module(binary) if policy == "l4-round-robin" else None
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(policy, NODES, 18080, str(tmp_path), cert_file=str(files.cert_file) if files else None,
                                 key_file=str(files.key_file) if files else None, stream_module=module,
                                 user=nginx.worker_user()))
    nginx.check_config(binary, tmp_path, conf)


def test_nginx_config_check_failure_is_one_line(tmp_path: Path) -> None:
    binary = _nginx()
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp { upstream u { hash_everything; } }\n")
    with pytest.raises(nginx.NginxError, match=r"^nginx config check failed: unknown directive \"hash_everything\"") as e:
        nginx.check_config(binary, tmp_path, conf)
    assert "\n" not in str(e.value)


def test_missing_nginx_names_the_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIOSCALE_NGINX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("targets.cluster.SYSTEM_SBIN", str(tmp_path))
    with pytest.raises(ClusterError, match=r"^nginx binary not found: apt-get install nginx libnginx-mod-stream$"):
        find_binary("nginx")
    with pytest.raises(ClusterError, match="apt-get install nginx libnginx-mod-stream"):
        Cluster(ClusterConfig(nodes=1, balancer="nginx", policy="ip-hash"), workdir=tmp_path / "w").start()


def test_l4_without_the_stream_module_names_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = _nginx()
    monkeypatch.setenv("SIOSCALE_NGINX_MODULES", str(tmp_path))  # a directory without the module
    with pytest.raises(nginx.NginxError, match="apt-get install libnginx-mod-stream$"):
        nginx.stream_module(binary)
    c = Cluster(ClusterConfig(nodes=1, balancer="nginx", policy="l4-round-robin"), workdir=tmp_path / "w")
    with pytest.raises(ClusterError, match=r"stream module .* apt-get install libnginx-mod-stream$"):
        c.start()
    assert c.nodes == {}  # refused before any node started


def test_too_old_nginx_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nginx"
    fake.write_text("#!/bin/sh\necho 'nginx version: nginx/1.14.2' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(nginx.NginxError, match=r"is nginx 1\.14\.2; sioscale needs 1\.19\.5 or newer"):
        nginx.check_version(str(fake))


def test_seed_needs_no_nginx() -> None:
    """`make seed` must run where nginx is not installed: none of its cells uses it."""
    seed = load_campaign(Path(__file__).resolve().parents[2] / "campaigns" / "seed.toml")
    balancers = {r.cluster.balancer for r in seed.runs()}
    assert balancers and "nginx" not in balancers


def _run(policy: str, source_range: str | None = None) -> RunConfig:
    return RunConfig(name="r", cluster=ClusterConfig(nodes=2, balancer="nginx", policy=policy),
                     load=LoadConfig(locustfile="locustfiles/chat.py", source_range=source_range))


def test_source_ip_policies_get_a_range_over_several_24s_unless_one_is_given() -> None:
    for policy in ("ip-hash", "hash-consistent"):
        assert with_policy_defaults(_run(policy)).load.source_range == SPREAD_SOURCE_RANGE == "127.0.1.1-127.0.8.254"
        assert with_policy_defaults(_run(policy, "127.0.0.2-127.0.0.9")).load.source_range == "127.0.0.2-127.0.0.9"
        assert with_policy_defaults(_run(policy), url="http://127.0.0.1:1").load.source_range is None
    for policy in ("l7-round-robin", "header-hash", "l4-round-robin", "least-conn"):
        assert with_policy_defaults(_run(policy)).load.source_range is None


def test_header_hash_runs_send_the_user_header(tmp_path: Path) -> None:
    for policy in POLICIES["nginx"]:
        cmd = locust_command(_run(policy), "http://127.0.0.1:1", tmp_path)
        assert ("--sio-user-header" in cmd) == (policy == "header-hash"), policy


def test_nginx_idle_timeout_is_the_proxied_connections_idle_timeout(tmp_path: Path) -> None:
    l4 = _lines(nginx_config("l4-round-robin", NODES, 8443, str(tmp_path), stream_module=MODULE, limit=4096,
                             idle_timeout=60))
    assert "proxy_timeout 60s;" in l4
    l7 = _lines(nginx_config("ip-hash", NODES, 8080, str(tmp_path), limit=4096, idle_timeout=2.5))
    assert "proxy_read_timeout 2.5s;" in l7 and "proxy_send_timeout 2.5s;" in l7
    assert f"proxy_read_timeout {NGINX_IDLE_TIMEOUT_S}s;" in _lines(nginx_config("ip-hash", NODES, 8080, str(tmp_path), limit=4096))
