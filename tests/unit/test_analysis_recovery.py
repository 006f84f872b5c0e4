"""summary.json `configs[].recovery` from hand-made rows (analysis/recovery.py), and its verdict."""

from __future__ import annotations

import pandas as pd

from analysis.recovery import (
    RECOVERY_KEYS,
    bad_offset_verdict,
    by_fault,
    fault_label,
    fault_verdict,
    recovery_block,
    recovery_verdict,
    redis_load,
)
from analysis.summary import ConfigEntry


def _rows(*rows: tuple[str, int, float | None]) -> pd.DataFrame:
    return pd.DataFrame([{"config": "c", "step": s, "ok": ok, "latency_ms": lat} for s, ok, lat in rows])


def test_counts_lost_sessions_recovered_and_the_reconnect_p95() -> None:
    ev = _rows(
        ("connect", 1, 5.0), ("connect", 1, 5.0), ("connect", 1, 5.0), ("connect", 1, 5.0),
        ("disconnect", 0, None), ("disconnect", 0, None), ("disconnect", 0, None),  # lost (cut, ping timeout)
        ("disconnect", 1, 1.0),  # the client's own "io client disconnect": not a loss
        ("reconnect", 0, 900.0),  # a failed attempt: no reconnect time
        *[("reconnect", 1, float(ms)) for ms in (100, 200, 300)],
        ("recover", 1, 10.0), ("recover", 1, 12.0), ("recover", 0, 11.0),
    )
    b = recovery_block(ev)
    assert b is not None and tuple(b)[:len(RECOVERY_KEYS)] == RECOVERY_KEYS  # the pinned keys, then additive ones
    assert (b["disconnects"], b["recovered"], b["recovered_ratio"]) == (3, 2, round(2 / 3, 4))
    assert b["p95_reconnect_ms"] == 290.0  # numpy's linear p95 of 100, 200, 300
    assert (b["missed"], b["duplicated"], b["reordered"]) == (None, None, None)  # not measured, never 0


def test_no_loss_no_block_and_no_recovery_asked_has_no_ratio() -> None:
    assert recovery_block(_rows(("connect", 1, 5.0), ("disconnect", 1, 1.0))) is None
    assert recovery_block(None) is None and recovery_block(pd.DataFrame()) is None
    b = recovery_block(_rows(("disconnect", 0, None), ("reconnect", 1, 1500.0)))
    assert b is not None and b["recovered_ratio"] is None and b["recovered"] == 0 and b["p95_reconnect_ms"] == 1500.0
    assert recovery_verdict(b, "redis") == "redis: 1 sessions lost, no recovery asked (the server offered none), " \
        "p95 reconnect 1500 ms; messages missed not measured"


def test_verdict_per_config_with_recovery_attempts() -> None:
    ev = _rows(*[("disconnect", 0, None)] * 4, *[("recover", 1, 3.0)] * 3, ("recover", 0, 3.0))
    said = recovery_verdict(recovery_block(ev), "redis-streams")
    assert said == ("redis-streams + recovery: 75% of recovery attempts recovered the session (3), 4 sessions "
                    "lost; messages missed not measured")
    assert recovery_verdict(None, "memory") is None


def test_block_survives_summary_json_and_old_summaries_have_none() -> None:
    b = recovery_block(_rows(("disconnect", 0, None), ("recover", 0, 3.0)))
    e = ConfigEntry(name="c", recovery=b)
    j = e.to_json()
    keys = list(j)
    assert keys.index("recovery") == keys.index("faults") + 1
    assert ConfigEntry.from_json(j).recovery == b and b["recovered_ratio"] == 0.0
    assert ConfigEntry.from_json({"name": "old"}).recovery is None
    assert ConfigEntry.from_json({"name": "odd", "recovery": [1]}).recovery is None


def test_cells_give_the_same_counts_and_a_p95_when_rows_carry_no_latency() -> None:
    from analysis.aggregates import aggregates_from_rows

    rows = _rows(*[("disconnect", 0, None)] * 3, ("disconnect", 1, 1.0), ("reconnect", 0, 50.0),
                 *[("reconnect", 1, float(ms)) for ms in range(100, 2100, 100)], ("recover", 1, 3.0),
                 ("recover", 0, 3.0))
    rows = rows.assign(ts=1.7e9, name=rows["step"], node="n1", transport="websocket", error_kind="")
    cells = aggregates_from_rows(rows)
    stripped = rows.assign(latency_ms=float("nan"))  # a schema-2 run's kept rows
    b = recovery_block(stripped, cells)
    assert b is not None and (b["disconnects"], b["recovered"], b["recovered_ratio"]) == (3, 1, 0.5)
    exact = recovery_block(rows)["p95_reconnect_ms"]  # type: ignore[index]
    assert exact == 1905.0 and abs(b["p95_reconnect_ms"] - exact) / exact < 0.05  # histogram buckets
    assert recovery_block(stripped)["p95_reconnect_ms"] is None  # type: ignore[index]


