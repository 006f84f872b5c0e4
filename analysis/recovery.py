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
    }


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
    return text + (f", {missed} messages missed" if missed is not None else "; messages missed not measured")


__all__ = ["RECOVERY_KEYS", "recovery_block", "recovery_verdict"]
