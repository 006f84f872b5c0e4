"""What the sans-IO client core asks its driver to do, and what it reports.

The core (`client.ClientProtocol`) never touches a socket or a clock: every input method
returns a list of these actions, in the order the driver must carry them out. Keeping the
I/O requests and the measurements in one ordered list means the driver needs no knowledge
of the protocol to stay browser-faithful, and tests can assert the exact request sequence.

Driver obligations, per action:
- `HttpRequest`: send `<method> <base_url><path>?<query>` with `body` (and `Content-Type:
  content_type` when not None), then call `ClientProtocol.http_response(rid, ...)` or
  `http_failed(rid, ...)` exactly once. At most one "poll"/"handshake" GET and one "post" POST
  are outstanding per session, so two keep-alive connections suffice (as in a browser).
- `OpenWebSocket`: open `ws(s)://<host><path>?<query>`, then `ws_opened` or `ws_failed`;
  afterwards every frame → `ws_message`, and the end → `ws_closed`. One WebSocket per session.
- `WsSend`: send one frame (text if `data` is str, binary if bytes).
- `CloseWebSocket` / `CancelPolling`: drop the WebSocket / abort any outstanding polling
  request of this session. Results for aborted requests may still be reported; they are ignored.
- `StepResult`: a measured step → one Locust request event + one event row (rows.STEPS).
- `Connected`, `EventReceived`, `AckReceived`, `AckFailed`, `Closed`: application events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class HttpRequest:
    rid: int  # request id, echoed back in http_response/http_failed
    method: str  # "GET" | "POST"
    query: str  # the whole query string, e.g. "EIO=4&transport=polling&sid=abc&t=Pq2xk9a"
    body: bytes | None  # POST body (already encoded payload); None for GET
    content_type: str | None  # "text/plain;charset=UTF-8" | "application/octet-stream" | None
    purpose: str  # "handshake" | "poll" | "post"


@dataclass(slots=True, frozen=True)
class OpenWebSocket:
    query: str  # e.g. "EIO=4&transport=websocket&sid=abc" (no sid in websocket-only mode)
    purpose: str  # "probe" (upgrade from polling) | "websocket" (websocket-only session)


@dataclass(slots=True, frozen=True)
class WsSend:
    data: str | bytes


@dataclass(slots=True, frozen=True)
class CloseWebSocket:
    pass


@dataclass(slots=True, frozen=True)
class CancelPolling:
    pass


@dataclass(slots=True, frozen=True)
class StepResult:
    """One measured client step.

    `latency_ms` is None where the step has no duration. `error_kind` is one of
    rows.ERROR_KINDS or "http_<status>", "" when ok. `node_switch` steps are reported with
    ok=True and error="n1->n2" (the rows contract): the switch is an observation; the request
    that hit the wrong node is reported separately with its own failure (usually
    session_unknown). `ack_id` ties "ack" steps (and steps named by `emit(step=...)`) to the
    id `emit` returned.
    """

    step: str
    ok: bool
    latency_ms: float | None
    transport: str  # "polling" | "websocket" | ""
    node: str
    error_kind: str
    error: str
    name: str
    ack_id: int | None = None


@dataclass(slots=True, frozen=True)
class Connected:
    namespace: str
    sid: str  # the Socket.IO sid (EIO4: from 40{"sid"}; EIO3: the Engine.IO sid, "/nsp#sid" off "/")


@dataclass(slots=True, frozen=True)
class EventReceived:
    namespace: str
    event: str
    args: list[Any]  # binary attachments already reconstructed as bytes; a recovery offset taken off
    ack_id: int | None  # not None: the server waits for `ClientProtocol.send_ack(ack_id, ...)`
    offset: str | None = None  # the connection-state recovery offset the server appended (recovery.py)
    replayed: bool = False  # arrived before the CONNECT reply: a recovered session's missed packet


@dataclass(slots=True, frozen=True)
class AckReceived:
    namespace: str
    ack_id: int
    args: list[Any]


@dataclass(slots=True, frozen=True)
class AckFailed:
    """An ack that will never come: timed out, or the session closed first (then error_kind
    is the close's kind, or "transport_closed" for a clean client disconnect)."""

    namespace: str
    ack_id: int
    error_kind: str
    error: str


@dataclass(slots=True, frozen=True)
class Closed:
    """The session is over; the core ignores all further input.

    reason follows socket.io-client's disconnect reasons ("io client disconnect", "io server
    disconnect", "ping timeout", "transport close", "transport error") plus "connect error"
    when the session never connected. error_kind is "" only for a clean client disconnect.
    """

    reason: str
    error_kind: str
    error: str = ""


Action = (
    HttpRequest
    | OpenWebSocket
    | WsSend
    | CloseWebSocket
    | CancelPolling
    | StepResult
    | Connected
    | EventReceived
    | AckReceived
    | AckFailed
    | Closed
)
