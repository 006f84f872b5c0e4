"""The one config schema: campaigns, validation, errors that name the key and line."""

import re
from pathlib import Path

import pytest

from contract.config import (
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
    assert len(runs) == 18
    # the 16 of the axes, then the seed's own deployment: an L4 TLS listener with a 60 s idle timeout, with Redis
    ext = runs[16:]
    assert all(r.cluster.policy == "l4-round-robin" and r.cluster.tls and r.cluster.idle_timeout == 60
               and r.cluster.adapter == "redis" for r in ext)
    assert [r.load.transports for r in ext] == [("polling", "websocket"), ("websocket",)]
    assert ext[0].name == "haproxy-l4-round-robin-poll+ws-redis-python-3n-tls-idle60-ping5"
    runs = runs[:16]
    policies = {r.cluster.policy for r in runs}
    assert policies == {"l4-round-robin", "l7-round-robin", "cookie", "source"}
    assert {r.load.transports for r in runs} == {("polling", "websocket"), ("websocket",)}
    assert {r.cluster.adapter for r in runs} == {"memory", "redis"}
    assert all(r.cluster.nodes == 3 and r.load.locustfile == "locustfiles/chat.py" for r in runs)
    # past the first ping within the 15 s window (issue 13): sessions show what the heartbeat's POST meets
    assert all(r.cluster.ping_interval == 5 for r in camp.runs())
    assert len({r.name for r in camp.runs()}) == 18  # names are unique run directories
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
        # every field type-checked: a ConfigError naming the key, never AttributeError/TypeError later
        ('name="x"\n[cluster]\nhost = 5\n', "host = 5: the local cluster binds loopback"),
        ('name="x"\n[cluster]\nhost = "127.evil"\n', "host = '127.evil'"),
        ('name="x"\n[cluster]\ntls = "no"\n', "tls = 'no': must be true or false"),
        ('name="x"\n[cluster]\nnodes = true\n', "nodes = True: must be a whole number from 1 to 64"),
        ('name="x"\n[cluster]\nport = 80.5\n', "port = 80.5"),
        ('name="x"\n[cluster]\nbalancer = 5\n', "balancer = 5 is not valid; choose one of: haproxy, caddy, nginx, traefik, none"),
        ('name="x"\n[cluster]\nadapter = "redis"\nredis_url = 5\n', "redis_url = 5: a URL starting with redis://"),
        ('name="x"\n[cluster]\nredis_url = "redis://127.0.0.1:6379/0"\n',
         "redis_url is only used with a Redis adapter"),
        ('name="x"\n[cluster]\nnode_header = 5\n', "node_header = 5: must be a non-empty string"),
        ('name="x"\n[load]\nnamespace = 5\n', "namespace = 5: a string starting with '/'"),
        ('name="x"\n[load]\nlocustfile = 5\n', "locustfile = 5: must be a non-empty string"),
        ('name="x"\n[load]\nusers = true\n', "users = True: must be a whole number >= 1"),
        ('name="x"\n[load]\nusers = 2.5\n', "users = 2.5"),
        ('name="x"\n[load]\neio = 4.0\n', "eio = 4.0"),
        ('name="x"\n[load]\nspawn_rate = inf\n', "spawn_rate = inf: must be a positive (finite) number"),
        ('name="x"\n[load]\nduration = nan\n', "duration = nan"),
        ('name="x"\n[load]\nmessage_rate = "1"\n', "message_rate = '1'"),
        ('name="x"\n[load]\nreconnect = 1\n', "reconnect = 1: must be true or false"),
        ('name="x"\n[load]\nsource_range = 5\n', "source_range = 5"),
        ('name="x"\n[load]\ntransports = 5\n', "transports = 5: one of"),
        ('name="x"\n[load]\nextra_args = "--foo"\n', "extra_args = '--foo': a list of strings"),
        ('name="x"\n[load]\nsteps = [[10, inf], [20, 5]]\n', "hold must be a finite number"),
        ('name="x"\n[load]\nsteps = [[10, 5], [20, nan]]\n', "hold must be a finite number"),
        ('name="x"\n[load]\nsteps = [[true, 5]]\n', "users must be a whole number >= 1"),
        ('name="x"\n[load]\nsteps = [[10, "a"]]\n', "hold must be a finite number"),
        ('name="x"\n[load]\nsteps = [[10]]\n', "stage [10] is malformed"),
        ('name="x"\n[load]\nsteps = 100\n', "steps = 100: a list of stages"),
        ('name="x"\n[load]\nsteps = [{users = 5}]\n', "needs both users and hold"),
        ('name="x"\n[axes]\nsteps = [[[5, inf]]]\n', "hold must be a finite number"),
        ('name="x"\n[axes]\ntls = ["yes"]\n', "tls = 'yes'"),
        ('name="x"\n[thresholds]\nconnect_ratio = 99\n', "thresholds.connect_ratio = 99"),
        ('name="x"\n[thresholds]\np95_ack_ms = "fast"\n', "thresholds.p95_ack_ms = 'fast'"),
        ('name="x"\n[thresholds]\nfailure_ratio = true\n', "thresholds.failure_ratio = True"),
        ('name="x"\n[[faults]]\nat = "soon"\naction = "stop_redis"\n', "faults.at = 'soon'"),
        ('name="x"\n[[faults]]\nat = inf\naction = "stop_redis"\n', "faults.at = inf"),
        ('name="x"\n[[faults]]\nat = 1\naction = 5\n', "faults.action = 5"),
        ('name="x"\n[[faults]]\nat = 1\n', "every [[faults]] needs at and action"),
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
    assert runs[0].load.run_seconds == pytest.approx(41.0)  # holds 20 + 20, ramps 10/30 + 20/30 s
    assert runs[0].labels() == {
        "balancer": "caddy", "policy": "cookie", "adapter": "memory", "transports": ["websocket"],
        "server": "python", "nodes": 1, "tls": False, "recovery": False, "idle_timeout": None, "ping_interval": None,
        "http_protocol": "http/1.1",
    }


def test_type_errors_in_the_api_are_config_errors_too():
    """Code that builds the dataclasses directly gets the same checks as a campaign file."""
    from contract.config import Fault, Step, Thresholds

    for bad, needle in [
        (lambda: LoadConfig(steps=((10, 5.0),)).validate(), "use Step(users, hold)"),
        (lambda: LoadConfig(steps=(Step(10, float("nan")),)).validate(), "hold must be a finite number"),
        (lambda: LoadConfig(transports="websocket").validate(), "transports = 'websocket'"),
        (lambda: ClusterConfig(tls=1).validate(), "tls = 1"),
        (lambda: Thresholds(p95_connect_ms=-1).validate(), "thresholds.p95_connect_ms = -1"),
        (lambda: Fault(at=True, action="stop_redis").validate(3), "faults.at = True"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            bad()


def test_step_plan_counts_each_ramp():
    """The reviewer's case: ramps of 500 and 500 users at 5/s take 200 s on top of 2 x 10 s holds."""
    from contract.config import Step, step_plan

    steps = (Step(500, 10.0), Step(1000, 10.0))
    assert step_plan(steps, 5) == [(110.0, 500), (220.0, 1000)]
    assert LoadConfig(steps=steps, spawn_rate=5).validate().run_seconds == 220.0
    # ramping down counts too (|Δusers|), and without steps the duration is the run time
    assert step_plan((Step(10, 5.0), Step(4, 5.0)), 2) == [(10.0, 10), (18.0, 4)]
    assert LoadConfig(duration=12).run_seconds == 12.0


def test_steps_flag_text():
    from contract.config import Step, parse_steps_text

    assert parse_steps_text("10:20, 30:2.5,") == (Step(10, 20.0), Step(30, 2.5))
    for bad in ["100", "a:b", "10:inf", "10:nan", "0:5", "10:0", "10:5:5", "10:-1"]:
        with pytest.raises(ConfigError, match=re.escape(f"--steps: bad stage {bad!r}")):
            parse_steps_text(bad)


@pytest.mark.parametrize("steps", ["100", "a:b", "10:inf", "5:nan", "10:20,x"])
def test_run_with_bad_steps_exits_2_with_one_line(steps, capsys):
    """`sioscale run --steps ...` fails before anything starts: exit 2, one line naming the stage."""
    import signal

    from sioscale.cli import main

    old = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["run", "--balancer", "none", "--steps", steps]) == 2
    finally:
        signal.signal(signal.SIGTERM, old)  # main() installs its own handler
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--steps: bad stage" in err and "USERS:HOLD_SECONDS" in err


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
        'name = "f"\n[cluster]\nadapter = "redis"\n[axes]\npolicy = ["cookie", "source"]\n'
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


def test_label_keys_are_the_labels_of_a_run_config() -> None:
    """The analysis adds LABEL_KEYS as columns; a label added to RunConfig.labels() must be one of them."""
    from contract.config import LABEL_KEYS, ClusterConfig, LoadConfig, RunConfig

    assert tuple(RunConfig("x", ClusterConfig(), LoadConfig()).labels()) == LABEL_KEYS


# ---------------------------------------------------------------- node limits (issue 12)
def test_node_limits_are_validated_with_the_key_named() -> None:
    from contract.config import machine_cpus

    assert ClusterConfig(node_cpus=0.25, node_memory_mb=64).validate().node_cpus == 0.25
    assert ClusterConfig(node_cpus=machine_cpus()).validate()  # a whole machine is allowed
    for bad, key in [
        (dict(node_cpus=0), "node_cpus"), (dict(node_cpus=-1.0), "node_cpus"), (dict(node_cpus=0.001), "node_cpus"),
        (dict(node_cpus=machine_cpus() + 0.5), "node_cpus"), (dict(node_cpus="1"), "node_cpus"),
        (dict(node_cpus=True), "node_cpus"), (dict(node_cpus=float("inf")), "node_cpus"),
        (dict(node_memory_mb=63), "node_memory_mb"), (dict(node_memory_mb=512.0), "node_memory_mb"),
        (dict(node_memory_mb="512"), "node_memory_mb"),
    ]:
        with pytest.raises(ConfigError, match=f"^{key} = ") as e:
            ClusterConfig(**bad).validate()
        assert e.value.key == key


def test_node_limits_in_a_campaign_and_as_axes() -> None:
    camp = parse_campaign('name = "cap"\n[cluster]\nnodes = 1\nnode_memory_mb = 256\n'
                          '[axes]\nnode_cpus = [0.25, 0.5, 1]\n')
    runs = camp.runs()
    assert [r.cluster.node_cpus for r in runs] == [0.25, 0.5, 1]
    assert all(r.cluster.node_memory_mb == 256 for r in runs)
    assert [r.name.split("-")[-2:] for r in runs] == [["cpu0.25", "mem256"], ["cpu0.5", "mem256"], ["cpu1", "mem256"]]
    assert run_name(ClusterConfig(), LoadConfig()) == "haproxy-cookie-poll+ws-memory-python-3n"  # unlimited: unchanged
    with pytest.raises(ConfigError, match=r"^<campaign>:5: node_cpus = 0\.0: CPUs per node"):
        parse_campaign('name = "cap"\n[cluster]\nnodes = 1\n[axes]\nnode_cpus = [0.5, 0.0]\n')
    with pytest.raises(ConfigError, match=r"^<campaign>:3: node_memory_mb = 10: MiB per node"):
        parse_campaign('name = "cap"\n[cluster]\nnode_memory_mb = 10\n')


def test_node_limits_refused_against_an_external_url() -> None:
    from contract.config import RunConfig

    cfg = RunConfig("x", ClusterConfig(node_cpus=0.5), LoadConfig())
    with pytest.raises(ConfigError, match="node_cpus: node limits apply to the local cluster"):
        cfg.validate(url="http://127.0.0.1:9")
    assert cfg.validate() is cfg


def test_limit_flags_on_cluster_run_and_as_campaign_overrides() -> None:
    import argparse

    from sioscale.cliargs import add_cluster_args, add_limit_args, cluster_from_args, override_limits

    p = argparse.ArgumentParser()
    add_cluster_args(p)
    assert cluster_from_args(p.parse_args([])).node_cpus is None
    c = cluster_from_args(p.parse_args(["--node-cpus", "0.5", "--node-memory-mb", "128"]))
    assert (c.node_cpus, c.node_memory_mb) == (0.5, 128)
    with pytest.raises(ConfigError, match="node_memory_mb = 32"):
        cluster_from_args(p.parse_args(["--node-memory-mb", "32"]))
    camp = parse_campaign('name = "cap"\n[cluster]\nnodes = 1\n[axes]\nnode_cpus = [0.25, 0.5]\nnodes = [1, 2]\n')
    q = argparse.ArgumentParser()
    add_limit_args(q)
    assert override_limits(camp, q.parse_args([])) is camp
    runs = override_limits(camp, q.parse_args(["--node-cpus", "1"])).runs()
    assert [(r.cluster.node_cpus, r.cluster.nodes) for r in runs] == [(1, 1), (1, 2)]  # the axis gave way


def test_adapter_and_recovery_keys_and_axes() -> None:
    """[cluster] adapter (four values) and recovery (bool), also as [axes]; run names carry `recovery` only
    when it is on, so the names of every earlier config stay what they were (issue 14)."""
    from contract.config import ClusterConfig, LoadConfig, run_name

    camp = parse_campaign('name = "x"\n[cluster]\nserver = "node"\nnodes = 2\n'
                          '[axes]\nadapter = ["memory", "redis", "redis-sharded", "redis-streams"]\n'
                          'recovery = [false, true]\n')
    runs = camp.runs()
    assert len(runs) == 8
    assert [r.name for r in runs[:2]] == ["haproxy-cookie-poll+ws-memory-node-2n",
                                          "haproxy-cookie-poll+ws-memory-node-2n-recovery"]
    assert runs[-1].name == "haproxy-cookie-poll+ws-redis-streams-node-2n-recovery"
    assert runs[-1].labels()["recovery"] is True and runs[0].labels()["recovery"] is False
    assert run_name(ClusterConfig(), LoadConfig()) == "haproxy-cookie-poll+ws-memory-python-3n"
    for text, needle in [
        ('name = "x"\n[cluster]\nadapter = "redis-streams"\n', "<campaign>:3: adapter = 'redis-streams' is not "
                                                                "available on server = 'python'"),
        ('name = "x"\n[cluster]\nrecovery = true\n', "<campaign>:3: recovery = true needs server = 'node'"),
        ('name = "x"\n[cluster]\nrecovery = "yes"\n', "recovery = 'yes': must be true or false"),
        ('name = "x"\n[cluster]\nserver = "node"\n[axes]\nadapter = ["memory", "kafka"]\n', "<campaign>:5: adapter"),
    ]:
        with pytest.raises(ConfigError) as ei:
            parse_campaign(text)
        assert needle in str(ei.value) and "\n" not in str(ei.value)
    # a Redis adapter may use an external Redis; stop_redis needs one of ours, whichever Redis adapter
    ClusterConfig(server="node", adapter="redis-streams", redis_url="redis://127.0.0.1:1/0").validate()
    parse_campaign('name = "x"\n[cluster]\nserver = "node"\nadapter = "redis-streams"\n[load]\nduration = 10\n'
                   '[[faults]]\nat = 1\naction = "stop_redis"\n[[faults]]\nat = 2\naction = "start_redis"\n')


def test_extra_configs_follow_the_axes_and_are_checked_like_them():
    from contract.config import ConfigError, parse_campaign

    base = 'name = "x"\n[axes]\npolicy = ["cookie", "l4-round-robin"]\n[load]\nusers = 3\n'
    camp = parse_campaign(base + '[[extra]]\npolicy = "l4-round-robin"\ntls = true\ntransports = ["websocket"]\n', "x.toml")
    assert [r.name for r in camp.runs()][-1] == "haproxy-l4-round-robin-ws-memory-python-3n-tls"
    with pytest.raises(ConfigError, match=r"x.toml:7: unknown key 'tlx' in \[\[extra\]\]"):
        parse_campaign(base + '[[extra]]\ntlx = true\n', "x.toml")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_campaign(base + '[[extra]]\npolicy = "cookie"\n', "x.toml")
    with pytest.raises(ConfigError, match="idle_timeout = 0: seconds from 1 to 3600"):
        parse_campaign(base + '[[extra]]\nidle_timeout = 0\n', "x.toml")
    with pytest.raises(ConfigError, match="balancer = 'caddy' has no idle timeout"):
        parse_campaign(base.replace("[axes]\npolicy", "[cluster]\nbalancer = 'caddy'\n[axes]\npolicy").replace(
            '"l4-round-robin"', '"l7-round-robin"') + '[[extra]]\nidle_timeout = 5\n', "x.toml")


def test_http_protocol_is_h2_only_where_the_browser_pool_meets_an_h2_listener() -> None:
    """Issue 13: the config (meta.json's labels) and its name say which protocol the polling rode."""
    from contract.config import ClusterConfig, LoadConfig, http_protocol, run_name

    caddy_tls = ClusterConfig(balancer="caddy", policy="cookie", tls=True)
    browser = LoadConfig(http_pool="browser")
    assert http_protocol(caddy_tls, browser) == "h2"
    assert run_name(caddy_tls, browser).endswith("-tls-h2")
    for cl, lo in [(caddy_tls, LoadConfig(http_pool="node")),
                   (ClusterConfig(balancer="caddy", policy="cookie"), browser),
                   (ClusterConfig(balancer="haproxy", policy="cookie", tls=True), browser),
                   (ClusterConfig(balancer="nginx", policy="l7-round-robin", tls=True), browser),
                   (caddy_tls, LoadConfig(http_pool="browser", transports=("websocket",)))]:
        assert http_protocol(cl, lo) == "http/1.1", (cl, lo)
        assert not run_name(cl, lo).endswith("-h2")
