"""Bad data never becomes wrong figures: the loader drops or blanks what cannot be real, and says so with counts.

Issue 9, part 5 reproducers: a ts of nan, inf, 1e308 or -1e20 gave "103.4 % connect success";
negative, infinite or 1e308 latencies passed without a warning (a 40-digit p95; a mix crashed the
plots with "x and y must be the same size"); events.csv concatenated with itself turned a 100 %
upgrade into a fraction of it, undetected.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis import metrics as M
from analysis import plots as P
from analysis.load import MAX_LATENCY_MS, load_run
from analysis.report import write_report
from contract.rows import COLUMNS, STEPS
from tests.synth import SynthConfig, write_run

TS, STEP, LAT, OK, KIND, TRANSPORT = (COLUMNS.index(c) for c in ("ts", "step", "latency_ms", "ok", "error_kind",
                                                                  "transport"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic sticky run: every user connects and upgrades (100 % / 100 %)."""
    return write_run(tmp_path_factory.mktemp("clean") / "r", SynthConfig("r", users=10, duration=5, seed=1))


def _copy(src: Path, dst: Path, edit: Callable[[list[str]], list[str]]) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    lines = (src / "events.csv").read_text().splitlines()
    (dst / "events.csv").write_text("\n".join(edit(lines)) + "\n")
    return dst


def _set(col: int, value: str, step: str, k: int) -> Callable[[list[str]], list[str]]:
    """Set column `col` to `value` in the first `k` rows of `step` (fields here carry no quoted commas)."""
    def edit(lines: list[str]) -> list[str]:
        out, n = [lines[0]], 0
        for line in lines[1:]:
            f = line.split(",")
            if f[STEP] == step and n < k:
                f[col], n = value, n + 1
            out.append(",".join(f))
        return out
    return edit


def _conn(d: Path) -> dict:
    return M.connection_ratios(load_run(d).events).set_index("config").iloc[0].to_dict()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "-1e20", "0", "1.5e9", "4102444800"])
def test_impossible_timestamps_are_dropped_counted_and_never_lift_a_ratio(clean: Path, tmp_path: Path,
                                                                           value: str) -> None:
    d = _copy(clean, tmp_path / "r", _set(TS, value, "handshake", 3))
    f = load_run(d)
    c = _conn(d)
    assert c["attempted"] == 7 and c["connected"] == 7 and c["connect_ratio"] == 1.0  # was 10/7 = 143 %
    assert np.isfinite(f.events["ts"]).all()
    (w,) = [w for w in f.warnings if "dropped" in w]
    assert "3 malformed or impossible row(s)" in w and "3 ts" in w, w
    assert [(i["column"], i["count"]) for i in f.data_issues] == [("ts", 3)]


def test_the_window_comes_from_meta_and_falls_back_to_a_sane_range(clean: Path, tmp_path: Path) -> None:
    d = _copy(clean, tmp_path / "r", _set(TS, str(1_760_000_000.0 + 3600), "ack", 2))  # an hour after the run
    meta = json.loads((d / "meta.json").read_text())
    meta["ended"] = 1_760_000_010.0
    (d / "meta.json").write_text(json.dumps(meta))
    f = load_run(d)
    assert any("2 ts outside the run's window" in w for w in f.warnings), f.warnings
    meta["started"], meta["ended"] = "yesterday", None  # no usable window: 2000-01-01 … now
    (d / "meta.json").write_text(json.dumps(meta))
    f = load_run(d)
    assert any("started = 'yesterday' is not a plausible time" in w for w in f.warnings)
    assert not any("dropped" in w for w in f.warnings)  # an hour later is a plausible time


@pytest.mark.parametrize("values, reason", [
    (["-5"], "negative: 3"), (["inf"], "not finite: 3"), (["-inf"], "not finite: 3"),
    (["1e308"], "ceiling: 3"), ([str(MAX_LATENCY_MS * 2)], "ceiling: 3"),
    (["7.2e6"], "began before it started): 3"),  # 2 h: longer than the run so far
])
def test_impossible_latencies_are_blanked_rows_kept(clean: Path, tmp_path: Path, values: list[str],
                                                     reason: str) -> None:
    d = _copy(clean, tmp_path / "r", _set(LAT, values[0], "connect", 3))
    f = load_run(d)
    assert len(f.events) == len(load_run(clean).events)  # the rows stay: the steps happened
    lat = f.events["latency_ms"]
    assert (lat.dropna() >= 0).all() and (lat.dropna() <= MAX_LATENCY_MS).all()
    assert any("blanked 3 impossible value(s)" in w and reason in w for w in f.warnings), f.warnings
    assert _conn(d)["connect_ratio"] == 1.0
    p95 = M.latency_percentiles(f.events, by=("config", "step")).set_index("step").loc["connect", "p95"]
    assert 0 < p95 < 1000  # not a 40-digit number


