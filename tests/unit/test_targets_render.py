"""Balancer configs rendered per policy (no processes): the lines that make each policy what it claims."""

from __future__ import annotations

import re

import pytest

from targets.render import (
    HAPROXY_TCP_POLICIES,
    Backend,
    RenderError,
    caddy_config,
    haproxy_config,
    haproxy_maxconn,
)

NODES = [Backend("n1", "127.0.0.1", 9001), Backend("n2", "127.0.0.1", 9002), Backend("n3", "127.0.0.1", 9003)]


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


@pytest.mark.parametrize(
    "policy,mode,balance",
    [
        ("l4-round-robin", "tcp", "balance roundrobin"),
        ("l7-round-robin", "http", "balance roundrobin"),
        ("cookie", "http", "balance roundrobin"),
        ("source", "tcp", "balance source"),
        ("leastconn", "tcp", "balance leastconn"),
    ],
)
def test_haproxy_policy_sets_mode_and_balance(policy: str, mode: str, balance: str) -> None:
    lines = _lines(haproxy_config(policy, NODES, 8080, limit=20000))
    assert f"mode {mode}" in lines
    assert balance in lines
    assert "timeout tunnel 1h" in lines  # websockets are not cut by the client/server timeouts
    assert "bind 127.0.0.1:8080" in lines
    servers = [ln for ln in lines if ln.startswith("server ")]
    assert [s.split()[1:3] for s in servers] == [["n1", "127.0.0.1:9001"], ["n2", "127.0.0.1:9002"],
                                                  ["n3", "127.0.0.1:9003"]]
    has_cookie = any(ln.startswith("cookie ") for ln in lines)
    assert has_cookie == (policy == "cookie")
    assert (policy in HAPROXY_TCP_POLICIES) == (mode == "tcp")


def test_haproxy_cookie_value_is_the_node_id() -> None:
    lines = _lines(haproxy_config("cookie", NODES, 8080, limit=20000))
    assert "cookie SIOSCALE_NODE insert indirect nocache" in lines
    for n in NODES:
        assert any(re.match(rf"server {n.id} \S+ cookie {n.id}\b", ln) for ln in lines), lines


def test_haproxy_tls_terminates_on_the_frontend() -> None:
    lines = _lines(haproxy_config("l4-round-robin", NODES, 8443, pem_file="/w/server.pem", limit=20000))
    assert "bind 127.0.0.1:8443 ssl crt /w/server.pem alpn http/1.1" in lines
    # backends stay plain HTTP
    assert all("ssl" not in ln for ln in lines if ln.startswith("server "))


@pytest.mark.parametrize("limit,expected", [(20000, 9872), (1024, 384), (256, 64), (10**7, 100_000)])
def test_haproxy_maxconn_fits_the_fd_limit(limit: int, expected: int) -> None:
    # HAProxy refuses to start when 2 x maxconn (+ reserve) exceeds `ulimit -n`.
    m = haproxy_maxconn(limit)
    assert m == expected
    assert 2 * m + 256 <= max(limit, 2 * 64 + 256)
    assert f"maxconn {m}" in _lines(haproxy_config("cookie", NODES, 1, limit=limit))


@pytest.mark.parametrize("policy,lb", [("l7-round-robin", "round_robin"), ("cookie", "cookie lb"), ("ip-hash", "ip_hash")])
def test_caddy_policy_sets_lb_policy(policy: str, lb: str) -> None:
    lines = _lines(caddy_config(policy, NODES, 8080))
    assert f"lb_policy {lb}" in lines
    assert "http://127.0.0.1:8080 {" in lines
    assert "reverse_proxy 127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003 {" in lines
    assert "admin off" in lines and "auto_https off" in lines


def test_caddy_tls_and_admin_port() -> None:
    lines = _lines(caddy_config("cookie", NODES, 8443, cert_file="/w/c.crt", key_file="/w/c.key", admin_port=2999))
    assert "https://127.0.0.1:8443 {" in lines
    assert "tls /w/c.crt /w/c.key" in lines
    assert "admin 127.0.0.1:2999" in lines and "admin off" not in lines
    with pytest.raises(RenderError, match="both cert_file and key_file"):
        caddy_config("cookie", NODES, 8443, cert_file="/w/c.crt")


@pytest.mark.parametrize("fn,policy", [(haproxy_config, "ip-hash"), (caddy_config, "source"),
                                       (caddy_config, "l4-round-robin"), (haproxy_config, "direct")])
def test_unknown_policy_for_the_balancer_names_the_allowed_ones(fn, policy: str) -> None:
    with pytest.raises(RenderError, match="choose one of"):
        fn(policy, NODES, 8080)


def test_idle_timeout_sets_client_server_and_tunnel_timeouts() -> None:
    lines = _lines(haproxy_config("l4-round-robin", NODES, 8443, pem_file="/w/server.pem", limit=20000, idle_timeout=60))
    assert {"timeout client 60000ms", "timeout server 60000ms", "timeout tunnel 60000ms"} <= set(lines)
    assert "timeout tunnel 1h" not in lines
    http = _lines(haproxy_config("cookie", NODES, 8080, limit=20000, idle_timeout=2.5))
    assert "timeout tunnel 2500ms" in http and "timeout http-keep-alive 2500ms" in http
    assert "timeout tunnel 1h" in _lines(haproxy_config("cookie", NODES, 8080, limit=20000))
