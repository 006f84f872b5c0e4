"""The thin gevent driver of one HTTP/2 connection (transport/h2codec.py holds its rules).

One reader greenlet per connection feeds the server's bytes to the codec and hands each finished
stream to the request waiting for it; requests write under one lock. The reads go through
`HttpConnection._fill`, so an HTTP/2 connection yields to the hub as the HTTP/1.1 reader does.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent
from gevent import ssl
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from locustfiles.sio.transport.errors import TransportError, classify_os_error
from locustfiles.sio.transport.h2codec import GoAway, H2Codec, Response, StreamFailed
from locustfiles.sio.transport.http import HttpConnection, HttpResponse, _Eof


class H2Retry(TransportError):
    """The stream was not processed by the server (GOAWAY, REFUSED_STREAM, the connection ended
    before an answer): the pool may send the request again."""


class H2Link:
    """An open HTTP/2 connection; `request` from any greenlet, one stream each."""

    def __init__(self, sock, on_goaway: Callable[[], None], on_closed: Callable[[], None]) -> None:
        self._conn = HttpConnection(sock)  # the socket and the cooperative reader
        self.codec = H2Codec()
        self._waiting: dict[int, AsyncResult] = {}
        self._lock = Semaphore()
        self._on_goaway, self._on_closed = on_goaway, on_closed
        self.closed = False
        self._reader: gevent.Greenlet | None = None
        self._send()
        self._reader = gevent.spawn(self._read)

    def request(self, method: str, authority: str, path: str, headers: list[tuple[str, str]],
                body: bytes = b"") -> HttpResponse:
        """One request as a stream; its response, or a TransportError (H2Retry: not processed).
        The caller's timer bounds the wait; a timed-out stream is reset."""
        if self.closed:
            raise H2Retry("transport_closed", "HTTP/2 connection closed")
        sid = self.codec.request(method, authority, path, headers, body)
        result = self._waiting[sid] = AsyncResult()
        try:
            self._send()
            return result.get()
        except BaseException:
            if not result.ready():
                self.codec.cancel(sid)
                self._send(quiet=True)
            raise
        finally:
            self._waiting.pop(sid, None)

    def close(self) -> None:
        """Close the connection; streams in flight fail with transport_closed."""
        if not self.closed:
            self._lost("transport_closed", "HTTP session closed")

    # -- internals -------------------------------------------------------------------------------
    def _send(self, quiet: bool = False) -> None:
        data = self.codec.data_to_send()
        if not data or self.closed:
            return
        try:
            with self._lock:
                self._conn.sock.sendall(data)
        except (OSError, ssl.SSLError) as e:
            if not quiet:
                self._lost_error(e)
                raise classify_os_error(e, "HTTP/2 send") from None

    def _read(self) -> None:
        conn = self._conn
        try:
            while not self.closed:
                conn._fill(True)
                data = bytes(conn.buf)
                conn.buf.clear()
                for r in self.codec.receive(data):
                    self._deliver(r)
                self._send(quiet=True)
                if self.codec.goaway is not None and not self.codec.streams:
                    # Chromium closes a going-away session once its last stream ends
                    self._lost("transport_closed", "HTTP/2 GOAWAY and no stream left")
        except _Eof:
            self._lost("transport_closed", "server closed the HTTP/2 connection")
        except TransportError as e:
            self._lost(e.kind, e.detail or str(e))
        except (OSError, ssl.SSLError) as e:
            self._lost_error(e)

    def _deliver(self, r: Response | StreamFailed | GoAway) -> None:
        if isinstance(r, GoAway):
            self._on_goaway()
            return
        w = self._waiting.get(r.sid)
        if w is None:
            return
        if isinstance(r, Response):
            w.set(r.response)
        else:
            w.set_exception((H2Retry if r.unprocessed else TransportError)(r.kind, r.detail))

    def _lost_error(self, e: BaseException) -> None:
        err = classify_os_error(e, "HTTP/2")
        self._lost(err.kind, err.detail or str(err))

    def _lost(self, kind: str, detail: str) -> None:
        """The connection is over: every stream fails, the socket closes, the pool is told once."""
        if self.closed:
            return
        self.closed = True
        for f in self.codec.lost(kind, detail):
            self._deliver(f)
        self._conn.close()
        if self._reader is not None and self._reader is not gevent.getcurrent():
            self._reader.kill(block=False)
        self._on_closed()
