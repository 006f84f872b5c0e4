"""`configs[].recovery` of summary.json (issue 14 part 4): what the disconnections cost a config.

Why a block of its own: a failover finding is not the connect ratio. A blip, a graceful restart
or a crash ends sessions the client did not choose to end; with connection-state recovery the
client asks for its session back (`recover` rows, ok = recovered), and how long it is away is
the `reconnect` step's latency (socket.io-client's time from the loss to connected again). All
four step kinds are kept whatever the row sampling (contract.rowpolicy LIFECYCLE_STEPS), so the
counts here are exact.

- disconnects: `disconnect` rows that failed, i.e. sessions lost by the client (a disconnect the
  client chose, "io client disconnect", is ok = 1 and not counted).
- recovered: ok `recover` rows; recovered_ratio = recovered / recover rows (the recovery attempts:
  reconnects that carried a pid), None without attempts. A client that never received an event has
  no offset, yet still asks: the server decides, and a refusal counts as an attempt not recovered.
- p95_reconnect_ms: p95 of the ok `reconnect` rows' latency (loss → connected), None without.
Additive keys (issue 14 parts 4 and the known limits; the pinned ones above never change):
- p95_caught_up_ms: p95 of the ok `caught_up` rows' latency: per receiver and reconnect, the time from
  the reconnected session's CONNECT reply until the receiver held every followed sender's stream up
  to where it was then (locustfiles/chat.py CatchUp has the exact definition); None without.
  caught_up / not_caught_up: those rows ok / failed (a sender's stream had a gap across the
  reconnect: never whole again); both None without any.
- no_offset: recovery attempts sent without an offset because the client had received no event at
  all (so no server can recover it: the known limit; the client's `no_event` counter). Attempts without
  an offset because the adapter appends none (Redis pub/sub) are not counted here: the `recover` rows
  name that reason. None when not shipped (runs before the counter).
- server_answers: what the server's recovery answers held that a correct replay does not, counted by
  the client, never raised: {recovered_empty: recovered with nothing replayed (harmless when nothing
  was missed), duplicated_offsets: a packet delivered twice (offset seen before), offsets_backwards:
  an offset older than the one before}; None when not shipped.
- missed / duplicated / reordered, when the run's locustfile numbers its messages per sender
  (chat.py: `stream_received` > 0): messages a receiver missed between two it received from one
  sender (net of those that came late), received twice, received late (older than the last one).
  Counted per receiver, shipped as counts, summed in sio_stats.json `recovery`. A lower bound:
  what a receiver missed after its last receipt from a sender is not seen.
- otherwise duplicated / reordered are the client's recovery counters `duplicated` (an offset seen
  twice) and `backwards` (an offset older than the one before; across Redis Streams nodes this is
  interleaving, not a per-sender reorder), and missed is None: "not measured", never 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import aggregates as A

RECOVERY_KEYS = ("disconnects", "recovered", "recovered_ratio", "missed", "duplicated", "reordered",
                 "p95_reconnect_ms")


def recovery_block(events: pd.DataFrame | None, cells: pd.DataFrame | None = None,
                   client: Any = None) -> dict[str, Any] | None:
    """One config's block; None without any lost session, reconnect or recover (absent, not zeros).

    From the config's aggregate `cells` when there are any (exact counts and the latency
    histograms: a schema-2 run's rows carry no latency), else from its rows (columns step, ok,
    latency_ms: a schema-1 run, or hand-made rows). `client`: sio_stats.json's `recovery`, the users'
    recovery counters summed over every Locust process (absent in runs before they were shipped:
    duplicated and reordered stay None then).
    """
    if cells is not None and len(cells) and {"step", "ok", "count"} <= set(cells.columns):
        counts, p95 = _from_cells(cells)
    elif events is not None and len(events) and "step" in events.columns:
        counts, p95 = _from_rows(events)
    else:
        return None
    lost, attempts, recovered, reconnected = counts
    if not lost and not attempts and not reconnected:
        return None
    return {
        "disconnects": lost,
        "recovered": recovered,
        "recovered_ratio": round(recovered / attempts, 4) if attempts else None,
        **_delivery(client),
        "p95_reconnect_ms": round(p95, 1) if p95 is not None else None,
        **_catch_up(events, cells),
        "no_offset": _count(client, "no_event") if isinstance(client, dict) and "attempts" in client else None,
        "server_answers": _server_answers(client),
    }


def _catch_up(events: pd.DataFrame | None, cells: pd.DataFrame | None) -> dict[str, Any]:
    """p95_caught_up_ms, caught_up, not_caught_up from the `caught_up` cells (or rows, without cells)."""
    ok_n = bad_n = 0
    p95 = None
    if cells is not None and len(cells) and {"step", "ok", "count"} <= set(cells.columns):
        sel = cells[cells["step"].astype(str) == "caught_up"]
        ok = pd.to_numeric(sel["ok"], errors="coerce").fillna(0).astype(int) == 1
        n = pd.to_numeric(sel["count"], errors="coerce").fillna(0).astype(int)
        ok_n, bad_n = int(n[ok].sum()), int(n[~ok].sum())
        if ok.any() and "hist_bucket" in sel.columns:
            q = A.quantiles(A.merge(sel[ok].assign(_all="all"), by=("_all",)), [0.95])
            p95 = float(q[0, 0]) if len(q) and np.isfinite(q[0, 0]) else None
    elif events is not None and len(events) and "step" in events.columns:
        sel = events[events["step"].astype(str) == "caught_up"]
        ok = pd.to_numeric(sel["ok"], errors="coerce").fillna(0).astype(int) == 1
        ok_n, bad_n = int(ok.sum()), int((~ok).sum())
        lat = (pd.to_numeric(sel.loc[ok, "latency_ms"], errors="coerce").dropna().to_numpy(dtype=float)
               if "latency_ms" in sel.columns else np.array([]))
        p95 = float(np.percentile(lat, 95)) if len(lat) else None
    if not ok_n and not bad_n:
        return {"p95_caught_up_ms": None, "caught_up": None, "not_caught_up": None}
    return {"p95_caught_up_ms": round(p95, 1) if p95 is not None else None, "caught_up": ok_n, "not_caught_up": bad_n}


SERVER_ANSWERS = {"recovered_empty": "recovered_empty", "duplicated_offsets": "duplicated",
                  "offsets_backwards": "backwards"}
"""server_answers' keys → the client's recovery counters (locustfiles/sio/protocol/recovery.py) they read."""


def _server_answers(client: Any) -> dict[str, int] | None:
    """The client's counts of recovery answers a correct full replay would not give; None when not shipped."""
    if not isinstance(client, dict) or _count(client, "attempts") is None:
        return None
    return {k: _count(client, c) or 0 for k, c in SERVER_ANSWERS.items()}


