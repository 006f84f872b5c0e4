"""Schema-2 run directories (issue 11): the same run written both ways gives the same summary.json,
and hostile aggregates/delivery files are dropped and counted, never a crash."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from analysis import runfiles as rf
from analysis.load import load_run
from analysis.report import write_report
from contract.eventfiles import AGGREGATES, DELIVERY
from contract.histogram import RELATIVE_ERROR
from contract.rowpolicy import RowPolicyConfig
from tests.synth import SynthConfig, write_run, write_run_v2

CONFIGS = [
    SynthConfig("rr-poll+ws", policy="l4-round-robin", users=30, duration=8.0),
    SynthConfig("rr-ws", policy="l4-round-robin", transports=("websocket",), users=30, duration=8.0, seed=1),
    SynthConfig("cookie-memory", policy="cookie", users=30, duration=8.0, seed=2),
    SynthConfig("cookie-redis", policy="cookie", adapter="redis", users=30, duration=8.0, seed=3),
    SynthConfig("steps", policy="cookie", steps=((10, 4.0), (20, 4.0), (30, 4.0)), capacity_per_node=6, seed=4),
]


def differences(a: Any, b: Any, path: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """Where two summaries differ: ints and text exactly, floats beyond the histogram's relative error."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) if k not in ("generated", *skip)
                for d in differences(a.get(k), b.get(k), f"{path}.{k}", skip)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]", skip)]
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=RELATIVE_ERROR):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, dict, Path]]:
    root = tmp_path_factory.mktemp("both")
    out = {}
    for c in CONFIGS:
        v1, v2 = write_run(root / "v1" / c.name, c), write_run_v2(root / "v2" / c.name, c)
        out[c.name] = (write_report([v1], root / "r1" / c.name), write_report([v2], root / "r2" / c.name), v2)
    return out


@pytest.mark.parametrize("name", [c.name for c in CONFIGS])
def test_the_same_run_both_ways_gives_the_same_summary(both: dict, name: str) -> None:
    s1, s2, v2 = both[name]
    c1, c2 = s1["configs"][0], s2["configs"][0]
    assert differences(c1, c2) == []
    assert c1["status"] == "ok" and c2["events"] == c1["events"] > 0
    # the kept rows are fewer than the steps, yet every count above is exact
    assert len(rf.read_rows(v2, ["ts"])) < c2["events"]


def test_the_figures_that_matter_are_there(both: dict) -> None:
    rr = both["rr-poll+ws"][1]["configs"][0]
    assert rr["failures"]["session_unknown"] > 0 and rr["connections"]["connect_ratio"] < 0.8
    mem, red = both["cookie-memory"][1]["configs"][0], both["cookie-redis"][1]["configs"][0]
    assert 0 < mem["broadcast"]["delivery_ratio"] < 0.6 and red["broadcast"]["delivery_ratio"] == 1.0
    assert mem["broadcast"]["expected"] > 0 and mem["latency_ms"]["ack"]["p95"] > 0
    steps = both["steps"][1]["configs"][0]
    assert steps["capacity"]["stages"] == 3


