"""One exception type for every I/O failure, already classified with a rows.ERROR_KINDS kind."""

from __future__ import annotations

import errno
import ssl

import gevent


class TransportError(Exception):
    """An I/O failure whose `kind` is one of rows.ERROR_KINDS (or http_<status>).

    The message starts with the kind so Locust's failure table groups by it.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


class LimitExceeded(TransportError):
    """A server sent more than one of the readers' named bounds allows (issue 9: bound every
    read). Kind protocol_error: the peer broke the protocol's size expectations; the message
    names the limit (e.g. "MAX_TRAILER_BYTES = 16384 bytes") so the failure table says which."""

    def __init__(self, limit_name: str, limit: int, what: str, unit: str = "bytes") -> None:
        self.limit_name = limit_name
        self.limit = limit
        super().__init__("protocol_error", f"{what} exceeds {limit_name} = {limit} {unit}")


def classify_os_error(exc: BaseException, during: str) -> TransportError:
    """Map a socket-level exception to a classified TransportError."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, gevent.Timeout | TimeoutError):
        return TransportError("timeout", f"{during}: no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return TransportError("connection_refused", f"{during}: {exc.strerror or exc}")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return TransportError("connection_reset", f"{during}: {exc.strerror or exc}")
    if isinstance(exc, ssl.SSLError):
        return TransportError("protocol_error", f"{during}: TLS: {exc}")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ECONNREFUSED,):
            return TransportError("connection_refused", f"{during}: {exc.strerror}")
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return TransportError("connection_reset", f"{during}: {exc.strerror}")
        if exc.errno in (errno.ETIMEDOUT,):
            return TransportError("timeout", f"{during}: {exc.strerror}")
        return TransportError("transport_closed", f"{during}: {exc.strerror or exc}")
    return TransportError("protocol_error", f"{during}: {type(exc).__name__}: {exc}")
