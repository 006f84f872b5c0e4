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
- missed / duplicated / reordered: None. The client counts duplicates and offsets that go backwards
  per user (locustfiles/sio/protocol/recovery.py `counts`), but no run ships them to the run
  directory yet, and messages missed per receiver need chat.py's sequence-numbered stream (issue 14
  part 4), not built yet. None says "not measured", never 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

RECOVERY_KEYS = ("disconnects", "recovered", "recovered_ratio", "missed", "duplicated", "reordered",
                 "p95_reconnect_ms")


def recovery_block(events: pd.DataFrame | None) -> dict[str, Any] | None:
    """One config's block from its event rows (columns step, ok, latency_ms); None without any
    disconnection, reconnect or recover row (nothing to say: the block is absent, not zeros)."""
    if events is None or not len(events) or "step" not in events.columns:
        return None
    step = events["step"].astype(str)
    ok = pd.to_numeric(events["ok"], errors="coerce").fillna(0).astype(int) == 1
    lost = int(((step == "disconnect") & ~ok).sum())
    attempts = int((step == "recover").sum())
    recovered = int(((step == "recover") & ok).sum())
    rec = (step == "reconnect") & ok
    if not lost and not attempts and not rec.any():
        return None
    lat = pd.to_numeric(events.loc[rec, "latency_ms"], errors="coerce").dropna().to_numpy(dtype=float) \
        if "latency_ms" in events.columns else np.array([])
    return {
        "disconnects": lost,
        "recovered": recovered,
        "recovered_ratio": round(recovered / attempts, 4) if attempts else None,
        "missed": None,
        "duplicated": None,
        "reordered": None,
        "p95_reconnect_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
    }


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
