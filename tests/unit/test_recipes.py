"""analysis.recipes: the recipe table from summary.json config entries, and its Markdown for README."""

from __future__ import annotations

from typing import Any

from analysis import recipes as RC

POLL, WS = ["polling", "websocket"], ["websocket"]


def _cfg(balancer: str, policy: str, transports: list[str], adapter: str, connected: int, attempted: int,
         delivered: int | None = None, expected: int | None = None, nodes: tuple[int, ...] = (10, 10, 10),
         status: str = "ok") -> dict[str, Any]:
    tr = "ws" if transports == WS else "poll+ws"
    return {"name": f"{balancer}-{policy}-{tr}-{adapter}-python-3n", "status": status,
            "config": {"balancer": balancer, "policy": policy, "adapter": adapter, "transports": transports,
                       "server": "python", "nodes": 3, "tls": False},
            "connections": {"attempted": attempted, "connected": connected,
                            "connect_ratio": connected / attempted if attempted else None},
            "broadcast": {"expected": expected, "delivered": delivered,
                          "delivery_ratio": delivered / expected if expected else None},
            "nodes": {f"n{i + 1}": s for i, s in enumerate(nodes)}}


def _recipe(balancer: str, policy: str, poll: tuple[int, int], ws: tuple[int, int] = (30, 30),
            memory: float = 1 / 3, nodes: tuple[int, ...] = (10, 10, 10)) -> list[dict[str, Any]]:
    """The four configurations of a recipe: transports × adapter; memory delivers `memory` of 600 expected."""
    out = []
    for tr, (c, a) in ((POLL, poll), (WS, ws)):
        for adapter, share in (("memory", memory), ("redis", 1.0)):
            ok = c / a >= 0.9
            out.append(_cfg(balancer, policy, tr, adapter, c, a, round(600 * share) if ok else None, 600 if ok else None,
                            nodes if ok else (c, 0, 0)))
    return out


CAMPAIGN = [*_recipe("nginx", "ip-hash", (30, 30)), *_recipe("haproxy", "cookie", (30, 30)),
            *_recipe("caddy", "l7-round-robin", (1, 60)),
            *_recipe("nginx", "hash-consistent", (30, 30), memory=1.0, nodes=(30, 0, 0))]


def test_one_row_per_recipe_in_campaign_order_with_its_documented_name() -> None:
    t = RC.recipe_table(CAMPAIGN)
    # the recipes in campaign order, then the controls (round robins)
    assert list(t["recipe"]) == ["nginx ip_hash", "HAProxy cookie SRV insert", "nginx hash $remote_addr consistent",
                                 "Caddy lb_policy round_robin"]
    assert list(t["control"]) == [False, False, False, True]
    assert t.loc[0, "configs"] == [c["name"] for c in CAMPAIGN[:4]]
    assert RC.recipe_name("traefik", "cookie") == "Traefik sticky cookie"
    assert RC.recipe_name("envoy", "ring-hash") == "envoy ring-hash"  # a recipe nobody named yet still gets a row


def test_each_question_is_a_yes_or_no_with_the_number_behind_it() -> None:
    t = RC.recipe_table(CAMPAIGN).set_index("policy")
    ip = t.loc["ip-hash"]
    assert (ip["polling"], ip["polling_num"], ip["polling_den"], ip["polling_class"]) == (True, 60, 60, "ok")
    assert ip["polling_text"] == "yes · 100% (60/60)"
    assert (ip["memory"], ip["memory_text"], ip["memory_class"]) == (False, "no · 33.3% (400/1,200)", "bad")
    assert (ip["redis"], ip["redis_text"]) == (True, "yes · 100% (1,200/1,200)")
    assert ip["spread"] and ip["spread_text"] == "yes · 3 of 3 nodes, p = 1" and ip["spread_class"] == "ok"
    rr = t.loc["l7-round-robin"]  # the control: browser clients fail, websocket-only works
    assert (rr["polling"], rr["polling_text"], rr["polling_class"]) == (False, "no · 1.7% (2/120)", "bad")
    assert rr["websocket"] and rr["websocket_text"] == "yes · 100% (60/60)"
    # its 1-session polling configs say nothing about its spread: judged on the websocket-only ones
    assert rr["spread"] and rr["spread_num"] == 3
    # delivery comes from the websocket-only configs only (the polling ones measured none)
    assert rr["memory_den"] == 600 and rr["redis_den"] == 600