def _delivery(client: Any) -> dict[str, int | None]:
    """missed / duplicated / reordered: from chat.py's numbered stream when the run had one
    (`stream_received` shipped), else duplicated / reordered from the recovery offsets and missed None."""
    if isinstance(client, dict) and _count(client, "stream_received"):
        missed, late = _count(client, "missed"), _count(client, "seq_reordered")
        return {"missed": None if missed is None or late is None else max(0, missed - late),
                "duplicated": _count(client, "seq_duplicated"), "reordered": late}
    return {"missed": None, "duplicated": _count(client, "duplicated"), "reordered": _count(client, "backwards")}


def _count(client: Any, key: str) -> int | None:
    """A shipped counter (0 when shipped but never incremented); None when nothing was shipped."""
    if not isinstance(client, dict):
        return None
    n = client.get(key, 0)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def _from_rows(events: pd.DataFrame) -> tuple[tuple[int, int, int, int], float | None]:
    """(lost, recover attempts, recovered, ok reconnects) and the ok reconnects' p95 from rows."""
    step = events["step"].astype(str)
    ok = pd.to_numeric(events["ok"], errors="coerce").fillna(0).astype(int) == 1
    rec = (step == "reconnect") & ok
    lat = (pd.to_numeric(events.loc[rec, "latency_ms"], errors="coerce").dropna().to_numpy(dtype=float)
           if "latency_ms" in events.columns else np.array([]))
    counts = (int(((step == "disconnect") & ~ok).sum()), int((step == "recover").sum()),
              int(((step == "recover") & ok).sum()), int(rec.sum()))
    return counts, float(np.percentile(lat, 95)) if len(lat) else None


