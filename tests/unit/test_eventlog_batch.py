"""The v2 batch pipeline end to end without sockets: workers' record() -> sio_batch payloads ->
the master's ingest_batch -> live stats and run files (streams, then Parquet), checked against
the complete row set the workers recorded (issue 11).

Runner objects are made with `object.__new__` (as in test_eventlog.py) so the real isinstance
checks pick the worker/master paths; messages are handed over by hand, in any worker order.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from locust.rpc.protocol import Message
from locust.runners import STATE_RUNNING, MasterRunner, WorkerRunner

from analysis.runfiles import read_aggregates, read_delivery, read_rows
from contract.rowpolicy import RowPolicy, RowPolicyConfig
from contract.rows import COLUMNS, DELIVERY_GRACE_S, make_row
from locustfiles.sio import eventlog, runfiles
from locustfiles.sio.live import LiveStats

T0 = 1_700_000_000.0


def _opts(run_dir: Path | None, **kw: Any) -> SimpleNamespace:
    return SimpleNamespace(sio_run_dir=str(run_dir) if run_dir else "", sio_run_name="", **kw)


def _worker(wid: str, sent: list, **opts: Any) -> SimpleNamespace:
    runner = object.__new__(WorkerRunner)
    runner.greenlet = None
    runner.client_id = wid
    runner.state = STATE_RUNNING
    runner.send_message = lambda t, data=None, client_id=None: sent.append((wid, t, data))
    return SimpleNamespace(parsed_options=_opts(None, **opts), runner=runner)


def _master(run_dir: Path) -> SimpleNamespace:
    runner = object.__new__(MasterRunner)
    runner.greenlet = None
    runner.clients = {}
    runner.send_message = lambda *a, **k: None
    return SimpleNamespace(parsed_options=_opts(run_dir), runner=runner)


def chat_rows(seconds: int = 20, users: int = 12, room_size: int = 4) -> list[dict]:
    """A chat with known delivery: u3 never receives, u5 leaves its room at 10 s but still receives
    (not a member: must not count), u1's polls fail every second (failure rows), u7 disconnects at 15 s."""
    rows: list[dict] = []
    room = {u: f"r{u // room_size}" for u in range(users)}
    for u in range(users):
        rows.append(make_row("connect", ts=T0 + u * 0.01, user=f"u{u}", eio_sid=f"s{u}", node=f"n{u % 2}",
                             latency_ms=3.0 + u))
        rows.append(make_row("join", ts=T0 + 0.5 + u * 0.01, user=f"u{u}", room=room[u], latency_ms=1.0))
    gone: set[int] = set()
    for sec in range(1, seconds):
        for u in range(users):
            if u in gone:
                continue
            t = T0 + sec + u * 0.01
            rows.append(make_row("ack", ts=t, user=f"u{u}", name="ack:echo", node=f"n{u % 2}", latency_ms=2.0 + u))
            if u == 1:
                rows.append(make_row("poll", ts=t, user="u1", ok=0, error_kind="session_unknown", node="n9"))
            if u == 5 and sec == 10:
                rows.append(make_row("leave", ts=t + 0.001, user="u5", room=room[5]))
            if u == 7 and sec == 15:
                rows.append(make_row("disconnect", ts=t + 0.002, user="u7", eio_sid="s7"))
                gone.add(7)
                continue
            if (sec + u) % 2 == 0:
                msg = f"m-{u}-{sec}"
                rows.append(make_row("broadcast_send", ts=t + 0.003, user=f"u{u}", room=room[u], msg_id=msg))
                for v in range(users):
                    if room[v] != room[u] or v in (3, *gone):
                        continue
                    rows.append(make_row("broadcast_recv", ts=t + 0.005 + v * 1e-4, user=f"u{v}", room=room[u],
                                         msg_id=msg, latency_ms=(0.002 + v * 1e-4) * 1000, node=f"n{v % 2}"))
    rows.sort(key=lambda r: r["ts"])
    return rows


def _worker_of(user: str) -> str:
    return f"w{int(user[1:]) % 2}"


