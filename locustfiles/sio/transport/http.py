"""Keep-alive HTTP/1.1 client for Engine.IO long-polling, one `HttpSession` per virtual user.

Why hand-written rather than geventhttpclient: a browser's polling needs a per-user cookie jar,
up to 6 keep-alive connections per host (a parked long-poll GET and a POST travel on two),
per-user source addresses and a cancellable parked GET; on the polling pattern the minimal
client below was also faster per CPU-second (benchmarks/transports.py has the comparison).
It speaks only what Engine.IO servers and balancers answer: Content-Length, chunked, or
read-to-close bodies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gevent
from gevent import ssl
from gevent.lock import Semaphore

from locustfiles.sio.transport.cookies import CookieJar
from locustfiles.sio.transport.errors import TransportError, classify_os_error
from locustfiles.sio.transport.net import Endpoint, open_socket, send_all

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) sioscale/0.1"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", " (except set-cookie)
    body: bytes
    set_cookie: list[str] = field(default_factory=list)
    keep_alive: bool = True


class _Eof(Exception):
    """The peer closed the connection; `got_bytes` says whether any of the response arrived."""

    def __init__(self, got_bytes: bool) -> None:
        self.got_bytes = got_bytes


class HttpConnection:
    """One keep-alive TCP (or TLS) connection with a read buffer."""

    __slots__ = ("sock", "buf", "uses")

    def __init__(self, sock) -> None:  # noqa: ANN001 - gevent socket or SSLSocket
        self.sock = sock
        self.buf = bytearray()
        self.uses = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, got: bool) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _Eof(got)
        self.buf += data

    def roundtrip(self, request: bytes, head_only: bool) -> HttpResponse:
        self.uses += 1
        send_all(self.sock, request)
        buf = self.buf
        while True:
            idx = buf.find(b"\r\n\r\n")
            if idx >= 0:
                break
            if len(buf) > MAX_HEADER_BYTES:
                raise TransportError("protocol_error", "HTTP response headers longer than 64 KiB")
            self._fill(bool(buf))
        head = bytes(buf[:idx]).decode("latin-1")
        del buf[: idx + 4]
        resp = _parse_head(head)
        status = resp.status
        if head_only or status in (204, 304) or 100 <= status < 200:
            return resp
        te = resp.headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            resp.body = self._read_chunked()
        elif "content-length" in resp.headers:
            try:
                n = int(resp.headers["content-length"])
            except ValueError:
                raise TransportError("protocol_error", "bad Content-Length") from None
            if n < 0 or n > MAX_BODY_BYTES:
                raise TransportError("protocol_error", f"Content-Length {n} out of range")
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
                    raise TransportError("protocol_error", "HTTP body larger than 16 MiB")
            resp.body = bytes(buf)
            buf.clear()
        return resp

    def _read_chunked(self) -> bytes:
        buf = self.buf
        out = bytearray()
        while True:
            while (i := buf.find(b"\r\n")) < 0:
                if len(buf) > 1024:
                    raise TransportError("protocol_error", "bad chunk size line")
                self._fill(True)
            try:
                size = int(bytes(buf[:i]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise TransportError("protocol_error", "bad chunk size") from None
            del buf[: i + 2]
            if size == 0:  # trailers until an empty line
                while True:
                    while (i := buf.find(b"\r\n")) < 0:
                        self._fill(True)
                    line = buf[:i]
                    del buf[: i + 2]
                    if not line:
                        return bytes(out)
            if len(out) + size > MAX_BODY_BYTES:
                raise TransportError("protocol_error", "HTTP body larger than 16 MiB")
            while len(buf) < size + 2:
                self._fill(True)
            out += buf[:size]
            del buf[: size + 2]


def _parse_head(head: str) -> HttpResponse:
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
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
    return HttpResponse(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, b"", cookies, keep)


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
        if self._closed:
            raise TransportError("transport_closed", "HTTP session closed")
        timer = gevent.Timeout(timeout if timeout is not None else self.timeout)
        timer.start()
        try:
            with self._slots:
                return self._request(method, target, body, content_type)
        except gevent.Timeout as t:
            if t is not timer:
                raise
            raise TransportError("timeout", f"{method} no response within {timer.seconds:g}s") from None
        finally:
            timer.close()

    def _request(self, method: str, target: str, body: bytes, content_type: str | None = None) -> HttpResponse:
        head = f"{method} {self.endpoint.prefix}{target} HTTP/1.1\r\n{self._fixed}"
        if self.cookies:
            head += f"Cookie: {self.cookies.header()}\r\n"
        if method == "POST":
            # EIO3 binary payloads must go as application/octet-stream (the core says which)
            head += f"Content-Type: {content_type or 'text/plain;charset=UTF-8'}\r\nContent-Length: {len(body)}\r\n"
        raw = (head + "\r\n").encode("latin-1") + body
        for attempt in (0, 1):
            conn = self._take()
            reused = conn.uses > 0
            done = False
            self._busy.add(conn)
            try:
                resp = conn.roundtrip(raw, method == "HEAD")
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

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)
