"""The report as a person sees it: headless Chromium renders index.html offline; plots and tables are there."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from analysis.report import write_report
from tests.synth import SynthConfig, seed_campaign, write_run, write_run_v2
from tests.unit.test_resources_report import _limited

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run chromium in its own process group and kill the whole group on timeout or error."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-extensions", "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("browser")
    dirs = seed_campaign(root / "runs", users=30, duration=8)
    dirs.append(write_run(root / "runs" / "ramp", SynthConfig(
        "ramp", transports=("websocket",), policy="l4-round-robin", adapter="redis",
        steps=((15, 4), (30, 4), (45, 4), (60, 4)), capacity_per_node=8, timeout_s=1.0, spawn_rate=60, seed=7)))
    write_report(dirs, root / "report", thresholds={"p95_ack_ms": 50.0})
    # a capacity campaign: 1, 2, 4 nodes of 0.25 CPU, Redis (a node's cost per client grows with the nodes)
    cap = [write_run_v2(root / "cap" / f"n{n}", _limited(f"haproxy-cookie-ws-redis-python-{n}n-cpu0.25", nodes=n,
                                                          adapter="redis", policy="cookie", cpu_growth_per_node=0.5))
           for n in (1, 2, 4)]
    write_report(cap, root / "capacity", thresholds={"p95_ack_ms": 50.0})
    # the seed's whole matrix: policy × transports × adapter, 16 configurations
    seed = [write_run(root / "seed16" / f"{p}-{'ws' if t == ('websocket',) else 'poll+ws'}-{a}", SynthConfig(
        f"haproxy-{p}-{'ws' if t == ('websocket',) else 'poll+ws'}-{a}-python-3n", policy=p, transports=t, adapter=a,
        users=8, duration=3, seed=i))
        for i, (p, t, a) in enumerate((p, t, a) for p in ("cookie", "l4-round-robin", "l7-round-robin", "source")
                                      for t in (("polling", "websocket"), ("websocket",)) for a in ("memory", "redis"))]
    write_report(seed, root / "seed16")
    # a recipe campaign (campaigns/recipes.toml and the Traefik rows the lead adds): 10 recipes, two configs each
    recipes = [write_run(root / "recipes16" / f"{b}-{p}-{tr}-{a}", SynthConfig(
        f"{b}-{p}-{tr}-{a}-python-3n", balancer=b, policy=p, transports=t, adapter=a, users=8, duration=3, seed=i))
        for i, (b, p) in enumerate((("nginx", "ip-hash"), ("nginx", "hash-consistent"), ("nginx", "header-hash"),
                                    ("haproxy", "cookie"), ("caddy", "cookie"), ("traefik", "cookie"),
                                    ("nginx", "l7-round-robin"), ("haproxy", "l7-round-robin"),
                                    ("caddy", "l7-round-robin"), ("traefik", "l7-round-robin")))
        for tr, t, a in (("poll+ws", ("polling", "websocket"), "memory"), ("ws", ("websocket",), "redis"))]
    write_report(recipes, root / "recipes16")
    return root


def test_rendered_dom_has_plots_tables_and_verdicts(report: Path) -> None:
    r = _chromium(["--dump-dom", (report / "report" / "index.html").as_uri()], report)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert dom.count("<svg") >= 8  # 7 overview plots + the ramp's capacity plot
    assert dom.count("<table") >= 8
    assert "needs sticky sessions" in dom and "Redis adapter vs memory" in dom
    assert "users per node" in dom and "Nodes needed" in dom


def test_screenshot_is_drawn(report: Path) -> None:
    shot = report / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars",
                   (report / "report" / "index.html").as_uri()], report)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000  # a page with plots, not a blank one


# Measures the page as laid out at the window's size: where the first sections end, what they hold.
_MEASURE = """<script>
const box = id => { const e = document.getElementById(id); if (!e) return null; const r = e.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, right: r.right, text: e.innerText,
          cells: e.querySelectorAll('table.answer td').length}; };
const first = document.querySelector('main > section');
document.title = 'MEASURE' + JSON.stringify({vw: innerWidth, vh: innerHeight, first: first.id,
  answer: box('answer'), recipes: box('recipes')});
</script>"""


@pytest.mark.parametrize("which", ["seed16", "report", "capacity", "recipes16"])
def test_first_screen_is_the_answer_at_1280_by_800(report: Path, which: str) -> None:
    """The first section fits 1280×800 without scrolling (issue 12 part 6): the recipe table when the configs differ
    by balancer or policy (issue 15), else the matrix with the findings and the nodes-needed line."""
    page = report / which / "first-screen.html"
    page.write_text((report / which / "index.html").read_text().replace("</body>", _MEASURE + "</body>"))
    r = _chromium(["--window-size=1280,800", "--hide-scrollbars", "--dump-dom", page.as_uri()], report)
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"<title>MEASURE(.*?)</title>", r.stdout, re.S)
    assert m, r.stdout[:2000]
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    # a 1280×800 window: headless Chromium leaves its window's frame out of the viewport (657 px high here),
    # as a desktop browser's toolbars do; the first section must end within what the window shows
    assert got["vw"] == 1280 and 600 <= got["vh"] <= 800
    ans, rec = got["answer"], got["recipes"]
    first = rec if which != "capacity" else ans
    assert got["first"] == ("recipes" if which != "capacity" else "answer") and (rec is None) == (which == "capacity")
    assert first["bottom"] <= got["vh"] and first["right"] <= 1280 and ans["right"] <= 1280, got
    if which == "seed16":  # four HAProxy recipes, then the seed's policy × transports × adapter: 16 cells
        assert rec["cells"] == 4 * 5 and "HAProxy balance source" in rec["text"] and "1 of 3 nodes" in rec["text"]
        assert ans["top"] < got["vh"]  # the matrix starts on the first screen
        assert ans["cells"] == 16 and "l7-round-robin" in ans["text"] and "websocket · redis" in ans["text"]
        assert "Every session connects" in ans["text"] and "whenever" in ans["text"]
    elif which == "report":  # four seed configs and a ramp: a matrix with empty cells, and a step load's answer
        assert ans["cells"] >= 4 and "not run" in ans["text"] and "Nodes needed" in ans["text"]
    elif which == "capacity":  # the capacity answer: the binding resource per node count and the nodes-needed line
        assert ans["cells"] == 3 and "bound by node n1" in ans["text"] and "Nodes needed" in ans["text"]
        assert "USL over node count" in ans["text"]
    else:  # ten recipes (Traefik's two too), their five questions, the controls last
        assert rec["cells"] == 10 * 5 and "Traefik sticky cookie" in rec["text"] and "negative controls" in rec["text"]
        assert rec["text"].index("negative controls") < rec["text"].index("nginx round robin")