def test_a_stingy_row_policy_changes_no_count(tmp_path: Path) -> None:
    """No sampled row at all and one failure row a second: counts, latencies, sessions, nodes and delivery
    still equal the every-row run's. The node-switch attribution's totals are the cells' exact counts too;
    its shares rest on the kept failure rows (`rows` says how many), so only they may differ."""
    c = CONFIGS[0]
    v1 = write_run(tmp_path / "v1", c)
    v2 = write_run_v2(tmp_path / "v2", c, RowPolicyConfig(sample_rate=0.0, first_n=0, failure_rows_per_s=1))
    s1, s2 = write_report([v1], tmp_path / "r1"), write_report([v2], tmp_path / "r2")
    assert differences(s1["configs"][0], s2["configs"][0], skip=("node_switch", "sessions", "verdicts", "description")) == []
    # sessions rest on state rows (always kept); only the step that ended each one rests on a kept failure row
    x1, x2 = s1["configs"][0]["sessions"], s2["configs"][0]["sessions"]
    loose = ("end_steps", "top_end_step")
    assert {k: v for k, v in x1.items() if k not in loose} == {k: v for k, v in x2.items() if k not in loose}
    assert sum(x1["end_steps"].values()) == sum(x2["end_steps"].values()) == x1["failed"] > 0
    assert load_run(v2).runs["n_rows"].iloc[0] < 0.8 * load_run(v1).runs["n_rows"].iloc[0]
    n1, n2 = s1["configs"][0]["node_switch"], s2["configs"][0]["node_switch"]
    assert n1["session_unknown"] > 0 and n1["rows"] == n1["session_unknown"]
    assert n2["session_unknown"] == n1["session_unknown"] == s1["configs"][0]["failures"]["session_unknown"]
    assert [n2[k] for k in ("polling", "probe", "follow_on")] == [n1[k] for k in ("polling", "probe", "follow_on")]
    assert n2["rows"] < n2["session_unknown"]  # the budget cut rows, not counts
    assert 0 <= n2["polling_attributed"] <= n2["polling"] and abs(n2["share"] - n1["share"]) <= 0.25


def test_a_killed_run_reads_its_streams(tmp_path: Path) -> None:
    c = CONFIGS[2]
    whole = load_run(write_run_v2(tmp_path / "done", c))
    killed_dir = write_run_v2(tmp_path / "killed", c, compact=False, batch_rows=200)
    killed = load_run(killed_dir)
    assert killed.warnings == []
    assert killed.runs["n_events"].iloc[0] == whole.runs["n_events"].iloc[0]
    # no delivery second is final: those within the grace window of the end are left out, none added
    s_done = write_report([tmp_path / "done"], tmp_path / "r1")["configs"][0]["broadcast"]
    s_kill = write_report([killed_dir], tmp_path / "r2")["configs"][0]["broadcast"]
    assert 0 < s_kill["sent"] <= s_done["sent"] and s_kill["expected"] <= s_done["expected"]
    # SIGKILL mid-write: the aggregates stream's last batch is cut
    p = killed_dir / "aggregates.arrows"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 50])
    cut = load_run(killed_dir)
    assert any("aggregates.arrows" in w and "cut" in w for w in cut.warnings)
    assert 0 < cut.runs["n_events"].iloc[0] < whole.runs["n_events"].iloc[0]
    assert write_report([killed_dir], tmp_path / "r3")["configs"][0]["steps"]["total"] > 0


def _rewrite(path: Path, kind: str, edit: Any) -> None:
    """Read a Parquet file as pandas, let `edit` change it, write it back with the contract's schema."""
    df = pq.read_table(path).to_pandas()
    df = edit(df)
    schema = rf.arrow_schema(kind)
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), path)


def _issues(f: Any, file: str) -> dict[str, int]:
    return {i["reason"]: i["count"] for i in f.data_issues if i["file"] == file}


def test_hostile_aggregates_are_dropped_and_counted(tmp_path: Path) -> None:
    d = write_run_v2(tmp_path / "h", CONFIGS[0])
    good = load_run(d)
    n_good = len(good.aggregates)

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[0, "count"] = -3
        df.loc[1, "lat_count"] = df.loc[1, "count"] + 5
        i = int(np.flatnonzero(df["lat_count"].to_numpy() > 1)[2])
        df.at[i, "hist_count"] = np.array(df.loc[i, "hist_count"]) * 2  # no longer adds up
        j = int(np.flatnonzero(df["lat_count"].to_numpy() > 0)[5])
        df.loc[j, "lat_sum_ms"] = math.nan
        df.loc[4, "second"] = 99_999_999_999
        df.loc[5, "ok"] = 7
        k = int(np.flatnonzero(df["ok"].to_numpy() == 0)[-1])  # a failed cell none of the above touched
        df.loc[k, "error_kind"] = "bogus"
        return df

    _rewrite(d / "aggregates.parquet", AGGREGATES, edit)
    f = load_run(d)
    got = _issues(f, "aggregates.parquet")
    assert got["count negative or missing"] == 1
    assert got["latency count negative, missing or above the count"] == 1
    assert got["histogram does not add up to its latency count"] == 1
    assert got["latency sum/min/max not finite, negative or min above max"] == 1
    assert got["ok not 0 or 1"] == 1
    assert sum(n for r, n in got.items() if r.startswith("second outside")) == 1
    assert got["not a failure kind (rows.ERROR_KINDS or http_<status>)"] == 1
    assert len(f.aggregates) == n_good - 6
    assert any(w.startswith("rr-poll+ws: aggregates.parquet: dropped 6") for w in f.warnings)
    s = write_report([d], tmp_path / "r")["configs"][0]
    assert s["status"] == "degraded" and s["failures"].get("unclassified", 0) >= 1


