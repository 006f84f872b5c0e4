"""The one status machine (contract.status) and where it shows: meta.json, the live stats, the
report's first screen, `sioscale check`, and the exit codes of `run` and `campaign` (issue 9,
part 3). No sockets, no processes: the real SIGKILLs are in tests/integration/test_run_status.py.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from analysis.checks import evaluate
from analysis.report import write_report
from contract import status as S
from contract.config import ClusterConfig, LoadConfig, RunConfig, Thresholds
from contract.rowpolicy import RowPolicyConfig
from contract.rows import make_row
from locustfiles.sio.live import LiveStats
from locustfiles.sio.producer import Producer
from sioscale import runner
from tests.synth import SynthConfig, write_run

EXC_CSV = "Count,Message,Traceback,Nodes\n4,ValueError('source_range 10.0.0.1'),Traceback...,local\n"


def _dead_writer() -> dict:
    """This process's identity with another start time: what a recycled pid of a dead writer looks like."""
    w = S.writer_identity()
    w["start_ticks"] = (w["start_ticks"] or 0) + 12345
    return w


def _first_screen(html: str) -> str:
    return html.split('<section id="matrix"', 1)[0]


# -- the machine ------------------------------------------------------------------------------

def test_worse_status_wins_and_reasons_are_kept_once() -> None:
    st = S.RunStatus()
    st.add(S.Status.DEGRADED, "worker w1 missing").add(S.Status.OK, "worker w1 missing")
    assert st.as_meta() == {"status": "degraded", "status_reasons": ["worker w1 missing"]}
    st.merge(S.RunStatus(S.Status.INTERRUPTED, ["killed"])).add(S.Status.FAILED, "x")
    assert st.status is S.Status.INTERRUPTED and st.reasons == ["worker w1 missing", "killed", "x"]
    assert S.worst(["ok", "degraded", None]) is S.Status.FAILED  # an unknown status is never ok
    assert S.worst(["ok", "degraded"]) is S.Status.DEGRADED and S.worst([]) is S.Status.OK
    assert [S.EXIT_CODES[s] for s in ("ok", "failed", "degraded", "interrupted")] == [0, 1, 3, 130]


@given(hs.lists(hs.tuples(hs.sampled_from(list(S.Status)), hs.text(max_size=4))))
def test_the_worst_status_wins_whatever_the_order(events: list[tuple[S.Status, str]]) -> None:
    a, b = S.RunStatus(), S.RunStatus()
    for st, why in events:
        a.add(st, why)
    for st, why in reversed(events):
        b.add(st, why)
    assert a.status == b.status == S.worst(st for st, _ in events)
    assert set(a.reasons) == set(b.reasons) == {why for _, why in events if why}


_JSON = hs.recursive(hs.none() | hs.booleans() | hs.integers() | hs.floats() | hs.text(max_size=8),
                     lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=6), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=300)
@given(hs.dictionaries(hs.sampled_from(["status", "status_reasons", "error", "writer", "faults"]), _JSON))
def test_reconcile_never_raises_on_any_meta(meta: dict) -> None:
    """meta.json is a file anyone can edit: any JSON in its status keys gives a status, never a traceback."""
    assert S.reconcile(meta, None).status in set(S.Status)


def test_writer_alive_by_pid_start_time_boot_and_host() -> None:
    me = S.writer_identity()
    assert me["pid"] == os.getpid() and me["host"] == socket.gethostname()
    assert S.writer_alive(me) is True
    assert S.writer_alive(_dead_writer()) is False  # same pid, another process: the writer is gone
    assert S.writer_alive({**me, "boot_id": "another-boot"}) is False  # the machine rebooted since
    assert S.writer_alive({**me, "host": "elsewhere.example"}) is None  # cannot tell from here
    assert S.writer_alive(None) is None and S.writer_alive({"pid": "12"}) is None
    assert S.writer_alive({"pid": 0}) is None and S.writer_alive({"pid": -1}) is None  # never a process group
    assert S.writer_alive({"pid": 10**30}) is None


