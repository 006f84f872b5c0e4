"""The event row: one per client step, the single record every consumer reads.

The client produces rows; the event log (run directory), the live Socket.IO stats (web UI,
distributed aggregation) and the analysis all consume exactly these columns, so the UI and
the report cannot disagree. Config labels (balancer, policy, adapter, ...) are NOT repeated
per row: they live in the run's meta.json and are joined at load time.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict

DELIVERY_GRACE_S = 2.0
"""docs/contracts.md "Broadcast delivery, one definition": a broadcast sent this close to the end of
a run's events is not counted (its receivers may have been stopped before it arrived). Defined once
here, the shared contract module, for both the live stats and the analysis."""

# Column order of events*.csv. Append new columns at the end only.
COLUMNS: tuple[str, ...] = (
    "ts",  # float, epoch seconds when the step ended (or the event was seen)
    "run",  # run name (from --sio-run-name / meta.json)
    "worker",  # worker id ("local" when not distributed)
    "user",  # virtual user id, unique within the run, e.g. "w1234-17"
    "eio_sid",  # Engine.IO session id ("" before the open packet)
    "sio_sid",  # Socket.IO namespace session id ("" before CONNECT is acknowledged)
    "step",  # one of STEPS
    "name",  # the Locust request name (e.g. "handshake", "ack:echo", "broadcast:broadcast")
    "transport",  # "polling" | "websocket" | ""
    "node",  # backend node that served the step ("" when unknown)
    "latency_ms",  # float; empty (NaN) where the step has no duration
    "ok",  # 1 / 0
    "error_kind",  # one of ERROR_KINDS or "http_<status>"; "" when ok
    "error",  # human-readable error text; "" when ok, except a node_switch's "n1->n2" and the WebSocket
    # extension an ok upgrade_probe's (websocket-only: handshake's) 101 accepted ("permessage-deflate; ...")
    "room",  # room for join/leave/broadcast_*; "" otherwise
    "msg_id",  # broadcast message id for broadcast_send/broadcast_recv; "" otherwise
)

STEPS: tuple[str, ...] = (
    "handshake",  # EIO open (GET polling without sid, or the websocket open packet in ws-only mode)
    "connect",  # Socket.IO namespace CONNECT acknowledged (40{sid})
    "upgrade_probe",  # websocket opened + 2probe/3probe
    "upgrade",  # "5" sent and the websocket took over
    "poll",  # a long-poll GET ("poll") or a POST ("post:pong", "post:emit", "post:close", "post:connect", "post") that failed
    "ping",  # heartbeat round (server ping answered / EIO3 client ping ponged)
    "ack",  # emit with ack, timed from emit to ack
    "emit",  # emit without ack (no duration)
    "join",  # join(room) acked
    "leave",  # leave(room) acked
    "broadcast_send",  # broadcast emitted (no duration)
    "broadcast_recv",  # broadcast received; latency = receive ts - payload send ts
    "node_switch",  # the session met a second node; node = the new one, error = "n1->n2"
    "disconnect",  # session ended (ok=1 when the client chose to, 0 otherwise with the reason)
    "reconnect",  # a reconnection attempt ended (ok or not); latency = time from loss to connected
    "recover",  # a reconnect asked for connection-state recovery (pid sent): ok=1 recovered, else not_recovered
    "caught_up",  # chat.py: reconnect → the receiver's streams whole up to then (ms); ok=0 messages_missed
)

ERROR_KINDS: tuple[str, ...] = (
    "session_unknown",
    "handshake_rejected",
    "namespace_rejected",
    "timeout",
    "connection_refused",
    "connection_reset",
    "transport_closed",
    "upgrade_failed",
    "protocol_error",
    "network_lost",  # disconnect: the client's network went away (blip `silent`: no FIN, no answers)
    "messages_missed",  # caught_up: a sender's stream had a gap across the reconnect
    "not_recovered",  # recover: the server gave a new session instead of the old one (recovery.py)
    # plus "http_<status>" for any other non-2xx answer
)


GENERATOR_COLUMNS: tuple[str, ...] = ("ts", "worker", "cpu_percent", "users")
"""generator.csv columns (docs/contracts.md, Run directory): the load generator's own CPU, one row
per Locust process and sample."""


class Row(TypedDict):
    ts: float
    run: str
    worker: str
    user: str
    eio_sid: str
    sio_sid: str
    step: str
    name: str
    transport: str
    node: str
    latency_ms: float | None
    ok: int
    error_kind: str
    error: str
    room: str
    msg_id: str


_OK_SPELLINGS = frozenset({1, "1", "1.0", "True", "true"})  # 1 == True == 1.0


def is_ok(value: Any) -> bool:
    """A row's `ok` as a bool, however it was read back (1, True, "1" from CSV, 1.0 from pandas):
    bool("0") is True, so every reader of a row's outcome goes through this one rule."""
    try:
        return value in _OK_SPELLINGS
    except TypeError:  # unhashable
        return False


def make_row(step: str, **kw: Any) -> Row:
    """A complete row with defaults for every column; `ts` defaults to now."""
    row: dict[str, Any] = {
        "ts": time.time(),
        "run": "",
        "worker": "local",
        "user": "",
        "eio_sid": "",
        "sio_sid": "",
        "step": step,
        "name": step,
        "transport": "",
        "node": "",
        "latency_ms": None,
        "ok": 1,
        "error_kind": "",
        "error": "",
        "room": "",
        "msg_id": "",
    }
    unknown = set(kw) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown event row column(s): {sorted(unknown)}")
    row.update(kw)
    return row  # type: ignore[return-value]


def append_csv(path: Path, columns: Sequence[str], rows: Iterable[Iterable[Any]]) -> None:
    """Append rows to a CSV run-directory file, writing the header first when the file is new.

    The run directory's incremental files (events.csv, generator.csv) are appended at every
    flush, so a killed run keeps what was flushed; OSError is the caller's to handle (keep the
    rows and retry). The csv module writes None as "".
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if new:
            w.writerow(columns)
        w.writerows(rows)


__all__ = ["COLUMNS", "DELIVERY_GRACE_S", "ERROR_KINDS", "GENERATOR_COLUMNS", "STEPS", "Row", "append_csv", "is_ok",
           "make_row"]
"""The public names (the locustfiles.sio.rows shim re-exports exactly these)."""
