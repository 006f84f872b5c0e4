"""Run directories → tidy DataFrames, loading what is valid and saying what was not.

A run can end badly (SIGKILL mid-write, a config that never started, a hand-edited CSV),
and the report is most needed exactly then. So nothing here raises on bad input: every
problem becomes a line in `Frames.warnings`, shown in the report, and the valid rest is kept.

Config labels live once in meta.json (not per event row); they are joined here as
categorical columns so every downstream function can group by them.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.config import LABEL_KEYS
from contract.eventfiles import AGGREGATES, DELIVERY, EVENTS
from contract.resources import COMPONENTS, METRICS, RESOURCE_COLUMNS, RESOURCES_CSV, is_warning
from contract.rows import COLUMNS, ERROR_KINDS, GENERATOR_COLUMNS, STEPS

from . import runfiles
from .aggregates import aggregates_from_rows, empty_cells

CONFIG_KEYS: tuple[str, ...] = LABEL_KEYS  # contract.config: RunConfig.labels() keys
"""The config block of meta.json (RunConfig.labels()), in the order the report shows it."""

# Columns kept as categoricals: few distinct values, repeated on every row (fast groupby, small memory).
_CATEGORICAL = ("run", "worker", "user", "eio_sid", "sio_sid", "step", "name", "transport", "node",
                "error_kind", "error", "room", "msg_id")
_NUMERIC = ("ts", "latency_ms", "ok")
_FAST_DTYPES: dict[str, Any] = {c: "category" for c in _CATEGORICAL} | {
    "ts": "float64", "latency_ms": "float64", "ok": "float64"}

EPOCH_MIN = 946_684_800.0
"""2000-01-01: no sioscale row is older. With the far-future bound (now + TS_SLACK_S), the sane range for
a timestamp when meta.json gives no started/ended window."""
TS_SLACK_S = 600.0
"""How far a row's ts may lie outside the run's [started, ended] window (meta.json, the runner's clock):
ts is each Locust process's own clock, so this absorbs clock skew between machines of a distributed
run; anything further (nan, inf, 1e308, -1e20, a 1970 date) cannot be a step of this run."""
MAX_LATENCY_MS = 86_400_000.0
"""The ceiling of a step's duration: one day. Tighter still, a step cannot have begun before the run
started (ts - latency >= started - TS_SLACK_S); both checks blank the value, not the row."""
TRANSPORTS = ("polling", "websocket", "")
_HTTP_KIND = re.compile(r"http_[1-5][0-9][0-9]")


@dataclass
class Frames:
    """Everything loaded from one or more run directories.

    events: one row per client step (rows.COLUMNS) + `config` (the run's name) + CONFIG_KEYS; for a
    schema-2 run the kept rows (contract/rowpolicy.py: every state row), with the columns the figures
    read (ROW_COLUMNS; the others empty).
    runs: one row per run directory: config, dir, status, error, started, ended, n_events (steps, from the
    aggregates: exact), n_rows (rows loaded), schema (1 CSV, 2 aggregates), + CONFIG_KEYS.
    locust_stats / locust_history / locust_failures / locust_exceptions / locust_json: Locust's own
    outputs, with a `config` column. meta / sio_stats: the raw JSON per config name.
    warnings: what could not be loaded, one readable line each ("<config>: <what>").
    """

    events: pd.DataFrame
    runs: pd.DataFrame
    locust_stats: pd.DataFrame
    locust_history: pd.DataFrame
    locust_failures: pd.DataFrame
    locust_exceptions: pd.DataFrame
    locust_json: pd.DataFrame
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    sio_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    generator: pd.DataFrame = field(default_factory=lambda: empty_generator())
    """The load generator's CPU: config, ts, worker (Locust process), cpu_percent, users (generator.csv)."""
    data_issues: list[dict[str, Any]] = field(default_factory=list)
    """What the loader dropped or blanked, one dict per (config, file, action, column, reason) with its
    count: the same facts as the lines in `warnings`, for code (tests, the report) to read."""
    aggregates: pd.DataFrame = field(default_factory=lambda: empty_cells(("config", *CONFIG_KEYS)))
    """Per-second cells (analysis.aggregates; config + CONFIG_KEYS like events): every count and latency
    percentile is read from here. Schema 2: the run's aggregates files; schema 1: derived from events.csv."""
    delivery: pd.DataFrame = field(default_factory=lambda: empty_delivery())
    """Broadcast delivery per send second (config + contract.eventfiles.DELIVERY_TYPES), schema-2 runs only;
    a schema-1 run's delivery is computed from its rows (metrics.broadcast_delivery)."""
    resources: pd.DataFrame = field(default_factory=lambda: empty_resources())
    """The system under test's telemetry (resources.csv, contract/resources.py): config, ts, component, id,
    metric, value; sampler warning rows kept as metric "warning:<kind>". Empty for runs made before it existed."""


@dataclass(frozen=True)
class Window:
    """The time range a row's ts must fall in: the run's [started, ended] ± TS_SLACK_S, or a sane epoch range."""

    lo: float
    hi: float
    label: str

    @staticmethod
    def default() -> Window:
        return Window(EPOCH_MIN, time.time() + TS_SLACK_S, f"2000-01-01 … now + {TS_SLACK_S / 60:g} min")

    @staticmethod
    def from_meta(meta: dict[str, Any], warn: Any) -> Window:
        """From meta.json's started/ended (epoch seconds); ended missing (a killed run): up to now."""
        now = time.time()
        started, ended = _epoch(meta.get("started")), _epoch(meta.get("ended"))
        if started is None or not EPOCH_MIN <= started <= now + TS_SLACK_S:
            if meta.get("started") is not None:
                warn(f"meta.json: started = {meta.get('started')!r} is not a plausible time; rows checked "
                     "against 2000-01-01 … now instead")
            return Window.default()
        if ended is not None and not started <= ended <= now + TS_SLACK_S:
            warn(f"meta.json: ended = {meta.get('ended')!r} is not after started; rows checked up to now")
            ended = None
        label = (f"the run's window ({_utc(started)} … {_utc(ended) if ended else 'now'} UTC "
                 f"± {TS_SLACK_S / 60:g} min)")
        return Window(started - TS_SLACK_S, (ended if ended is not None else now) + TS_SLACK_S, label)


def _epoch(v: Any) -> float | None:
    """A finite number of epoch seconds, else None (bool, text, nan, inf are not times)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


@dataclass
class Tally:
    """Counts what one file's loader dropped or blanked, per reason, and says it in one warning line each.

    Why counts per reason: "3 rows dropped" does not tell a reader whether the run or the file is
    at fault; "3 ts outside the run's window, 120 exact duplicates" does.
    """

    warn: Any
    file: str
    issues: list[dict[str, Any]] | None = None
    dropped: list[tuple[str, str, int]] = field(default_factory=list)
    blanked: list[tuple[str, str, int]] = field(default_factory=list)

    def drop(self, column: str, reason: str, n: int) -> None:
        if n:
            self.dropped.append((column, reason, n))

    def blank(self, column: str, reason: str, n: int) -> None:
        if n:
            self.blanked.append((column, reason, n))

    def flush(self, rows: int) -> None:
        """Emit the warning lines (and `issues` entries); `rows` = rows kept, for scale."""
        if self.dropped:
            total = sum(n for _, _, n in self.dropped)
            self.warn(f"{self.file}: dropped {total} malformed or impossible row(s) ({rows} kept): "
                      + "; ".join(f"{n} {reason}" for _, reason, n in self.dropped))
        if self.blanked:
            total = sum(n for _, _, n in self.blanked)
            self.warn(f"{self.file}: blanked {total} impossible value(s), their rows kept: "
                      + "; ".join(f"{col} {reason}: {n}" for col, reason, n in self.blanked))
        if self.issues is not None:
            for action, items in (("dropped", self.dropped), ("blanked", self.blanked)):
                self.issues.extend({"file": self.file, "action": action, "column": col, "reason": reason,
                                    "count": n} for col, reason, n in items)
        self.dropped, self.blanked = [], []


def empty_events() -> pd.DataFrame:
    """An events frame with the right columns and dtypes and no rows."""
    df = pd.DataFrame({c: pd.Series(dtype=_FAST_DTYPES[c]) for c in COLUMNS})
    df["config"] = pd.Series(dtype="category")
    for k in CONFIG_KEYS:
        df[k] = pd.Series(dtype="category")
    return df


def empty_delivery() -> pd.DataFrame:
    """A delivery frame with the right columns and no rows."""
    return pd.DataFrame({"config": pd.Series(dtype="category"), "second": pd.Series(dtype="int64"),
                         "sent": pd.Series(dtype="int64"), "expected": pd.Series(dtype="int64"),
                         "delivered": pd.Series(dtype="int64"), "final": pd.Series(dtype="int8"),
                         "written": pd.Series(dtype="float64")})


def empty_generator() -> pd.DataFrame:
    """A generator frame with the right columns and no rows."""
    return pd.DataFrame({"config": pd.Series(dtype=str), "ts": pd.Series(dtype=float), "worker": pd.Series(dtype=str),
                         "cpu_percent": pd.Series(dtype=float), "users": pd.Series(dtype=float)})


def empty_resources() -> pd.DataFrame:
    """A resources frame with the right columns and no rows."""
    return pd.DataFrame({"config": pd.Series(dtype=str), "ts": pd.Series(dtype=float),
                         "component": pd.Series(dtype=str), "id": pd.Series(dtype=str),
                         "metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)})


def config_label(value: Any) -> str:
    """A config value as the string shown in tables and used as a category (transports joined by '+')."""
    if isinstance(value, list | tuple):
        return "+".join(str(v) for v in value)
    if value is None:
        return "?"
    return str(value).lower() if isinstance(value, bool) else str(value)


def load_run(run_dir: str | Path) -> Frames:
    """Load one run directory. Never raises for bad content; problems go to `warnings`."""
    d = Path(run_dir)
    warn: list[str] = []
    meta = _read_meta(d, warn)
    name = str(meta.get("run") or d.name)
    warn[:] = [f"{name}: {w}" for w in warn]

    def w(msg: str) -> None:
        warn.append(f"{name}: {msg}")

    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    if not config and meta:
        w("meta.json has no 'config' block; config columns are '?'")
    labels = {k: config_label(config.get(k)) for k in CONFIG_KEYS}

    window = Window.from_meta(meta, w)
    issues: list[dict[str, Any]] = []
    schema = runfiles.schema_version(d)
    if schema >= 2:
        events, cells, delivery = _read_schema2(d, w, window, issues)
    else:
        events = read_events(d / "events.csv", w, window, Tally(w, "events.csv", issues))
        cells, delivery = None, empty_delivery()
    node_labels = _node_labels(meta, w)
    events = map_node_labels(events, node_labels)
    _label(events, name, labels)
    cells = aggregates_from_rows(events) if cells is None else _label(map_node_labels(cells, node_labels), name, labels)
    delivery = _label(delivery, name, {})

    n_steps = int(cells["count"].sum()) if len(cells) else 0
    status = str(meta.get("status") or ("ok" if n_steps else "unknown"))
    error = meta.get("error")
    if status == "failed" and not error:
        error = "run marked failed in meta.json (no reason given)"
    if schema < 2 and not (d / "events.csv").exists() and status != "failed":
        error = error or "no events.csv: the load never produced events"
    if schema >= 2 and not n_steps and status != "failed":
        error = error or "no aggregates: the load never produced events"

    first, last = _span(events, cells)
    runs = pd.DataFrame([{
        "config": name, "dir": str(d), "status": status, "error": error,
        "started": meta.get("started"), "ended": meta.get("ended"),
        "first_ts": first, "last_ts": last,
        "n_events": n_steps, "n_rows": int(len(events)), "schema": schema, **labels,
    }])

    stats = _read_locust_csv(d / "locust_stats.csv", name, w, required=("Type", "Name", "Request Count"))
    history = _read_locust_csv(d / "locust_stats_history.csv", name, w, required=("Timestamp", "User Count"))
    history = _validate_history(history, window, Tally(w, "locust_stats_history.csv", issues))
    failures = _read_locust_csv(d / "locust_failures.csv", name, w, required=("Name", "Error", "Occurrences"))
    exceptions = _read_locust_csv(d / "locust_exceptions.csv", name, w, required=("Count", "Message"))
    ljson = _read_locust_json(d / "locust.json", name, w)
    sio = _read_json(d / "sio_stats.json", w, required=False)
    gen = read_generator(d / "generator.csv", w, window, Tally(w, "generator.csv", issues))
    gen.insert(0, "config", name)
    res = read_resources(d / RESOURCES_CSV, w, window, Tally(w, RESOURCES_CSV, issues))
    res.insert(0, "config", name)
    return Frames(events=events, runs=runs, locust_stats=stats, locust_history=history,
                  locust_failures=failures, locust_exceptions=exceptions, locust_json=ljson,
                  meta={name: meta}, sio_stats={name: sio} if sio else {}, warnings=warn, generator=gen,
                  data_issues=[{"config": name, **i} for i in issues], aggregates=cells, delivery=delivery,
                  resources=res)


def _node_labels(meta: dict[str, Any], warn: Any) -> dict[str, str]:
    """meta.json's cluster_info.node_labels: a sticky cookie's label (`traefik:<hash>`) -> the node id."""
    ci = meta.get("cluster_info")
    raw = ci.get("node_labels") if isinstance(ci, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        warn("meta.json: cluster_info.node_labels is not a {label: node id} table; cookie labels kept as they are")
        return {}
    return raw


def map_node_labels(df: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """`df` with every node label in `labels` replaced by its node id (in place; returns df).

    Why: when a response carries no node header the client names the node by the balancer's sticky
    cookie, and Traefik's is a hash of the server URL (`traefik:<hash>`); the cluster recorded which
    hash is which node, so the figures per node count one node once, not under two names.
    """
    if not labels or "node" not in df or not len(df):
        return df
    s = df["node"]
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = [labels.get(str(c), c) for c in s.cat.categories]
        if len(set(cats)) == len(cats):
            df["node"] = s.cat.rename_categories(cats)
            return df
        s = s.astype(str)
        df["node"] = s.map(lambda v: labels.get(v, v)).astype("category")
        return df
    df["node"] = s.map(lambda v: labels.get(v, v) if isinstance(v, str) else v)
    return df


def _label(df: pd.DataFrame, name: str, labels: dict[str, str]) -> pd.DataFrame:
    """Add the config name and its labels as categorical columns (in place; returns df)."""
    codes = np.zeros(len(df), dtype=np.int8)  # one category: no list of n strings to build
    df["config"] = pd.Categorical.from_codes(codes, categories=[name])
    for k, v in labels.items():
        df[k] = pd.Categorical.from_codes(codes, categories=[v])
    return df


def _span(events: pd.DataFrame, cells: pd.DataFrame) -> tuple[float, float]:
    """The run's first and last event time. The first: the earliest row (a run's first step is a state
    row or a first failure, always kept), else the earliest cell's second; the last: the newest ts any
    cell saw (exact, whatever was kept)."""
    first = float(events["ts"].min()) if len(events) else math.nan
    if math.isnan(first) and len(cells):
        first = float(cells["second"].min())
    last = float(cells["max_ts"].max()) if len(cells) else math.nan
    if len(events):
        last = float(np.nanmax([last, float(events["ts"].max())]))
    return first, last


def load_runs(run_dirs: list[str | Path] | tuple[str | Path, ...]) -> Frames:
    """Load several run directories (a campaign) into one set of frames with the config as columns."""
    parts = [load_run(d) for d in run_dirs]
    names: dict[str, int] = {}
    for p in parts:  # two dirs with the same run name would merge silently: make the names unique
        n = str(p.runs["config"].iloc[0])
        names[n] = names.get(n, 0) + 1
        if names[n] > 1:
            _rename(p, f"{n}#{names[n]}")
            p.warnings.append(f"{n}: a second run directory with the same run name; shown as {n}#{names[n]}")
    if not parts:
        return Frames(events=empty_events(), runs=pd.DataFrame(columns=["config", "status", "error", *CONFIG_KEYS]),
                      locust_stats=pd.DataFrame(), locust_history=pd.DataFrame(), locust_failures=pd.DataFrame(),
                      locust_exceptions=pd.DataFrame(), locust_json=pd.DataFrame(), warnings=["no run directories given"])
    ev = [p.events for p in parts]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of empty frames
        events = _concat_categorical(ev) if ev else empty_events()
    out = Frames(
        events=events,
        runs=pd.concat([p.runs for p in parts], ignore_index=True),
        locust_stats=_concat([p.locust_stats for p in parts]),
        locust_history=_concat([p.locust_history for p in parts]),
        locust_failures=_concat([p.locust_failures for p in parts]),
        locust_exceptions=_concat([p.locust_exceptions for p in parts]),
        locust_json=_concat([p.locust_json for p in parts]),
        generator=_concat([p.generator for p in parts]) if any(len(p.generator) for p in parts) else empty_generator(),
        aggregates=_concat_categorical([p.aggregates for p in parts]),
        delivery=_concat_categorical([p.delivery for p in parts]),
        resources=_concat([p.resources for p in parts]) if any(len(p.resources) for p in parts) else empty_resources(),
    )
    for p in parts:
        out.meta.update(p.meta)
        out.sio_stats.update(p.sio_stats)
        out.warnings.extend(p.warnings)
        out.data_issues.extend(p.data_issues)
    return out


def read_events(path: Path, warn: Any, window: Window | None = None, tally: Tally | None = None) -> pd.DataFrame:
    """events.csv → frame with rows.COLUMNS; drops (and reports) what cannot be a valid row.

    Why by hand around read_csv: a SIGKILL leaves a half-written last line, and a single bad
    value must not turn the whole float column into strings or abort the load. `window`: the
    time range a row's ts must fall in (default: 2000-01-01 … now); `tally` collects the counts
    of what was dropped or blanked (see _validate_events) into one warning line per action.
    """
    if not path.exists():
        warn("events.csv is missing")
        return empty_events().drop(columns=["config", *CONFIG_KEYS])
    try:
        raw = path.read_bytes()
    except OSError as e:
        warn(f"events.csv cannot be read: {e.strerror}")
        return empty_events().drop(columns=["config", *CONFIG_KEYS])
    if not raw.strip():
        warn("events.csv is empty")
        return empty_events().drop(columns=["config", *CONFIG_KEYS])
    if not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n")
        warn("events.csv: last line was cut off (run killed while writing?); dropped it")
        raw = raw[: cut + 1] if cut >= 0 else b""
    first = raw[: raw.find(b"\n")].decode("utf-8", "replace").strip().split(",")
    header_present = "ts" in first and "step" in first
    names = None if header_present else list(COLUMNS)
    if not header_present:
        warn("events.csv has no header line; assumed the rows.COLUMNS order")
    tally = tally or Tally(warn, "events.csv")
    raw, n_headers = _drop_repeated_headers(raw, header_present)
    tally.drop("row", "repeated header line (files concatenated?)", n_headers)
    cols = first if header_present else list(COLUMNS)
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        warn(f"events.csv: unknown column(s) {', '.join(unknown)} ignored")
    missing = [c for c in COLUMNS if c not in cols]
    if missing:
        warn(f"events.csv: missing column(s) {', '.join(missing)}; filled with empty values")
    usecols = [c for c in cols if c in COLUMNS]
    df = _parse(raw, names, usecols, warn)
    if df is None:
        return empty_events().drop(columns=["config", *CONFIG_KEYS])
    for c in missing:
        df[c] = pd.Series(np.nan if c in _NUMERIC else "", index=df.index, dtype=_FAST_DTYPES[c] if c in _NUMERIC else "category")
    df = df[list(COLUMNS)]
    for c in _CATEGORICAL:
        s = df[c]
        if s.isna().any():
            if "" not in s.cat.categories:
                s = s.cat.add_categories([""])
            df[c] = s.fillna("")
    df = _validate_events(df, window or Window.default(), tally)
    df["ok"] = df["ok"].astype("int8")
    return df


ROW_COLUMNS: tuple[str, ...] = ("ts", "user", "eio_sid", "step", "name", "node", "ok", "error_kind", "room",
                                 "msg_id")
"""The kept-row columns a schema-2 run's figures read (sessions, nodes, node switches, membership),
plus msg_id: two receipts of one user at the same ts are two rows, not one held twice (the duplicate
check judges on these columns). `name` says which request a failed polling step was (a "poll" GET or a
"post:pong"/"post:emit"/... POST): without it every session that died at a POST was read as dying at a
long-poll GET (analysis/sessions.py). The rest (error text, ...) stay on disk. Counts and latencies come
from the aggregates."""


def _read_schema2(d: Path, warn: Any, window: Window,
                  issues: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(kept rows, cells, delivery) of a schema-2 run, validated like events.csv (never raises)."""
    rows = runfiles.read_rows(d, ROW_COLUMNS, warn)
    rows = _typed_rows(rows)
    rows = _validate_events(rows, window, Tally(warn, _file_name(d, EVENTS), issues), dedup=ROW_COLUMNS)
    rows["ok"] = rows["ok"].astype("int8")
    cells = runfiles.read_aggregates(d, warn=warn)
    if cells is None:
        warn("no aggregates file (aggregates.parquet / .arrows): no step was counted")
        cells = empty_cells()
    cells = _validate_cells(cells, window, Tally(warn, _file_name(d, AGGREGATES), issues))
    delivery = runfiles.read_delivery(d, warn=warn)
    delivery = empty_delivery().drop(columns="config") if delivery is None else \
        _validate_delivery(delivery, window, Tally(warn, _file_name(d, DELIVERY), issues))
    return rows, cells, delivery


def _file_name(d: Path, kind: str) -> str:
    names = runfiles.files_present(d, kind)
    return names[0] if names else kind


def _typed_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Kept rows as read_events types them (every COLUMNS column; the unread ones empty), ok float for checks."""
    n = len(rows)
    out = {}
    for c in COLUMNS:
        if c in rows:
            out[c] = rows[c].reset_index(drop=True)
        elif c in _NUMERIC:
            out[c] = pd.Series(np.full(n, np.nan))
        else:
            out[c] = pd.Series(pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[""]))
    df = pd.DataFrame(out)
    for c in _NUMERIC:
        df[c] = df[c].astype("float64")
    for c in _CATEGORICAL:
        if not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype(str).astype("category")
    return df


def _validate_cells(cells: pd.DataFrame, window: Window, tally: Tally) -> pd.DataFrame:
    """Drop the cells that cannot be a second of this run's steps; blank impossible labels (as for rows).

    Dropped: second outside the run's window, step missing, ok not 0/1, a count negative or missing, a
    latency count above the count, a histogram that does not add up to its latency count (or holds a
    negative bucket or count), a latency sum/min/max not finite or min > max where there are latencies,
    max_ts not finite. Blanked: an error_kind that is not a kind (or set on an ok cell), a transport that
    is not polling/websocket. Counted per reason in one warning line, like events.csv.
    """
    if not len(cells):
        tally.flush(rows=0)
        return cells
    sec = cells["second"].to_numpy(dtype=float)
    ok = cells["ok"].to_numpy(dtype=float)
    n = cells["count"].to_numpy(dtype=float)
    ln = cells["lat_count"].to_numpy(dtype=float)
    lo, hi = cells["lat_min_ms"].to_numpy(dtype=float), cells["lat_max_ms"].to_numpy(dtype=float)
    lsum, mts = cells["lat_sum_ms"].to_numpy(dtype=float), cells["max_ts"].to_numpy(dtype=float)
    has = ln > 0
    with np.errstate(invalid="ignore"):
        lat_bad = has & (~np.isfinite(lo) | ~np.isfinite(hi) | ~np.isfinite(lsum) | (lo > hi) | (lo < 0)
                         | (hi > MAX_LATENCY_MS))
        checks = [
            ("second", f"second outside {window.label}", ~np.isfinite(sec) | (sec + 1 < window.lo) | (sec > window.hi)),
            ("step", "step missing", (cells["step"] == "").to_numpy()),
            ("ok", "ok not 0 or 1", ~np.isin(ok, [0.0, 1.0])),
            ("count", "count negative or missing", ~np.isfinite(n) | (n < 0)),
            ("lat_count", "latency count negative, missing or above the count", ~np.isfinite(ln) | (ln < 0) | (ln > n)),
            ("hist", "histogram does not add up to its latency count", _bad_hist(cells, ln)),
            ("lat_ms", "latency sum/min/max not finite, negative or min above max", lat_bad),
            ("max_ts", "max_ts not finite", ~np.isfinite(mts)),
        ]
    drop = np.zeros(len(cells), dtype=bool)
    for col, reason, mask in checks:
        tally.drop(col, reason, int((mask & ~drop).sum()))
        drop |= mask
    if drop.any():
        cells = cells[~drop]
    cells = cells.reset_index(drop=True)
    cells["ok"] = cells["ok"].astype("int8")
    for c in ("step", "name", "node", "transport", "error_kind"):
        cells[c] = cells[c].cat.remove_unused_categories()
    kinds = cells["error_kind"]
    bad_kinds = [k for k in kinds.cat.categories if k and k not in ERROR_KINDS and not _HTTP_KIND.fullmatch(str(k))]
    _blank(cells, "error_kind", [("error_kind", "not a failure kind (rows.ERROR_KINDS or http_<status>)",
                                  kinds.isin(bad_kinds)),
                                 ("error_kind", "set on an ok=1 cell", (kinds != "") & (cells["ok"] == 1))], tally, "")
    _blank(cells, "transport", [("transport", "not polling or websocket", ~cells["transport"].isin(TRANSPORTS))],
           tally, "")
    tally.flush(rows=len(cells))
    return cells


def _bad_hist(cells: pd.DataFrame, lat_count: np.ndarray) -> np.ndarray:
    """Per cell: bucket and count lists of different lengths, a negative entry, or counts not summing to lat_count."""
    out = np.zeros(len(cells), dtype=bool)
    for i, (b, c) in enumerate(zip(cells["hist_bucket"].to_numpy(), cells["hist_count"].to_numpy(), strict=True)):
        if len(b) != len(c) or (len(b) and (b.min() < 0 or c.min() < 0)) or c.sum() != lat_count[i]:
            out[i] = True
    return out


def _validate_delivery(d: pd.DataFrame, window: Window, tally: Tally) -> pd.DataFrame:
    """Drop delivery seconds that cannot be: second outside the run's window, a count negative or missing,
    delivered above expected, final not 0/1, written not finite."""
    if not len(d):
        tally.flush(rows=0)
        return d
    sec = d["second"].to_numpy(dtype=float)
    sent, exp, dl = (d[c].to_numpy(dtype=float) for c in ("sent", "expected", "delivered"))
    with np.errstate(invalid="ignore"):
        checks = [
            ("second", f"second outside {window.label}", ~np.isfinite(sec) | (sec + 1 < window.lo) | (sec > window.hi)),
            ("count", "sent/expected/delivered negative or missing",
             ~(np.isfinite(sent) & np.isfinite(exp) & np.isfinite(dl)) | (sent < 0) | (exp < 0) | (dl < 0)),
            ("delivered", "delivered above expected", dl > exp),
            ("final", "final not 0 or 1", ~np.isin(d["final"].to_numpy(dtype=float), [0.0, 1.0])),
            ("written", "written not finite", ~np.isfinite(d["written"].to_numpy(dtype=float))),
        ]
    drop = np.zeros(len(d), dtype=bool)
    for col, reason, mask in checks:
        tally.drop(col, reason, int((mask & ~drop).sum()))
        drop |= mask
    d = d[~drop].reset_index(drop=True)
    d = d.astype({"second": "int64", "sent": "int64", "expected": "int64", "delivered": "int64", "final": "int8"})
    tally.flush(rows=len(d))
    return d


def _drop_repeated_headers(raw: bytes, header_present: bool) -> tuple[bytes, int]:
    """Remove header lines found after the first line (two files concatenated); returns (raw, count).

    A header line mid-file is not a row, and left in it would turn the ts column into text and
    send the whole file down the slow parse; bytes.find first, so a clean file costs one scan.
    """
    nl = raw.find(b"\n")
    head = raw[: nl + 1] if header_present else b""
    body = raw[len(head):]
    lines = {b",".join(c.encode() for c in COLUMNS)}
    if head:
        lines.add(head.rstrip(b"\r\n"))
    if not any(h in body for h in lines):
        return raw, 0
    pat = re.compile(rb"(?m)^(?:" + b"|".join(re.escape(h) for h in lines) + rb")\r?\n")
    body, n = pat.subn(b"", body)
    return head + body, n


def _validate_events(df: pd.DataFrame, window: Window, tally: Tally,
                     dedup: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Drop the rows that cannot be a step of this run; blank the values that cannot be, keep their rows.

    Dropped (the row cannot be placed or counted): ts missing, infinite or outside the run's window
    (every over-time figure, the broadcast membership and the delivery grace are placed by ts), a
    step that is not one of rows.STEPS, ok not 0/1, and exact duplicates of an earlier row: a real
    row is made by `make_row` at `time.time()` for one user, and one user's consecutive rows are
    separated by a Locust request event (microseconds) while float ts resolves 0.24 µs, so two
    identical rows mean the file holds some rows twice (concatenated, copied into itself).
    Blanked (the step happened; only this value is impossible, and dropping the row would lower a
    ratio that the row rightly counts): latency_ms negative, infinite, over MAX_LATENCY_MS or
    longer than the run so far; an error_kind that is not a kind (or set on an ok row); a transport
    that is not polling/websocket.
    dedup: the columns a duplicate is judged on (default all): a schema-2 run loads ROW_COLUMNS only, where
    ts + user + step + msg_id tell one row from another by the argument above.
    """
    ts = df["ts"]
    finite = np.isfinite(ts.to_numpy(dtype=float, na_value=np.nan))
    checks = [
        ("ts", "ts missing or not a number", ts.isna()),
        ("ts", "ts infinite", ts.notna() & ~finite),
        ("ts", f"ts outside {window.label}", finite & ((ts < window.lo) | (ts > window.hi))),
        ("step", "step missing", df["step"].isin([""]) | df["step"].isna()),
        ("ok", "ok not 0 or 1", ~df["ok"].isin([0.0, 1.0])),
    ]
    drop = pd.Series(False, index=df.index)
    for col, reason, mask in checks:
        tally.drop(col, reason, int((mask & ~drop).sum()))
        drop |= mask
    if drop.any():
        df = df[~drop]
    # A scenario may name its own steps (SocketIOUser.call/emit/log_step take `step=`): such rows
    # are real, so they are kept (Locust's stats and the failure tables count them) and said once.
    custom = sorted(set(df["step"].astype(str).unique()) - set(STEPS) - {""})
    if custom:
        n = int(df["step"].isin(custom).sum())
        tally.warn(f"{tally.file}: {n} row(s) with scenario step(s) {', '.join(custom[:10])}"
                   f"{' …' if len(custom) > 10 else ''} kept; the figures of rows.STEPS do not include them")
    dup = _duplicated(df if dedup is None else df[list(dedup)])
    tally.drop("row", "exact duplicate of an earlier row (file holds rows twice?)", int(dup.sum()))
    df = df[~dup].reset_index(drop=True) if dup.any() else df.reset_index(drop=True)
    for c in _CATEGORICAL:
        df[c] = df[c].cat.remove_unused_categories()
    lat = df["latency_ms"]
    began = df["ts"] - lat / 1000.0
    blanks = [
        ("latency_ms", "not finite", lat.notna() & ~np.isfinite(lat.to_numpy(dtype=float, na_value=0.0))),
        ("latency_ms", "negative", lat < 0),
        ("latency_ms", f"over the {MAX_LATENCY_MS / 3.6e6:g} h ceiling", lat > MAX_LATENCY_MS),
        ("latency_ms", "longer than the run so far (began before it started)", lat.notna() & (began < window.lo)),
    ]
    _blank(df, "latency_ms", blanks, tally, np.nan)
    kinds = df["error_kind"]
    bad_kinds = [k for k in kinds.cat.categories if k and k not in ERROR_KINDS and not _HTTP_KIND.fullmatch(str(k))]
    _blank(df, "error_kind", [("error_kind", "not a failure kind (rows.ERROR_KINDS or http_<status>)",
                               kinds.isin(bad_kinds)),
                              ("error_kind", "set on an ok=1 row", (kinds != "") & (df["ok"] == 1))], tally, "")
    _blank(df, "transport", [("transport", "not polling or websocket", ~df["transport"].isin(TRANSPORTS))],
           tally, "")
    tally.flush(rows=len(df))
    return df


def _duplicated(df: pd.DataFrame) -> pd.Series:
    """df.duplicated(keep="first"), exact, at the cost of one 64-bit hash per row.

    Why not df.duplicated alone: over 16 columns it tripled the loader's validation time on a
    million rows; hashing finds the (normally zero) candidates, and only they are compared exactly,
    so a hash collision can never drop a real row.
    """
    cand = pd.util.hash_pandas_object(df, index=False).duplicated(keep=False)
    out = pd.Series(False, index=df.index)
    if cand.any():
        out[cand] = df[cand].duplicated(keep="first")
    return out


def _blank(df: pd.DataFrame, col: str, checks: list[tuple[str, str, pd.Series]], tally: Tally, empty: Any) -> None:
    """Set `col` to `empty` where a check holds (first reason counted per row), in place."""
    done = pd.Series(False, index=df.index)
    for column, reason, mask in checks:
        mask = mask.fillna(False).astype(bool) & ~done
        n = int(mask.sum())
        tally.blank(column, reason, n)
        done |= mask
    if done.any():
        s = df[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            if empty not in s.cat.categories:
                s = s.cat.add_categories([empty])
            s = s.mask(done, empty).cat.remove_unused_categories()
        else:
            s = s.mask(done, empty)
        df[col] = s


def _read_whole_lines(path: Path, name: str, warn: Any) -> bytes | None:
    """A run file's bytes up to its last complete line (a SIGKILL cuts the last one: said, dropped);
    None when it is missing (not a warning: optional files), unreadable or empty (both said)."""
    if not path.exists():
        return None
    try:
        raw = path.read_bytes()
    except OSError as e:
        warn(f"{name} cannot be read: {e.strerror}")
        return None
    if not raw.strip():
        warn(f"{name} is empty")
        return None
    if not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        warn(f"{name}: last line was cut off (run killed while writing?); dropped it")
    return raw


def _read_text_csv(path: Path, name: str, warn: Any) -> tuple[pd.DataFrame, int] | None:
    """A small run CSV (generator.csv, resources.csv) as text columns, and how many lines with a
    wrong number of fields were skipped; None when there is nothing to read (said by the callee)."""
    raw = _read_whole_lines(path, name, warn)
    if raw is None:
        return None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, on_bad_lines="warn",
                             encoding_errors="replace")
    except (ValueError, pd.errors.ParserError) as e:
        warn(f"{name} cannot be parsed ({str(e).splitlines()[0]}); ignored")
        return None
    return df, sum(str(x.message).count("Skipping line") for x in caught)


def read_generator(path: Path, warn: Any, window: Window | None = None, tally: Tally | None = None) -> pd.DataFrame:
    """generator.csv → ts, worker, cpu_percent, users; bad lines dropped and reported, never raises.

    A missing file is not a warning (runs made before it existed, or without the event log, like the
    other optional Locust files): the report shows the generator's CPU as "unknown" where it matters.
    `window`: the run's time range (None: only finite ts); `tally`: per-reason counts, as for events.csv.
    """
    cols = list(GENERATOR_COLUMNS)
    empty = empty_generator().drop(columns=["config"])
    parsed = _read_text_csv(path, "generator.csv", warn)
    if parsed is None:
        return empty
    df, n_bad_lines = parsed
    missing = [c for c in cols if c not in df.columns]
    if missing:
        warn(f"generator.csv: missing column(s) {', '.join(missing)}; ignored")
        return empty
    out = pd.DataFrame({"ts": pd.to_numeric(df["ts"], errors="coerce"), "worker": df["worker"].astype(str),
                        "cpu_percent": pd.to_numeric(df["cpu_percent"], errors="coerce"),
                        "users": pd.to_numeric(df["users"], errors="coerce")})
    tally = tally or Tally(warn, "generator.csv")
    header = (df[cols] == pd.Series(cols, index=cols)).all(axis=1)  # a second file's header, concatenated
    lo, hi = (window.lo, window.hi) if window else (-math.inf, math.inf)
    cpu, ts = out["cpu_percent"], out["ts"]
    checks = [
        ("row", "repeated header line (files concatenated?)", header),
        ("row", "malformed line", ts.isna() | cpu.isna() | (out["worker"] == "")),
        ("ts", "ts infinite" if window is None else f"ts infinite or outside {window.label}",
         ~np.isfinite(ts.fillna(0)) | (ts < lo) | (ts > hi)),
        # CPU is a share of wall time summed over the process's threads: ≥ 0, and (generously) under 100 × 64 cores
        ("cpu_percent", "cpu_percent not in 0…6400", ~np.isfinite(cpu.fillna(0)) | (cpu < 0) | (cpu > 6400)),
        ("users", "users negative or infinite", out["users"].notna() & (~np.isfinite(out["users"].fillna(0))
                                                                       | (out["users"] < 0))),
    ]
    bad = pd.Series(False, index=out.index)
    for col, reason, mask in checks:
        tally.drop(col, reason, int((mask & ~bad).sum()))
        bad |= mask
    out = out[~bad]
    dup = out.duplicated(["ts", "worker"])  # one reading per process per second: a repeat is a copied row
    tally.drop("row", "duplicate reading (same ts and worker)", int(dup.sum()))
    tally.drop("row", "line with a wrong number of fields", n_bad_lines)
    tally.flush(rows=int((~dup).sum()))
    return out[~dup].sort_values(["ts", "worker"], kind="stable").reset_index(drop=True)


def read_resources(path: Path, warn: Any, window: Window | None = None, tally: Tally | None = None) -> pd.DataFrame:
    """resources.csv → ts, component, id, metric, value; what cannot be a sample is dropped and counted.

    Why as events.csv: the sampler's file is cut by a SIGKILL like any other, and a hand-edited or
    foreign file must not cost the report; every drop is one counted reason on the first screen.
    A missing file is not a warning (runs made before issue 12, or a run without the sampler).
    Sampler warning rows ("warning:<kind>") are kept and said once, counted per component and kind.
    """
    empty = empty_resources().drop(columns=["config"])
    parsed = _read_text_csv(path, RESOURCES_CSV, warn)
    if parsed is None:
        return empty
    df, n_bad_lines = parsed
    missing = [c for c in RESOURCE_COLUMNS if c != "run" and c not in df.columns]
    if missing:
        warn(f"{RESOURCES_CSV}: missing column(s) {', '.join(missing)} (not the ts,run,component,id,metric,value "
             "file of contract/resources.py); ignored")
        return empty
    tally = tally or Tally(warn, RESOURCES_CSV)
    tally.drop("row", "line with a wrong number of fields", n_bad_lines)
    out = _resource_rows(df, window, tally)
    _say_sampler_warnings(out, warn)
    return out


def _resource_rows(df: pd.DataFrame, window: Window | None, tally: Tally) -> pd.DataFrame:
    """The valid samples of a parsed resources.csv (text columns), the rest counted per reason."""
    out = pd.DataFrame({"ts": pd.to_numeric(df["ts"], errors="coerce"), "component": df["component"].astype(str),
                        "id": df["id"].astype(str), "metric": df["metric"].astype(str),
                        "value": pd.to_numeric(df["value"], errors="coerce")})
    lo, hi = (window.lo, window.hi) if window else (-math.inf, math.inf)
    ts, v, metric = out["ts"], out["value"], out["metric"]
    warn_row = metric.map(is_warning).astype(bool)
    header = (df["ts"] == "ts") & (df["component"] == "component")  # a second file's header, concatenated
    checks = [
        ("row", "repeated header line (files concatenated?)", header),
        ("ts", "ts not a number", ts.isna()),
        ("ts", "ts infinite" if window is None else f"ts infinite or outside {window.label}",
         ~np.isfinite(ts.fillna(0)) | (ts < lo) | (ts > hi)),
        ("component", f"component not one of {', '.join(COMPONENTS)}", ~out["component"].isin(COMPONENTS)),
        ("metric", "metric not one of contract.resources.METRICS (nor a warning)", ~(metric.isin(METRICS) | warn_row)),
        ("id", "empty id", out["id"].str.strip() == ""),
        ("value", "value not a finite number", v.isna() | ~np.isfinite(v.fillna(0))),
        ("value", "negative value (every metric is a level ≥ 0)", v < 0),
    ]
    bad = pd.Series(False, index=out.index)
    for col, reason, mask in checks:
        mask = mask.fillna(False).astype(bool)
        tally.drop(col, reason, int((mask & ~bad).sum()))
        bad |= mask
    out = out[~bad]
    dup = out.duplicated(["ts", "component", "id", "metric"])  # one sample per metric per second: a repeat is a copy
    tally.drop("row", "duplicate sample (same ts, component, id and metric)", int(dup.sum()))
    out = out[~dup]
    tally.flush(rows=len(out))
    return out.sort_values(["ts", "component", "id", "metric"], kind="stable").reset_index(drop=True)


def _say_sampler_warnings(res: pd.DataFrame, warn: Any) -> None:
    """One line for the sampler's own warning rows: a sample it could not take is a gap in the figures."""
    w = res[res["metric"].map(is_warning).astype(bool)] if len(res) else res
    if not len(w):
        return
    counts = w.groupby(["component", "id", "metric"], sort=True).size()
    parts = [f"{c}/{i} {m.split(':', 1)[1]} ×{n}" for (c, i, m), n in counts.items()]
    warn(f"{RESOURCES_CSV}: the sampler could not take {int(counts.sum())} sample(s) ("
         + ", ".join(parts[:8]) + (" …" if len(parts) > 8 else "") + "); the resource figures have gaps there")


def _validate_history(h: pd.DataFrame, window: Window, tally: Tally) -> pd.DataFrame:
    """locust_stats_history.csv rows with an impossible Timestamp or User Count dropped (they place and
    size the capacity stages); the other columns are Locust's own and shown as they are."""
    if not len(h):
        return h
    ts = pd.to_numeric(h["Timestamp"], errors="coerce")
    users = pd.to_numeric(h["User Count"], errors="coerce")
    bad_ts = ts.isna() | ~np.isfinite(ts.fillna(0)) | (ts < window.lo) | (ts > window.hi)
    bad_users = ~bad_ts & (users.isna() | ~np.isfinite(users.fillna(0)) | (users < 0))
    tally.drop("Timestamp", f"Timestamp not a time within {window.label}", int(bad_ts.sum()))
    tally.drop("User Count", "User Count not a count", int(bad_users.sum()))
    keep = ~(bad_ts | bad_users)
    tally.flush(rows=int(keep.sum()))
    return h[keep].reset_index(drop=True)


def _parse(raw: bytes, names: list[str] | None, usecols: list[str], warn: Any) -> pd.DataFrame | None:
    skipped: list[str] = []
    for fast in (True, False):
        dtypes = _FAST_DTYPES if fast else {c: "category" for c in usecols}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                df = pd.read_csv(io.BytesIO(raw), engine="c", names=names, header=0 if names is None else None,
                                 usecols=usecols, dtype={c: t for c, t in dtypes.items() if c in usecols},
                                 on_bad_lines="warn", keep_default_na=False, na_values={c: [""] for c in _NUMERIC},
                                 encoding_errors="replace", low_memory=False)
            skipped = [str(x.message) for x in caught if "Skipping line" in str(x.message)]
        except (ValueError, TypeError) as e:
            if fast:
                continue  # a non-numeric value in a numeric column: parse as text, coerce below
            warn(f"events.csv cannot be parsed: {str(e).splitlines()[0]}")
            return None
        except pd.errors.ParserError as e:
            warn(f"events.csv cannot be parsed: {str(e).splitlines()[0]}")
            return None
        if not fast:
            for c in _NUMERIC:
                if c in df:
                    df[c] = pd.to_numeric(df[c].astype("object"), errors="coerce")
        break
    n_skipped = sum(m.count("Skipping line") for m in skipped)
    if n_skipped:
        warn(f"events.csv: {n_skipped} malformed line(s) (wrong number of fields) skipped")
    return df


def _read_meta(d: Path, warn: list[str]) -> dict[str, Any]:
    meta = _read_json(d / "meta.json", warn.append, required=True)
    return meta if isinstance(meta, dict) else {}


def _read_json(path: Path, warn: Any, required: bool) -> Any:
    if not path.exists():
        if required:
            warn(f"{path.name} is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as e:
        warn(f"{path.name} is not valid JSON ({str(e).splitlines()[0]}); ignored")
        return None


def _read_locust_csv(path: Path, name: str, warn: Any, required: tuple[str, ...]) -> pd.DataFrame:
    """Locust's --csv outputs (stats, history, failures, exceptions); 'N/A' percentiles become NaN."""
    if not path.exists():
        return pd.DataFrame()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = pd.read_csv(path, on_bad_lines="warn", na_values=["N/A"], encoding_errors="replace")
    except (ValueError, pd.errors.ParserError, OSError) as e:
        warn(f"{path.name} cannot be parsed ({str(e).splitlines()[0]}); ignored")
        return pd.DataFrame()
    n = sum(str(x.message).count("Skipping line") for x in caught)
    if n:
        warn(f"{path.name}: {n} malformed line(s) skipped")
    miss = [c for c in required if c not in df.columns]
    if miss:
        warn(f"{path.name}: not a Locust CSV (missing {', '.join(miss)}); ignored")
        return pd.DataFrame()
    df.insert(0, "config", name)
    return df


def _read_locust_json(path: Path, name: str, warn: Any) -> pd.DataFrame:
    """Locust's --json-file output: a list of serialized StatsEntry dicts (with response-time histograms)."""
    data = _read_json(path, warn, required=False)
    if data is None:
        return pd.DataFrame()
    if not isinstance(data, list):
        warn(f"{path.name}: expected a list of stats entries; ignored")
        return pd.DataFrame()
    rows = []
    for e in data:
        if not isinstance(e, dict) or "name" not in e:
            continue
        rt = _histogram(e.get("response_times"), f"{path.name}: {e.get('name')!r}", warn)
        rows.append({"config": name, "name": e.get("name"), "method": e.get("method"),
                     "num_requests": e.get("num_requests", 0), "num_failures": e.get("num_failures", 0),
                     "num_none_requests": e.get("num_none_requests", 0),
                     "total_response_time": e.get("total_response_time", 0),
                     "min_response_time": e.get("min_response_time"), "max_response_time": e.get("max_response_time"),
                     "start_time": e.get("start_time"), "last_request_timestamp": e.get("last_request_timestamp"),
                     "response_times": rt})
    if len(rows) < len(data):
        warn(f"{path.name}: {len(data) - len(rows)} malformed entr(y/ies) skipped")
    return pd.DataFrame(rows)


def _histogram(rt: Any, where: str, warn: Any) -> dict[int, int]:
    """Locust's response-time histogram {ms: count}; buckets that are not numbers are skipped with a warning."""
    if not isinstance(rt, dict):
        if rt:
            warn(f"{where}: response_times histogram is not an object; ignored")
        return {}
    out: dict[int, int] = {}
    bad: list[str] = []
    for k, v in rt.items():
        try:
            ms, n = float(k), float(v)
            if not (math.isfinite(ms) and math.isfinite(n)) or isinstance(v, bool):
                raise ValueError
        except (TypeError, ValueError):
            bad.append(f"{k!r}: {v!r}")
            continue
        out[int(ms)] = out.get(int(ms), 0) + int(n)
    if bad:
        warn(f"{where}: {len(bad)} histogram bucket(s) not numbers ({', '.join(bad[:3])}); skipped")
    return out


def _rename(p: Frames, new: str) -> None:
    old = str(p.runs["config"].iloc[0])
    p.runs["config"] = new
    p.events["config"] = pd.Categorical([new] * len(p.events))
    p.aggregates["config"] = pd.Categorical([new] * len(p.aggregates))
    p.delivery["config"] = pd.Categorical([new] * len(p.delivery))
    for df in (p.locust_stats, p.locust_history, p.locust_failures, p.locust_exceptions, p.locust_json):
        if "config" in df:
            df["config"] = new
    if "config" in p.generator:
        p.generator["config"] = new
    if "config" in p.resources:
        p.resources["config"] = new
    p.meta = {new: p.meta.get(old, {})}
    p.sio_stats = {new: p.sio_stats[old]} if old in p.sio_stats else {}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _concat_categorical(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """concat that keeps categoricals categorical (plain concat falls back to object on differing categories)."""
    frames = [f for f in frames if len(f)] or frames[:1]
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    cats = {c: pd.api.types.union_categoricals([f[c] for f in frames]).categories
            for c in frames[0].columns if isinstance(frames[0][c].dtype, pd.CategoricalDtype)}
    aligned = []
    for f in frames:
        f = f.copy()
        for c, cat in cats.items():
            f[c] = f[c].cat.set_categories(cat)
        aligned.append(f)
    return pd.concat(aligned, ignore_index=True)
