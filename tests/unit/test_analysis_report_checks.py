"""The report's per-config checks are analysis.checks.evaluate's (one definition), `sioscale report`
takes thresholds (--campaign and/or the check flags) and says which SLO it used, and bad run files
give one line and exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.capacity import DEFAULT_SLO
from analysis.checks import evaluate
from analysis.report import write_report
from contract.config import Thresholds
from sioscale.cli import main as cli_main
from tests.synth import SynthConfig, seed_campaign, write_run

TH = Thresholds(connect_ratio=0.99, upgrade_ratio=0.9, delivery_ratio=0.99, p95_connect_ms=800, p95_ack_ms=400,
                failure_ratio=0.01)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    dirs = seed_campaign(root, users=20, duration=6)
    dirs.append(write_run(root / "caddy-failed", SynthConfig("caddy-failed", balancer="caddy", status="failed",
                                                            error="caddy: address already in use")))
    return dirs


def test_report_checks_are_the_check_commands_verdicts(runs: list[Path], tmp_path: Path) -> None:
    summary = write_report(runs, tmp_path / "rep", thresholds=TH)
    on_disk = json.loads((tmp_path / "rep" / "summary.json").read_text())
    results = evaluate(on_disk, TH)  # what `sioscale check` computes from the same file
    assert len(results) == 6 * len(summary["configs"])
    for r in results:
        ch = next(c for c in summary["configs"] if c["name"] == r.config)["checks"][r.threshold]
        assert ch["text"] == r.describe()
        assert ch["pass"] == (None if r.skipped else r.passed) and ch["limit"] == r.limit
        assert ch["value"] == (pytest.approx(r.value) if r.value is not None else None)
    by = {c["name"]: c for c in summary["configs"]}
    failed = by["caddy-failed"]["checks"]
    assert all(c["pass"] is False and "did not run" in c["text"] for c in failed.values())
    rr = by["haproxy-l4-round-robin-poll+ws-memory-python-3n"]
    # failure_ratio is failed steps / all steps, as in `sioscale check`
    assert rr["checks"]["failure_ratio"]["value"] == pytest.approx(rr["steps"]["failed"] / rr["steps"]["total"])
    assert by["haproxy-l4-round-robin-ws-memory-python-3n"]["checks"]["upgrade_ratio"]["skipped"]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "required &lt;= 800" in html or "≤ 800" in html  # values and limits on the page


def test_report_cli_takes_campaign_thresholds_and_says_which_slo(runs: list[Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    camp = tmp_path / "c.toml"
    camp.write_text(Path("campaigns/capacity.toml").read_text())
    rc = cli_main(["report", *map(str, runs), "--out", str(tmp_path / "r1"), "--campaign", str(camp),
                   "--connect-ratio", "0.99"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    s = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert s["slo"]["values"]["p95_connect_ms"] == 500 and s["slo"]["from"]["p95_connect_ms"] == "thresholds"
    assert str(camp) in s["slo"]["thresholds_source"] and "--connect-ratio" in s["slo"]["thresholds_source"]
    assert set(s["configs"][0]["checks"]) == {"p95_connect_ms", "p95_ack_ms", "failure_ratio", "connect_ratio"}
    assert all(c["capacity"].get("slo", {}).get("p95_connect_ms", 500) == 500 for c in s["configs"])
    assert "capacity SLO: p95_connect_ms 500 (thresholds)" in out.out
    assert "threshold: caddy-failed" in out.out
    # without thresholds: the default SLO, said so, and no checks
    assert cli_main(["report", *map(str, runs), "--out", str(tmp_path / "r2")]) == 0
    s2 = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert s2["slo"]["values"] == DEFAULT_SLO and set(s2["slo"]["from"].values()) == {"default"}
    assert all(c["checks"] == {} for c in s2["configs"])
    assert "(default)" in capsys.readouterr().out
    assert "default" in (tmp_path / "r2" / "index.html").read_text()


def test_report_cli_bad_campaign_file_is_exit_2(runs: list[Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds\n")
    assert cli_main(["report", str(runs[0]), "--out", str(tmp_path / "r"), "--campaign", str(bad)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_bad_histogram_keys_and_meta_shapes_render_with_warnings(runs: list[Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy_run(runs[2], tmp_path / "bad")
    (d / "locust.json").write_text(json.dumps([
        {"name": "connect", "method": "sio", "num_requests": 3, "response_times": {"abc": 1, "12": 2}},
        {"name": "ack", "method": "sio", "num_requests": 1, "response_times": {"7": "x"}}]))
    meta = json.loads((d / "meta.json").read_text())
    meta.update(versions=["python 3.11"], machine="a laptop", started={"t": 1}, cluster_info=[1, 2])
    (d / "meta.json").write_text(json.dumps(meta))
    rc = cli_main(["report", str(d), "--out", str(tmp_path / "rep")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert any("histogram" in w and "abc" in w for w in s["warnings"])
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "a laptop" in html and "python 3.11" in html


def test_checks_on_a_broken_summary_value_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"schema": 1, "configs": [
        {"name": "a", "status": "ok", "connections": {"attempted": 3, "connect_ratio": "high"}}, 7]}))
    assert cli_main(["check", str(tmp_path), "--connect-ratio", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "connect_ratio is 'high'" in err and "Traceback" not in err


def test_page_shows_what_summary_json_has(runs: list[Path], tmp_path: Path) -> None:
    """steps, failure totals per kind, node-switch attribution, broadcast p99, generator and run times."""
    from analysis.report import _fmt_ms, _fmt_num

    rr_dir = _copy_run(runs[0], tmp_path / "runs" / runs[0].name)
    assert rr_dir.name == "haproxy-l4-round-robin-poll+ws-memory-python-3n"
    (rr_dir / "generator.csv").write_text("ts,worker,cpu_percent,users\n" + "".join(
        f"{1_760_000_000 + i}.0,w-{w},{cpu},10\n" for i in range(5) for w, cpu in (("A", 30 + i), ("B", 91 + i))))
    s = write_report([rr_dir, *runs[1:]], tmp_path / "rep", thresholds=TH)
    html = (tmp_path / "rep" / "index.html").read_text()
    rr = next(c for c in s["configs"] if c["name"] == "haproxy-l4-round-robin-poll+ws-memory-python-3n")
    row = html[html.index('id="matrix"'):html.index('id="connections"')]
    row = row[row.index(rr["name"]):]
    assert f'<td class="n">{_fmt_num(rr["steps"]["total"])}</td><td class="n">{_fmt_num(rr["steps"]["failed"])}</td>' in row
    fails = html[html.index("Totals per kind"):html.index('id="nodes"')]
    for kind, n in rr["failures"].items():
        assert f"<th class=\"n\">{kind}</th>" in fails and _fmt_num(n) in fails
    ns = html[html.index("Node-switch attribution"):]
    assert f'<td class="n">{_fmt_num(rr["node_switch"]["follow_on"])}</td>' in ns
    red = next(c for c in s["configs"] if c["name"].endswith("redis-python-3n"))
    assert f'<td class="n">{_fmt_ms(red["broadcast"]["latency_ms"]["p99"])}</td></tr>' in html
    assert rr["generator"]["busiest"] == "w-B" and rr["generator"]["saturated_samples"] == 5
    gen = html[html.index('id="timeseries"'):html.index('id="capacity"')]
    assert "<td>w-B <span" in gen and '5 <span class="muted small">of 10</span>' in gen
    assert "p95 connect latency (ms)" in html and "≤ 800 ms" in html
    assert s["environment"]["runs"][rr["name"]]["started"] is not None and " UTC → " in html


def test_rebuilding_without_thresholds_names_the_earlier_ones(runs: list[Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    camp = tmp_path / "camp"
    (camp / "runs").mkdir(parents=True)
    for d in runs[:2]:
        _copy_run(d, camp / "runs" / d.name)
    assert cli_main(["report", str(camp), "--out", str(camp), "--p95-ack-ms", "300"]) == 0
    capsys.readouterr()
    assert cli_main(["report", str(camp), "--out", str(tmp_path / "again")]) == 0
    err = capsys.readouterr().err
    assert "was built with thresholds (--p95-ack-ms 300)" in err
