"""Minimal RFC 6455 WebSocket client over a gevent socket (client side), with permessage-deflate.

Why hand-written rather than websocket-client or wsproto: Engine.IO needs only text/binary
messages, ping/pong and close; the opening handshake must carry the user's cookie jar and
source address, and a refused upgrade must hand its status, headers and body to the core
(400 "Invalid session" is a finding, not just an error). On connect + message round trips the
code below used less CPU than either library (benchmarks/transports.py).

Why the frame parser stays hand-written too (wsproto's FrameProtocol was considered): it hands
out partial frames and has no bound on a frame, a message or a flood of control frames, so every
limit below would have to be written around it anyway, and it costs several Python calls and
copies per frame on the path every message of every user takes: on 100-byte text frames fed from
memory, FrameProtocol parsed 0.18 M frames per CPU-second, this reader (recv() included, UTF-8
decoded, every check below) 1.33 M (benchmarks/frames.py). What it checks, this parser
checks the same way (tests/unit/test_fuzz_websocket.py runs both on the same generated streams
and compares their verdicts); the only deliberate differences are the limits below and close
code 1014 (IANA-registered "bad gateway", which wsproto refuses and browsers accept).

permessage-deflate (RFC 7692, issue 13): the opening request offers it as Chrome does, and when the
101 accepts it every data message is compressed both ways. The compression itself is wsproto's
`PerMessageDeflate` (its per-frame hooks, driven by this parser), bounded here so that a
decompression bomb ends in a named limit; what a 101 may answer is checked as Chromium checks it
(`WebSocketDeflateParameters::Initialize` and `IsValidAsResponse`): one extension, known
parameters, none twice, window bits as numbers. Chrome compresses every message it sends (its
`WebSocketDeflatePredictorImpl` always predicts DEFLATE); so does this client.

Hostile servers: every violation of RFC 6455 and every limit below ends the connection with a
`WebSocketProtocolError` (kind protocol_error, the limit named in the message); the reader
yields to the gevent hub after a bounded amount of work, so a server that writes faster than
this process can parse cannot stall the other users of the generator.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import random
import re
import struct
import time
import zlib
from collections import deque
from urllib.parse import quote

import gevent
from gevent import ssl
from gevent.lock import Semaphore
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, Opcode, RsvBits

from locustfiles.sio.transport.errors import TransportError, classify_os_error
from locustfiles.sio.transport.http import USER_AGENT, HttpConnection, HttpResponse, _Eof
from locustfiles.sio.transport.net import Endpoint, open_socket, send_all

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Largest frame and largest reassembled message: the same bound as a polling body
(http.MAX_BODY_BYTES), 16x Engine.IO's default maxPayload (1e6), so no real server reaches it."""
MAX_FRAGMENTS = 1024
"""Most frames one fragmented message may take: servers fragment at most a few times (the
node `ws` library never on its own); empty continuation frames must not hold a message open."""
MAX_CONTROL_FRAMES_PER_S = 1000
"""Most ping/pong/close frames accepted per second. Real servers send a WebSocket ping every
20-30 s at most (uvicorn's websockets: 20 s); a flood costs this process CPU that every other
user's latencies would pay for, so it ends the connection as the finding it is."""
YIELD_EVERY = 64
"""Units of reader work (1 per frame, +1 per 64 KiB) before the reader yields to the hub. A
gevent socket returns buffered bytes without yielding, so a server that always has bytes ready
would otherwise own the process: timers stop firing and every latency measured is false."""
_VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))
"""RFC 6455 7.4 + IANA registry (1012-1014); 1004-1006 and 1015 must never be on the wire.
3000-4999 (libraries, applications) are valid too; everything else is a protocol error."""
WS_EXTENSIONS_OFFER = "permessage-deflate; client_max_window_bits"
"""`Sec-WebSocket-Extensions` as Chrome sends it (net/websockets: `WebSocketHandshakeStreamBase::
AddVectorHeaders` with the deflate offer `permessage-deflate; client_max_window_bits`): the server
may choose the client's window; context takeover both ways unless the server says otherwise."""
_getrandbits = random.getrandbits
_monotonic = time.monotonic
_BAD_HEADER_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")  # CR, LF, NUL, controls, non-Latin-1
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")
"""Left as they are in a request target: printable ASCII except '#'; '%' too, so a query the
core already percent-encoded goes out unchanged."""