def _from_cells(cells: pd.DataFrame) -> tuple[tuple[int, int, int, int], float | None]:
    """The same from aggregate cells: counts summed, the p95 read from the merged histogram."""
    step = cells["step"].astype(str)
    ok = pd.to_numeric(cells["ok"], errors="coerce").fillna(0).astype(int) == 1
    n = pd.to_numeric(cells["count"], errors="coerce").fillna(0).astype(int)
    rec = (step == "reconnect") & ok
    counts = (int(n[(step == "disconnect") & ~ok].sum()), int(n[step == "recover"].sum()),
              int(n[(step == "recover") & ok].sum()), int(n[rec].sum()))
    p95 = None
    sel = cells[rec]
    if len(sel) and "hist_bucket" in cells.columns:
        merged = A.merge(sel.assign(_all="all"), by=("_all",))
        q = A.quantiles(merged, [0.95])
        p95 = float(q[0, 0]) if len(q) and np.isfinite(q[0, 0]) else None
    return counts, p95


def recovery_verdict(block: dict[str, Any] | None, adapter: Any) -> str | None:
    """One sentence for a config whose clients lost sessions or asked for recovery; None otherwise.

    The label says "+ recovery" when the clients asked for it: they do only when the server gave
    them a pid, i.e. ran with connectionStateRecovery. E.g. "redis-streams + recovery: 97% of
    recovery attempts recovered the session (58), 60 sessions lost, p95 reconnect 1210 ms;
    messages missed not measured".
    """
    if not block or not (block.get("disconnects") or block.get("recovered_ratio") is not None):
        return None
    ratio = block.get("recovered_ratio")
    label = f"{adapter or 'unknown adapter'}{' + recovery' if ratio is not None else ''}"
    if ratio is None:
        text = f"{label}: {block['disconnects']} sessions lost, no recovery asked (the server offered none)"
    else:
        text = (f"{label}: {100 * ratio:.0f}% of recovery attempts recovered the session ({block['recovered']}), "
                f"{block['disconnects']} sessions lost")
    if block.get("p95_reconnect_ms") is not None:
        text += f", p95 reconnect {block['p95_reconnect_ms']:.0f} ms"
    missed = block.get("missed")
    text += f", {missed} messages missed" if missed is not None else "; messages missed not measured"
    return text + _limits_and_answers(block)


def _limits_and_answers(block: dict[str, Any]) -> str:
    """The catch-up time, the no-offset limit and the server's odd recovery answers, where there are any."""
    out = ""
    if block.get("p95_caught_up_ms") is not None:
        out += f"; p95 reconnect to caught up {block['p95_caught_up_ms']:.0f} ms"
    if block.get("not_caught_up"):
        out += f" ({block['not_caught_up']} of {block['not_caught_up'] + (block.get('caught_up') or 0)} " \
               "reconnects never whole again)"
    if block.get("no_offset"):
        out += (f"; {block['no_offset']} recovery attempts carried no offset: those clients had received no event, "
                "so no server can recover them (a known limit)")
    odd = {k: n for k, n in (block.get("server_answers") or {}).items() if n}
    if odd:
        words = {"recovered_empty": "said recovered with nothing replayed",
                 "duplicated_offsets": "sent an offset it had sent before", "offsets_backwards": "sent offsets going backwards"}
        out += "; the server " + ", ".join(f"{words[k]} ({n})" for k, n in odd.items())
        out += _answers_meaning(block, odd)
    return out


