"""fit_usl against the R package `usl` (Stefan Möding, CRAN) on its own published datasets and values.

Sources (github.com/smoeding/usl, the package's saved test outputs, R 3.6.2):
- tests/usl-nlxb.Rout.save and tests/summary.Rout.save: specsdm91, usl(throughput ~ load, method="nlxb")
  → alpha 0.0277285, beta 0.0001044, gamma 89.9952330, Multiple R-squared 0.9896;
  tests/peak-scalability.Rout.save: signif(peak.scalability(u), 2) = 97.
- tests/confint.Rout.save: raytracer, usl(throughput ~ processors) → alpha 0.0578, beta 0.0000, gamma 21.8488.
- tests/coef.R(.Rout.save): the toy frame printed in the test itself → alpha 0.02, beta 0.02, gamma 1.00.
The specsdm91 data (man/specsdm91.Rd: SPEC SDM91, Sun SPARCcenter 2000, from Gunther, Guerrilla Capacity
Planning, 2007) is stored as .rda; its values here agree with tests/efficiency.Rout.save
(X = efficiency × N × gamma) and tests/residuals.Rout.save (X = fitted + residual) to print precision.
The raytracer values (man/raytracer.Rd: BRL-CAD on an SGI Origin 2000, same book) reproduce all three
published coefficients below, which they could not by chance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.capacity import (
    capacity_plan,
    fit_usl,
    knee,
    nodes_needed,
    stage_imbalance,
    step_stats,
    step_windows,
)

SPECSDM91_LOAD = [1, 18, 36, 72, 108, 144, 216]
SPECSDM91_X = [64.9, 995.9, 1652.4, 1853.2, 1828.9, 1775.0, 1702.2]
RAYTRACER_N = [1, 4, 8, 12, 16, 20, 24, 28, 32, 48, 64]
RAYTRACER_X = [20, 78, 130, 170, 190, 200, 210, 230, 260, 280, 310]


def test_specsdm91_matches_r_usl() -> None:
    f = fit_usl(SPECSDM91_LOAD, SPECSDM91_X)
    assert f.alpha == pytest.approx(0.0277285, rel=1e-3)
    assert f.beta == pytest.approx(0.0001044, rel=2e-3)
    assert f.gamma == pytest.approx(89.9952330, rel=1e-4)
    assert f.r2 == pytest.approx(0.9896, abs=5e-4)
    assert round(f.peak_concurrency) in (96, 97) and float(f"{f.peak_concurrency:.2g}") == 97
    assert f.peak_throughput == pytest.approx(float(f.predict(f.peak_concurrency)))
    assert f.meaningful and f.notes == ()


def test_raytracer_matches_r_usl_and_has_no_peak() -> None:
    f = fit_usl(RAYTRACER_N, RAYTRACER_X)
    assert f.alpha == pytest.approx(0.0578, abs=5e-4)
    assert f.beta == 0.0
    assert f.gamma == pytest.approx(21.8488, rel=1e-4)
    assert f.peak_concurrency is None and f.peak_throughput is None
    assert f.ceiling == pytest.approx(f.gamma / f.alpha)
    assert any("no retrograde peak" in n for n in f.notes)
    assert f.meaningful  # β = 0 is a valid answer (Amdahl), not a failed fit


def test_r_usl_coef_toy_frame() -> None:
    f = fit_usl([1, 2, 4, 6, 8, 10], [1, 1.8868, 3.0769, 3.5294, 3.5398, 3.3557])
    assert (round(f.alpha, 3), round(f.beta, 3), round(f.gamma, 2)) == (0.02, 0.02, 1.0)


def test_recovers_known_parameters_from_exact_curve() -> None:
    n = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    x = 50 * n / (1 + 0.05 * (n - 1) + 0.0004 * n * (n - 1))
    f = fit_usl(n, x)
    assert (f.alpha, f.beta, f.gamma) == pytest.approx((0.05, 0.0004, 50), rel=1e-4)
    assert f.peak_concurrency == pytest.approx(math.sqrt(0.95 / 0.0004), rel=1e-4)


def test_bounds_hold_on_superlinear_data() -> None:
    # Superlinear scaling wants α < 0: the bounded fit must stop at 0, like the R package.
    n = [1, 2, 3, 4, 5, 6]
    f = fit_usl(n, [10, 21, 33, 46, 60, 75])
    assert 0 <= f.alpha <= 1 and 0 <= f.beta <= 1 and f.gamma >= 0


def test_few_points_or_bad_fit_are_flagged_not_meaningful() -> None:
    f = fit_usl([1, 2, 4, 8], [10, 19, 34, 55])
    assert not f.meaningful and any("load levels" in n for n in f.notes)
    noisy = fit_usl([1, 2, 3, 4, 5, 6, 7], [10, 80, 5, 90, 3, 70, 8])
    assert not noisy.meaningful and any("R²" in n for n in noisy.notes)


def test_unusable_input_raises_value_error() -> None:
    with pytest.raises(ValueError):
        fit_usl([1, 2], [1, 2])
    with pytest.raises(ValueError):
        fit_usl([0, 1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        fit_usl([1, 2, 3], [1, 2])
    f = fit_usl([1, 2, 3, float("nan"), 4], [1, 2, 3, 4, float("nan")])  # NaNs dropped, not fatal
    assert f.n_points == 3


def _ramp_events(levels: list[int], hold: float, p95_ack: list[float], fail: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A step load: per stage, users connect during the ramp, then ack at 1/s each over the hold."""
    rows, users_series = [], []
    t = 1000.0
    rng = np.random.default_rng(1)
    uid = 0
    for users, ack_ms, fr in zip(levels, p95_ack, fail, strict=True):
        # ramp: new users connect (1 s), history says the count climbs
        new = users - uid
        for i in range(new):
            rows.append({"ts": t + i / max(1, new), "step": "connect", "ok": 1, "latency_ms": 5.0, "user": f"u{uid + i}"})
        users_series.append((t, uid + new // 2))  # mid-ramp: Locust reports a climbing count
        uid = users
        t += 1.0
        for s in range(int(hold)):
            users_series.append((t + s, users))
            for u in range(users):
                ok = int(rng.random() >= fr)
                rows.append({"ts": t + s + u / users / 2, "step": "ack", "ok": ok,
                             "latency_ms": ack_ms * rng.uniform(0.5, 1.0) if ok else math.nan, "user": f"u{u}"})
        t += hold
    return pd.DataFrame(rows), pd.DataFrame(users_series, columns=["ts", "users"])


def test_step_windows_and_knee_from_a_ramp() -> None:
    ev, users = _ramp_events([10, 20, 30, 40], hold=5, p95_ack=[10, 20, 400, 900], fail=[0, 0, 0, 0.2])
    w = step_windows(users)
    assert list(w["users"]) == [10, 20, 30, 40]
    assert all(w["end"] - w["hold_start"] >= 5)
    st = step_stats(ev, w, nodes=2)
    assert list(st["users_per_node"]) == [5, 10, 15, 20]
    assert st["throughput"].iloc[0] == pytest.approx(10, rel=0.05)  # 10 users × 1 ack/s
    assert st["failure_ratio"].iloc[3] == pytest.approx(0.2, abs=0.08)
    k = knee(st, {"p95_ack_ms": 250})
    assert k["users_per_node"] == 10 and k["users"] == 20
    assert "p95_ack_ms" in k["limit"] and "30 users" in k["limit"]
    assert [s["pass"] for s in k["stages"]] == [True, True, False, False]


def test_knee_edge_cases() -> None:
    ev, users = _ramp_events([10, 20], hold=4, p95_ack=[900, 900], fail=[0, 0])
    st = step_stats(ev, step_windows(users), nodes=1)
    k = knee(st, {"p95_ack_ms": 100})
    assert k["users_per_node"] is None and "below the smallest step" in k["note"]
    k = knee(st, {"p95_ack_ms": 5000})
    assert k["users_per_node"] == 20 and "not reached" in k["note"]
    assert knee(pd.DataFrame())["users_per_node"] is None


def test_nodes_needed_formula() -> None:
    # 10,000 users at 500 per node, 25 % headroom → 10,000 / 375 = 26.7 → 27; imbalance 1.2 → 32
    assert nodes_needed(10_000, 500) == 27
    assert nodes_needed(10_000, 500, imbalance=1.2) == 32
    assert nodes_needed(10, 500) == 1
    assert nodes_needed(1000, None) is None and nodes_needed(1000, 0) is None


def _windows(*holds: tuple[int, float, float]) -> pd.DataFrame:
    rows, prev = [], 0.0
    for i, (users, start, end) in enumerate(holds, 1):
        rows.append({"stage": i, "users": users, "ramp_start": prev, "hold_start": start, "end": end})
        prev = end
    return pd.DataFrame(rows)


def test_stage_imbalance_counts_sessions_up_during_each_hold() -> None:
    """3 nodes. Stage 1 hold [10, 14): s1-s3 on n1 (s4 on n2 left at 5, s8's connect failed) → 3/1 = 3.0.
    Stage 2 hold [20, 24): n1 = s1, s2, s3, s5; n2 = s6; n3 = s7 → max 4 / mean 2 = 2.0."""
    def c(t: float, sid: str, node: str, ok: int = 1) -> dict:
        return {"ts": t, "step": "connect", "ok": ok, "eio_sid": sid, "node": node}
    ev = pd.DataFrame([c(1, "s1", "n1"), c(1, "s2", "n1"), c(1, "s3", "n1"), c(2, "s4", "n2"),
                       {"ts": 5, "step": "disconnect", "ok": 1, "eio_sid": "s4", "node": "n2"},
                       c(3, "s8", "n3", ok=0), c(15, "s5", "n1"), c(16, "s6", "n2"), c(16, "s7", "n3")])
    assert stage_imbalance(ev, _windows((3, 10, 14), (6, 20, 24)), nodes=3) == {1: 3.0, 2: 2.0}


def test_capacity_is_the_busiest_nodes_load_and_imbalance_counts_once() -> None:
    """Source hashing from one address: every session on n1 of 3 nodes.

    Stages of 30, 60, 90 users; 90 breaks the ack SLO, so the knee is 60 users = 20 per node on
    average, but n1 alone carried all 60 within the SLO: capacity per node = 60 × 3 / 3 = 60.
    1,000 users at the measured spread (imbalance 3): ceil(1000 × 3 / (60 × 0.75)) = ceil(66.7) = 67;
    even spread: ceil(1000 / 45) = 23. (Multiplying the mean 20 per node by the imbalance again
    would say ceil(1000 × 3 / (20 × 0.75)) = 200.)
    """
    rows, t, uid = [], 0.0, 0
    w = []
    for users, ack in ((30, 10.0), (60, 20.0), (90, 900.0)):
        ramp = t
        for i in range(uid, users):
            rows.append({"ts": t + 0.01 * (i - uid), "step": "connect", "ok": 1, "eio_sid": f"s{i}", "node": "n1",
                         "latency_ms": 5.0, "user": f"u{i}"})
        uid = users
        t += 1.0
        for k in range(4):
            rows += [{"ts": t + k + 0.001 * u, "step": "ack", "ok": 1, "eio_sid": f"s{u}", "node": "n1",
                      "latency_ms": ack, "user": f"u{u}"} for u in range(users)]
        w.append({"stage": len(w) + 1, "users": users, "ramp_start": ramp, "hold_start": t, "end": t + 4})
        t += 4
    st = step_stats(pd.DataFrame(rows), pd.DataFrame(w), nodes=3)
    assert list(st["imbalance"]) == [3.0, 3.0, 3.0]
    k = knee(st, {"p95_ack_ms": 250})
    assert (k["users"], k["users_per_node"], k["imbalance"]) == (60, 20, 3.0)
    plan = capacity_plan(k, nodes=3, run_imbalance=3.0, targets=(1_000, 10_000))
    assert plan["capacity_per_node"] == 60 and plan["imbalance_source"] == "knee stage"
    assert plan["nodes_needed"] == {"1000": 67, "10000": 667}
    assert plan["nodes_needed_even"] == {"1000": 23, "10000": 223}


def test_capacity_plan_falls_back_to_the_run_imbalance_then_even() -> None:
    k = {"users": 60, "users_per_node": 20.0, "imbalance": None}
    p = capacity_plan(k, nodes=3, run_imbalance=1.5, targets=(1_000,))
    assert (p["capacity_per_node"], p["imbalance_source"]) == (30.0, "whole run")
    assert p["nodes_needed"] == {"1000": 67}  # ceil(1000 × 1.5 / (30 × 0.75)) = ceil(66.7)
    p = capacity_plan(k, nodes=3, run_imbalance=None, targets=(1_000,))
    assert (p["capacity_per_node"], p["imbalance_source"]) == (20.0, "unknown (taken as even)")
    assert capacity_plan({"users": None}, 3, 2.0, (1_000,))["nodes_needed"] is None


def test_usl_over_node_count_from_each_configs_knee() -> None:
    from analysis.capacity import usl_over_nodes

    def cap(users: int, x: float, reached: bool = True) -> dict:
        return {"users": users, "reached": reached, "table": [{"users": users // 2, "throughput": x / 2},
                                                              {"users": users, "throughput": x}]}

    pts = [{"config": f"c{n}", "nodes": n, "capacity": cap(150 * n, x)} for n, x in ((1, 300.0), (2, 560.0), (4, 900.0))]
    u = usl_over_nodes(pts)
    assert u["over"] == "nodes" and [p["throughput"] for p in u["points"]] == [300.0, 560.0, 900.0]
    assert u["meaningful"] is False and any("only 3 node counts" in n for n in u["notes"])
    assert u["alpha"] > 0 or u["beta"] > 0  # sublinear: 4 nodes give 3×, not 4×
    # a knee not reached is a lower bound, said; fewer than three node counts, or no knee throughput: no fit
    low = usl_over_nodes([*pts[:2], {**pts[2], "capacity": cap(600, 900.0, reached=False)}])
    assert low["meaningful"] is False and any("lower bound" in n for n in low["notes"])
    assert usl_over_nodes(pts[:2]) is None
    assert usl_over_nodes([*pts[:2], {"config": "x", "nodes": 8, "capacity": {"users": None}}]) is None


def test_step_windows_keep_the_configured_levels_not_a_ramps_pauses() -> None:
    # steps 40 → 120 → 300, the last ramp spawned in bursts of 30 users with 3-s pauses between them
    counts = [40] * 8 + [80] * 2 + [120] * 8 + [150] * 3 + [180] * 3 + [210] * 3 + [240] * 3 + [270] * 3 + [300] * 8
    users = pd.DataFrame({"ts": 1000.0 + np.arange(len(counts)), "users": counts})
    assert len(step_windows(users)) == 9  # every pause of 2 s or more looks like a stage
    w = step_windows(users, levels=[40, 120, 300])
    assert list(w["users"]) == [40, 120, 300] and list(w["stage"]) == [1, 2, 3]
    assert w["ramp_start"].iloc[2] == w["end"].iloc[1] and w["end"].iloc[2] - w["hold_start"].iloc[2] == 8
    # a level never held (the run stopped early), or levels that match nothing: what was held counts
    assert list(step_windows(users, levels=[40, 120, 999])["users"]) == [40, 120]
    assert len(step_windows(users, levels=[7])) == 9
    assert step_windows(users.iloc[:0], levels=[40]).empty
