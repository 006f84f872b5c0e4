"""The users' recovery counters reach sio_stats.json as counts (issue 14 part 4): from several
workers' batches (Locust's distributed mode) and from a local run, summed, a bad part counted."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from locust.runners import MasterRunner

from contract.rowpolicy import RowPolicyConfig
from locustfiles.sio import eventlog
from locustfiles.sio.producer import Producer


def _env(run_dir: Path, runner: object = None) -> SimpleNamespace:
    opts = SimpleNamespace(sio_run_dir=str(run_dir), sio_run_name="", num_users=3)
    return SimpleNamespace(parsed_options=opts, runner=runner)


def _master(run_dir: Path) -> SimpleNamespace:
    runner = object.__new__(MasterRunner)
    runner.greenlet = None
    runner.clients = {}
    runner.send_message = lambda *a, **k: None
    return _env(run_dir, runner)


def test_workers_counters_are_summed_once_each_and_bad_ones_counted(tmp_path: Path) -> None:
    master = _master(tmp_path)
    for wid, dup in (("w1", 2), ("w2", 3)):
        p = Producer(RowPolicyConfig(log_all=True))
        p.add_recovery({"attempts": 4, "recovered": 4, "duplicated": dup})
        p.add_recovery({"backwards": 1, "replayed": 0})
        batch = eventlog.payload_of(p, seq=0)
        assert batch["recovery"] == {"attempts": 4, "recovered": 4, "duplicated": dup, "backwards": 1}
        assert eventlog.payload_of(p, seq=1)["recovery"] == {}  # drained: a count ships once
        eventlog._on_batch(master, SimpleNamespace(node_id=wid, data=batch))
    eventlog._on_batch(master, SimpleNamespace(node_id="w3", data={
        **eventlog.payload_of(Producer(), seq=0), "recovery": {"duplicated": -4, "bogus": 1, "backwards": 2}}))
    s = eventlog.stats(master)
    assert s["recovery"] == {"attempts": 8, "backwards": 4, "duplicated": 5, "recovered": 8}
    assert eventlog._state(master).malformed == {"recovery": 2}


def test_a_local_run_writes_them_to_sio_stats_json(tmp_path: Path) -> None:
    env = _env(tmp_path)
    eventlog.count_recovery(env, {"attempts": 1, "not_recovered": 1})
    eventlog.flush(env)
    eventlog.write_stats(env)
    assert json.loads((tmp_path / "sio_stats.json").read_text())["recovery"] == {"attempts": 1, "not_recovered": 1}


def test_a_batch_the_master_did_not_get_keeps_its_counters_for_the_next() -> None:
    st = SimpleNamespace(unsent=None, dropped=0)
    p = Producer()
    p.add_recovery({"duplicated": 2})
    st.unsent = eventlog.payload_of(p, seq=0)
    p.add_recovery({"duplicated": 1, "backwards": 1})
    merged = eventlog._merge_unsent(st, eventlog.payload_of(p, seq=1))  # type: ignore[arg-type]
    assert merged["recovery"] == {"duplicated": 3, "backwards": 1}
