"""Readiness probes: is a node (or the balancer in front of it) really serving Engine.IO?

A listening port is not enough -- uvicorn binds before the app is importable, and a balancer
answers 503 while its backends are down -- so a part counts as up only when an Engine.IO
polling handshake through it returns an open packet. The probe closes the session it opened
so readiness checks leave no half-open sessions on the nodes.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from contract.wire import NODE_HEADER


@dataclass(frozen=True)
class Handshake:
    status: int
    served_by: str | None
    sid: str | None
    body: str


def _connection(url: str, timeout: float, ssl_context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port
    if u.scheme == "https":
        return http.client.HTTPSConnection(host, port or 443, timeout=timeout, context=ssl_context)
    return http.client.HTTPConnection(host, port or 80, timeout=timeout)


def handshake(url: str, timeout: float = 2.0, ssl_context: ssl.SSLContext | None = None,
              close: bool = True) -> Handshake:
    """One Engine.IO v4 polling handshake against `url`; raises OSError when nothing answers."""
    conn = _connection(url, timeout, ssl_context)
    try:
        conn.request("GET", "/socket.io/?EIO=4&transport=polling")
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        served_by = r.getheader(NODE_HEADER)
        cookie = r.getheader("set-cookie")
        sid = None
        if r.status == 200 and body.startswith("0{"):
            try:
                sid = json.loads(body[1:]).get("sid")
            except ValueError:
                sid = None
        if sid and close:
            # Close the session on the node that opened it (the sticky cookie, if any, routes it).
            headers = {"Content-Type": "text/plain;charset=UTF-8"}
            if cookie:
                headers["Cookie"] = cookie.split(";", 1)[0]
            try:
                conn.request("POST", f"/socket.io/?EIO=4&transport=polling&sid={sid}", body=b"1", headers=headers)
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass  # the session then times out on its own; readiness is already proven
        return Handshake(r.status, served_by, sid, body)
    except http.client.HTTPException as e:
        raise OSError(f"bad HTTP answer from {url}: {e!r}") from e
    finally:
        conn.close()


def wait_ready(url: str, timeout: float, ssl_context: ssl.SSLContext | None = None,
               alive=lambda: True) -> Handshake | None:
    """Poll handshake() until it opens a session, `alive()` turns false, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline and alive():
        try:
            h = handshake(url, timeout=min(2.0, max(0.2, deadline - time.monotonic())), ssl_context=ssl_context)
            if h.sid:
                return h
        except OSError:
            pass
        time.sleep(delay)
        delay = min(0.3, delay * 1.5)
    return None


def wait_every_node(url: str, nodes: set[str], timeout: float, ssl_context: ssl.SSLContext | None = None,
                    alive=lambda: True) -> set[str]:
    """Handshake through a balancer until each of `nodes` has answered one (by its node header); the ones
    that never did within `timeout` (empty: all did).

    Why: a balancer that answers is not yet one that reaches every backend (Traefik's health check and
    config load are asynchronous); each handshake is a new connection, so L4 balancers decide anew too.
    """
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline and alive() and not nodes <= seen:
        try:
            h = handshake(url, timeout=min(2.0, max(0.2, deadline - time.monotonic())), ssl_context=ssl_context)
            if h.sid and h.served_by:
                seen.add(h.served_by)
                continue
        except OSError:
            pass
        time.sleep(0.05)
    return nodes - seen


@dataclass
class Upgrade:
    """The answer to a WebSocket upgrade request; `conn` stays open when the upgrade succeeded."""

    status: int
    served_by: str | None
    headers: dict[str, str]
    body: str
    conn: http.client.HTTPConnection | None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def ws_upgrade(url: str, query: str = "EIO=4&transport=websocket", source: str | None = None,
               headers: dict[str, str] | None = None, timeout: float = 5.0,
               ssl_context: ssl.SSLContext | None = None, keep_open: bool = False) -> Upgrade:
    """Send one raw WebSocket upgrade for the Engine.IO endpoint and read the status line + headers.

    Raw on purpose: it lets a test pick the source address (source-hash policies), send a
    sticky cookie by hand, and see refusals (400/403) that WebSocket libraries turn into
    exceptions. With keep_open the connection is held (for leastconn); otherwise closed.
    """
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
    src = (source, 0) if source else None
    conn: http.client.HTTPConnection
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context, source_address=src)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout, source_address=src)
    h = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        **(headers or {}),
    }
    try:
        conn.request("GET", f"/socket.io/?{query}", headers=h)
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        body = "" if r.status == 101 else r.read().decode("utf-8", "replace")
    except http.client.HTTPException as e:
        conn.close()
        raise OSError(f"bad HTTP answer from {url}: {e!r}") from e
    except BaseException:
        conn.close()
        raise
    up = Upgrade(r.status, hdrs.get(NODE_HEADER), hdrs, body, conn)
    if not (keep_open and r.status == 101):
        up.close()
    return up
