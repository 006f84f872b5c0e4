"""Flags shared by subcommands, mapped onto the one config schema (sioscale.config).

Defaults come from the dataclasses themselves, so a flag and a campaign key can never
disagree about what "not given" means.
"""

from __future__ import annotations

import argparse

from sioscale.config import (
    ADAPTERS,
    BALANCERS,
    SERVERS,
    ClusterConfig,
    LoadConfig,
    _steps,
    _transports,
)

_C = ClusterConfig()
_L = LoadConfig()


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (the local system under test)")
    g.add_argument("--nodes", type=int, default=_C.nodes, help=f"Socket.IO server nodes (default {_C.nodes})")
    g.add_argument("--balancer", choices=BALANCERS, default=_C.balancer, help=f"default {_C.balancer}")
    g.add_argument("--policy", default=_C.policy,
                   help="haproxy: l4-round-robin, l7-round-robin, cookie, source, leastconn; "
                        f"caddy: l7-round-robin, cookie, ip-hash; none: direct (default {_C.policy})")
    g.add_argument("--adapter", choices=ADAPTERS, default=_C.adapter, help=f"default {_C.adapter}")
    g.add_argument("--server", choices=SERVERS, default=_C.server, help=f"default {_C.server}")
    g.add_argument("--tls", action="store_true", help="TLS on the balancer with a private CA made for this cluster")
    g.add_argument("--port", type=int, default=_C.port, help="balancer port (default: a free one)")
    g.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")


def cluster_from_args(a: argparse.Namespace) -> ClusterConfig:
    """Build and validate; ConfigError messages are user-facing."""
    policy = a.policy
    if a.balancer == "none" and policy == _C.policy:
        policy = "direct"
    return ClusterConfig(
        nodes=a.nodes, balancer=a.balancer, policy=policy, adapter=a.adapter, server=a.server,
        tls=a.tls, port=a.port, redis_url=a.redis_url,
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


def load_from_args(a: argparse.Namespace) -> LoadConfig:
    steps = ()
    if a.steps:
        steps = _steps([part.split(":") for part in a.steps.split(",") if part])
    return LoadConfig(
        locustfile=a.locustfile, users=a.users, spawn_rate=a.spawn_rate, duration=a.duration, steps=steps,
        transports=_transports(a.transports), eio=a.eio, namespace=a.namespace, room_size=a.room_size,
        message_rate=a.message_rate, payload_size=a.payload_size, processes=a.processes,
        source_range=a.source_range, reconnect=not a.no_reconnect,
    ).validate()
