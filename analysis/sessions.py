"""How sessions end: the lifetime of each connected session and the step that ended it (issue 13 part 4).

Why: behind a balancer that is not sticky, "how many connect" is half the story. A browser whose first poll rode
the handshake's connection gets connected, then dies at its first upstream request that meets another node:
typically the pong POST after the first ping (pingInterval, 25 s by default), or an emit. "41 % connect" and
"41 % connect, then die at their first heartbeat" call for the same fix but read very differently on a
dashboard, so the report says which one happened. Pure functions of the event rows (the kept state rows: every
connect, node switch and disconnect, and the first failure of each kind per user and step).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from contract.rows import is_ok
from contract.wire import PING_INTERVAL_S

END_LABELS: dict[str, str] = {
    "poll": "a long-poll GET",
    "post:pong": "the pong POST (the answer to a heartbeat)",
    "post:emit": "an emit POST",
    "post:close": "the close POST",
    "post:connect": "the CONNECT POST",
    "post": "a POST",
    "upgrade_probe": "the WebSocket probe",
    "upgrade": "the upgrade",
    "ping": "a heartbeat that never came (ping timeout)",
    "ack": "an emit's ack",
    "connection_closed": "the connection closing under it, no request failed (an idle timeout, a reset)",
    "unknown": "a step whose row was not kept",
    "network_lost": "the client's network going away (a silent blip: no FIN, the server learns at its ping timeout)",
}
"""What each ending step is, in words a user can act on."""

SESSION_COLUMNS = ["config", "user", "eio_sid", "connected_ts", "ended_ts", "lifetime_s", "outcome", "end_kind",
                   "end_step", "transport", "switched", "switch"]
_NOT_AN_END = frozenset({"disconnect", "connect", "reconnect", "handshake", "node_switch", "join", "leave",
                         "broadcast_send", "broadcast_recv", "emit", "recover"})
DEFAULT_PING_INTERVAL_S = PING_INTERVAL_S
DIE_SHARE_VERDICT = 0.1
"""A config whose connected sessions died at this share or more gets a verdict on how they ended."""


def session_ends(events: pd.DataFrame) -> pd.DataFrame:
    """One row per connected session (config, user, eio_sid): when it connected, how and when it ended.

    outcome: "failed" (a disconnect the client did not choose: its error_kind is end_kind), "closed" (the
    client's own close, e.g. the run's end) or "open" (no disconnect row: up when the run stopped). end_step:
    for a failed session, the last failed step of that session at or before its disconnect ("poll" GETs and
    "post:*" POSTs by their row name), "unknown" when that row was not kept. switched: a node switch was seen
    in the session before its end (switch = the last one, "n1->n2").
    """
    need = {"config", "user", "eio_sid", "step", "ts", "ok"}
    if events is None or not len(events) or not need <= set(events.columns):
        return pd.DataFrame(columns=SESSION_COLUMNS)
    ev = events[events["eio_sid"].astype(str).str.len() > 0]
    ok = ev["ok"].map(is_ok).to_numpy(dtype=bool)
    cols = [c for c in ("config", "user", "eio_sid", "ts", "step", "name", "ok", "error_kind", "error", "transport")
            if c in ev.columns]
    ev = ev.assign(_ok=ok)[cols + ["_ok"]].sort_values("ts", kind="stable")
    con = ev[(ev["step"] == "connect") & ev["_ok"]].groupby(["config", "user", "eio_sid"], sort=False)["ts"].min()
    if not len(con):
        return pd.DataFrame(columns=SESSION_COLUMNS)
    keys = set(con.index)
    mine = ev[[k in keys for k in zip(ev["config"], ev["user"], ev["eio_sid"], strict=True)]]
    rows = []
    for key, g in mine.groupby(["config", "user", "eio_sid"], sort=False):
        rows.append(_one_session(key, float(con[key]), g))
    return pd.DataFrame(rows, columns=SESSION_COLUMNS)


def _one_session(key: tuple[Any, ...], connected: float, g: pd.DataFrame) -> dict[str, Any]:
    after = g[g["ts"] >= connected]
    disc = after[after["step"] == "disconnect"]
    end = disc.iloc[0] if len(disc) else None
    ended = float(end["ts"]) if end is not None else None
    outcome = "open" if end is None else "closed" if bool(end["_ok"]) else "failed"
    upto = g if ended is None else g[g["ts"] <= ended + 0.5]
    sw = upto[upto["step"] == "node_switch"]
    end_step, end_kind = None, None
    if outcome == "failed":
        end_kind = str(end.get("error_kind") or "") or None
        fails = upto[~upto["_ok"] & ~upto["step"].isin(_NOT_AN_END) & (upto["ts"] >= connected)]
        if end_kind == "network_lost":  # the client's own loss; what failed with it is its consequence
            end_step = "network_lost"
        elif len(fails):
            last = fails.iloc[-1]
            name = str(last.get("name") or "")
            end_step = str(last["step"]) if last["step"] != "poll" else name if name.startswith(("poll", "post")) else "poll"
        else:  # nothing failed but the connection: it was closed under the session (an idle timeout, a reset)
            end_step = "connection_closed" if end_kind in ("transport_closed", "connection_reset") else "unknown"
    return {"config": key[0], "user": key[1], "eio_sid": key[2], "connected_ts": connected, "ended_ts": ended,
            "lifetime_s": (ended - connected) if ended is not None else None, "outcome": outcome,
            "end_kind": end_kind, "end_step": end_step,
            "transport": str(end.get("transport") or "") if end is not None else "",
            "switched": bool(len(sw)), "switch": str(sw.iloc[-1].get("error") or "") if len(sw) else ""}


def session_summary(ends: pd.DataFrame, config: str) -> dict[str, Any] | None:
    """summary.json `sessions` of one config; None without a connected session.

    {connected, failed, failed_share, closed, open, lifetime_s {p50, p95, max} of the failed ones, end_steps
    {step: count} (most first), end_kinds {kind: count}, after_node_switch (failed sessions that had met a second
    node), top_end_step}.
    """
    e = ends[ends["config"] == config] if len(ends) else ends
    if not len(e):
        return None
    failed = e[e["outcome"] == "failed"]
    life = failed["lifetime_s"].dropna().to_numpy(dtype=float)
    steps = failed["end_step"].fillna("unknown").value_counts()
    kinds = failed["end_kind"].fillna("").replace("", "unknown").value_counts()
    n, f = len(e), len(failed)
    return {"connected": int(n), "failed": int(f), "failed_share": f / n, "closed": int((e["outcome"] == "closed").sum()),
            "open": int((e["outcome"] == "open").sum()),
            "lifetime_s": ({"p50": float(np.median(life)), "p95": float(np.quantile(life, 0.95)),
                            "max": float(life.max())} if len(life) else None),
            "end_steps": {str(k): int(v) for k, v in steps.items()},
            "end_kinds": {str(k): int(v) for k, v in kinds.items()},
            "after_node_switch": int(failed["switched"].sum()),
            "top_end_step": str(steps.index[0]) if len(steps) else None}


def sessions_verdict(s: dict[str, Any] | None, connect_ratio: float | None) -> str | None:
    """'41% connect, but 90% of the connected sessions died (median 25 s after connecting), most at the pong POST
    (the answer to a heartbeat) (80%), after a node switch: use sticky sessions or websocket-only'; None when
    fewer than DIE_SHARE_VERDICT of the connected sessions died (or fewer than 3)."""
    if not s or s["failed"] < 3 or s["failed_share"] < DIE_SHARE_VERDICT:
        return None
    top = s.get("top_end_step") or "unknown"
    share = s["end_steps"].get(top, 0) / s["failed"]
    life = s.get("lifetime_s") or {}
    med = life.get("p50")
    when = f" (median {_seconds(med)} after connecting)" if isinstance(med, float) and math.isfinite(med) else ""
    switched = s["after_node_switch"] / s["failed"]
    head = f"{connect_ratio:.0%} connect, but " if isinstance(connect_ratio, float) else ""
    text = (f"{head}{s['failed_share']:.0%} of the connected sessions died{when}, most at "
            f"{END_LABELS.get(top, top)} ({share:.0%})")
    if switched >= 0.5:
        text += (f", {switched:.0%} of them after meeting a second node: the balancer is not sticky for this "
                 "transport; use sticky sessions or websocket-only")
    return text


def idle_timeout_verdict(options: dict[str, Any] | None, s: dict[str, Any] | None) -> str | None:
    """What the balancer's idle timeout did to the sessions, when the config set one.

    A connection quiet for longer than the idle timeout is closed by the balancer; Engine.IO's heartbeat
    (one ping per pingInterval, answered) is what keeps a quiet session's connection busy enough. So with
    pingInterval ≥ the idle timeout the sessions die at the timeout (a WebSocket sees the close:
    transport_closed; a long-poll held past it gets the balancer's 504), and below it they live.
    """
    o = options or {}
    idle, ping = o.get("idle_timeout"), o.get("ping_interval")
    if not isinstance(idle, int | float) or isinstance(idle, bool):
        return None
    ping = float(ping) if isinstance(ping, int | float) and not isinstance(ping, bool) else DEFAULT_PING_INTERVAL_S
    died = s is not None and s["failed"] >= 1 and s["failed_share"] >= DIE_SHARE_VERDICT
    if ping >= idle and died:
        kinds = ", ".join(f"{k} × {v}" for k, v in list((s or {}).get("end_kinds", {}).items())[:3])
        return (f"the balancer's {idle:g} s idle timeout closed {s['failed_share']:.0%} of the connected sessions "
                f"({kinds}): the servers' pingInterval of {ping:g} s leaves a quiet connection idle longer than that; "
                f"keep pingInterval below the balancer's idle timeout")
    if ping >= idle and s is not None and not s["failed"]:
        return (f"pingInterval {ping:g} s is not below the balancer's {idle:g} s idle timeout, yet the sessions lived: "
                "the scenario's own traffic kept them busy (a quiet session would be closed)")
    if s is not None and not died:
        return (f"the servers' pingInterval of {ping:g} s kept the sessions alive through the balancer's {idle:g} s "
                "idle timeout (each heartbeat resets it)")
    return None


def _seconds(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s" if v < 10 else f"{v:.0f} s"