def run_pipeline(tmp_path: Path, rows: list[dict], seed: int = 1, **opts: Any) -> tuple[Any, list]:
    """Record every row at its worker, ship a batch per simulated second, deliver the batches of a
    second in a random worker order, flush the master each second; the end as at quitting."""
    sent: list = []
    workers = {w: _worker(w, sent, **opts) for w in ("w0", "w1")}
    master = _master(tmp_path)
    rng = random.Random(seed)
    by_sec: dict[int, list[dict]] = {}
    for r in rows:
        by_sec.setdefault(int(r["ts"] - T0), []).append(r)
    for sec in sorted(by_sec):
        for r in by_sec[sec]:
            eventlog.record(workers[_worker_of(r["user"])], dict(r))
        for env in rng.sample(list(workers.values()), 2):
            eventlog.flush(env)
        for wid, t, data in sent:  # through Locust's own wire encoding (msgpack), as the master gets it
            eventlog._on_batch(master, Message.unserialize(Message(t, data, wid).serialize()))
        sent.clear()
        eventlog.flush(master)
    for env in workers.values():
        eventlog.flush(env, final=True)
    for wid, _t, data in sent:
        eventlog.ingest_batch(master, wid, data)
    eventlog.flush(master)
    eventlog._finish_files(eventlog._state(master))
    return master, [eventlog._state(w) for w in workers.values()]


def test_counts_in_stats_and_files_equal_the_rows(tmp_path: Path) -> None:
    rows = chat_rows()
    master, _ws = run_pipeline(tmp_path, rows)
    steps = Counter(r["step"] for r in rows)
    s = eventlog.stats(master)
    assert s["totals"]["rows"] == len(rows)
    assert s["steps"] == dict(sorted(steps.items()))
    assert s["totals"]["failures"] == steps["poll"]
    assert s["failures"] == [{"step": "poll", "error_kind": "session_unknown", "count": steps["poll"]}]
    assert {n["node"]: n["connects_total"] for n in s["nodes"]} == {"n0": 6, "n1": 6}
    assert s["totals"]["connected_now"] == 11 and s["totals"]["users"] == 12
    agg = read_aggregates(tmp_path)
    assert not (tmp_path / "aggregates.arrows").exists() and (tmp_path / "aggregates.parquet").exists()
    by_step = agg.groupby(agg["step"].astype(str))["count"].sum().to_dict()
    assert by_step == dict(steps)
    # one row per key once compacted (the streams held a key once per flush at most)
    keys = ["second", "step", "name", "node", "transport", "ok", "error_kind"]
    assert not agg.astype({k: str for k in keys}).duplicated(keys).any()
    # latency sums are exact per step; histograms add up to the latency counts
    acks = [r for r in rows if r["step"] == "ack"]
    a = agg[agg["step"].astype(str) == "ack"]
    assert a["lat_sum_ms"].sum() == pytest.approx(sum(r["latency_ms"] for r in acks))
    assert all(int(c.sum()) == n for c, n in zip(a["hist_count"], a["lat_count"], strict=True))
    meta = json.loads((tmp_path / "eventlog.json").read_text())
    assert meta["schema_version"] == 2 and meta["final"] and meta["counts"]["events"] == len(rows)
    assert meta["files"]["aggregates"] == "aggregates.parquet"


def test_kept_rows_are_the_policys_and_state_rows_are_all_there(tmp_path: Path) -> None:
    rows = chat_rows()
    master, ws = run_pipeline(tmp_path, rows, sio_first_rows=2, sio_sample_rate=0.1, sio_failure_rows=3)
    kept = read_rows(tmp_path)
    want: list[tuple] = []
    for wid in ("w0", "w1"):  # a fresh policy over each worker's rows keeps exactly these
        p = RowPolicy(RowPolicyConfig(sample_rate=0.1, first_n=2, failure_rows_per_s=3))
        want += [(r["user"], r["step"], round(r["ts"], 6)) for r in rows if _worker_of(r["user"]) == wid and p.keep(r)]
    got = sorted(zip(kept["user"].astype(str), kept["step"].astype(str), kept["ts"].round(6), strict=True))
    assert got == sorted(want)
    assert list(kept["ts"]) == sorted(kept["ts"])  # compacted: sorted by ts
    steps = Counter(kept["step"].astype(str))
    assert steps["connect"] == steps["join"] == 12 and steps["leave"] == steps["disconnect"] == 1
    assert 0 < steps["broadcast_recv"] < sum(1 for r in rows if r["step"] == "broadcast_recv")
    el = eventlog.stats(master)["eventlog"]
    assert el["kept_rows"] == len(kept) and el["sample_rate"] == pytest.approx(eventlog.policy_config(master).sample_rate)
    assert el["kept_rows"] + el["sampled_out"] + el["failures_over_budget"] == len(rows)
    assert {w.producer.policy.config.first_n for w in ws} == {2}