def test_a_mix_of_bad_latencies_reports_and_plots(clean: Path, tmp_path: Path) -> None:
    def edit(lines: list[str]) -> list[str]:
        for col, v, step in ((LAT, "-5", "connect"), (LAT, "inf", "ack"), (LAT, "1e308", "broadcast_recv")):
            lines = _set(col, v, step, 2)(lines)
        return lines
    d = _copy(clean, tmp_path / "r", edit)
    s = write_report([d], tmp_path / "rep")  # crashed: ValueError "x and y must be the same size"
    assert (tmp_path / "rep" / "plots" / "latency.svg").exists()
    assert any("blanked 6 impossible value(s)" in w for w in s["warnings"]), s["warnings"]
    for step, v in s["configs"][0]["latency_ms"].items():
        assert v["p95"] is None or 0 <= v["p95"] < 1000, (step, v)


def test_latency_plot_survives_a_step_with_p50_but_no_p95() -> None:
    """The plot itself (a frame built by other code) must not crash on what the loader would blank."""
    lat = pd.DataFrame({"config": ["a", "a", "b"], "step": ["ack", "connect", "ack"], "count": [1, 1, 1],
                        "p50": [4.0, 3.0, 2.0], "p95": [5.0, math.nan, 3.0], "p99": [1, 1, 1], "max": [1, 1, 1]})
    assert P.latency_by_step(lat).startswith("<svg")  # connect: a p50, no p95 in any config
    lat["p95"] = [math.inf, 5.0, -math.inf]
    assert P.latency_by_step(lat).startswith("<svg")


def test_concatenated_file_duplicates_are_dropped(clean: Path, tmp_path: Path) -> None:
    """events.csv concatenated with itself: every row twice, and the header once more in the middle."""
    d = _copy(clean, tmp_path / "r", lambda lines: lines + lines)
    n = len(load_run(clean).events)
    f = load_run(d)
    assert len(f.events) == n
    c = _conn(d)
    assert (c["connect_ratio"], c["upgrade_ratio"]) == (1.0, 1.0)
    (w,) = [w for w in f.warnings if "dropped" in w]
    assert "1 repeated header line" in w and f"{n} exact duplicate" in w, w
    assert {i["reason"].split(" (")[0]: i["count"] for i in f.data_issues} == {
        "repeated header line": 1, "exact duplicate of an earlier row": n}


def test_no_two_real_rows_are_equal(clean: Path) -> None:
    """The premise of duplicate detection holds for what the writer produces: every row is distinct."""
    f = load_run(clean)
    assert not f.events.duplicated().any() and not any("duplicate" in w for w in f.warnings)


def test_bad_enums_are_counted(clean: Path, tmp_path: Path) -> None:
    def edit(lines: list[str]) -> list[str]:
        lines = _set(STEP, "teleport", "ack", 2)(lines)
        lines = _set(OK, "2", "join", 1)(lines)
        lines = _set(TRANSPORT, "pigeon", "upgrade", 2)(lines)
        return _set(KIND, "session_unknown", "connect", 1)(lines)  # on an ok=1 row
    d = _copy(clean, tmp_path / "r", edit)
    f = load_run(d)
    text = " | ".join(f.warnings)
    assert "1 ok not 0 or 1" in text
    assert "transport not polling or websocket: 2" in text and "error_kind set on an ok=1 row: 1" in text
    # a step name outside rows.STEPS is a scenario's own step (SocketIOUser takes step=): kept, said
    assert "2 row(s) with scenario step(s) teleport kept" in text
    assert (f.events["step"] == "teleport").sum() == 2
    assert not any(i["column"] == "step" for i in f.data_issues)
    assert set(f.events["transport"]) <= {"polling", "websocket", ""}


def test_a_row_without_a_step_is_dropped(clean: Path, tmp_path: Path) -> None:
    f = load_run(_copy(clean, tmp_path / "r", _set(STEP, "", "ack", 3)))
    assert "3 step missing" in " | ".join(f.warnings)


def test_unknown_error_kind_on_a_failed_row_is_blanked_not_dropped(clean: Path, tmp_path: Path) -> None:
    def edit(lines: list[str]) -> list[str]:
        out, n = [lines[0]], 0
        for line in lines[1:]:
            f = line.split(",")
            if f[STEP] == "ack" and n < 5:
                f[OK], f[KIND], n = "0", "gremlins", n + 1
            out.append(",".join(f))
        return out
    d = _copy(clean, tmp_path / "r", edit)
    f = load_run(d)
    assert "gremlins" not in set(f.events["error_kind"])
    assert any("error_kind not a failure kind" in w for w in f.warnings)
    assert M.failure_counts(f.events)["r"].get("unclassified", 0) > 0  # still counted as a failure


