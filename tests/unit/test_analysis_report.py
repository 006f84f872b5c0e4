"""write_report end to end on synthetic run directories: the pinned summary.json shape, a
self-contained index.html, and bad input (failed config, empty run, only failures) without a traceback."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from analysis.report import write_report
from sioscale.cmd_report import expand_run_dirs
from tests.synth import SynthConfig, seed_campaign, write_run

CONFIG_KEYS = {"balancer", "policy", "adapter", "transports", "server", "nodes", "tls"}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("camp")
    dirs = seed_campaign(root / "runs", users=30, duration=8)
    dirs.append(write_run(root / "runs" / "caddy-failed", SynthConfig(
        "caddy-failed", balancer="caddy", policy="l7-round-robin", status="failed",
        error="caddy: address 127.0.0.1:8080 already in use")))
    out = root / "report"
    return write_report(dirs, out, thresholds={"connect_ratio": 0.99}), out


def test_summary_json_pinned_shape(campaign: tuple[dict, Path]) -> None:
    summary, out = campaign
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary and on_disk["schema"] == 1 and "environment" in on_disk
    for c in on_disk["configs"]:
        assert {"name", "config", "connections", "failures", "broadcast", "latency_ms", "nodes", "imbalance",
                "capacity", "verdicts", "status", "error"} <= set(c)
        assert set(c["config"]) == CONFIG_KEYS and isinstance(c["config"]["transports"], list)
        assert {"attempted", "connected", "upgraded", "connect_ratio", "upgrade_ratio"} <= set(c["connections"])
        assert {"sent", "expected", "delivered", "delivery_ratio"} <= set(c["broadcast"])
        for v in c["latency_ms"].values():
            assert {"p50", "p95", "p99", "max"} <= set(v)


def test_summary_numbers_tell_the_seed_story(campaign: tuple[dict, Path]) -> None:
    by = {c["name"]: c for c in campaign[0]["configs"]}
    rr = by["haproxy-l4-round-robin-poll+ws-memory-python-3n"]
    assert rr["connections"]["connect_ratio"] < 0.5 and rr["failures"]["session_unknown"] > 0
    assert "needs sticky sessions" in " ".join(rr["verdicts"])
    assert rr["checks"]["connect_ratio"]["pass"] is False
    st = rr["steps"]  # failed steps / all steps, read by `sioscale check --failure-ratio`
    assert 0 < st["failed"] < st["total"] and st["failure_ratio"] == pytest.approx(st["failed"] / st["total"])
    mem, red = by["haproxy-cookie-poll+ws-memory-python-3n"], by["haproxy-cookie-poll+ws-redis-python-3n"]
    assert mem["connections"]["connect_ratio"] == 1.0 and mem["checks"]["connect_ratio"]["pass"] is True
    assert 0.2 < mem["broadcast"]["delivery_ratio"] < 0.5 and red["broadcast"]["delivery_ratio"] == 1.0
    assert red["redis_vs_memory"]["memory"] == mem["name"]
    assert any("memory adapter" in v and "Redis" in v for v in mem["verdicts"])
    assert sorted(mem["nodes"]) == ["n1", "n2", "n3"] and mem["imbalance"] == pytest.approx(1.0)
    failed = by["caddy-failed"]
    assert failed["status"] == "failed" and "already in use" in failed["error"]
    assert "did not run" in failed["verdicts"][0]


def test_index_html_is_self_contained_with_plots_and_sections(campaign: tuple[dict, Path]) -> None:
    _, out = campaign
    html = (out / "index.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html), "no external URL may be loaded"
    assert "<link" not in html and "<script" not in html
    assert html.count("<svg") >= 6 and "<?xml" not in html
    for sec in ("verdicts", "matrix", "connections", "failures", "nodes", "latency", "broadcast", "timeseries",
                "capacity", "environment", "warnings"):
        assert f'id="{sec}"' in html
    assert "already in use" in html
    assert {"broadcast.svg", "connect.svg", "nodes.svg"} <= {p.name for p in (out / "plots").glob("*.svg")}


def test_bad_runs_give_a_report_not_a_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    only_fail = write_run(tmp_path / "allfail", SynthConfig("allfail", policy="l4-round-robin", users=5, duration=3))
    p = only_fail / "events.csv"
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if ",0," in ln]) + "\n")  # keep only ok=0 rows
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "events.csv").write_text("ts,step,ok,shoe_size\nabc,connect,2,44\n")
    (junk / "meta.json").write_text("[]")
    s = write_report([empty, only_fail, junk], tmp_path / "rep")
    html = (tmp_path / "rep" / "index.html").read_text()
    assert len(s["configs"]) == 3 and s["warnings"]
    assert "events.csv is missing" in html and "shoe_size" in html
    by = {c["name"]: c for c in s["configs"]}
    assert by["empty"]["connections"]["attempted"] == 0
    # an empty directory measured nothing and cannot say how its run ended: failed, never ok (issue 9)
    assert by["empty"]["status"] == "failed" and "did not run" in by["empty"]["verdicts"][0]
    assert by["allfail"]["status"] == "ok"  # it ran: failures are its finding, not its status
    assert by["allfail"]["connections"]["connected"] == 0
    assert write_report([], tmp_path / "none")["warnings"] == ["no run directories given"]


def test_step_load_run_gets_a_capacity_section(tmp_path: Path) -> None:
    d = write_run(tmp_path / "ramp", SynthConfig("ramp", transports=("websocket",), policy="l4-round-robin",
                                                 adapter="redis", steps=((15, 4), (30, 4), (45, 4), (60, 4)),
                                                 capacity_per_node=8, timeout_s=1.0, spawn_rate=60, message_rate=2, seed=5))
    s = write_report([d], tmp_path / "rep", thresholds={"p95_ack_ms": 50.0})
    cap = s["configs"][0]["capacity"]
    assert cap["stages"] == 4 and cap["users_per_node"] is not None and cap["users_per_node"] < 20
    assert cap["limit"] and cap["nodes_needed"]["10000"] >= 10_000 / cap["users_per_node"]
    # the busiest node's load at the knee is the capacity, and the imbalance is applied once
    imb = cap["imbalance_at_knee"]
    assert cap["imbalance_source"] == "knee stage" and imb >= 1
    assert cap["capacity_per_node"] == pytest.approx(cap["users"] * imb / 3)  # SynthConfig.nodes = 3
    assert cap["nodes_needed"]["10000"] == math.ceil(10_000 * imb / (cap["capacity_per_node"] * 0.75))
    assert cap["nodes_needed_even"]["10000"] == math.ceil(10_000 / (cap["capacity_per_node"] * 0.75))
    assert cap["usl"]["n_points"] == 4 and cap["usl"]["meaningful"] is False
    assert (tmp_path / "rep" / "plots" / "capacity-ramp.svg").exists()


def test_cli_expands_campaign_dirs(tmp_path: Path) -> None:
    (tmp_path / "c" / "runs" / "a").mkdir(parents=True)
    (tmp_path / "c" / "runs" / "b").mkdir()
    dirs, problems = expand_run_dirs([str(tmp_path / "c"), str(tmp_path / "nope")])
    assert [d.name for d in dirs] == ["a", "b"] and problems and "not a directory" in problems[0]
    # a run directory that happens to hold runs/ is still a run when it has run files of either schema
    for name in ("events.csv", "aggregates.arrows", "eventlog.json"):
        r = tmp_path / f"run-{name}"
        (r / "runs" / "x").mkdir(parents=True)
        (r / name).write_bytes(b"")
        assert expand_run_dirs([str(r)])[0] == [r]
