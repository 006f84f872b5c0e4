"""The report on a run with resources.csv: the node's CPU binds at the knee, nodes needed, the first screen."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from analysis.report import write_report
from contract.resources import RESOURCES_CSV
from tests.synth import SynthConfig, write_run, write_run_v2

OLD_CAPACITY_KEYS = {"stages", "users_per_node", "users", "reached", "generator_stage", "generator_bound_stages",
                     "generator_known", "generator_cpu_max_hold", "limit", "slo", "note", "table", "usl",
                     "capacity_per_node", "imbalance_at_knee", "imbalance_source", "headroom", "nodes_needed",
                     "nodes_needed_even", "assumptions"}


def _limited(name: str = "ramp", **kw: object) -> SynthConfig:
    """One node at 0.25 core whose CPU reaches the limit at 150 clients, where latency climbs: steps 40, 120, 300."""
    base: dict = {"transports": ("websocket",), "policy": "l4-round-robin", "nodes": 1, "steps": ((40, 4), (120, 4), (300, 4)),
                  "capacity_per_node": 150, "timeout_s": 1.0, "spawn_rate": 100, "message_rate": 1, "seed": 5,
                  "resources": True, "node_cpu_limit": 0.25, "node_memory_mb": 512}
    return SynthConfig(name, **{**base, **kw})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    root = tmp_path_factory.mktemp("res")
    d = write_run_v2(root / "ramp", _limited())
    s = write_report([d], root / "rep", thresholds={"p95_ack_ms": 50.0})
    return s, (root / "rep" / "index.html").read_text(), root


def test_binding_is_the_nodes_cpu_and_capacity_keeps_its_keys(report: tuple[dict, str, Path]) -> None:
    s, _, root = report
    cap = s["configs"][0]["capacity"]
    assert OLD_CAPACITY_KEYS <= set(cap)
    assert cap["reached"] is True
    b = cap["binding"]
    assert (b["component"], b["id"], b["metric"], b["limit"]) == ("node", "n1", "cpu_percent", 25.0)
    assert 0.9 * 25 <= b["value"] <= 25.0 and cap["binding_stage"] == 3 and "0.25-core" in cap["binding_reason"]
    nb = cap["nodes_needed_by_resource"]
    cpu = next(r for r in nb["resources"] if r["resource"] == "cpu")
    assert cpu["users_per_node"] == pytest.approx(150, rel=0.1) and cpu["extrapolated"] is False
    for t in ("10000", "100000"):  # the answer is the largest per resource, beyond the one node measured
        assert nb["targets"][t]["nodes"] == max(r["nodes"][t] for r in nb["resources"] if r["nodes"])
        assert nb["targets"][t]["extrapolated"] is True
    res = s["configs"][0]["resources"]
    assert res["memory_per_connection"]["n1"]["bytes_per_client"] == pytest.approx(64 * 1024, rel=0.01)
    assert res["reconciliation"]["flagged"] is False and res["node_size"]["label"] == "0.25 CPU / 512 MiB"
    assert any(v.startswith("binding resource: node n1, the first resource at its bound: CPU at")
               for v in s["configs"][0]["verdicts"])
    svg = (root / "rep" / "plots" / "resources-ramp.svg").read_text()
    assert "CPU % (100 = one core)" in svg and "limit" in svg  # the 25 % CPU limit drawn
    assert "Resources per step" in (root / "rep" / "plots" / "resources-ramp-steps.svg").read_text()


def test_first_screen_has_the_answer_before_the_verdicts(report: tuple[dict, str, Path]) -> None:
    _, html, _ = report
    answer, verdicts = html.find('id="answer"'), html.find('id="verdicts"')
    assert 0 < answer < verdicts
    first = re.sub(r"<[^>]+>", " ", html[answer:verdicts])
    assert "bound by node n1 CPU at" in first and "10,000 users →" in first and "0.25 CPU / 512 MiB" in first
    assert "node n1 CPU at 24" in first and "stage 3 (300 users)" in first  # capacity.binding_summary
    assert 'id="resources"' in html and "Binding resource:" in html


def test_reconciliation_gap_is_a_verdict_and_old_runs_have_no_resources(report: tuple[dict, str, Path]) -> None:
    _, _, root = report
    d = write_run(root / "gap", _limited("gap"))
    p = d / RESOURCES_CSV
    rows = list(csv.reader(p.open()))
    with p.open("w", newline="") as f:  # the servers count 10 % more clients than the client side holds
        csv.writer(f).writerows([r if r[4] != "clients" else [*r[:5], repr(float(r[5]) * 1.1)] for r in rows])
    old = write_run(root / "old", SynthConfig("old", users=6, duration=3, nodes=1))
    s = write_report([d, old], root / "rep2")
    by = {c["name"]: c for c in s["configs"]}
    assert by["gap"]["resources"]["reconciliation"]["flagged"] is True
    assert any("server-side clients" in v and "differ from the client side" in v for v in by["gap"]["verdicts"])
    assert by["old"]["resources"] is None and by["old"]["capacity"].get("binding") is None
    assert not [w for w in s["warnings"] if RESOURCES_CSV in w]


def test_campaign_over_node_counts_fits_cost_against_nodes(tmp_path: Path) -> None:
    # with the Redis adapter a node's CPU per client grows by half per extra node (every node gets every broadcast)
    dirs = [write_run(tmp_path / f"n{n}", _limited(f"n{n}", nodes=n, adapter="redis", cpu_growth_per_node=0.5))
            for n in (1, 2)]
    s = write_report(dirs, tmp_path / "rep")
    for c in s["configs"]:
        nb = c["capacity"]["nodes_needed_by_resource"]
        row = next(r for r in nb["resources"] if r["resource"] == "cpu_scale_out")
        assert row["fit"]["measured_nodes"] == [1, 2] and row["fit"]["c1"] > 0 and "node count" in row["model"]
        assert row["ceiling_users"] and row["extrapolated"] is True
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "per client" in html and "ceiling" in html


SPARSE = {
    "blind": ["{t},r,node,n1,warning:timeout,1", "{t},r,redis,redis,warning:refused,1"],  # the sampler got nothing
    "nonode": ["{t},r,redis,redis,ops_per_sec,5", "{t},r,balancer,haproxy/n1,queue,0"],  # no node rows at all
    "clientsonly": ["{t},r,node,n1,clients,3"],  # clients without CPU or RSS
}


def test_sparse_resources_never_break_the_report(tmp_path: Path) -> None:
    dirs = []
    for name, rows in SPARSE.items():
        cfg = _limited(name, steps=((4, 3), (8, 3)), resources=False)
        d = write_run(tmp_path / name, cfg)
        (d / RESOURCES_CSV).write_text("ts,run,component,id,metric,value\n"
                                       + "".join(r.format(t=cfg.start + 2 + i) + "\n" for i in range(6) for r in rows))
        dirs.append(d)
    s = write_report(dirs, tmp_path / "rep")
    for c in s["configs"]:
        assert c["resources"] is not None and c["capacity"]["binding"] is None and c["capacity"]["binding_reason"]
    assert (tmp_path / "rep" / "index.html").exists()