class HandshakeRefused(TransportError):
    """The server answered the WebSocket opening request with something other than 101."""

    def __init__(self, response: HttpResponse) -> None:
        self.response = response
        body = response.body[:200].decode("utf-8", "replace")
        super().__init__(f"http_{response.status}", f"WebSocket handshake refused: {response.status} {body}")


class WebSocketProtocolError(TransportError):
    """The server broke RFC 6455 or a limit of this module; `close_code` goes in our close frame."""

    def __init__(self, detail: str, close_code: int = 1002) -> None:
        super().__init__("protocol_error", f"WebSocket: {detail}")
        self.close_code = close_code


_DEFLATE_PROTO = FrameDecoder(client=True)
"""What wsproto's extension hooks are handed as their `proto`: they read only `.client`."""
_NO_RSV = RsvBits(False, False, False)
_WINDOW_PARAMS = ("server_max_window_bits", "client_max_window_bits")
_FLAG_PARAMS = ("server_no_context_takeover", "client_no_context_takeover")


class BoundedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, with each inflated message bounded by MAX_MESSAGE_BYTES.

    Why the one override: wsproto inflates a frame's payload without a bound, so a few KiB from
    a hostile server could become gigabytes in this process; here zlib is asked for at most the
    room left (`max_length`) and anything past it ends the connection with 1009."""

    def __init__(self) -> None:
        super().__init__()
        self._inflated = 0  # bytes inflated for the message being read

    def frame_inbound_payload_data(self, proto: FrameDecoder, data: bytes) -> bytes | CloseReason:  # type: ignore[override]
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        room = MAX_MESSAGE_BYTES - self._inflated
        try:
            out = self._decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > MAX_MESSAGE_BYTES or self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: FrameDecoder, fin: bool) -> bytes | CloseReason | None:  # type: ignore[override]
        out = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return out


def accepted_extension(value: str) -> BoundedDeflate | None:
    """The extension a 101's `Sec-WebSocket-Extensions` chose (None: none), checked as Chromium
    checks the answer to its offer; anything else is `upgrade_failed`, as Chrome fails the
    connection (its console: "Error during WebSocket handshake: ...")."""
    value = value.strip()
    if not value:
        return None
    if "," in value:
        raise TransportError("upgrade_failed", f"101 answer chose more than one extension: {value[:80]!r}")
    name, *params = (p.strip() for p in value.split(";"))
    if name.lower() != "permessage-deflate":
        raise TransportError("upgrade_failed", f"101 answer chose extension {name[:40]!r}, which was not offered")
    seen: list[str] = []
    for p in params:
        key, eq, val = (x.strip() for x in p.partition("="))
        key, val = key.lower(), val.strip('"')
        if key in seen:
            raise TransportError("upgrade_failed", f"permessage-deflate answer names {key!r} twice")
        if key in _FLAG_PARAMS and not eq:
            seen.append(key)
        elif key in _WINDOW_PARAMS and val.isdigit() and val[0] != "0" and 9 <= int(val) <= 15:
            seen.append(f"{key}={int(val)}")
        elif key in _WINDOW_PARAMS and val == "8":  # RFC 7692 allows 8; zlib cannot keep a 256-byte window
            raise TransportError("upgrade_failed", f"permessage-deflate answer {key}=8: zlib's smallest window is 9 bits")
        else:
            raise TransportError("upgrade_failed", f"permessage-deflate answer with bad parameter {p[:60]!r}")
    ext = BoundedDeflate()
    ext.finalize("; ".join(["permessage-deflate", *seen]))  # wsproto takes the parameters from here
    return ext


def _deflate_ok(r: object) -> object:
    """A permessage-deflate hook's result, or the WebSocketProtocolError its CloseReason means."""
    if not isinstance(r, CloseReason):
        return r
    if r == CloseReason.MESSAGE_TOO_BIG:
        raise WebSocketProtocolError(f"compressed message inflates past MAX_MESSAGE_BYTES ({MAX_MESSAGE_BYTES})", 1009)
    raise WebSocketProtocolError(f"permessage-deflate: {r.name.lower()} (bad compressed data)", int(r))