def _answers_meaning(block: dict[str, Any], odd: dict[str, int]) -> str:
    """What the odd answers cost, read against the numbered stream (when the run had one)."""
    missed, dup, late = block.get("missed"), block.get("duplicated"), block.get("reordered")
    if missed is None:
        return " (no numbered stream to tell whether a message was lost)"
    parts = []
    if odd.get("recovered_empty"):
        parts.append("a loss" if missed else "harmless: nothing was missed")
    if odd.get("duplicated_offsets") or odd.get("offsets_backwards"):
        parts.append(f"{dup} messages delivered twice and {late} late per sender" if dup or late else
                     "no message twice or late per sender: the adapter interleaving its nodes' entries")
    return f" ({'; '.join(parts)})"


FAULT_WORDS = {"blip": "blip", "restart_node": "graceful restart", "stop_node": "crash", "pause_node": "pause",
               "stop_redis": "Redis stopped", "stop_balancer": "balancer stopped"}
"""The faults that end sessions, as the table and the verdicts name them; start_* ones end none and
open no window of their own."""


def by_fault(faults: Any, cells: pd.DataFrame | None, events: pd.DataFrame | None,
             client_by_second: Any = None) -> list[dict[str, Any]] | None:
    """`recovery.by_fault`: one recovery block per fault that ends sessions, plus its action / at / target.

    Why windows and not a fault axis: three faults at separate times in one run cost a third of the
    configs. Each fault owns the seconds from its own (meta.json `ts`, floored) to the next such
    fault's, the last one to the run's end; a disconnect, reconnect or recover cell (or row, in a run
    without cells) counts for the window its second falls in, and so do the receivers' stream
    counters (sio_stats.json `recovery_by_second`, by their arrival at the master, within ~1 s of the
    gap being seen). A fault that cut nothing gets zeros, not a missing row. None without such faults.
    """
    fs = sorted((f for f in faults or () if isinstance(f, dict) and f.get("action") in FAULT_WORDS
                 and isinstance(f.get("ts"), (int, float)) and not f.get("error")), key=lambda f: f["ts"])
    if not fs:
        return None
    starts = [int(np.floor(f["ts"])) for f in fs]
    out = []
    for i, f in enumerate(fs):
        lo, hi = starts[i], (starts[i + 1] if i + 1 < len(fs) else None)
        block = recovery_block(_window(events, "ts", lo, hi, float), _window(cells, "second", lo, hi, int),
                               _client_window(client_by_second, lo, hi))
        if block is None:
            block = {"disconnects": 0, "recovered": 0, "recovered_ratio": None,
                     **_delivery(_client_window(client_by_second, lo, hi)), "p95_reconnect_ms": None}
        extra = {k: f[k] for k in ("fraction", "cut") if f.get(k) is not None}  # a blip's share and count
        out.append({"action": f["action"], "at": f.get("at"), "target": f.get("target"), **extra, **block})
    return out


def _window(frame: pd.DataFrame | None, col: str, lo: int, hi: int | None, kind: type) -> pd.DataFrame | None:
    """The frame's part whose `col` (a time in epoch s) floors into [lo, hi); None without that column."""
    if frame is None or not len(frame) or col not in frame.columns:
        return None
    t = np.floor(pd.to_numeric(frame[col], errors="coerce"))
    keep = (t >= lo) & ((t < hi) if hi is not None else True)
    return frame[keep]


def _client_window(by_second: Any, lo: int, hi: int | None) -> dict[str, int] | None:
    """The stream and recovery counters that arrived in [lo, hi), summed; None in runs without them."""
    if not isinstance(by_second, dict):
        return None
    out: dict[str, int] = {}
    for sec, counts in by_second.items():
        try:
            t = int(sec)
        except (TypeError, ValueError):
            continue
        if t < lo or (hi is not None and t >= hi) or not isinstance(counts, dict):
            continue
        for k, n in counts.items():
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                out[str(k)] = out.get(str(k), 0) + n
    return out


