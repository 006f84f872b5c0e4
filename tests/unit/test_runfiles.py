"""analysis/runfiles.py: schema-2 run files read column by column, a SIGKILL's cut stream read up to its cut."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import runfiles as rf
from contract.eventfiles import AGGREGATES, DELIVERY, EVENT_TYPES
from contract.rows import COLUMNS
from tests.synth import SynthConfig, write_run, write_run_v2, write_stream


def _cfg() -> SynthConfig:
    return SynthConfig("rf", policy="l4-round-robin", users=12, duration=6.0)


def test_schema_version(tmp_path: Path) -> None:
    assert rf.schema_version(write_run(tmp_path / "v1", _cfg())) == 1
    assert rf.schema_version(tmp_path / "nothing") == 1
    v2 = write_run_v2(tmp_path / "v2", _cfg())
    assert rf.schema_version(v2) == 2
    (v2 / "eventlog.json").unlink()  # the files alone say it
    assert rf.schema_version(v2) == 2
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "eventlog.json").write_text(json.dumps({"schema_version": 2}))
    assert rf.schema_version(bare) == 2


def test_parquet_and_stream_read_the_same(tmp_path: Path) -> None:
    a = write_run_v2(tmp_path / "a", _cfg())
    b = write_run_v2(tmp_path / "b", _cfg(), compact=False, batch_rows=50)
    assert not (b / "aggregates.parquet").exists() and (b / "aggregates.arrows").exists()
    ra, rb = rf.read_rows(a), rf.read_rows(b)
    assert list(ra.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(ra.astype({c: str for c in ra if ra[c].dtype == "category"}),
                                  rb.astype({c: str for c in rb if rb[c].dtype == "category"}))
    assert ra["ok"].dtype == np.int8 and ra["ts"].dtype == np.float64 and ra["step"].dtype == "category"
    ga, gb = rf.read_aggregates(a), rf.read_aggregates(b)
    assert ga is not None and gb is not None
    assert len(gb) > len(ga)  # the stream holds one key in several batches; Parquet merged them
    assert int(ga["count"].sum()) == int(gb["count"].sum())
    key = ["second", "step", "name", "node", "transport", "ok", "error_kind"]
    sa = ga.astype({c: str for c in key}).groupby(key)["lat_count"].sum()
    sb = gb.astype({c: str for c in key}).groupby(key)["lat_count"].sum()
    pd.testing.assert_series_equal(sa, sb)
    assert all(len(bk) == len(ct) and ct.sum() == n for bk, ct, n in
               zip(ga["hist_bucket"], ga["hist_count"], ga["lat_count"], strict=True))


def test_only_the_requested_columns(tmp_path: Path) -> None:
    a = write_run_v2(tmp_path / "a", _cfg())
    df = rf.read_rows(a, columns=["ts", "step", "ok"])
    assert list(df.columns) == ["ts", "step", "ok"]
    g = rf.read_aggregates(a, columns=["second", "count"])
    assert g is not None and list(g.columns) == ["second", "count"]
    with pytest.raises(ValueError):
        rf.read_table(a, AGGREGATES, ["nope"])


def test_cut_stream_reads_complete_batches_and_says_so(tmp_path: Path) -> None:
    batches = [[[1_760_000_000 + i, i, 2 * i, i, 0, 1_760_000_010.0 + i]] for i in range(5)]
    p = tmp_path / "delivery.arrows"
    write_stream(p, DELIVERY, batches)
    whole = rf.read_delivery(tmp_path)
    assert whole is not None and list(whole["sent"]) == [0, 1, 2, 3, 4]
    raw = p.read_bytes()
    # cut inside the last batch (a SIGKILL while writing it): the first four are intact
    p.write_bytes(raw[: len(raw) - 20])
    said: list[str] = []
    cut = rf.read_delivery(tmp_path, warn=said.append)
    assert cut is not None and list(cut["sent"]) == [0, 1, 2, 3]
    assert len(said) == 1 and "cut" in said[0] and "4 complete batch" in said[0]
    # a stream cut inside its schema holds nothing readable: None, said
    p.write_bytes(raw[:10])
    said.clear()
    assert rf.read_delivery(tmp_path, warn=said.append) is None and said


def test_unreadable_parquet_falls_back_to_the_stream(tmp_path: Path) -> None:
    b = write_run_v2(tmp_path / "b", _cfg(), compact=False)
    (b / "events.parquet").write_bytes(b"PAR1 this is not a parquet file")
    said: list[str] = []
    rows = rf.read_rows(b, warn=said.append)
    assert len(rows) > 0 and any("events.parquet cannot be read" in s for s in said)


def test_delivery_keeps_the_newest_write_of_a_second(tmp_path: Path) -> None:
    write_stream(tmp_path / "delivery.arrows", DELIVERY, [
        [[100, 1, 10, 5, 0, 101.0], [101, 2, 20, 10, 0, 101.0]],
        [[100, 1, 10, 9, 0, 102.0]],
        [[100, 1, 10, 7, 0, 101.5]],  # an older write arriving later does not win
    ])
    d = rf.read_delivery(tmp_path)
    assert d is not None
    assert d.set_index("second")["delivered"].to_dict() == {100: 9, 101: 10}


def test_wrong_type_and_missing_column(tmp_path: Path) -> None:
    t = pa.table({"second": pa.array(["a", "b"]), "sent": pa.array([1, 2], pa.int64())})
    pq.write_table(t, tmp_path / "delivery.parquet")
    said: list[str] = []
    assert rf.read_table(tmp_path, DELIVERY, warn=said.append) is None
    assert any("column second" in s for s in said)
    t = pa.table({"second": pa.array([1, 2], pa.int32()), "sent": pa.array([1, 2], pa.int64())})
    pq.write_table(t, tmp_path / "delivery.parquet")
    said.clear()
    d = rf.read_table(tmp_path, DELIVERY, warn=said.append)
    assert d is not None and d["second"].dtype == np.int64 and d["expected"].isna().all()
    assert any("missing column(s) expected" in s for s in said)


def test_no_files_no_frame(tmp_path: Path) -> None:
    assert rf.read_aggregates(tmp_path) is None and rf.read_delivery(tmp_path) is None
    rows = rf.read_rows(tmp_path)
    assert len(rows) == 0 and list(rows.columns) == list(EVENT_TYPES)


def test_null_lists_and_nulls_in_text(tmp_path: Path) -> None:
    schema = rf.arrow_schema(AGGREGATES)
    cols: dict[str, pa.Array] = {}
    for f in schema:
        if f.name == "hist_bucket":
            cols[f.name] = pa.array([None, [3, 4]], f.type)
        elif f.name == "hist_count":
            cols[f.name] = pa.array([None, [1, 1]], f.type)
        elif pa.types.is_string(f.type):
            cols[f.name] = pa.array([None, "x"], f.type)
        else:
            cols[f.name] = pa.array([1, 2], f.type)
    pq.write_table(pa.table(cols, schema=schema), tmp_path / "aggregates.parquet")
    g = rf.read_aggregates(tmp_path)
    assert g is not None
    assert list(g["hist_bucket"].iloc[0]) == [] and list(g["hist_bucket"].iloc[1]) == [3, 4]
    assert list(g["step"].astype(str)) == ["", "x"]
