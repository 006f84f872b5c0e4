"""The event-log writer and the master/worker batch plumbing, without sockets or processes.

The run directory holds Arrow IPC streams while the run goes (read back with analysis.runfiles,
which reads a stream up to its last complete batch). Runner objects are made with `object.__new__` so that the real isinstance checks pick the
worker/master code paths without opening ZeroMQ sockets; messages are handed over by hand.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
from locust.runners import STATE_MISSING, STATE_RUNNING, MasterRunner, WorkerRunner

from analysis.runfiles import read_aggregates, read_rows
from contract.rowpolicy import RowPolicyConfig
from contract.rows import COLUMNS, make_row
from locustfiles.sio import eventlog, webui
from locustfiles.sio.producer import Producer


def _env(run_dir: Path | None, runner=None, run_name: str = ""):
    opts = SimpleNamespace(sio_run_dir=str(run_dir) if run_dir else "", sio_run_name=run_name, num_users=3)
    return SimpleNamespace(parsed_options=opts, runner=runner)


def _read(run_dir: Path) -> list[dict]:
    """Kept rows as dicts of plain values (the stream, or the Parquet file after the end)."""
    df = read_rows(run_dir)
    return [{k: (str(v) if k in ("run", "worker", "user", "step", "node", "error_kind") else v)
             for k, v in r.items()} for r in df.to_dict("records")]


def test_local_flush_writes_stream_batches_and_fills_run(tmp_path: Path) -> None:
    env = _env(tmp_path / "run7")
    eventlog.record(env, make_row("connect", user="u1", node="n1", latency_ms=3.5))
    eventlog.flush(env)
    eventlog.record(env, make_row("ack", user="u1", latency_ms=None))
    eventlog.flush(env)
    assert not (tmp_path / "run7" / "events.csv").exists()
    rows = _read(tmp_path / "run7")
    assert [r["step"] for r in rows] == ["connect", "ack"]
    assert {r["run"] for r in rows} == {"run7"}
    assert {r["worker"] for r in rows} == {"local"}
    assert rows[0]["latency_ms"] == 3.5 and rows[1]["latency_ms"] != rows[1]["latency_ms"]  # NaN: none
    agg = read_aggregates(tmp_path / "run7")
    assert sorted(agg["step"].astype(str)) == ["ack", "connect"] and agg["count"].sum() == 2
    # the live aggregate saw the same steps
    assert eventlog.live_stats(env).totals["rows"] == 2


def test_run_name_option_wins_and_callers_values_are_kept(tmp_path: Path) -> None:
    env = _env(tmp_path / "d", run_name="named")
    eventlog.record(env, make_row("ack", run="mine", worker="w9"))
    eventlog.record(env, make_row("ack"))
    eventlog.flush(env)
    rows = _read(tmp_path / "d")
    assert [(r["run"], r["worker"]) for r in rows] == [("mine", "w9"), ("named", "local")]


def test_no_run_dir_writes_nothing_but_still_aggregates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = _env(None)
    eventlog.record(env, make_row("connect", user="u", node="n2"))
    eventlog.flush(env)
    eventlog.write_stats(env)
    assert list(tmp_path.iterdir()) == []
    assert eventlog.stats(env)["nodes"] == [{"node": "n2", "connected_now": 1, "connects_total": 1}]


def test_background_flusher_writes_within_a_second(tmp_path: Path) -> None:
    env = _env(tmp_path)
    g = gevent.spawn(eventlog._flusher, env)
    try:
        eventlog.record(env, make_row("ack", user="u"))
        t0 = time.monotonic()
        path = tmp_path / "aggregates.arrows"
        while not (path.exists() and path.stat().st_size and read_aggregates(tmp_path)["count"].sum() == 1):
            assert time.monotonic() - t0 < eventlog.FLUSH_INTERVAL_S + 0.5, "step not on disk within a flush"
            gevent.sleep(0.02)
    finally:
        g.kill()


def test_unwritable_run_dir_keeps_rows_and_does_not_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = _env(blocker / "sub")  # a directory below a regular file cannot be created
    eventlog.record(env, make_row("ack"))
    eventlog.flush(env)
    st = eventlog._state(env)
    assert len(st.to_write) == 1 and sum(c.count for c in st.file_agg.cells.values()) == 1  # kept for a retry
    eventlog.flush(env)
    assert len(st.to_write) == 1 and sum(c.count for c in st.file_agg.cells.values()) == 1  # not doubled


def _worker_env(sent: list) -> SimpleNamespace:
    runner = object.__new__(WorkerRunner)
    runner.greenlet = None  # Runner.__del__ looks at it
    runner.client_id = "w-A"
    runner.state = STATE_RUNNING
    runner.send_message = lambda t, data=None, client_id=None: sent.append((t, data))
    return _env(None, runner=runner)


def _master_env(run_dir: Path, clients: dict) -> SimpleNamespace:
    runner = object.__new__(MasterRunner)
    runner.greenlet = None
    runner.clients = clients
    runner.send_message = lambda *a, **k: None
    return _env(run_dir, runner=runner)


def test_worker_ships_one_batch_with_its_id_and_sequence() -> None:
    sent: list = []
    env = _worker_env(sent)
    eventlog.record(env, make_row("ack", user="u", latency_ms=2.0))
    eventlog.record(env, make_row("ack", user="u", worker="explicit"))
    eventlog.flush(env)
    eventlog.flush(env, final=True)
    assert [t for t, _ in sent] == [eventlog.MSG_BATCH, eventlog.MSG_BATCH]
    first, last = sent[0][1], sent[1][1]
    assert set(first) == {"v", "seq", "final", "dropped", "sent", "cpu", "aggs", "rows", "sends", "receipts",
                          "policy", "recovery"}
    assert first["v"] == 2 and first["seq"] == 0 and last["seq"] == 1 and last["final"] and last["rows"] == []
    assert [dict(zip(COLUMNS, v, strict=True))["worker"] for v in first["rows"]] == ["w-A", "explicit"]
    assert sum(a[7] for a in first["aggs"]) == 2 and last["aggs"] == []


def test_worker_keeps_rows_when_master_unreachable() -> None:
    env = _worker_env([])

    def boom(*_a, **_k) -> None:
        raise OSError("master gone")

    env.runner.send_message = boom
    eventlog.record(env, make_row("ack"))
    eventlog.flush(env)
    eventlog.record(env, make_row("ack"))
    eventlog.flush(env)
    st = eventlog._state(env)
    assert st.unsent is not None and len(st.unsent["rows"]) == 2 and st.seq == 0
    sent: list = []
    env.runner.send_message = lambda t, data=None, client_id=None: sent.append(data)
    eventlog.flush(env)
    assert st.unsent is None and [d["seq"] for d in sent] == [0]
    assert sum(a[7] for a in sent[0]["aggs"]) == 2 and len(sent[0]["rows"]) == 2


def test_master_writes_every_workers_rows_and_reports_gaps_and_missing(tmp_path: Path) -> None:
    sent_a: list = []
    sent_b: list = []
    wa, wb = _worker_env(sent_a), _worker_env(sent_b)
    wb.runner.client_id = "w-B"
    for i in range(5):
        eventlog.record(wa, make_row("ack", user=f"a{i}"))
    for i in range(3):
        eventlog.record(wb, make_row("poll", user=f"b{i}", ok=0, error_kind="session_unknown"))
    eventlog.flush(wa)
    eventlog.flush(wb)
    eventlog.flush(wb)  # seq 1, empty: this batch is "lost" below
    eventlog.record(wb, make_row("ack", user="b9"))
    eventlog.flush(wb)  # seq 2
    clients = {"w-A": SimpleNamespace(id="w-A", state=STATE_RUNNING),
               "w-B": SimpleNamespace(id="w-B", state=STATE_MISSING)}
    master = _master_env(tmp_path, clients)
    for node, batches in (("w-A", sent_a), ("w-B", [sent_b[0], sent_b[2]])):
        for _t, data in batches:
            eventlog._on_batch(master, SimpleNamespace(node_id=node, data=data))
    eventlog.flush(master)
    rows = _read(tmp_path)
    assert len(rows) == 9
    assert sorted(r["user"] for r in rows if r["worker"] == "w-B") == ["b0", "b1", "b2", "b9"]
    s = eventlog.stats(master)
    workers = {w["id"]: w for w in s["workers"]}
    assert workers["w-A"]["rows"] == 5 and workers["w-A"]["status"] == "ok"
    assert workers["w-B"]["status"] == "missing" and workers["w-B"]["lost_batches"] == 1
    assert [w["id"] for w in s["missing_workers"]] == ["w-B"]
    assert s["totals"]["failures"] == 3


def test_master_skips_malformed_rows(tmp_path: Path) -> None:
    master = _master_env(tmp_path, {})
    eventlog._on_batch(master, SimpleNamespace(node_id="w", data={"v": 2, "seq": 0, "rows": [[1, 2, 3]]}))
    eventlog._on_batch(master, SimpleNamespace(node_id="w", data=None))
    eventlog.flush(master)
    assert not (tmp_path / "events.arrows").exists() and not (tmp_path / "aggregates.arrows").exists()
    assert eventlog._state(master).malformed == {"rows": 1, "payload": 1}


def test_master_refuses_a_payload_without_version_the_old_row_message(tmp_path: Path) -> None:
    """The old `sio_rows` message ({"seq", "rows"}, no "v") is no longer a way in: refused whole, counted
    as `version`; its seq is not taken, so the worker's next v2 batch of that seq is ingested."""
    master = _master_env(tmp_path, {})
    p = Producer(RowPolicyConfig(log_all=True))
    p.add(make_row("connect", user="u1", eio_sid="s1", node="n1"))
    good = eventlog.payload_of(p, seq=0)
    eventlog._on_batch(master, SimpleNamespace(node_id="w", data={k: good[k] for k in ("seq", "rows")}))
    eventlog._on_batch(master, SimpleNamespace(node_id="w", data={**good, "v": 1}))
    st = eventlog._state(master)
    assert st.malformed == {"version": 2} and st.to_write == [] and "w" not in st.workers
    assert eventlog.stats(master)["totals"]["rows"] == 0
    eventlog._on_batch(master, SimpleNamespace(node_id="w", data=good))
    eventlog.flush(master)
    assert [r["user"] for r in _read(tmp_path)] == ["u1"] and st.malformed == {"version": 2}
    assert eventlog.stats(master)["totals"]["rows"] == 1


