"""The load generator's CPU: recorded per process (generator.csv), loaded, and used to flag stages.

Locust-side plumbing uses runner objects made with `object.__new__` (as test_eventlog.py), so
the real isinstance checks pick the worker/master paths without sockets. The analysis side is
checked on small hand-made frames where the right answer is known by construction.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import locust.runners
import pandas as pd
import pytest
from locust.runners import STATE_RUNNING, MasterRunner, WorkerRunner

from analysis import capacity as C
from analysis.load import load_run, load_runs, read_generator
from analysis.report import _users_series, write_report
from analysis.verdicts import generator_verdicts
from locustfiles.sio import eventlog, generator_cpu
from tests.synth import SynthConfig, write_run


def _env(run_dir: Path | None, runner=None):
    opts = SimpleNamespace(sio_run_dir=str(run_dir) if run_dir else "", sio_run_name="", num_users=3)
    return SimpleNamespace(parsed_options=opts, runner=runner)


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


# -- recording (Locust side) -----------------------------------------------------------------
def test_locust_samples_every_second() -> None:
    assert locust.runners.CPU_MONITOR_INTERVAL <= generator_cpu.SAMPLE_INTERVAL_S
    assert generator_cpu.SATURATED_PERCENT == locust.runners.CPU_WARNING_THRESHOLD == C.GENERATOR_SATURATED


def test_local_samples_written_with_header_first_reading_skipped(tmp_path: Path) -> None:
    env = _env(tmp_path / "run", runner=SimpleNamespace(user_count=4))
    generator_cpu.sample(env, 0.0, now=100.0)  # psutil's first reading: no reference, always 0.0
    generator_cpu.sample(env, 37.25, now=101.0)
    eventlog.flush(env)
    generator_cpu.sample(env, 95.0, now=102.0)
    eventlog.flush(env)
    rows = _rows(tmp_path / "run" / "generator.csv")
    assert rows == [["ts", "worker", "cpu_percent", "users"], ["101.0", "local", "37.2", "4"],
                    ["102.0", "local", "95.0", "4"]]


def test_no_run_dir_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = _env(None, runner=SimpleNamespace(user_count=1))
    for i in range(3):
        generator_cpu.sample(env, 50.0, now=float(i))
    eventlog.flush(env)
    assert list(tmp_path.iterdir()) == [] and generator_cpu._state(env).pending == []


def _worker(sent: list, cid: str = "w-A") -> SimpleNamespace:
    runner = object.__new__(WorkerRunner)
    runner.greenlet = None
    runner.client_id = cid
    runner.state = STATE_RUNNING
    runner.send_message = lambda t, data=None, client_id=None: sent.append((t, data))
    return _env(None, runner=runner)


def test_worker_ships_its_samples_and_master_writes_them_per_worker(tmp_path: Path) -> None:
    sent_a: list = []
    sent_b: list = []
    wa, wb = _worker(sent_a, "w-A"), _worker(sent_b, "w-B")
    for env, cpu in ((wa, 91.5), (wb, 12.0)):
        generator_cpu.sample(env, 0.0, now=10.0)
        generator_cpu.sample(env, cpu, now=11.0)
        generator_cpu.sample(env, cpu + 1, now=12.0)
        eventlog.flush(env)
    assert sent_a[0][1]["cpu"][0][:2] == [11.0, 91.5]
    master_runner = object.__new__(MasterRunner)
    master_runner.greenlet = None
    master_runner.clients = {}
    master = _env(tmp_path, runner=master_runner)
    generator_cpu.sample(master, 0.0, now=10.5)
    generator_cpu.sample(master, 3.0, now=11.5)
    for wid, batches in (("w-A", sent_a), ("w-B", sent_b)):
        for _t, data in batches:
            eventlog._on_batch(master, SimpleNamespace(node_id=wid, data=data))
    eventlog.flush(master)
    rows = _rows(tmp_path / "generator.csv")[1:]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("11.0", "w-A", "91.5"), ("11.0", "w-B", "12.0"), ("11.5", "master", "3.0"),
        ("12.0", "w-A", "92.5"), ("12.0", "w-B", "13.0")]


def test_worker_keeps_samples_when_master_unreachable_and_master_skips_malformed(tmp_path: Path) -> None:
    env = _worker([])

    def boom(*_a, **_k) -> None:
        raise OSError("master gone")

    env.runner.send_message = boom
    generator_cpu.sample(env, 0.0, now=1.0)
    generator_cpu.sample(env, 40.0, now=2.0)
    eventlog.flush(env)
    assert generator_cpu._state(env).pending == [[2.0, "w-A", 40.0, ""]]

    master = _env(tmp_path, runner=object.__new__(MasterRunner))
    master.runner.greenlet = None
    kept = generator_cpu.receive(master, "w-X", [[1.0, 5.0, 2], ["x", 5.0, 2], [2.0], [3.0, float("nan"), 1],
                                                 None, [4.0, 6.0, None]])
    assert kept == 2
    assert generator_cpu.receive(master, "w-X", "not a list") == 0
    generator_cpu.write(master, tmp_path)
    assert [r[:3] for r in _rows(tmp_path / "generator.csv")[1:]] == [["1.0", "w-X", "5.0"], ["4.0", "w-X", "6.0"]]


# -- loading -----------------------------------------------------------------------------------
def _write_gen(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_read_generator_good_and_tolerant(tmp_path: Path) -> None:
    warns: list[str] = []
    p = tmp_path / "generator.csv"
    _write_gen(p, "ts,worker,cpu_percent,users\n2.0,w1,50.5,3\n1.0,local,10,2\n"
                  "x,w1,5,1\n3.0,w1,-4,1\n4.0,w1,abc,1\n5.0,w1,20,1,extra\n6.0,w1,30")
    g = read_generator(p, warns.append)
    assert list(g.columns) == ["ts", "worker", "cpu_percent", "users"]
    assert g.values.tolist() == [[1.0, "local", 10.0, 2.0], [2.0, "w1", 50.5, 3.0]]
    assert any("cut off" in w for w in warns) and any("4 malformed" in w for w in warns)
    assert read_generator(tmp_path / "nope.csv", warns.append).empty  # missing: optional, like locust_*.csv
    for bad in ("", "a,b\n1,2\n", "\x00\x01\n"):
        warns.clear()
        _write_gen(p, bad)
        assert read_generator(p, warns.append).empty and warns, bad


def test_load_runs_carry_the_generator_per_config(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", SynthConfig("same", users=3, duration=2))
    b = write_run(tmp_path / "b", SynthConfig("same", users=3, duration=2))
    _write_gen(a / "generator.csv", "ts,worker,cpu_percent,users\n1760000001,local,12.5,3\n")
    f = load_runs([a, b])
    assert f.generator[["config", "cpu_percent"]].values.tolist() == [["same", 12.5]]
    assert load_run(b).generator.empty and load_run(b).warnings == []


# -- stage flagging ------------------------------------------------------------------------------
WINDOWS = pd.DataFrame({"stage": [1, 2, 3], "users": [10, 20, 30], "ramp_start": [0.0, 10.0, 20.0],
                        "hold_start": [1.0, 11.0, 21.0], "end": [10.0, 20.0, 30.0]})


def _gen(per_stage: dict[str, list[float]]) -> pd.DataFrame:
    """Samples at every whole second 1..30 per process; cpu by stage (second s belongs to stage ceil(s/10))."""
    rows = []
    for w, cpus in per_stage.items():
        for s in range(1, 31):
            rows.append({"config": "c", "ts": float(s), "worker": w, "cpu_percent": cpus[(s - 1) // 10], "users": 0})
    return pd.DataFrame(rows)


def test_stage_cpu_is_the_busiest_process_over_the_hold() -> None:
    g = _gen({"master": [5, 5, 5], "w1": [40, 89.9, 97], "w2": [30, 60, 50]})
    # a spike in the ramp second of stage 3 (ts 21 covers 20..21: the ramp) is not the hold's
    g.loc[(g["worker"] == "w2") & (g["ts"] == 21.0), "cpu_percent"] = 100.0
    s = C.generator_stage_cpu(g, WINDOWS)
    assert s["generator_cpu_max"].tolist() == [40, 89.9, 97]
    assert s["generator_bound"].tolist() == [False, False, True]
    assert s["generator_process"].tolist() == ["w1", "w1", "w1"]
    assert s["generator_samples"].tolist() == [27, 27, 27]  # 9 s of hold × 3 processes
    one = C.generator_stage_cpu(_gen({"w": [10, 10, 10]}).assign(
        cpu_percent=[10.0] * 20 + [10.0] * 8 + [95.0, 10.0]), WINDOWS)
    assert one["generator_cpu_max"].iloc[2] == 95.0 and one["generator_cpu_p90"].iloc[2] == pytest.approx(27.0)  # 8×10, 1×95
    unknown = C.generator_stage_cpu(None, WINDOWS)
    assert unknown["generator_cpu_max"].isna().all() and not unknown["generator_bound"].any()


def _stats(p95_ack: list[float], cpu: list[float] | None) -> pd.DataFrame:
    st = pd.DataFrame({"stage": [1, 2, 3], "users": [10, 20, 30], "users_per_node": [10.0, 20.0, 30.0],
                       "hold_s": 9.0, "throughput": [10.0, 20.0, 25.0], "p95_connect_ms": 5.0,
                       "p95_ack_ms": p95_ack, "failure_ratio": 0.0, "steps": 100})
    gen = C.generator_stage_cpu(_gen({"w": cpu}) if cpu else None, WINDOWS)
    return st.merge(gen, on="stage")


def test_generator_bound_stage_is_not_the_knee() -> None:
    # stage 3 misses the SLO, but the generator was at 97%: the knee is not there
    k = C.knee(_stats([10, 20, 900], [40, 60, 97]), {"p95_ack_ms": 250})
    assert k["users"] == 20 and k["first_failing_stage"] is None and k["generator_stage"] == 3
    assert k["generator_bound_stages"] == [3]
    assert "97% CPU at 30 users" in k["limit"] and "lower bound" in k["note"]
    assert [s["generator_bound"] for s in k["stages"]] == [False, False, True]
    # same latencies with an idle generator: stage 3 is the real knee
    k = C.knee(_stats([10, 20, 900], [40, 60, 70]), {"p95_ack_ms": 250})
    assert k["first_failing_stage"] == 3 and k["generator_stage"] is None and k["users"] == 20
    # a real SLO failure before the generator saturates stays the knee; the later stage is still flagged
    k = C.knee(_stats([10, 900, 900], [40, 60, 99]), {"p95_ack_ms": 250})
    assert k["first_failing_stage"] == 2 and k["generator_stage"] is None and k["generator_bound_stages"] == [3]
    # the first stage already generator-bound: nothing about the servers
    k = C.knee(_stats([10, 20, 30], [95, 96, 97]), {"p95_ack_ms": 250})
    assert k["users"] is None and k["generator_stage"] == 1 and "measured the load generator" in k["note"]
    # unknown generator CPU (no file): the knee as before
    k = C.knee(_stats([10, 20, 900], None), {"p95_ack_ms": 250})
    assert k["first_failing_stage"] == 3 and k["generator_bound_stages"] == []


def test_generator_summary_and_verdicts() -> None:
    assert C.generator_summary(None) is None and C.generator_summary(pd.DataFrame()) is None
    s = C.generator_summary(_gen({"master": [5, 5, 5], "w1": [40, 60, 97]}))
    assert s == {"cpu_max": 97.0, "cpu_p90": 97.0, "saturated": True, "saturated_samples": 10, "busiest": "w1",
                 "processes": 2, "samples": 60}
    k = C.knee(_stats([10, 20, 900], [40, 92.4, 97]), {"p95_ack_ms": 250})
    v = generator_verdicts({"capacity": {"table": k["stages"]}})
    assert v == ["stages 2, 3 (20–30 users): the load generator was at 92–97% CPU — these stages measure the "
                 "generator, not the servers; use --processes or more machines"]
    k = C.knee(_stats([10, 20, 900], [40, 60, 97]), {"p95_ack_ms": 250})
    assert generator_verdicts({"capacity": {"table": k["stages"]}}) == [
        "stage 3 (30 users): the load generator was at 97% CPU — this stage measures the generator, not the "
        "servers; use --processes or more machines"]
    assert "reached 97% CPU" in generator_verdicts({"generator": s})[0]
    assert generator_verdicts({"generator": {**s, "saturated": False}}) == []


# -- the report, end to end on a synthetic run ----------------------------------------------
def test_report_flags_generator_bound_stages(tmp_path: Path) -> None:
    d = write_run(tmp_path / "ramp", SynthConfig("ramp", transports=("websocket",), adapter="redis", nodes=2,
                                                 steps=((10, 5), (20, 5), (30, 5), (40, 5), (50, 5)),
                                                 spawn_rate=60, message_rate=2, seed=2))
    f = load_run(d)
    w = C.step_windows(_users_series(f, "ramp", f.events))
    assert len(w) == 5
    cpu = [30.0, 45.0, 60.0, 80.0, 97.5]  # stage 5: saturated
    with (d / "generator.csv").open("w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["ts", "worker", "cpu_percent", "users"])
        t = float(w["ramp_start"].min())
        while t <= float(w["end"].max()) + 1:
            i = int(((w["hold_start"] < t) & (w["end"] >= t - 1)).to_numpy().nonzero()[0].max(initial=0))
            wr.writerow([t, "local", cpu[i], int(w["users"].iloc[i])])
            t += 1.0
    s = write_report([d], tmp_path / "rep", thresholds={"p95_ack_ms": 5000.0})
    c = s["configs"][0]
    cap = c["capacity"]
    assert [st["generator_bound"] for st in cap["table"]] == [False, False, False, False, True]
    assert cap["table"][4]["generator_cpu_max"] == 97.5 and cap["table"][0]["generator_cpu_max"] == 30.0
    assert cap["generator_stage"] == 5 and cap["users"] == 40 and cap["reached"] is False
    assert cap["generator_cpu_max_hold"] == 97.5
    assert cap["usl"]["n_points"] == 4 and any("left out of the fit" in n for n in cap["usl"]["notes"])
    assert c["generator"]["cpu_max"] == 97.5 and c["generator"]["saturated"] is True
    assert any(v.startswith("stage 5 (50 users): the load generator was at 98% CPU") for v in c["verdicts"])
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "generator-bound" in html and "Load generator CPU" in html
    assert (tmp_path / "rep" / "plots" / "generator-time.svg").exists()
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["configs"][0]["generator"]["cpu_p90"] == c["generator"]["cpu_p90"]
    # an unsaturated generator: the capacity section says so, with its peak
    g = (d / "generator.csv").read_text().replace(",97.5,", ",50.0,")
    (d / "generator.csv").write_text(g)
    s = write_report([d], tmp_path / "rep1", thresholds={"p95_ack_ms": 5000.0})
    assert s["configs"][0]["capacity"]["generator_bound_stages"] == [] and s["configs"][0]["generator"]["cpu_max"] == 80
    assert "No stage was generator-bound: the busiest generator process peaked at 80% CPU" in (
        tmp_path / "rep1" / "index.html").read_text()
    # without generator.csv: null, and the stage table says "unknown"
    (d / "generator.csv").unlink()
    s = write_report([d], tmp_path / "rep2", thresholds={"p95_ack_ms": 5000.0})
    assert s["configs"][0]["generator"] is None
    assert all(st["generator_cpu_max"] is None for st in s["configs"][0]["capacity"]["table"])
    assert "no generator.csv" in (tmp_path / "rep2" / "index.html").read_text()
    assert s["configs"][0]["capacity"]["generator_cpu_max_hold"] is None
    assert not math.isnan(s["configs"][0]["capacity"]["users"])
