"""analysis.resources on small hand-made frames: limits, USE, the binding resource, fits, nodes needed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import resources as R

T0 = 1_760_000_000.0


def _windows(stages: list[tuple[int, float, float]]) -> pd.DataFrame:
    """(users, hold_start offset, end offset) per stage → capacity.step_windows' shape."""
    rows, prev = [], T0
    for i, (u, hs, e) in enumerate(stages, 1):
        rows.append({"stage": i, "users": u, "ramp_start": prev, "hold_start": T0 + hs, "end": T0 + e})
        prev = T0 + e
    return pd.DataFrame(rows)


def _res(samples: list[tuple[float, str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(samples, columns=["ts", "component", "id", "metric", "value"])


def _steady(stage_values: list[dict[str, float]], comp: str = "node", id_: str = "n1", span: float = 10.0) -> list:
    """One sample a second per metric over each stage's hold (stage i holds [10 i, 10 i + span))."""
    out = []
    for i, vals in enumerate(stage_values):
        for s in range(int(span)):
            ts = T0 + 10 * i + s + 0.25
            out += [(ts, comp, id_, m, v) for m, v in vals.items()]
    return out


def _stats(users: list[int], failure: list[float] | None = None) -> pd.DataFrame:
    failure = failure or [0.0] * len(users)
    return pd.DataFrame({"stage": range(1, len(users) + 1), "users": users, "steps": [1000] * len(users),
                         "failure_ratio": failure})


WIN3 = _windows([(40, 0, 10), (120, 10, 20), (300, 20, 30)])


def _knee(first_failing: int | None = None, generator: int | None = None) -> dict:
    return {"first_failing_stage": first_failing, "generator_stage": generator}


def test_limits_from_rows_win_over_meta_and_meta_is_read_defensively() -> None:
    res = _res([(T0 + 1, "node", "n1", "cpu_limit_cores", 0.25), (T0 + 1, "node", "n2", "cpu_percent", 3.0)])
    meta = {"cluster_info": {"node_limits": {"cpus": 0.5, "memory_mb": 512}}}
    lim = R.node_limits(res, meta)
    assert lim["n1"]["cpu_cores"] == 0.25 and lim["n1"]["source"] == "resources.csv"
    assert lim["n2"]["cpu_cores"] == 0.5 and lim["n2"]["memory_bytes"] == 512 * 2**20
    assert lim["n1"]["memory_bytes"] == 512 * 2**20  # the row gave only the CPU
    # per node, in the nodes list, or a config key: all accepted; garbage is not a limit
    lim = R.node_limits(None, {"cluster_info": {"nodes": [{"id": "n3", "cpus": 1.5}, "junk"]}})
    assert lim == {"n3": {"cpu_cores": 1.5, "memory_bytes": None, "source": "meta.json"}}
    assert R.node_limits(None, {"config": {"node_cpus": 0.25}}) == {}  # no node id known: nothing to attach it to
    bad = {"cluster_info": {"node_limits": {"cpus": "lots", "memory_mb": True}, "nodes": "n1"}, "config": [1]}
    assert R.node_limits(_res([(T0, "node", "n1", "cpu_percent", 5.0)]), bad)["n1"]["cpu_cores"] is None


def test_use_table_utilisation_per_limit_and_saturation_columns() -> None:
    res = _res(_steady([{"cpu_percent": 10.0, "cpu_limit_cores": 0.25, "throttled_ms": 0.0, "event_loop_lag_ms": 3.0},
                        {"cpu_percent": 24.5, "cpu_limit_cores": 0.25, "throttled_ms": 600.0, "event_loop_lag_ms": 250.0}])
               + _steady([{"cpu_percent": 50.0}, {"cpu_percent": 50.0}], id_="n2")
               + _steady([{"queue": 0.0, "errors": 0.0}, {"queue": 3.0, "errors": 2.0}], comp="balancer", id_="haproxy"))
    win = _windows([(40, 0, 10), (120, 10, 20)])
    use = R.use_table(R.stage_stats(res, win), _stats([40, 120], [0.0, 0.05]), R.node_limits(res, {}))
    by = {(u["stage"], u["id"]): u for u in use}
    assert by[(1, "n1")]["utilisation"] == pytest.approx(0.4)  # 10 % of a 0.25-core limit
    assert by[(1, "n2")]["utilisation"] == pytest.approx(0.5) and by[(1, "n2")]["cpu_limited"] is False  # one core
    assert by[(2, "n1")]["throttled_share"] == pytest.approx(0.6) and by[(2, "n1")]["lag_p99_ms"] == 250.0
    assert by[(2, "haproxy")]["queue_max"] == 3.0 and by[(2, "haproxy")]["failed_steps"] == 50
    # the first and last second of a hold are left out: a sample reading the ramp does not count
    res2 = _res([(T0 + 0.5, "node", "n1", "cpu_percent", 99.0), *_steady([{"cpu_percent": 10.0}])[2:8]])
    assert R.use_table(R.stage_stats(res2, win), _stats([40, 120]), {})[0]["cpu_percent"] == pytest.approx(10.0)


def test_binding_names_cpu_before_the_lag_it_causes_at_the_first_saturated_stage() -> None:
    res = _res(_steady([{"cpu_percent": 8.0, "event_loop_lag_ms": 2.0},
                        {"cpu_percent": 24.6, "event_loop_lag_ms": 180.0},
                        {"cpu_percent": 24.9, "event_loop_lag_ms": 900.0}])
               + [(T0 + 1, "node", "n1", "cpu_limit_cores", 0.25)])
    use = R.use_table(R.stage_stats(res, WIN3), _stats([40, 120, 300]), R.node_limits(res, {}))
    b, reason, stage = R.binding(use, _knee(first_failing=3), True)
    assert b == {"component": "node", "id": "n1", "metric": "cpu_percent", "value": pytest.approx(24.6), "limit": 25.0}
    assert stage == 2 and "before the SLO broke" in reason and "0.25-core" in reason
    assert R.binding_text(b).startswith("node n1 CPU: 24.6%")


@pytest.mark.parametrize("stage2, comp, id_, metric", [
    ({"cpu_percent": 40.0, "event_loop_lag_ms": 150.0}, "node", "n1", "event_loop_lag_ms"),  # a loop blocked with CPU to spare
    ({"cpu_percent": 20.0, "rss_bytes": 480 * 2**20, "memory_limit_bytes": 512 * 2**20}, "node", "n1", "rss_bytes"),
])
def test_binding_names_lag_or_memory_when_they_bound(stage2: dict, comp: str, id_: str, metric: str) -> None:
    res = _res(_steady([{"cpu_percent": 5.0, "memory_limit_bytes": 512 * 2**20}, stage2, stage2]))
    use = R.use_table(R.stage_stats(res, WIN3), _stats([40, 120, 300]), R.node_limits(res, {}))
    b, _, stage = R.binding(use, _knee(first_failing=2), True)
    assert (b["component"], b["id"], b["metric"], stage) == (comp, id_, metric, 2)


def test_binding_redis_and_balancer_queue() -> None:
    redis = _steady([{"cpu_percent": 20.0}, {"cpu_percent": 97.0}, {"cpu_percent": 99.0}], comp="redis", id_="redis")
    node = _steady([{"cpu_percent": 5.0}, {"cpu_percent": 10.0}, {"cpu_percent": 12.0}])
    use = R.use_table(R.stage_stats(_res(redis + node), WIN3), _stats([40, 120, 300]), {})
    b, _, _ = R.binding(use, _knee(first_failing=3), True)
    assert (b["component"], b["metric"], b["limit"]) == ("redis", "cpu_percent", 100.0)
    q = _steady([{"queue": 0.0}, {"queue": 0.0}, {"queue": 12.0}], comp="balancer", id_="haproxy")
    use = R.use_table(R.stage_stats(_res(q + node), WIN3), _stats([40, 120, 300]), {})
    b, _, stage = R.binding(use, _knee(first_failing=3), True)
    assert (b["component"], b["metric"], b["value"], stage) == ("balancer", "queue", 12.0, 3)


def test_no_binding_is_null_with_a_reason_and_the_scan_stops_at_the_knee_and_the_generator() -> None:
    res = _res(_steady([{"cpu_percent": 10.0}, {"cpu_percent": 30.0}, {"cpu_percent": 99.0}]))
    use = R.use_table(R.stage_stats(res, WIN3), _stats([40, 120, 300]), {})
    b, reason, stage = R.binding(use, _knee(first_failing=2), True)  # the CPU bound came after the SLO broke
    assert b is None and stage is None
    assert "no sampled resource reached its bound up to stage 2" in reason and "n1 at 30%" in reason
    b, reason, _ = R.binding(use, _knee(generator=3), True)  # stage 3 measured the generator
    assert b is None and "up to stage 2" in reason and "from stage 3 on the load generator" in reason
    b, _, _ = R.binding(use, _knee(), True)  # SLO never broke: the CPU at its bound still binds
    assert b["metric"] == "cpu_percent"
    assert R.binding([], _knee(), False)[1].startswith("no resources.csv")


def test_reconciliation_flags_a_gap_over_two_percent() -> None:
    ev = pd.DataFrame({"ts": [T0 + 0.1 + i * 0.01 for i in range(100)], "step": "connect", "ok": 1,
                       "eio_sid": [f"s{i}" for i in range(100)], "config": "c"})
    win = _windows([(100, 2, 12)])
    for factor, flagged in ((1.0, False), (1.01, False), (1.10, True)):
        cl = [(T0 + s + 0.25, "node", n, "clients", 50.0 * factor) for s in range(14) for n in ("n1", "n2")]
        rec = R.reconciliation(_res(cl), ev, win)
        assert rec["flagged"] is flagged and rec["client_mean"] == 100 and rec["seconds"] >= 6
        assert rec["diff_median"] == pytest.approx(factor - 1, abs=1e-9)
    assert R.reconciliation(_res([]), ev, win) is None


def test_memory_per_connection_and_cpu_per_step() -> None:
    rng = np.random.default_rng(1)
    clients = np.arange(0, 300, 10, dtype=float)
    rows = [(T0 + i, "node", "n1", "clients", c) for i, c in enumerate(clients)]
    rows += [(T0 + i, "node", "n1", "rss_bytes", 40e6 + 65536 * c + rng.normal(0, 1e4)) for i, c in enumerate(clients)]
    mem = R.memory_per_connection(_res(rows))["n1"]
    assert mem["bytes_per_client"] == pytest.approx(65536, rel=0.01) and mem["r2"] > 0.99 and mem["clients_max"] == 290
    win = _windows([(40, 0, 10)])
    st = R.stage_stats(_res(_steady([{"cpu_percent": 20.0}])), win)
    cells = pd.DataFrame({"second": [T0 + s for s in range(10)], "node": "n1", "ok": 1, "count": 100})
    # 20 % of a core for 10 s = 2000 cpu-ms over 1000 steps
    assert R.cpu_per_step(st, cells, win)["n1"]["cpu_ms_per_step"] == pytest.approx(2.0)


def test_nodes_by_resource_takes_the_max_and_marks_extrapolation() -> None:
    # cpu = 1 + 0.16 × clients reaches the 25 % bound at 150 clients; stage 3 is capped (left out of the fit)
    res = _res(_steady([{"cpu_percent": 7.4, "clients": 40, "cpu_limit_cores": 0.25, "memory_limit_bytes": 2**29},
                        {"cpu_percent": 20.2, "clients": 120}, {"cpu_percent": 24.8, "clients": 290}]))
    lim = R.node_limits(res, {})
    use = R.use_table(R.stage_stats(res, WIN3), _stats([40, 120, 300]), lim)
    mem = {"n1": {"bytes_per_client": 65536.0, "intercept_bytes": 40e6, "clients_max": 290.0}}
    plan = {"capacity_per_node": 120.0, "imbalance": 1.0}
    nb = R.nodes_by_resource(use, mem, lim, plan, _knee(first_failing=3), nodes=1)
    cpu, memory, slo = nb["resources"]
    assert cpu["users_per_node"] == pytest.approx(150, rel=0.01) and cpu["extrapolated"] is False
    assert memory["extrapolated"] is True and memory["users_per_node"] == pytest.approx((2**29 - 40e6) / 65536)
    assert slo["users_per_node"] == 120
    assert nb["targets"]["10000"] == {"nodes": math.ceil(10_000 / (120 * 0.75)), "by": "slo", "extrapolated": True,
                                      "beyond_measured_nodes": True}
    assert nb["line"].startswith("nodes of 0.25 CPU / 512 MiB: 10,000 users → 112 (by the SLO knee, extrapolated)")
    assert nb["line"].endswith("beyond the 1 node(s) measured assumes linear scale-out: a lower bound")
    # a CPU bound beyond what any node carried: the linear model extrapolates, and says so
    res = _res(_steady([{"cpu_percent": 2.0, "clients": 40}, {"cpu_percent": 4.0, "clients": 120}]))
    use = R.use_table(R.stage_stats(res, _windows([(40, 0, 10), (120, 10, 20)])), _stats([40, 120]), {})
    cpu = R.cpu_users_per_node(use, 1)
    assert cpu["extrapolated"] is True and cpu["users_per_node"] > 120 and "linear fit" in cpu["model"]


def _use_rows(nodes: int, users: list[int], cpu, lim: float = 25.0, jitter: float = 0.0) -> list[dict]:
    """USE rows of `nodes` nodes at each stage's users, each node's CPU = cpu(own clients, cluster users)."""
    rows = []
    for st, u in enumerate(users, 1):
        for k in range(nodes):
            own = u / nodes
            wobble = jitter * (1 if (st + k) % 2 else -1)
            rows.append({"stage": st, "users": u, "component": "node", "id": f"n{k + 1}", "clients": own,
                         "cpu_percent": cpu(own, u) + wobble, "cpu_limit_percent": lim, "throttled_share": 0.0})
    return rows


def test_joint_cost_against_node_count_and_its_ceiling() -> None:
    # a node's CPU = 1 + 0.12 × its clients + 0.04 × the cluster's users (every node handles every broadcast)
    def cpu(own: float, users: float) -> float:
        return 1.0 + 0.12 * own + 0.04 * users

    groups = [{"config": f"c{n}", "nodes": n, "use": _use_rows(n, [10, 20, 40, 60, 80], cpu, jitter=0.05)}
              for n in (1, 2, 4)]
    # readings at or past the bound (CPU ≥ 90 % of the limit, or throttled) are left out of the fit
    groups[0]["use"] += [{**groups[0]["use"][-1], "stage": 9, "users": 400, "clients": 400, "cpu_percent": 25.0}]
    m = R.scale_out_fit(groups)
    assert m["growing"] is True and m["measured_nodes"] == [1, 4]
    assert m["c1"] == pytest.approx(0.04, rel=0.05) and m["c0"] == pytest.approx(0.12, rel=0.05)
    assert m["intercept"] == pytest.approx(1.0, abs=0.2) and m["readings"] == 35
    lo, hi = m["ceiling_range_at_bound"]
    assert lo < m["ceiling_at_bound"] < hi and m["ceiling_at_bound"] == pytest.approx(600, rel=0.05)
    exact = {**m, "c0": 0.12, "c1": 0.04, "intercept": 1.0}
    # 300 users: 6 nodes carry 50 each within (25 − 1) / (0.12 + 0.04 × 6) × 0.75 = 50; 5 would not
    assert R.scale_out_nodes(exact, 300, 1.0, 0.25) == 6
    assert R.scale_out_nodes(exact, 10_000, 1.0, 0.25) is None  # past the ceiling of 24 × 0.75 / 0.04 = 450 users
    # the smallest node that could: (1 + 10,000 × 0.04 / 0.75) / 100 cores
    assert R.min_cpu_cores(exact, 10_000, 1.0, 0.25) == pytest.approx((1 + 10_000 * 0.04 / 0.75) / 100)
    nbr = {"targets": {"300": {}, "10000": {}}, "resources": [], "imbalance": 1.0, "headroom": 0.25, "measured_nodes": 4,
           "node_size": {"label": "0.25 CPU / no memory limit"}}
    R.apply_scale_out(nbr, exact)
    assert nbr["targets"]["300"] == {"nodes": 6, "by": "cpu_scale_out", "extrapolated": True, "beyond_measured_nodes": True}
    assert nbr["targets"]["10000"]["nodes"] is None and nbr["targets"]["10000"]["ceiling_users"] == pytest.approx(450)
    # marked an extrapolation; the ceiling's range and headroom said once; the node size that could carry it
    line = nbr["line"]
    assert "10,000 users → none of this size (extrapolated; ≥ 5.3 CPU per node, more than one event loop's core)" in line
    assert "the CPU at scale model's ceiling is 450 users (" in line and "at any node count, with 25% headroom" in line


def test_joint_fit_without_growth_is_linear_and_needs_two_node_counts() -> None:
    def flat(own: float, users: float) -> float:
        return 1.0 + 0.2 * own

    groups = [{"config": f"c{n}", "nodes": n, "use": _use_rows(n, [10, 20, 40, 60], flat, jitter=0.05)} for n in (1, 2)]
    m = R.scale_out_fit(groups)
    assert m["growing"] is False and m["c1"] == 0 and m["c0"] == pytest.approx(0.2, rel=0.05)
    assert "ceiling_at_bound" not in m
    assert R.scale_out_fit(groups[:1]) is None  # one node count is no model
    assert R.scale_out_fit([{**g, "use": g["use"][:1]} for g in groups]) is None  # too few readings


def test_limits_from_the_clusters_own_meta_shape() -> None:
    """targets.cluster's info: node_limits {cpus, memory_mb, cgroup_version, groups {id: paths}} (no per-node limits)."""
    meta = {"cluster_info": {"nodes": [{"id": "n1", "port": 1, "pid": 2, "url": "u"}],
                             "node_limits": {"cpus": 0.25, "memory_mb": 256, "cgroup_version": 1,
                                             "groups": {"n1": ["/sys/fs/cgroup/cpu/sioscale/x"]}}},
            "cluster": {"node_cpus": 0.25, "node_memory_mb": 256}}
    lim = R.node_limits(_res([(T0, "node", "n1", "cpu_percent", 5.0)]), meta)
    assert lim == {"n1": {"cpu_cores": 0.25, "memory_bytes": 256 * 2**20, "source": "meta.json"}}
    assert R.node_size(lim)["label"] == "0.25 CPU / 256 MiB" and R.node_size({})["label"] == "no CPU limit / no memory limit"


def test_a_quota_hit_by_bursts_binds_the_nodes_cpu_by_its_throttling() -> None:
    """As measured on a real 0.25-core node at 300 chat users: mean CPU 12 % of 25 %, yet 3-4 of 10 CFS periods
    a second throttled and the loop lagging 80 ms: the quota binds, and the binding names the node's CPU."""
    res = _res(_steady([{"cpu_percent": 4.0, "throttled_periods": 0.0, "throttled_ms": 0.0, "event_loop_lag_ms": 5.0,
                         "cpu_limit_cores": 0.25},
                        {"cpu_percent": 5.0, "throttled_periods": 0.3, "throttled_ms": 3.0, "event_loop_lag_ms": 9.0},
                        {"cpu_percent": 12.3, "throttled_periods": 3.4, "throttled_ms": 140.0, "event_loop_lag_ms": 80.0}]))
    use = R.use_table(R.stage_stats(res, WIN3), _stats([40, 120, 300]), R.node_limits(res, {}))
    row = next(u for u in use if u["stage"] == 3)
    assert row["throttled_period_share"] == pytest.approx(0.34) and row["throttled_time_share"] == pytest.approx(0.14)
    b, reason, stage = R.binding(use, _knee(), True)
    assert (b["component"], b["id"], b["metric"], b["limit"], stage) == ("node", "n1", "cpu_percent", 25.0, 3)
    assert "34% of its CFS periods" in reason and "while the SLO still held" in reason
    # the CPU line of the free stages would reach 25 % only at ~1,700 users: held to the 300 measured at the bound
    cpu = R.cpu_users_per_node(use, 1)
    assert cpu["users_per_node"] == 300 and cpu["extrapolated"] is False and "held to 300 clients" in cpu["model"]
    # a few throttled periods are not a bound
    assert R.binding([u for u in use if u["stage"] < 3], _knee(), True)[0] is None


def test_analyse_without_a_step_load_or_samples_says_why() -> None:
    res = _res(_steady([{"cpu_percent": 10.0, "clients": 40.0, "rss_bytes": 5e7}]))
    one = _windows([(40, 0, 10)])
    cap, section = R.analyse(res, {}, one, _stats([40]), _knee(), {}, None, None, 1)
    assert cap["binding"] is None and cap["binding_reason"].startswith("one load level only")
    assert cap["nodes_needed_by_resource"] is None and section["samples"] == len(res) and section["use"] == []
    cap, section = R.analyse(None, {}, None, None, None, None, None, None, 1)
    assert section is None and cap["binding_reason"].startswith("no resources.csv")


def test_throttled_share_is_over_the_runnable_periods_when_they_were_read() -> None:
    # 3 throttled periods a second: 30 % of a second's ten, but 60 % of the 5 periods the node had work in
    res = _res(_steady([{"cpu_percent": 8.0, "throttled_periods": 3.0, "cfs_periods": 5.0}]))
    use = R.use_table(R.stage_stats(res, _windows([(40, 0, 10)])), _stats([40]), {"n1": {"cpu_cores": 0.25}})
    assert use[0]["throttled_period_share"] == pytest.approx(0.6)
    old = _res(_steady([{"cpu_percent": 8.0, "throttled_periods": 3.0}]))  # a run made before cfs_periods
    use = R.use_table(R.stage_stats(old, _windows([(40, 0, 10)])), _stats([40]), {"n1": {"cpu_cores": 0.25}})
    assert use[0]["throttled_period_share"] == pytest.approx(0.3)
