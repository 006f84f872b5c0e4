"""The hostile server: one listening port per mode (tests/hostile/modes.py), 127.0.0.1 only.

    python -m tests.hostile.server --port-file F [--modes all|name,name]

writes {"control": port, "modes": {name: port}} to F once every port listens. GET /stats on the
control port answers {mode: {"connections", "requests", "violations"}}: a violation is request
bytes the client must never send (a header or request line carrying a server's raw CR/LF,
non-ASCII bytes in a request head) -- how the test sees a header injection from outside.

Why a separate process and asyncio: a server that floods at full speed inside the test's own
(gevent) process would share its event loop with the client and hide the very stall the suite
looks for. asyncio's drain() paces every writer, so one flooding connection never stops the
others.

Otherwise a minimally correct Engine.IO v4 / Socket.IO v5 server: polling handshake, CONNECT,
long-polls with pings, the WebSocket upgrade (2probe/3probe/5) or WebSocket-only sessions,
and the event contract of docs/contracts.md (echo, join, leave, broadcast, whoami). Client
WebSocket frames are parsed with wsproto's FrameProtocol and Socket.IO packets with
python-socketio's Packet; requests are read by hand (a few lines: request line, headers,
Content-Length) so that any bytes the client sends can be inspected.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from socketio import packet as sio_packet
from wsproto.frame_protocol import FrameProtocol, Opcode

from tests.hostile.modes import BY_NAME, MODES, NODE, PING_INTERVAL_MS, SWEEPS, Mode, frame, http, open_packet

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FLOOD_MAX_S = 30.0  # a flood outlives no test: the server stops it by itself
MAX_REQUEST_HEAD = 256 * 1024


@dataclass(eq=False)  # hashed by identity: sessions are room members
class Session:
    sid: str
    mode: ModeState
    queue: list[str] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ws: Ctx | None = None
    upgraded: bool = False
    joined: bool = False
    closed: bool = False
    misbehaving: bool = False
    pinger: asyncio.Task | None = None
    seen: float = field(default_factory=time.monotonic)  # last request or message of the client

    def send(self, pkt: str) -> None:
        """Deliver one Engine.IO text packet by the session's current transport."""
        if self.closed:
            return
        if self.upgraded and self.ws is not None:
            self.ws.write_nowait(frame(1, pkt))
        else:
            self.queue.append(pkt)
            self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        for members in self.mode.rooms.values():
            members.discard(self)
        self.mode.sessions.pop(self.sid, None)
        if self.pinger is not None:
            self.pinger.cancel()


@dataclass
class ModeState:
    mode: Mode
    sessions: dict[str, Session] = field(default_factory=dict)
    rooms: dict[str, set[Session]] = field(default_factory=dict)
    connections: int = 0
    sessions_made: int = 0
    requests: int = 0
    server_errors: int = 0  # this server's own bugs: a run that met one proves nothing
    violations: list[str] = field(default_factory=list)


class Ctx:
    """One accepted connection: what a mode's hooks act on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: ModeState) -> None:
        self.reader, self.writer, self.state = reader, writer, state
        self.session: Session | None = None

    def new_session(self, sid: str | None = None) -> Session:
        fixed = self.state.mode.sid
        self.state.sessions_made += 1
        # a mode's fixed sid gets a counter so that its users' sessions stay apart
        s = Session(sid or (f"{fixed}{self.state.sessions_made}" if fixed else secrets.token_urlsafe(12)), self.state)
        self.state.sessions[s.sid] = s
        s.pinger = asyncio.ensure_future(_pinger(s))
        self.session = s
        return s

    def write_nowait(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def write(self, data: bytes) -> bool:
        """Write and drain; False once the client is gone."""
        try:
            self.writer.write(data)
            await self.writer.drain()
            return True
        except (ConnectionError, OSError, RuntimeError):
            return False

    async def flood(self, block: bytes, rate: float | None = None) -> None:
        """`block` again and again (at `rate` bytes/s if given) until the client leaves."""
        end = time.monotonic() + FLOOD_MAX_S
        while time.monotonic() < end:
            if not await self.write(block):
                return
            if rate:
                await asyncio.sleep(len(block) / rate)

    async def wait_closed(self) -> None:
        """Say nothing until the client closes (bounded by FLOOD_MAX_S)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain_reads(), FLOOD_MAX_S)

    async def _drain_reads(self) -> None:
        while await self.reader.read(65536):
            pass

    def rst(self) -> None:
        """Reset the connection (SO_LINGER 0, then close: the kernel sends RST, not FIN)."""
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def _pinger(s: Session) -> None:
    """Ping every pingInterval; forget a session its client abandoned (no traffic for 5 s)."""
    while not s.closed:
        await asyncio.sleep(PING_INTERVAL_MS / 1000.0)
        if time.monotonic() - s.seen > 5.0:
            s.close()
            return
        s.send("2")


