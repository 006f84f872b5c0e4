"""Opening TCP/TLS connections the way each virtual user needs them.

Why hand-written: source-address spreading (one loopback IP per user, so source-IP stickiness
can be tested and the ~28k ephemeral ports per source IP stop being the limit) and TLS
opt-outs must apply identically to polling and WebSocket sockets.
"""

from __future__ import annotations

import functools
import ipaddress
import socket as _stdsocket
from dataclasses import dataclass
from urllib.parse import urlsplit

import gevent
from gevent import socket, ssl

from contract.config import ConfigError, source_range_bounds
from locustfiles.sio.transport.errors import TransportError, classify_os_error


@dataclass(frozen=True)
class Endpoint:
    """Where a user connects: parsed once from the target URL."""

    host: str
    port: int
    tls: bool
    host_header: str  # Host header value (host[:port] as in the URL)
    prefix: str  # path before the Engine.IO path, normally ""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        # Parsed once per URL and process (frozen, so sessions may share it): urlsplit per
        # session was measurable on the connect path.
        ep = _endpoints.get(url)
        if ep is None:
            ep = _endpoints[url] = cls._parse(url)
        return ep

    @classmethod
    def _parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        scheme = (parts.scheme or "http").lower()
        if scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"target URL {url!r}: scheme must be http, https, ws or wss")
        if not parts.hostname:
            raise ValueError(f"target URL {url!r}: no host")
        tls = scheme in ("https", "wss")
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, tls, parts.netloc, parts.path.rstrip("/"))


_endpoints: dict[str, Endpoint] = {}


def send_all(sock, data: bytes) -> None:  # sock: a gevent socket or SSLSocket
    """`sock.sendall(data)` for the small writes of this client, with less work per call.

    Why: gevent's sendall asks the kernel for SO_SNDBUF on every call (one extra syscall) and
    goes through three Python layers; a request or a frame fits the socket buffer, so one
    send() normally takes it all. Whatever it did not take goes through sendall as before.
    """
    n = sock.send(data)
    if n < len(data):
        sock.sendall(memoryview(data)[n:])


def tls_context(ca_file: str = "", insecure: bool = False) -> ssl.SSLContext:
    """Verifying context (system CAs or `ca_file`); verification off only when asked explicitly."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


_alpn_contexts: dict[tuple[int, tuple[str, ...]], tuple[ssl.SSLContext | None, ssl.SSLContext]] = {}


def alpn_context(ctx: ssl.SSLContext | None, protocols: tuple[str, ...]) -> ssl.SSLContext:
    """A context that verifies as `ctx` does (its CA certificates, hostname check, verify mode)
    and offers `protocols` by ALPN; made once per context and protocol list.

    Why a copy: the user's context is shared with its WebSockets, which Chromium opens with
    ALPN http/1.1 only; setting h2 on it would offer h2 to the WebSocket's balancer as well."""
    key = (id(ctx), protocols)
    hit = _alpn_contexts.get(key)
    if hit is not None and hit[0] is ctx:
        return hit[1]
    base = ctx or tls_context()
    new = ssl.create_default_context()
    certs = base.get_ca_certs(binary_form=True)
    if certs:
        new.load_verify_locations(cadata=b"".join(certs))
    new.check_hostname = base.check_hostname
    new.verify_mode = base.verify_mode
    new.set_alpn_protocols(list(protocols))
    _alpn_contexts[key] = (ctx, new)  # ctx kept alive with it, so its id cannot be reused
    return new


def parse_source_range(text: str) -> list[str]:
    """'127.0.0.2-127.0.0.254' (or one address) → the addresses in the order users take them; loopback only.

    The rules are contract.config's (source_range_bounds), the ones `sioscale run`, campaign
    cells and `--dry-run` check before any load: one definition, so the two can never disagree.
    A range over several /24s is dealt out one /24 at a time (127.0.1.1, 127.0.2.1, ...,
    127.0.1.2, ...): nginx's ip_hash keys on the first three octets only, so ten users on
    127.0.1.1-10 would all be one client to it. Parsed once per text (every connect asks).
    """
    return list(_source_addresses((text or "").strip()))


@functools.lru_cache(maxsize=4)
def _source_addresses(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        lo, hi = source_range_bounds(text)
    except ConfigError as e:
        raise ValueError(f"--sio-source-range: {e}") from None
    blocks: dict[int, list[int]] = {}
    for i in range(int(lo), int(hi) + 1):
        blocks.setdefault(i >> 8, []).append(i)
    rows = list(blocks.values())
    order = [row[k] for k in range(max(len(r) for r in rows)) for row in rows if k < len(row)]
    return tuple(str(ipaddress.IPv4Address(i)) for i in order)


_resolved: dict[tuple[str, int], tuple[int, tuple]] = {}


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    """Address of host:port, resolved once per process.

    Why: gevent resolves names in a thread pool, which cost more CPU than the whole connect
    in benchmarks/client.py; targets are a handful of fixed local addresses.
    """
    key = (host, port)
    hit = _resolved.get(key)
    if hit is None:
        try:
            ip = ipaddress.ip_address(host)
            hit = (_stdsocket.AF_INET6 if ip.version == 6 else _stdsocket.AF_INET, (host, port))
        except ValueError:
            info = socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM)
            hit = (info[0][0], info[0][4])
        _resolved[key] = hit
    return hit


def open_socket(
    ep: Endpoint,
    timeout: float,
    source_ip: str | None = None,
    ctx: ssl.SSLContext | None = None,
) -> socket.socket:
    """Connected (and TLS-wrapped for https/wss) gevent socket, or a classified TransportError.

    The connect (and TLS handshake) is bounded by one gevent timer raising TimeoutError, not
    by `settimeout`: a socket timeout costs two settimeout calls plus one timer per connect and
    another per wait inside it, on every connection of every handshake. The socket is left
    without a timeout; later waits are bounded by the caller's timer.
    """
    sock = None
    timer = gevent.Timeout(timeout, TimeoutError("timed out"))
    timer.start()
    try:
        family, addr = _resolve(ep.host, ep.port)
        sock = socket.socket(family, _stdsocket.SOCK_STREAM)
        if source_ip:
            sock.bind((source_ip, 0))
        sock.connect(addr)
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        if ep.tls:
            sock = (ctx or tls_context()).wrap_socket(sock, server_hostname=ep.host)
        return sock
    except BaseException as e:  # classify everything, re-raise as TransportError
        if sock is not None:
            sock.close()
        if isinstance(e, TransportError | OSError | ssl.SSLError | TimeoutError):
            raise classify_os_error(e, "connect") from None
        raise
    finally:
        timer.close()
