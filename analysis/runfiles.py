"""The run directory's schema-2 files (contract/eventfiles.py) → typed pandas frames, column by column.

Why a reader of its own: a schema-2 run holds each kind of data (kept rows, per-second aggregates,
broadcast delivery) as Parquet once the run ended well, or as an Arrow IPC stream while it runs
and after a SIGKILL. The stream's last batch may be cut: every complete batch before it is good
data, so it is read batch by batch up to there and the cut is said (never a crash). Only the
columns a figure needs are read (Parquet `columns=`, IPC `included_fields`): a one-hour run's
kept rows hold text columns (error, msg_id) that most figures never look at.

Validation of the values (ts in the run's window, counts not negative, ...) is the loader's
(analysis/load.py), with the same Tally rules as events.csv; here only types are checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from contract.eventfiles import (
    AGGREGATES,
    DELIVERY,
    EVENTLOG_JSON,
    EVENTS,
    FILES,
    FINAL_SUFFIX,
    LEGACY_EVENTS_CSV,
    SCHEMA_VERSION,
    STREAM_SUFFIX,
)

Warn = Callable[[str], None]

_SCALAR: dict[str, pa.DataType] = {
    "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(), "int8": pa.int8(), "string": pa.string(),
    "list<int32>": pa.list_(pa.int32()), "list<int64>": pa.list_(pa.int64()),
}


def arrow_type(name: str, stream: bool = False) -> pa.DataType:
    """The pyarrow type of a contract type name; "string" is dictionary-encoded in a stream."""
    if name == "string" and stream:
        return pa.dictionary(pa.int32(), pa.string())
    return _SCALAR[name]


def arrow_schema(kind: str, stream: bool = False) -> pa.Schema:
    """The schema of one kind of file (contract.eventfiles.FILES), for writers (tests, benchmarks) and readers."""
    return pa.schema([(c, arrow_type(t, stream)) for c, t in FILES[kind].items()])


def _nowarn(_msg: str) -> None:
    return None


def schema_version(run_dir: str | Path) -> int:
    """2 when eventlog.json says so or a schema-2 file exists, else 1 (events.csv or nothing at all).

    Why both signs: eventlog.json is written at the start, but a directory copied without it (or a
    run killed before it was written) still holds streams that only schema 2 can read.
    """
    d = Path(run_dir)
    try:
        v = json.loads((d / EVENTLOG_JSON).read_text(encoding="utf-8")).get("schema_version")
        if isinstance(v, int) and not isinstance(v, bool) and v >= 2:
            return int(v)
    except (OSError, ValueError, AttributeError):
        pass
    for kind in FILES:
        if (d / f"{kind}{FINAL_SUFFIX}").exists() or (d / f"{kind}{STREAM_SUFFIX}").exists():
            return SCHEMA_VERSION
    return 1


def files_present(run_dir: str | Path, kind: str) -> list[str]:
    """The file names of a kind that exist in the run directory (Parquet first)."""
    d = Path(run_dir)
    return [n for n in (f"{kind}{FINAL_SUFFIX}", f"{kind}{STREAM_SUFFIX}") if (d / n).exists()]


def read_table(run_dir: str | Path, kind: str, columns: Sequence[str] | None = None,
               warn: Warn | None = None) -> pd.DataFrame | None:
    """One kind of schema-2 data as a frame with the requested columns, or None when there is none.

    The Parquet file when present and readable, else the stream up to its last complete batch.
    Requested columns the file lacks are added empty (null), with a warning; a column whose type
    cannot be cast to the contract's makes the file unreadable (warned, None).
    """
    if kind not in FILES:
        raise ValueError(f"unknown run file kind {kind!r}; one of {', '.join(FILES)}")
    warn = warn or _nowarn
    cols = list(FILES[kind]) if columns is None else list(columns)
    unknown = [c for c in cols if c not in FILES[kind]]
    if unknown:
        raise ValueError(f"{kind}: no column(s) {', '.join(unknown)}")
    d = Path(run_dir)
    table, source = None, ""
    final, stream = d / f"{kind}{FINAL_SUFFIX}", d / f"{kind}{STREAM_SUFFIX}"
    if final.exists():
        table, source = _read_parquet(final, cols, warn), final.name
    if table is None and stream.exists():
        table, source = _read_stream(stream, cols, warn), stream.name
    if table is None:
        return None
    table = _conform(table, kind, cols, source, warn)
    return None if table is None else _to_pandas(table)


def _read_parquet(path: Path, cols: list[str], warn: Warn) -> pa.Table | None:
    try:
        sch = pq.read_schema(path)
        cols = [c for c in cols if c in sch.names]
        text = [c for c in cols if pa.types.is_string(sch.field(c).type) or pa.types.is_large_string(sch.field(c).type)]
        # text as dictionaries straight from Parquet's own encoding: categoricals without a pass over the strings
        return pq.read_table(path, columns=cols, read_dictionary=text)
    except (OSError, pa.ArrowException, ValueError) as e:
        warn(f"{path.name} cannot be read ({_first_line(e)}); reading the stream instead if there is one")
        return None


def _read_stream(path: Path, cols: list[str], warn: Warn) -> pa.Table | None:
    """Every complete batch of an Arrow IPC stream; a cut or corrupt tail ends the read with a warning."""
    try:
        f = pa.OSFile(str(path), "rb")
    except OSError as e:
        warn(f"{path.name} cannot be read: {_first_line(e)}")
        return None
    with f:
        try:
            reader = ipc.open_stream(f)
        except (OSError, pa.ArrowException) as e:
            if path.stat().st_size:
                warn(f"{path.name}: no complete schema ({_first_line(e)}); ignored")
            return None
        names = reader.schema.names
        keep = [i for i, n in enumerate(names) if n in cols]
        schema = pa.schema([reader.schema.field(i) for i in keep])
        batches: list[pa.RecordBatch] = []
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except (OSError, pa.ArrowException) as e:
                warn(f"{path.name}: the last batch is cut or corrupt ({_first_line(e)}; run killed while "
                     f"writing?); read the {len(batches)} complete batch(es) before it")
                break
            batches.append(batch.select(keep))
    return pa.Table.from_batches(batches, schema=schema)


def _conform(table: pa.Table, kind: str, cols: list[str], name: str, warn: Warn) -> pa.Table | None:
    """The requested columns in order, each cast to the contract's type (strings plain, dictionaries kept)."""
    types = FILES[kind]
    arrays: list[pa.ChunkedArray] = []
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        warn(f"{name}: missing column(s) {', '.join(missing)}; filled with empty values")
    for c in cols:
        want = arrow_type(types[c])
        if c not in table.column_names:
            arrays.append(pa.chunked_array([pa.nulls(len(table), want)]))
            continue
        col = table.column(c)
        if pa.types.is_dictionary(col.type) and types[c] == "string":
            if not pa.types.is_string(col.type.value_type) and not pa.types.is_large_string(col.type.value_type):
                warn(f"{name}: column {c} holds {col.type.value_type}, not text; file ignored")
                return None
            arrays.append(col)
            continue
        if col.type != want:
            try:
                col = col.cast(want)
            except (pa.ArrowException, ValueError) as e:
                warn(f"{name}: column {c} is {col.type}, not {types[c]} ({_first_line(e)}); file ignored")
                return None
        arrays.append(col)
    return pa.table(arrays, names=cols)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Text columns as categoricals with "" for null (as events.csv loads), numbers as numpy, lists as
    object columns of numpy arrays (one per cell)."""
    out: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            s = col.to_pandas() if pa.types.is_dictionary(t) else col.dictionary_encode().to_pandas()
            if not isinstance(s.dtype, pd.CategoricalDtype):
                s = s.astype("category")
            if s.isna().any():
                if "" not in s.cat.categories:
                    s = s.cat.add_categories([""])
                s = s.fillna("")
            out[name] = s
        elif pa.types.is_list(t):
            out[name] = _list_column(col)
        elif pa.types.is_integer(t) and col.null_count == 0:
            out[name] = col.to_numpy()
        else:
            out[name] = col.to_numpy().astype("float64") if pa.types.is_integer(t) else col.to_numpy()
    return pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v) for k, v in out.items()})


def _list_column(col: pa.ChunkedArray) -> np.ndarray:
    """A list column as an object array of int64 numpy arrays (null lists as empty arrays)."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offsets = arr.offsets.to_numpy()  # of this slice, indexing the unsliced child `values`
    values = arr.values.to_numpy(zero_copy_only=False)
    values = np.nan_to_num(values.astype("float64"), nan=-1).astype("int64") if values.dtype.kind == "f" \
        else values.astype("int64")  # a null inside a histogram reads as bucket/count -1: the loader drops it
    base = offsets[0] if len(offsets) else 0
    values = values[base:offsets[-1]] if len(offsets) else values[:0]
    out = np.empty(len(arr), dtype=object)
    for i, part in enumerate(np.split(values, offsets[1:-1] - base) if len(arr) else []):
        out[i] = part  # one by one: a slice assignment of equal-length arrays would make a 2-D array
    if arr.null_count:
        empty = np.empty(0, dtype="int64")
        for i in np.flatnonzero(~arr.is_valid().to_numpy(zero_copy_only=False)):
            out[i] = empty
    return out


