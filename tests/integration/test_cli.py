"""The CLI end to end: the smoke campaign against the real cluster, check's exit codes and JUnit,
and bad input rejected before any load starts."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIOSCALE = [sys.executable, "-m", "sioscale.cli"]


def sioscale(*args: str, timeout: float = 60, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*SIOSCALE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_help_is_complete_for_every_subcommand():
    for sub in ("cluster", "run", "campaign", "report", "check"):
        out = sioscale(sub, "--help")
        assert out.returncode == 0, out.stderr
        assert "usage: sioscale " + sub in out.stdout


def test_campaign_with_unknown_key_fails_before_load(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[load]\nusers = 3\nspawnrate = 3\n')
    t0 = time.monotonic()
    out = sioscale("campaign", str(bad), "--out", str(tmp_path / "out"))
    assert out.returncode == 2
    assert f"{bad}:4: unknown key 'spawnrate' in [load]" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists() and time.monotonic() - t0 < 20


def test_campaign_with_missing_locustfile_names_the_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n\n[load]\nlocustfile = "locustfiles/nope.py"\n')
    out = sioscale("campaign", str(bad))
    assert out.returncode == 2
    assert f"{bad}:4: locustfile = 'locustfiles/nope.py': no such file" in out.stderr


def test_run_against_unreachable_url_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = sioscale("run", "--url", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert "unreachable" in out.stderr and "Traceback" not in out.stderr


def test_check_rejects_a_file_that_is_not_a_summary(tmp_path):
    (tmp_path / "summary.json").write_text('{"hello": 1}')
    out = sioscale("check", str(tmp_path), "--connect-ratio", "0.9")
    assert out.returncode == 2 and "not a sioscale summary" in out.stderr


@pytest.mark.slow
def test_smoke_campaign_end_to_end(tmp_path):
    """The seed's effect in miniature, measured through the real CLI, cluster and balancer."""
    out_dir = tmp_path / "smoke"
    t0 = time.monotonic()
    # from another cwd with a relative --out, as a user would (paths must hold for every child process)
    proc = sioscale("campaign", str(ROOT / "campaigns/smoke.toml"), "--out", "smoke", timeout=240, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert elapsed < 180, f"smoke campaign took {elapsed:.0f}s"
    assert "[1/4" in proc.stderr and "elapsed" not in proc.stdout  # progress goes to stderr
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["schema"] == 1
    html = (out_dir / "index.html").read_text()
    assert "<svg" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:|url\(\s*["']?https?:|@import""", html), "external resource"
    cfgs = {(c["config"]["policy"], c["config"]["adapter"]): c for c in summary["configs"]}
    assert set(cfgs) == {("l4-round-robin", "memory"), ("l4-round-robin", "redis"), ("cookie", "memory"), ("cookie", "redis")}
    for c in summary["configs"]:
        for key in ("connections", "failures", "broadcast", "latency_ms", "nodes", "imbalance", "capacity", "verdicts"):
            assert key in c, key
        assert c["config"]["transports"] == ["polling", "websocket"] and c["config"]["nodes"] == 3
    # non-sticky L4 + polling: most sessions die on another node (session_unknown)
    l4 = cfgs[("l4-round-robin", "memory")]
    # (browsers' pool: some get the CONNECT reply; then the chat user's join, a POST on a connection of its own
    # while the next poll holds the handshake's, meets another node: docs/protocol.md section 6)
    assert l4["connections"]["connect_ratio"] < 0.95 and l4["failures"].get("session_unknown", 0) > 0
    assert l4["sessions"]["failed"] > 0 and l4["sessions"]["top_end_step"] == "post:emit"
    assert l4["failures"].get("session_unknown", 0) > 0
    # cookie-sticky: every session connects and upgrades
    for adapter in ("memory", "redis"):
        ck = cfgs[("cookie", adapter)]["connections"]
        assert ck["connect_ratio"] >= 0.95 and ck["upgrade_ratio"] >= 0.95, ck
    # the Redis adapter is what makes broadcasts reach every room member across nodes
    mem, red = cfgs[("cookie", "memory")]["broadcast"], cfgs[("cookie", "redis")]["broadcast"]
    assert red["delivery_ratio"] >= 0.95, red
    assert mem["delivery_ratio"] < 0.8, mem
    # the check on the same report: the L4 configs violate connect_ratio, exit 1, JUnit lists them
    junit = tmp_path / "junit.xml"
    chk = sioscale("check", str(out_dir), "--campaign", "campaigns/smoke.toml", "--junit", str(junit))
    assert chk.returncode == 1
    assert "l4-round-robin" in chk.stderr and "VIOLATED" in chk.stderr
    root = ET.parse(junit).getroot()
    assert root.get("tests") == str(4 * 2)
    failed = {c.get("classname") + ":" + c.get("name") for c in root.findall("testcase") if c.find("failure") is not None}
    assert "smoke.haproxy-l4-round-robin-poll+ws-memory-python-3n:connect_ratio" in failed
    assert not any("cookie-poll+ws-redis" in f for f in failed)
    ok = sioscale("check", str(out_dir), "--only", "cookie-poll+ws-redis", "--connect-ratio", "0.95", "--delivery-ratio", "0.95")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _assert_no_strays(str(out_dir))


def _assert_no_strays(marker: str) -> None:
    """No process left behind whose command line names the campaign's directory (balancer, locust...)."""
    left = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            left.append(cmd)
    assert not left, left