def test_a_recipe_that_puts_everyone_on_one_node_does_not_spread_and_its_delivery_is_not_judged() -> None:
    h = RC.recipe_table(CAMPAIGN).set_index("policy").loc["hash-consistent"]
    assert (bool(h["spread"]), h["spread_text"], h["spread_class"]) == (False, "no · 1 of 3 nodes", "bad")
    # all on one node: a memory adapter "delivers everything", which says nothing about a cluster
    assert h["memory"] is None and h["memory_class"] == "na" and h["memory_text"] == "— (all on 1 of 3 nodes)"


def test_uneven_spread_is_no_with_its_p_value_and_amber() -> None:
    cs = _recipe("haproxy", "leastconn", (90, 90), ws=(90, 90), nodes=(60, 25, 5))
    s = RC.recipe_table(cs).iloc[0]
    assert not s["spread"] and s["spread_class"] == "warn" and s["spread_text"] == "no · uneven in 4 of 4 configs, p < 0.001"
    assert s["spread_value"] < RC.SPREAD_P and (s["spread_num"], s["spread_den"]) == (3, 3)
    # one configuration of four uneven (1/11/18 of 30: a hash of 30 user ids), or on fewer nodes: said with the count
    cs = _recipe("nginx", "header-hash", (30, 30))
    cs[2]["nodes"] = {"n1": 1, "n2": 11, "n3": 18}
    assert RC.recipe_table(cs).iloc[0]["spread_text"] == "no · uneven in 1 of 4 configs, p < 0.001"
    cs[1]["nodes"] = {"n1": 30, "n2": 0, "n3": 0}
    row = RC.recipe_table(cs).iloc[0]
    assert (row["spread_text"], row["spread_class"]) == ("no · 1 of 3 nodes in 1 of 4 configs", "bad")


def test_missing_transports_adapters_and_failed_configs_are_said_not_guessed() -> None:
    only_ws_redis = [c for c in _recipe("nginx", "header-hash", (30, 30)) if c["config"]["transports"] == WS
                     and c["config"]["adapter"] == "redis"]
    failed = _cfg("traefik", "cookie", POLL, "memory", 0, 0, nodes=(), status="failed")
    failed["connections"] = {}
    failed["nodes"] = "garbage"
    t = RC.recipe_table([*only_ws_redis, failed]).set_index("balancer")
    n = t.loc["nginx"]
    assert n["polling"] is None and n["polling_text"] == "— (not in this campaign)" and n["polling_class"] == "na"
    assert n["memory"] is None and n["websocket"] and n["redis"]
    tr = t.loc["traefik"]
    assert tr["polling"] is None and "not run" in tr["polling_text"]
    assert tr["spread"] is None and tr["spread_text"] == "— (no connected session)"


def test_applies_only_when_configs_differ_by_balancer_or_policy() -> None:
    assert RC.applies(CAMPAIGN)
    assert RC.applies(_recipe("haproxy", "cookie", (30, 30)) + _recipe("haproxy", "source", (30, 30)))
    assert not RC.applies(_recipe("nginx", "ip-hash", (30, 30)))
    assert not RC.applies([])


def test_records_are_plain_json_values() -> None:
    import json

    recs = RC.records(RC.recipe_table(CAMPAIGN, {CAMPAIGN[0]["name"]: "127.0.1.1-127.0.8.254"}))
    json.dumps(recs, allow_nan=False)
    assert recs[0]["sources"] == ["127.0.1.1-127.0.8.254"] and recs[1]["sources"] == []
    assert recs[3]["polling_num"] == 2 and isinstance(recs[3]["polling_num"], int)
    assert recs[2]["memory_value"] is None and recs[2]["memory_num"] is None


def test_markdown_is_one_line_per_recipe_with_bold_verdicts_and_the_source_note() -> None:
    md = RC.to_markdown(RC.recipe_table(CAMPAIGN, {c["name"]: "127.0.1.1-127.0.8.254" for c in CAMPAIGN[:4]}))
    lines = md.splitlines()
    assert lines[0] == ("| recipe | works with polling+websocket? | works websocket-only? | broadcasts complete without "
                        "Redis? | broadcasts complete with Redis? | spread across nodes? (χ²) |")
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2] == ("| nginx ip_hash | **yes** 100% (60/60) | **yes** 100% (60/60) | **no** 33.3% (400/1,200) | "
                        "**yes** 100% (1,200/1,200) | **yes** 3 of 3 nodes, p = 1 |")
    assert lines[5].startswith("| Caddy lb_policy round_robin (control) | **no** 1.7% (2/120) |")
    assert "$remote_addr" in lines[4] and len(lines[2:6]) == 4 and all(x.count("|") == 7 for x in lines[2:6])
    assert lines[-1] == "nginx ip_hash: client sources 127.0.1.1-127.0.8.254 (`--sio-source-range`)."
