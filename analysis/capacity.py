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

MIN_USL_POINTS = 6
"""Below this many distinct concurrency levels the fit is reported as not meaningful (the R `usl`
package warns likewise): three parameters from four or five points fit almost anything."""
MIN_R2 = 0.8
BETA_EPS = 1e-9
"""β at or below this is taken as zero: no coherency cost, no retrograde peak (Amdahl's law)."""

DEFAULT_SLO = {"p95_connect_ms": 1000.0, "p95_ack_ms": 250.0, "failure_ratio": 0.01}
"""Used where the campaign's thresholds do not set these (campaign [thresholds] win)."""

NODES_NEEDED_ASSUMPTIONS = (
    "capacity per node is the measured knee (users per node within the SLO) on this machine's nodes;",
    "nodes scale out linearly: the balancer keeps sessions sticky and, for rooms across nodes, the "
    "Redis adapter is used (its fan-out cost is inside the measured knee only if the run used Redis);",
    "sessions spread over nodes as unevenly as measured (the max/mean imbalance multiplies the need);",
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


def step_windows(users: pd.DataFrame, min_hold_s: float = 2.0) -> pd.DataFrame:
    """Stages of a step load from a (ts, users) series (Locust history 'User Count', one row per second).

    A stage is a run of equal user counts lasting ≥ min_hold_s: its hold is [hold_start, end); its
    ramp is from the previous stage's end. Columns: stage, users, ramp_start, hold_start, end.
    """
    cols = ["stage", "users", "ramp_start", "hold_start", "end"]
    if users is None or not len(users):
        return pd.DataFrame(columns=cols)
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
    return pd.DataFrame(out, columns=cols)


_MESSAGE_STEPS = ("ack", "emit", "broadcast_send")


def step_stats(events: pd.DataFrame, windows: pd.DataFrame, nodes: int) -> pd.DataFrame:
    """Per stage: users, users_per_node, throughput, p95 connect/ack, failure ratio.

    throughput = successful messages sent per second over the hold (ack + emit + broadcast_send rows,
    ok=1); if the scenario sends none (hold/churn), all ok steps except receives and disconnects.
    p95 ack and the failure ratio (failed rows / all rows) are over the hold only; p95 connect is over
    ramp + hold, because users connect during the ramp.
    """
    rows = []
    for _, w in windows.iterrows():
        hold = events[(events["ts"] >= w["hold_start"]) & (events["ts"] < w["end"])]
        win = events[(events["ts"] >= w["ramp_start"]) & (events["ts"] < w["end"])]
        dur = max(1e-9, float(w["end"] - w["hold_start"]))
        okh = hold[hold["ok"] == 1]
        msgs = okh[okh["step"].isin(_MESSAGE_STEPS)]
        if not len(msgs):
            msgs = okh[~okh["step"].isin(("broadcast_recv", "disconnect"))]
        conn = win[(win["step"] == "connect") & (win["ok"] == 1)]["latency_ms"].dropna()
        ack = hold[(hold["step"] == "ack") & (hold["ok"] == 1)]["latency_ms"].dropna()
        rows.append({"stage": int(w["stage"]), "users": int(w["users"]),
                     "users_per_node": w["users"] / max(1, nodes), "hold_s": dur,
                     "throughput": len(msgs) / dur,
                     "p95_connect_ms": float(conn.quantile(0.95)) if len(conn) else math.nan,
                     "p95_ack_ms": float(ack.quantile(0.95)) if len(ack) else math.nan,
                     "failure_ratio": float((hold["ok"] == 0).mean()) if len(hold) else math.nan,
                     "steps": int(len(hold))})
    return pd.DataFrame(rows, columns=["stage", "users", "users_per_node", "hold_s", "throughput",
                                       "p95_connect_ms", "p95_ack_ms", "failure_ratio", "steps"])


def knee(stats: pd.DataFrame, slo: dict[str, float] | None = None) -> dict[str, Any]:
    """The most users per node at which every stage up to it met the SLO.

    A stage passes when p95 connect ≤ slo p95_connect_ms, p95 ack ≤ p95_ack_ms and failure ratio ≤
    failure_ratio (a missing measurement, e.g. no acks in a hold scenario, does not fail a stage).
    capacity = the last passing stage before the first failing one; `limit` names what failed next.
    """
    slo = {**DEFAULT_SLO, **{k: v for k, v in (slo or {}).items() if k in DEFAULT_SLO and v is not None}}
    res: dict[str, Any] = {"slo": slo, "stages": [], "users_per_node": None, "users": None,
                           "limit": None, "first_failing_stage": None}
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
        res["stages"].append(st)
    for st in res["stages"]:
        if not st["pass"]:
            res["first_failing_stage"] = st["stage"]
            res["limit"] = "; ".join(st["why"]) + f" at {st['users']} users"
            break
        res["users_per_node"], res["users"] = st["users_per_node"], st["users"]
    if res["users"] is None:
        res["note"] = "even the first stage broke the SLO: capacity is below the smallest step"
    elif res["first_failing_stage"] is None:
        res["note"] = "every stage met the SLO: capacity is at least the largest step (not reached)"
    return res


def nodes_needed(target_users: int, users_per_node: float | None, imbalance: float = 1.0,
                 headroom: float = 0.25) -> int | None:
    """Nodes to serve `target_users` concurrent users; see NODES_NEEDED_ASSUMPTIONS.

    ceil(target × imbalance / (users_per_node × (1 − headroom))); None without a measured capacity.
    """
    if not users_per_node or users_per_node <= 0 or not 0 <= headroom < 1:
        return None
    imb = imbalance if imbalance and math.isfinite(imbalance) and imbalance >= 1 else 1.0
    return max(1, math.ceil(target_users * imb / (users_per_node * (1 - headroom))))
