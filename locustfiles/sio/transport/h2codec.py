"""One client HTTP/2 connection's framing, sans-IO: requests in, responses out (issue 13).

Why its own layer: `h2.connection.H2Connection` is itself sans-IO (bytes in, events and bytes
out); this class turns its events into what the browser pool needs -- a whole `HttpResponse`
per stream, a failure per stream that says whether the request may be sent again, and GOAWAY --
with the same bounds as the HTTP/1.1 reader (a body past MAX_BODY_BYTES resets its stream).
The gevent side (transport/h2link.py) only moves bytes.

Settings as Chromium sends them (net/http/http_network_session.cc, net/spdy/spdy_session.cc):
HEADER_TABLE_SIZE 65536, ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 6 MiB, MAX_HEADER_LIST_SIZE
256 KiB, and a connection WINDOW_UPDATE to 15 MiB; request headers in Chromium's order
(:method, :authority, :scheme, :path, then the rest, lower-case).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from locustfiles.sio.transport.errors import TransportError
from locustfiles.sio.transport.http import MAX_BODY_BYTES, HttpResponse

CHROMIUM_SETTINGS = {
    h2.settings.SettingCodes.HEADER_TABLE_SIZE: 65536,
    h2.settings.SettingCodes.ENABLE_PUSH: 0,
    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 6 * 1024 * 1024,
    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 256 * 1024,
}
CONNECTION_WINDOW = 15 * 1024 * 1024
"""Chromium's session receive window (`kSpdySessionMaxRecvWindowSize`)."""


@dataclass(frozen=True)
class Response:
    """Stream `sid` ended with this response."""

    sid: int
    response: HttpResponse


@dataclass(frozen=True)
class StreamFailed:
    """Stream `sid` ended without a response; `unprocessed`: the server never saw it (GOAWAY
    above its last stream id, REFUSED_STREAM, or the connection ended before any answer), so the
    browser may send it again (`HttpNetworkTransaction::HandleIOError`)."""

    sid: int
    kind: str
    detail: str
    unprocessed: bool


@dataclass(frozen=True)
class GoAway:
    """The server sent GOAWAY: no new streams on this connection."""

    last_stream_id: int
    error_code: int


H2Result = Response | StreamFailed | GoAway


@dataclass
class _Stream:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    set_cookie: list[str] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    pending: memoryview | None = None  # request body not yet sent (flow control)


