"""The loader on realistic and on broken run directories: load what is valid, say what was skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.load import load_run, load_runs
from contract.rows import COLUMNS, STEPS
from tests.synth import LOCUST_HISTORY_COLUMNS, LOCUST_STATS_COLUMNS, SynthConfig, write_run


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "r1", SynthConfig("r1", users=6, duration=4, seed=3))


def test_good_run_loads_with_config_columns(run: Path) -> None:
    f = load_run(run)
    assert f.warnings == []
    n_lines = len((run / "events.csv").read_text().splitlines()) - 1
    assert len(f.events) == n_lines
    assert list(f.events.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(f.events["config"]) == {"r1"} and set(f.events["transports"]) == {"polling+websocket"}
    assert str(f.events["step"].dtype) == "category" and str(f.events["ts"].dtype) == "float64"
    assert f.runs.iloc[0]["status"] == "ok"
    assert list(f.locust_stats.columns[1:]) == list(LOCUST_STATS_COLUMNS)
    assert list(f.locust_history.columns[1:]) == list(LOCUST_HISTORY_COLUMNS)
    assert f.locust_json["num_requests"].sum() > 0


def test_truncated_last_line_after_sigkill(run: Path) -> None:
    p = run / "events.csv"
    full = len(load_run(run).events)
    p.write_bytes(p.read_bytes() + b'1760000099.5,r1,local,w3-1,s1,,ack,ack:echo,websocket,n1,3.2,1,,"half an err')
    f = load_run(run)
    assert len(f.events) == full
    assert any("cut off" in w for w in f.warnings)


def test_bad_rows_are_skipped_and_counted(run: Path) -> None:
    p = run / "events.csv"
    lines = p.read_text().splitlines()
    good = len(lines) - 1
    lines.insert(3, "not,a,row")                                      # too few fields: no step/ok
    lines.insert(4, ",".join(["x"] * (len(COLUMNS) + 3)))              # too many fields
    lines.insert(5, "yesterday" + lines[6][lines[6].index(","):])      # ts not a number
    p.write_text("\n".join(lines) + "\n")
    f = load_run(run)
    assert len(f.events) == good
    assert str(f.events["ts"].dtype) == "float64"
    text = " ".join(f.warnings)
    assert "malformed or impossible row(s)" in text and "ts missing or not a number" in text
    assert set(f.events["step"].cat.categories) <= set(STEPS)  # dropped rows leave no phantom categories


def test_unknown_and_missing_columns(tmp_path: Path) -> None:
    d = tmp_path / "odd"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"run": "odd", "config": {"balancer": "caddy", "nodes": 2}}))
    (d / "events.csv").write_text("ts,step,ok,node,latency_ms,colour\n1760000001.0,connect,1,n1,5.5,blue\n"
                                  "1760000002.0,ack,1,n2,1.0,red\n")
    f = load_run(d)
    assert len(f.events) == 2
    assert set(COLUMNS) <= set(f.events.columns) and "colour" not in f.events.columns
    assert any("unknown column(s) colour" in w for w in f.warnings)
    assert any("missing column(s)" in w for w in f.warnings)
    assert set(f.events["policy"]) == {"?"} and set(f.events["balancer"]) == {"caddy"}


def test_missing_and_broken_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    f = load_run(empty)
    assert len(f.events) == 0 and f.runs.iloc[0]["error"]
    assert any("meta.json is missing" in w for w in f.warnings) and any("events.csv is missing" in w for w in f.warnings)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    (bad / "events.csv").write_text("")
    (bad / "locust_stats.csv").write_text("garbage\n\x00\x01")
    (bad / "locust.json").write_text('{"a": 1}')
    f = load_run(bad)
    text = " ".join(f.warnings)
    assert "not valid JSON" in text and "events.csv is empty" in text and "not a Locust CSV" in text


def test_header_less_events_and_failed_run(tmp_path: Path, run: Path) -> None:
    p = run / "events.csv"
    p.write_text("\n".join(p.read_text().splitlines()[1:]) + "\n")
    f = load_run(run)
    assert len(f.events) > 0 and any("no header" in w for w in f.warnings)
    failed = write_run(tmp_path / "f", SynthConfig("f", status="failed", error="haproxy: cannot bind port"))
    f = load_run(failed)
    assert f.runs.iloc[0]["status"] == "failed" and "cannot bind" in f.runs.iloc[0]["error"]


def test_campaign_concat_keeps_categories_and_unique_names(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", SynthConfig("same", users=4, duration=3, seed=1, adapter="memory"))
    b = write_run(tmp_path / "b", SynthConfig("same", users=4, duration=3, seed=2, adapter="redis"))
    f = load_runs([a, b])
    assert set(f.events["config"]) == {"same", "same#2"}
    assert str(f.events["step"].dtype) == "category" and str(f.events["adapter"].dtype) == "category"
    assert f.events.groupby("config", observed=True)["adapter"].first().to_dict() == {"same": "memory", "same#2": "redis"}
    assert any("same run name" in w for w in f.warnings)
