"""python-socketio reference node: the system under test, one process per node.

Run as ``python -m targets.app --id n1 --port 8001 [--redis-url redis://...]``. It speaks the
pinned event contract of docs/contracts.md and stamps every HTTP response -- polling answers,
400 "Invalid session" errors and the WebSocket 101 -- with ``x-served-by: <node id>`` so a
client can attribute each request to the node that really served it, whatever the balancer did.
Settings are socket.io 4's defaults (ping 25 s / 20 s), so a finding here is a finding about a
stock deployment, not about a tuned one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import socketio
import uvicorn
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily

from contract.wire import NODE_HEADER, PING_INTERVAL_S, PING_TIMEOUT_S

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ServedByMiddleware:
    """Adds the node-id header to every HTTP answer, the WebSocket 101 and WebSocket refusals.

    Written by hand because neither python-engineio nor uvicorn has a hook for response
    headers. A WebSocket that python-engineio refuses (e.g. an upgrade for a sid this node never
    saw) is closed before accept, which uvicorn turns into a bare 403 without headers; we send
    the same 403 through the ASGI "websocket.http.response" extension instead, adding the
    header and the engine's reason as the body, so the refusal is still attributable.
    """

    def __init__(self, app: ASGIApp, node_id: str) -> None:
        self.app = app
        self.header = (NODE_HEADER.encode(), node_id.encode())

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        can_deny = "websocket.http.response" in (scope.get("extensions") or {})
        accepted = False

        async def wrapped(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                accepted = True
                message = dict(message)
                message["headers"] = [*message.get("headers", []), self.header]
            elif kind == "websocket.close" and not accepted and scope["type"] == "websocket" and can_deny:
                accepted = True
                body = str(message.get("reason") or "Forbidden").encode()
                await send({"type": "websocket.http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain"),
                                        (b"content-length", str(len(body)).encode()), self.header]})
                await send({"type": "websocket.http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, wrapped)


def build_server(node_id: str, redis_url: str | None = None, ping_interval: float = PING_INTERVAL_S,
                 ping_timeout: float = PING_TIMEOUT_S) -> socketio.AsyncServer:
    """The Socket.IO server with the contract's handlers; memory adapter unless redis_url is set."""
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins="*",
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        logger=False,
        engineio_logger=False,
    )

    @sio.on("echo")
    async def echo(sid: str, *args: Any) -> Any:
        return args[0] if len(args) == 1 else (args if args else None)

    @sio.on("join")
    async def join(sid: str, room: Any = None, *_: Any) -> bool:
        if not isinstance(room, str):
            return False
        await sio.enter_room(sid, room)
        return True

    @sio.on("leave")
    async def leave(sid: str, room: Any = None, *_: Any) -> bool:
        if not isinstance(room, str):
            return False
        await sio.leave_room(sid, room)
        return True

    @sio.on("broadcast")
    async def broadcast(sid: str, payload: Any = None, *_: Any) -> bool:
        # The payload goes out untouched: the client measures latency from its own "sent" field.
        if not isinstance(payload, dict) or not isinstance(payload.get("room"), str):
            return False
        await sio.emit("broadcast", payload, room=payload["room"])
        return True

    @sio.on("whoami")
    async def whoami(sid: str, *_: Any) -> str:
        return node_id

    return sio


