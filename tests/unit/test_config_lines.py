"""Config value errors name file:line, and cross-field rules refuse impossible configs before any load.

Issue 9, part 5: `users = -5`, `nodes = 0`, a fault `target = "n9"`, caddy with `policy = "source"`
named the file but not the line; `stop_redis` with the memory adapter was accepted and failed only
when the fault fired; a `source_range` outside 127.0.0.0/8 passed `--dry-run` and then made every
Locust user raise.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from contract.config import (
    ClusterConfig,
    ConfigError,
    Fault,
    LoadConfig,
    RunConfig,
    check_source_target,
    key_location,
    load_campaign,
    parse_campaign,
    toml_key_lines,
)

BASE = """name = "x"
description = "line numbers"

[cluster]
nodes = 3
balancer = "haproxy"
adapter = "redis"

[load]
users = 10
duration = 20
"""


def _error(text: str, source: str | None = "camp.toml") -> str:
    with pytest.raises(ConfigError) as ei:
        parse_campaign(text, source)
    return str(ei.value)


@pytest.mark.parametrize("old, new, where, needle", [
    ("users = 10", "users = -5", "camp.toml:10:", "users = -5"),
    ("nodes = 3", "nodes = 0", "camp.toml:5:", "nodes = 0"),
    ('balancer = "haproxy"', 'balancer = "caddy"\npolicy = "source"', "camp.toml:7:", "for balancer 'caddy'"),
    ("duration = 20", "duration = -1.5", "camp.toml:11:", "duration = -1.5"),
    ('adapter = "redis"', 'adapter = "mongo"', "camp.toml:7:", "adapter = 'mongo'"),
])
def test_value_errors_name_file_and_line(old: str, new: str, where: str, needle: str) -> None:
    msg = _error(BASE.replace(old, new))
    assert msg.startswith(where) and needle in msg, msg


def test_fault_target_names_the_line_of_that_fault() -> None:
    text = BASE + '\n[[faults]]\nat = 2\naction = "stop_node"\ntarget = "n2"\n\n' \
                  '[[faults]]\nat = 3\naction = "stop_node"\ntarget = "n9"\n'
    msg = _error(text)
    assert msg.startswith("camp.toml:21:") and "faults.target = 'n9'" in msg and "n1, n2, n3" in msg, msg


def test_axis_value_errors_point_at_the_axis_not_the_base() -> None:
    msg = _error(BASE + '\n[axes]\nnodes = [2, 0]\n')
    assert msg.startswith("camp.toml:14:") and "nodes = 0" in msg, msg
    msg = _error(BASE + '\n[axes]\npolicy = ["cookie", "sticky"]\n')
    assert msg.startswith("camp.toml:14:") and "policy = 'sticky'" in msg, msg


def test_threshold_value_and_multiline_arrays_keep_lines_right() -> None:
    text = BASE.replace("duration = 20", 'transports = [\n  "polling",\n  "websocket",\n]\nduration = 20') \
        + "\n[thresholds]\nconnect_ratio = 0.9\np95_ack_ms = -3\n"
    msg = _error(text)
    assert msg.startswith("camp.toml:19:") and "thresholds.p95_ack_ms = -3" in msg, msg


def test_without_a_source_the_location_is_still_a_line() -> None:
    assert _error(BASE.replace("users = 10", "users = -5"), None).startswith("<campaign>:10: users = -5")


def test_key_scanner_on_tables_arrays_dotted_keys_and_strings() -> None:
    text = ('name = "a"  # [not a table]\ndescription = """\nusers = 99\n"""\n[load]\nsteps = [\n  [10, 5],\n'
            '  [20, 5],\n]\nusers = 4\n[[faults]]\nat = 1\n[[faults]]\nat = 2\n[cluster]\n"nodes" = 2\n')
    lines = toml_key_lines(text)
    assert lines[("", None, "name")] == 1
    assert ("", None, "users") not in lines  # inside a multi-line string
    assert lines[("load", None, "steps")] == 6 and lines[("load", None, "users")] == 10
    assert lines[("faults", 0, "at")] == 12 and lines[("faults", 1, "at")] == 14
    assert lines[("cluster", None, "nodes")] == 16


# -- cross-field rules: faults against the cluster and the run --------------------------------
@pytest.mark.parametrize("cluster, faults, needle", [
    ('adapter = "memory"', [("stop_redis", None, 5)], "runs no Redis of its own (adapter = 'memory')"),
    ('adapter = "redis"\nredis_url = "redis://127.0.0.1:6390/0"', [("stop_redis", None, 5)],
     "external redis_url"),
    ('balancer = "none"\npolicy = "direct"', [("stop_balancer", None, 5)], "no balancer"),
    ('adapter = "redis"', [("start_node", "n2", 5)], "n2 is running then"),
    ('adapter = "redis"', [("stop_node", "n2", 5), ("stop_node", "n2", 6)], "n2 is already stopped"),
    ('adapter = "redis"', [("stop_redis", None, 25)], "would never fire"),
])
def test_faults_that_cannot_fire_are_refused_at_parse_time(cluster: str, faults: list, needle: str) -> None:
    text = f'name = "f"\n[cluster]\n{cluster}\n[load]\nduration = 20\n'
    for action, target, t in faults:
        text += f'\n[[faults]]\nat = {t}\naction = "{action}"\n' + (f'target = "{target}"\n' if target else "")
    msg = _error(text)
    assert needle in msg and re.match(r"camp\.toml:\d+: faults\.", msg), msg


def test_fault_sequences_that_can_fire_are_accepted() -> None:
    text = ('name = "f"\n[cluster]\nadapter = "redis"\n[load]\nduration = 20\n'
            '[[faults]]\nat = 9\naction = "start_redis"\n[[faults]]\nat = 4\naction = "stop_redis"\n'
            '[[faults]]\nat = 5\naction = "stop_node"\ntarget = "n1"\n[[faults]]\nat = 6\naction = "start_node"\n'
            'target = "n1"\n')
    assert all(len(r.faults) == 4 for r in parse_campaign(text).runs())


def test_faults_with_an_external_url_are_refused_by_the_schema() -> None:
    cfg = RunConfig("r", ClusterConfig(adapter="redis"), LoadConfig(), (Fault(2, "stop_redis"),))
    assert cfg.validate() is cfg
    with pytest.raises(ConfigError, match="cannot be applied to --url"):
        cfg.validate(url="http://127.0.0.1:5000")


# -- source range against the target ----------------------------------------------------------
@pytest.mark.parametrize("rng, needle", [
    ("10.0.0.1-10.0.0.5", "loopback (127.0.0.0/8)"),
    ("127.0.0.9-127.0.0.2", "the range is empty"),
    ("127.0.0.2-10.0.0.1", "loopback (127.0.0.0/8)"),
    ("::1", "IPv4 loopback addresses only"),
    ("127.0.0.1-::1", "different address families"),
    ("localhost", "expected A.B.C.D-A.B.C.D"),
    ("127.0.0.0-127.255.255.255", "more than 2^20"),
])
def test_bad_source_ranges_are_config_errors(rng: str, needle: str) -> None:
    msg = _error(BASE + f'source_range = "{rng}"\n')
    assert msg.startswith("camp.toml:12:") and needle in msg, msg
    with pytest.raises(ConfigError, match=re.escape(needle)):
        LoadConfig(source_range=rng).validate()


@pytest.mark.parametrize("target, ok", [
    ("127.0.0.1", True), ("http://127.0.0.1:8080", True), ("https://localhost:443/x", True),
    ("http://[::1]:8080", False), ("::1", False), ("http://10.1.2.3:80", False), ("http://example.com", False),
])
def test_source_range_must_reach_the_target(target: str, ok: bool) -> None:
    if ok:
        check_source_target("127.0.0.2-127.0.0.9", target)
    else:
        with pytest.raises(ConfigError, match="source_range"):
            check_source_target("127.0.0.2-127.0.0.9", target)
    check_source_target(None, target)  # no source range: any target


@pytest.mark.parametrize("text", [
    "127.0.0.2-127.0.0.4", "127.0.0.9", " 127.0.0.2 - 127.0.0.3 ", "10.0.0.1-10.0.0.5", "127.0.0.5-127.0.0.1",
    "nonsense", "::1", "127.0.0.1-::1", "127.0.0.0-127.255.255.255", "127.0.0.0-127.16.0.0", "127.0.0.1-",
    "127.0.0.1-127.0.0.2-127.0.0.3", "0.0.0.0",
])
def test_the_client_and_the_config_apply_one_source_range_rule(text: str) -> None:
    """The client's --sio-source-range parser is the config's rule: it accepts exactly what the config does,
    and says why with the config's words."""
    from locustfiles.sio.transport.net import parse_source_range

    try:
        LoadConfig(source_range=text).validate()
        config_error = None
    except ConfigError as e:
        config_error = str(e)
    if config_error is None:
        assert parse_source_range(text)
    else:
        with pytest.raises(ValueError, match="--sio-source-range") as info:
            parse_source_range(text)
        assert config_error in str(info.value)