def test_meta_json_minimal_then_completed(tmp_path: Path) -> None:
    env = _env(tmp_path / "r")
    st = eventlog._state(env)
    st.started = 100.0
    eventlog._write_meta(st, final=False)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["status"] == "running" and meta["run"] == "r" and meta["versions"]["locust"]
    st.ended = 200.0
    eventlog._write_meta(st, final=True)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["status"] == "ok" and meta["ended"] == 200.0 and meta["locust"]["options"]["num_users"] == 3


def test_meta_json_uses_the_runners_versions_machine_and_atomic_writer(tmp_path: Path) -> None:
    """One version lookup and one atomic JSON writer for `sioscale run` and the Locust side."""
    from contract import environment, jsonfile
    from sioscale import runner
    env = _env(tmp_path / "r")
    eventlog._write_meta(eventlog._state(env), final=False)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["versions"] == environment.package_versions()
    assert meta["machine"]["cpus"] == environment.machine()["cpus"]
    assert eventlog.write_json is jsonfile.write_json is runner.write_json
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["meta.json"]  # no temporary file left


def test_existing_meta_json_is_never_touched_its_locust_block_goes_to_sio_stats(tmp_path: Path) -> None:
    """One writer per file: `sioscale run` writes meta.json; the event log's `locust` block goes to its own
    sio_stats.json (final write), from where the runner copies it into meta.json."""
    from contract import status as run_status
    from sioscale import runner
    before = {"schema": 1, "run": "x", "status": "running", "config": {"a": 1}}
    (tmp_path / "meta.json").write_text(json.dumps(before))
    env = _env(tmp_path)
    st = eventlog._state(env)
    eventlog._write_meta(st, final=False)
    eventlog.write_stats(env)
    assert "locust" not in json.loads((tmp_path / "sio_stats.json").read_text())
    eventlog.write_stats(env, final=True)
    eventlog._write_meta(st, final=True)
    assert json.loads((tmp_path / "meta.json").read_text()) == before
    block = json.loads((tmp_path / "sio_stats.json").read_text())["locust"]
    assert block["options"]["num_users"] == 3 and "eventlog" in block and "generator_cpu" in block
    meta = runner._final_meta(tmp_path, dict(before), run_status.RunStatus())
    on_disk = json.loads((tmp_path / "meta.json").read_text())
    assert on_disk == meta and on_disk["locust"] == block and on_disk["config"] == {"a": 1}