def test_hostile_delivery_is_dropped_and_counted(tmp_path: Path) -> None:
    d = write_run_v2(tmp_path / "h", CONFIGS[2])

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[0, "delivered"] = df.loc[0, "expected"] + 1
        df.loc[1, "sent"] = -1
        df.loc[2, "written"] = math.inf
        return df

    _rewrite(d / "delivery.parquet", DELIVERY, edit)
    f = load_run(d)
    got = _issues(f, "delivery.parquet")
    assert got == {"delivered above expected": 1, "sent/expected/delivered negative or missing": 1,
                   "written not finite": 1}
    b = write_report([d], tmp_path / "r")["configs"][0]["broadcast"]
    assert 0 <= b["delivered"] <= b["expected"]


@pytest.mark.parametrize("damage", ["wrong type", "garbage stream", "no aggregates"])
def test_unreadable_aggregates_give_a_report_not_a_traceback(tmp_path: Path, damage: str) -> None:
    d = write_run_v2(tmp_path / "h", CONFIGS[0])
    p = d / "aggregates.parquet"
    if damage == "wrong type":
        t = pq.read_table(p)
        t = t.set_column(t.schema.get_field_index("count"), "count", pa.array(["x"] * len(t)))
        pq.write_table(t, p)
    elif damage == "garbage stream":
        p.unlink()
        (d / "aggregates.arrows").write_bytes(b"\xff\xff\xff\xff garbage" * 10)
    else:
        p.unlink()
    f = load_run(d)
    assert f.warnings and len(f.aggregates) == 0 and len(f.events) > 0
    s = write_report([d], tmp_path / "r")["configs"][0]
    assert s["status"] == "failed" and s["events"] == 0


def test_a_campaign_mixing_both_schemas_reports_each_as_alone(both: dict, tmp_path: Path) -> None:
    """Old CSV runs and new ones side by side (a campaign rerun in part): each config as in its own report."""
    v1 = write_run(tmp_path / "runs" / "rr-poll+ws", CONFIGS[0])
    v2 = both["cookie-memory"][2]
    s = {c["name"]: c for c in write_report([v1, v2], tmp_path / "r")["configs"]}
    assert differences(s["rr-poll+ws"], both["rr-poll+ws"][0]["configs"][0], skip=("redis_vs_memory",)) == []
    assert differences(s["cookie-memory"], both["cookie-memory"][1]["configs"][0], skip=("redis_vs_memory",)) == []


