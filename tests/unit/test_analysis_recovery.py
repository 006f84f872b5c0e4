"""summary.json `configs[].recovery` from hand-made rows (analysis/recovery.py), and its verdict."""

from __future__ import annotations

import pandas as pd

from analysis.recovery import RECOVERY_KEYS, recovery_block, recovery_verdict
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
