"""The blip's `silent` mode on the client side: chosen users lose their network without a FIN.

What it emulates: a phone that loses its network. Its TCP connections are not closed (no FIN, no
RST reaches the server) and nothing is answered any more; the browser fires `offline`, on which
engine.io-client ends the session at once ("transport close") and socket.io-client starts its
reconnect backoff, whose attempts fail until the network is back. The server learns of the loss
only at its ping timeout (pingInterval + pingTimeout after the last pong), and only then stores
the session for connection-state recovery: a reconnect that comes back sooner asks for a session
that is not stored yet. socket.io's own issues report recovery failing there; this measures it.

How: the runner writes its choice (client addresses picked at HAProxy, as the `cut` mode picks)
to the run directory (contract/control.py). Every Locust process that runs users polls that file
(`_poller`) and, for a new order, makes the users holding one of the chosen connections go silent
(`SocketIOUser.go_silent`):
- each socket of the user (its WebSocket, its HTTP agent's connections) has its descriptor
  duplicated (`keep`) before the session's socket objects are closed, so the kernel keeps the
  connection open and sends nothing: the server sees no FIN and gets no more pong or packet;
- the core ends the session with kind `network_lost` (a `disconnect` row), the user's HTTP agent is
  replaced (the cookie jar kept: a phone's browser keeps its cookies, not its connections);
- the reconnect waits until `duration` s have passed (the network is back), then runs as usual,
  with recovery: a new connection, `{pid, offset}` in its CONNECT;
- once the network is back the kept descriptors are drained (`drain`: read and dropped, never
  answered) until the server or the balancer closes them, and closed then or when the user ends.
A user that holds none of the chosen connections is untouched (tests/unit/test_silent.py).
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from pathlib import Path
from typing import Any

import gevent
from gevent import socket as gsocket
from locust import events
from locust.runners import MasterRunner

from contract.control import SILENT_FILE, SilentOrder, parse_orders
from contract.options import SioOptions

log = logging.getLogger(__name__)

POLL_S = 0.2
"""How often each Locust process looks at the orders file (a stat; the file is read when it changed)."""
DRAIN_BYTES = 1 << 16
_ATTR = "_sio_silent"


class _State:
    """Per Environment: the users that may be chosen, and the orders already carried out."""

    def __init__(self) -> None:
        self.users: weakref.WeakSet[Any] = weakref.WeakSet()
        self.done: set[int] = set()
        self.stamp: tuple[int, int] | None = None


def _state(environment: Any) -> _State:
    st = getattr(environment, _ATTR, None)
    if st is None:
        st = _State()
        setattr(environment, _ATTR, st)
    return st


def register(environment: Any, user: Any) -> None:
    """A SocketIOUser of this process (weakly held: a stopped user drops out by itself)."""
    _state(environment).users.add(user)


def address(sock: Any) -> str | None:
    """A socket's local address as HAProxy's `show sess` prints the client (`src=ip:port`)."""
    try:
        name = sock.getsockname()
    except (OSError, AttributeError):
        return None
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) and len(name) >= 2 else None


def apply(environment: Any, order: SilentOrder) -> list[str]:
    """Carry out one order in this process (once per order); the ids of the users it silenced."""
    st = _state(environment)
    if order.seq in st.done:
        return []
    st.done.add(order.seq)
    hit = []
    for user in list(st.users):
        if not order.addrs.isdisjoint(user.local_addresses()) and user.go_silent(order.duration):
            hit.append(user.user_id)
    if hit:
        log.info("blip silent #%d: %d user(s) of this process went silent for %g s", order.seq, len(hit), order.duration)
    return hit


def keep(socks: list[Any]) -> list[int]:
    """Duplicate each socket's descriptor: the connection outlives the socket objects' close()."""
    fds = []
    for s in socks:
        try:
            fds.append(os.dup(s.fileno()))
        except (OSError, ValueError, AttributeError):
            pass  # already closed: nothing left to keep open
    return fds


def drain(fd: int, until: Any) -> None:
    """Greenlet body: read and drop what arrives on a kept connection until its peer closes it, or
    `until()` is true (the user ended); then close it. Never writes a byte (nothing is answered)."""
    try:
        sock = gsocket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return
    try:
        sock.settimeout(1.0)
        while not until():
            try:
                if not sock.recv(DRAIN_BYTES):
                    return  # the server (or the balancer) closed it
            except TimeoutError:
                continue
    except OSError:
        return
    finally:
        sock.close()


def read_orders(run_dir: Path, st: _State) -> list[SilentOrder]:
    """The orders in the run directory's file when it changed since the last look; [] otherwise."""
    path = run_dir / SILENT_FILE
    try:
        info = path.stat()
    except OSError:
        return []
    stamp = (info.st_mtime_ns, info.st_size)
    if stamp == st.stamp:
        return []
    st.stamp = stamp
    try:
        return parse_orders(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        log.warning("blip silent: cannot read %s: %s", path, e)
        return []


def _poller(environment: Any, run_dir: Path) -> None:
    st = _state(environment)
    while True:
        for order in read_orders(run_dir, st):
            try:
                apply(environment, order)
            except Exception:  # a bug here must not stop the load
                log.exception("blip silent: order %d failed", order.seq)
        gevent.sleep(POLL_S)


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    """Every process that runs users (local runner, each worker) watches the orders file."""
    runner = environment.runner
    run_dir = SioOptions.from_environment(environment).run_dir
    if runner is None or isinstance(runner, MasterRunner) or not run_dir:
        return
    gevent.spawn(_poller, environment, Path(run_dir))


__all__ = ["POLL_S", "address", "apply", "drain", "keep", "read_orders", "register"]