# -- HTTP ---------------------------------------------------------------------------------------
@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def query(self, key: str) -> str | None:
        v = parse_qs(urlsplit(self.target).query).get(key)
        return v[0] if v else None


async def read_request(ctx: Ctx) -> Request | None:
    try:
        head = await ctx.reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        return None
    ctx.state.requests += 1
    check_head(ctx.state, head)
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rsplit(" ", 1)[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    try:
        body = await ctx.reader.readexactly(n) if n else b""
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        return None
    return Request(method, target, headers, body)


def check_head(state: ModeState, head: bytes) -> None:
    """Record request bytes a client must never send: raw non-ASCII, or a server's injected header."""
    if any(b >= 0x80 for b in head):
        state.violations.append(f"non-ASCII byte in a request head: {head[:120]!r}")
    lines = head[:-4].split(b"\r\n")
    names = [ln.partition(b":")[0].strip().lower() for ln in lines[1:]]
    if b"x-injected" in names or names.count(b"host") > 1 or b"\n" in head.replace(b"\r\n", b""):
        state.violations.append(f"injected header in a request head: {head[:160]!r}")
    if len(lines[0].split(b" ")) != 3:
        state.violations.append(f"bad request line: {lines[0][:120]!r}")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: ModeState) -> None:
    ctx = Ctx(reader, writer, state)
    state.connections += 1
    try:
        while True:
            req = await read_request(ctx)
            if req is None:
                return
            if req.headers.get("upgrade", "").lower() == "websocket":
                await websocket(ctx, req)
                return
            if not await polling(ctx, req):
                return
    except (ConnectionError, OSError, asyncio.CancelledError):
        return
    except Exception:  # noqa: BLE001 - a bug of this server: say so in its log, keep serving
        traceback.print_exc()
        state.server_errors += 1
    finally:
        s = ctx.session
        if s is not None and s.ws is ctx and s.upgraded:  # the session's transport is gone
            s.close()
        with contextlib.suppress(Exception):
            writer.close()


async def polling(ctx: Ctx, req: Request) -> bool:
    """Answer one polling request; False when the connection must end."""
    st, mode = ctx.state, ctx.state.mode
    sid = req.query("sid")
    if sid is None:
        if mode.sweep == "open":
            return await cut(ctx, http(open_packet(ctx.new_session().sid, **mode.open_fields)))
        if mode.on_open is not None:
            await mode.on_open(ctx)
            return False
        s = ctx.new_session()
        text = mode.open_raw if mode.open_raw is not None else open_packet(s.sid, **mode.open_fields)
        return await ctx.write(http(text))
    s = st.sessions.get(sid)
    if s is None or s.closed:
        return await ctx.write(http('{"code":1,"message":"Session ID unknown"}', "400 Bad Request"))
    ctx.session = None  # polling connections do not own the session
    s.seen = time.monotonic()
    if req.method == "POST":
        if mode.on_post is not None and not getattr(s, "_posted", False):
            s._posted = True  # type: ignore[attr-defined]
            await mode.on_post(ctx)
            return False
        for pkt in req.body.decode("utf-8", "replace").split("\x1e"):
            on_packet(s, pkt)
        return await ctx.write(http("ok"))
    if mode.on_poll is not None and not getattr(s, "_polled", False):
        s._polled = True  # type: ignore[attr-defined]
        await mode.on_poll(ctx)
        return False
    if s.upgraded:
        return await ctx.write(http("6"))
    if not s.queue:
        s.wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(s.wake.wait(), PING_INTERVAL_MS / 1000.0 + 1)
    out, s.queue = s.queue, []
    if s.closed and not out:
        out = ["1"]
    return await ctx.write(http("\x1e".join(out) or "6"))


