"""gevent I/O for the sans-IO core: keep-alive HTTP/1.1 (polling) and WebSocket clients.

Both are small hand-written clients over gevent sockets: benchmarks/transports.py compares
them with geventhttpclient, websocket-client and wsproto (see its docstring for the figures).
"""

from locustfiles.sio.transport.errors import TransportError
from locustfiles.sio.transport.http import HttpResponse, HttpSession
from locustfiles.sio.transport.net import Endpoint, parse_source_range, tls_context
from locustfiles.sio.transport.websocket import WebSocket

__all__ = [
    "Endpoint",
    "HttpResponse",
    "HttpSession",
    "TransportError",
    "WebSocket",
    "parse_source_range",
    "tls_context",
]
