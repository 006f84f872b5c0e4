"""Keep-alive HTTP/1.1 client for Engine.IO long-polling, one `HttpSession` per virtual user.

Why hand-written rather than geventhttpclient: a browser's polling needs a per-user cookie jar,
up to 6 keep-alive connections per host (a parked long-poll GET and a POST travel on two),
per-user source addresses and a cancellable parked GET; on the polling pattern the minimal
client below was also faster per CPU-second (benchmarks/transports.py has the comparison).
It speaks only what Engine.IO servers and balancers answer: Content-Length, chunked, or
read-to-close bodies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import ssl
from gevent.lock import Semaphore

from locustfiles.sio.transport.cookies import CookieJar
from locustfiles.sio.transport.errors import LimitExceeded, TransportError, classify_os_error
from locustfiles.sio.transport.net import Endpoint, open_socket, send_all

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) sioscale/0.1"

# Every read is bounded (issue 9: "bound every read"); a server that goes past a bound gets a
# protocol_error naming it (LimitExceeded). Generous for real servers: Node's and nginx's own
# header limits are 8-16 KiB, and a polling answer carries at most maxPayload (1e6 bytes by
# default) plus framing, so 16 MiB leaves room for servers configured far above the default.
MAX_HEAD_BYTES = 64 * 1024  # status line + header block
MAX_HEADER_BYTES = MAX_HEAD_BYTES  # the name this limit had before issue 9
MAX_HEADER_LINES = 256  # header fields in one response head
MAX_CHUNK_LINE_BYTES = 1024  # one chunk-size line, extensions included
MAX_TRAILER_BYTES = 16 * 1024  # the trailer block after the last chunk (read and discarded)
MAX_BODY_BYTES = 16 * 1024 * 1024  # a whole body: Content-Length, sum of chunks, or read-to-close
MAX_INTERIM_RESPONSES = 8  # 1xx answers (100 Continue, 103 Early Hints) before the real one

# A cooperative reader (issue 9: a server streaming at 200 MB/s must not freeze the process).
# gevent's recv() yields to the hub only when the socket would block; a peer that keeps the
# socket readable would keep one greenlet running forever, every other user's timer late and
# every latency measured meanwhile false. So after every read the reader checks how long it has
# run without the hub running: the hub's loop time (libev's ev_now) moves only when the hub
# iterates, so an unchanged value means every read since then returned at once. Past
# YIELD_AFTER_S of that, it sleeps one loop iteration (a timer, so the hub polls I/O and fires
# timers; gevent.sleep(0) only runs callbacks and may not iterate the loop for many of them).
# A read that waits for its data -- all normal traffic -- never pays for a yield. The clock is
# compared with the request's deadline after every read too.
RECV_BYTES = 65536
YIELD_AFTER_S = 0.005
_YIELD_SLEEP_S = 0.0005

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", " (except set-cookie)
    body: bytes
    set_cookie: list[str] = field(default_factory=list)
    keep_alive: bool = True
    received_at: float = 0.0  # monotonic time it was read, when a browser lag delays its delivery (transport/lags.py)


class _Eof(Exception):
    """The peer closed the connection; `got_bytes` says whether any of the response arrived."""

    def __init__(self, got_bytes: bool) -> None:
        self.got_bytes = got_bytes


class HttpConnection:
    """One keep-alive TCP (or TLS) connection with a read buffer.

    `roundtrip` raises TransportError (classified) or _Eof, nothing else; `_fill` is shared
    with the WebSocket reader (transport/websocket.py), so its frames are read cooperatively too.
    """

    __slots__ = ("sock", "buf", "uses", "got_head", "deadline", "_loop", "_loop_now", "_busy_since")

    def __init__(self, sock) -> None:  # sock: a gevent socket or SSLSocket
        self.sock = sock
        self.buf = bytearray()
        self.uses = 0
        self.got_head = False  # the current response's status line and headers have arrived
        self.deadline: float | None = None  # time.monotonic() by which the current response must end
        self._loop = gevent.get_hub().loop
        self._loop_now = 0.0  # the hub's loop time at the last read
        self._busy_since = 0.0  # monotonic time of the first read since the hub last ran

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, got: bool) -> None:
        """One recv() into the buffer: _Eof at end of stream; yields and checks the deadline."""
        data = self.sock.recv(RECV_BYTES)
        if not data:
            raise _Eof(got)
        self.buf += data
        now = time.monotonic()
        loop_now = self._loop.now()
        if loop_now != self._loop_now:  # the hub ran since the last read
            self._loop_now = loop_now
            self._busy_since = now
        elif now - self._busy_since >= YIELD_AFTER_S:
            gevent.sleep(_YIELD_SLEEP_S)  # let every other greenlet, I/O and timer run
        if self.deadline is not None and now >= self.deadline:
            raise TransportError("timeout", f"response still arriving at its deadline ({len(self.buf)} bytes buffered)")

    def roundtrip(self, request: bytes, head_only: bool, deadline: float | None = None) -> HttpResponse:
        """Send `request`, read one response; `deadline` (monotonic) is checked at every read."""
        self.uses += 1
        self.deadline = deadline
        self.got_head = False
        try:
            send_all(self.sock, request)
            resp = self._read_head(False)
            self.got_head = True
            interim = 0
            while 100 <= resp.status < 200 and resp.status != 101:  # a browser skips these, 101 excepted
                interim += 1
                if interim > MAX_INTERIM_RESPONSES:
                    raise LimitExceeded("MAX_INTERIM_RESPONSES", MAX_INTERIM_RESPONSES, "1xx interim answers",
                                        "responses")
                resp = self._read_head(True)
            if head_only or resp.status in (204, 304) or 100 <= resp.status < 200:
                return resp
            self._read_body(resp)
            return resp
        finally:
            self.deadline = None

    def _read_head(self, got: bool) -> HttpResponse:
        buf = self.buf
        start = 0
        while (idx := buf.find(b"\r\n\r\n", start)) < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise LimitExceeded("MAX_HEAD_BYTES", MAX_HEAD_BYTES, "HTTP response head")
            start = max(0, len(buf) - 3)  # rescanning from 0 made a byte-by-byte head quadratic
            self._fill(got or bool(buf))
        if idx > MAX_HEAD_BYTES:
            raise LimitExceeded("MAX_HEAD_BYTES", MAX_HEAD_BYTES, "HTTP response head")
        head = bytes(buf[:idx]).decode("latin-1")
        del buf[: idx + 4]
        return _parse_head(head)

    def _read_body(self, resp: HttpResponse) -> None:
        buf = self.buf
        if "chunked" in resp.headers.get("transfer-encoding", "").lower():
            resp.body = self._read_chunked()
        elif "content-length" in resp.headers:
            text = resp.headers["content-length"]
            if not (text.isascii() and text.isdigit()):  # int() would take "+5", " 5", "5_0"
                raise TransportError("protocol_error", f"bad Content-Length {text[:30]!r}")
            n = int(text)
            if n > MAX_BODY_BYTES:
                raise LimitExceeded("MAX_BODY_BYTES", MAX_BODY_BYTES, f"Content-Length {n}")
            while len(buf) < n:
                self._fill(True)
            resp.body = bytes(buf[:n])
            del buf[:n]
        else:  # body runs to the end of the connection
            resp.keep_alive = False
            while True:
                try:
                    self._fill(True)
                except _Eof:
                    break
                if len(buf) > MAX_BODY_BYTES:
                    raise LimitExceeded("MAX_BODY_BYTES", MAX_BODY_BYTES, "HTTP body (read to close)")
            resp.body = bytes(buf)
            buf.clear()

    def _read_line(self, limit: int, limit_name: str, what: str) -> bytes:
        """One CRLF-terminated line of at most `limit` bytes, CRLF removed."""
        buf = self.buf
        start = 0
        while (i := buf.find(b"\r\n", start)) < 0:
            if len(buf) > limit:
                raise LimitExceeded(limit_name, limit, what)
            start = max(0, len(buf) - 1)
            self._fill(True)
        if i > limit:
            raise LimitExceeded(limit_name, limit, what)
        line = bytes(buf[:i])
        del buf[: i + 2]
        return line

    def _read_chunked(self) -> bytes:
        buf = self.buf
        out = bytearray()
        while True:
            line = self._read_line(MAX_CHUNK_LINE_BYTES, "MAX_CHUNK_LINE_BYTES", "chunk-size line")
            text = line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(text):  # int(x, 16) would take "-5", "0x5", "+5", "5_0"
                raise TransportError("protocol_error", f"bad chunk size {text[:20]!r}")
            size = int(text, 16)
            if size == 0:
                self._skip_trailer()
                return bytes(out)
            if len(out) + size > MAX_BODY_BYTES:
                raise LimitExceeded("MAX_BODY_BYTES", MAX_BODY_BYTES, "chunked HTTP body")
            while len(buf) < size + 2:
                self._fill(True)
            if buf[size : size + 2] != b"\r\n":
                raise TransportError("protocol_error", "chunk data not followed by CRLF")
            out += buf[:size]
            del buf[: size + 2]

    def _skip_trailer(self) -> None:
        """Trailer fields until an empty line, at most MAX_TRAILER_BYTES in all (they carry
        nothing Engine.IO uses, so they are dropped)."""
        left = MAX_TRAILER_BYTES
        while line := self._read_line(left, "MAX_TRAILER_BYTES", "chunked trailer"):
            left -= len(line) + 2
            if left < 0:
                raise LimitExceeded("MAX_TRAILER_BYTES", MAX_TRAILER_BYTES, "chunked trailer")


def _parse_head(head: str) -> HttpResponse:
    # RFC 9110 5.5: CR, LF or NUL inside a field value must be rejected (or replaced); a bare LF
    # is a line break to some parsers and not to others -- the stuff of header injection.
    n_crlf = head.count("\r\n")
    if head.count("\r") != n_crlf or head.count("\n") != n_crlf or "\x00" in head:
        raise TransportError("protocol_error", "HTTP response head with a bare CR, LF or NUL")
    lines = head.split("\r\n")
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise LimitExceeded("MAX_HEADER_LINES", MAX_HEADER_LINES, f"{len(lines) - 1} header fields", "fields")
    parts = lines[0].split(" ", 2)
    code = parts[1] if len(parts) > 1 else ""
    # isdigit() alone would take latin-1 superscripts ("\xb2"), which int() then refuses
    if not parts[0].startswith("HTTP/1.") or len(code) != 3 or not code.isascii() or not code.isdigit():
        raise TransportError("protocol_error", f"not an HTTP response: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise TransportError("protocol_error", f"bad HTTP header line {line[:60]!r}")
        name = name.strip().lower()
        value = value.strip()
        if name == "set-cookie":
            cookies.append(value)
        elif name in headers:
            headers[name] += ", " + value
        else:
            headers[name] = value
    keep = parts[0] != "HTTP/1.0" and "close" not in headers.get("connection", "").lower()
    return HttpResponse(int(code), parts[2] if len(parts) > 2 else "", headers, b"", cookies, keep)


def _safe_target(target: str) -> bool:
    """True when `target` can go into a request line as is: printable ASCII without space.

    The protocol core percent-encodes every server value it puts in a query; this is the last
    guard, so that nothing a server chose can end the request line or start a header.
    """
    return target.isascii() and target.isprintable() and " " not in target


class HttpSession:
    """A browser-like HTTP agent for one virtual user and one origin."""

    def __init__(
        self,
        endpoint: Endpoint,
        timeout: float = 10.0,
        source_ip: str | None = None,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 6,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.source_ip = source_ip
        self.tls = tls
        self.cookies = CookieJar()
        self._idle: list[HttpConnection] = []
        self._busy: set[HttpConnection] = set()
        self._slots = Semaphore(max_connections)
        self._closed = False
        self.connections_opened = 0
        fixed = f"Host: {endpoint.host_header}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
        for k, v in (extra_headers or {}).items():
            fixed += f"{k}: {v}\r\n"
        self._fixed = fixed

    def request(
        self, method: str, target: str, body: bytes = b"", timeout: float | None = None,
        content_type: str | None = None,
    ) -> HttpResponse:
        """One request on a free keep-alive connection; a classified TransportError on failure."""
        def send(deadline: float) -> HttpResponse:
            with self._slots:
                return self._request(method, target, body, content_type, deadline)

        return self._bounded(method, timeout, send)

    def _bounded(self, method: str, timeout: float | None, send: Callable[[float], HttpResponse]) -> HttpResponse:
        """send(deadline) under the request's whole-time bound: its gevent.Timeout becomes a `timeout` TransportError
        (a Timeout that is not ours propagates); one rule for this session and the pooled one."""
        if self._closed:
            raise TransportError("transport_closed", "HTTP session closed")
        seconds = timeout if timeout is not None else self.timeout
        timer = gevent.Timeout(seconds)
        timer.start()
        try:
            return send(time.monotonic() + seconds)
        except gevent.Timeout as t:
            if t is not timer:
                raise
            raise TransportError("timeout", f"{method} no response within {timer.seconds:g}s") from None
        finally:
            timer.close()

    def _raw(self, method: str, target: str, body: bytes, content_type: str | None) -> bytes:
        """The request's bytes (head with the jar's cookies, then the body), or protocol_error."""
        if not _safe_target(target):
            raise TransportError("protocol_error", f"{method}: request target with a character a URL cannot "
                                                   f"carry raw: {target[:80]!r}")
        head = f"{method} {self.endpoint.prefix}{target} HTTP/1.1\r\n{self._fixed}"
        if self.cookies:
            head += f"Cookie: {self.cookies.header()}\r\n"
        if method == "POST":
            # EIO3 binary payloads must go as application/octet-stream (the core says which)
            head += f"Content-Type: {content_type or 'text/plain;charset=UTF-8'}\r\nContent-Length: {len(body)}\r\n"
        try:  # cookie values are the server's latin-1 bytes back; anything else cannot be sent
            return (head + "\r\n").encode("latin-1") + body
        except UnicodeEncodeError as e:
            raise TransportError("protocol_error", f"{method}: request head not encodable: {e}") from None

    def _request(self, method: str, target: str, body: bytes, content_type: str | None,
                 deadline: float) -> HttpResponse:
        raw = self._raw(method, target, body, content_type)
        for attempt in (0, 1):
            conn = self._take()
            reused = conn.uses > 0
            done = False
            self._busy.add(conn)
            try:
                resp = conn.roundtrip(raw, method == "HEAD", deadline)
                done = True
            except _Eof as e:
                if reused and not e.got_bytes and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: retry once, as browsers do
                raise TransportError(
                    "transport_closed", f"{method}: server closed the connection mid-response"
                ) from None
            except TransportError:
                raise
            except (OSError, ssl.SSLError, TimeoutError) as e:
                if self._closed:
                    raise TransportError("transport_closed", "HTTP session closed") from None
                raise classify_os_error(e, method) from None
            except Exception as e:  # noqa: BLE001 - the last net: a reader bug must not kill a user greenlet
                raise TransportError("protocol_error", f"{method}: {type(e).__name__}: {e}") from None
            finally:
                self._busy.discard(conn)
                if not done:
                    conn.close()
            if resp.set_cookie:
                self.cookies.update(resp.set_cookie)
            if resp.keep_alive and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
            return resp
        raise AssertionError("unreachable")

    def _take(self) -> HttpConnection:
        if self._idle:
            return self._idle.pop()
        sock = open_socket(self.endpoint, self.timeout, self.source_ip, self.tls)
        self.connections_opened += 1
        if self._closed:
            sock.close()
            raise TransportError("transport_closed", "HTTP session closed")
        return HttpConnection(sock)

    def close(self) -> None:
        """Close every connection, waking any request parked on one with transport_closed."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.close()

    def sockets(self) -> list[Any]:
        """The sockets of the connections open now (idle or carrying a request)."""
        return [c.sock for c in (*self._idle, *self._busy)]

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)

    @property
    def protocol(self) -> str:
        """What the requests ride: HTTP/1.1 (the Node.js client offers no ALPN; the browser pool may say h2)."""
        return "http/1.1"