async def cut(ctx: Ctx, full: bytes) -> bool:
    """Sweep: the n-th connection gets `full` cut after n-1 bytes (False: the caller closes);
    once n-1 reaches len(full) it gets `full` whole (True: the session goes on, the sweep ends)."""
    n = ctx.state.connections - 1
    if n >= len(full):
        return await ctx.write(full)
    await ctx.write(full[:n])
    return False


# -- Engine.IO / Socket.IO --------------------------------------------------------------------
def on_packet(s: Session, pkt: str) -> None:
    if not pkt:
        return
    t, data = pkt[0], pkt[1:]
    if t == "1":
        s.close()
    elif t == "4":
        on_sio(s, data)
    # "3" (pong), "6" (noop), "2probe"/"5" are handled by the WebSocket loop


def on_sio(s: Session, data: str) -> None:
    mode = s.mode.mode
    try:
        p = sio_packet.Packet(encoded_packet=data)
    except Exception:  # noqa: BLE001 - the server tolerates a bad client packet
        return
    if p.packet_type == sio_packet.CONNECT:
        reply = mode.connect_reply if mode.connect_reply is not None else '40{"sid":"' + secrets.token_urlsafe(8) + '"}'
        if reply:
            s.send(reply)
    elif p.packet_type == sio_packet.DISCONNECT:
        s.close()
    elif p.packet_type == sio_packet.EVENT and isinstance(p.data, list) and p.data:
        on_event(s, p.id, str(p.data[0]), p.data[1:])


def on_event(s: Session, ack_id: int | None, name: str, args: list) -> None:
    """The pinned event contract: echo, join, leave, broadcast, whoami."""
    mode, rooms = s.mode.mode, s.mode.rooms
    result: list = [True]
    if name == "echo":
        result = args
    elif name == "join" and args:
        rooms.setdefault(str(args[0]), set()).add(s)
    elif name == "leave" and args:
        rooms.get(str(args[0]), set()).discard(s)
    elif name == "broadcast" and args and isinstance(args[0], dict):
        for member in list(rooms.get(str(args[0].get("room")), ())):
            member.send("42" + json.dumps(["broadcast", args[0]]))
    elif name == "whoami":
        result = [NODE]
    if ack_id is not None:
        if name == "echo" and mode.ack_reply is not None:
            reply = mode.ack_reply(ack_id, args)
            if reply is not None:
                s.send(reply)
        else:
            s.send(f"43{ack_id}" + json.dumps(result))
    if name == "join" and not s.joined:
        s.joined = True
        for pkt in mode.after_join:
            s.send(pkt)
        maybe_misbehave(s)


def maybe_misbehave(s: Session) -> None:
    """Start the mode's WebSocket misbehaviour once the session is upgraded and joined."""
    on_ws = s.mode.mode.on_ws
    if on_ws is not None and s.upgraded and s.joined and s.ws is not None and not s.misbehaving:
        s.misbehaving = True
        asyncio.ensure_future(on_ws(s.ws))


