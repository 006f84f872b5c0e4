"""Capacity from a step-load ramp: the SLO knee, a Universal Scalability Law fit, nodes needed.

Why both: the knee is what an operator can promise (the most users per node that still met the
latency SLO and the error budget, measured); the USL fit says why throughput stops growing
(contention α vs coherency β) and where it would peak, beyond the measured range. Neither is a
guess when data is thin: every result carries whether it is meaningful and why not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from contract.wire import GENERATOR_SATURATED_PERCENT

from . import aggregates as A

MIN_USL_POINTS = 6
"""Below this many distinct concurrency levels the fit is reported as not meaningful (the R `usl`
package warns likewise): three parameters from four or five points fit almost anything."""
MIN_R2 = 0.8
BETA_EPS = 1e-9
"""β at or below this is taken as zero: no coherency cost, no retrograde peak (Amdahl's law)."""

GENERATOR_SATURATED = GENERATOR_SATURATED_PERCENT
"""A Locust process at or above this CPU % (contract.wire) is saturated (Locust's own warning threshold): its users
wait for the process, not for the servers, so latency and throughput then measure the generator."""

DEFAULT_SLO = {"p95_connect_ms": 1000.0, "p95_ack_ms": 250.0, "failure_ratio": 0.01}
"""Used where the campaign's thresholds do not set these (campaign [thresholds] win)."""

NODES_NEEDED_ASSUMPTIONS = (
    "capacity per node = the busiest node's load at the knee: knee users × the knee stage's imbalance "
    "(max/mean sessions per node over the sessions up during that stage's hold) / configured nodes. The "
    "busiest node is the one that reached the SLO limit while the mean node carried less, so this is what one "
    "node of this machine carries within the SLO (the run's whole imbalance stands in when the stage's is unknown);",
    "nodes needed for N users = ceil(N × expected imbalance / (capacity per node × (1 − headroom))): with n "
    "nodes the busiest carries N × imbalance / n, and it must stay within the capacity minus the headroom;",
    "expected imbalance: 'at the measured spread' keeps the knee stage's imbalance (the balancer spreads the "
    "target's sessions as unevenly as it spread this run's); 'even spread' uses 1.0. A hash of one client "
    "address puts every session on one node whatever n is: then no node count helps, fix the spread first;",
    "nodes scale out linearly: the balancer keeps sessions sticky and, for rooms across nodes, the "
    "Redis adapter is used (its fan-out cost is inside the measured knee only if the run used Redis);",
    "the same message rate, room size and payload per user as in the measured run;",
    "a headroom fraction is kept free for node loss and bursts (default 0.25).",
)


@dataclass(frozen=True)
class USLFit:
    """X(N) = γN / (1 + α(N−1) + βN(N−1)), fitted by bounded non-linear least squares.

    alpha: contention (0..1); beta: coherency (0..1); gamma: throughput of one unit of concurrency.
    peak_concurrency = √((1−α)/β) and peak_throughput = X(peak); both None when β≈0 (no peak: the
    throughput only approaches the ceiling γ/α). `meaningful` is False with reasons in `notes` when
    there are fewer than MIN_USL_POINTS levels or R² < MIN_R2.
    """

    alpha: float
    beta: float
    gamma: float
    r2: float
    peak_concurrency: float | None
    peak_throughput: float | None
    n_points: int
    meaningful: bool
    notes: tuple[str, ...] = ()

    def predict(self, n: Any) -> Any:
        n = np.asarray(n, dtype=float)
        return self.gamma * n / (1 + self.alpha * (n - 1) + self.beta * n * (n - 1))

    @property
    def ceiling(self) -> float | None:
        """γ/α: the throughput limit when β = 0 (None when α = 0 too: linear scaling)."""
        return self.gamma / self.alpha if self.alpha > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "r2": self.r2,
                "peak_concurrency": self.peak_concurrency, "peak_throughput": self.peak_throughput,
                "n_points": self.n_points, "meaningful": self.meaningful, "notes": list(self.notes)}