def test_a_stream_with_plain_strings_reads_as_one_with_dictionaries(tmp_path: Path) -> None:
    """The event log writes plain strings in its streams, tests.synth dictionary-encoded ones: the same frame."""
    d = write_run_v2(tmp_path / "dict", CONFIGS[0], compact=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    t = ipc.open_stream(pa.OSFile(str(d / "aggregates.arrows"), "rb")).read_all()
    t = t.cast(rf.arrow_schema(AGGREGATES))  # dictionaries decoded to plain strings
    with pa.OSFile(str(plain / "aggregates.arrows"), "wb") as sink, ipc.new_stream(sink, t.schema) as w:
        for b in t.to_batches(max_chunksize=100):
            w.write_batch(b)
    a, b = rf.read_aggregates(d), rf.read_aggregates(plain)
    assert a is not None and b is not None
    pd.testing.assert_frame_equal(a.drop(columns=["hist_bucket", "hist_count"]).astype(str),
                                  b.drop(columns=["hist_bucket", "hist_count"]).astype(str))
    assert [x.tolist() for x in a["hist_count"]] == [x.tolist() for x in b["hist_count"]]


def test_hostile_kept_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    d = write_run_v2(tmp_path / "h", CONFIGS[0])
    n = len(load_run(d).events)

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[3, "ts"] = math.nan
        df.loc[4, "ts"] = 4e12
        df.loc[5, "step"] = None
        return pd.concat([df, df.iloc[[10]]], ignore_index=True)  # a row held twice

    _rewrite(d / "events.parquet", "events", edit)
    f = load_run(d)
    got = _issues(f, "events.parquet")
    assert got["ts missing or not a number"] == 1 and got["step missing"] == 1
    assert sum(v for k, v in got.items() if k.startswith("ts outside")) == 1
    assert got["exact duplicate of an earlier row (file holds rows twice?)"] == 1
    assert len(f.events) == n - 3


def test_two_receipts_of_one_user_at_one_ts_are_two_rows_not_a_duplicate(tmp_path: Path) -> None:
    """Only msg_id tells them apart: judged without it, the run was marked degraded for a row 'held twice'."""
    from contract.rows import COLUMNS, make_row
    from tests.synth import simulate

    c = CONFIGS[0]
    rows, _users = simulate(c)
    t = float(rows[-1][COLUMNS.index("ts")]) - 3.0
    extra = [make_row("broadcast_recv", ts=t, user="u-same", room="r", msg_id=m, latency_ms=1.0) for m in ("m1", "m2")]
    v2 = write_run_v2(tmp_path / "v2", c, RowPolicyConfig(log_all=True),
                      rows=[*rows, *[tuple(r[k] for k in COLUMNS) for r in extra]])
    f = load_run(v2)
    assert not [w for w in f.warnings if "duplicated" in w or "held twice" in w], f.warnings
    kept = f.events[(f.events["user"].astype(str) == "u-same")]
    assert len(kept) == 2


def test_a_schema2_session_that_died_at_a_post_says_which_post(tmp_path: Path) -> None:
    """A failed POST is a "poll" step named by what it carried: read without `name`, a schema-2 run said every
    such session died "at a long-poll GET" (the seed's L4 rows, where they die at the join's emit POST)."""
    from analysis.sessions import session_ends
    from contract.rows import COLUMNS, make_row
    from tests.synth import simulate

    c = CONFIGS[0]
    rows, _users = simulate(c)
    t = float(rows[-1][COLUMNS.index("ts")]) - 3.0
    sid = "sid-dies-at-emit"
    mine = [make_row("handshake", ts=t, user="u-emit", eio_sid=sid, transport="polling", node="n1", latency_ms=1.0),
            make_row("connect", ts=t + 0.005, user="u-emit", eio_sid=sid, transport="polling", node="n1", latency_ms=4.0),
            make_row("node_switch", ts=t + 0.012, user="u-emit", eio_sid=sid, transport="polling", node="n2",
                     error="n1->n2"),
            make_row("poll", ts=t + 0.012, user="u-emit", eio_sid=sid, name="post:emit", transport="polling", node="n2",
                     ok=0, error_kind="session_unknown", error='HTTP 400: "Invalid session"'),
            make_row("disconnect", ts=t + 0.013, user="u-emit", eio_sid=sid, transport="polling", node="n2", ok=0,
                     error_kind="session_unknown", error="transport error")]
    all_rows = [*rows, *[tuple("" if r[k] is None else r[k] for k in COLUMNS) for r in mine]]
    v2 = write_run_v2(tmp_path / "v2", c, rows=all_rows)
    ends = session_ends(load_run(v2).events)
    me = ends[ends["eio_sid"].astype(str) == sid].iloc[0]
    assert (me["outcome"], me["end_step"], me["switched"]) == ("failed", "post:emit", True)
    assert 0.007 <= me["lifetime_s"] <= 0.009
