"""analysis.summary: the typed summary serialises to exactly the pinned summary.json, and reads older files back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.checks import evaluate
from analysis.report import write_report
from analysis.summary import ConfigEntry, ConfigSummary, Connections
from contract.config import ConfigError, Thresholds
from tests.synth import seed_campaign


def test_from_json_to_json_round_trips_a_report(tmp_path: Path) -> None:
    dirs = seed_campaign(tmp_path / "runs", users=10, duration=4)
    on_disk = write_report(dirs, tmp_path / "rep", thresholds={"connect_ratio": 0.9, "p95_ack_ms": 500})
    typed = ConfigSummary.from_json(on_disk)
    assert typed.to_json() == on_disk
    assert json.dumps(typed.to_json()) == json.dumps(on_disk)  # same key order too
    c = typed.configs[0]
    assert isinstance(c.connections, Connections) and c.connections.attempted > 0
    assert c.checks["connect_ratio"].passed is on_disk["configs"][0]["checks"]["connect_ratio"]["pass"]


def test_from_json_tolerates_an_old_minimal_summary() -> None:
    old = {"schema": 1, "configs": [{"name": "a", "connections": {"attempted": 4, "connected": 4, "connect_ratio": 1.0}}]}
    s = ConfigSummary.from_json(old)
    c = s.configs[0]
    assert c.status is None and c.steps.total == 0 and c.steps.step_total("ack") is None
    assert c.node_switch is None and c.broadcast.latency_ms is None and c.latency_ms == {} and s.slo is None
    res = evaluate(s, Thresholds(connect_ratio=0.9, p95_ack_ms=100))
    assert [(r.threshold, r.passed, bool(r.skipped)) for r in res] == [("connect_ratio", True, False),
                                                                        ("p95_ack_ms", True, True)]


def test_from_json_sections_of_the_wrong_type_count_as_missing() -> None:
    c = ConfigEntry.from_json({"name": "a", "config": "x", "connections": [1], "latency_ms": {"connect": 3}})
    assert c.config.transports == [] and c.connections.attempted == 0 and c.latency_ms == {}


@pytest.mark.parametrize("bad", [{}, {"configs": "x"}, {"configs": [1]}])
def test_from_json_rejects_what_is_not_a_summary(bad: dict) -> None:
    with pytest.raises(ConfigError):
        ConfigSummary.from_json(bad)