async def _check_redis(url: str) -> None:
    """Fail at start when Redis is unreachable: a node that cannot broadcast must not look healthy."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


LAG_PROBE_S = 0.010  # the probe sleeps this long and measures how late it wakes
LAG_WINDOW_S = 1.0  # the gauge is the p99 of the samples of the last second


class LoopLagProbe:
    """Event-loop lag measured from inside the loop: a task sleeps 10 ms and records how late it wakes.

    Why inside: only the loop knows how long a ready callback waited (a busy node answers
    /metrics late too, but an outside timer cannot tell lag from network). The gauge is the p99
    of the last second's samples (about 100), so one long stall in the second shows.
    """

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()
        self.task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - t0 - LAG_PROBE_S) * 1000.0))
            while self.samples and self.samples[0][0] < now - LAG_WINDOW_S:
                self.samples.popleft()

    def p99_ms(self) -> float:
        """p99 (nearest rank) of the last second's lags; 0 before the first sample."""
        now = time.monotonic()
        lags = sorted(lag for ts, lag in self.samples if ts >= now - LAG_WINDOW_S)
        if not lags:
            return 0.0
        return lags[min(len(lags) - 1, max(0, -(-99 * len(lags) // 100) - 1))]


def connected_clients(sio: socketio.AsyncServer) -> int:
    """The node's own count of connected Socket.IO clients (all namespaces, this process only).

    Read from the manager's room table (every connected sid is in its namespace's None room),
    which is what python-socketio itself consults; with the Redis manager it is still local.
    """
    rooms = getattr(sio.manager, "rooms", {})
    return sum(len(ns.get(None, ())) for ns in rooms.values())


class NodeCollector:
    """sioscale_clients and sioscale_event_loop_lag_ms, read at scrape time."""

    def __init__(self, sio: socketio.AsyncServer, probe: LoopLagProbe) -> None:
        self.sio, self.probe = sio, probe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("sioscale_clients", "connected Socket.IO clients (this node's own count)",
                                value=connected_clients(self.sio))
        yield GaugeMetricFamily("sioscale_event_loop_lag_ms", "event-loop lag, p99 over the last second, ms",
                                value=self.probe.p99_ms())


class MetricsApp:
    """GET /metrics in Prometheus text on the node's own port; 404 for any other non-Socket.IO path.

    The process collector adds prometheus_client's default process_cpu_seconds_total,
    process_resident_memory_bytes and process_open_fds, so a Prometheus (or `--scrape`) reads a
    reference node like any python service.
    """

    def __init__(self, sio: socketio.AsyncServer, probe: LoopLagProbe) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self.registry.register(NodeCollector(sio, probe))

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        ok = scope.get("path") == "/metrics" and scope.get("method") in ("GET", "HEAD")
        body = generate_latest(self.registry) if ok else b"not found"
        ctype = b"text/plain; version=0.0.4; charset=utf-8" if ok else b"text/plain"
        await send({"type": "http.response.start", "status": 200 if ok else 404,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""})


class _StartProbe:
    """Starts the lag probe on the first ASGI call (lifespan is off: the loop is only ours here)."""

    def __init__(self, app: ASGIApp, probe: LoopLagProbe) -> None:
        self.app, self.probe = app, probe

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        self.probe.ensure_started()
        await self.app(scope, receive, send)


def build_app(node_id: str, redis_url: str | None = None, ping_interval: float = PING_INTERVAL_S,
              ping_timeout: float = PING_TIMEOUT_S) -> ASGIApp:
    sio = build_server(node_id, redis_url, ping_interval, ping_timeout)
    probe = LoopLagProbe()
    inner = socketio.ASGIApp(sio, other_asgi_app=MetricsApp(sio, probe))
    return _StartProbe(ServedByMiddleware(inner, node_id), probe)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m targets.app", description=__doc__.splitlines()[0])
    p.add_argument("--id", default=os.environ.get("SIOSCALE_NODE_ID", "n1"))
    p.add_argument("--host", default=os.environ.get("SIOSCALE_NODE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("SIOSCALE_NODE_PORT", "8001")))
    p.add_argument("--redis-url", default=os.environ.get("SIOSCALE_REDIS_URL") or None)
    p.add_argument("--certfile", default=None, help="serve TLS directly (balancer 'none')")
    p.add_argument("--keyfile", default=None)
    p.add_argument("--ping-interval", type=float, default=PING_INTERVAL_S,
                   help=f"Engine.IO pingInterval in seconds (default {PING_INTERVAL_S:g}, socket.io's)")
    p.add_argument("--ping-timeout", type=float, default=PING_TIMEOUT_S,
                   help=f"Engine.IO pingTimeout in seconds (default {PING_TIMEOUT_S:g}, socket.io's)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {a.id} %(name)s %(levelname)s %(message)s")
    if a.redis_url:
        try:
            asyncio.run(_check_redis(a.redis_url))
        except Exception as e:  # noqa: BLE001 - any failure to reach Redis is fatal at start
            print(f"node {a.id}: cannot reach Redis at {a.redis_url}: {e}", file=sys.stderr, flush=True)
            return 3
    uvicorn.run(
        build_app(a.id, a.redis_url, a.ping_interval, a.ping_timeout),
        host=a.host,
        port=a.port,
        http="h11",
        ws="wsproto",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        ssl_certfile=a.certfile,
        ssl_keyfile=a.keyfile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