def test_generator_csv_is_validated_the_same_way(clean: Path, tmp_path: Path) -> None:
    d = _copy(clean, tmp_path / "r", lambda lines: lines)
    t = 1_760_000_001
    (d / "generator.csv").write_text(
        "ts,worker,cpu_percent,users\n"
        f"{t},local,10,3\n{t},local,10,3\n"                  # a copied reading
        "ts,worker,cpu_percent,users\n"                       # a second file's header
        f"1e308,local,5,3\nnan,local,5,3\n{t + 1},local,inf,3\n{t + 2},local,20,-4\n{t + 3},local,30,3\n")
    f = load_run(d)
    assert f.generator["cpu_percent"].tolist() == [10.0, 30.0]
    (w,) = [w for w in f.warnings if w.startswith("r: generator.csv: dropped")]
    for part in ("1 repeated header line", "1 malformed line", "1 ts infinite or outside", "1 cpu_percent not in",
                 "1 users negative", "1 duplicate reading"):
        assert part in w, (part, w)


def test_locust_history_rows_with_impossible_times_are_dropped(clean: Path, tmp_path: Path) -> None:
    d = _copy(clean, tmp_path / "r", lambda lines: lines)
    p = d / "locust_stats_history.csv"
    lines = p.read_text().splitlines()
    n = len(lines) - 1
    bad = lines[1].split(",")
    bad[0] = "1e308"
    neg = lines[1].split(",")
    neg[1] = "-3"
    p.write_text("\n".join([*lines, ",".join(bad), ",".join(neg)]) + "\n")
    f = load_run(d)
    assert len(f.locust_history) == n
    assert any("locust_stats_history.csv: dropped 2" in w for w in f.warnings), f.warnings


_NUM = st.one_of(st.sampled_from(["", "nan", "inf", "-inf", "1e308", "-1e20", "0", "-5", "abc", "1e-300"]),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.floats(1_759_999_000.0, 1_760_001_000.0).map(repr))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_NUM, st.sampled_from([*STEPS, "teleport", ""]),
                               _NUM, st.sampled_from(["0", "1", "2", ""]),
                               st.sampled_from(["", "timeout", "http_503", "gremlins"]),
                               st.sampled_from(["u1", "u2"]), st.sampled_from(["s1", "s2", ""])),
                     max_size=30),
       repeat=st.integers(0, 2))
def test_hostile_events_never_raise_and_never_exceed_bounds(tmp_path: Path, rows: list[tuple], repeat: int) -> None:
    """Any mix of hostile values: the load never raises, what it keeps is in range, every ratio in [0, 1]."""
    d = Path(tempfile.mkdtemp(dir=tmp_path))  # one fixture directory serves every generated example
    (d / "meta.json").write_text(json.dumps({"run": "h", "started": 1_760_000_000.0, "ended": 1_760_000_060.0,
                                             "config": {"transports": ["polling", "websocket"]}}))
    lines = [",".join(COLUMNS)]
    for ts, step, lat, ok, kind, user, sid in rows:
        f = [""] * len(COLUMNS)
        f[TS], f[STEP], f[LAT], f[OK], f[KIND] = ts, step, lat, ok, kind
        f[COLUMNS.index("user")], f[COLUMNS.index("eio_sid")] = user, sid
        lines.append(",".join(f))
    (d / "events.csv").write_text("\n".join(lines + lines * repeat) + "\n")
    fr = load_run(d)
    ev = fr.events
    assert ev["ts"].between(1_760_000_000.0 - 600, 1_760_000_060.0 + 600).all()
    assert ev["latency_ms"].dropna().between(0, MAX_LATENCY_MS).all()
    # the lines a file holds twice make no difference: the same frame as from each line once
    # (two lines that differ only in a value the loader blanks stay two rows: they are not copies)
    once = Path(tempfile.mkdtemp(dir=tmp_path))
    (once / "meta.json").write_text((d / "meta.json").read_text())
    (once / "events.csv").write_text("\n".join(dict.fromkeys(lines)) + "\n")
    pd.testing.assert_frame_equal(ev, load_run(once).events)
    c = M.connection_ratios(ev)
    for col in ("connect_ratio", "upgrade_ratio"):
        assert all(math.isnan(v) or 0 <= v <= 1 for v in c[col])
    M.latency_percentiles(ev)