def test_reconcile_running_meta() -> None:
    dead = S.reconcile({"status": "running", "writer": _dead_writer()}, None)
    assert dead.status is S.Status.INTERRUPTED and "is gone but meta.json still says running" in dead.reasons[0]
    assert S.reconcile({"status": "running", "writer": S.writer_identity()}, None).status is S.Status.RUNNING
    assert S.reconcile({"status": "running"}, None).status is S.Status.INTERRUPTED  # nothing will finish it
    other = S.reconcile({"status": "running", "writer": {"pid": 1, "host": "elsewhere.example"}}, None)
    assert other.status is S.Status.RUNNING and "cannot check" in other.reasons[0]
    assert S.reconcile({"status": "failed", "error": "boom"}, None).as_meta() == {"status": "failed",
                                                                                 "status_reasons": ["boom"]}
    assert S.reconcile({"status": "weird"}, None).status is S.Status.DEGRADED


def test_assess_missing_workers_dropped_rows_exceptions_faults(tmp_path: Path) -> None:
    assert S.assess(tmp_path).as_meta() == {"status": "ok", "status_reasons": []}
    (tmp_path / "sio_stats.json").write_text(json.dumps(
        {"missing_workers": [{"id": "w-B", "rows": 40}], "dropped_rows": 7}))
    st = S.assess(tmp_path, {"faults": [{"at": 8, "action": "stop_node", "target": "n2", "error": "no such node"}]})
    assert st.status is S.Status.DEGRADED
    assert "1 Locust worker(s) went missing mid-run (w-B; 40 row(s)" in st.reasons[0]
    assert "dropped 7 row(s)" in st.reasons[1] and "fault stop_node n2 at 8 s: no such node" in st.reasons[2]
    (tmp_path / "locust_exceptions.csv").write_text(EXC_CSV)
    st = S.assess(tmp_path)
    assert st.status is S.Status.FAILED and "4 exception(s)" in st.reasons[-1]  # no event rows: nothing measured
    (tmp_path / "events.csv").write_text("ts,step\n1.0,connect\n")
    assert S.assess(tmp_path).status is S.Status.DEGRADED
    (tmp_path / "locust_exceptions.csv").write_text("Count,Message,Traceback,Nodes\n")
    (tmp_path / "sio_stats.json").write_text("{broken")
    assert S.assess(tmp_path).status is S.Status.OK


# -- live stats: a missing worker's sessions are not "connected now" ----------------------------

def test_live_snapshot_leaves_out_sessions_of_lost_workers() -> None:
    live = LiveStats()
    for w, users in (("w-A", ("a1", "a2")), ("w-B", ("b1", "b2", "b3"))):
        for u in users:
            live.add(make_row("connect", user=u, eio_sid=f"s-{u}", node="n1", worker=w))
    live.add(make_row("disconnect", user="a2", eio_sid="s-a2", worker="w-A"))
    assert live.snapshot()["totals"]["connected_now"] == 4
    snap = live.snapshot(lost_workers={"w-B"})
    assert snap["totals"]["connected_now"] == 1 and snap["totals"]["sessions_lost_with_workers"] == 3
    assert snap["nodes"] == [{"node": "n1", "connected_now": 1, "connects_total": 5}]


def test_eventlog_stats_and_progress_line_stop_counting_a_missing_worker(tmp_path: Path) -> None:
    from locust.runners import STATE_MISSING, STATE_RUNNING, MasterRunner

    from locustfiles.sio import eventlog

    master_runner = object.__new__(MasterRunner)
    master_runner.greenlet = None
    master_runner.clients = {"w-A": SimpleNamespace(id="w-A", state=STATE_RUNNING),
                             "w-B": SimpleNamespace(id="w-B", state=STATE_MISSING)}
    master_runner.send_message = lambda *a, **k: None
    env = SimpleNamespace(parsed_options=SimpleNamespace(sio_run_dir=str(tmp_path), sio_run_name="r", num_users=4),
                          runner=master_runner)
    producers = {wid: Producer(RowPolicyConfig(log_all=True)) for wid in ("w-A", "w-B")}
    for i, wid in enumerate(("w-A", "w-A", "w-B", "w-B")):
        p = producers[wid]
        p.add(make_row("connect", user=f"u{i}", eio_sid=f"s{i}", node="n1", worker=wid))
        eventlog._on_batch(env, SimpleNamespace(node_id=wid, data=eventlog.payload_of(p, seq=i)))
    eventlog.write_stats(env)
    stats = json.loads((tmp_path / "sio_stats.json").read_text())
    assert stats["totals"]["connected_now"] == 2 and stats["totals"]["sessions_lost_with_workers"] == 2
    assert runner._live_counts(tmp_path) == (2, None, None, 1)
    # a plain `locust --sio-run-dir` run (no sioscale): the event log's own meta.json ends degraded
    st = eventlog._state(env)
    eventlog._write_meta(st, final=False)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "running" and meta["writer"]["pid"] == os.getpid()
    eventlog._write_meta(st, final=True)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["status"] == "degraded" and "went missing" in meta["status_reasons"][0]


