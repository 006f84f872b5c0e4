"""Flags shared by subcommands, mapped onto the one config schema (contract.config).

Defaults come from the dataclasses themselves, so a flag and a campaign key can never
disagree about what "not given" means.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from contract.config import (
    ADAPTERS,
    BALANCERS,
    HTTP_POOLS,
    MIN_NODE_MEMORY_MB,
    SERVERS,
    Campaign,
    ClusterConfig,
    LoadConfig,
    ScrapeTarget,
    _transports,
    parse_scrape,
    parse_steps_text,
)

_C = ClusterConfig()
_L = LoadConfig()


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """The cluster flags of every subcommand that builds a cluster (`cluster`, `run`): one definition."""
    g = p.add_argument_group("cluster (the local system under test)")
    g.add_argument("--nodes", type=int, default=_C.nodes, help=f"Socket.IO server nodes (default {_C.nodes})")
    g.add_argument("--balancer", choices=BALANCERS, default=_C.balancer, help=f"default {_C.balancer}")
    g.add_argument("--policy", default=None,
                   help="haproxy: l4-round-robin, l7-round-robin, cookie, source, leastconn; "
                        "caddy: l7-round-robin, cookie, ip-hash; nginx: l7-round-robin, ip-hash, hash-consistent, "
                        "header-hash, l4-round-robin, least-conn; traefik: l7-round-robin, cookie, l4-round-robin, p2c; "
                        f"none: direct (default {_C.policy}, "
                        "or direct with --balancer none)")
    g.add_argument("--adapter", choices=ADAPTERS, default=None,
                   help=f"default {_C.adapter}, or redis with --redis-url; redis-sharded (Redis >= 7 SPUBLISH) and "
                        "redis-streams need --server node")
    g.add_argument("--recovery", action="store_true",
                   help="Socket.IO connection-state recovery (maxDisconnectionDuration 2 min; --server node; "
                        "adapters that recover: memory, redis-streams)")
    g.add_argument("--server", choices=SERVERS, default=_C.server, help=f"default {_C.server}")
    g.add_argument("--tls", action="store_true", help="TLS on the balancer with a private CA made for this cluster")
    g.add_argument("--port", type=int, default=_C.port, help="balancer port (default: a free one)")
    g.add_argument("--host", default=_C.host, help=f"loopback address the cluster binds (default {_C.host})")
    g.add_argument("--redis-url", default=None,
                   help="use this Redis instead of starting one (implies --adapter redis)")
    g.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                   help="the balancer's idle timeout in seconds for every connection (haproxy; the classic ELB's and "
                        "the ALB's default is 60; default: haproxy's 60 s, 1 h for WebSockets)")
    g.add_argument("--ping-interval", type=float, default=None, metavar="S",
                   help="the servers' Engine.IO pingInterval in seconds (default 25, socket.io's)")
    g.add_argument("--ping-timeout", type=float, default=None, metavar="S",
                   help="the servers' Engine.IO pingTimeout in seconds: how long a node waits for a pong before it "
                        "drops the session (default 20, socket.io's)")
    add_limit_args(g)


def add_limit_args(g: argparse._ActionsContainer) -> None:
    """--node-cpus / --node-memory-mb: per-node limits in a cgroup, like Kubernetes `limits` (None: unlimited).

    Separate from add_cluster_args so a command without the other cluster flags (`campaign`,
    where they override the file's [cluster] keys: override_limits) takes the same two flags.
    """
    g.add_argument("--node-cpus", type=float, default=None, metavar="F",
                   help="CPU limit per node in cores (0.25 = a quarter of a core; a cgroup CPU quota; needs root)")
    g.add_argument("--node-memory-mb", type=int, default=None, metavar="M",
                   help=f"memory limit per node in MiB (>= {MIN_NODE_MEMORY_MB}; a cgroup memory limit, "
                        "an OOM kill is recorded as reason 'oom'; needs root)")


def override_limits(camp: Campaign, a: argparse.Namespace) -> Campaign:
    """A campaign with --node-cpus / --node-memory-mb applied to its [cluster], replacing an axis of that key.

    Why replace the axis: a flag is the user's explicit choice for this invocation; keeping an
    [axes] node_cpus beside it would run the same cell several times under one name.
    """
    given = {k: v for k, v in (("node_cpus", getattr(a, "node_cpus", None)),
                               ("node_memory_mb", getattr(a, "node_memory_mb", None))) if v is not None}
    if not given:
        return camp
    cluster = replace(camp.cluster, **given).validate()
    axes = {k: tuple({kk: vv for kk, vv in x.items() if kk not in given} if isinstance(x, dict) else x for x in v)
            for k, v in camp.axes.items() if k not in given}  # a table axis (recipes) loses those keys too
    return replace(camp, cluster=cluster, axes=axes)


def add_scrape_arg(p: argparse._ActionsContainer) -> None:
    """--scrape [ID=]URL, repeatable: users' own nodes' Prometheus endpoints, sampled into resources.csv."""
    p.add_argument("--scrape", action="append", default=None, metavar="[ID=]URL",
                   help="also sample this Prometheus /metrics endpoint every second into resources.csv as node ID "
                        "(default id host:port); repeatable; with --url, your own cluster's nodes")


def scrape_from_args(a: argparse.Namespace) -> tuple[ScrapeTarget, ...] | None:
    """The --scrape targets, validated (ConfigError names the flag), or None when the flag is not given."""
    given = getattr(a, "scrape", None)
    return parse_scrape(given, "--scrape") if given else None


def override_scrape(camp: Campaign, a: argparse.Namespace) -> Campaign:
    """A campaign whose [telemetry] scrape is replaced by --scrape, when given (this invocation's choice,
    as for --node-cpus). Its cells are validated when they are listed (an id may clash with a local node's)."""
    scrape = scrape_from_args(a)
    return camp if scrape is None else replace(camp, scrape=scrape)


def cluster_from_args(a: argparse.Namespace) -> ClusterConfig:
    """Build and validate; ConfigError messages are user-facing.

    The one rule for every subcommand: --redis-url implies the redis adapter (unless --adapter names
    another Redis adapter); with an explicit --adapter memory it is a ConfigError (ClusterConfig.validate), never silently half-used.
    """
    policy = a.policy or ("direct" if a.balancer == "none" else _C.policy)
    adapter = a.adapter or ("redis" if a.redis_url else _C.adapter)
    return ClusterConfig(
        nodes=a.nodes, balancer=a.balancer, policy=policy, adapter=adapter, server=a.server,
        tls=a.tls, port=a.port, host=a.host, redis_url=a.redis_url,
        node_cpus=a.node_cpus, node_memory_mb=a.node_memory_mb,
        recovery=bool(getattr(a, "recovery", False)),
        idle_timeout=getattr(a, "idle_timeout", None), ping_interval=getattr(a, "ping_interval", None),
        ping_timeout=getattr(a, "ping_timeout", None),
    ).validate()


def add_load_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("-f", "--locustfile", default=_L.locustfile, help=f"scenario (default {_L.locustfile})")
    g.add_argument("-u", "--users", type=int, default=_L.users, help=f"concurrent users (default {_L.users})")
    g.add_argument("-r", "--spawn-rate", type=float, default=_L.spawn_rate, help=f"users started per second (default {_L.spawn_rate:g})")
    g.add_argument("-t", "--duration", type=float, default=_L.duration, help=f"seconds (default {_L.duration:g})")
    g.add_argument("--steps", default="", help="step load USERS:HOLD,USERS:HOLD,... (replaces -u/-t)")
    g.add_argument("--transports", default=",".join(_L.transports), help="polling,websocket | websocket | polling")
    g.add_argument("--eio", type=int, choices=[3, 4], default=_L.eio, help="Engine.IO protocol version (default 4)")
    g.add_argument("--namespace", default=_L.namespace)
    g.add_argument("--room-size", type=int, default=_L.room_size, help="chat: users per room")
    g.add_argument("--message-rate", type=float, default=_L.message_rate, help="chat: messages per user per second")
    g.add_argument("--payload-size", type=int, default=_L.payload_size, help="chat: padding bytes per message")
    g.add_argument("--processes", type=int, default=_L.processes, help="Locust worker processes (>1: distributed)")
    g.add_argument("--source-range", default=None, help="bind users to loopback addresses, e.g. 127.0.0.2-127.0.0.254")
    g.add_argument("--no-reconnect", action="store_true", help="do not reconnect after a lost session")
    g.add_argument("--sample-rate", type=float, default=_L.sample_rate,
                   help=f"event log: share of successful high-volume rows kept (default {_L.sample_rate:g}; counts "
                        "stay exact)")
    g.add_argument("--log-all", action="store_true", help="event log: keep every row beside the aggregates")
    g.add_argument("--http-pool", choices=list(HTTP_POOLS), default=_L.http_pool,
                   help=f"HTTP connections per user: browser (Chromium's pool, late binding) | node (one per "
                        f"concurrent request, as Node.js) (default {_L.http_pool})")


def load_from_args(a: argparse.Namespace) -> LoadConfig:
    """Build and validate the load on its own.

    The rules that span fields (source range vs the target, faults vs the cluster) are
    RunConfig.validate's: `sioscale run` calls it with its `--url`, as campaign cells and
    `--dry-run` do, so each rule is checked in one place.
    """
    steps = parse_steps_text(a.steps, "--steps") if a.steps else ()
    load = LoadConfig(
        locustfile=a.locustfile, users=a.users, spawn_rate=a.spawn_rate, duration=a.duration, steps=steps,
        transports=_transports(a.transports), eio=a.eio, namespace=a.namespace, room_size=a.room_size,
        message_rate=a.message_rate, payload_size=a.payload_size, processes=a.processes,
        source_range=a.source_range, reconnect=not a.no_reconnect, log_all=a.log_all, sample_rate=a.sample_rate,
        http_pool=a.http_pool,
    ).validate()
    return load
