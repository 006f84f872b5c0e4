"""The system under test's resources against the load: USE per stage, the binding resource, nodes needed.

Why: the client side says *when* a knee happens; only the servers' own telemetry (resources.csv,
contract/resources.py) says *why*: a node's CPU at its limit, an event loop that lags, memory near its
limit, Redis, or a balancer that queues. Performance engineers read that per resource as the USE method
does (utilisation, saturation, errors) and size nodes from it, so this module turns the tidy samples
into exactly those answers. Pure functions of frames and plain dicts; the report only lays them out.

Conventions: a sample at ts is the sampler's reading of the second before ts (rates) or a level at ts
(gauges), so a stage's hold [hold_start, end) is covered by samples with hold_start < ts ≤ end, as for
generator.csv (analysis.capacity.generator_stage_cpu). cpu_percent: 100 = one core.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from contract.resources import is_warning

from . import capacity as C
from .metrics import active_users

CPU_BOUND_SHARE = 0.9
"""A process whose mean CPU over a hold is at or above this share of its limit is CPU-bound (a cgroup holds
a limited node just under its quota, so "at the limit" reads as 95-100 %)."""
LAG_BOUND_MS = 100.0
"""Event-loop lag p99 (median over the hold's seconds) above this: the loop is saturated. 100 ms is where a
Socket.IO ack already misses a typical 250 ms p95 SLO once the network and the client add theirs."""
MEMORY_BOUND_SHARE = 0.9
"""RSS at or above this share of the node's memory limit: the next step is the OOM killer."""
THROTTLED_BOUND_SHARE = 0.25
"""CFS throttling in a quarter of the periods (or of the wall time) or more: the quota, not the work, sets the pace.
The share of periods is Kubernetes' own rule (kubernetes-mixin's CPUThrottlingHigh alert, > 25 %): a node whose
mean CPU is well under its quota still stalls its event loop when its bursts hit the quota."""
CFS_PERIODS_PER_S = 10.0
"""targets.cgroups writes a 100 ms CFS period (v1 cpu.cfs_period_us, v2 cpu.max): ten periods a second. The share of
throttled periods is over the periods the group was runnable in (resources.csv `cfs_periods`, the kernel's
nr_periods: Kubernetes' CPUThrottlingHigh rule); a run without them is divided by ten, which understates it."""
ONE_CORE = 100.0
"""The CPU bound of a process without a limit: one core (a Node or Python event loop runs on one)."""
RECONCILE_TOLERANCE = 0.02
"""Server-side clients and the client side's connected sessions may differ by this share (sampling skew)."""
RESOURCE_TARGETS = (10_000, 100_000)
"""Default targets of `nodes_needed_by_resource`."""
LAG_METRIC, CPU_METRIC, RSS_METRIC = "event_loop_lag_ms", "cpu_percent", "rss_bytes"

_STAT_COLUMNS = ["stage", "component", "id", "metric", "mean", "median", "p95", "max", "n"]


def samples(res: pd.DataFrame | None) -> pd.DataFrame:
    """The numeric samples of a resources frame: warning rows left out."""
    if res is None or not len(res):
        return pd.DataFrame(columns=["ts", "component", "id", "metric", "value"])
    return res[~res["metric"].astype(str).map(is_warning).astype(bool)]


def node_limits(res: pd.DataFrame | None, meta: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per node id: {"cpu_cores", "memory_bytes", "source"}; resources.csv rows win over meta.json.

    Why both: the sampler reads the cgroup itself (the truth while the run ran); meta.json records what
    was asked (`cluster_info.node_limits`, or node_cpus / node_memory_mb in the config). Read defensively:
    an older or foreign meta.json may have none of it, or another shape.
    """
    s = samples(res)
    ids = sorted(set(s.loc[s["component"] == "node", "id"].astype(str))) if len(s) else []
    default, per = _meta_limits(meta or {})
    out: dict[str, dict[str, Any]] = {}
    for i in sorted(set(ids) | set(per)):
        lim = {"cpu_cores": None, "memory_bytes": None, "source": None, **default, **per.get(i, {})}
        for metric, key in (("cpu_limit_cores", "cpu_cores"), ("memory_limit_bytes", "memory_bytes")):
            v = s[(s["component"] == "node") & (s["id"] == i) & (s["metric"] == metric)]["value"] if len(s) else ()
            if len(v) and float(np.median(v)) > 0:
                lim[key], lim["source"] = float(np.median(v)), "resources.csv"
        out[i] = lim
    return out


_CPU_KEYS = ("cpu_cores", "cpu_limit_cores", "cpus", "node_cpus", "cpu")
_MEM_BYTES_KEYS = ("memory_bytes", "memory_limit_bytes", "mem_bytes")
_MEM_MB_KEYS = ("memory_mb", "node_memory_mb", "mem_mb")


def _limit_of(d: Any) -> dict[str, Any]:
    """{"cpu_cores", "memory_bytes"} found in one dict under any of the names the runner may use."""
    if not isinstance(d, dict):
        return {}
    out: dict[str, Any] = {}
    cpu = next((_pos(d.get(k)) for k in _CPU_KEYS if _pos(d.get(k))), None)
    mem = next((_pos(d.get(k)) for k in _MEM_BYTES_KEYS if _pos(d.get(k))), None)
    mem = mem or next(((_pos(d.get(k)) or 0) * 2**20 for k in _MEM_MB_KEYS if _pos(d.get(k))), None)
    if cpu:
        out["cpu_cores"] = cpu
    if mem:
        out["memory_bytes"] = float(mem)
    if out:
        out["source"] = "meta.json"
    return out


def _meta_limits(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(limits for every node, limits per node id) from meta.json, whatever of it is there."""
    ci = meta.get("cluster_info") if isinstance(meta.get("cluster_info"), dict) else {}
    default: dict[str, Any] = {}
    for d in (meta.get("config"), meta.get("cluster"), ci, ci.get("limits"), ci.get("node_limits")):
        default.update(_limit_of(d))
    per: dict[str, dict[str, Any]] = {}
    nl = ci.get("node_limits")
    if isinstance(nl, dict):
        per.update({str(k): _limit_of(v) for k, v in nl.items() if _limit_of(v)})
    for n in ci.get("nodes") or [] if isinstance(ci.get("nodes"), list) else []:
        if isinstance(n, dict) and n.get("id") is not None and (_limit_of(n) or _limit_of(n.get("limits"))):
            per[str(n["id"])] = {**_limit_of(n.get("limits")), **_limit_of(n)}
    return default, per


def _pos(v: Any) -> float | None:
    """A finite positive number, else None (bool, text, 0, nan are not limits)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        return None
    return float(v)


def hold_span(w: Any) -> tuple[float, float]:
    """The samples that read a stage's hold: ts in (lo, hi]. The hold [hold_start, end) itself, less its first and
    last second when it is longer than 3 s: a rate read at hold_start + 0.3 is mostly the ramp before it, and the
    last one may read the next ramp or the run's stop (every client gone)."""
    lo, hi = float(w["hold_start"]), float(w["end"])
    return (lo + 1.0, hi - 1.0) if hi - lo > 3.0 else (lo, hi)


def stage_stats(res: pd.DataFrame | None, windows: pd.DataFrame) -> pd.DataFrame:
    """Per stage × component × id × metric over the hold: mean, median, p95, max, n (samples)."""
    s = samples(res)
    rows = []
    for _, w in windows.iterrows():
        lo, hi = hold_span(w)
        h = s[(s["ts"] > lo) & (s["ts"] <= hi)] if len(s) else s
        if not len(h):
            continue
        g = h.groupby(["component", "id", "metric"], sort=True)["value"]
        agg = g.agg(mean="mean", median="median", p95=lambda x: x.quantile(0.95), max="max", n="size").reset_index()
        agg.insert(0, "stage", int(w["stage"]))
        rows.append(agg)
    return pd.concat(rows, ignore_index=True)[_STAT_COLUMNS] if rows else pd.DataFrame(columns=_STAT_COLUMNS)


def _get(st: dict[tuple[int, str, str, str], dict[str, Any]], stage: int, comp: str, id_: str, metric: str,
         col: str = "mean") -> float | None:
    r = st.get((stage, comp, id_, metric))
    return _num(r[col]) if r is not None else None


def use_table(st: pd.DataFrame, stats: pd.DataFrame, limits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The USE table: one row per stage × component × id that has samples in the hold.

    utilisation = mean cpu_percent / (100 × cpu_limit_cores) for a limited node, else / 100 (one core);
    memory_utilisation = mean rss / memory limit (limited nodes); saturation = event-loop lag p99
    (median over the hold's seconds), throttled share (throttled ms per second / 1000), balancer queue
    (max); errors = the stage's failed steps (client side) and the balancer's errors per second.
    """
    out: list[dict[str, Any]] = []
    if not len(st):
        return out
    by_stage = {int(r["stage"]): r for _, r in stats.iterrows()} if stats is not None else {}
    look = {(int(r["stage"]), str(r["component"]), str(r["id"]), str(r["metric"])): r for r in st.to_dict("records")}
    for (stage, comp, id_), _ in st.groupby(["stage", "component", "id"], sort=True):
        stage, comp, id_ = int(stage), str(comp), str(id_)
        srow = by_stage.get(stage)
        lim = limits.get(id_, {}) if comp == "node" else {}
        cpu = _get(look, stage, comp, id_, CPU_METRIC)
        cpu_limit = 100.0 * lim["cpu_cores"] if lim.get("cpu_cores") else ONE_CORE
        rss = _get(look, stage, comp, id_, RSS_METRIC)
        mem_limit = lim.get("memory_bytes")
        thr = _get(look, stage, comp, id_, "throttled_ms")
        periods = _get(look, stage, comp, id_, "throttled_periods")
        runnable = _get(look, stage, comp, id_, "cfs_periods")
        # Kubernetes' rule divides by the periods the group was runnable in (nr_periods); older runs lack them:
        # then by the ten periods of a second, which understates the share (idle periods are not counted)
        per_s = runnable if runnable and runnable > 0 else CFS_PERIODS_PER_S
        fr = _num(srow.get("failure_ratio")) if srow is not None else None
        steps = _num(srow.get("steps")) if srow is not None else None
        failed = int(round(fr * steps)) if fr is not None and steps is not None else None
        out.append({
            "stage": stage, "users": int(srow["users"]) if srow is not None else None, "component": comp, "id": id_,
            "cpu_percent": cpu, "cpu_p95": _get(look, stage, comp, id_, CPU_METRIC, "p95"),
            "cpu_limit_percent": cpu_limit, "cpu_limited": bool(lim.get("cpu_cores")),
            "utilisation": cpu / cpu_limit if cpu is not None else None,
            "rss_bytes": rss, "memory_limit_bytes": mem_limit,
            "memory_utilisation": rss / mem_limit if rss is not None and mem_limit else None,
            "clients": _get(look, stage, comp, id_, "clients"),
            "lag_p99_ms": _get(look, stage, comp, id_, LAG_METRIC, "median"),
            "lag_max_ms": _get(look, stage, comp, id_, LAG_METRIC, "max"),
            "throttled_share": _max_or_none(thr / 1000.0 if thr is not None else None,
                                            min(1.0, periods / per_s) if periods is not None else None),
            "throttled_time_share": thr / 1000.0 if thr is not None else None,
            "throttled_period_share": min(1.0, periods / per_s) if periods is not None else None,
            "queue_max": _get(look, stage, comp, id_, "queue", "max"),
            "balancer_errors_per_s": _get(look, stage, comp, id_, "errors"),
            "ops_per_sec": _get(look, stage, comp, id_, "ops_per_sec"),
            "failure_ratio": fr,
            "failed_steps": failed,
        })
    return out


def _max_or_none(*vals: float | None) -> float | None:
    known = [v for v in vals if v is not None]
    return max(known) if known else None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def saturations(row: dict[str, Any]) -> list[dict[str, Any]]:
    """What in one USE row is at its bound: [{component, id, metric, value, limit, severity, why}], worst first."""
    c, i = row["component"], row["id"]
    hits = []

    def hit(metric: str, value: float, limit: float, severity: float, why: str, rank: int = 0) -> None:
        hits.append({"component": c, "id": i, "metric": metric, "value": value, "limit": limit,
                     "severity": severity, "why": why, "rank": rank})

    cpu, lim = row.get("cpu_percent"), row.get("cpu_limit_percent") or ONE_CORE
    if cpu is not None and c in ("node", "redis", "balancer") and cpu >= CPU_BOUND_SHARE * lim:
        what = f"its {lim / 100:g}-core limit" if row.get("cpu_limited") else "one core"
        hit(CPU_METRIC, cpu, lim, cpu / lim, f"CPU at {cpu:.1f}% of {what} ({cpu / lim:.0%}, bound ≥ {CPU_BOUND_SHARE:.0%})")
    thr = row.get("throttled_share")
    if thr is not None and thr >= THROTTLED_BOUND_SHARE and not hits:
        # the resource is the node's CPU (its quota); throttling is the evidence, said in `why`
        pshare, tshare = row.get("throttled_period_share"), row.get("throttled_time_share")
        how = "; ".join(x for x in (f"{pshare:.0%} of its CFS periods" if pshare is not None else "",
                                    f"{tshare:.0%} of the wall time" if tshare is not None else "") if x)
        mean = f" while its mean CPU was {cpu:.1f}% of a {lim:.4g}% quota (its bursts hit the quota)" if cpu is not None else ""
        hit(CPU_METRIC if cpu is not None else "throttled_periods", cpu if cpu is not None else thr,
            lim if cpu is not None else THROTTLED_BOUND_SHARE, thr / THROTTLED_BOUND_SHARE,
            f"CPU quota: throttled in {how} (bound ≥ {THROTTLED_BOUND_SHARE:.0%}, Kubernetes' CPUThrottlingHigh rule){mean}",
            rank=1)
    lag = row.get("lag_p99_ms")
    if lag is not None and lag > LAG_BOUND_MS:
        hit(LAG_METRIC, lag, LAG_BOUND_MS, lag / LAG_BOUND_MS,
            f"event-loop lag p99 {lag:.0f} ms (median over the hold's seconds; bound > {LAG_BOUND_MS:.0f} ms)", rank=2)
    rss, mem = row.get("rss_bytes"), row.get("memory_limit_bytes")
    if rss is not None and mem and rss >= MEMORY_BOUND_SHARE * mem:
        hit(RSS_METRIC, rss, mem, rss / mem, f"RSS {rss / 2**20:.0f} MiB of its {mem / 2**20:.0f} MiB limit ({rss / mem:.0%})")
    q = row.get("queue_max")
    if q is not None and q > 0 and c == "balancer":
        hit("queue", q, 0.0, 1.0 + q, f"balancer queue up to {q:.0f} (bound > 0: requests wait for a free server)")
    return sorted(hits, key=lambda h: -h["severity"])


def binding(use: list[dict[str, Any]], k: dict[str, Any], have_samples: bool) -> tuple[dict[str, Any] | None, str, int | None]:
    """The resource that saturates first, up to the knee: (binding or None, the reason, its stage).

    Stages are scanned in order of users up to the first stage that broke the SLO (the knee's next
    step), stopping before a generator-bound one (it measures the generator); the first stage where
    anything is at its bound names the binding resource: a cause before a symptom (rank: a resource at its
    bound — CPU, memory, Redis, the balancer's queue — before a CPU quota seen by its throttling, and both
    before event-loop lag, which is what a saturated CPU looks like from inside the loop: lag names the
    bound only when nothing else is at it), then the one furthest past its bound.
    """
    if not have_samples:
        return None, "no resources.csv samples (a run made before issue 12, or without the sampler)", None
    stages = sorted({r["stage"] for r in use})
    if not stages:
        return None, "no resource samples inside any stage hold", None
    stop = k.get("first_failing_stage")
    gen = k.get("generator_stage")
    last = None
    for s in stages:
        if gen is not None and s >= gen:
            break
        last = s
        hits = [h for r in use if r["stage"] == s for h in saturations(r)]
        if hits:
            h = min(hits, key=lambda x: (x["rank"], -x["severity"]))
            users = next((r["users"] for r in use if r["stage"] == s), None)
            when = ("the stage that broke the SLO" if s == stop else "before the SLO broke" if stop is not None and s < stop
                    else "while the SLO still held (the knee was not reached)")
            reason = f"{h['component']} {h['id']}, the first resource at its bound: {h['why']}, in stage {s} ({users} users), {when}"
            return {k_: h[k_] for k_ in ("component", "id", "metric", "value", "limit")}, reason, s
        if stop is not None and s >= stop:
            break
    if last is None:
        return None, f"stage {gen}, the first with resource samples, was generator-bound: nothing to judge", None
    reason = _none_reason(use, last, stop)
    if gen is not None and last < gen:
        reason += f"; from stage {gen} on the load generator was saturated (those stages measure it, not the servers)"
    return None, reason, None


def _summary(use: list[dict[str, Any]], b: dict[str, Any] | None, stage: int | None) -> str | None:
    """The binding resource in a few words for the first screen: 'node n1 CPU quota: throttled in 34% of its CFS
    periods, stage 3 (300 users)' (None without one)."""
    if b is None:
        return None
    for r in use:
        if r["stage"] == stage and r["component"] == b["component"] and r["id"] == b["id"]:
            for h in saturations(r):
                if h["metric"] == b["metric"]:
                    return f"{b['component']} {b['id']} {h['why'].split(' (')[0]}, stage {stage} ({r['users']} users)"
    return binding_text(b)


def _none_reason(use: list[dict[str, Any]], last: int, stop: int | None) -> str:
    rows = [r for r in use if r["stage"] == last]
    utils = [r for r in rows if r.get("utilisation") is not None and r["component"] == "node"]
    parts = []
    if utils:
        top = max(utils, key=lambda r: r["utilisation"])
        parts.append(f"busiest node {top['id']} at {top['utilisation']:.0%} of its CPU bound")
    lags = [r["lag_p99_ms"] for r in rows if r.get("lag_p99_ms") is not None]
    if lags:
        parts.append(f"event-loop lag p99 ≤ {max(lags):.0f} ms")
    where = f"up to stage {last}" + (" (the stage that broke the SLO)" if stop == last else "")
    return (f"no sampled resource reached its bound {where}" + (": " + ", ".join(parts) if parts else "")
            + "; the limit is elsewhere (the load generator, the network, or a resource not sampled)")


def reconciliation(res: pd.DataFrame | None, events: pd.DataFrame, windows: pd.DataFrame) -> dict[str, Any] | None:
    """Server-side connected clients (sum over nodes) against the client side's connected sessions.

    Compared at the same seconds: a sample at ts (a gauge) against the sessions up at the start of its
    second (connects minus disconnects of the rows, analysis.metrics.active_users). Only seconds every
    sampled node reported, and only inside stage holds when there are stages (a ramp moves faster than a
    one-second sampler). flagged: the median relative difference exceeds RECONCILE_TOLERANCE.
    """
    s = samples(res)
    cl = s[(s["component"] == "node") & (s["metric"] == "clients")] if len(s) else s
    if not len(cl) or events is None or not len(events):
        return None
    cl = cl.assign(sec=np.floor(cl["ts"].to_numpy(dtype=float)))
    per = cl.groupby("sec").agg(server=("value", "sum"), ids=("id", "nunique")).reset_index()
    per = per[per["ids"] == cl["id"].nunique()]
    t0 = math.floor(float(events["ts"].min()))
    e = events.assign(config="c")
    au = active_users(e, t0={"c": float(t0)})
    if not len(au) or not len(per):
        return None
    client = pd.DataFrame({"sec": au["t"].to_numpy(dtype=float) + t0 + 1.0, "client": au["active"].to_numpy(dtype=float)})
    m = pd.merge_asof(per.sort_values("sec"), client.sort_values("sec"), on="sec", direction="backward").dropna()
    if len(windows):
        inside = np.zeros(len(m), dtype=bool)
        for _, w in windows.iterrows():
            lo, hi = hold_span(w)
            inside |= (m["sec"] >= lo).to_numpy() & (m["sec"] + 1 <= hi).to_numpy()
        m = m[inside]
    m = m[m["client"] > 0]
    if not len(m):
        return None
    rel = (m["server"] - m["client"]).abs() / m["client"]
    med = float(rel.median())
    return {"seconds": int(len(m)), "server_mean": float(m["server"].mean()), "client_mean": float(m["client"].mean()),
            "diff_median": med, "diff_max": float(rel.max()), "tolerance": RECONCILE_TOLERANCE,
            "flagged": med > RECONCILE_TOLERANCE}


def memory_per_connection(res: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Per node: the RSS slope against its own clients (least squares over the seconds with both)."""
    s = samples(res)
    n = s[(s["component"] == "node") & s["metric"].isin([RSS_METRIC, "clients"])] if len(s) else s
    out: dict[str, dict[str, Any]] = {}
    if not len(n):
        return out
    piv = n.pivot_table(index=["id", "ts"], columns="metric", values="value", aggfunc="mean")
    if not {RSS_METRIC, "clients"} <= set(piv.columns):
        return out
    for id_, g in piv.dropna().groupby(level=0, sort=True):
        x, y = g["clients"].to_numpy(dtype=float), g[RSS_METRIC].to_numpy(dtype=float)
        if len(g) < 3 or x.max() - x.min() < 1:
            continue
        b, a = np.polyfit(x, y, 1)
        sst = float(np.sum((y - y.mean()) ** 2))
        r2 = 1 - float(np.sum((y - (a + b * x)) ** 2)) / sst if sst > 0 else math.nan
        out[str(id_)] = {"bytes_per_client": float(b), "intercept_bytes": float(a), "r2": r2, "points": int(len(g)),
                         "clients_min": float(x.min()), "clients_max": float(x.max())}
    return out


def cpu_per_step(st: pd.DataFrame, cells: pd.DataFrame | None, windows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per node: CPU milliseconds per step it served (ok steps of the cells at that node), median over stages.

    cpu ms in a hold = mean cpu_percent / 100 × hold seconds × 1000; the steps are the client's counts
    attributed to the node (cells keyed by node), so a broadcast's receipts count where they were sent from.
    """
    out: dict[str, dict[str, Any]] = {}
    if not len(st) or cells is None or not len(cells):
        return out
    sec = cells["second"].to_numpy(dtype=float)
    node = cells["node"].astype(str).to_numpy()
    ok = cells["ok"].to_numpy() == 1
    per: dict[str, list[float]] = {}
    for _, w in windows.iterrows():
        hold = (sec >= w["hold_start"]) & (sec < w["end"]) & ok
        dur = float(w["end"] - w["hold_start"])
        cpu = st[(st["stage"] == int(w["stage"])) & (st["component"] == "node") & (st["metric"] == CPU_METRIC)]
        for _, r in cpu.iterrows():
            steps = int(cells["count"].to_numpy()[hold & (node == str(r["id"]))].sum())
            if steps:
                per.setdefault(str(r["id"]), []).append(float(r["mean"]) / 100 * dur * 1000 / steps)
    for id_, v in per.items():
        out[id_] = {"cpu_ms_per_step": float(np.median(v)), "stages": len(v)}
    return out


def _linear_at(xs: np.ndarray, ys: np.ndarray, level: float) -> tuple[float, float, float] | None:
    """(x where the least-squares line y = a + b·x reaches `level`, a, b); None without a rising line."""
    if len(xs) < 2 or np.ptp(xs) <= 0:
        return None
    b, a = np.polyfit(xs, ys, 1)
    if not b > 0:
        return None
    return float((level - a) / b), float(a), float(b)


def cpu_users_per_node(use: list[dict[str, Any]], nodes: int) -> dict[str, Any] | None:
    """Users per node at which a node's CPU reaches its bound: a linear fit of CPU against the node's clients
    (users / nodes where the server does not count them) over the stages below the bound; the tightest node."""
    best: dict[str, Any] | None = None
    for id_ in sorted({r["id"] for r in use if r["component"] == "node"}):
        rows = [r for r in use if r["component"] == "node" and r["id"] == id_ and r.get("cpu_percent") is not None]
        if not rows:
            continue
        lim = rows[0]["cpu_limit_percent"] or ONE_CORE
        xs = np.array([r["clients"] if r.get("clients") is not None else (r["users"] or 0) / max(1, nodes) for r in rows])
        ys = np.array([r["cpu_percent"] for r in rows])
        thr = np.array([r["throttled_share"] if r.get("throttled_share") is not None else 0.0 for r in rows])
        free = (ys < CPU_BOUND_SHARE * lim) & (thr < THROTTLED_BOUND_SHARE)  # a capped stage would flatten the line
        fit = _linear_at(xs[free], ys[free], lim)
        model = ("linear fit of the node's CPU % against its connected clients over the stages below its bound "
                 f"({CPU_BOUND_SHARE:.0%} of {lim:.4g}%, throttled < {THROTTLED_BOUND_SHARE:.0%}), solved for {lim:.4g}%")
        x = fit[0] if fit is not None and fit[0] > 0 else None
        if (~free).any():  # a stage was at the bound: the answer lies at or below its clients, whatever the line says
            at_bound = float(xs[~free].min())
            if x is None or x > at_bound:
                below = xs[free & (xs < at_bound)]
                x = at_bound if x is not None or not len(below) else float(below.max())
                model += (f"; held to {x:.4g} clients: the node was at its CPU bound (or its quota throttled it) with "
                          f"{at_bound:.4g}" if fit is not None else
                          f"; no fit: {x:.4g} clients, the most below the stage at its CPU bound ({at_bound:.4g})")
        if x is None:
            continue
        if best is None or x < best["users_per_node"]:
            best = {"users_per_node": x, "node": id_, "intercept": fit[1] if fit else None,
                    "slope": fit[2] if fit else None, "limit_percent": lim, "points": int(free.sum()),
                    "measured_max": float(xs.max()), "extrapolated": bool(x > xs.max()), "model": model}
    return best


NODES_BY_RESOURCE_ASSUMPTIONS = (
    "per resource, the users one node carries at its bound: CPU, by a linear fit of the node's CPU against its "
    "connected clients over the stages below the bound, solved for the node's CPU limit (one core without a limit); "
    "memory, by the memory per connection (RSS against clients, least squares) solved for the node's memory limit; "
    "the SLO, by the knee (the busiest node's users at the last stage that met the SLO);",
    "nodes for N users = ceil(N × imbalance / (users per node × (1 − headroom))) per resource (the same formula and "
    "imbalance as the SLO's nodes_needed); the answer is the largest, and `by` names the resource that sets it;",
    "a bound beyond the most clients any node carried in the run is an extrapolation of the named linear model, "
    "marked so; nothing is scaled past what was measured without saying so;",
    "a node count above the one measured assumes each node's cost does not grow with the node count (linear "
    "scale-out); with the Redis adapter every node receives every broadcast, so it does grow: such rows are "
    "marked extrapolated and are lower bounds;",
    "the same scenario per user (message rate, room size, payload) and the same node size as in the measured run.",
)


def _resource_entry(resource: str, upn: float | None, targets: tuple[int, ...], imb: float, headroom: float,
                    **info: Any) -> dict[str, Any]:
    nodes = {str(t): C.nodes_needed(t, upn, imb, headroom) for t in targets} if upn else None
    return {"resource": resource, "users_per_node": upn, "nodes": nodes, **info}


def nodes_by_resource(use: list[dict[str, Any]], mem: dict[str, dict[str, Any]], limits: dict[str, dict[str, Any]],
                      plan: dict[str, Any], k: dict[str, Any], nodes: int, targets: tuple[int, ...] = RESOURCE_TARGETS,
                      headroom: float = 0.25) -> dict[str, Any]:
    """Nodes needed for each target per resource (CPU, memory, SLO knee) and their maximum; see
    NODES_BY_RESOURCE_ASSUMPTIONS. Every row says whether it extrapolates and by which model."""
    imb = plan.get("imbalance") or 1.0
    rows = []
    cpu = cpu_users_per_node(use, nodes)
    rows.append(_resource_entry("cpu", cpu["users_per_node"] if cpu else None, targets, imb, headroom,
                                **(cpu or {"note": "no rising CPU fit (fewer than two stages below the bound)"})))
    memrow: dict[str, Any] = {"note": "no memory limit on the nodes: memory does not bound a node of this size"}
    upn = None
    for id_, m in sorted(mem.items()):
        lim = limits.get(id_, {}).get("memory_bytes")
        if not lim or m["bytes_per_client"] <= 0:
            continue
        x = (lim - m["intercept_bytes"]) / m["bytes_per_client"]
        if x > 0 and (upn is None or x < upn):
            upn = x
            memrow = {"node": id_, "bytes_per_client": m["bytes_per_client"], "limit_bytes": lim,
                      "measured_max": m["clients_max"], "extrapolated": bool(x > m["clients_max"]),
                      "model": "linear fit of RSS against connected clients (memory per connection), solved for the "
                               "memory limit"}
    rows.append(_resource_entry("memory", upn, targets, imb, headroom, **memrow))
    reached = k.get("first_failing_stage") is not None
    rows.append(_resource_entry("slo", plan.get("capacity_per_node"), targets, imb, headroom, extrapolated=False,
                                model="the measured SLO knee (capacity_per_node)",
                                note=None if reached else "the knee was not reached: a lower bound of the capacity, "
                                                          "so these node counts are upper bounds"))
    out = {"targets": _answer(rows, targets, nodes), "resources": rows, "imbalance": imb, "headroom": headroom,
           "measured_nodes": nodes, "node_size": node_size(limits), "assumptions": list(NODES_BY_RESOURCE_ASSUMPTIONS)}
    out["line"] = nodes_line(out)
    return out


def _answer(rows: list[dict[str, Any]], targets: Any, nodes: int) -> dict[str, Any]:
    """Per target the largest node count over the resources (None where a model has no answer: its ceiling)."""
    answer: dict[str, Any] = {}
    for t in targets:
        t = str(t)
        capped = [r for r in rows if r.get("nodes") and t in r["nodes"] and r["nodes"][t] is None and r.get("ceiling_users")]
        if capped:
            answer[t] = {"nodes": None, "by": capped[0]["resource"], "extrapolated": True, "beyond_measured_nodes": True,
                         "ceiling_users": capped[0]["ceiling_users"]}
            if capped[0].get("ceiling_range_users"):
                answer[t]["ceiling_range_users"] = capped[0]["ceiling_range_users"]
            if (capped[0].get("min_cpu_cores") or {}).get(t) is not None:
                answer[t]["min_cpu_cores"] = {"cores": capped[0]["min_cpu_cores"][t], "extrapolated": True}
            continue
        cands = [(r["nodes"][t], r) for r in rows if r.get("nodes") and r["nodes"].get(t)]
        if not cands:
            continue
        n, r = max(cands, key=lambda c: c[0])
        beyond = n > (r.get("measured_nodes_max") or nodes)
        answer[t] = {"nodes": n, "by": r["resource"], "extrapolated": bool(r.get("extrapolated")) or beyond,
                     "beyond_measured_nodes": beyond}
    return answer


SCALE_OUT_MODEL = ("CPU % of a node = i + a × its own clients + b × the cluster's users, least squares over the stages "
                   "below the CPU bound of the configs that differ only in node count: with a Redis adapter every node "
                   "handles every user's broadcasts, so b > 0 and a node then carries (bound − i) / (a + b × n) clients; "
                   "past (bound − i) / b users in all, no node count of this size is enough")

SCALE_OUT_MIN_POINTS = 4
"""Fewer stage readings than this (below the bound, over all node counts) fit no three-parameter model."""
SCALE_OUT_Z = 2.0
"""b is taken as growing only when b − 2 standard errors > 0 (about 95 %); the ceiling's range is b ± 2 s.e."""


def _scale_out_points(groups: list[dict[str, Any]]) -> list[tuple[float, float, float, float]]:
    """(own clients, cluster users, cpu %, cpu limit %) of every node at every stage below its CPU bound."""
    pts = []
    for g in groups:
        n = max(1, int(g["nodes"]))
        for r in g.get("use") or []:
            cpu, users = r.get("cpu_percent"), r.get("users")
            if r.get("component") != "node" or cpu is None or not users:
                continue
            lim = r.get("cpu_limit_percent") or ONE_CORE
            if cpu >= CPU_BOUND_SHARE * lim or (r.get("throttled_share") or 0.0) >= THROTTLED_BOUND_SHARE:
                continue  # a capped reading would flatten the line
            own = r["clients"] if r.get("clients") is not None else users / n
            pts.append((float(own), float(users), float(cpu), float(lim)))
    return pts


def scale_out_fit(groups: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The per-node CPU cost against the node count, fitted jointly over a campaign's configs (SCALE_OUT_MODEL).

    groups: [{"config", "nodes", "use": that config's USE rows}], configs that differ only in node count. Why one
    joint fit, not one slope per config compared across configs: each config's own slope rests on three or four
    stages, and the growth across node counts is a small difference of such slopes, so its ceiling moved by 3×
    between runs of the same campaign; the joint fit uses every reading at once and says how sure it is (the
    ceiling's range from b's standard error). None below two node counts or SCALE_OUT_MIN_POINTS readings.
    When b is not above zero beyond its error the scale-out is linear: b = 0, fitted again without it.
    """
    counts = sorted({int(g["nodes"]) for g in groups if g.get("nodes")})
    pts = _scale_out_points(groups)
    if len(counts) < 2 or len(pts) < SCALE_OUT_MIN_POINTS:
        return None
    own, users, cpu, lim = (np.array(c) for c in zip(*pts, strict=True))
    X = np.column_stack([np.ones_like(own), own, users])
    coef, se, r2 = _lstsq(X, cpu)
    growing = coef is not None and coef[2] - SCALE_OUT_Z * se[2] > 0
    if not growing:
        coef2, se2, r2 = _lstsq(X[:, :2], cpu)
        if coef2 is None:
            return None
        coef, se = np.append(coef2, 0.0), np.append(se2, 0.0)
    assert coef is not None
    i, a, b = (float(v) for v in coef)
    bound = float(lim.min())
    out = {"c0": a, "c1": b, "intercept": i, "limit_percent": bound, "model": SCALE_OUT_MODEL, "r2": r2,
           "stderr": {"intercept": float(se[0]), "c0": float(se[1]), "c1": float(se[2])}, "readings": len(pts),
           "growing": bool(growing), "measured_nodes": [counts[0], counts[-1]],
           "points": [{"config": g.get("config"), "nodes": int(g["nodes"]),
                       "readings": len(_scale_out_points([g]))} for g in groups]}
    if growing:  # the ceiling without headroom: (bound − i) / b, and its range from b ± 2 s.e.
        lo_b, hi_b = b + SCALE_OUT_Z * se[2], b - SCALE_OUT_Z * se[2]
        out["ceiling_at_bound"] = (bound - i) / b
        out["ceiling_range_at_bound"] = [(bound - i) / lo_b, (bound - i) / hi_b]
    return out


def _lstsq(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, float]:
    """(coefficients, their standard errors, R²) of y ≈ X·c; None without more readings than unknowns or a full rank."""
    k = X.shape[1]
    if len(y) <= k or np.linalg.matrix_rank(X) < k:
        return None, np.zeros(k), math.nan
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    s2 = float(resid @ resid) / (len(y) - k)
    se = np.sqrt(np.clip(np.diag(s2 * np.linalg.pinv(X.T @ X)), 0, None))
    sst = float(np.sum((y - y.mean()) ** 2))
    return coef, se, 1 - float(resid @ resid) / sst if sst > 0 else math.nan


def scale_out_nodes(model: dict[str, Any], target: int, imbalance: float, headroom: float) -> int | None:
    """The fewest n with target × imbalance / n ≤ (bound − intercept) / (c0 + c1 n) × (1 − headroom); None when no n
    does (the model's ceiling, (bound − intercept)(1 − headroom) / (c1 × imbalance) users, is below the target)."""
    room = (model["limit_percent"] - model["intercept"]) * (1 - headroom)
    need = target * max(1.0, imbalance)
    denom = room - need * model["c1"]
    if room <= 0 or denom <= 0:
        return None
    return max(1, math.ceil(need * model["c0"] / denom - 1e-9))


def min_cpu_cores(model: dict[str, Any], target: int, imbalance: float, headroom: float) -> float:
    """The smallest node (cores) that can carry `target` users at any node count: the broadcast share b × users
    alone must fit the bound less the headroom (the own-clients share shrinks to nothing as nodes are added).
    An extrapolation across node sizes: CPU per message is taken as the same at every quota."""
    return (model["intercept"] + target * max(1.0, imbalance) * model["c1"] / (1 - headroom)) / ONE_CORE


def apply_scale_out(nbr: dict[str, Any], model: dict[str, Any]) -> None:
    """Add the scale-out CPU row to a config's nodes_needed_by_resource and answer again (in place)."""
    imb, h = float(nbr.get("imbalance") or 1.0), float(nbr.get("headroom") or 0.25)
    targets = list(nbr.get("targets") or {}) or [str(t) for t in RESOURCE_TARGETS]
    nodes = {t: scale_out_nodes(model, int(float(t)), imb, h) for t in targets}
    room = (model["limit_percent"] - model["intercept"]) * (1 - h)
    ceiling = room / (model["c1"] * imb) if model["c1"] > 0 else None
    rng = model.get("ceiling_range_at_bound")
    hi = model["measured_nodes"][1]
    row = {"resource": "cpu_scale_out", "users_per_node": None, "nodes": nodes, "model": model["model"],
           "fit": {k: model.get(k) for k in ("c0", "c1", "intercept", "limit_percent", "points", "measured_nodes", "r2",
                                             "stderr", "readings", "growing")},
           "ceiling_users": ceiling,
           "ceiling_range_users": [v * (1 - h) / imb for v in rng] if ceiling is not None and rng else None,
           "ceiling_users_one_core": ((ONE_CORE - model["intercept"]) * (1 - h) / (model["c1"] * imb)
                                      if model["c1"] > 0 else None),
           "min_cpu_cores": {t: min_cpu_cores(model, int(float(t)), imb, h) for t in targets} if model["c1"] > 0 else None,
           "measured_nodes_max": hi, "extrapolated": any(n is None or n > hi for n in nodes.values())}
    nbr["resources"] = [r for r in nbr.get("resources") or [] if r.get("resource") != "cpu_scale_out"] + [row]
    nbr["targets"] = _answer(nbr["resources"], targets, int(nbr.get("measured_nodes") or 1))
    nbr["line"] = nodes_line(nbr)


def node_size(limits: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The nodes' size as measured: {"cpu_cores", "memory_bytes", "label"} (the first node's; None = no limit)."""
    lim = next(iter(limits.values()), {}) if limits else {}
    cpu, mem = lim.get("cpu_cores"), lim.get("memory_bytes")
    label = (f"{cpu:g} CPU" if cpu else "no CPU limit") + " / " + (f"{mem / 2**20:.0f} MiB" if mem else "no memory limit")
    return {"cpu_cores": cpu, "memory_bytes": mem, "label": label}


def over_time(res: pd.DataFrame | None, t0: float | None) -> pd.DataFrame:
    """Node CPU, RSS and event-loop lag per sample: id, metric, t (s since the config's first event), value."""
    s = samples(res)
    n = s[(s["component"] == "node") & s["metric"].isin([CPU_METRIC, RSS_METRIC, LAG_METRIC])] if len(s) else s
    if not len(n):
        return pd.DataFrame(columns=["id", "metric", "t", "value"])
    t = n["ts"].to_numpy(dtype=float) - (t0 if t0 is not None else float(n["ts"].min()))
    return pd.DataFrame({"id": n["id"].astype(str).to_numpy(), "metric": n["metric"].astype(str).to_numpy(),
                         "t": t, "value": n["value"].to_numpy(dtype=float)})


def analyse(res: pd.DataFrame | None, meta: dict[str, Any] | None, windows: pd.DataFrame | None,
            stats: pd.DataFrame | None, k: dict[str, Any] | None, plan: dict[str, Any] | None,
            cells: pd.DataFrame | None, events: pd.DataFrame | None, nodes: int,
            targets: tuple[int, ...] = RESOURCE_TARGETS, headroom: float = 0.25) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One config: (the keys it adds to `capacity`, its `resources` section or None without resources.csv).

    capacity gains binding, binding_reason, binding_stage and nodes_needed_by_resource (None without
    samples or stages); the section holds the node limits, the USE table, the reconciliation, memory per
    connection and CPU per step per node.
    """
    s = samples(res)
    have = bool(len(s))
    windows = windows if windows is not None else pd.DataFrame(columns=["stage", "users", "ramp_start", "hold_start", "end"])
    limits = node_limits(res, meta)
    st = stage_stats(res, windows)
    stepped = stats is not None and len(stats) >= 2 and len(windows) >= 2
    use = use_table(st, stats, limits) if stepped else []
    if stepped and k is not None:
        b, reason, stage = binding(use, k, have)
    else:
        b, stage = None, None
        reason = ("one load level only: the binding resource is found on a step load ([load] steps)" if have
                  else "no resources.csv samples (a run made before issue 12, or without the sampler)")
    mem = memory_per_connection(res)
    nbr = (nodes_by_resource(use, mem, limits, plan or {}, k or {}, nodes, targets, headroom)
           if have and stepped and k is not None else None)
    cap = {"binding": b, "binding_reason": reason, "binding_stage": stage, "binding_summary": _summary(use, b, stage),
           "nodes_needed_by_resource": nbr}
    if res is None or not len(res):
        return cap, None
    warn_rows = int(len(res) - len(s))
    comps: dict[str, list[str]] = {}
    for (c, i), _ in s.groupby(["component", "id"], sort=True) if have else []:
        comps.setdefault(str(c), []).append(str(i))
    section = {"samples": int(len(s)), "sampler_warnings": warn_rows, "components": comps, "limits": limits,
               "node_size": node_size(limits), "use": use, "reconciliation": reconciliation(res, events, windows),
               "memory_per_connection": mem, "cpu_per_step": cpu_per_step(st, cells, windows)}
    return cap, section


_WHAT = {CPU_METRIC: "CPU", RSS_METRIC: "memory (RSS)", LAG_METRIC: "event-loop lag", "throttled_ms": "CPU throttling",
         "queue": "queue"}
_UNIT = {CPU_METRIC: "%", LAG_METRIC: " ms", "throttled_ms": " ms/s"}


def binding_text(b: dict[str, Any] | None) -> str | None:
    """'node n1 CPU: 24.4% against a bound of 25%' (None without a binding resource)."""
    if not isinstance(b, dict) or not b.get("component"):
        return None
    m = str(b.get("metric"))
    v, lim = _num(b.get("value")), _num(b.get("limit"))
    if m == RSS_METRIC and v is not None and lim:
        val = f"{v / 2**20:.0f} MiB of {lim / 2**20:.0f} MiB"
    elif v is not None:
        u = _UNIT.get(m, "")
        val = f"{v:.3g}{u} against a bound of {lim:.3g}{u}" if lim is not None else f"{v:.3g}{u}"
    else:
        val = "value unknown"
    return f"{b['component']} {b.get('id')} {_WHAT.get(m, m)}: {val}"


def nodes_line(nbr: dict[str, Any] | None) -> str | None:
    """'nodes of 0.25 CPU / 512 MiB: 10,000 users → 90 (by CPU), …' with extrapolations marked; None without targets.

    A target past a scale-out ceiling reads 'none of this size', the ceiling (with its range and the headroom it
    keeps) said once, and the node size that could carry it (beyond one core: no single event loop can)."""
    if not isinstance(nbr, dict) or not nbr.get("targets"):
        return None
    size = (nbr.get("node_size") or {}).get("label") or "the measured size"
    names = {"cpu": "CPU", "memory": "memory", "slo": "the SLO knee", "cpu_scale_out": "CPU at scale"}
    parts, beyond, ceiling = [], False, ""
    for t, a in nbr["targets"].items():
        if not isinstance(a, dict):
            continue
        by = names.get(str(a.get("by")), str(a.get("by")))
        if a.get("nodes") is None:
            cores = _num((a.get("min_cpu_cores") or {}).get("cores")) if isinstance(a.get("min_cpu_cores"), dict) else None
            need = (f"; ≥ {cores:.2g} CPU per node, more than one event loop's core" if cores and cores > 1
                    else f"; nodes of ≥ {cores:.2g} CPU could" if cores else "")
            parts.append(f"{int(float(t)):,} users → none of this size (extrapolated{need})")
            if not ceiling:  # the ceiling carries the headroom: say so, or it reads as below what a config carried
                h = _num(nbr.get("headroom"))
                rng = a.get("ceiling_range_users")
                between = f" ({rng[0]:,.0f}–{rng[1]:,.0f})" if isinstance(rng, list) and len(rng) == 2 else ""
                ceiling = (f"; the {by} model's ceiling is {_num(a.get('ceiling_users')) or 0:,.0f} users{between} at any "
                           "node count" + (f", with {h:.0%} headroom" if h else ""))
            continue
        beyond = beyond or bool(a.get("beyond_measured_nodes"))
        ex = ", extrapolated" if a.get("extrapolated") else ""
        parts.append(f"{int(float(t)):,} users → {_int_text(a.get('nodes'))} (by {by}{ex})")
    if not parts:
        return None
    tail = (f"; a count beyond the {nbr.get('measured_nodes')} node(s) measured assumes linear scale-out: "
            "a lower bound" if beyond else "")
    return f"nodes of {size}: " + "; ".join(parts) + ceiling + tail


def _int_text(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
