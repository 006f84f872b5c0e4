"""The event log's master/file side under hostile or failing conditions (review of issue 11):
a bad value costs only itself, timestamps from the future never reach the live stats or the
files, a failed write keeps its data, a stream stays readable after a failed write, an earlier
run's files never win, quitting writes every file it can, and the buffers stay bounded with
their counts exact. Every test names the review item it covers; each failed before its fix.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from locust.runners import STATE_RUNNING, MasterRunner, WorkerRunner

from analysis.runfiles import read_aggregates, read_rows
from contract.rows import COLUMNS, make_row
from locustfiles.sio import eventlog, runfiles

NOW = time.time()
T0 = float(int(NOW) - 600)  # ten minutes ago: well inside the master's clock


def _opts(run_dir: Path | None, **kw: Any) -> SimpleNamespace:
    return SimpleNamespace(sio_run_dir=str(run_dir) if run_dir else "", sio_run_name="r", **kw)


def _master(run_dir: Path | None) -> SimpleNamespace:
    runner = object.__new__(MasterRunner)
    runner.greenlet = None
    runner.clients = {}
    runner.send_message = lambda *a, **k: None
    return SimpleNamespace(parsed_options=_opts(run_dir), runner=runner)


def _local(run_dir: Path | None) -> SimpleNamespace:
    return SimpleNamespace(parsed_options=_opts(run_dir), runner=None)


def _worker(sent: list, **opts: Any) -> SimpleNamespace:
    runner = object.__new__(WorkerRunner)
    runner.greenlet = None
    runner.client_id = "w0"
    runner.state = STATE_RUNNING
    runner.send_message = lambda t, data=None, client_id=None: sent.append(data)
    return SimpleNamespace(parsed_options=_opts(None, **opts), runner=runner)


def _cell(second: float, step: str = "ack", count: int = 2, max_ts: float | None = None) -> list[Any]:
    return [second, step, step, "n1", "websocket", 1, "", count, 0, 0.0, None, None,
            (second + 0.5) if max_ts is None else max_ts, []]


def _row(step: str, **kw: Any) -> list[Any]:
    r = make_row(step, **kw)
    return [r[c] for c in COLUMNS]


# -- 2.1: a bad value costs only itself ------------------------------------------------------
def test_an_inf_or_nan_anywhere_costs_only_its_item_and_is_counted() -> None:
    """Review 2.1: int(float('inf')) is an OverflowError, caught nowhere: the whole batch was lost."""
    master = _master(None)
    inf, nan = float("inf"), float("nan")
    eventlog.ingest_batch(master, "w", {
        "v": 2, "seq": 0,
        "aggs": [_cell(inf), _cell(T0, count=3), [T0, "ack", "ack", "", "", 1, "", inf, 0, 0.0, None, None, T0, []]],
        "rows": [_row("connect", ts=T0, user="u1", eio_sid="s1", node="n1"), _row("ack", ts=nan, user="u1"),
                 _row("ack", ts=inf, user="u1", latency_ms=1.0)],
        "sends": [["m1", "r", inf], ["m2", "r", T0 + 1], ["m3", "r", "x"]],
        "receipts": {"m2": 2, "m4": inf, "m5": 2**60},
        "policy": {"kept": inf}})
    st = eventlog._state(master)
    s = eventlog.stats(master)
    assert s["totals"]["rows"] == 3 and len(st.live.open_sessions) == 1
    assert len(st.to_write) == 1 and set(st.live.ledger.pending) == {"m2"} and st.live.ledger.live_sends == 1
    assert st.malformed == {"aggs": 2, "rows": 2, "sends": 2, "receipts": 2, "policy": 1}
    eventlog.ingest_batch(master, "w2", {"v": 2, "seq": inf, "aggs": [_cell(T0, count=5)]})  # an inf seq
    assert eventlog.stats(master, now=NOW + 5)["totals"]["rows"] == 8 and st.malformed["seq"] == 1


def test_a_part_that_raises_is_counted_and_the_other_parts_still_count(monkeypatch: pytest.MonkeyPatch) -> None:
    master = _master(None)
    st = eventlog._state(master)

    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("a bug in one part")

    monkeypatch.setattr(st.live, "set_policy", boom)
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 0, "aggs": [_cell(T0)], "policy": {"kept": 1},
                                        "rows": [_row("connect", ts=T0, user="u", eio_sid="s", node="n1")]})
    assert st.live.totals["rows"] == 2 and len(st.to_write) == 1 and st.malformed == {"policy": 1}


# -- 1.1: nothing from the future ------------------------------------------------------------
def test_timestamps_from_the_future_are_dropped_and_delivery_still_counts() -> None:
    """Review 1.1: one row dated 1e6 s ahead settled every later send as late (sends_counted 0)."""
    master = _master(None)
    st = eventlog._state(master)
    joins = [_row("join", ts=T0, user=f"u{i}", room="r", eio_sid=f"s{i}") for i in range(3)]
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 0, "rows": joins, "aggs": [_cell(T0, "join", 3)]}, now=NOW)
    future = NOW + 1e6
    eventlog.ingest_batch(master, "w", {
        "v": 2, "seq": 1, "rows": [_row("ping", ts=future, user="u0")],
        "aggs": [_cell(int(future), "ping", 1), _cell(T0, "ping", 1, max_ts=future)],
        "sends": [["late", "r", NOW + 11]]}, now=NOW)
    sends = [[f"m{i}", "r", T0 + 10 + i] for i in range(5)]
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 2, "sends": sends, "receipts": {f"m{i}": 3 for i in range(5)},
                                        "aggs": [_cell(T0 + 10, "broadcast_send", 5), _cell(T0 + 100, "ping", 1)]},
                            now=NOW)
    assert st.malformed == {"rows": 1, "aggs": 2, "sends": 1}
    assert st.live.max_ts < NOW and st.live.ledger.max_ts < NOW
    st.live.tick(force=True)
    d = eventlog.stats(master, now=NOW + 1)["delivery"]
    assert (d["sends_counted"], d["expected"], d["delivered"]) == (5, 15, 15) and st.live.ledger.late == 0
    assert eventlog.FUTURE_SLACK_S == 10.0
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 3, "aggs": [_cell(int(NOW + 5), "ping", 1)]}, now=NOW)
    assert st.malformed["aggs"] == 2  # a few seconds of clock skew are taken


# -- 3.2: duplicate batches, bounded buffers --------------------------------------------------
def test_a_batch_sent_twice_counts_once_and_is_counted_as_a_duplicate() -> None:
    master = _master(None)
    payload = {"v": 2, "seq": 4, "aggs": [_cell(T0)], "sends": [["m", "r", T0]], "receipts": {"m": 1}}
    eventlog.ingest_batch(master, "w", json.loads(json.dumps(payload)))
    eventlog.ingest_batch(master, "w", json.loads(json.dumps(payload)))
    st = eventlog._state(master)
    assert st.live.totals["rows"] == 2 and st.live.ledger.live_sends == 1 and st.live.ledger.late == 0
    assert st.malformed == {"duplicate_batch": 1} and st.workers["w"].duplicates == 1
    assert eventlog.stats(master)["malformed_batch_parts"] == {"duplicate_batch": 1}


def test_an_unreachable_master_merges_cells_by_key_and_drops_sampled_rows_before_state_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 3.2: cells were appended per failed ship; rows beyond MAX_BUFFER were cut oldest first,
    state rows included (a lost connect makes a session the analysis never sees)."""
    monkeypatch.setattr(eventlog, "MAX_BUFFER", 6)
    sent: list = []
    env = _worker(sent, sio_log_all=True)
    ok_send = env.runner.send_message

    def gone(*_a: Any, **_k: Any) -> None:
        raise OSError("master gone")

    env.runner.send_message = gone
    for i in range(3):
        eventlog.record(env, make_row("connect", ts=T0 + i, user=f"u{i}", eio_sid=f"s{i}", node="n1"))
    for _k in range(4):  # four failed ships, each with acks in the same second (one key)
        for _ in range(2):
            eventlog.record(env, make_row("ack", ts=T0 + 0.5, user="u0", latency_ms=1.0))
        eventlog.flush(env)
    env.runner.send_message = ok_send
    eventlog.flush(env)
    (data,) = sent
    assert sum(a[7] for a in data["aggs"]) == 11 and len(data["aggs"]) == 4  # 3 connect seconds, 1 ack cell
    steps = [r[COLUMNS.index("step")] for r in data["rows"]]
    assert steps.count("connect") == 3 and len(steps) == 6 and data["dropped"] == 5


