"""Balancer configs as pure functions: (policy, nodes, port, TLS files) -> config text.

Kept free of processes and sockets so every policy's rendering is unit-tested without
starting anything; the supervisor (targets/cluster.py) only writes the text and runs the binary.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import jinja2

from contract.config import POLICIES
from contract.wire import CADDY_COOKIE, NODE_COOKIE, TRAEFIK_COOKIE

TEMPLATES = Path(__file__).parent / "balancers"
# HAProxy policies balanced per TCP connection (mode tcp); the others are mode http.
HAPROXY_TCP_POLICIES = ("l4-round-robin", "source", "leastconn")


@dataclass(frozen=True)
class Backend:
    id: str
    host: str
    port: int


class RenderError(ValueError):
    """A balancer/policy combination this module cannot render."""


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # config files, not HTML
)


def fd_limit() -> int:
    """The hard file-descriptor limit HAProxy may raise itself to."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else max(soft, 65536)


def haproxy_maxconn(limit: int) -> int:
    """maxconn that fits `limit` descriptors: HAProxy wants ~2 per connection plus a reserve."""
    return max(64, min(100_000, (limit - 256) // 2))


def _check(balancer: str, policy: str) -> None:
    allowed = POLICIES.get(balancer, ())
    if policy not in allowed:
        raise RenderError(
            f"policy {policy!r} is not available for balancer {balancer!r}; choose one of: {', '.join(allowed)}"
        )


def haproxy_config(
    policy: str,
    nodes: list[Backend],
    port: int,
    host: str = "127.0.0.1",
    pem_file: str | None = None,
    limit: int | None = None,
    idle_timeout: float | None = None,
) -> str:
    """haproxy.cfg for one policy; TLS is terminated on the frontend when pem_file is given.

    idle_timeout (s): the client, server and tunnel timeouts, as a cloud balancer's one idle timeout (the classic
    ELB's and the ALB's 60 s): a connection quiet in both directions for longer is closed."""
    _check("haproxy", policy)
    lim = fd_limit() if limit is None else limit
    return _env.get_template("haproxy.cfg.j2").render(
        policy=policy,
        mode="tcp" if policy in HAPROXY_TCP_POLICIES else "http",
        nodes=nodes,
        port=port,
        host=host,
        tls=pem_file is not None,
        pem_file=pem_file or "",
        fd_limit=lim,
        maxconn=haproxy_maxconn(lim),
        cookie_name=NODE_COOKIE,
        idle_ms=round(idle_timeout * 1000) if idle_timeout else None,
    )


def caddy_config(
    policy: str,
    nodes: list[Backend],
    port: int,
    host: str = "127.0.0.1",
    cert_file: str | None = None,
    key_file: str | None = None,
    admin_port: int | None = None,
) -> str:
    """Caddyfile for one policy; TLS with the given cert/key when both are set."""
    _check("caddy", policy)
    if (cert_file is None) != (key_file is None):
        raise RenderError("caddy TLS needs both cert_file and key_file")
    return _env.get_template("Caddyfile.j2").render(
        policy=policy,
        nodes=nodes,
        port=port,
        host=host,
        tls=cert_file is not None,
        cert_file=cert_file or "",
        key_file=key_file or "",
        admin_port=admin_port,
        cookie_name=CADDY_COOKIE,
    )


# nginx policies balanced per TCP connection by the stream module; the others are the http module's.
NGINX_STREAM_POLICIES = ("l4-round-robin",)
NGINX_IDLE_TIMEOUT_S = 90  # proxy_read/send_timeout: above Engine.IO's pingInterval + pingTimeout (25 + 20 s)


def nginx_config(
    policy: str,
    nodes: list[Backend],
    port: int,
    workdir: str,
    host: str = "127.0.0.1",
    cert_file: str | None = None,
    key_file: str | None = None,
    stream_module: str | None = None,
    user: str | None = None,
    limit: int | None = None,
    idle_timeout: float | None = None,
) -> str:
    """nginx.conf for one policy, every path in `workdir` (absolute); TLS when cert and key are set.

    `idle_timeout` (s): proxy_read/send_timeout (L7) or proxy_timeout (L4), a cloud balancer's idle timeout;
    default NGINX_IDLE_TIMEOUT_S, above the servers' ping interval + timeout.

    `stream_module`: the ngx_stream_module.so to load_module (Debian ships it as a separate
    package, libnginx-mod-stream); None when the binary has it built in or the policy is L7.
    `user`: the worker's user, given only when the master runs as root (nginx would switch the
    worker to nobody, who cannot enter the workdir).
    """
    _check("nginx", policy)
    if (cert_file is None) != (key_file is None):
        raise RenderError("nginx TLS needs both cert_file and key_file")
    if not workdir.startswith("/"):
        raise RenderError(f"nginx workdir must be absolute, got {workdir!r}")
    lim = fd_limit() if limit is None else limit
    return _env.get_template("nginx.conf.j2").render(
        policy=policy,
        mode="stream" if policy in NGINX_STREAM_POLICIES else "http",
        nodes=nodes,
        port=port,
        host=host,
        workdir=workdir.rstrip("/") or "/",
        tls=cert_file is not None,
        cert_file=cert_file or "",
        key_file=key_file or "",
        stream_module=stream_module or "",
        user=user or "",
        fd_limit=lim,
        worker_connections=max(512, min(200_000, lim - 256)),
        idle_timeout=f"{idle_timeout:g}" if idle_timeout else NGINX_IDLE_TIMEOUT_S,
    )


# Traefik policies served by a TCP router (HostSNI(`*`)); the others by an HTTP router.
TRAEFIK_TCP_POLICIES = ("l4-round-robin",)
TRAEFIK_TIMEOUT_S = 90  # entrypoint read/idle and keep-alive timeouts: above pingInterval + pingTimeout (25 + 20 s)
TRAEFIK_NAME = "sio"  # the router's and the service's name; Traefik's API lists them as sio@file


@dataclass(frozen=True)
class TraefikConfig:
    """Traefik's two files: `static` (--configFile: entrypoints, API, provider, log) and `dynamic` (routers,
    services, TLS: what the file provider loads). `router` is "tcp" or "http"."""

    static: str
    dynamic: str
    router: str


def traefik_config(
    policy: str,
    nodes: list[Backend],
    port: int,
    api_port: int,
    dynamic_file: str,
    host: str = "127.0.0.1",
    cert_file: str | None = None,
    key_file: str | None = None,
) -> TraefikConfig:
    """Traefik's static and dynamic config for one policy; TLS terminated by Traefik when cert and key are set.

    The API listens on `host:api_port` (loopback: the cluster host is always 127.0.0.0/8) without the
    dashboard, so the supervisor can see the routers go live; `dynamic_file` (absolute) is where the
    supervisor writes `dynamic`.
    """
    _check("traefik", policy)
    if (cert_file is None) != (key_file is None):
        raise RenderError("traefik TLS needs both cert_file and key_file")
    if not dynamic_file.startswith("/"):
        raise RenderError(f"traefik dynamic_file must be absolute, got {dynamic_file!r}")
    router = "tcp" if policy in TRAEFIK_TCP_POLICIES else "http"
    values = dict(policy=policy, router=router, nodes=nodes, port=port, host=host, api_port=api_port,
                  dynamic_file=dynamic_file, tls=cert_file is not None, cert_file=cert_file or "",
                  key_file=key_file or "", cookie_name=TRAEFIK_COOKIE, name=TRAEFIK_NAME,
                  timeout_s=TRAEFIK_TIMEOUT_S)
    return TraefikConfig(static=_env.get_template("traefik.toml.j2").render(**values),
                         dynamic=_env.get_template("traefik-dynamic.toml.j2").render(**values), router=router)
