"""benchmarks/eventlog.py: its synthetic load counts what the chat load does, and its quick mode
prints the figures the issue asks for.

Why these tests: the benchmark's figures are only worth what its payloads are. The load must
hold the real event counts (0.5 ack, 0.5 broadcast_send, 5 broadcast_recv per user-second in
rooms of 10, a ping every 25 s), the reused window must never repeat a message id or a user's
start, and the storm must be failures budgeted by the row policy. The quick run is the smoke test
of the whole path (payloads -> the event log's ingest -> files -> JSON line).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from benchmarks import eventlog as bench
from benchmarks._synthetic_chat import ChatLoad, ChatRun, events_in, storm_seconds
from contract.aggregate import from_wire
from contract.rowpolicy import RowPolicyConfig

KEYS = ("master_events_per_s", "bytes_per_user_hour", "report_s", "report_peak_rss_mb", "storm_master_events_per_s",
        "record_us_per_event", "params")


def _chat(users: int = 80, duration: int = 120, warmup: int = 0) -> tuple[ChatRun, list]:
    """A 10 s ramp (rooms fill over 2.5 s: the first broadcasts reach part of a room)."""
    load = ChatLoad(users=users, workers=2, spawn_rate=8.0, run="t")
    run = ChatRun(load, duration, RowPolicyConfig(), warmup_s=warmup)
    return run, list(run.seconds())


def test_chat_counts_are_the_loads_real_event_counts() -> None:
    run, seconds = _chat()
    load = run.load
    assert [s for s, _ in seconds] == list(range(load.start, load.start + 120))
    # warm-up at least ramp (10 s) + the first ping (25 s) + 2, a window of two pings (50 s), the
    # second after it (its late receipts), the last second; the rest (87-118) served
    assert (run.warmup_s, run.template_s) == (37, 50)
    assert (run.simulated_s, run.served_s) == (37 + 50 + 1 + 1, 32)
    by_step: Counter[str] = Counter()
    steady = 0
    for s, ps in seconds:
        assert len(ps) == load.workers
        if load.start + 37 <= s < load.start + 59:  # the window and the served seconds
            steady += 1
            for p in ps:
                for w in p["aggs"]:
                    by_step[from_wire(w)[0].step] += int(w[7])
    per_user_s = {k: v / (load.users * steady) for k, v in by_step.items()}
    assert per_user_s["ack"] == pytest.approx(0.5, rel=0.05)
    assert per_user_s["broadcast_send"] == pytest.approx(0.5, rel=0.05)
    assert per_user_s["broadcast_recv"] == pytest.approx(5.0, rel=0.05)  # rooms of 10, sender included
    assert per_user_s["ping"] == pytest.approx(1 / 25, rel=0.05)
    assert {"handshake", "connect", "join"}.isdisjoint(by_step)  # no start repeated in served seconds


def test_chat_every_user_starts_once_and_ends_once() -> None:
    _run, seconds = _chat()
    steps: Counter[str] = Counter()
    for _s, ps in seconds:
        for p in ps:
            for w in p["aggs"]:
                steps[w[1]] += int(w[7])
    assert steps["handshake"] == steps["connect"] == steps["join"] == steps["disconnect"] == 80


def test_served_seconds_never_repeat_a_message_id_and_every_send_gets_its_rooms_receipts() -> None:
    """Every send gets one receipt per room member joined before it (the join rows are always
    kept), during the ramp too and across the window's edges: a receipt that comes a second after
    its send is neither lost nor counted twice where served seconds meet simulated ones."""
    _run, seconds = _chat()
    sent: dict[str, tuple[str, float]] = {}
    joins: dict[str, list[float]] = {}
    receipts: Counter[str] = Counter()
    for s, ps in seconds:
        for p in ps:
            ids = [m for m, _room, _ts in p["sends"]]
            assert not set(sent).intersection(ids)
            sent.update((m, (room, ts)) for m, room, ts in p["sends"])
            assert all(s <= ts < s + 1 for _m, _room, ts in p["sends"])
            receipts.update(p["receipts"])
            for r in p["rows"]:
                if r[6] == "join":
                    joins.setdefault(r[14], []).append(r[0])
    assert set(receipts) <= set(sent)
    assert sorted(len(v) for v in joins.values()) == [10] * 8
    expected = {m: sum(1 for j in joins[room] if j <= ts) for m, (room, ts) in sent.items()}
    assert {m: receipts[m] for m in sent} == expected
    assert sum(1 for n in expected.values() if n < 10) > 0  # the ramp is in it
    assert len(sent) == pytest.approx(0.5 * 80 * 114, rel=0.03)


def test_policy_counts_grow_in_served_seconds_and_end_at_every_step_judged() -> None:
    _run, seconds = _chat()
    for k in range(2):
        kept = [ps[k]["policy"]["kept"] for _s, ps in seconds]
        out = [ps[k]["policy"]["sampled_out"] for _s, ps in seconds]
        assert kept == sorted(kept) and out == sorted(out)
        assert out[-1] > out[100] > out[40] > 0
        steps = sum(events_in(ps[k]) for _s, ps in seconds)
        rows = sum(len(ps[k]["rows"]) for _s, ps in seconds)
        assert sum(seconds[-1][1][k]["policy"].values()) == steps  # each step kept or not, once
        assert rows == pytest.approx(kept[-1], rel=0.01)  # the kept rows shipped (served: the window's)


def test_storm_is_failures_with_the_failure_rows_budgeted() -> None:
    load = ChatLoad(users=4000, workers=2, run="storm")
    policy = RowPolicyConfig(failure_rows_per_s=50)
    failed = ok = kept_failures = 0
    over = 0
    for _s, ps in storm_seconds(load, 8, policy):
        for p in ps:
            for w in p["aggs"]:
                if w[5]:
                    ok += int(w[7])
                    assert w[1] in ("handshake", "node_switch")
                else:
                    failed += int(w[7])
                    assert w[6] == "session_unknown"
            kept_failures += sum(1 for r in p["rows"] if not r[11])
            over = max(over, p["policy"]["failures_over_budget"])
    assert failed == pytest.approx(1.5 * ok, rel=0.01)  # 3 failed and 2 ok steps per attempt
    assert ok >= 2 * 4000 * 2  # every user tries at least twice in 8 s (backoff 0.5-1.5 s, then 1-3 s)
    assert over > 0 and kept_failures < failed


def test_quick_mode_prints_the_figures(tmp_path: Path) -> None:
    """The quick run in-process, without the report (its child process is the slow test's)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = bench.measure(ChatLoad(users=400, workers=4, spawn_rate=100.0, run="q"), 100, 0, 5, tmp_path,
                           with_report=False, quick=True)
    assert rc == 0
    doc = json.loads(out.getvalue().strip().splitlines()[-1])
    for k in KEYS:
        assert k in doc
    assert doc["report_s"] is None and doc["report_peak_rss_mb"] is None
    assert doc["master_events_per_s"] > 1000 and doc["storm_master_events_per_s"] > 1000
    assert 0 < doc["record_us_per_event"] < 1000
    chat = doc["chat"]
    # warm-up 4 s ramp + 25 + 2, window 50, the second after it, the last one; 81-98 served
    assert (chat["seconds"], chat["simulated_seconds"], chat["served_seconds"]) == (100, 31 + 50 + 1 + 1, 18)
    assert chat["events"] == pytest.approx(400 * 6.04 * 97, rel=0.03)  # after the 4 s ramp
    assert (tmp_path / "runs" / "chat" / "events.parquet").exists()
    assert doc["event_file_bytes"] == sum(v for k, v in doc["files"].items() if k.endswith((".parquet", ".arrows")))
    assert doc["bytes_per_user_hour"] == round(doc["event_file_bytes"] / 400 / (100 / 3600))


@pytest.mark.slow
def test_quick_mode_reports(tmp_path: Path) -> None:
    """`python -m benchmarks.eventlog --quick`: the last line has every figure, the report ran."""
    import subprocess
    import sys

    root = Path(bench.__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-m", "benchmarks.eventlog", "--quick", "--keep", str(tmp_path)], cwd=root,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    for k in KEYS:
        assert k in doc
    assert doc["report_exit"] == 0, doc["report_tail"]
    assert 0 < doc["report_s"] < 60 and 0 < doc["report_peak_rss_mb"] < 4096
    assert (tmp_path / "report" / "summary.json").exists()


def test_events_in_sums_cell_counts() -> None:
    assert events_in({"aggs": [[0, "ack", "ack", "n1", "websocket", 1, "", 3, 3, 1.0, 0.1, 0.5, 0.0, [1, 3]],
                               [0, "ping", "ping", "n1", "websocket", 1, "", 2, 2, 1.0, 0.1, 0.5, 0.0, [1, 2]]]}) == 5
