"""The `blip` fault's `cut` mode: close chosen client connections at HAProxy, the nodes staying up.

Why through HAProxy's runtime API: a network blip that closes a connection on both sides is what
makes a node store a session for connection-state recovery (socket.io persists it when it sees the
transport close). `shutdown session` on the balancer's CLI closes one proxied connection at once,
both ways, without touching the other clients or the node; setting a server to `maint` would
leave the existing sessions open. `show sess` lists what is there to choose from (one line per
proxied TCP connection: a websocket user has one, a polling user one per request in flight or
kept alive).

The cluster's HAProxy exposes its CLI on a unix socket in its workdir at level admin
(haproxy.cfg.j2); `cut_sessions(cluster.workdir / HAPROXY_STATS_SOCKET, ...)` drives it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from targets.telemetry import TIMEOUT_S, unix_request

FRONTEND = "fe_sio"
"""The frontend of the clients' connections in haproxy.cfg.j2 (the CLI's own is fe=GLOBAL)."""
_SESS_RE = re.compile(r"^(0x[0-9a-fA-F]+):\s+(.*)$")
_BATCH = 50  # `shutdown session` commands per CLI connection (joined with ';')


class BlipError(RuntimeError):
    """The balancer's CLI could not be used; the message says why and what to check."""


@dataclass(frozen=True, slots=True)
class ProxiedSession:
    """One line of `show sess`: a client connection through HAProxy."""

    ptr: str  # the session's id for `shutdown session`, e.g. "0x28fb8b50"
    src: str  # the client's address:port, e.g. "127.0.0.1:47036" (its local port names the user)
    frontend: str
    backend: str
    server: str  # the node id (server name in haproxy.cfg), "<none>" before one is chosen

    @property
    def src_port(self) -> int | None:
        host, sep, port = self.src.rpartition(":")
        return int(port) if sep and host != "unix" and port.isdigit() else None


def parse_show_sess(text: str) -> list[ProxiedSession]:
    """`show sess` output → sessions; lines of another shape (a CLI error, a blank line) are skipped."""
    out = []
    for line in text.splitlines():
        m = _SESS_RE.match(line.strip())
        if not m:
            continue
        fields = dict(kv.split("=", 1) for kv in m.group(2).split() if "=" in kv and not kv.startswith(("rq[", "rp[")))
        out.append(ProxiedSession(m.group(1), fields.get("src", ""), fields.get("fe", ""), fields.get("be", ""),
                                  fields.get("srv", "")))
    return out


def client_sessions(socket_path: Path, frontend: str = FRONTEND, timeout: float = TIMEOUT_S) -> list[ProxiedSession]:
    """The clients' connections through `frontend` now (the CLI's own session left out)."""
    try:
        text = unix_request(socket_path, b"show sess\n", timeout)
    except OSError as e:
        raise BlipError(f"cannot reach HAProxy's CLI at {socket_path}: {e}; is the balancer haproxy and "
                        "running?") from None
    return [s for s in parse_show_sess(text) if s.frontend == frontend]


def pick_fraction(sessions: Sequence[ProxiedSession], fraction: float, rng: random.Random | None = None,
                  target: str | None = None) -> list[ProxiedSession]:
    """round(fraction × n) of the sessions (of node `target` only, when given), chosen at random."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction = {fraction!r}: a share from 0 to 1")
    pool = [s for s in sessions if target is None or s.server == target]
    k = round(fraction * len(pool))
    return (rng or random.Random()).sample(pool, k)


def cut_sessions(socket_path: Path, choose: Callable[[list[ProxiedSession]], Sequence[ProxiedSession]],
                 frontend: str = FRONTEND, timeout: float = TIMEOUT_S) -> list[ProxiedSession]:
    """Close the client connections `choose` picks from those open now; returns the ones it cut.

    `choose` gets the current sessions (e.g. `lambda ss: pick_fraction(ss, 0.3, rng)`, or a filter
    on `src_port` for chosen users). A session that ended between the listing and the cut is
    simply gone already; a CLI that refuses the command (a socket below level admin) is a BlipError.
    """
    chosen = list(choose(client_sessions(socket_path, frontend, timeout)))
    for i in range(0, len(chosen), _BATCH):
        cmd = "; ".join(f"shutdown session {s.ptr}" for s in chosen[i:i + _BATCH]) + "\n"
        try:
            answer = unix_request(socket_path, cmd.encode(), timeout)
        except OSError as e:
            raise BlipError(f"HAProxy's CLI at {socket_path} failed during `shutdown session`: {e}") from None
        if "permission denied" in answer.lower() or "unknown command" in answer.lower():
            raise BlipError(f"HAProxy refused `shutdown session` ({answer.strip()[:120]}): its stats socket needs "
                            "`level admin` (haproxy.cfg.j2)")
    return chosen