@pytest.mark.parametrize("seed", range(3))
def test_delivery_files_equal_the_row_path_with_workers_in_any_order(tmp_path: Path, seed: int) -> None:
    rows = chat_rows()
    master, _ws = run_pipeline(tmp_path, rows, seed=seed)
    one = LiveStats()
    one.add_many(rows)
    want = one.delivery()
    got = eventlog.stats(master)["delivery"]
    assert (got["expected"], got["delivered"], got["sends_counted"]) == (
        want["expected"], want["delivered"], want["sends_counted"])
    d = read_delivery(tmp_path)
    assert set(d["final"]) == {1}
    assert (int(d["expected"].sum()), int(d["delivered"].sum()), int(d["sent"].sum())) == (
        want["expected"], want["delivered"], want["sends_counted"])
    assert (want["expected"], want["delivered"], want["sends_counted"]) == oracle(rows)


def oracle(rows: list[dict]) -> tuple[int, int, int]:
    """docs/contracts.md's definition by brute force: for each ok send outside the grace window,
    members(room, ts) from every user's join/leave/disconnect rows, and which of them received it."""
    end = max(r["ts"] for r in rows) - DELIVERY_GRACE_S
    got = {(r["user"], r["msg_id"]) for r in rows if r["step"] == "broadcast_recv"}
    expected = delivered = sends = 0
    for snd in rows:
        if snd["step"] != "broadcast_send" or snd["ts"] > end:
            continue
        sends += 1
        for user in {r["user"] for r in rows}:
            life = [r for r in rows if r["user"] == user and r["ts"] <= snd["ts"]
                    and (r["step"] == "disconnect" or (r["step"] in ("join", "leave") and r["room"] == snd["room"]))]
            if life and life[-1]["step"] == "join":
                expected += 1
                delivered += (user, snd["msg_id"]) in got
    return expected, delivered, sends