def read_rows(run_dir: str | Path, columns: Sequence[str] | None = None, warn: Warn | None = None) -> pd.DataFrame:
    """Kept event rows (contract.rows.COLUMNS): text as categoricals ("" for empty), ts and latency_ms
    float64, ok int8 (float64 only when the file holds nulls there, which the loader drops).
    An empty frame with the columns when the run kept none."""
    from contract.eventfiles import EVENT_TYPES

    df = read_table(run_dir, EVENTS, columns, warn)
    if df is None:
        cols = list(EVENT_TYPES) if columns is None else list(columns)
        return pd.DataFrame({c: pd.Series(dtype=_empty_dtype(EVENT_TYPES[c])) for c in cols})
    if "ok" in df and df["ok"].dtype.kind in "iu":
        df["ok"] = df["ok"].astype("int8")
    return df


def read_aggregates(run_dir: str | Path, columns: Sequence[str] | None = None,
                    warn: Warn | None = None) -> pd.DataFrame | None:
    """Per-second aggregate cells as stored (a stream may hold one key in several batches: every
    consumer merges by its own key set, analysis.aggregates.merge, which sums them). Histogram
    columns are object columns of int64 arrays. None when the run has no aggregates file."""
    return read_table(run_dir, AGGREGATES, columns, warn)


def read_delivery(run_dir: str | Path, columns: Sequence[str] | None = None,
                  warn: Warn | None = None) -> pd.DataFrame | None:
    """Broadcast delivery per send second, the newest write (largest `written`) of each second.
    None when the run has no delivery file."""
    cols = list(FILES[DELIVERY]) if columns is None else list(columns)
    need = [*cols, *[c for c in ("second", "written") if c not in cols]]
    df = read_table(run_dir, DELIVERY, need, warn)
    if df is None:
        return None
    if len(df):
        df = df.sort_values(["second", "written"], kind="stable").drop_duplicates("second", keep="last")
    return df[cols].reset_index(drop=True)


def legacy_csv(run_dir: str | Path) -> Path:
    return Path(run_dir) / LEGACY_EVENTS_CSV


def _empty_dtype(t: str) -> str:
    return {"string": "category", "int8": "int8", "int64": "int64"}.get(t, "float64")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


__all__ = ["arrow_schema", "arrow_type", "files_present", "legacy_csv", "read_aggregates", "read_delivery",
           "read_rows", "read_table", "schema_version"]
