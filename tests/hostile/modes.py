"""The misbehaviours of the hostile server, one `Mode` each, and what the client may answer.

A mode is a minimally correct Engine.IO v4 / Socket.IO v5 server (tests/hostile/server.py)
with one hook replaced, so every step of a chat user before the misbehaviour is reachable:
- `open_*`: the open packet (sid, ping values, raw text);
- `on_open` / `on_post` / `on_poll`: the raw HTTP answer to the handshake GET, to the first POST
  (the CONNECT), to the first long-poll GET;
- `connect_reply`, `ack_reply`, `after_join`: Socket.IO packets (the CONNECT answer, the echo
  acks, packets pushed once the user joined its room);
- `on_ws_101`: the raw answer to a WebSocket opening request; `on_ws`: a coroutine started on
  the WebSocket once the session is upgraded (or WebSocket-only) and joined.

`kinds` says how the client must report the misbehaviour: a set means at least one failure of
one of these kinds (a bounded reader names a size limit as protocol_error; timeouts alone there
mean no bound); None means the client may cope (any failures must still be classified).

Why the wire bytes are written by hand here: each mode must be able to break the protocol at
any byte (a lying length, a reserved bit, a frame cut in half), which no library's writer does.
The well-formed parts use the same helpers so a mode differs from the correct server only
where it says.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.hostile.server import Ctx

NODE = "n1"
PING_INTERVAL_MS = 1000
PING_TIMEOUT_MS = 1000
CLOSED_KINDS = frozenset({"transport_closed", "connection_reset"})
BROKEN_KINDS = CLOSED_KINDS | {"protocol_error"}


def http(body: str | bytes, status: str = "200 OK", headers: str = "", *, length: int | None = None) -> bytes:
    """A complete HTTP/1.1 response; `length` lies about Content-Length when given."""
    b = body.encode() if isinstance(body, str) else body
    n = len(b) if length is None else length
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: {n}\r\n"
            f"x-served-by: {NODE}\r\n{headers}\r\n").encode() + b


def frame(opcode: int, payload: bytes | str, *, fin: bool = True, rsv: int = 0, mask: bool = False,
          length: int | None = None) -> bytes:
    """A server WebSocket frame; rsv = the 3 reserved bits (0-7), `length` lies when given."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask:
        key = os.urandom(4)
        data = bytes(c ^ key[i % 4] for i, c in enumerate(data))
        head += key
    return head + data


def open_packet(sid: str, **over: Any) -> str:
    doc = {"sid": sid, "upgrades": ["websocket"], "pingInterval": PING_INTERVAL_MS,
           "pingTimeout": PING_TIMEOUT_MS, "maxPayload": 1_000_000}
    doc.update(over)
    return "0" + json.dumps(doc, ensure_ascii=False)


Hook = Callable[["Ctx"], Awaitable[None]]


@dataclass(frozen=True)
class Mode:
    name: str
    doc: str
    kinds: frozenset[str] | None = None
    transports: str = "polling,websocket"
    sid: str | None = None  # the session id the open packet announces (None: a fresh random one)
    open_fields: dict[str, Any] = field(default_factory=dict)
    open_raw: str | None = None
    on_open: Hook | None = None
    on_post: Hook | None = None
    on_poll: Hook | None = None
    connect_reply: str | None = None  # "" = never answer the CONNECT
    ack_reply: Callable[[int, list[Any]], str | None] | None = None  # None result = never ack
    after_join: tuple[str, ...] = ()
    on_ws_101: Callable[[Ctx, str], Awaitable[None]] | None = None
    on_ws: Hook | None = None
    sweep: str = ""  # "open" | "ws_101": the n-th connection's answer is cut after n-1 bytes
    http_pool: str | None = None  # --sio-http-pool for this mode (None: the default, browser)


# -- wire-level actions -------------------------------------------------------------------------
def send(data: bytes, *, then: str = "close") -> Hook:
    """Write `data`; then close, reset (RST), or stay silent until the client leaves."""

    async def act(ctx: Ctx) -> None:
        await ctx.write(data)
        if then == "silent":
            await ctx.wait_closed()
        elif then == "rst":
            ctx.rst()

    return act


def rst() -> Hook:
    async def act(ctx: Ctx) -> None:
        ctx.rst()

    return act


def silent() -> Hook:
    async def act(ctx: Ctx) -> None:
        await ctx.wait_closed()

    return act


def trickle(head: bytes, rest: bytes, every: float) -> Hook:
    """Slowloris: `head` at once, then `rest` one byte every `every` seconds."""

    async def act(ctx: Ctx) -> None:
        await ctx.write(head)
        for i in range(len(rest)):
            await asyncio.sleep(every)
            if not await ctx.write(rest[i : i + 1]):
                return

    return act


