"""`sioscale check` logic: thresholds against a summary, JUnit XML, and when a missing figure
is a violation rather than a skip."""

import copy
import xml.etree.ElementTree as ET

import pytest

from analysis.checks import evaluate, junit_xml
from contract.config import ConfigError, Thresholds

ALL = Thresholds(connect_ratio=0.99, upgrade_ratio=0.9, delivery_ratio=0.99, p95_connect_ms=1000, p95_ack_ms=500,
                 failure_ratio=0.01)


def _cfg(name: str, transports: list[str], attempted: int, connected: int, *, upgrade=None, delivery=None,
         sent=0, expected=0, failed=0, total=100, ack_total=0, lat=None) -> dict:
    return {"name": name, "status": "ok",
            "config": {"balancer": "haproxy", "policy": "x", "adapter": "memory", "transports": transports,
                       "server": "python", "nodes": 3, "tls": False},
            "connections": {"attempted": attempted, "connected": connected,
                            "connect_ratio": connected / attempted if attempted else None, "upgrade_ratio": upgrade},
            "broadcast": {"sent": sent, "expected": expected, "delivery_ratio": delivery},
            "steps": {"total": total, "failed": failed, "failure_ratio": failed / total if total else None,
                      "by_step": {"ack": {"total": ack_total, "failed": ack_total}} if ack_total else {}},
            "latency_ms": lat or {}}


SUMMARY = {
    "schema": 1,
    "configs": [
        _cfg("haproxy-cookie-poll+ws-redis-python-3n", ["polling", "websocket"], 30, 30, upgrade=1.0, delivery=1.0,
             sent=10, expected=100, lat={"connect": {"p95": 40.0}, "ack": {"p95": 9.0}}),
        _cfg("haproxy-l4-round-robin-poll+ws-memory-python-3n", ["polling", "websocket"], 88, 2, upgrade=0.0,
             delivery=0.33, sent=5, expected=12, failed=200, total=900, lat={"connect": {"p95": 1500.0}}),
        {"name": "caddy-cookie-ws-memory-node-3n", "status": "failed", "error": "npm missing"},
    ],
}


def _by(res):
    return {(r.config, r.threshold): r for r in res}


def test_evaluate_flags_each_violation_and_failed_runs():
    res = evaluate(SUMMARY, Thresholds(connect_ratio=0.99, delivery_ratio=0.99, p95_connect_ms=1000, upgrade_ratio=0.9))
    by = {(r.config.split("-")[1], r.threshold): r for r in res if r.config.startswith("haproxy")}
    assert by[("cookie", "connect_ratio")].passed
    assert not by[("l4", "connect_ratio")].passed and by[("l4", "connect_ratio")].value == pytest.approx(2 / 88)
    assert not by[("l4", "p95_connect_ms")].passed
    assert not by[("l4", "upgrade_ratio")].passed and by[("l4", "upgrade_ratio")].value == 0.0
    failed = [r for r in res if r.config.startswith("caddy")]
    assert len(failed) == 4 and not any(r.passed for r in failed)
    assert all("did not run" in r.describe() for r in failed)


def test_nothing_connected_violates_every_figure_that_could_apply():
    """The seed's l7-round-robin poll+ws: 0 % connected, no broadcast, no ack — nothing may pass by absence."""
    s = {"configs": [_cfg("l7", ["polling", "websocket"], 150, 0, sent=0, expected=0, failed=433, total=751)]}
    by = _by(evaluate(s, ALL))
    for key in ("connect_ratio", "upgrade_ratio", "delivery_ratio", "p95_connect_ms", "p95_ack_ms", "failure_ratio"):
        assert not by[("l7", key)].passed and not by[("l7", key)].skipped, key
    assert by[("l7", "delivery_ratio")].value is None
    assert "none of 150 connection attempt(s) connected" in by[("l7", "p95_connect_ms")].describe()
    assert by[("l7", "connect_ratio")].value == 0.0


def test_some_connected_but_failures_stopped_broadcasts_is_a_violation():
    s = {"configs": [_cfg("l7", ["polling", "websocket"], 145, 2, upgrade=0.0, failed=415, total=719,
                          lat={"connect": {"p95": 30.0}})]}
    by = _by(evaluate(s, ALL))
    assert not by[("l7", "delivery_ratio")].passed and "415 of 719 steps failed" in by[("l7", "delivery_ratio")].missing
    assert not by[("l7", "p95_ack_ms")].passed


