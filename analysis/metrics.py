"""Pure functions from the tidy frames (analysis.load) to the report's numbers.

Counts and latency percentiles come from the per-second cells (Frames.aggregates; exact counts,
percentiles from merged histograms within contract.histogram.RELATIVE_ERROR); a function that
counts accepts either cells or event rows (rows are turned into the cells a worker would have
made: one code path for schema-1 and schema-2 runs). What follows sessions (connected and upgraded
sessions, nodes of connects, node switches, room membership) reads the rows, which for a
schema-2 run are the kept rows: every state row is kept (contract/rowpolicy.py). Each returns a
small frame keyed by `config` (and step / node / kind where that is the point). No I/O, no
plotting: the report, the verdicts and `sioscale check` read the same numbers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from contract.rows import DELIVERY_GRACE_S  # the one constant of docs/contracts.md

from . import aggregates as A

PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def _configs(events: pd.DataFrame) -> list[str]:
    return [str(c) for c in pd.unique(events["config"])] if len(events) else []


def cells_of(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as they are, or the cells of event rows (analysis.aggregates.aggregates_from_rows)."""
    return frame if A.is_cells(frame) else A.aggregates_from_rows(frame)


def _step(events: pd.DataFrame, step: str) -> pd.DataFrame:
    return events[events["step"] == step]