def flood(head: bytes, block: bytes, *, rate: float | None = None) -> Hook:
    """`head`, then `block` again and again at full speed (or `rate` bytes/s) until the client leaves."""

    async def act(ctx: Ctx) -> None:
        await ctx.write(head)
        await ctx.flood(block, rate=rate)

    return act


def open_body(ctx: Ctx) -> bytes:
    return open_packet(ctx.new_session().sid).encode()


def with_open(make: Callable[[bytes], bytes], then: str = "close") -> Hook:
    """Answer the handshake with make(open packet bytes) (a real session is created)."""

    async def act(ctx: Ctx) -> None:
        await send(make(open_body(ctx)), then=then)(ctx)

    return act


def ws_after(data: bytes, *, then: str = "") -> Hook:
    async def act(ctx: Ctx) -> None:
        await ctx.write(data)
        if then == "rst":
            ctx.rst()

    return act


def ws_flood(block: bytes) -> Hook:
    async def act(ctx: Ctx) -> None:
        await ctx.flood(block)

    return act


def ws_101(*, accept: str | None = "", extra: str = "") -> Callable[[Ctx, str], Awaitable[None]]:
    """A 101 whose Sec-WebSocket-Accept is missing (None) or wrong ("..."), then silence."""

    async def act(ctx: Ctx, good: str) -> None:
        head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        if accept is not None:
            head += f"Sec-WebSocket-Accept: {accept or 'AAAAAAAAAAAAAAAAAAAAAAAAAAA='}\r\n"
        await ctx.write((head + f"x-served-by: {NODE}\r\n{extra}\r\n").encode())
        await ctx.wait_closed()

    return act