def extension_name(ext: PerMessageDeflate | None) -> str:
    """The negotiated extension as the event log records it: "" or e.g.
    "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"."""
    if ext is None:
        return ""
    parts = ["permessage-deflate", f"client_max_window_bits={ext.client_max_window_bits}",
             f"server_max_window_bits={ext.server_max_window_bits}"]
    if ext.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if ext.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    return "; ".join(parts)


def _mask(key: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    m = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (FIN set)."""
    n = len(payload)
    key = _getrandbits(32).to_bytes(4, "big")
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + _mask(key, payload)


def _utf8(text: str) -> bytes:
    """UTF-8 of a text message; a lone surrogate (a JSON escape a server sent, echoed back)
    becomes U+FFFD, as a browser's WebSocket.send does (USVString), instead of raising."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def safe_target(target: str) -> str:
    """`target` as it may go on the request line: percent-encoded where it must be.

    Why here as well as in the protocol core (which already encodes the query as
    engine.io-client does): the request line is the last place a server-chosen value (a sid
    with CR LF, a non-ASCII sid) could reach the wire raw or make the encoding raise. Bytes
    outside printable ASCII become %XX of their UTF-8, as a browser's URL parser does; text
    that is not even encodable (a lone surrogate from a JSON escape) is a protocol error.
    """
    if target.isascii() and target.isprintable() and " " not in target and "#" not in target:
        return target  # the common case: nothing to encode
    try:
        return quote(target, safe=_TARGET_SAFE, encoding="utf-8", errors="strict")
    except UnicodeEncodeError:
        raise WebSocketProtocolError(f"URL {target[:80]!r} holds text that cannot be encoded") from None


def _header(name: str, value: str) -> str:
    """One request header line, refused (never sent) when it would break the request head."""
    if not _HEADER_NAME.fullmatch(name) or _BAD_HEADER_VALUE.search(value):
        raise TransportError(
            "protocol_error", f"WebSocket handshake: refusing to send header {name[:40]!r}: {value[:80]!r} "
            "(control characters or non-Latin-1 text)")
    return f"{name}: {value}\r\n"


def request_head(endpoint: Endpoint, target: str, key: bytes, cookie: str = "",
                 extra_headers: dict[str, str] | None = None, deflate: bool = True) -> bytes:
    """The opening request's bytes (offering permessage-deflate unless `deflate` is False); a
    TransportError (never an encoding error) when it cannot be."""
    head = (
        f"GET {safe_target(endpoint.prefix + target)} HTTP/1.1\r\n{_header('Host', endpoint.host_header)}"
        f"User-Agent: {USER_AGENT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if deflate:
        head += f"Sec-WebSocket-Extensions: {WS_EXTENSIONS_OFFER}\r\n"
    if cookie:
        head += _header("Cookie", cookie)
    for k, v in (extra_headers or {}).items():
        head += _header(str(k), str(v))
    return (head + "\r\n").encode("latin-1")  # every piece checked above: cannot fail


def _check_101(resp: HttpResponse, key: bytes, offered: bool = True) -> BoundedDeflate | None:
    """RFC 6455 4.1: what a client (a browser) must check in the 101 before using the socket;
    the permessage-deflate it accepted, if it did (RFC 7692)."""
    h = resp.headers
    want = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    if h.get("upgrade", "").lower() != "websocket" or h.get("sec-websocket-accept", "") != want:
        raise TransportError("upgrade_failed", "101 answer is not a valid WebSocket handshake")
    if "upgrade" not in (t.strip().lower() for t in h.get("connection", "").split(",")):
        raise TransportError("upgrade_failed", "101 answer without 'Connection: Upgrade'")
    if h.get("sec-websocket-protocol"):
        raise TransportError("upgrade_failed", f"101 answer chose sec-websocket-protocol "
                             f"{h['sec-websocket-protocol'][:60]!r}, which was not offered")
    chosen = h.get("sec-websocket-extensions", "")
    if chosen and not offered:
        raise TransportError("upgrade_failed", f"101 answer chose sec-websocket-extensions {chosen[:60]!r}, "
                             "which was not offered")
    return accepted_extension(chosen)


class WebSocket:
    """An open WebSocket; `recv()` from one reader greenlet, `send()` from any greenlet."""

    def __init__(self, conn: HttpConnection, response: HttpResponse, deflate: BoundedDeflate | None = None) -> None:
        self._conn = conn
        self.response = response  # the 101, for node attribution (headers, cookies)
        self._deflate = deflate  # permessage-deflate, when the 101 accepted it
        self.extension = extension_name(deflate)  # "" or the negotiated extension, for the event log
        self.compressed_in = 0  # compressed messages received (deflate on): what tests check
        self._ready: deque[str | bytes] = deque()
        self._frag_op = 0  # opcode of the fragmented message being reassembled (0: none)
        self._frag: list = []  # its pieces: bytes (binary) or str (text, decoded as they come)
        self._frag_len = 0  # its payload bytes so far
        self._utf8: codecs.IncrementalDecoder | None = None
        self._pong: bytes | None = None  # payload of the latest ping not yet answered
        self._work = 0  # reader work since the last yield to the hub (see YIELD_EVERY)
        self._ctl_since = 0.0  # start of the current one-second control-frame window
        self._ctl_n = 0
        self._send_lock = Semaphore()
        self._wbuf: list[bytes] = []  # frames queued by queue(), written by flush() / close()
        self.closed = False
        self.close_code: int | None = None
        self._error: TransportError | None = None  # delivered by recv() once the queue is empty

    @classmethod
    def connect(
        cls,
        endpoint: Endpoint,
        target: str,
        timeout: float = 10.0,
        source_ip: str | None = None,
        tls: ssl.SSLContext | None = None,
        cookie: str = "",
        extra_headers: dict[str, str] | None = None,
        deflate: bool = True,
    ) -> WebSocket:
        """Open the TCP connection and do the opening handshake within `timeout` seconds.

        Any failure is a classified TransportError, whatever the server sent.
        """
        key = base64.b64encode(_getrandbits(128).to_bytes(16, "big"))
        head = request_head(endpoint, target, key, cookie, extra_headers, deflate)  # before any socket
        timer = gevent.Timeout(timeout)
        timer.start()
        conn = None
        try:
            conn = HttpConnection(open_socket(endpoint, timeout, source_ip, tls))
            try:
                resp = conn.roundtrip(head, head_only=False)
            except _Eof:
                raise TransportError("upgrade_failed", "server closed the connection during the WebSocket handshake") from None
            if resp.status != 101:
                raise HandshakeRefused(resp)
            return cls(conn, resp, _check_101(resp, key, deflate))
        except gevent.Timeout as t:
            if conn is not None:
                conn.close()
            if t is not timer:
                raise
            raise TransportError("timeout", f"WebSocket handshake: no answer within {timeout:g}s") from None
        except TransportError:
            if conn is not None:
                conn.close()
            raise
        except Exception as e:  # noqa: BLE001 - OSError, TLS, and whatever a parser raised on hostile bytes
            if conn is not None:
                conn.close()
            raise classify_os_error(e, "WebSocket handshake") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            timer.close()

    # -- sending -----------------------------------------------------------------------------
    def send(self, message: str | bytes) -> None:
        """Send one text (str) or binary (bytes) message; classified TransportError on failure."""
        if self._deflate is not None:  # compressed in wire order: through the queue, under its lock
            self.queue(message)
            self.flush()
            return
        if isinstance(message, str):
            frame = encode_frame(0x1, _utf8(message))
        else:
            frame = encode_frame(0x2, bytes(message))
        self._send_raw(frame)

    def queue(self, message: str | bytes) -> None:
        """Encode one message now, write it with the next flush() or close().

        Why: the frames one protocol step produces ("41" then the close frame, "5" then the
        buffered packets) go out in one write instead of one syscall each; same frames, same order.
        """
        op, data = (0x1, _utf8(message)) if isinstance(message, str) else (0x2, bytes(message))
        if self._deflate is not None:
            _, data = self._deflate.frame_outbound(_DEFLATE_PROTO, Opcode(op), _NO_RSV, data, True)
            op |= 0x40  # RSV1: this message is compressed (RFC 7692 6)
        self._wbuf.append(encode_frame(op, data))

    def flush(self) -> None:
        """Write the queued frames; classified TransportError on failure."""
        wbuf = self._wbuf
        if wbuf:
            data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
            wbuf.clear()
            self._send_raw(data)

    def _send_raw(self, frame: bytes) -> None:
        if self.closed:
            raise TransportError("transport_closed", "WebSocket closed")
        try:
            with self._send_lock:
                send_all(self._conn.sock, frame)
        except (OSError, ssl.SSLError) as e:
            raise classify_os_error(e, "WebSocket send") from None

    # -- receiving ---------------------------------------------------------------------------
    def recv(self) -> str | bytes:
        """The next message; blocks (no timeout: the core's heartbeat bounds silence).

        Messages that arrived before a close frame or a malformed frame are delivered first;
        then TransportError(transport_closed) on a close frame or EOF, protocol_error
        (WebSocketProtocolError) on a malformed frame or a limit. Yields to the hub after
        YIELD_EVERY units of work, however fast the server writes.
        """
        while True:
            if self._work >= YIELD_EVERY:
                self._work = 0
                gevent.sleep(0)  # let timers and other users run (see YIELD_EVERY)
            if self._ready:
                return self._ready.popleft()
            err = self._error
            if err is not None:
                code = err.close_code if isinstance(err, WebSocketProtocolError) else self.close_code
                self.close(send_frame=code is not None, code=code or 1000)
                raise err
            if self.closed:
                raise TransportError("transport_closed", f"WebSocket closed (code {self.close_code})")
            try:
                self._read_frames()
            except _Eof:
                self.closed = True
                self._conn.close()
                raise TransportError("transport_closed", "WebSocket connection closed without a close frame") from None
            except (OSError, ssl.SSLError) as e:
                was_closed = self.closed
                self.closed = True
                self._conn.close()
                if was_closed:
                    raise TransportError("transport_closed", "WebSocket closed locally") from None
                raise classify_os_error(e, "WebSocket recv") from None
            except Exception as e:  # noqa: BLE001 - a bug here must still be a classified failure
                self._error = WebSocketProtocolError(f"reader failed: {type(e).__name__}: {e}", 1011)

    def _read_frames(self) -> None:
        """Parse what is buffered (bytes may have arrived with the 101); read more only when the
        buffer holds no complete frame, so it never grows past one frame plus one read."""
        if self._parse_frames() or self._error is not None:
            return
        self._conn._fill(False)
        self._parse_frames()

    def _parse_frames(self) -> bool:
        """Consume complete frames until the buffer runs dry, an error, or the work budget is
        spent; True if any frame was consumed. Headers are checked before their payload is
        awaited, so a declared size is refused before a byte of it is buffered."""
        buf = self._conn.buf
        consumed = False
        try:
            while self._work < YIELD_EVERY:
                have = len(buf)
                if have < 2:
                    break
                b0, b1 = buf[0], buf[1]
                n = b1 & 0x7F
                if (b0 != 0x81 and b0 != 0x82) or b1 & 0x80 or self._frag_op:  # else: a plain whole message
                    self._check_head(b0, b1, n)  # fails as soon as 2 bytes show it, as browsers do
                pos = 2
                if n == 126:
                    if have < 4:
                        break
                    n, pos = (buf[2] << 8) | buf[3], 4
                    if n < 126:
                        raise WebSocketProtocolError(f"16-bit length {n} where 7 bits suffice (RFC 6455 5.2: minimal encoding)")
                elif n == 127:
                    if have < 10:
                        break
                    n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
                    if n >> 63:
                        raise WebSocketProtocolError("64-bit length with the most significant bit set")
                    if n < 65536:
                        raise WebSocketProtocolError(f"64-bit length {n} where 16 bits suffice (RFC 6455 5.2: minimal encoding)")
                if (n > MAX_MESSAGE_BYTES or self._frag_op) and not b0 & 0x08:
                    self._check_size(b0 & 0x0F, n)
                if have < pos + n:
                    break
                payload = bytes(buf[pos : pos + n])
                del buf[: pos + n]
                consumed = True
                self._work += 1 + (n >> 16)
                self._on_frame(b0 & 0x80, b0 & 0x0F, payload, b0 & 0x40)
        except TransportError as e:
            self._error = e
        if self._pong is not None and (self._error is None or self._error.kind == "transport_closed"):
            pong, self._pong = self._pong, None  # RFC 6455 5.5.3: answering the latest ping is enough
            try:
                self._send_raw(encode_frame(0xA, pong))
            except TransportError as e:
                self._error = self._error or e
        return consumed

    def _check_head(self, b0: int, b1: int, n: int) -> None:
        """What the first two bytes of a frame can be refused for (n: the 7-bit length)."""
        op = b0 & 0x0F
        if b0 & 0x70 and not (b0 & 0x70 == 0x40 and self._deflate is not None and op in (0x1, 0x2)):
            if self._deflate is None:
                raise WebSocketProtocolError(f"reserved bits set (0x{b0 & 0x70:02x}) but no extension was negotiated")
            raise WebSocketProtocolError(f"reserved bits 0x{b0 & 0x70:02x} on a frame of opcode {op} "
                                         "(permessage-deflate sets only RSV1, on a message's first frame)")
        if b1 & 0x80:
            raise WebSocketProtocolError("masked frame from the server (RFC 6455 5.1)")
        if op >= 0x8:
            if op > 0xA:
                raise WebSocketProtocolError(f"unknown opcode {op}")
            if not b0 & 0x80:
                raise WebSocketProtocolError(f"fragmented control frame (opcode {op})")
            if n > 125:
                raise WebSocketProtocolError(f"control frame of {n} bytes or more (opcode {op}; at most 125)")
        elif op > 0x2:
            raise WebSocketProtocolError(f"unknown opcode {op}")
        elif op == 0x0:
            if not self._frag_op:
                raise WebSocketProtocolError("continuation frame without a first frame")
        elif self._frag_op:
            raise WebSocketProtocolError(f"data frame (opcode {op}) inside a fragmented message")

    def _check_size(self, op: int, n: int) -> None:
        """A data frame's declared size, refused before a byte of its payload is buffered."""
        if op:
            if n > MAX_MESSAGE_BYTES:
                raise WebSocketProtocolError(f"frame of {n} bytes exceeds MAX_MESSAGE_BYTES ({MAX_MESSAGE_BYTES})", 1009)
            return
        if len(self._frag) >= MAX_FRAGMENTS:
            raise WebSocketProtocolError(f"message in more than MAX_FRAGMENTS ({MAX_FRAGMENTS}) frames", 1009)
        if self._frag_len + n > MAX_MESSAGE_BYTES:
            raise WebSocketProtocolError(
                f"fragmented message of {self._frag_len + n} bytes or more exceeds MAX_MESSAGE_BYTES "
                f"({MAX_MESSAGE_BYTES})", 1009)

    def _on_frame(self, fin: int, op: int, payload: bytes, rsv1: int = 0) -> None:
        if op >= 0x8:  # control frames (header already checked)
            now = _monotonic()
            if now - self._ctl_since >= 1.0:
                self._ctl_since, self._ctl_n = now, 0
            self._ctl_n += 1
            if self._ctl_n > MAX_CONTROL_FRAMES_PER_S:
                raise WebSocketProtocolError(
                    f"control-frame flood: more than MAX_CONTROL_FRAMES_PER_S ({MAX_CONTROL_FRAMES_PER_S}) "
                    "ping/pong/close frames within one second", 1008)
            if op == 0x8:
                self._on_close(payload)
            elif op == 0x9:
                self._pong = payload  # answered once the batch is parsed
            return  # unsolicited pongs are allowed (RFC 6455 5.5.3) and ignored
        if self._deflate is not None:
            payload = self._inflate(fin, op, rsv1, payload)
        if fin and op:  # the common case: one whole message in one frame
            self._deliver(op, payload)
            return
        try:
            if op:  # first frame of a fragmented message
                self._frag_op = op
                self._utf8 = codecs.getincrementaldecoder("utf-8")() if op == 0x1 else None
            self._frag_len += len(payload)
            # text is validated as it arrives, as browsers (and wsproto) fail it: at the first bad byte
            self._frag.append(self._utf8.decode(payload, bool(fin)) if self._utf8 else payload)
        except UnicodeDecodeError:
            raise WebSocketProtocolError("text message is not valid UTF-8", 1007) from None
        if fin:
            parts, op = self._frag, self._frag_op
            self._frag, self._frag_op, self._frag_len, self._utf8 = [], 0, 0, None
            self._ready.append("".join(parts) if op == 0x1 else b"".join(parts))

    def _inflate(self, fin: int, op: int, rsv1: int, payload: bytes) -> bytes:
        """One data frame through wsproto's permessage-deflate hooks: its payload as sent
        (uncompressed messages pass unchanged), with the message's tail once `fin`."""
        d = self._deflate
        assert d is not None
        if rsv1:
            self.compressed_in += 1
        _deflate_ok(d.frame_inbound_header(_DEFLATE_PROTO, Opcode(op), RsvBits(bool(rsv1), False, False), len(payload)))
        data = _deflate_ok(d.frame_inbound_payload_data(_DEFLATE_PROTO, payload))
        tail = _deflate_ok(d.frame_inbound_complete(_DEFLATE_PROTO, bool(fin)))
        assert isinstance(data, bytes)
        return data + tail if isinstance(tail, bytes) else data

    def _deliver(self, op: int, data: bytes) -> None:
        if op == 0x1:
            try:
                self._ready.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise WebSocketProtocolError("text message is not valid UTF-8", 1007) from None
        else:
            self._ready.append(data)

    def _on_close(self, payload: bytes) -> None:
        """A close frame: transport_closed with its code and reason, or protocol_error if invalid."""
        if not payload:
            self.close_code = 1005  # RFC 6455 7.1.5: no status code present
            raise TransportError("transport_closed", "WebSocket closed by the server (code 1005, no status)")
        if len(payload) == 1:
            raise WebSocketProtocolError("close frame with a 1-byte payload (a code takes 2)")
        code = (payload[0] << 8) | payload[1]
        if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
            raise WebSocketProtocolError(f"close frame with invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketProtocolError("close reason is not valid UTF-8", 1007) from None
        self.close_code = code
        raise TransportError(
            "transport_closed", f"WebSocket closed by the server (code {code}" + (f", {reason!r})" if reason else ")"))

    def close(self, send_frame: bool = True, code: int = 1000) -> None:
        """Close (best-effort close frame with `code` first); wakes a parked recv() with transport_closed."""
        if self.closed:
            return
        wbuf, self._wbuf = self._wbuf, []
        if send_frame:  # queued frames, then the close frame, in one write
            wbuf.append(encode_frame(0x8, struct.pack("!H", code if code != 1005 else 1000)))
            data = b"".join(wbuf)
            sock = self._conn.sock
            try:
                try:
                    n = sock.send(data, 0, 0.0)  # never waits: no timer needed when it all fits
                except (BlockingIOError, ssl.SSLWantWriteError):
                    n = 0
                if n < len(data):
                    with gevent.Timeout(1.0, False):
                        sock.sendall(memoryview(data)[n:])
            except (OSError, ssl.SSLError):
                pass
        self.closed = True
        self._conn.close()