# -- the runner ------------------------------------------------------------------------------

def _cfg() -> RunConfig:
    return RunConfig("x", ClusterConfig(), LoadConfig())


def test_execute_run_records_writer_and_degrades_on_locust_exceptions(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def fake_locust(cfg, url, run_dir, ca_file, progress, cluster=None):
        seen["meta"] = json.loads((run_dir / "meta.json").read_text())
        (run_dir / "events.csv").write_text("ts,step\n1.0,connect\n")
        (run_dir / "locust_exceptions.csv").write_text(EXC_CSV)
        return {"locust_command": ["locust"], "locust_exit_code": 0}

    monkeypatch.setattr(runner, "run_locust", fake_locust)
    meta = runner.execute_run(_cfg(), tmp_path / "run", url="http://127.0.0.1:9")
    assert seen["meta"]["status"] == "running" and seen["meta"]["writer"] == S.writer_identity()
    assert meta["status"] == "degraded" and "exception" in meta["status_reasons"][0]
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["status"] == "degraded"


def test_execute_run_interrupted_is_interrupted_not_failed(tmp_path: Path, monkeypatch) -> None:
    def interrupted(*_a, **_kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_locust", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.execute_run(_cfg(), tmp_path / "run", url="http://127.0.0.1:9")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and "interrupted" in meta["error"] and meta["ended"]


@pytest.mark.parametrize(("status", "code"), [("ok", 0), ("degraded", 3), ("failed", 1)])
def test_run_exit_code_follows_the_status(tmp_path: Path, monkeypatch, status: str, code: int,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sioscale.cli import main

    monkeypatch.setattr(runner, "execute_run", lambda cfg, run_dir, url=None, progress=None: {
        "status": status, "status_reasons": [] if status == "ok" else [f"why {status}"], "error": None})
    monkeypatch.setattr(runner, "check_reachable", lambda url: None)
    assert main(["run", "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "r")]) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(status if status == "ok" else f"{status}: why {status}")


def test_campaign_exit_code_is_the_worst_configs(tmp_path: Path, monkeypatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from sioscale.cli import main

    camp = tmp_path / "c.toml"
    camp.write_text('name = "c"\n[cluster]\nbalancer = "none"\npolicy = "direct"\n[axes]\nnodes = [1, 2]\n'
                    "[load]\nusers = 5\nduration = 3\n")

    def fake_run(cfg, run_dir, url=None, progress=None):
        degraded = cfg.cluster.nodes == 2
        write_run(run_dir, SynthConfig(cfg.name, users=5, duration=3))
        if degraded:
            (run_dir / "sio_stats.json").write_text(json.dumps({"missing_workers": [{"id": "w-B", "rows": 3}]}))
        return {"status": "degraded" if degraded else "ok", "error": None}

    monkeypatch.setattr(runner, "execute_run", fake_run)
    assert main(["campaign", str(camp), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert "DEGRADED" in err and "went missing" in err


# -- the report's first screen and the check -----------------------------------------------------

@pytest.fixture
def mixed_runs(tmp_path: Path) -> list[Path]:
    ok = write_run(tmp_path / "a-ok", SynthConfig("a-ok", users=6, duration=3))
    killed = write_run(tmp_path / "b-killed", SynthConfig("b-killed", users=6, duration=3, status="running",
                                                          extra={"writer": _dead_writer()}))
    lost = write_run(tmp_path / "c-lost", SynthConfig("c-lost", users=6, duration=3))
    (lost / "sio_stats.json").write_text(json.dumps({"missing_workers": [{"id": "w-B", "rows": 12}],
                                                     "dropped_rows": 0}))
    raised = write_run(tmp_path / "d-raised", SynthConfig("d-raised", users=6, duration=3))
    (raised / "locust_exceptions.csv").write_text(EXC_CSV)
    return [ok, killed, lost, raised]


def test_first_screen_shows_every_status_reason_and_warning(mixed_runs: list[Path], tmp_path: Path) -> None:
    (mixed_runs[0] / "generator.csv").write_text("")  # a loader warning that changes no figure
    s = write_report(mixed_runs, tmp_path / "rep")
    by = {c["name"]: c for c in s["configs"]}
    assert {n: c["status"] for n, c in by.items()} == {"a-ok": "ok", "b-killed": "interrupted",
                                                       "c-lost": "degraded", "d-raised": "degraded"}
    assert s["status"] == "interrupted" and s["warnings"]
    assert "INTERRUPTED" in by["b-killed"]["verdicts"][0] and "DEGRADED" in by["c-lost"]["verdicts"][0]
    assert by["a-ok"]["warnings"] and all(w.startswith("a-ok: ") for w in by["a-ok"]["warnings"])
    top = _first_screen((tmp_path / "rep" / "index.html").read_text())
    assert "3 of 4 configuration(s) not ok" in top
    for c in by.values():
        for r in c["status_reasons"]:
            assert r in top or r.replace("'", "&#39;") in top, r
    for w in s["warnings"]:
        assert w in top or w.replace("'", "&#39;") in top, w
    # the verdicts table: no config that is not ok wears the ok pill
    for name in ("b-killed", "c-lost", "d-raised"):
        row = top[top.index(f"<b>{name}</b>", top.index('id="verdicts"')):]
        assert row.index(f'pill {by[name]["status"]}') < row.index("</tr>")


def test_all_ok_says_so_in_one_line(tmp_path: Path) -> None:
    d = write_run(tmp_path / "a", SynthConfig("a", users=6, duration=3))
    write_report([d], tmp_path / "rep")
    top = _first_screen((tmp_path / "rep" / "index.html").read_text())
    assert "All 1 configuration(s) ran as asked" in top and "not ok" not in top


def test_check_fails_interrupted_and_judges_degraded(mixed_runs: list[Path], tmp_path: Path) -> None:
    s = write_report(mixed_runs, tmp_path / "rep")
    res = evaluate(s, Thresholds(connect_ratio=0.5))
    by = {r.config: r for r in res}
    assert not by["b-killed"].passed and "interrupted" in by["b-killed"].missing
    assert by["c-lost"].passed and by["a-ok"].passed  # degraded: judged on its (real) figures


def test_rows_the_loader_drops_degrade_the_config(tmp_path: Path) -> None:
    """Duplicated rows (events.csv concatenated with itself) are dropped by the loader; the figures then
    cover less than the file claimed, so the config is degraded, with the count, on the first screen."""
    d = write_run(tmp_path / "dup", SynthConfig("dup", users=6, duration=3))
    lines = (d / "events.csv").read_text().splitlines(keepends=True)
    (d / "events.csv").write_text("".join(lines + lines[1:]))
    s = write_report([d], tmp_path / "rep")
    (c,) = s["configs"]
    assert c["status"] == "degraded", c["status_reasons"]
    assert any("the loader dropped" in r for r in c["status_reasons"])
    assert "the loader dropped" in _first_screen((tmp_path / "rep" / "index.html").read_text())


# -- unplanned deaths of cluster children (targets.cluster.Cluster.deaths) -------------------------

DEATH = {"kind": "node", "node": "n2", "name": "node n2", "pid": 4242, "exit_code": None, "signal": "SIGKILL",
         "ts": 1.0, "log": "/tmp/x/node-n2.log", "log_tail": []}


class _CrashingCluster:
    """Stands in for targets.cluster.Cluster: up, then n2 crashed; its stop (looking once more) finds it."""

    stop_error: Exception | None = None

    def __init__(self, config, workdir=None) -> None:
        self.deaths: list[dict] = []
        self.info = {"url": "http://127.0.0.1:9", "ca_file": None}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.deaths.append(dict(DEATH))
        if self.stop_error is not None:
            raise self.stop_error


@pytest.mark.parametrize("ending", ["locust-hung", "interrupt", "error-at-stop", "clean"])
def test_deaths_reach_meta_however_the_run_ends(tmp_path: Path, monkeypatch, ending: str) -> None:
    """A node that crashed is a finding in meta.json (`deaths`, a degraded reason) also when Locust then
    hung (TimeoutError), on Ctrl-C, or when the cluster's stop raised -- not only after a clean end."""
    import targets.cluster

    class Cluster(_CrashingCluster):
        stop_error = targets.cluster.ClusterError("ports still bound after stop: node n1:1234") \
            if ending == "error-at-stop" else None

    def locust(*_a, **_kw):
        if ending == "locust-hung":
            raise TimeoutError("locust did not finish within 75 s; stopped it")
        if ending == "interrupt":
            raise KeyboardInterrupt
        return {"locust_command": ["locust"], "locust_exit_code": 0}

    monkeypatch.setattr(targets.cluster, "Cluster", Cluster)
    monkeypatch.setattr(runner, "run_locust", locust)
    if ending == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            runner.execute_run(_cfg(), tmp_path / "run")
    else:
        runner.execute_run(_cfg(), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert [d["name"] for d in meta["deaths"]] == ["node n2"], meta
    assert any("node n2 died during the run (killed by SIGKILL)" in r for r in meta["status_reasons"]), meta
    expected = {"locust-hung": "failed", "interrupt": "interrupted", "error-at-stop": "failed", "clean": "degraded"}
    assert meta["status"] == expected[ending], meta
    if ending == "error-at-stop":
        assert meta["error"].startswith("cluster: ports still bound"), meta["error"]  # it did start


def test_a_cluster_that_never_started_records_no_deaths(tmp_path: Path, monkeypatch) -> None:
    import targets.cluster

    class Cluster(_CrashingCluster):
        def __enter__(self):
            self.deaths.append(dict(DEATH))  # a child that exited during start: the start failure, not a death
            raise targets.cluster.ClusterError("node n2 exited with code 1 during start")

    monkeypatch.setattr(targets.cluster, "Cluster", Cluster)
    meta = runner.execute_run(_cfg(), tmp_path / "run")
    assert meta["status"] == "failed" and meta["error"].startswith("cluster did not start: node n2 exited")
    assert "deaths" not in meta and not any("died during the run" in r for r in meta["status_reasons"])


def test_a_crash_a_fault_hook_recorded_first_still_gets_its_progress_line(tmp_path: Path, monkeypatch) -> None:
    """The real Cluster: n1 crashed, then the planned `stop_node n2` fires; the hook records n1's death
    before stopping n2, and the runner's progress line must still say that n1 died."""
    import contextlib
    import sys

    from contract.config import Fault
    from targets.cluster import Cluster
    from targets.procs import Child

    cfg = RunConfig("x", ClusterConfig(nodes=2, balancer="none", policy="direct"), LoadConfig(duration=5),
                    faults=(Fault(at=0.0, action="stop_node", target="n2"),))
    cluster = Cluster(cfg.cluster, workdir=tmp_path / "cluster")
    crash = Child("node n1", [sys.executable, "-c", "import sys; sys.exit(7)"], tmp_path / "cluster" / "node-n1.log")
    calm = Child("node n2", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "cluster" / "node-n2.log")
    cluster.nodes = {"n1": crash, "n2": calm}
    cluster._started = True
    for ch in (crash, calm):
        ch.start()
    assert crash.proc is not None and crash.proc.wait(10) == 7

    class Locust:  # runs for two polls of the runner's loop, then ends well
        polls, returncode = 0, 0

        def poll(self) -> int | None:
            self.polls += 1
            return None if self.polls <= 2 else 0

    @contextlib.contextmanager
    def fake_locust_process(cmd, out, env):
        yield Locust()

    monkeypatch.setattr(runner, "_locust_process", fake_locust_process)
    lines: list[str] = []
    try:
        result = runner.run_locust(cfg, "http://127.0.0.1:9", tmp_path, None, lines.append, cluster=cluster)
    finally:
        cluster.stop(raise_on_leak=False)
    assert result["faults"][0]["error"] is None, result
    assert [d["name"] for d in cluster.deaths] == ["node n1"]  # n2's stop was planned: no death
    said = [ln for ln in lines if " died at " in ln]
    assert len(said) == 1 and said[0].startswith("node n1 died at") and "(exit code 7)" in said[0], lines