class H2Codec:
    """A client HTTP/2 connection: `request` → stream id; `receive` → results; `data_to_send`."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=CHROMIUM_SETTINGS)
        # h2 applies a setting to its decoder only when the server acknowledges a change; these
        # are initial values (sent in the first SETTINGS frame), so they hold from the start
        self.conn.decoder.max_allowed_table_size = CHROMIUM_SETTINGS[h2.settings.SettingCodes.HEADER_TABLE_SIZE]
        self.conn.decoder.max_header_list_size = CHROMIUM_SETTINGS[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE]
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.streams: dict[int, _Stream] = {}
        self.goaway: GoAway | None = None
        self.streams_started = 0

    def request(self, method: str, authority: str, path: str, headers: list[tuple[str, str]],
                body: bytes = b"") -> int:
        """Start a stream for one request; its response comes out of `receive`."""
        if self.goaway is not None:
            raise TransportError("transport_closed", "HTTP/2 connection is going away")
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":authority", authority), (":scheme", "https"), (":path", path), *headers]
        try:
            self.conn.send_headers(sid, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head],
                                   end_stream=not body)
        except (UnicodeEncodeError, h2.exceptions.ProtocolError) as e:
            raise TransportError("protocol_error", f"{method}: HTTP/2 request headers refused: {e}") from None
        st = self.streams[sid] = _Stream()
        self.streams_started += 1
        if body:
            st.pending = memoryview(body)
            self._push(sid)
        return sid

    def cancel(self, sid: int) -> None:
        """The request gave up (its deadline): RST_STREAM CANCEL, as Chromium does."""
        if self.streams.pop(sid, None) is not None:
            try:
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.H2Error:
                pass

    def data_to_send(self) -> bytes:
        """The bytes the connection owes the server (requests, acks, window updates) since the last call."""
        return self.conn.data_to_send()

    def receive(self, data: bytes) -> list[H2Result]:
        """Bytes from the server → finished streams, failed streams, GOAWAY. A connection-level
        violation raises TransportError(protocol_error) (the driver fails every stream)."""
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise TransportError("protocol_error", f"HTTP/2: {type(e).__name__}: {e}") from None
        out: list[H2Result] = []
        for ev in events:
            self._on_event(ev, out)
        return out

    def lost(self, kind: str, detail: str) -> list[StreamFailed]:
        """The connection ended: every open stream fails; one without an answer yet may be retried."""
        out = [StreamFailed(sid, kind, detail, st.status == 0) for sid, st in self.streams.items()]
        self.streams.clear()
        return out

    # -- internals -------------------------------------------------------------------------------
    def _on_event(self, ev: h2.events.Event, out: list[H2Result]) -> None:
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid) if sid is not None else None
        if isinstance(ev, h2.events.ResponseReceived) and st is not None:
            self._headers(st, ev.headers or [])
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if st is not None:
                st.body += ev.data or b""
                if len(st.body) > MAX_BODY_BYTES:
                    self.cancel(ev.stream_id)
                    out.append(StreamFailed(ev.stream_id, "protocol_error",
                                            f"HTTP/2 body exceeds MAX_BODY_BYTES ({MAX_BODY_BYTES})", False))
        elif isinstance(ev, h2.events.StreamEnded) and st is not None:
            del self.streams[ev.stream_id]
            out.append(Response(ev.stream_id, HttpResponse(st.status, "", st.headers, bytes(st.body), st.set_cookie)))
        elif isinstance(ev, h2.events.StreamReset) and st is not None:
            del self.streams[ev.stream_id]
            refused = ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
            out.append(StreamFailed(ev.stream_id, "connection_reset",
                                    f"HTTP/2 stream reset by the server ({_code(ev.error_code)})", refused))
        elif isinstance(ev, h2.events.WindowUpdated):
            for s in [ev.stream_id] if ev.stream_id else list(self.streams):
                self._push(s)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._on_goaway(ev, out)

    def _on_goaway(self, ev: h2.events.ConnectionTerminated, out: list[H2Result]) -> None:
        last = ev.last_stream_id if ev.last_stream_id is not None else 0
        self.goaway = GoAway(last, int(ev.error_code or 0))
        out.append(self.goaway)
        for sid in [s for s in self.streams if s > last]:
            del self.streams[sid]
            out.append(StreamFailed(sid, "transport_closed", "HTTP/2 GOAWAY before the server took the stream", True))

    def _headers(self, st: _Stream, headers: list) -> None:
        for k, v in headers:
            name = k.decode("latin-1").lower() if isinstance(k, bytes) else str(k).lower()
            value = v.decode("latin-1") if isinstance(v, bytes) else str(v)
            if name == ":status":
                st.status = int(value)
            elif name == "set-cookie":
                st.set_cookie.append(value)
            elif not name.startswith(":"):
                st.headers[name] = f"{st.headers[name]}, {value}" if name in st.headers else value

    def _push(self, sid: int) -> None:
        """Send as much of a request body as the flow-control windows allow."""
        st = self.streams.get(sid)
        if st is None or st.pending is None:
            return
        while len(st.pending):
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                return
            chunk, st.pending = st.pending[:room], st.pending[room:]
            self.conn.send_data(sid, bytes(chunk), end_stream=not len(st.pending))
        st.pending = None


def _code(code: object) -> str:
    try:
        return h2.errors.ErrorCodes(int(code)).name  # type: ignore[call-overload]
    except (ValueError, TypeError):
        return str(code)