def test_trim_rows_drops_sampled_and_failure_rows_before_state_rows() -> None:
    from locustfiles.sio.logstate import trim_rows

    rows = [_row("ack", ts=T0, user="u"), _row("connect", ts=T0, user="u", eio_sid="s"), _row("ack", ts=T0 + 1),
            _row("leave", ts=T0 + 2, user="u", room="r", ok=0), _row("ping", ts=T0 + 3, ok=0)]
    assert trim_rows(rows, 3) == 2
    assert [r[COLUMNS.index("step")] for r in rows] == ["connect", "leave", "ping"]
    rows = [_row("connect", ts=T0 + i, user=f"u{i}", eio_sid="s") for i in range(4)]
    assert trim_rows(rows, 2) == 2 and [r[0] for r in rows] == [T0 + 2, T0 + 3]  # state rows alone: oldest go


def test_rows_a_failing_disk_keeps_stay_bounded_state_rows_last(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from locustfiles.sio import writer

    monkeypatch.setattr(writer, "MAX_BUFFER", 2)

    def full(*_a: Any, **_k: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runfiles.RunFiles, "write", full)
    master = _master(tmp_path)
    rows = [_row("ack", ts=T0, user="u"), _row("connect", ts=T0, user="u", eio_sid="s", node="n1"),
            _row("ack", ts=T0 + 1, user="u"), _row("ack", ts=T0 + 2, user="u")]
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 0, "rows": rows, "aggs": [_cell(T0, count=4)]})
    eventlog.flush(master)
    eventlog.flush(master)
    st = eventlog._state(master)
    assert [r[COLUMNS.index("step")] for r in st.to_write] == ["connect", "ack"] and st.dropped == 2
    assert sum(c.count for c in st.file_agg.cells.values()) == 4  # cells are kept whole (merged by key)
    assert eventlog.stats(master)["dropped_rows"] == 2