def test_broken_meta_json_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{not json")
    env = _env(tmp_path)
    eventlog._write_meta(eventlog._state(env), final=True)
    assert (tmp_path / "meta.json").read_text() == "{not json"


def test_sio_stats_json_and_tab_rows_carry_the_same_numbers(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for i in range(4):
        eventlog.record(env, make_row("connect", user=f"u{i}", eio_sid=f"s{i}", node=f"n{i % 2 + 1}"))
    eventlog.record(env, make_row("poll", user="u0", ok=0, error_kind="session_unknown"))
    eventlog.flush(env)
    eventlog.write_stats(env)
    on_disk = json.loads((tmp_path / "sio_stats.json").read_text())
    assert on_disk["totals"]["connected_now"] == 4
    rows = webui.table_rows(on_disk)
    by = {(r["section"], r["metric"]): r["value"] for r in rows}
    assert by[("Totals", "connected now")] == "4"
    assert by[("Node", "n1")] == "2" and by[("Node", "n2")] == "2"
    assert by[("Failures", "poll × session_unknown")] == "1"
    assert webui.to_csv(rows).splitlines()[0] == "section,metric,value,detail"


def test_master_flags_user_ids_seen_on_two_workers(tmp_path: Path) -> None:
    master = _master_env(tmp_path, {})
    for wid in ("w1", "w2"):
        p = Producer(RowPolicyConfig(log_all=True))
        p.add(make_row("ack", user="u-1", worker=wid))
        eventlog._on_batch(master, SimpleNamespace(node_id=wid, data=eventlog.payload_of(p, seq=0)))
    s = eventlog.stats(master)
    assert s["colliding_user_ids"] == ["u-1"] and s["colliding_user_count"] == 1
    assert ("Totals", "user ids seen on two workers") in {(r["section"], r["metric"]) for r in webui.table_rows(s)}