def test_attempted_acks_that_all_failed_are_a_violation_even_with_few_failures():
    s = {"configs": [_cfg("a", ["websocket"], 10, 10, delivery=1.0, expected=5, failed=3, total=300, ack_total=3,
                          lat={"connect": {"p95": 30.0}})]}
    r = _by(evaluate(s, Thresholds(p95_ack_ms=500)))[("a", "p95_ack_ms")]
    assert not r.passed and "3 ack step(s), none succeeded" in r.missing


def test_skipped_only_where_the_figure_cannot_apply():
    clean = _cfg("ws", ["websocket"], 30, 30, sent=0, expected=0, failed=0, total=200,
                 lat={"connect": {"p95": 20.0}})
    poll = _cfg("poll", ["polling"], 30, 30, failed=0, total=200, lat={"connect": {"p95": 20.0}})
    by = _by(evaluate({"configs": [clean, poll]}, ALL))
    assert by[("ws", "upgrade_ratio")].skipped == "websocket-only clients do not upgrade"
    assert by[("poll", "upgrade_ratio")].skipped == "polling-only clients do not upgrade"
    assert by[("ws", "delivery_ratio")].skipped == "the scenario sent no broadcast" and by[("ws", "delivery_ratio")].passed
    assert by[("ws", "p95_ack_ms")].skipped == "the scenario emitted no ack"
    # a websocket-only config that connected nothing still skips upgrade (it cannot apply) but violates the rest
    dead = _cfg("dead", ["websocket"], 30, 0, failed=30, total=30)
    by = _by(evaluate({"configs": [dead]}, ALL))
    assert by[("dead", "upgrade_ratio")].skipped
    assert not by[("dead", "delivery_ratio")].passed and not by[("dead", "p95_connect_ms")].passed


def test_no_attempt_at_all_violates():
    s = {"configs": [_cfg("empty", ["websocket"], 0, 0, total=0)]}
    res = evaluate(s, Thresholds(connect_ratio=0.5, upgrade_ratio=0.5))
    assert not any(r.passed for r in res) and all("no connection attempt" in r.missing for r in res)


def test_only_filters_configs():
    res = evaluate(SUMMARY, Thresholds(connect_ratio=0.5), only="cookie")
    assert [r.config for r in res] == ["haproxy-cookie-poll+ws-redis-python-3n", "caddy-cookie-ws-memory-node-3n"]


@pytest.mark.parametrize("mutate, needle", [
    (lambda s: s["configs"].append("not a config"), "configs[3] is str"),
    (lambda s: s["configs"][0]["connections"].update(connect_ratio="abc"), "connections.connect_ratio is 'abc'"),
    (lambda s: s["configs"][0]["latency_ms"]["connect"].update(p95=[1]), "latency_ms.connect.p95"),
    (lambda s: s["configs"][0]["connections"].update(connect_ratio=True), "not a number"),
    (lambda s: s.update(configs={"a": 1}), "no 'configs' list"),
])
def test_broken_summary_is_a_config_error(mutate, needle):
    s = copy.deepcopy(SUMMARY)
    mutate(s)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        evaluate(s, Thresholds(connect_ratio=0.5, p95_connect_ms=100))


def test_nan_figure_counts_as_missing():
    s = copy.deepcopy(SUMMARY)
    s["configs"][0]["connections"]["connect_ratio"] = float("nan")
    r = _by(evaluate(s, Thresholds(connect_ratio=0.5)))[("haproxy-cookie-poll+ws-redis-python-3n", "connect_ratio")]
    assert not r.passed and r.value is None


def test_junit_has_a_case_per_config_and_threshold():
    ws = _cfg("ws-only", ["websocket"], 30, 30, total=200, lat={"connect": {"p95": 20.0}})
    res = evaluate({"configs": [*SUMMARY["configs"], ws]}, Thresholds(connect_ratio=0.99, upgrade_ratio=0.9))
    root = ET.fromstring(junit_xml(res, suite="seed"))
    assert root.tag == "testsuite" and root.get("tests") == "8"
    cases = root.findall("testcase")
    assert len(cases) == 8
    failures = [c for c in cases if c.find("failure") is not None]
    assert {c.get("classname") for c in failures} == {
        "seed.haproxy-l4-round-robin-poll+ws-memory-python-3n",
        "seed.caddy-cookie-ws-memory-node-3n",
    }
    assert root.get("failures") == str(len(failures)) == "4"
    assert any("0.02273" in f.find("failure").get("message") for f in failures)
    assert root.get("skipped") == "1"
