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
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import socketio
import uvicorn

from contract.wire import NODE_HEADER

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


def build_server(node_id: str, redis_url: str | None = None) -> socketio.AsyncServer:
    """The Socket.IO server with the contract's handlers; memory adapter unless redis_url is set."""
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        cors_allowed_origins="*",
        ping_interval=25,
        ping_timeout=20,
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


def build_app(node_id: str, redis_url: str | None = None) -> ASGIApp:
    sio = build_server(node_id, redis_url)
    return ServedByMiddleware(socketio.ASGIApp(sio), node_id)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m targets.app", description=__doc__.splitlines()[0])
    p.add_argument("--id", default=os.environ.get("SIOSCALE_NODE_ID", "n1"))
    p.add_argument("--host", default=os.environ.get("SIOSCALE_NODE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("SIOSCALE_NODE_PORT", "8001")))
    p.add_argument("--redis-url", default=os.environ.get("SIOSCALE_REDIS_URL") or None)
    p.add_argument("--certfile", default=None, help="serve TLS directly (balancer 'none')")
    p.add_argument("--keyfile", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {a.id} %(name)s %(levelname)s %(message)s")
    if a.redis_url:
        try:
            asyncio.run(_check_redis(a.redis_url))
        except Exception as e:  # noqa: BLE001 - any failure to reach Redis is fatal at start
            print(f"node {a.id}: cannot reach Redis at {a.redis_url}: {e}", file=sys.stderr, flush=True)
            return 3
    uvicorn.run(
        build_app(a.id, a.redis_url),
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
