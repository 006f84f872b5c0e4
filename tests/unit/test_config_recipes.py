"""Table axes: a recipe (balancer + policy, and what it needs) varied as one value, crossed with the other axes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from contract.config import ConfigError, load_campaign, parse_campaign
from sioscale.cliargs import override_limits

ROOT = Path(__file__).resolve().parents[2]
BASE = 'name = "x"\n[load]\nusers = 3\n'


def test_recipes_campaign_crosses_each_recipe_with_transports_and_adapter() -> None:
    camp = load_campaign(ROOT / "campaigns" / "recipes.toml")
    runs = camp.runs()
    recipes = list(dict.fromkeys((r.cluster.balancer, r.cluster.policy) for r in runs))
    assert ("nginx", "ip-hash") in recipes and ("haproxy", "cookie") in recipes and ("caddy", "cookie") in recipes
    assert {p for b, p in recipes} >= {"ip-hash", "hash-consistent", "header-hash", "cookie", "l7-round-robin"}
    assert {b for b, p in recipes if p == "l7-round-robin"} == {"nginx", "haproxy", "caddy", "traefik"}  # the controls
    assert ("traefik", "cookie") in recipes
    assert len(runs) == 4 * len(recipes) and len({r.name for r in runs}) == len(runs)
    for r in runs:  # the source-IP hashes spread their users over several /24s; the others keep one address
        spread = r.cluster.policy in ("ip-hash", "hash-consistent")
        assert (r.load.source_range == "127.0.1.1-127.0.8.254") is spread, r.name
    assert runs[0].name == "nginx-ip-hash-poll+ws-memory-python-3n"
    assert runs[3].name == "nginx-ip-hash-ws-redis-python-3n"
    # the budget: ≤ 6 min on 2 cores (≈ 10 s a config here with duration 5 s: cluster start/stop and flush)
    assert sum(r.load.run_seconds for r in runs) <= 6 * 60 * 0.5


def test_table_axis_sets_its_keys_together_in_file_order() -> None:
    text = BASE + ('[axes]\nrecipe = [{ balancer = "nginx", policy = "ip-hash" }, '
                   '{ balancer = "caddy", policy = "cookie", transports = ["websocket"] }]\nadapter = ["memory", "redis"]\n')
    names = [r.name for r in parse_campaign(text).runs()]
    assert names == ["nginx-ip-hash-poll+ws-memory-python-3n", "nginx-ip-hash-poll+ws-redis-python-3n",
                     "caddy-cookie-ws-memory-python-3n", "caddy-cookie-ws-redis-python-3n"]
    # the array-of-tables spelling is the same axis
    aot = BASE + '[[axes.recipe]]\nbalancer = "nginx"\npolicy = "ip-hash"\n[[axes.recipe]]\nbalancer = "caddy"\npolicy = "cookie"\n'
    assert [r.name for r in parse_campaign(aot).runs()] == ["nginx-ip-hash-poll+ws-memory-python-3n",
                                                            "caddy-cookie-poll+ws-memory-python-3n"]


@pytest.mark.parametrize(("axes", "needle"), [
    ('recipe = [{ balancer = "nginx", policy = "cookie" }]',
     "x.toml:5: axes.recipe value 1 {balancer = \"nginx\", policy = \"cookie\"}: policy = 'cookie' is not valid for "
     "balancer 'nginx'"),
    ('recipe = [{ balancer = "nginx", polcy = "ip-hash" }]', "x.toml:5: axis 'recipe': unknown key 'polcy' in value 1"),
    ('recipe = [{ balancer = "nginx", policy = "ip-hash" }, "caddy"]',
     "x.toml:5: axis 'recipe': value 2 is 'caddy'; every value of a table axis is a non-empty table"),
    ('recipe = [{}]', "axis 'recipe': value 1 is {}"),
    ('policy = [{ balancer = "nginx", policy = "ip-hash" }]',
     "x.toml:5: axis 'policy' is a [cluster]/[load] key, so its values are policy values, not tables"),
    ('recipe = [{ balancer = "nginx", policy = "ip-hash" }]\npolicy = ["cookie"]',
     "axes 'recipe' and 'policy' both set 'policy': set it in one of them"),
    ('recipe = [{ balancer = "nginx", policy = "ip-hash" }, { balancer = "nginx", policy = "ip-hash" }]',
     "config 'nginx-ip-hash-poll+ws-memory-python-3n' is listed twice (the same values twice in an axis"),
    ('recipe = "nginx"', "x.toml:5: unknown key 'recipe' in [axes]; allowed: "),  # not a list of tables
    ('recipy = ["nginx"]', "x.toml:5: unknown key 'recipy' in [axes]; allowed: "),
    ('recipe = [{ balancer = "nginx", policy = { name = "ip-hash" } }]',  # a table where a value goes
     "axes.recipe value 1 {balancer = \"nginx\", policy = {'name': 'ip-hash'}}: policy = {'name': 'ip-hash'} is not valid"),
])
def test_table_axis_errors_name_the_axis_its_line_and_the_table(axes: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_campaign(BASE + "[axes]\n" + axes + "\n", "x.toml")
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg, msg
    if "recipy" in axes:  # an unknown plain axis says a table axis is the way to vary keys together
        assert "an axis of your own name whose values are tables" in msg and "recipy" not in msg.split("allowed:")[1]


def test_table_axis_error_in_an_array_of_tables_names_its_line() -> None:
    aot = BASE + '[[axes.recipe]]\nbalancer = "nginx"\npolicy = "ip-hash"\n[[axes.recipe]]\nbalancer = "caddy"\npolicy = "hash"\n'
    with pytest.raises(ConfigError, match=r"^x.toml:7: axes.recipe value 2 .*policy = 'hash' is not valid"):
        parse_campaign(aot, "x.toml")


def test_an_inline_table_as_an_extra_value_is_a_value_error_not_a_recipe() -> None:
    with pytest.raises(ConfigError, match=r"x.toml: policy = \{'balancer': 'nginx'\} is not valid"):
        parse_campaign(BASE + '[[extra]]\npolicy = { balancer = "nginx" }\n', "x.toml")


def test_limit_flags_override_a_key_a_table_sets() -> None:
    camp = parse_campaign(BASE + '[axes]\nrecipe = [{ balancer = "nginx", policy = "ip-hash", node_cpus = 0.5 }, '
                                 '{ balancer = "caddy", policy = "cookie" }]\n')
    out = override_limits(camp, argparse.Namespace(node_cpus=0.25, node_memory_mb=None))
    assert [r.name for r in out.runs()] == ["nginx-ip-hash-poll+ws-memory-python-3n-cpu0.25",
                                            "caddy-cookie-poll+ws-memory-python-3n-cpu0.25"]
