"""Turn a server's refusal into one of rows.ERROR_KINDS.

Why by hand: the two reference servers word "I do not know this session" differently
(Node engine.io: 400 `{"code":1,"message":"Session ID unknown"}`, or a raw "Session ID
unknown" on a WebSocket upgrade; python-engineio: 400 text/plain `"Invalid session <sid>"`),
and that single answer is the finding sioscale exists to count (docs/protocol.md §3, §5).
"""

from __future__ import annotations

import json

_UNKNOWN_SESSION_TEXTS = ("session id unknown", "invalid session", "session is disconnected")


def body_text(body: bytes, limit: int = 200) -> str:
    """A short printable excerpt of a response body for error messages."""
    text = body[:limit].decode("utf-8", "replace")
    return " ".join(text.split())


def is_session_unknown(status: int | None, body: bytes) -> bool:
    """True when a 400/403 (or bodyful) refusal says the server has no such Engine.IO session."""
    if status not in (400, 403, 404):
        return False
    text = body[:500].decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("code") == 1:  # Node engine.io Errors.UNKNOWN_SID
        return True
    if isinstance(doc, str):  # python-engineio: json.dumps("Invalid session <sid>")
        text = doc
    low = text.lower()
    return any(low.startswith(t) or t in low for t in _UNKNOWN_SESSION_TEXTS)


def classify_http(status: int, body: bytes, *, handshake: bool) -> tuple[str, str]:
    """(error_kind, error) for a non-200 HTTP answer to a polling request."""
    excerpt = body_text(body)
    error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if not handshake and is_session_unknown(status, body):
        return "session_unknown", error
    if handshake and status in (400, 403):
        return "handshake_rejected", error
    return f"http_{status}", error
