"""The runner → Locust channel for the `blip` fault's `silent` mode: one JSON file in the run directory.

Why a file: the runner talks to Locust only as a child process (sioscale/runner.py), and under
`--processes` the users live in forked workers that share nothing with it but the run directory
(the event log's files are there too). Each Locust process that runs users polls this file and acts
on the orders it has not seen yet; `os.replace` makes each rewrite atomic, so a reader sees either
the old list or the new one, never half a file.

Why the order names connections, not users: the runner chooses at the balancer, as the `cut` mode
does (HAProxy's `show sess`, targets/blip.py), so both modes pick from the same population and
`target` (one node's users) means the same thing. A connection is its client address "ip:port"
as HAProxy prints it (`src=`); a Locust process finds the user that holds it (its WebSocket, or
one of its HTTP connections) by the sockets' own local addresses. Stdlib only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SILENT_FILE = "sio_silent.json"
"""{"v": 1, "orders": [{"seq": 1, "ts": <unix s>, "duration": 3.0, "addrs": ["127.0.0.1:40112", ...]}, ...]}"""
VERSION = 1
MAX_ADDRS = 1 << 20  # more than any run's connections: a bound for a reader of a damaged file


@dataclass(frozen=True, slots=True)
class SilentOrder:
    """Go silent now, for `duration` s: the users holding any of `addrs` (client "ip:port")."""

    seq: int
    ts: float
    duration: float
    addrs: frozenset[str]

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "duration": self.duration, "addrs": sorted(self.addrs)}


def orders_json(orders: list[SilentOrder]) -> dict[str, Any]:
    """The file's content for `orders` (every order of the run so far, oldest first)."""
    return {"v": VERSION, "orders": [o.as_json() for o in orders]}


def parse_orders(data: Any) -> list[SilentOrder]:
    """The orders in a file's parsed JSON; ValueError (one line) when it is not this format."""
    if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("orders"), list):
        raise ValueError(f"{SILENT_FILE}: expected {{'v': {VERSION}, 'orders': [...]}}")
    out = []
    for o in data["orders"]:
        if not isinstance(o, dict):
            raise ValueError(f"{SILENT_FILE}: an order is not an object: {str(o)[:60]!r}")
        seq: Any = o.get("seq")
        ts: Any = o.get("ts")
        dur: Any = o.get("duration")
        addrs: Any = o.get("addrs")
        ok = (isinstance(seq, int) and not isinstance(seq, bool) and seq > 0
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (ts, dur))
              and dur > 0 and isinstance(addrs, list) and len(addrs) <= MAX_ADDRS
              and all(isinstance(a, str) for a in addrs))
        if not ok:
            raise ValueError(f"{SILENT_FILE}: bad order {str(o)[:80]!r} (seq > 0, ts, duration > 0, addrs: strings)")
        out.append(SilentOrder(seq, float(ts), float(dur), frozenset(addrs)))
    return out


__all__ = ["SILENT_FILE", "SilentOrder", "orders_json", "parse_orders"]