def connection_ratios(events: pd.DataFrame, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Connect and upgrade success per config, each numerator a subset of its denominator.

    attempted = handshake rows (each is one attempt by a user to open a session, reconnects included);
    connected = distinct sessions (user, eio_sid) with an ok=1 connect row (the namespace CONNECT was
    acknowledged) AND an ok=1 handshake row of the same session: a session is opened by exactly one
    handshake, so connected <= the ok handshakes' sessions <= attempted by construction — a lost or
    dropped handshake row, or a connect row repeated, can no longer push the ratio past 100 %;
    upgraded = connected sessions with an ok=1 upgrade row (the WebSocket took over from polling): a
    session whose upgrade succeeded but whose namespace CONNECT then failed is not a connected session.
    connect_ratio = connected / attempted. upgrade_ratio = upgraded / connected, only where an
    upgrade is expected (transports polling+websocket); NaN otherwise (websocket-only clients open
    the WebSocket directly, polling-only ones never upgrade). Ratios are NaN when the denominator is 0.
    attempted is counted from `cells` (exact; default: the cells of the rows' handshakes), the sessions
    from the rows (every handshake, connect and upgrade ok row is a state row, always kept).
    """
    if cells is None:
        cells = A.aggregates_from_rows(events[events["step"] == "handshake"]) if len(events) else events
    hs = cells[cells["step"] == "handshake"] if len(cells) else cells
    attempts = hs.groupby("config", observed=True)["count"].sum() if len(hs) else pd.Series(dtype="int64")
    attempts.index = attempts.index.astype(str)
    out = []
    for cfg in dict.fromkeys([*_configs(events), *_configs(cells)]):
        e = events[events["config"] == cfg]
        attempted = int(attempts.get(cfg, 0))
        opened = _sessions(e, "handshake")
        conn = _sessions(e, "connect") & opened
        upgraded = len(_sessions(e, "upgrade") & conn)
        connected = len(conn)
        transports = str(e["transports"].iloc[0]) if "transports" in e and len(e) else ""
        expects_upgrade = transports == "polling+websocket"
        out.append({
            "config": cfg, "attempted": attempted, "connected": connected, "upgraded": upgraded,
            "connect_ratio": connected / attempted if attempted else math.nan,
            "upgrade_ratio": (upgraded / connected if connected else math.nan) if expects_upgrade else math.nan,
        })
    return pd.DataFrame(out, columns=["config", "attempted", "connected", "upgraded", "connect_ratio", "upgrade_ratio"])


def _sessions(e: pd.DataFrame, step: str) -> set[tuple[str, str]]:
    """Distinct (user, eio_sid) of the ok=1 rows of `step` (rows without a sid: one session per user)."""
    s = e[(e["step"] == step) & (e["ok"] == 1)]
    users = s["user"].astype(str) if "user" in s else pd.Series("", index=s.index)
    return set(zip(_texts(users), _texts(s["eio_sid"]), strict=True))


def _texts(col: pd.Series) -> np.ndarray:
    """A column as an object array of str: iterating it is ~10x faster than an Arrow-backed str Series."""
    return col.astype(str).to_numpy(dtype=object)


def failures(events: pd.DataFrame) -> pd.DataFrame:
    """Failed steps (ok=0) counted by config × error_kind × step × node ('?' where unknown).

    `events`: cells or rows (counted from their cells: exact either way)."""
    cols = ["config", "error_kind", "step", "node", "count"]
    if not len(events):
        return pd.DataFrame(columns=cols)
    f = events[events["ok"] == 0]
    f = cells_of(f) if len(f) else f
    if not len(f):
        return pd.DataFrame(columns=cols)
    g = pd.DataFrame({
        "config": f["config"].astype(str),
        "error_kind": f["error_kind"].astype(str).replace("", "unclassified"),
        "step": f["step"].astype(str),
        "node": f["node"].astype(str).replace("", "?"),
        "count": f["count"].to_numpy(dtype=np.int64),
    })
    g = g.groupby(["config", "error_kind", "step", "node"], sort=False)["count"].sum().reset_index()
    g = g[g["count"] > 0]
    # value_counts' order: count descending, ties in key order
    g = g.sort_values(["count", "config", "error_kind", "step", "node"], ascending=[False, True, True, True, True])
    return g.sort_values(["config", "count"], ascending=[True, False], ignore_index=True, kind="stable")[cols]


def failure_counts(events: pd.DataFrame) -> dict[str, dict[str, int]]:
    """{config: {error_kind: count}} — the summary.json `failures` block."""
    f = failures(events)
    out: dict[str, dict[str, int]] = {c: {} for c in _configs(events)}
    for (cfg, kind), n in f.groupby(["config", "error_kind"])["count"].sum().items():
        out[cfg][kind] = int(n)
    return out


PROBE_STEPS = ("upgrade_probe",)
FOLLOW_ON_STEPS = ("reconnect", "disconnect")


def node_switch_attribution(events: pd.DataFrame, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """How many session_unknown failures come from a session meeting a second node, per kind of request.

    A session (config, eio_sid) "met two nodes" when its rows name two distinct nodes or it has a
    node_switch row. The failures are split by what failed, because the attribution means different
    things for each:
    - polling: a polling request (handshake POST, poll, an emit...) refused with 400 "Session ID unknown" /
      "Invalid session". The client classifies these from the server's answer alone, so the share that
      met two nodes is a measurement: a high share says the balancer, not the server, lost the session.
    - probe: the WebSocket upgrade probe refused. python-engineio under uvicorn answers 403 without a body,
      which the client calls session_unknown only when the node header changed: for those the attribution
      holds by construction and is no evidence, so probes are counted apart.
    - follow_on: reconnect attempts and disconnects that carry the kind of the failure that caused them
      (they repeat one of the above, not a new request).
    share = polling_attributed / polling (NaN when there are none); `attributed` counts every kind.

    `cells` (the exact per-second counts): the failure rows of a storm are kept up to a budget per
    second (contract.rowpolicy), so the rows hold fewer session_unknown failures than happened. The
    totals (session_unknown, polling, probe, follow_on) are then the cells' exact counts, and each
    `*_attributed` is its kind's exact total times the share met-two-nodes among the kept rows of
    that kind; `rows` says how many kept rows the shares rest on (= session_unknown when none were cut).
    """
    cols = ["config", "session_unknown", "attributed", "share", "polling", "polling_attributed",
            "probe", "probe_attributed", "follow_on", "rows"]
    su = events[(events["ok"] == 0) & (events["error_kind"] == "session_unknown")]
    rows = []
    for cfg in _configs(events):
        s = su[su["config"] == cfg]
        n = len(s)
        if not n:
            rows.append({"config": cfg, "session_unknown": 0, "attributed": 0, "share": math.nan, "polling": 0,
                         "polling_attributed": 0, "probe": 0, "probe_attributed": 0, "follow_on": 0, "rows": 0})
            continue
        e = events[(events["config"] == cfg) & (events["eio_sid"] != "")]
        sids = set(s["eio_sid"].astype(str)) - {""}
        e = e[e["eio_sid"].isin(sids)]
        named = e[e["node"] != ""]
        multi = set(named.groupby("eio_sid", observed=True)["node"].nunique().loc[lambda x: x >= 2].index.astype(str))
        multi |= set(e.loc[e["step"] == "node_switch", "eio_sid"].astype(str))
        met = s["eio_sid"].astype(str).isin(multi)
        probe = s["step"].isin(PROBE_STEPS)
        follow = s["step"].isin(FOLLOW_ON_STEPS)
        poll = ~probe & ~follow
        kept = {"polling": (int(poll.sum()), int((met & poll).sum())),
                "probe": (int(probe.sum()), int((met & probe).sum())),
                "follow_on": (int(follow.sum()), int((met & follow).sum()))}
        rows.append(_attribution_row(cfg, n, kept, _su_counts(cells, cfg)))
    return pd.DataFrame(rows, columns=cols)


def _su_counts(cells: pd.DataFrame | None, cfg: str) -> dict[str, int] | None:
    """Exact session_unknown counts per kind of request from the cells (None without cells)."""
    if cells is None or not len(cells):
        return None
    c = cells[(cells["config"].astype(str) == str(cfg)) & (cells["ok"] == 0)
              & (cells["error_kind"].astype(str) == "session_unknown")]
    step = c["step"].astype(str)
    probe, follow = step.isin(PROBE_STEPS), step.isin(FOLLOW_ON_STEPS)
    return {"polling": int(c.loc[~probe & ~follow, "count"].sum()), "probe": int(c.loc[probe, "count"].sum()),
            "follow_on": int(c.loc[follow, "count"].sum())}


def _attribution_row(cfg: str, n_rows: int, kept: dict[str, tuple[int, int]],
                     exact: dict[str, int] | None) -> dict[str, Any]:
    """One config's attribution: kept-row counts, or exact totals with the kept rows' shares."""
    tot = {k: v[0] for k, v in kept.items()}
    att = {k: v[1] for k, v in kept.items()}
    if exact is not None and any(exact[k] > tot[k] for k in tot):
        att = {k: round(exact[k] * att[k] / tot[k]) if tot[k] else 0 for k in tot}
        tot = dict(exact)
    return {"config": cfg, "session_unknown": sum(tot.values()), "attributed": sum(att.values()),
            "share": att["polling"] / tot["polling"] if tot["polling"] else math.nan,
            "polling": tot["polling"], "polling_attributed": att["polling"], "probe": tot["probe"],
            "probe_attributed": att["probe"], "follow_on": tot["follow_on"], "rows": n_rows}


def node_distribution(events: pd.DataFrame, expected_nodes: dict[str, int] | None = None) -> pd.DataFrame:
    """Sessions per node per config: distinct eio_sid of ok `connect` rows, by the node that acknowledged.

    expected_nodes {config: N} adds the nodes n1..nN that got no session at all (an ip-hash balancer
    from one source IP leaves two of three nodes empty — that emptiness is the finding).
    """
    c = events[(events["step"] == "connect") & (events["ok"] == 1) & (events["node"] != "")]
    g = c.groupby(["config", "node"], observed=True)["eio_sid"].nunique().rename("sessions").reset_index()
    g["config"], g["node"] = g["config"].astype(str), g["node"].astype(str)
    rows = [g]
    for cfg, n in (expected_nodes or {}).items():
        have = set(g.loc[g["config"] == cfg, "node"])
        miss = [f"n{i}" for i in range(1, int(n) + 1) if f"n{i}" not in have]
        if miss:
            rows.append(pd.DataFrame({"config": cfg, "node": miss, "sessions": 0}))
    g = pd.concat(rows, ignore_index=True) if len(rows) > 1 else g
    tot = g.groupby("config")["sessions"].transform("sum")
    g["share"] = np.where(tot > 0, g["sessions"] / tot.where(tot > 0, 1), np.nan)
    return g.sort_values(["config", "node"], key=lambda s: s.map(node_key) if s.name == "node" else s,
                         ignore_index=True)


def node_key(n: str) -> tuple[int, str]:
    """Natural node order, n1 < n2 < n10 (text order would put n10 before n2); other names last."""
    return (int(n[1:]), n) if n[:1] == "n" and n[1:].isdigit() else (10**9, n)


def node_balance(dist: pd.DataFrame) -> pd.DataFrame:
    """Per config: sessions, nodes used, max/mean imbalance and the chi-square p-value against uniform.

    imbalance = max(sessions per node) / mean(sessions per node) over the nodes in `dist` (1.0 = even;
    N = everything on one node of N). p_uniform: scipy.stats.chisquare; a small p (< 0.01) says the
    spread is not chance. NaN with fewer than 2 nodes or no sessions.
    """
    rows = []
    for cfg, g in dist.groupby("config", sort=False):
        s = g["sessions"].to_numpy(dtype=float)
        total = s.sum()
        if total <= 0 or len(s) == 0:
            rows.append({"config": cfg, "sessions": 0, "nodes_used": 0, "imbalance": math.nan, "p_uniform": math.nan})
            continue
        p = float(sstats.chisquare(s).pvalue) if len(s) >= 2 else math.nan
        rows.append({"config": cfg, "sessions": int(total), "nodes_used": int((s > 0).sum()),
                     "imbalance": float(s.max() / s.mean()), "p_uniform": p})
    return pd.DataFrame(rows, columns=["config", "sessions", "nodes_used", "imbalance", "p_uniform"])


def latency_percentiles(events: pd.DataFrame, by: tuple[str, ...] = ("config", "step", "node")) -> pd.DataFrame:
    """p50/p95/p99/max/count of latency_ms over successful steps, grouped by `by`.

    Only ok=1 steps with a duration: a timeout's "latency" is the timeout, not a service time.
    `events`: cells or rows; percentiles from the merged histograms (within RELATIVE_ERROR of the raw
    values' numpy percentiles), max and count exact.
    """
    cols = [*by, "count", "p50", "p95", "p99", "max"]
    if not len(events):
        return pd.DataFrame(columns=cols)
    c = cells_of(events[events["ok"] == 1])
    c = c[c["lat_count"] > 0]
    if not len(c):
        return pd.DataFrame(columns=cols)
    m = A.merge(c, list(by))
    q = A.quantiles(m, list(PERCENTILES.values()))
    out = m[list(by)].copy()
    for c_ in by:
        out[c_] = out[c_].astype(str)
    out["count"] = m["lat_count"].to_numpy()
    for j, name in enumerate(PERCENTILES):
        out[name] = q[:, j]
    out["max"] = m["lat_max_ms"].to_numpy()
    return out[cols].reset_index(drop=True)


def latency_over_time(events: pd.DataFrame, bucket_s: float = 5.0,
                      steps: tuple[str, ...] = ("connect", "ack", "broadcast_recv"),
                      t0: dict[str, float] | None = None) -> pd.DataFrame:
    """p50/p95 per config × step × time bucket (t = seconds since the start of the config's first
    second, analysis.aggregates.time_bins). `events`: cells or rows; t0 {config: first ts} (default:
    the frame's own first ts or second)."""
    cols = ["config", "step", "t", "count", "p50", "p95"]
    if not len(events):
        return pd.DataFrame(columns=cols)
    t0 = A.first_ts(events) if t0 is None else t0
    c = events[(events["ok"] == 1) & events["step"].isin(steps)]
    c = cells_of(c) if len(c) else c
    c = c[c["lat_count"] > 0] if len(c) else c
    if not len(c):
        return pd.DataFrame(columns=cols)
    c = c.assign(t=A.time_bins(c, t0, bucket_s))
    m = A.merge(c, ["config", "step", "t"])
    q = A.quantiles(m, [0.5, 0.95])
    out = pd.DataFrame({"config": m["config"].astype(str), "step": m["step"].astype(str), "t": m["t"].astype(float),
                        "count": m["lat_count"].to_numpy(), "p50": q[:, 0], "p95": q[:, 1]})
    return out[cols].reset_index(drop=True)


def active_users(events: pd.DataFrame, bucket_s: float = 1.0, t0: dict[str, float] | None = None) -> pd.DataFrame:
    """Connected users over time per config, rebuilt from events (+1 on ok connect, -1 on disconnect).

    Used where Locust's history is missing; it counts sessions actually up, not users spawned. Time
    buckets as analysis.aggregates.time_bins (from the start of the config's first second), so they
    line up with the counts of failures_over_time.
    """
    conn = (events["step"] == "connect") & (events["ok"] == 1)
    up = set(zip(_texts(events.loc[conn, "config"]), _texts(events.loc[conn, "eio_sid"]), strict=True))
    disc = events["step"] == "disconnect"
    was_up = pd.Series([(c, s) in up for c, s in zip(_texts(events.loc[disc, "config"]),
                                                        _texts(events.loc[disc, "eio_sid"]), strict=True)],
                       index=events.index[disc], dtype=bool)
    # only a session that was up can go down: a failed attempt's disconnect row does not lower the count
    e = events[conn | disc & was_up.reindex(events.index, fill_value=False)]
    cols = ["config", "t", "active"]
    if not len(e):
        return pd.DataFrame(columns=cols)
    t0 = A.first_ts(events) if t0 is None else t0
    origin = e["config"].astype(str).map({k: math.floor(v) for k, v in t0.items()}).astype(float)
    d = pd.DataFrame({"config": e["config"].astype(str),
                      "t": np.floor((e["ts"] - origin) / bucket_s) * bucket_s,
                      "delta": np.where(e["step"] == "connect", 1, -1)})
    d = d.groupby(["config", "t"])["delta"].sum().groupby(level=0).cumsum().rename("active").reset_index()
    return d[cols]


def failures_over_time(events: pd.DataFrame, bucket_s: float = 1.0, cells: pd.DataFrame | None = None,
                       t0: dict[str, float] | None = None) -> pd.DataFrame:
    """Per config × time bucket: steps, failed steps, failure ratio, connected users; `t` in s from the
    start of the config's first second. Steps counted from `cells` (default: the rows' cells), connected
    users from the rows (active_users)."""
    cols = ["config", "t", "steps", "failed", "failure_ratio", "active"]
    cells = cells_of(events) if cells is None else cells
    if not len(cells):
        return pd.DataFrame(columns=cols)
    t0 = (A.first_ts(events) if len(events) else A.first_ts(cells)) if t0 is None else t0
    n = cells["count"].to_numpy(dtype=np.int64)
    d = pd.DataFrame({"config": cells["config"].astype(str), "t": A.time_bins(cells, t0, bucket_s),
                      "steps": n, "failed": np.where(cells["ok"].to_numpy() == 0, n, 0)})
    g = d.groupby(["config", "t"])[["steps", "failed"]].sum().reset_index()
    g = g[g["steps"] > 0]
    g["failure_ratio"] = g["failed"] / g["steps"]
    act = active_users(events, bucket_s, t0) if len(events) else pd.DataFrame(columns=["config", "t", "active"])
    g = g.merge(act, on=["config", "t"], how="left")
    g["active"] = g.groupby("config")["active"].ffill().fillna(0).astype(int)
    return g[cols].reset_index(drop=True)


def first_failure_time(fot: pd.DataFrame, bound: float = 0.01) -> pd.DataFrame:
    """When each config starts failing: first bucket whose failure ratio exceeds `bound`, and users then."""
    rows = []
    for cfg, g in fot.groupby("config", sort=False):
        bad = g[g["failure_ratio"] > bound]
        if len(bad):
            r = bad.iloc[0]
            rows.append({"config": cfg, "t": float(r["t"]), "active": int(r["active"]),
                         "failure_ratio": float(r["failure_ratio"])})
        else:
            rows.append({"config": cfg, "t": math.nan, "active": math.nan, "failure_ratio": math.nan})
    return pd.DataFrame(rows, columns=["config", "t", "active", "failure_ratio"])


def broadcast_delivery(events: pd.DataFrame, grace_s: float = DELIVERY_GRACE_S) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Broadcast delivery by the one definition in docs/contracts.md.

    members(room, t): users whose last ok `join` of the room is at or before t with no later `leave`
    (same room) or `disconnect` at or before t. For each `broadcast_send` with ok=1 (msg_id, room, ts;
    a failed send, e.g. an emit on a closing session, never reached the wire and is not a send):
    expected = |members(room, ts)|; delivered = distinct users with a `broadcast_recv` of that msg_id
    who were members at ts, capped at expected. Sends within `grace_s` of the end of the config's
    events are left out. Returns (per-config summary, per-send detail).

    Per config: sent, expected, delivered, delivery_ratio = Σdelivered/Σexpected, and the receive
    latency p50/p95/p99 (latency_ms of broadcast_recv rows).
    """
    cols = ["config", "sent", "expected", "delivered", "delivery_ratio", "lat_p50", "lat_p95", "lat_p99"]
    sends = events[(events["step"] == "broadcast_send") & (events["ok"] == 1)]
    if not len(sends):
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=["config", "msg_id", "room", "ts", "expected", "delivered"])
    key = ["config", "user", "room"]
    ends = events.groupby("config", observed=True)["ts"].max()
    # Membership intervals [start, end) per (config, user, room): a join opens one unless already open.
    mem = events[((events["step"] == "join") & (events["ok"] == 1)) | (events["step"] == "leave")
                 | (events["step"] == "disconnect")]
    m = pd.DataFrame({"config": mem["config"].astype(str), "user": mem["user"].astype(str),
                      "room": mem["room"].astype(str), "step": mem["step"].astype(str), "ts": mem["ts"].to_numpy()})
    # a disconnect ends membership in every room the user joined: expand it to those rooms
    joins = m[m["step"] == "join"]
    disc = m[m["step"] == "disconnect"].drop(columns="room").merge(
        joins[["config", "user", "room"]].drop_duplicates(), on=["config", "user"])
    ev = pd.concat([joins.assign(kind=1), m[m["step"] == "leave"].assign(kind=0), disc.assign(kind=0)],
                   ignore_index=True)
    # at equal ts, an end sorts before a join so "join at t" counts as a member at t
    ev = ev.sort_values([*key, "ts", "kind"], ignore_index=True)
    intervals = _intervals(ev, key)
    s = pd.DataFrame({"config": sends["config"].astype(str), "msg_id": sends["msg_id"].astype(str),
                      "room": sends["room"].astype(str), "ts": sends["ts"].to_numpy()})
    s = s[s["ts"] <= s["config"].map(ends.rename(index=str)).astype(float) - grace_s]
    s = s.drop_duplicates(["config", "msg_id"])
    s["expected"] = _count_members(s, intervals)
    recv = events[(events["step"] == "broadcast_recv") & (events["ok"] == 1)]
    r = pd.DataFrame({"config": recv["config"].astype(str), "msg_id": recv["msg_id"].astype(str),
                      "user": recv["user"].astype(str)}).drop_duplicates()
    r = r.merge(s[["config", "msg_id", "room", "ts"]], on=["config", "msg_id"])
    r["member"] = _is_member(r, intervals)
    d = r[r["member"]].groupby(["config", "msg_id"]).size().rename("delivered")
    s = s.merge(d, left_on=["config", "msg_id"], right_index=True, how="left")
    s["delivered"] = np.minimum(s["delivered"].fillna(0).astype(int), s["expected"])
    lat = latency_percentiles(recv, by=("config",)).set_index("config") if len(recv) else pd.DataFrame()
    out = []
    for cfg in _configs(events):
        g = s[s["config"] == cfg]
        if not (sends["config"] == cfg).any():
            continue
        exp, dl = int(g["expected"].sum()), int(g["delivered"].sum())
        row = {"config": cfg, "sent": int(len(g)), "expected": exp, "delivered": dl,
               "delivery_ratio": dl / exp if exp else math.nan}
        for p in ("p50", "p95", "p99"):
            row[f"lat_{p}"] = float(lat.loc[cfg, p]) if cfg in lat.index else math.nan
        out.append(row)
    return pd.DataFrame(out, columns=cols), s.reset_index(drop=True)


def delivery_from_seconds(delivery: pd.DataFrame, cells: pd.DataFrame, ends: dict[str, float],
                          grace_s: float = DELIVERY_GRACE_S) -> pd.DataFrame:
    """broadcast_delivery's per-config summary from a schema-2 run's delivery seconds (counted at the
    receivers and the master by the same definition, exact) and the receive latency from the cells.

    A second the event log marked final has the grace window applied already; in a run that never
    ended (killed), a second is left out unless it ended grace_s before the run's last event (`ends`,
    {config: last ts}): every send in it is then outside the window, as the definition asks.
    """
    cols = ["config", "sent", "expected", "delivered", "delivery_ratio", "lat_p50", "lat_p95", "lat_p99"]
    if not len(delivery):
        return pd.DataFrame(columns=cols)
    d = delivery.assign(config=delivery["config"].astype(str))
    end = d["config"].map(ends).astype(float)
    d = d[(d["final"] == 1) | (d["second"] + 1 <= end - grace_s)]
    recv = cells[(cells["step"] == "broadcast_recv")] if len(cells) else cells
    lat = latency_percentiles(recv, by=("config",)).set_index("config") if len(recv) else pd.DataFrame()
    out = []
    for cfg in dict.fromkeys(delivery["config"].astype(str)):
        g = d[d["config"] == cfg]
        exp, dl = int(g["expected"].sum()), int(g["delivered"].sum())
        row = {"config": cfg, "sent": int(g["sent"].sum()), "expected": exp, "delivered": dl,
               "delivery_ratio": dl / exp if exp else math.nan}
        for p in ("p50", "p95", "p99"):
            row[f"lat_{p}"] = float(lat.loc[cfg, p]) if cfg in lat.index else math.nan
        out.append(row)  # a config with delivery seconds sent broadcasts, as broadcast_delivery includes it
    return pd.DataFrame(out, columns=cols)


def delivery_table(events: pd.DataFrame, cells: pd.DataFrame, delivery: pd.DataFrame, runs: pd.DataFrame,
                   grace_s: float = DELIVERY_GRACE_S) -> pd.DataFrame:
    """Broadcast delivery per config, whatever each run's schema: a schema-2 run's from its delivery
    seconds (its kept rows are a sample of the sends and receipts), a schema-1 run's from its rows."""
    v2 = set(runs.loc[runs["schema"] >= 2, "config"].astype(str)) if "schema" in runs else set()
    parts = []
    if v2:
        ends = {str(r["config"]): float(r["last_ts"]) for _, r in runs.iterrows() if str(r["config"]) in v2}
        mine = delivery[delivery["config"].astype(str).isin(v2)] if len(delivery) else delivery
        c = cells[cells["config"].astype(str).isin(v2)] if len(cells) else cells
        parts.append(delivery_from_seconds(mine, c, ends, grace_s))
    rows = events[~events["config"].astype(str).isin(v2)] if v2 and len(events) else events
    if len(rows):
        parts.append(broadcast_delivery(rows, grace_s)[0])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["config", "sent", "expected", "delivered", "delivery_ratio", "lat_p50",
                                     "lat_p95", "lat_p99"])
    out = pd.concat(parts, ignore_index=True)
    order = {str(c): i for i, c in enumerate(runs["config"])} if len(runs) else {}
    return out.sort_values("config", key=lambda s: s.map(order), kind="stable", ignore_index=True)


def _intervals(ev: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Sorted join/end events → disjoint [start, end) intervals per key (end = inf when still open)."""
    rows = []
    for k, g in ev.groupby(key, sort=False):
        start = None
        for ts, kind in zip(g["ts"].to_numpy(), g["kind"].to_numpy(), strict=True):
            if kind == 1 and start is None:
                start = ts
            elif kind == 0 and start is not None:
                rows.append((*k, start, ts))
                start = None
        if start is not None:
            rows.append((*k, start, math.inf))
    return pd.DataFrame(rows, columns=[*key, "start", "end"])


def _count_members(s: pd.DataFrame, iv: pd.DataFrame) -> np.ndarray:
    """members(room, ts) for each send: #interval starts ≤ ts − #interval ends ≤ ts, per (config, room)."""
    out = np.zeros(len(s), dtype=int)
    if not len(iv) or not len(s):
        return out
    groups = {k: (np.sort(g["start"].to_numpy()), np.sort(g["end"].to_numpy()))
              for k, g in iv.groupby(["config", "room"], sort=False)}
    pos = {k: idx for k, idx in s.reset_index(drop=True).groupby(["config", "room"], sort=False).indices.items()}
    ts = s["ts"].to_numpy()
    for k, idx in pos.items():
        if k not in groups:
            continue
        st, en = groups[k]
        out[idx] = np.searchsorted(st, ts[idx], side="right") - np.searchsorted(en, ts[idx], side="right")
    return out


def _is_member(r: pd.DataFrame, iv: pd.DataFrame) -> np.ndarray:
    """Was (config, user, room) a member at the send's ts? merge_asof on the interval start."""
    if not len(r) or not len(iv):
        return np.zeros(len(r), dtype=bool)
    left = r.reset_index(drop=True).assign(_i=np.arange(len(r))).sort_values("ts")
    right = iv.sort_values("start")
    m = pd.merge_asof(left, right, left_on="ts", right_on="start", by=["config", "user", "room"],
                      direction="backward")
    ok = (m["end"] > m["ts"]) & m["start"].notna()
    out = np.zeros(len(r), dtype=bool)
    out[m["_i"].to_numpy()] = ok.to_numpy()
    return out


def adapter_comparison(delivery: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Pair configs that differ only by adapter: delivery gain and p95 latency cost of Redis.

    runs: the loader's runs frame (config + labels). One row per pair memory vs redis.
    """
    cols = ["memory", "redis", "ratio_memory", "ratio_redis", "gain", "p95_memory", "p95_redis", "p95_cost_ms"]
    if not len(delivery) or "adapter" not in runs:
        return pd.DataFrame(columns=cols)
    d = delivery.set_index("config")
    others = [k for k in ("balancer", "policy", "transports", "server", "nodes", "tls") if k in runs]
    rows = []
    mem = runs[runs["adapter"] == "memory"]
    red = runs[runs["adapter"] == "redis"]
    for _, a in mem.iterrows():
        for _, b in red.iterrows():
            if all(str(a[k]) == str(b[k]) for k in others) and a["config"] in d.index and b["config"] in d.index:
                ra, rb = d.loc[a["config"]], d.loc[b["config"]]
                rows.append({"memory": a["config"], "redis": b["config"],
                             "ratio_memory": ra["delivery_ratio"], "ratio_redis": rb["delivery_ratio"],
                             "gain": rb["delivery_ratio"] - ra["delivery_ratio"],
                             "p95_memory": ra["lat_p95"], "p95_redis": rb["lat_p95"],
                             "p95_cost_ms": rb["lat_p95"] - ra["lat_p95"]})
    return pd.DataFrame(rows, columns=cols)