def test_a_payload_survives_json_and_counts_malformed_parts_without_crashing(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    master = _master(tmp_path)
    good_row = [make_row("connect", ts=T0, user="a", eio_sid="s", node="n1").get(c) for c in COLUMNS]
    cell = [int(T0), "ack", "ack", "n1", "", 1, "", 2, 2, 3.0, 1.0, 2.0, T0 + 0.5, [0, 1, 500, 1]]
    bad_cell = [*cell[:7], 2, 3, 3.0, 1.0, 2.0, T0, [0, 1]]  # histogram short of its count
    payload = {"v": 2, "seq": 0, "final": False, "dropped": 0, "sent": T0, "cpu": [[T0, 5.0, 1], ["x"]],
               "aggs": [cell, bad_cell, "nope"], "rows": [good_row, [1, 2], "x"],
               "sends": [["m", "r", T0], ["m2"], ["m3", "r", "nan"]], "receipts": {"m": 1},
               "policy": {"kept": 1, "sampled_out": 0, "failures_over_budget": 0}}
    eventlog.ingest_batch(master, "w", payload)
    eventlog.ingest_batch(master, "w", {**payload, "seq": 1, "receipts": ["no"], "policy": "x", "aggs": 3})
    eventlog.ingest_batch(master, "w", {"v": 99})
    eventlog.ingest_batch(master, "w", {k: v for k, v in payload.items() if k != "v"} | {"seq": 2})  # old sio_rows
    eventlog.ingest_batch(master, "w", "garbage")
    st = eventlog._state(master)
    assert st.malformed == {"aggs": 3, "rows": 4, "sends": 4, "receipts": 1, "policy": 1, "version": 2,
                            "payload": 1}
    s = eventlog.stats(master)
    assert s["totals"]["rows"] == 2 and s["totals"]["connects"] == 0  # one good cell (count 2); rows are state and s["totals"]["connected_now"] == 1
    assert s["malformed_batch_parts"]["rows"] == 4
    assert sum("malformed batch part (rows)" in r.message for r in caplog.records) == 1  # once per part


def test_a_worker_over_its_buffer_counts_what_it_drops_and_never_loses_counts(monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    monkeypatch.setattr(eventlog, "MAX_BUFFER", 5)
    sent: list = []
    env = _worker("w0", sent, sio_log_all=True)

    def boom(*_a: Any, **_k: Any) -> None:
        raise OSError("master gone")

    env.runner.send_message = boom
    for i in range(4):
        eventlog.record(env, make_row("ack", ts=T0 + i, user="u", latency_ms=1.0))
    eventlog.flush(env)
    for i in range(4):
        eventlog.record(env, make_row("ack", ts=T0 + 4 + i, user="u", latency_ms=1.0))
    eventlog.flush(env)
    env.runner.send_message = lambda t, data=None, client_id=None: sent.append(("w0", t, data))
    eventlog.flush(env)
    (_w, _t, data), = sent
    assert len(data["rows"]) == 5 and data["dropped"] == 3 and sum(a[7] for a in data["aggs"]) == 8
    master = _master(tmp_path)
    eventlog.ingest_batch(master, "w0", data)
    s = eventlog.stats(master)
    assert s["totals"]["rows"] == 8 and s["dropped_rows"] == 3


def test_a_stream_reads_back_to_its_last_complete_batch(tmp_path: Path) -> None:
    f = runfiles.RunFiles(tmp_path)
    sizes = []
    for i in range(3):
        f.write("events", [[make_row("ack", ts=T0 + i).get(c) for c in COLUMNS]])  # typed by make_row
        sizes.append(f.path("events").stat().st_size)
    path = f.path("events")
    with path.open("r+b") as fh:  # a SIGKILL in the middle of the third write: half a batch at the end
        fh.truncate((sizes[1] + sizes[2]) // 2)
    t = runfiles.read_stream(path)
    assert isinstance(t, pa.Table) and t.column("ts").to_pylist() == [T0, T0 + 1]
    assert list(read_rows(tmp_path)["ts"]) == [T0, T0 + 1]


def test_text_columns_of_another_type_are_written_as_text(tmp_path: Path) -> None:
    master = _master(tmp_path)
    row = [make_row("ack", ts=T0, user="a", latency_ms=1.0).get(c) for c in COLUMNS]
    row[COLUMNS.index("room")] = 5  # a worker's bug: not text
    eventlog.ingest_batch(master, "w", {"v": 2, "rows": [row]})
    eventlog.flush(master)
    assert list(read_rows(tmp_path)["room"].astype(str)) == ["5"]


def test_has_events_sees_the_schema_2_files(tmp_path: Path) -> None:
    from contract.status import has_events

    assert not has_events(tmp_path)
    (tmp_path / "aggregates.arrows").write_bytes(b"")  # created, nothing in it yet
    assert not has_events(tmp_path)
    master = _master(tmp_path)
    eventlog.ingest_batch(master, "w", {"v": 2, "aggs": [[int(T0), "ack", "ack", "", "", 1, "", 1, 0, 0.0, None,
                                                           None, T0, []]]})
    eventlog.flush(master)
    assert has_events(tmp_path)
    eventlog._finish_files(eventlog._state(master))
    assert has_events(tmp_path) and not (tmp_path / "aggregates.arrows").exists()


@pytest.mark.parametrize(("key", "value", "ok"), [("sample_rate", 0.5, True), ("sample_rate", 1, True),
                                                  ("sample_rate", 1.5, False), ("sample_rate", "x", False),
                                                  ("log_all", True, True), ("log_all", "yes", False)])
def test_campaign_load_keys_log_all_and_sample_rate(key: str, value: Any, ok: bool) -> None:
    from contract.config import ConfigError, parse_campaign

    text = f'name = "c"\n[load]\n{key} = {json.dumps(value)}\n'
    if ok:
        load = parse_campaign(text).runs()[0].load
        assert getattr(load, key) == value
    else:
        with pytest.raises(ConfigError, match=key):
            parse_campaign(text)


def test_a_kind_that_cannot_be_compacted_keeps_its_stream(tmp_path: Path) -> None:
    master = _master(tmp_path)
    row = [make_row("connect", ts=T0, user="a", eio_sid="s", node="n1", latency_ms=1.0).get(c) for c in COLUMNS]
    cell = [int(T0), "connect", "connect", "n1", "", 1, "", 1, 1, 1.0, 1.0, 1.0, T0, [501, 1]]
    eventlog.ingest_batch(master, "w", {"v": 2, "rows": [row], "aggs": [cell]})
    eventlog.flush(master)
    (tmp_path / "events.parquet").mkdir()  # in the way: the rename fails
    eventlog._finish_files(eventlog._state(master))
    assert (tmp_path / "events.arrows").exists() and (tmp_path / "aggregates.parquet").exists()
    assert not (tmp_path / "aggregates.arrows").exists() and not list(tmp_path.glob(".*.tmp"))
    meta = json.loads((tmp_path / "eventlog.json").read_text())
    assert meta["files"] == {"events": "events.arrows", "aggregates": "aggregates.parquet"}  # no sends: no delivery
    assert len(read_rows(tmp_path)) == 1  # the reader falls back to the stream (the directory is no file)