# -- WebSocket ----------------------------------------------------------------------------------
async def websocket(ctx: Ctx, req: Request) -> None:
    st, mode = ctx.state, ctx.state.mode
    sid = req.query("sid")
    key = req.headers.get("sec-websocket-key", "")
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    if mode.on_ws_101 is not None:
        await mode.on_ws_101(ctx, accept)
        return
    if mode.sweep == "ws_101" and sid is None:
        head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\nx-served-by: {NODE}\r\n\r\n").encode()
        if not await cut(ctx, head + frame(1, open_packet(ctx.new_session().sid))):
            return
        ctx.session.ws, ctx.session.upgraded = ctx, True  # type: ignore[union-attr]
        await ws_loop(ctx, ctx.session)  # type: ignore[arg-type]
        return
    s = st.sessions.get(sid) if sid is not None else None
    if sid is not None and (s is None or s.closed):
        await ctx.write(http('{"code":1,"message":"Session ID unknown"}', "400 Bad Request"))
        return
    await ctx.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Accept: {accept}\r\nx-served-by: {NODE}\r\n\r\n").encode())
    if s is None:  # WebSocket only: the open packet is the first message
        s = ctx.new_session()
        s.ws, s.upgraded = ctx, True
        text = mode.open_raw if mode.open_raw is not None else open_packet(s.sid, **mode.open_fields)
        ctx.write_nowait(frame(1, text))
    else:
        s.ws = ctx
        ctx.session = s
    await ws_loop(ctx, s)


async def ws_loop(ctx: Ctx, s: Session) -> None:
    """Read the client's frames until it closes; answer pings, feed text to Engine.IO."""
    proto = FrameProtocol(client=False, extensions=[])
    while True:
        data = await ctx.reader.read(65536)
        if not data:
            return
        proto.receive_bytes(data)
        try:
            frames = list(proto.received_frames())
        except Exception:  # noqa: BLE001 - a broken client frame ends the connection
            return
        for f in frames:
            if f.opcode is Opcode.CLOSE:
                return
            if f.opcode is Opcode.PING:
                ctx.write_nowait(frame(0xA, f.payload))
            elif f.opcode is Opcode.TEXT and isinstance(f.payload, str):
                on_ws_text(s, ctx, f.payload)


def on_ws_text(s: Session, ctx: Ctx, text: str) -> None:
    s.seen = time.monotonic()
    if text == "2probe":
        ctx.write_nowait(frame(1, "3probe"))
        s.queue.append("6")  # release the parked long-poll, as engine.io does
        s.wake.set()
    elif text == "5":
        s.upgraded = True
        out, s.queue = s.queue, []
        for pkt in out:
            s.send(pkt)
        maybe_misbehave(s)
    else:
        on_packet(s, text)


# -- main ---------------------------------------------------------------------------------------
LAG = {"max_ms": 0.0}  # the server's own event-loop lag since the last /stats


async def _lag_monitor() -> None:
    """How late this server's loop wakes up: a run during which the server itself stalled
    (a full CPU, a bug here) did not test the client, and the test repeats it."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(0.01)
        LAG["max_ms"] = max(LAG["max_ms"], (time.monotonic() - t - 0.01) * 1000.0)


async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, states: dict[str, ModeState]) -> None:
    with contextlib.suppress(Exception):
        await reader.readuntil(b"\r\n\r\n")
        doc: dict = {n: {"connections": s.connections, "requests": s.requests, "violations": s.violations[:20],
                         "server_errors": s.server_errors}
                     for n, s in states.items()}
        doc["_lag_ms"], LAG["max_ms"] = LAG["max_ms"], 0.0
        body = json.dumps(doc).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
    writer.close()


async def serve(names: list[str], port_file: str) -> None:
    states = {n: ModeState(BY_NAME[n]) for n in names}
    ports: dict[str, int] = {}
    servers = []
    for n, st in states.items():
        srv = await asyncio.start_server(lambda r, w, st=st: handle(r, w, st), "127.0.0.1", 0,
                                         limit=MAX_REQUEST_HEAD)
        servers.append(srv)
        ports[n] = srv.sockets[0].getsockname()[1]
    ctl = await asyncio.start_server(lambda r, w: control(r, w, states), "127.0.0.1", 0)
    lag = asyncio.ensure_future(_lag_monitor())  # noqa: F841 - runs as long as the server
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"control": ctl.sockets[0].getsockname()[1], "modes": ports, "pid": os.getpid()}, f)
    os.replace(tmp, port_file)  # the test sees the whole file or none
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--modes", default="all", help="all, or comma-separated mode names")
    a = ap.parse_args(argv)
    names = [m.name for m in MODES + SWEEPS] if a.modes == "all" else a.modes.split(",")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown mode(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(names, a.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
