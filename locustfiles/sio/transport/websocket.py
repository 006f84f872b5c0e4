"""Minimal RFC 6455 WebSocket client over a gevent socket (client side only, no extensions).

Why hand-written rather than websocket-client or wsproto: Engine.IO needs only text/binary
messages, ping/pong and close; the opening handshake must carry the user's cookie jar and
source address, and a refused upgrade must hand its status, headers and body to the core
(400 "Invalid session" is a finding, not just an error). On connect + message round trips the
code below used less CPU than either library (benchmarks/transports.py).
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from collections import deque

import gevent
from gevent import ssl
from gevent.lock import Semaphore

from locustfiles.sio.transport.errors import TransportError, classify_os_error
from locustfiles.sio.transport.http import USER_AGENT, HttpConnection, HttpResponse, _Eof
from locustfiles.sio.transport.net import Endpoint, open_socket, send_all

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_getrandbits = random.getrandbits


class HandshakeRefused(TransportError):
    """The server answered the WebSocket opening request with something other than 101."""

    def __init__(self, response: HttpResponse) -> None:
        self.response = response
        body = response.body[:200].decode("utf-8", "replace")
        super().__init__(f"http_{response.status}", f"WebSocket handshake refused: {response.status} {body}")


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


class WebSocket:
    """An open WebSocket; `recv()` from one reader greenlet, `send()` from any greenlet."""

    def __init__(self, conn: HttpConnection, response: HttpResponse) -> None:
        self._conn = conn
        self.response = response  # the 101, for node attribution (headers, cookies)
        self._ready: deque[str | bytes] = deque()
        self._frag: bytearray | None = None
        self._frag_op = 0
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
    ) -> WebSocket:
        """Open the TCP connection and do the opening handshake within `timeout` seconds."""
        timer = gevent.Timeout(timeout)
        timer.start()
        conn = None
        try:
            conn = HttpConnection(open_socket(endpoint, timeout, source_ip, tls))
            key = base64.b64encode(_getrandbits(128).to_bytes(16, "big"))
            head = (
                f"GET {endpoint.prefix}{target} HTTP/1.1\r\nHost: {endpoint.host_header}\r\n"
                f"User-Agent: {USER_AGENT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            )
            if cookie:
                head += f"Cookie: {cookie}\r\n"
            for k, v in (extra_headers or {}).items():
                head += f"{k}: {v}\r\n"
            try:
                resp = conn.roundtrip((head + "\r\n").encode("latin-1"), head_only=False)
            except _Eof:
                raise TransportError("upgrade_failed", "server closed the connection during the WebSocket handshake") from None
            if resp.status != 101:
                raise HandshakeRefused(resp)
            want = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
            if (
                resp.headers.get("upgrade", "").lower() != "websocket"
                or resp.headers.get("sec-websocket-accept", "") != want
            ):
                raise TransportError("upgrade_failed", "101 answer is not a valid WebSocket handshake")
            return cls(conn, resp)
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
        except (OSError, ssl.SSLError, TimeoutError) as e:
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
        if isinstance(message, str):
            frame = encode_frame(0x1, message.encode("utf-8"))
        else:
            frame = encode_frame(0x2, bytes(message))
        self._send_raw(frame)

    def queue(self, message: str | bytes) -> None:
        """Encode one message now, write it with the next flush() or close().

        Why: the frames one protocol step produces ("41" then the close frame, "5" then the
        buffered packets) go out in one write instead of one syscall each; same frames, same order.
        """
        if isinstance(message, str):
            self._wbuf.append(encode_frame(0x1, message.encode("utf-8")))
        else:
            self._wbuf.append(encode_frame(0x2, bytes(message)))

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
        then TransportError(transport_closed) on a close frame or EOF, protocol_error on a
        malformed frame.
        """
        while not self._ready:
            if self._error is not None:
                self.close(send_frame=self._error.kind == "transport_closed")
                raise self._error
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
        return self._ready.popleft()

    def _read_frames(self) -> None:
        """Parse whatever is buffered (bytes may have arrived with the 101); read more if idle."""
        self._parse_frames()
        if not self._ready and self._error is None:
            self._conn._fill(False)
            self._parse_frames()

    def _parse_frames(self) -> None:
        buf = self._conn.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            if b0 & 0x70:
                self._error = TransportError("protocol_error", "WebSocket frame with reserved bits set")
                return
            if b1 & 0x80:
                self._error = TransportError("protocol_error", "masked WebSocket frame from the server")
                return
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = (buf[2] << 8) | buf[3]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if n > MAX_MESSAGE_BYTES:
                self._error = TransportError("protocol_error", f"WebSocket frame of {n} bytes")
                return
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            try:
                self._on_frame(b0 & 0x80, b0 & 0x0F, payload)
            except TransportError as e:
                self._error = e
                return

    def _on_frame(self, fin: int, op: int, payload: bytes) -> None:
        if op >= 0x8:  # control frames
            if not fin or len(payload) > 125:
                raise TransportError("protocol_error", "bad WebSocket control frame")
            if op == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise TransportError("transport_closed", f"WebSocket closed by the server (code {self.close_code})")
            if op == 0x9:
                self._send_raw(encode_frame(0xA, payload))
            elif op != 0xA:
                raise TransportError("protocol_error", f"unknown WebSocket opcode {op}")
            return
        if op == 0x0:
            if self._frag is None:
                raise TransportError("protocol_error", "WebSocket continuation without a first frame")
            self._frag += payload
            if len(self._frag) > MAX_MESSAGE_BYTES:
                raise TransportError("protocol_error", "WebSocket message larger than 16 MiB")
            if fin:
                data, op = bytes(self._frag), self._frag_op
                self._frag = None
                self._deliver(op, data)
            return
        if op not in (0x1, 0x2):
            raise TransportError("protocol_error", f"unknown WebSocket opcode {op}")
        if self._frag is not None:
            raise TransportError("protocol_error", "WebSocket data frame inside a fragmented message")
        if fin:
            self._deliver(op, payload)
        else:
            self._frag, self._frag_op = bytearray(payload), op

    def _deliver(self, op: int, data: bytes) -> None:
        if op == 0x1:
            try:
                self._ready.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise TransportError("protocol_error", "WebSocket text message is not UTF-8") from None
        else:
            self._ready.append(data)

    def close(self, send_frame: bool = True) -> None:
        """Close (best-effort close frame first); wakes a parked recv() with transport_closed."""
        if self.closed:
            return
        wbuf, self._wbuf = self._wbuf, []
        if send_frame:  # queued frames, then the close frame, in one write
            wbuf.append(encode_frame(0x8, struct.pack("!H", 1000)))
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