# -- 2.2: a failed write keeps everything ----------------------------------------------------
def test_any_write_error_keeps_rows_and_cells_and_logs_once_per_10_s(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Review 2.2: only OSError was caught; an ArrowInvalid/OverflowError lost that flush's cells."""
    master = _master(tmp_path)
    real = runfiles.RunFiles.write
    fail = {"n": 2}

    def flaky(self: runfiles.RunFiles, kind: str, rows: Any) -> None:
        if kind == "aggregates" and fail["n"]:
            fail["n"] -= 1
            raise OverflowError("int too big to convert")
        real(self, kind, rows)

    monkeypatch.setattr(runfiles.RunFiles, "write", flaky)
    caplog.set_level(logging.ERROR)
    for s in range(3):
        eventlog.ingest_batch(master, "w", {"v": 2, "seq": s, "aggs": [_cell(T0 + s, count=2)],
                                            "rows": [_row("ack", ts=T0 + s, user="u")]})
        eventlog.flush(master)
    st = eventlog._state(master)
    assert sum("cannot write the event files" in r.message for r in caplog.records) == 1
    assert st.events_written == 6 and st.rows_written == 3 and not st.to_write and not st.file_agg.cells
    eventlog._finish_files(st)
    assert int(read_aggregates(tmp_path)["count"].sum()) == 6 and len(read_rows(tmp_path)) == 3


# -- 2.4: a failed write leaves the stream whole; compaction checks it ------------------------
def test_a_write_cut_halfway_is_taken_back_and_later_batches_read(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """Review 2.4: after ENOSPC halfway through a batch, the retry appended after broken bytes:
    readers stopped there and compact() wrote a truncated Parquet file and deleted the stream."""
    import os

    f = runfiles.RunFiles(tmp_path)
    real_write = os.write
    state = {"cut": False}

    def enospc_once(fd: int, data: Any) -> int:
        if state["cut"]:
            state["cut"] = False
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(runfiles.os, "write", enospc_once)
    f.write("events", [_row("ack", ts=T0, user="u")])
    state["cut"] = True
    with pytest.raises(OSError):
        f.write("events", [_row("ack", ts=T0 + 1, user="u")])
    f.write("events", [_row("ack", ts=T0 + 1, user="u")])  # the caller's retry
    f.write("events", [_row("ack", ts=T0 + 2, user="u")])
    assert runfiles.read_stream(f.path("events")).column("ts").to_pylist() == [T0, T0 + 1, T0 + 2]
    assert f.compact() == {"events": 3} and list(read_rows(tmp_path)["ts"]) == [T0, T0 + 1, T0 + 2]


def test_compact_keeps_a_stream_that_reads_back_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = runfiles.RunFiles(tmp_path)
    for i in range(3):
        f.write("events", [_row("ack", ts=T0 + i, user="u")])
    size = f.path("events").stat().st_size
    os_truncate = __import__("os").truncate
    os_truncate(f.path("events"), size - 10)  # something cut the last batch
    caplog.set_level(logging.ERROR)
    assert f.compact() == {}
    assert f.path("events").exists() and not f.path("events", final=True).exists()
    assert any("reads back 2 rows of the 3 written" in r.message for r in caplog.records)


def test_a_kind_whose_compaction_raises_anything_keeps_its_stream_and_eventlog_json_says_so(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Review 3.2: a ValueError from _compact_aggregates escaped compact(); eventlog.json then named no
    Parquet file, even for the kinds already compacted."""
    master = _master(tmp_path)
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 0, "aggs": [_cell(T0)],
                                        "rows": [_row("connect", ts=T0, user="u", eio_sid="s", node="n1")]})
    eventlog.flush(master)

    def bad(_t: Any) -> Any:
        raise ValueError("histogram lists of different lengths")

    monkeypatch.setitem(runfiles._COMPACT, "aggregates", bad)
    eventlog._finish_files(eventlog._state(master))
    doc = json.loads((tmp_path / "eventlog.json").read_text())
    assert doc["files"] == {"events": "events.parquet", "aggregates": "aggregates.arrows"}
    assert doc["compacted"] == ["events"]


# -- 2.5: an earlier run's files never win --------------------------------------------------
def test_an_earlier_run_s_event_files_are_removed_when_this_run_opens_its_streams(tmp_path: Path) -> None:
    for name in ("events.parquet", "aggregates.parquet", "delivery.parquet", "delivery.arrows",
                 ".events.parquet.tmp"):
        (tmp_path / name).write_bytes(b"old run")
    master = _master(tmp_path)
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 0, "aggs": [_cell(T0)]})
    eventlog.flush(master)
    left = {p.name for p in tmp_path.iterdir()} - {"sio_stats.json"}  # (written by the flush's clock)
    assert left == {"aggregates.arrows", "eventlog.json"}
    eventlog._finish_files(eventlog._state(master))
    assert not (tmp_path / "events.parquet").exists()  # this run kept no row: no events file at all
    assert json.loads((tmp_path / "eventlog.json").read_text())["files"] == {"aggregates": "aggregates.parquet"}


# -- 2.3: quitting writes every file it can ---------------------------------------------------
def test_at_quitting_a_failing_stats_file_does_not_leave_meta_json_running(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    env = _local(tmp_path)
    eventlog.record(env, make_row("connect", ts=T0, user="u", eio_sid="s", node="n1"))

    def broken(*_a: Any, **_k: Any) -> Any:
        raise OverflowError("a histogram that cannot be read")

    monkeypatch.setattr(eventlog, "stats", broken)
    eventlog._on_quitting(env)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "degraded" and meta["ended"] is not None
    assert (tmp_path / "events.parquet").exists()


def test_at_quitting_a_failing_meta_json_does_not_skip_the_stats_file(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    env = _local(tmp_path)
    eventlog.record(env, make_row("connect", ts=T0, user="u", eio_sid="s", node="n1"))

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(eventlog, "_finish_files", broken)
    monkeypatch.setattr(eventlog, "_write_meta", broken)
    eventlog._on_quitting(env)
    assert "locust" in json.loads((tmp_path / "sio_stats.json").read_text())


# -- 3.2: late rows counted for the whole run -----------------------------------------------
def test_eventlog_json_counts_late_rows_over_the_run_whatever_the_web_ui_resets(tmp_path: Path) -> None:
    master = _master(tmp_path)
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 0, "sends": [["m", "r", T0]]})
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 1, "sends": [["m", "r", T0]]})  # a duplicate send: late
    eventlog.live_stats(master).reset(NOW)
    eventlog.ingest_batch(master, "w", {"v": 2, "seq": 2, "sends": [["m", "r", T0]]})
    eventlog.flush(master)
    eventlog._finish_files(eventlog._state(master))
    doc = json.loads((tmp_path / "eventlog.json").read_text())
    assert doc["counts"]["late_rows_ignored"] == 2 and eventlog.stats(master)["totals"]["late_rows_ignored"] == 1
    assert math.isfinite(doc["histogram"]["relative_error"])
