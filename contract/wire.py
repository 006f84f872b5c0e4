"""Wire constants and shared defaults, each defined once (stdlib only, imports nothing).

The reference servers (targets/) set them, the client (locustfiles/) reads them, the config
schema and the analysis use the same defaults.
"""

from __future__ import annotations

NODE_HEADER = "x-served-by"
"""Response header carrying the backend node id; set by the reference servers, read by the client.
Lower case: the client's HTTP layer lower-cases response header names."""
NODE_COOKIE = "SIOSCALE_NODE"
"""HAProxy's sticky cookie; its value is the node id (rendered by targets, read by the client)."""
USER_HEADER = "X-SIO-User"
"""Request header with the user's own id (--sio-user-header), hashed by nginx's header-hash policy
(`hash $http_x_sio_user consistent`, the pattern of ingress-nginx's upstream-hash-by)."""
CADDY_COOKIE = "lb"
"""Caddy's sticky cookie (an opaque hash of the upstream, not the node id)."""
TRAEFIK_COOKIE = "SIOSCALE_TRAEFIK"
"""Traefik's sticky cookie as sioscale names it (Traefik's own default name is a hash of the service name).
Its value is the first 16 hex digits of SHA-256 of the server URL (Traefik >= 3.3.4), so the client records
`traefik:<value>` and the analysis maps it back to the node with the cluster's `node_labels` (meta.json)."""
TRAEFIK_LABEL = "traefik:"
"""The prefix of a node label read from Traefik's cookie (see TRAEFIK_COOKIE)."""

DEFAULT_TRANSPORTS: tuple[str, ...] = ("polling", "websocket")
"""socket.io-client's default `transports`: HTTP long-polling first, then the WebSocket upgrade."""

GENERATOR_SATURATED_PERCENT = 90.0
"""A Locust process at or above this CPU % is saturated: Locust's own warning threshold
(locust.runners.CPU_WARNING_THRESHOLD, which tests/unit/test_generator_cpu.py compares)."""

PING_INTERVAL_S = 25.0
"""The reference servers' Engine.IO pingInterval unless a cluster sets `ping_interval` (socket.io's default)."""
PING_TIMEOUT_S = 20.0
"""The reference servers' pingTimeout (socket.io's default)."""
