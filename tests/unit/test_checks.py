"""`sioscale check` logic: thresholds against a summary, JUnit XML."""

import xml.etree.ElementTree as ET

from sioscale.checks import evaluate, junit_xml
from sioscale.config import Thresholds

SUMMARY = {
    "schema": 1,
    "configs": [
        {
            "name": "haproxy-cookie-poll+ws-redis-python-3n",
            "status": "ok",
            "connections": {"connect_ratio": 1.0, "upgrade_ratio": 1.0},
            "broadcast": {"delivery_ratio": 1.0},
            "latency_ms": {"connect": {"p95": 40.0}},
        },
        {
            "name": "haproxy-l4-round-robin-poll+ws-memory-python-3n",
            "status": "ok",
            "connections": {"connect_ratio": 0.02, "upgrade_ratio": None},
            "broadcast": {"delivery_ratio": 0.33},
            "latency_ms": {"connect": {"p95": 1500.0}},
        },
        {"name": "caddy-cookie-ws-memory-node-3n", "status": "failed", "error": "npm missing"},
    ],
}


def test_evaluate_flags_each_violation_and_failed_runs():
    res = evaluate(SUMMARY, Thresholds(connect_ratio=0.99, delivery_ratio=0.99, p95_connect_ms=1000, upgrade_ratio=0.9))
    by = {(r.config.split("-")[1], r.threshold): r for r in res if r.config.startswith("haproxy")}
    assert by[("cookie", "connect_ratio")].passed
    assert not by[("l4", "connect_ratio")].passed and by[("l4", "connect_ratio")].value == 0.02
    assert not by[("l4", "p95_connect_ms")].passed
    assert by[("l4", "upgrade_ratio")].skipped  # no figure: not a violation
    failed = [r for r in res if r.config.startswith("caddy")]
    assert len(failed) == 4 and not any(r.passed for r in failed)


def test_only_filters_configs():
    res = evaluate(SUMMARY, Thresholds(connect_ratio=0.5), only="cookie")
    assert [r.config for r in res] == ["haproxy-cookie-poll+ws-redis-python-3n", "caddy-cookie-ws-memory-node-3n"]


def test_junit_has_a_case_per_config_and_threshold():
    res = evaluate(SUMMARY, Thresholds(connect_ratio=0.99, upgrade_ratio=0.9))
    root = ET.fromstring(junit_xml(res, suite="seed"))
    assert root.tag == "testsuite" and root.get("tests") == "6"
    cases = root.findall("testcase")
    assert len(cases) == 6
    failures = [c for c in cases if c.find("failure") is not None]
    assert {c.get("classname") for c in failures} == {
        "seed.haproxy-l4-round-robin-poll+ws-memory-python-3n",
        "seed.caddy-cookie-ws-memory-node-3n",
    }
    assert root.get("failures") == str(len(failures)) == "3"
    assert "0.02" in failures[0].find("failure").get("message") or "0.02" in failures[1].find("failure").get("message")
    assert root.get("skipped") == "1"
