"""The one config schema: campaigns, validation, errors that name the key and line."""

import re
from pathlib import Path

import pytest

from sioscale.config import (
    ClusterConfig,
    ConfigError,
    LoadConfig,
    load_campaign,
    parse_campaign,
    run_name,
)

ROOT = Path(__file__).resolve().parents[2]


def test_seed_campaign_is_the_seed_matrix():
    camp = load_campaign(ROOT / "campaigns" / "seed.toml")
    runs = camp.runs()
    assert len(runs) == 16
    policies = {r.cluster.policy for r in runs}
    assert policies == {"l4-round-robin", "l7-round-robin", "cookie", "source"}
    assert {r.load.transports for r in runs} == {("polling", "websocket"), ("websocket",)}
    assert {r.cluster.adapter for r in runs} == {"memory", "redis"}
    assert all(r.cluster.nodes == 3 and r.load.locustfile == "locustfiles/chat.py" for r in runs)
    assert len({r.name for r in runs}) == 16  # names are unique run directories
    assert camp.thresholds.active() == {"connect_ratio": 0.99, "delivery_ratio": 0.99, "p95_connect_ms": 1000.0}


def test_smoke_campaign_is_small():
    camp = load_campaign(ROOT / "campaigns" / "smoke.toml")
    runs = camp.runs()
    assert 1 <= len(runs) <= 6
    assert sum(r.load.run_seconds + 15 for r in runs) <= 120


@pytest.mark.parametrize(
    "text, needle",
    [
        ('name="x"\n[load]\nuserz = 3\n', "<campaign>:3: unknown key 'userz' in [load]"),
        ('name="x"\nfoo = 1\n', "<campaign>:2: unknown key 'foo'"),
        ('name="x"\n[cluster]\npolicy = "sticky"\n', "policy = 'sticky' is not valid for balancer 'haproxy'"),
        ('name="x"\n[cluster]\nbalancer = "caddy"\npolicy = "source"\n', "for balancer 'caddy'"),
        ('name="x"\n[axes]\ntransports = [["carrier-pigeon"]]\n', "transports = ['carrier-pigeon']"),
        ('name="x"\n[axes]\nadapter = []\n', "axis 'adapter' must be a non-empty list"),
        ('name="x"\n[load]\nusers = 0\n', "users = 0"),
        ('[load]\n', "'name' is required"),
        ('name="x"\n[load\n', "not valid TOML"),
        ('name="x"\n[thresholds]\nconnect = 1\n', "unknown key 'connect' in [thresholds]"),
        ('name="x"\n[load]\nsteps = [{users = 5, hodl = 3}]\n', "unknown key 'hodl'"),
    ],
)
def test_bad_campaigns_name_the_problem(text, needle):
    with pytest.raises(ConfigError) as ei:
        parse_campaign(text)
    assert needle in str(ei.value)


def test_axes_override_base_and_steps_parse():
    camp = parse_campaign(
        'name = "c"\n[cluster]\nbalancer = "caddy"\npolicy = "cookie"\n'
        '[load]\nsteps = [[10, 20], {users = 30, hold = 20}]\n'
        '[axes]\nnodes = [1, 2]\ntransports = ["websocket", "polling,websocket"]\n'
    )
    runs = camp.runs()
    assert [(r.cluster.nodes, r.load.transports) for r in runs] == [
        (1, ("websocket",)),
        (1, ("polling", "websocket")),
        (2, ("websocket",)),
        (2, ("polling", "websocket")),
    ]
    assert runs[0].load.run_seconds == 40.0
    assert runs[0].labels() == {
        "balancer": "caddy", "policy": "cookie", "adapter": "memory", "transports": ["websocket"],
        "server": "python", "nodes": 1, "tls": False,
    }


def test_run_name_is_stable_and_distinguishes_configs():
    a = run_name(ClusterConfig(policy="cookie", tls=True), LoadConfig(transports=("websocket",)))
    assert a == "haproxy-cookie-ws-memory-python-3n-tls"
    b = run_name(ClusterConfig(policy="cookie"), LoadConfig(eio=3))
    assert b == "haproxy-cookie-poll+ws-memory-python-3n-eio3"


def test_cluster_only_binds_loopback():
    with pytest.raises(ConfigError, match="loopback"):
        ClusterConfig(host="0.0.0.0").validate()


def test_faults_parse_validate_and_reach_every_run():
    camp = parse_campaign(
        'name = "f"\n[axes]\npolicy = ["cookie", "source"]\n'
        '[[faults]]\nat = 5\naction = "stop_node"\ntarget = "n3"\n[[faults]]\nat = 9\naction = "stop_redis"\n'
    )
    assert all(len(r.faults) == 2 and r.faults[0].target == "n3" for r in camp.runs())
    for text, needle in [
        ('name="f"\n[[faults]]\nat = 1\naction = "stop_node"\ntarget = "n4"\n', "one of n1, n2, n3"),
        ('name="f"\n[[faults]]\nat = -1\naction = "stop_redis"\n', "faults.at = -1"),
        ('name="f"\n[[faults]]\nat = 1\naction = "stop_redis"\ntarget = "n1"\n', "only for stop_node"),
        ('name="f"\n[[faults]]\nat = 1\naction = "reboot"\n', "faults.action = 'reboot'"),
        ('name="f"\n\n[[faults]]\nat = 1\naction = "stop_redis"\nwhen = 2\n', "<campaign>:6: unknown key 'when' in [[faults]]"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            parse_campaign(text)


@pytest.mark.parametrize("path", sorted((ROOT / "campaigns").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_campaign_is_valid(path):
    camp = load_campaign(path)
    runs = camp.runs()
    assert runs and camp.name == path.stem
    for r in runs:
        assert (ROOT / r.load.locustfile).is_file()
