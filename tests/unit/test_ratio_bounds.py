"""No ratio can exceed 100 %: every ratio of analysis.metrics stays in [0, 1] on hostile event frames.

Each numerator is counted as a subset of its denominator (connected sessions among opened ones,
upgraded among connected, delivered among expected members, failed among steps, attributed among
session_unknown): a property test over generated frames — duplicated rows, connects without
handshakes, repeated sids, equal timestamps, sends without members — holds them to it.
"""

from __future__ import annotations

import math

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import metrics as M
from contract.rows import STEPS, make_row

T0 = 1_760_000_000.0

_row = st.fixed_dictionaries({
    "step": st.sampled_from(STEPS),
    "t": st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.5, 4.0, 9.0]),  # few values: ties on purpose
    "user": st.sampled_from(["u1", "u2", "u3", ""]),
    "eio_sid": st.sampled_from(["s1", "s2", "s3", ""]),
    "node": st.sampled_from(["n1", "n2", "n3", ""]),
    "ok": st.sampled_from([0, 1]),
    "error_kind": st.sampled_from(["", "session_unknown", "timeout"]),
    "room": st.sampled_from(["r1", "r2", ""]),
    "msg_id": st.sampled_from(["m1", "m2", "m3", ""]),
})


def _frame(rows: list[dict], dup: int) -> pd.DataFrame:
    made = [dict(make_row(r["step"], ts=T0 + r["t"], user=r["user"], eio_sid=r["eio_sid"], node=r["node"],
                          ok=r["ok"], error_kind=r["error_kind"] if not r["ok"] else "", room=r["room"],
                          msg_id=r["msg_id"], latency_ms=1.0)) for r in rows]
    df = pd.DataFrame(made + made[:dup])  # some rows twice, as a concatenated file would have them
    df["config"] = "c"
    df["transports"] = "polling+websocket"
    for c in ("step", "user", "eio_sid", "node", "error_kind", "room", "msg_id", "config"):
        df[c] = df[c].astype("category")
    return df


def _in_unit(values: object) -> bool:
    return all(math.isnan(v) or 0.0 <= v <= 1.0 for v in pd.Series(values, dtype=float))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=40), dup=st.integers(0, 40))
def test_every_ratio_is_between_0_and_1(rows: list[dict], dup: int) -> None:
    ev = _frame(rows, dup)
    c = M.connection_ratios(ev)
    assert _in_unit(c["connect_ratio"]) and _in_unit(c["upgrade_ratio"])
    assert (c["upgraded"] <= c["connected"]).all() and (c["connected"] <= c["attempted"]).all()
    a = M.node_switch_attribution(ev)
    assert _in_unit(a["share"]) and (a["polling_attributed"] <= a["polling"]).all()
    assert (a["attributed"] <= a["session_unknown"]).all()
    dist = M.node_distribution(ev, {"c": 3})
    assert _in_unit(dist["share"])
    fot = M.failures_over_time(ev)
    assert _in_unit(fot["failure_ratio"])
    summary, per_send = M.broadcast_delivery(ev)
    assert _in_unit(summary["delivery_ratio"])
    assert (per_send["delivered"] <= per_send["expected"]).all() if len(per_send) else True