def test_shipped_client_counters_fill_duplicated_and_reordered() -> None:
    ev = _rows(("disconnect", 0, None), ("recover", 1, 3.0))
    b = recovery_block(ev, client={"attempts": 1, "recovered": 1, "duplicated": 2, "backwards": 5})
    assert b is not None and (b["duplicated"], b["reordered"], b["missed"]) == (2, 5, None)
    b = recovery_block(ev, client={})  # shipped, nothing counted
    assert b is not None and (b["duplicated"], b["reordered"]) == (0, 0)
    b = recovery_block(ev, client={"duplicated": -1, "backwards": "x"})  # a bad file: not a number
    assert b is not None and (b["duplicated"], b["reordered"]) == (None, None)


def test_the_report_shows_a_failover_table_only_for_configs_with_a_block() -> None:
    import jinja2

    from analysis import report

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(report.Path(report.__file__).parent / "templates")))
    src = env.loader.get_source(env, "report.html.j2")[0]  # type: ignore[union-attr]
    i = src.index("{% set rec = s.configs|selectattr('recovery')|list %}")
    part = src[i:src.index("</section>", i)]
    env.filters["num"] = lambda v: "" if v is None else str(v)
    b = {"disconnects": 9, "recovered": 0, "recovered_ratio": 0.0, "missed": 93, "duplicated": 0, "reordered": 0,
         "p95_reconnect_ms": 1431.4}
    html = env.from_string(part).render(s={"configs": [{"name": "redis-rec", "recovery": b},
                                                         {"name": "quiet", "recovery": None}]})
    assert "redis-rec" in html and "quiet" not in html and "0% (0)" in html and "1431 ms" in html
    assert "Failover and recovery" not in env.from_string(part).render(s={"configs": [{"name": "q", "recovery": None}]})


T0 = 1_700_000_000


def _cells(*rows: tuple[float, str, int, float | None]) -> pd.DataFrame:
    from analysis.aggregates import aggregates_from_rows

    ev = pd.DataFrame([{"config": "c", "ts": ts, "step": s, "ok": ok, "latency_ms": lat, "node": "n1",
                        "transport": "websocket", "error_kind": "", "name": s} for ts, s, ok, lat in rows])
    return aggregates_from_rows(ev)


FAULTS = [{"at": 5, "action": "blip", "target": None, "fraction": 0.3, "cut": 2, "ts": T0 + 5.4, "error": None},
          {"at": 12, "action": "restart_node", "target": "n2", "ts": T0 + 12.2, "error": None},
          {"at": 14, "action": "start_redis", "target": None, "ts": T0 + 14.0, "error": None},  # opens no window
          {"at": 19, "action": "stop_node", "target": "n3", "ts": T0 + 19.1, "error": None},
          {"at": 30, "action": "stop_node", "target": "n1", "ts": None, "error": "not reached: the run ended first"}]


def test_by_fault_splits_losses_recoveries_and_missed_messages_by_the_faults_windows() -> None:
    cells = _cells(
        (T0 + 1, "disconnect", 0, None),  # before any fault: in the whole-run block only
        (T0 + 5.5, "disconnect", 0, None), (T0 + 5.6, "disconnect", 0, None),
        (T0 + 6.5, "reconnect", 1, 800.0), (T0 + 6.6, "recover", 1, 4.0), (T0 + 6.7, "recover", 1, 4.0),
        (T0 + 12.9, "disconnect", 0, None), (T0 + 14.5, "reconnect", 1, 1500.0), (T0 + 14.6, "recover", 0, 4.0),
        *[(T0 + 19.5, "disconnect", 0, None)] * 3, *[(T0 + 21.0, "recover", 0, 4.0)] * 3,
    )
    by_sec = {str(T0 + 7): {"stream_received": 50, "missed": 1, "seq_reordered": 1},
              str(T0 + 15): {"stream_received": 40, "missed": 6},
              str(T0 + 21): {"stream_received": 40, "missed": 9, "seq_duplicated": 2}}
    got = by_fault(FAULTS, cells, None, by_sec)
    assert got is not None and [(f["action"], f["target"]) for f in got] == [
        ("blip", None), ("restart_node", "n2"), ("stop_node", "n3")]
    blip, restart, crash = got
    assert set(RECOVERY_KEYS) <= set(blip) and (blip["fraction"], blip["cut"], blip["at"]) == (0.3, 2, 5)
    assert (blip["disconnects"], blip["recovered"], blip["recovered_ratio"], blip["missed"]) == (2, 2, 1.0, 0)
    assert blip["p95_reconnect_ms"] is not None and abs(blip["p95_reconnect_ms"] - 800) / 800 < 0.05
    assert (restart["disconnects"], restart["recovered_ratio"], restart["missed"]) == (1, 0.0, 6)
    assert (crash["disconnects"], crash["recovered"], crash["missed"], crash["duplicated"]) == (3, 0, 9, 2)
    assert fault_verdict(crash, "redis", True) == ("redis + recovery, crash n3: 0% of sessions recovered (0 of 3 lost), "
                                                   "9 messages missed (3.0 per disconnected user)")
    assert fault_verdict(blip, "redis-streams", True) == ("redis-streams + recovery, blip (30% of the users): 100% of "
                                                          "sessions recovered (2 of 2 lost), 0 messages missed")


