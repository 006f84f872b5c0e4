"""analysis.answer: the first screen's matrix over the campaign's axes, its findings and the nodes-needed lines."""

from __future__ import annotations

from typing import Any

from analysis import answer as AN


def _cfg(policy: str, transports: list[str], adapter: str, connect: float | None, delivery: float | None,
         used: int = 3, **extra: Any) -> dict[str, Any]:
    name = f"haproxy-{policy}-{'+'.join(transports)}-{adapter}"
    return {"name": name, "status": "ok",
            "config": {"balancer": "haproxy", "policy": policy, "adapter": adapter, "transports": transports,
                       "server": "python", "nodes": 3, "tls": False},
            "connections": {"connect_ratio": connect}, "broadcast": {"delivery_ratio": delivery},
            "nodes": {f"n{i}": (10 if i <= used else 0) for i in range(1, 4)}, **extra}


POLL, WS = ["polling", "websocket"], ["websocket"]
SEED = [_cfg(p, t, a, c, d, used) for p, t, a, c, d, used in (
    ("cookie", POLL, "memory", 1.0, 0.35, 3), ("cookie", POLL, "redis", 1.0, 1.0, 3),
    ("cookie", WS, "memory", 1.0, 0.34, 3), ("cookie", WS, "redis", 1.0, 1.0, 3),
    ("l7-round-robin", POLL, "memory", 0.01, None, 1), ("l7-round-robin", POLL, "redis", 0.02, None, 1),
    ("l7-round-robin", WS, "memory", 1.0, 0.36, 3), ("l7-round-robin", WS, "redis", 1.0, 0.995, 3),
)]


def test_matrix_rows_are_the_first_axis_and_columns_the_rest() -> None:
    m = AN.matrix(SEED)
    assert m.row_keys == ("policy",) and m.col_keys == ("transports", "adapter")
    assert m.rows == [("cookie",), ("l7-round-robin",)]
    assert m.cols == [("polling+websocket", "memory"), ("polling+websocket", "redis"), ("websocket", "memory"),
                      ("websocket", "redis")]
    c = m.cell(("l7-round-robin",), ("polling+websocket", "memory"))
    assert (c.connect_class, c.delivery_class, c.spread_short) == ("bad", "na", True)
    assert m.cell(("cookie",), ("websocket", "memory")).delivery_class == "bad"
    assert m.cell(("l7-round-robin",), ("websocket", "redis")).delivery_class == "ok"  # 99.5 % ≥ 99 %
    assert m.row_titles == ["policy"] and m.col_titles == ["transports", "adapter"]


def test_too_many_columns_move_into_the_rows_and_no_axis_lists_configs() -> None:
    m = AN.matrix(SEED, max_columns=2)
    assert m.row_keys == ("policy", "transports") and m.col_keys == ("adapter",)
    assert len(m.rows) == 4 and all(m.cell(r, c) for r in m.rows for c in m.cols)
    one = AN.matrix(SEED[:1])
    assert one.row_keys == ("configuration",) and one.rows == [(SEED[0]["name"],)]
    assert AN.matrix([]) is None


def test_two_configs_on_one_cell_both_show() -> None:
    twin = {**SEED[0], "name": "twin"}
    m = AN.matrix([SEED[0], twin, SEED[1]])
    names = {m.cell(r, c).name for r in m.rows for c in m.cols if m.cell(r, c)}
    assert names == {SEED[0]["name"], "twin", SEED[1]["name"]}


def test_findings_name_the_values_under_which_an_outcome_always_holds() -> None:
    f = AN.findings(SEED)
    assert f[0] == ("Every session connects (≥ 99%) whenever policy is cookie, or transports is websocket; "
                    "not in 2 of 8 configurations.")
    assert f[1] == "Every broadcast reaches its room (≥ 99%) whenever adapter is redis; not in 3 of 6 configurations."
    # a config whose sessions met on one node is left out of delivery: it crossed no node
    one = _cfg("source", WS, "memory", 1.0, 1.0, used=1)
    assert "whenever adapter is redis;" in AN.findings([*SEED, one])[1]
    assert f[2].startswith("2 configuration(s) used fewer nodes than they had")
    assert AN.findings(SEED[:2])[0] == "In all 2 configurations every session connects (≥ 99%)."
    assert AN.findings([SEED[4]])[0] == "In none of the 1 configurations every session connects (≥ 99%)."


def test_outcome_classes_and_bad_figures() -> None:
    assert [AN.outcome_class(v) for v in (1.0, 0.99, 0.95, 0.2, None, float("nan"), "1", True)] == \
        ["ok", "ok", "warn", "bad", "na", "na", "na", "na"]
    broken = _cfg("cookie", WS, "memory", "lots", None)
    broken["nodes"] = "garbage"
    c = AN.matrix([broken]).cells
    assert next(iter(c.values())).connect_ratio is None


def test_nodes_needed_lines_are_said_once_and_bindings_reach_the_cells() -> None:
    cap = {"binding": {"component": "node", "id": "n1", "metric": "cpu_percent"}, "binding_summary": "node n1 CPU at 24%",
           "users_per_node": 150.0, "nodes_needed_by_resource": {"line": "nodes of 0.25 CPU: 10,000 users → 90"}}
    a = _cfg("cookie", WS, "redis", 1.0, 1.0, capacity=cap)
    b = {**_cfg("cookie", WS, "redis", 1.0, 1.0, capacity=cap), "name": "b"}
    b["config"] = {**b["config"], "nodes": 2}
    assert AN.nodes_needed([a, b]) == [{"configs": [a["name"], "b"], "line": "nodes of 0.25 CPU: 10,000 users → 90"}]
    cell = next(iter(AN.matrix([a, b]).cells.values()))
    assert cell.binding == "node n1 CPU at 24%" and cell.users_per_node == 150.0
    usl = {"points": [{"config": "x", "nodes": 1}], "alpha": 0.1}
    assert AN.usl_over_nodes([{"capacity": {"usl_nodes": usl}}, {"capacity": {"usl_nodes": usl}}]) == [usl]


def test_without_telemetry_the_slo_knee_answers() -> None:
    cap = {"nodes_needed": {"10000": 89, "100000": 889}, "capacity_per_node": 150.0, "reached": True}
    a = _cfg("cookie", WS, "redis", 1.0, 1.0, capacity=cap)
    assert AN.nodes_needed([a])[0]["line"] == ("by the SLO knee (150 users per node, no server telemetry): "
                                               "10,000 users → 89; 100,000 users → 889")
    low = _cfg("cookie", WS, "redis", 1.0, 1.0, capacity={**cap, "reached": False})
    assert AN.nodes_needed([low])[0]["line"].endswith("(the knee was not reached: upper bounds)")
    assert AN.nodes_needed([_cfg("cookie", WS, "redis", 1.0, 1.0, capacity={"nodes_needed": None})]) == []


def test_a_value_only_ever_beside_a_named_one_is_not_named_again() -> None:
    extra = {**_cfg("l4-round-robin", WS, "redis", 1.0, 1.0), "name": "tls-row"}
    extra["config"] = {**extra["config"], "tls": True}
    f = AN.findings([*SEED, extra])
    assert "whenever adapter is redis;" in f[1] and "TLS" not in f[1]