def _usl(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    a, b, g = p
    return g * n / (1 + a * (n - 1) + b * n * (n - 1))


def fit_usl(concurrency: Any, throughput: Any) -> USLFit:
    """Fit the USL (pinned public API). Bounds as the R package `usl` (nlxb): 0≤α≤1, 0≤β≤1, γ≥0.

    Several starting points, keep the least squared error: the surface is flat along α–β ridges and a
    single start can stop early. Raises ValueError only for unusable input (fewer than 3 finite points,
    non-positive concurrency).
    """
    n = np.asarray(concurrency, dtype=float)
    x = np.asarray(throughput, dtype=float)
    if n.shape != x.shape:
        raise ValueError("concurrency and throughput must have the same length")
    keep = np.isfinite(n) & np.isfinite(x)
    n, x = n[keep], x[keep]
    if len(n) < 3:
        raise ValueError(f"USL fit needs at least 3 points, got {len(n)}")
    if (n <= 0).any():
        raise ValueError("concurrency must be positive")
    g0 = float(np.max(x / n))
    best = None
    for a0 in (0.01, 0.1, 0.5):
        for b0 in (1e-6, 1e-4, 1e-2):
            r = least_squares(lambda p: _usl(p, n) - x, x0=[a0, b0, g0],
                              bounds=([0, 0, 0], [1, 1, np.inf]), x_scale="jac", method="trf",
                              ftol=1e-14, xtol=1e-14, gtol=1e-14, max_nfev=20000)
            if best is None or r.cost < best.cost:
                best = r
    assert best is not None
    a, b, g = (float(v) for v in best.x)
    sse = float(np.sum((_usl(best.x, n) - x) ** 2))
    sst = float(np.sum((x - x.mean()) ** 2))
    r2 = 1 - sse / sst if sst > 0 else math.nan
    notes = []
    levels = len(np.unique(n))
    if levels < MIN_USL_POINTS:
        notes.append(f"only {levels} load levels (< {MIN_USL_POINTS}): the three parameters are not pinned down")
    if not (r2 >= MIN_R2):
        notes.append(f"R² = {r2:.2f} (< {MIN_R2}): the USL does not describe this data")
    if b <= BETA_EPS:
        b = 0.0
        peak_n = peak_x = None
        ceil = f"{g / a:.4g}" if a > 0 else "none (linear)"
        notes.append(f"β≈0: no retrograde peak; throughput approaches γ/α = {ceil}")
    else:
        peak_n = math.sqrt((1 - a) / b)
        peak_x = float(_usl(np.array([a, b, g]), np.array(peak_n)))
    return USLFit(alpha=a, beta=b, gamma=g, r2=r2, peak_concurrency=peak_n, peak_throughput=peak_x,
                  n_points=int(len(n)), meaningful=levels >= MIN_USL_POINTS and r2 >= MIN_R2,
                  notes=tuple(notes))


def step_windows(users: pd.DataFrame, min_hold_s: float = 2.0, levels: Any = None) -> pd.DataFrame:
    """Stages of a step load from a (ts, users) series (Locust history 'User Count', one row per second).

    A stage is a run of equal user counts lasting ≥ min_hold_s: its hold is [hold_start, end); its
    ramp is from the previous stage's end. Columns: stage, users, ramp_start, hold_start, end.

    levels: the configured steps' user counts (meta.json load.steps), when known. Then only plateaus at
    those counts are stages (the longest one per count): a slow ramp spawns users in bursts, and its
    pauses of a few seconds are not stages the load held. Without any plateau at a configured count
    (a run that never reached one), every plateau counts, as without levels.
    """
    found = _plateaus(users, min_hold_s)
    want = {int(v) for v in levels or () if isinstance(v, int | float) and not isinstance(v, bool)}
    held = [w for w in found if w["users"] in want]
    if held:
        longest: dict[int, dict[str, Any]] = {}
        for w in held:
            if w["users"] not in longest or w["end"] - w["hold_start"] > longest[w["users"]]["end"] - longest[w["users"]]["hold_start"]:
                longest[w["users"]] = w
        found = sorted(longest.values(), key=lambda w: w["hold_start"])
        for i, w in enumerate(found):  # each ramp runs from the previous kept stage's end
            w["stage"] = i + 1
            if i:
                w["ramp_start"] = found[i - 1]["end"]
    return pd.DataFrame(found, columns=["stage", "users", "ramp_start", "hold_start", "end"])


def _plateaus(users: pd.DataFrame, min_hold_s: float) -> list[dict[str, Any]]:
    """Every run of equal user counts lasting ≥ min_hold_s, as step_windows' rows."""
    if users is None or not len(users):
        return []
    u = users.sort_values("ts")
    ts, uc = u["ts"].to_numpy(dtype=float), u["users"].to_numpy(dtype=float)
    out = []
    i = 0
    prev_end = float(ts[0])
    while i < len(ts):
        j = i
        while j + 1 < len(ts) and uc[j + 1] == uc[i]:
            j += 1
        end = float(ts[j]) + (float(ts[1] - ts[0]) if len(ts) > 1 else 1.0)
        if end - ts[i] >= min_hold_s and uc[i] > 0:
            out.append({"stage": len(out) + 1, "users": int(uc[i]), "ramp_start": prev_end,
                        "hold_start": float(ts[i]), "end": end})
            prev_end = end
        i = j + 1
    return out


_MESSAGE_STEPS = ("ack", "emit", "broadcast_send")


_STATS_COLUMNS = ["stage", "users", "users_per_node", "hold_s", "throughput", "p95_connect_ms", "p95_ack_ms",
                  "failure_ratio", "steps", "imbalance"]
_GEN_COLUMNS = ["generator_cpu_max", "generator_cpu_p90", "generator_process", "generator_samples",
                "generator_bound"]


def step_stats(events: pd.DataFrame, windows: pd.DataFrame, nodes: int,
               generator: pd.DataFrame | None = None, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per stage: users, users_per_node, throughput, p95 connect/ack, failure ratio (+ generator CPU).

    generator: generator.csv samples (ts, worker, cpu_percent); adds `generator_stage_cpu`'s columns
    (NaN / False when there are none, i.e. unknown, not "fine"). cells: the config's per-second cells
    (analysis.aggregates; default: the cells of `events`), which every count and percentile here reads;
    the rows serve the sessions of stage_imbalance.

    throughput = successful messages sent per second over the hold (ack + emit + broadcast_send steps,
    ok=1); if the scenario sends none (hold/churn), all ok steps except receives and disconnects.
    p95 ack and the failure ratio (failed steps / all steps) are over the hold only; p95 connect is over
    ramp + hold, because users connect during the ramp. A step is in a window by its second: exact for
    the whole-second windows of Locust's history. imbalance: see stage_imbalance.
    """
    imb = stage_imbalance(events, windows, nodes)
    cells = A.aggregates_from_rows(events) if cells is None else cells
    sec = cells["second"].to_numpy(dtype=float) if len(cells) else np.zeros(0)
    rows = []
    for _, w in windows.iterrows():
        hold = cells[(sec >= w["hold_start"]) & (sec < w["end"])]
        win = cells[(sec >= w["ramp_start"]) & (sec < w["end"])]
        dur = max(1e-9, float(w["end"] - w["hold_start"]))
        okh = hold[hold["ok"] == 1]
        msgs = okh[okh["step"].isin(_MESSAGE_STEPS)]
        if not int(msgs["count"].sum()):
            msgs = okh[~okh["step"].isin(("broadcast_recv", "disconnect"))]
        n_hold = int(hold["count"].sum())
        rows.append({"stage": int(w["stage"]), "users": int(w["users"]),
                     "users_per_node": w["users"] / max(1, nodes), "hold_s": dur,
                     "throughput": int(msgs["count"].sum()) / dur,
                     "p95_connect_ms": _p95(win[(win["step"] == "connect") & (win["ok"] == 1)]),
                     "p95_ack_ms": _p95(okh[okh["step"] == "ack"]),
                     "failure_ratio": int(hold.loc[hold["ok"] == 0, "count"].sum()) / n_hold if n_hold else math.nan,
                     "steps": n_hold, "imbalance": imb.get(int(w["stage"]), math.nan)})
    out = pd.DataFrame(rows, columns=_STATS_COLUMNS)
    gen = generator_stage_cpu(generator, windows)
    return out.merge(gen, on="stage", how="left") if len(out) else out.assign(**{c: [] for c in _GEN_COLUMNS})


def _p95(cells: pd.DataFrame) -> float:
    """The p95 latency of the cells' merged histograms (NaN without a latency)."""
    c = cells[cells["lat_count"] > 0]
    if not len(c):
        return math.nan
    return float(A.quantiles(A.merge(c, []), [0.95])[0, 0])


def stage_imbalance(events: pd.DataFrame, windows: pd.DataFrame, nodes: int) -> dict[int, float]:
    """Per stage: max/mean sessions per node over the sessions up during the stage's hold.

    A session (eio_sid) is up during [hold_start, end) when its first ok `connect` (which names the
    node) came before `end` and its first `disconnect` after that, if any, came after hold_start. The
    mean is over the configured nodes n1..nN (an empty node counts: everything on one node of 3 is 3.0)
    and any other node name seen. NaN when no session with a known node was up. Why per stage, not the
    whole run's: the knee stage is where the busiest node hit the limit, so its spread is what matters.
    """
    if not len(windows) or not len(events) or "eio_sid" not in events or "node" not in events:
        return {}
    c = events[(events["step"] == "connect") & (events["ok"] == 1) & (events["node"].astype(str) != "")
               & (events["eio_sid"].astype(str) != "")]
    if not len(c):
        return {}
    first = c.sort_values("ts").drop_duplicates("eio_sid")[["eio_sid", "ts", "node"]]
    d = events[(events["step"] == "disconnect") & events["eio_sid"].isin(first["eio_sid"])][["eio_sid", "ts"]]
    d = d.merge(first[["eio_sid", "ts"]], on="eio_sid", suffixes=("", "_c"))
    ends = d[d["ts"] >= d["ts_c"]].groupby("eio_sid")["ts"].min()
    up_ts = first["ts"].to_numpy(dtype=float)
    down_ts = first["eio_sid"].map(ends).fillna(math.inf).to_numpy(dtype=float)
    node = first["node"].astype(str).to_numpy()
    names = [f"n{i}" for i in range(1, max(1, int(nodes)) + 1)]
    names += sorted(set(node) - set(names))
    out: dict[int, float] = {}
    for _, w in windows.iterrows():
        alive = (up_ts < float(w["end"])) & (down_ts > float(w["hold_start"]))
        if not alive.any():
            out[int(w["stage"])] = math.nan
            continue
        counts = pd.Series(node[alive]).value_counts().reindex(names, fill_value=0).to_numpy(dtype=float)
        out[int(w["stage"])] = float(counts.max() / counts.mean())
    return out


def generator_stage_cpu(generator: pd.DataFrame | None, windows: pd.DataFrame) -> pd.DataFrame:
    """Per stage hold: the busiest generator process's max and p90 CPU %, and whether it was saturated.

    A sample at ts is Locust's reading of the second before ts, so the hold [hold_start, end) is
    covered by samples with hold_start < ts ≤ end. Max and p90 are taken per process (a master
    idling at 3% must not dilute a worker at 97%), then the busiest process is reported.
    generator_bound = that max ≥ GENERATOR_SATURATED. No samples: NaN and False (unknown).
    """
    rows = []
    g = generator if generator is not None and len(generator) else None
    for _, w in windows.iterrows():
        r: dict[str, Any] = {"stage": int(w["stage"]), "generator_cpu_max": math.nan, "generator_cpu_p90": math.nan,
                             "generator_process": None, "generator_samples": 0, "generator_bound": False}
        if g is not None:
            h = g[(g["ts"] > w["hold_start"]) & (g["ts"] <= w["end"])]
            if len(h):
                per = h.groupby("worker", sort=True)["cpu_percent"].agg(mx="max", p90=lambda x: x.quantile(0.9))
                busiest = per["mx"].idxmax()
                r.update(generator_cpu_max=float(per["mx"].max()), generator_cpu_p90=float(per["p90"].max()),
                         generator_process=str(busiest), generator_samples=int(len(h)),
                         generator_bound=bool(per["mx"].max() >= GENERATOR_SATURATED))
        rows.append(r)
    return pd.DataFrame(rows, columns=["stage", *_GEN_COLUMNS])


def generator_summary(generator: pd.DataFrame | None) -> dict[str, Any] | None:
    """The generator's CPU over a whole run (summary.json `generator`); None without samples.

    cpu_max: the highest reading of any process; cpu_p90: the busiest process's p90 (per process, as
    in generator_stage_cpu); saturated: cpu_max ≥ GENERATOR_SATURATED; saturated_samples: readings
    (process-seconds) at or above it.
    """
    if generator is None or not len(generator):
        return None
    per = generator.groupby("worker", sort=True)["cpu_percent"].agg(mx="max", p90=lambda x: x.quantile(0.9))
    mx = float(per["mx"].max())
    return {"cpu_max": mx, "cpu_p90": float(per["p90"].max()), "saturated": mx >= GENERATOR_SATURATED,
            "saturated_samples": int((generator["cpu_percent"] >= GENERATOR_SATURATED).sum()),
            "busiest": str(per["mx"].idxmax()), "processes": int(len(per)), "samples": int(len(generator))}


def generator_over_time(generator: pd.DataFrame, t0: dict[str, float], bucket_s: float = 1.0) -> pd.DataFrame:
    """Per config and second: the busiest process's CPU (t = seconds since the config's first event, like
    metrics.latency_over_time, so the plots line up)."""
    cols = ["config", "t", "cpu_percent"]
    if generator is None or not len(generator):
        return pd.DataFrame(columns=cols)
    g = generator[generator["config"].astype(str).isin(t0)]
    if not len(g):
        return pd.DataFrame(columns=cols)
    t = g["ts"] - g["config"].astype(str).map(t0).astype(float)
    out = (g.assign(t=np.floor(t / bucket_s) * bucket_s).groupby(["config", "t"], sort=True)["cpu_percent"]
           .max().reset_index())
    out["config"] = out["config"].astype(str)
    return out[cols]


def knee(stats: pd.DataFrame, slo: dict[str, float] | None = None) -> dict[str, Any]:
    """The most users per node at which every stage up to it met the SLO.

    A stage passes when p95 connect ≤ slo p95_connect_ms, p95 ack ≤ p95_ack_ms and failure ratio ≤
    failure_ratio (a missing measurement, e.g. no acks in a hold scenario, does not fail a stage).
    capacity = the last passing stage before the first failing one; `limit` names what failed next.
    users_per_node is that stage's mean (users / configured nodes); `imbalance` its max/mean spread
    (None when unknown), from which capacity_plan gets the busiest node's load.

    A generator-bound stage (stats column `generator_bound`, see generator_stage_cpu) measures the
    load generator, not the servers: it is neither a pass nor the knee. The scan stops there; the
    capacity found so far is a lower bound (`generator_stage` names the stage, `first_failing_stage`
    stays None unless a real SLO failure came before it).
    """
    slo = {**DEFAULT_SLO, **{k: v for k, v in (slo or {}).items() if k in DEFAULT_SLO and v is not None}}
    res: dict[str, Any] = {"slo": slo, "stages": [], "users_per_node": None, "users": None, "imbalance": None,
                           "limit": None, "first_failing_stage": None, "generator_stage": None,
                           "generator_bound_stages": []}
    if stats is None or not len(stats):
        res["note"] = "no step-load stages found (needs a run with [load] steps and Locust's history CSV)"
        return res
    for _, s in stats.sort_values("users").iterrows():
        why = []
        for key, col in (("p95_connect_ms", "p95_connect_ms"), ("p95_ack_ms", "p95_ack_ms"),
                         ("failure_ratio", "failure_ratio")):
            v = s[col]
            if not (isinstance(v, float) and math.isnan(v)) and v > slo[key]:
                why.append(f"{col} {v:.4g} > {slo[key]:.4g}")
        st = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.to_dict().items()}
        st["stage"], st["users"] = int(s["stage"]), int(s["users"])
        st["pass"] = not why
        st["why"] = why
        st["generator_bound"] = bool(st.get("generator_bound") or False)
        res["stages"].append(st)
    res["generator_bound_stages"] = [st["stage"] for st in res["stages"] if st["generator_bound"]]
    for st in res["stages"]:
        if st["generator_bound"]:
            res["generator_stage"] = st["stage"]
            res["limit"] = (f"the load generator was at {st['generator_cpu_max']:.0f}% CPU at {st['users']} users "
                            "(generator-bound: not a server limit)")
            break
        if not st["pass"]:
            res["first_failing_stage"] = st["stage"]
            res["limit"] = "; ".join(st["why"]) + f" at {st['users']} users"
            break
        res["users_per_node"], res["users"] = st["users_per_node"], st["users"]
        res["imbalance"] = st.get("imbalance")
    gs = res["generator_stage"]
    if gs is not None and res["users"] is None:
        res["note"] = (f"stage {gs}, the first, was generator-bound: this run measured the load generator, not the "
                       "servers; rerun with --processes or more machines")
    elif gs is not None:
        res["note"] = (f"from stage {gs} on the load generator was saturated (≥ {GENERATOR_SATURATED:.0f}% CPU), so "
                       f"those stages measure the generator, not the servers: capacity is at least "
                       f"{res['users_per_node']:.4g} users per node (a lower bound); use --processes or more machines "
                       "to find the servers' knee")
    elif res["users"] is None:
        res["note"] = "even the first stage broke the SLO: capacity is below the smallest step"
    elif res["first_failing_stage"] is None:
        res["note"] = "every stage met the SLO: capacity is at least the largest step (not reached)"
    return res


def nodes_needed(target_users: int, capacity_per_node: float | None, imbalance: float = 1.0,
                 headroom: float = 0.25) -> int | None:
    """Nodes to serve `target_users` concurrent users; see NODES_NEEDED_ASSUMPTIONS.

    capacity_per_node is what ONE node carries within the SLO (the busiest node's load at the knee, see
    capacity_plan), not the knee's mean users per node: that mean already has the run's imbalance in
    it, and multiplying by the imbalance again would count it twice.
    ceil(target × imbalance / (capacity_per_node × (1 − headroom))); None without a measured capacity.
    """
    if not capacity_per_node or capacity_per_node <= 0 or not 0 <= headroom < 1:
        return None
    imb = imbalance if imbalance and math.isfinite(imbalance) and imbalance >= 1 else 1.0
    return max(1, math.ceil(target_users * imb / (capacity_per_node * (1 - headroom))))


def capacity_plan(k: dict[str, Any], nodes: int, run_imbalance: float | None, targets: tuple[int, ...],
                  headroom: float = 0.25) -> dict[str, Any]:
    """From a knee (see knee) to the per-node capacity and the nodes needed per target; see NODES_NEEDED_ASSUMPTIONS.

    imbalance = the knee stage's max/mean spread, else the run's (`run_imbalance`), else 1.0 (named in
    `imbalance_source`). capacity_per_node = knee users × imbalance / nodes: the busiest node's load.
    nodes_needed keeps that imbalance (the measured spread); nodes_needed_even assumes 1.0.
    """
    out: dict[str, Any] = {"capacity_per_node": None, "imbalance": None, "imbalance_source": None,
                           "nodes_needed": None, "nodes_needed_even": None, "headroom": headroom}
    if not k.get("users"):
        return out
    imb, src = k.get("imbalance"), "knee stage"
    if not _finite_ge1(imb):
        imb, src = run_imbalance, "whole run"
    if not _finite_ge1(imb):
        imb, src = 1.0, "unknown (taken as even)"
    cap = k["users"] * float(imb) / max(1, int(nodes))
    out.update(capacity_per_node=cap, imbalance=float(imb), imbalance_source=src,
               nodes_needed={str(t): nodes_needed(t, cap, float(imb), headroom) for t in targets},
               nodes_needed_even={str(t): nodes_needed(t, cap, 1.0, headroom) for t in targets})
    return out


def _finite_ge1(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x >= 1


def usl_over_nodes(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The USL over the node count: X(n) = each config's throughput at its knee (steps/s of its last stage within
    the SLO), n its node count; configs that differ only in node count.

    points: [{"config", "nodes", "capacity": that config's capacity section}]. A config whose knee was not
    reached gives a lower bound of its throughput: it is used, and the fit says so. Flagged not meaningful below
    MIN_USL_POINTS node counts (three parameters from three node counts fit anything); None below three
    configs with a knee throughput.
    """
    rows = []
    for p in points:
        cap = p.get("capacity") or {}
        users = cap.get("users")
        row = next((r for r in cap.get("table") or [] if users is not None and r.get("users") == users), None)
        x = row.get("throughput") if row else None
        if p.get("nodes") and isinstance(x, int | float) and math.isfinite(x) and x > 0:
            rows.append({"config": p.get("config"), "nodes": int(p["nodes"]), "throughput": float(x),
                         "reached": bool(cap.get("reached"))})
    if len({r["nodes"] for r in rows}) < 3:
        return None
    try:
        fit = fit_usl([r["nodes"] for r in rows], [r["throughput"] for r in rows])
    except ValueError:
        return None
    out = {**fit.as_dict(), "over": "nodes", "points": rows}
    out["notes"] = [n.replace("load levels", "node counts") for n in out["notes"]]
    if not all(r["reached"] for r in rows):
        out["meaningful"] = False
        out["notes"].append("a config's knee was not reached: its throughput is a lower bound")
    return out