def redis_load(res: pd.DataFrame | None) -> dict[str, float | None] | None:
    """`recovery.redis`: the run's Redis cost (resources.csv): mean CPU % of a core, mean ops/s, peak used
    memory and peak stream length (the Streams adapter's, None for the others).

    What recovery costs in Redis load: Redis Streams writes every broadcast into a stream the nodes
    read (XADD / XREAD), pub/sub only relays it. None without Redis samples (the memory adapter).
    """
    if res is None or not len(res) or not {"component", "metric", "value"} <= set(res.columns):
        return None
    r = res[res["component"].astype(str) == "redis"]
    if not len(r):
        return None
    vals = pd.to_numeric(r["value"], errors="coerce")

    def agg(metric: str, how: str) -> float | None:
        v = vals[r["metric"].astype(str) == metric].dropna()
        return round(float(v.mean() if how == "mean" else v.max()), 2) if len(v) else None

    return {"cpu_percent": agg("cpu_percent", "mean"), "ops_per_sec": agg("ops_per_sec", "mean"),
            "used_memory_bytes": agg("used_memory_bytes", "max"), "stream_length": agg("stream_length", "max")}


def bad_offset_verdict(block: dict[str, Any] | None, adapter: Any) -> str | None:
    """A server that appended offsets it cannot honour: said once per config, as a server finding.

    @socket.io/redis-adapter 8.3's sharded adapter with connectionStateRecovery on appends "" (on the
    publishing node) or null (on the others) to every event without ack, and restores no session:
    the offsets promise a recovery the adapter cannot give. The client takes them off the handler's
    arguments (a Python handler of one argument would otherwise fail on every event from another node).
    """
    if not block or not block.get("bad_offsets"):
        return None
    n, rec = block["bad_offsets"], block.get("recovered") or 0
    tail = ("and restored no session: an adapter that stores nothing to recover from (the sharded adapter "
            "appends '' or null)" if not rec else f"yet recovered {rec} sessions")
    return f"{adapter or 'unknown adapter'} + recovery: the server appended {n} offsets that are no offset {tail}"


def fault_label(f: dict[str, Any]) -> str:
    """'blip (30% of the users)', 'graceful restart n2', 'crash n3'."""
    word = FAULT_WORDS.get(str(f.get("action")), str(f.get("action")))
    if f.get("action") == "blip" and isinstance(f.get("fraction"), (int, float)):
        return f"{word} ({100 * f['fraction']:.0f}% of the users)"
    return f"{word} {f['target']}" if f.get("target") else word


def fault_verdict(f: dict[str, Any], adapter: Any, recovery_on: Any) -> str:
    """One row's verdict in the issue's words, e.g. "redis-streams + recovery, crash n3: 0% of sessions
    recovered (0 of 11 lost), 41 messages missed (3.7 per disconnected user)"."""
    on = recovery_on or f.get("recovered_ratio") is not None  # older runs: the attempts say it
    label = f"{adapter or 'unknown adapter'}{' + recovery' if on else ''}, {fault_label(f)}"
    lost, ratio = f.get("disconnects") or 0, f.get("recovered_ratio")
    if not lost and f.get("cut"):
        text = (f"{label}: {f['cut']} connections cut but no session lost (they were still handshaking: the "
                "users were not connected yet; set the blip later)")
    elif not lost:
        text = f"{label}: no session lost"
    elif ratio is None:
        text = f"{label}: {lost} sessions lost, none recovered (no recovery asked)"
    else:
        text = f"{label}: {100 * ratio:.0f}% of sessions recovered ({f.get('recovered', 0)} of {lost} lost)"
    missed = f.get("missed")
    if missed is None:
        return text + "; messages missed not measured"
    per = f" ({missed / lost:.1f} per disconnected user)" if lost and missed else ""
    return f"{text}, {missed} messages missed{per}"


__all__ = ["FAULT_WORDS", "RECOVERY_KEYS", "bad_offset_verdict", "by_fault", "fault_label", "fault_verdict", "recovery_block",
           "recovery_verdict", "redis_load"]
