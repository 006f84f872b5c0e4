"""The report of a recipe campaign: the recipe table is its first section (and summary.json's `recipes`), and
`sioscale report --markdown-recipes` prints the same table for README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis.report import write_report
from sioscale.cli import main as cli_main
from tests.synth import SynthConfig, write_run

RECIPES = (("nginx", "ip-hash"), ("haproxy", "cookie"), ("caddy", "l7-round-robin"))
SOURCES = "127.0.1.1-127.0.8.254"


def _runs(root: Path, recipes: tuple[tuple[str, str], ...] = RECIPES) -> list[Path]:
    out = []
    for i, (b, p) in enumerate(recipes):
        for t, a in ((("polling", "websocket"), "memory"), (("websocket",), "redis")):  # 2 of the 4: enough here
            name = f"{b}-{p}-{'ws' if t == ('websocket',) else 'poll+ws'}-{a}-python-3n"
            extra = {"load": {"users": 9, "steps": [], "source_range": SOURCES}} if p == "ip-hash" else {}
            out.append(write_run(root / name, SynthConfig(name, balancer=b, policy=p, transports=t, adapter=a,
                                                          users=9, duration=4, seed=i, extra=extra)))
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("recipes")
    runs = _runs(root / "runs")
    return root, write_report(runs, root / "report"), root / "report"


def test_recipe_table_is_the_first_section(campaign: tuple[Path, dict, Path]) -> None:
    _, _, out = campaign
    html = (out / "index.html").read_text()
    sections = re.findall(r'<section id="([a-z-]+)"', html)
    assert sections[:2] == ["recipes", "answer"], sections[:4]
    first = html[html.index('<section id="recipes"'):html.index('<section id="answer"')]
    assert first.count("<tr>") == 1 + len(RECIPES) + 1  # the titles, a row per recipe, the controls' divider
    assert "nginx ip_hash<sup" in first and "HAProxy cookie SRV insert" in first and "negative controls" in first
    assert first.index("negative controls") < first.index("Caddy lb_policy round_robin")
    assert "client source addresses 127.0.1.1-127.0.8.254" in first
    assert 'class="b bad"><b>no</b> ' in first and 'class="b ok"><b>yes</b> 100% (' in first


def test_summary_json_gains_recipes_and_keeps_every_other_key(campaign: tuple[Path, dict, Path]) -> None:
    _, summary, out = campaign
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert list(on_disk)[:8] == ["schema", "title", "status", "generated", "configs", "environment", "thresholds",
                                 "warnings"]
    recs = on_disk["recipes"]
    assert [(r["balancer"], r["policy"]) for r in recs] == list(RECIPES)
    rr = recs[2]  # the synthetic round robin: polling fails, websocket-only works
    assert rr["control"] is True and rr["polling"] is False and rr["websocket"] is True
    assert rr["polling_den"] == sum(c["connections"]["attempted"] for c in on_disk["configs"]
                                    if c["config"]["policy"] == "l7-round-robin" and len(c["config"]["transports"]) == 2)
    assert recs[0]["sources"] == [SOURCES] and recs[1]["sources"] == []


def test_one_recipe_keeps_the_answer_first_and_no_recipes_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _runs(tmp_path / "runs", RECIPES[1:2])
    # the report is written; the table it was asked to print does not exist: exit 2, one line saying why
    assert cli_main(["report", *map(str, runs), "--out", str(tmp_path / "report"), "--markdown-recipes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sioscale report: no recipe table: the runs do not differ by balancer or policy (they all run haproxy cookie)"
    assert "recipes" not in json.loads((tmp_path / "report" / "summary.json").read_text())
    assert re.findall(r'<section id="([a-z-]+)"', (tmp_path / "report" / "index.html").read_text())[0] == "answer"


def test_cli_prints_the_table_as_markdown_from_a_campaign_directory(campaign: tuple[Path, dict, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root, summary, _ = campaign
    camp = tmp_path / "camp"
    (camp / "runs").mkdir(parents=True)
    for d in (root / "runs").iterdir():
        (camp / "runs" / d.name).symlink_to(d)
    assert cli_main(["report", str(camp), "--markdown-recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| recipe | works with polling+websocket? |") and len(lines) == 2 + len(RECIPES) + 2
    # a campaign directory's runs come sorted by name; the controls still come last
    assert lines[2].startswith("| HAProxy cookie SRV insert | **yes** ") and lines[3].startswith("| nginx ip_hash | **")
    assert lines[4].startswith("| Caddy lb_policy round_robin (control) | **no** ")
    assert lines[-1] == f"nginx ip_hash: client sources {SOURCES} (`--sio-source-range`)."
    assert not (camp / "index.html").exists() and not (camp / "summary.json").exists()  # without --out: nothing written
    assert cli_main(["report", str(camp)]) == 2
    assert "--out is required" in capsys.readouterr().err