def test_by_fault_rows_for_a_fault_that_cut_nothing_and_runs_without_per_second_counters() -> None:
    cells = _cells((T0 + 20, "disconnect", 0, None))
    blip, restart, crash = by_fault(FAULTS, cells, None)  # type: ignore[misc]
    assert (blip["disconnects"], blip["recovered_ratio"], blip["missed"]) == (0, None, None)
    assert fault_verdict({**blip, "cut": 0}, "memory", False) == ("memory, blip (30% of the users): no session "
                                                                 "lost; messages missed not measured")
    assert fault_verdict(crash, "memory", False) == ("memory, crash n3: 1 sessions lost, none recovered (no recovery "
                                                     "asked); messages missed not measured")
    early = {**blip, "cut": 9}  # the blip hit handshakes: the users were not connected yet
    assert "9 connections cut but no session lost" in fault_verdict(early, "redis-streams", True)
    assert by_fault([], cells, None) is None and by_fault([{"action": "start_node", "ts": T0}], cells, None) is None
    # rows without cells (a schema-1 run) are windowed by their ts
    rows = pd.DataFrame([{"ts": T0 + 13.0, "step": "disconnect", "ok": 0, "latency_ms": None}])
    assert [f["disconnects"] for f in by_fault(FAULTS, None, rows)] == [0, 1, 0]  # type: ignore[union-attr]


def test_redis_load_and_the_bad_offset_finding() -> None:
    res = pd.DataFrame([
        {"component": "redis", "id": "redis", "metric": m, "value": v}
        for m, v in (("cpu_percent", 2.0), ("cpu_percent", 4.0), ("ops_per_sec", 100), ("ops_per_sec", 300),
                     ("used_memory_bytes", 1e6), ("used_memory_bytes", 2e6))
    ] + [{"component": "node", "id": "n1", "metric": "cpu_percent", "value": 50.0}])
    assert redis_load(res) == {"cpu_percent": 3.0, "ops_per_sec": 200.0, "used_memory_bytes": 2e6, "stream_length": None}
    streams = pd.concat([res, pd.DataFrame([{"component": "redis", "id": "redis", "metric": "stream_length", "value": v}
                                            for v in (10.0, 4000.0)])])
    assert redis_load(streams)["stream_length"] == 4000.0  # type: ignore[index]
    assert redis_load(res[res["component"] == "node"]) is None and redis_load(None) is None
    said = bad_offset_verdict({"bad_offsets": 2771, "recovered": 0}, "redis-sharded")
    assert said is not None and said.startswith("redis-sharded + recovery: the server appended 2771 offsets")
    assert "stores nothing" in said
    assert bad_offset_verdict({"bad_offsets": 0, "recovered": 0}, "redis-sharded") is None


def test_the_failover_table_has_one_row_per_config_and_fault_with_its_verdict() -> None:
    import jinja2

    from analysis import report

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(report.Path(report.__file__).parent / "templates")),
                             undefined=jinja2.ChainableUndefined)
    src = env.loader.get_source(env, "report.html.j2")[0]  # type: ignore[union-attr]
    i = src.index("{% set rec = s.configs|selectattr('recovery')|list %}")
    part = src[i:src.index("</section>", i)]
    env.filters["num"] = lambda v: "" if v is None else str(v)
    env.globals |= {"fault_label": fault_label, "fault_verdict": fault_verdict}
    blocks = by_fault(FAULTS, _cells((T0 + 20, "disconnect", 0, None), (T0 + 21, "recover", 0, 3.0)), None)
    b = {**recovery_block(None, _cells((T0 + 20, "disconnect", 0, None))), "by_fault": blocks,  # type: ignore[dict-item]
         "redis": {"cpu_percent": 3.5, "ops_per_sec": 812.0, "used_memory_bytes": 1e6}}
    html = env.from_string(part).render(s={"configs": [{"name": "redis-rec", "recovery": b, "config": {"adapter": "redis"},
                                                         "options": {"recovery": True}}]})
    failover = html[:html.index("</table>")]  # the first table; the catch-up table follows it, one row per config
    assert failover.count("<tr><td>redis-rec</td>") == 3
    assert "crash n3 at 19 s" in html and "graceful restart n2 at 12 s" in html and "812.0" in html and "3.5%" in html
    assert "redis + recovery, crash n3: 0% of sessions recovered (0 of 1 lost)" in html
