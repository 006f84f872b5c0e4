"""resources.csv loading: what cannot be a sample is dropped and counted, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.load import Tally, Window, load_run, load_runs, read_resources
from contract.resources import RESOURCES_CSV

T0 = 1_760_000_000.0
HEADER = "ts,run,component,id,metric,value\n"


def _read(path: Path, window: Window | None = None) -> tuple:
    warns: list[str] = []
    issues: list[dict] = []
    df = read_resources(path, warns.append, window, Tally(warns.append, RESOURCES_CSV, issues))
    return df, warns, {i["reason"]: i["count"] for i in issues}


def test_hostile_lines_are_dropped_per_reason_and_the_rest_kept(tmp_path: Path) -> None:
    good = [f"{T0 + 1},r,node,n1,cpu_percent,12.5", f"{T0 + 1},r,node,n1,rss_bytes,4e7",
            f"{T0 + 1},r,redis,redis,warning:timeout,1", f"{T0 + 2},r,balancer,haproxy,queue,0"]
    bad = ["abc,r,node,n1,cpu_percent,1", f"{T0 + 1},r,node,n1,clients,nan", f"{T0 + 1},r,node,n1,clients,inf",
           f"{T0 + 1},r,node,n1,open_fds,-3", f"{T0 + 1},r,database,db,cpu_percent,1", f"{T0 + 1},r,node,n1,foo,1",
           "86400,r,node,n1,cpu_percent,1", f"{T0 + 1},r,node, ,cpu_percent,1", f"{T0 + 1},r,node,n1,cpu_percent,12.5",
           "ts,run,component,id,metric,value", f"{T0 + 1},r,node,n1,cpu_percent,1,extra,fields"]
    p = tmp_path / RESOURCES_CSV
    p.write_text(HEADER + "\n".join(good + bad) + f"\n{T0 + 3},r,node,n1,cpu_perc")  # cut mid-line by a SIGKILL
    win = Window(T0 - 600, T0 + 600, "the run's window")
    df, warns, reasons = _read(p, win)
    assert len(df) == 4 and list(df.columns) == ["ts", "component", "id", "metric", "value"]
    assert "warning:timeout" in set(df["metric"])  # a sampler's warning row is kept (the gap is real)
    assert any("last line was cut off" in w for w in warns)
    assert any("the sampler could not take 1 sample(s) (redis/redis timeout ×1)" in w for w in warns)
    assert reasons == {
        "repeated header line (files concatenated?)": 1, "ts not a number": 1,
        "ts infinite or outside the run's window": 1, "component not one of node, balancer, redis, generator": 1,
        "metric not one of contract.resources.METRICS (nor a warning)": 1, "empty id": 1,
        "value not a finite number": 2, "negative value (every metric is a level ≥ 0)": 1,
        "duplicate sample (same ts, component, id and metric)": 1, "line with a wrong number of fields": 1}


@pytest.mark.parametrize("content, says", [
    (b"", "is empty"),
    (b"\x00\xff\xfe garbage\x00\n\x01\x02\n", "missing column"),
    (b"a,b,c\n1,2,3\n", "missing column"),
    (HEADER.encode(), None),  # a header only: no rows, nothing wrong
    (b"ts,run,component,id,metric,value", "cut off"),  # not even a full header line
])
def test_unusable_files_give_one_warning_and_no_rows(tmp_path: Path, content: bytes, says: str | None) -> None:
    p = tmp_path / RESOURCES_CSV
    p.write_bytes(content)
    df, warns, _ = _read(p)
    assert not len(df)
    assert (says is None and not warns) or any(says in w for w in warns), warns


def test_missing_file_is_no_warning_and_frames_carry_the_config(tmp_path: Path) -> None:
    df, warns, _ = _read(tmp_path / RESOURCES_CSV)
    assert not len(df) and not warns  # runs made before issue 12
    dirs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "meta.json").write_text(json.dumps({"run": "same", "started": T0, "ended": T0 + 60, "config": {}}))
        (d / RESOURCES_CSV).write_text(HEADER + f"{T0 + 1},same,node,n1,cpu_percent,5\n")
        dirs.append(d)
    one = load_run(dirs[0])
    assert list(one.resources["config"]) == ["same"] and not [w for w in one.warnings if RESOURCES_CSV in w]
    both = load_runs(dirs)  # two runs with one name: the second is renamed, its resources too
    assert sorted(both.resources["config"]) == ["same", "same#2"]