def _many(packet: bytes, size: int = 65536) -> bytes:
    return packet * max(1, size // len(packet))


CHUNKED = f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-served-by: {NODE}\r\n\r\n".encode()
BIG = 10**10
WS_EVENT = frame(1, '42["broadcast",{"room":"x","id":"bad"}]')

# -- the modes ----------------------------------------------------------------------------------
M = Mode
MODES: tuple[Mode, ...] = (
    # issue 9's reproducers
    M("sid_crlf", "open packet sid carrying CRLF + headers (header injection)",
      sid="ab\r\nX-Injected: 1\r\nHost: evil"),
    M("sid_nonascii", "open packet sid 's☃id' (non-ASCII)", sid="s\u2603id"),
    M("trailer_endless", "chunked handshake answer whose trailer line never ends, at full speed",
      frozenset({"protocol_error", "timeout"}),
      on_open=flood(CHUNKED + b"5\r\nhello\r\n0\r\n", b"X" * 65536)),
    M("trailer_uncapped", "chunked handshake answer with an endless trailer of short lines, 2 MB/s",
      frozenset({"protocol_error"}),
      on_open=flood(CHUNKED + b"5\r\nhello\r\n0\r\n", b"X-T: " + b"y" * 1000 + b"\r\n", rate=2e6)),
    M("ws_pong_flood", "unsolicited WebSocket pongs at full speed on a valid session",
      frozenset({"protocol_error"}), on_ws=ws_flood(_many(frame(0xA, b"p")))),
    # malformed JSON at every step
    M("open_bad_json", "open packet JSON cut short", frozenset({"protocol_error"}),
      open_raw='0{"sid":"abc","upgrades":["websocket"],'),
    M("connect_bad_json", "CONNECT answer with broken JSON", frozenset({"protocol_error"}),
      connect_reply='40{"sid":'),
    M("event_bad_json", "server event with broken JSON", frozenset({"protocol_error"}),
      after_join=('42["broadcast",{"room":',)),
    M("ack_bad_json", "echo ack with broken JSON", frozenset({"protocol_error"}),
      ack_reply=lambda i, _a: f'43{i}[{{"x":'),
    # impossible ping values
    M("ping_negative", "pingInterval -1000", frozenset({"protocol_error"}), open_fields={"pingInterval": -1000}),
    M("ping_zero", "pingInterval 0, pingTimeout 0", frozenset({"protocol_error"}),
      open_fields={"pingInterval": 0, "pingTimeout": 0}),
    M("ping_nan_string", 'pingInterval "NaN"', frozenset({"protocol_error"}), open_fields={"pingInterval": "NaN"}),
    M("ping_huge", "pingInterval and pingTimeout 2**63 ms", frozenset({"protocol_error"}),
      open_fields={"pingInterval": 2**63, "pingTimeout": 2**63}),
    M("ping_wrong_type", "pingInterval true, pingTimeout 2.5", frozenset({"protocol_error"}),
      open_fields={"pingInterval": True, "pingTimeout": 2.5}),
    # slowloris
    M("slowloris_headers", "handshake headers one byte every 0.25 s", frozenset({"timeout"}),
      on_open=trickle(b"HTTP/1.1 200 OK\r\n", b"Content-Type: text/plain\r\n" * 20, 0.25)),
    M("slowloris_body", "handshake body one byte every 0.1 s", frozenset({"timeout"}),
      on_open=trickle(http("", length=300), b"0" * 300, 0.1)),
    M("slowloris_ws", "after the upgrade, a WebSocket frame one byte every 0.1 s",
      on_ws=trickle(b"", frame(1, "4" + "x" * 200), 0.1)),
    # truncation and lengths that lie
    M("trunc_status", "connection closed inside the status line", frozenset(CLOSED_KINDS),
      on_open=send(b"HTTP/1.1 20")),
    M("trunc_headers", "connection closed inside the headers", frozenset(CLOSED_KINDS),
      on_open=send(b"HTTP/1.1 200 OK\r\nContent-Le")),
    M("trunc_mid_chunk", "connection closed inside a chunk", frozenset(CLOSED_KINDS),
      on_open=send(CHUNKED + b"40\r\n0{\"sid\":\"abc")),
    M("cl_longer", "Content-Length 500, 80 bytes sent, connection kept open", frozenset({"timeout"}),
      on_open=with_open(lambda b: http(b[:80], length=500), then="silent")),
    M("cl_shorter", "Content-Length 20 for a longer open packet (the rest poisons keep-alive)",
      frozenset({"protocol_error"}), on_open=with_open(lambda b: http(b, length=20), then="silent")),
    M("cl_negative", "Content-Length -1", frozenset({"protocol_error"}), on_open=send(http("0", length=-1))),
    M("header_flood", "headers that never end, at full speed", frozenset({"protocol_error"}),
      on_open=flood(b"HTTP/1.1 200 OK\r\n", b"X-Flood: " + b"z" * 100 + b"\r\n")),
    M("chunked_endless_body", "a chunked body that never ends, at full speed", frozenset({"protocol_error", "timeout"}),
      on_open=flood(CHUNKED, b"8000\r\n" + b"b" * 0x8000 + b"\r\n")),
    M("http500_huge", "500 announcing a 10 GB body", frozenset({"protocol_error", "http_500"}),
      on_open=flood(http("", "500 Internal Server Error", length=BIG), b"e" * 65536)),
    M("garbage_flood", "random bytes instead of HTTP, at full speed", frozenset({"protocol_error"}),
      on_open=flood(b"", os.urandom(65536))),
    M("http10_no_length", "HTTP/1.0 handshake answer without a length, ended by close",
      on_open=with_open(lambda b: f"HTTP/1.0 200 OK\r\nx-served-by: {NODE}\r\n\r\n".encode() + b)),
    M("redirect", "302 to an address outside 127.0.0.0/8", frozenset({"http_302", "handshake_rejected"}),
      on_open=send(http("", "302 Found", "Location: http://203.0.113.7/socket.io/\r\n"))),
    M("status_huge", "status code 99999999999999999999", on_open=send(http("x", "99999999999999999999 Huh"))),
    # Socket.IO / Engine.IO packets that cannot be
    M("unknown_eio_type", "Engine.IO packet type 9", frozenset({"protocol_error"}), after_join=("9hello",)),
    M("unknown_sio_type", "Socket.IO packet type 9", frozenset({"protocol_error"}), after_join=('49["x"]',)),
    M("attachments_lie", "binary event announcing 1000 attachments", frozenset({"protocol_error"}),
      after_join=('51000-["broadcast",{"_placeholder":true,"num":0}]',)),
    M("ack_unknown_id", "acks for ids nobody asked for", after_join=("43999[true]", "43-1[true]", "43[true]")),
    M("disconnect_mid_handshake", "DISCONNECT as the answer to CONNECT", connect_reply="41"),
    M("eio_ping_flood", "Engine.IO pings at full speed over the WebSocket", frozenset({"protocol_error"}),
      on_ws=ws_flood(_many(frame(1, "2")))),
    # WebSocket frames
    M("ws_rsv_bits", "frame with RSV1 set", frozenset({"protocol_error"}), on_ws=ws_after(frame(1, "6", rsv=4))),
    M("ws_reserved_opcode", "data frame with opcode 3", frozenset({"protocol_error"}), on_ws=ws_after(frame(3, "6"))),
    M("ws_masked", "masked server frame", frozenset({"protocol_error"}), on_ws=ws_after(frame(1, "6", mask=True))),
    M("ws_oversized", "frame announcing 2**63-1 bytes", frozenset({"protocol_error"}),
      on_ws=ws_after(frame(1, b"4", length=2**63 - 1))),
    M("ws_fragmented_ping", "ping without FIN", frozenset({"protocol_error"}), on_ws=ws_after(frame(9, "x", fin=False))),
    M("ws_close_1005", "close frame carrying code 1005", frozenset({"protocol_error"}),
      on_ws=ws_after(frame(8, struct.pack("!H", 1005)))),
    M("ws_close_999", "close frame carrying code 999", frozenset({"protocol_error"}),
      on_ws=ws_after(frame(8, struct.pack("!H", 999)))),
    M("ws_close_5000", "close frame carrying code 5000", frozenset({"protocol_error"}),
      on_ws=ws_after(frame(8, struct.pack("!H", 5000)))),
    M("ws_close_bad_utf8", "close frame with a reason that is not UTF-8", frozenset({"protocol_error"}),
      on_ws=ws_after(frame(8, struct.pack("!H", 1000) + b"\xff\xfe"))),
    M("ws_text_bad_utf8", "text frame that is not UTF-8", frozenset({"protocol_error"}),
      on_ws=ws_after(frame(1, b"42\xff\xfe"))),
    M("ws_ping_flood", "WebSocket pings at full speed", frozenset({"protocol_error"}),
      on_ws=ws_flood(_many(frame(9, b"p")))),
    M("ws_tiny_flood", "one-byte noop text frames at full speed", on_ws=ws_flood(_many(frame(1, "6")))),
    M("ws_continuation_endless", "a text message whose continuation frames never end",
      frozenset({"protocol_error"}), on_ws=flood(frame(1, "4", fin=False), _many(frame(0, "y" * 1000, fin=False)))),
    M("ws_101_no_accept", "101 without Sec-WebSocket-Accept (probe)", frozenset({"upgrade_failed", "timeout"}),
      on_ws_101=ws_101(accept=None)),
    M("ws_101_wrong_accept", "101 with a wrong Sec-WebSocket-Accept (WebSocket only)",
      frozenset({"upgrade_failed", "timeout"}), transports="websocket", on_ws_101=ws_101()),
    M("ws_silent", "the upgrade request is never answered (probe)", frozenset({"timeout", "upgrade_failed"}),
      on_ws_101=lambda ctx, _a: ctx.wait_closed()),
    # silence and resets at each step
    M("silent_connect", "the CONNECT is never answered", frozenset({"timeout"}), connect_reply=""),
    M("silent_ack", "echo is never acked", frozenset({"timeout"}), ack_reply=lambda _i, _a: None),
    M("rst_open", "RST in answer to the handshake", frozenset(CLOSED_KINDS), on_open=rst()),
    # the Node.js client's pattern: the POST rides a connection of its own, so its RST is the request's failure
    M("rst_post", "RST in answer to the CONNECT POST", frozenset(CLOSED_KINDS), on_post=rst(), http_pool="node"),
    # the browser pool's POST reuses the handshake's connection; reset before any answer byte, it is sent once
    # more on a new one (Chromium's HttpNetworkTransaction::ShouldResendRequest): no failure, and no harm
    M("rst_post_reused", "RST in answer to the CONNECT POST on a reused connection (browser pool: resent)", None,
      on_post=rst()),
    M("rst_ws_101", "RST in answer to the WebSocket upgrade (WebSocket only)", frozenset(CLOSED_KINDS | {"upgrade_failed"}),
      transports="websocket", on_ws_101=lambda ctx, _a: rst()(ctx)),
    M("rst_session", "RST after the upgrade, mid-session", frozenset(CLOSED_KINDS),
      on_ws=ws_after(WS_EVENT, then="rst")),
)
SWEEPS: tuple[Mode, ...] = (
    M("sweep_open", "the polling handshake answer cut at every byte offset", frozenset(BROKEN_KINDS),
      sweep="open"),
    M("sweep_ws_101", "the WebSocket-only 101 + open packet cut at every byte offset",
      frozenset(BROKEN_KINDS | {"upgrade_failed"}), transports="websocket", sweep="ws_101"),
)
BY_NAME = {m.name: m for m in MODES + SWEEPS}
assert len(BY_NAME) == len(MODES) + len(SWEEPS), "mode names must be unique"