def test_run_flags_are_checked_by_run_config_validate(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`sioscale run` goes through RunConfig.validate with its --url (the campaign cell's rules), once for
    the flags: a rule added there reaches `run` without a second copy in cliargs."""
    seen: list[str | None] = []

    def refuse(self: RunConfig, url: str | None = None) -> RunConfig:
        seen.append(url)
        raise ConfigError("refused by RunConfig.validate")

    monkeypatch.setattr(RunConfig, "validate", refuse)
    assert _cli(["run", "--url", "http://127.0.0.1:9", "-t", "1"]) == 2
    assert seen == ["http://127.0.0.1:9"] and "refused by RunConfig.validate" in capsys.readouterr().err


def test_key_location_finds_the_key_not_text_inside_a_multiline_string() -> None:
    """One TOML line finder (toml_key_lines) for key_location too: `locustfile =` written inside a
    multi-line description is not the key."""
    text = ('name = "x"\ndescription = """\nlocustfile = "not this one"\n"""\n[load]\n'
            'users = 3\nlocustfile = "locustfiles/nope.py"\n')
    assert key_location("c.toml", text, "locustfile") == "c.toml:7"
    assert key_location("c.toml", text, "no_such_key") == "c.toml"
    assert key_location(None, '[axes]\nlocustfile = ["a.py"]\n', "locustfile") == "<campaign>:2"


def _cli(argv: list[str]) -> int:
    from sioscale.cli import main

    old = signal.getsignal(signal.SIGTERM)
    try:
        return main(argv)
    finally:
        signal.signal(signal.SIGTERM, old)  # main() installs its own handler


def test_dry_run_refuses_a_non_loopback_source_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reproducer: this passed --dry-run, then every Locust user raised and the run ended ok."""
    camp = tmp_path / "c.toml"
    camp.write_text(BASE + 'source_range = "10.0.0.1-10.0.0.5"\n')
    assert _cli(["campaign", str(camp), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{camp}:12:" in err and "loopback" in err


@pytest.mark.parametrize("argv, needle", [
    (["--source-range", "10.0.0.1-10.0.0.5"], "loopback (127.0.0.0/8)"),
    (["--url", "http://[::1]:9", "--source-range", "127.0.0.2-127.0.0.3"], "address families must match"),
])
def test_run_flags_go_through_the_same_rules(argv: list[str], needle: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["run", "--balancer", "none", *argv]) == 2  # before anything starts: no cluster, no Locust
    err = capsys.readouterr().err
    assert needle in err and err.strip().count("\n") == 0


def test_dry_run_refuses_a_redis_fault_on_the_memory_adapter(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    camp = tmp_path / "c.toml"
    camp.write_text(BASE.replace('adapter = "redis"', 'adapter = "memory"')
                    + '\n[[faults]]\nat = 5\naction = "stop_redis"\n')
    assert _cli(["campaign", str(camp), "--dry-run"]) == 2
    assert f"{camp}:15: faults.action = 'stop_redis'" in capsys.readouterr().err


def test_shipped_campaigns_pass_the_cross_field_rules() -> None:
    root = Path(__file__).resolve().parents[2]
    for p in sorted((root / "campaigns").glob("*.toml")):
        assert load_campaign(p).runs(), p
