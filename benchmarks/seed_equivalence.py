"""Issue 11's proof that nothing changed where it matters: the seed table from the aggregates and
from every row, on the same runs.

    .venv/bin/python -m benchmarks.seed_equivalence [--campaign campaigns/seed.toml] [--out DIR] [--reuse]

Runs differ from one another, so both tables come from the same run directories: the campaign runs
once with `log_all = true` (every row kept beside the aggregates). Each run directory then gets a
schema-1 twin (its rows as events.csv, the aggregates and delivery seconds left out), and both sets
are reported by the same `analysis.report.write_report`. Printed: both tables side by side, the
largest differences, and (last line) one JSON object with `max_count_diff` (must be 0),
`max_ratio_diff` (0) and `max_p95_rel_diff` (within contract.histogram.RELATIVE_ERROR).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from analysis.report import write_report
from analysis.runfiles import read_rows
from contract.eventfiles import AGGREGATES, DELIVERY, EVENTLOG_JSON, EVENTS, FINAL_SUFFIX, STREAM_SUFFIX
from contract.histogram import RELATIVE_ERROR
from contract.rows import COLUMNS

ROOT = Path(__file__).resolve().parents[1]
P95_STEPS = ("connect", "ack", "broadcast_recv")


def log_all_campaign(src: Path, dst: Path) -> None:
    """The campaign with every row kept (its [load] table gains log_all = true)."""
    text = src.read_text()
    data = tomllib.loads(text)
    if data.get("load", {}).get("log_all"):
        dst.write_text(text)
        return
    dst.write_text(text.replace("[load]\n", "[load]\nlog_all = true\n", 1))


def schema1_twin(run: Path, twin: Path) -> None:
    """The same run as a schema-1 directory: every row in events.csv, no aggregates or delivery files."""
    skip = {f"{k}{s}" for k in (EVENTS, AGGREGATES, DELIVERY) for s in (STREAM_SUFFIX, FINAL_SUFFIX)} | {EVENTLOG_JSON}
    twin.mkdir(parents=True)
    for p in run.iterdir():
        if p.is_file() and p.name not in skip:
            shutil.copy2(p, twin / p.name)
    rows = read_rows(run)
    rows = rows[list(COLUMNS)].copy()
    rows["ok"] = rows["ok"].astype(int)
    rows.to_csv(twin / "events.csv", index=False)


def table(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The seed table's figures per config: connect, upgrade, session_unknown, delivery, p95s, nodes used."""
    out = {}
    for c in summary["configs"]:
        conn, b = c.get("connections") or {}, c.get("broadcast") or {}
        lat = c.get("latency_ms") or {}
        out[c["name"]] = {
            "attempted": conn.get("attempted"), "connected": conn.get("connected"), "upgraded": conn.get("upgraded"),
            "connect_ratio": conn.get("connect_ratio"), "upgrade_ratio": conn.get("upgrade_ratio"),
            "session_unknown": (c.get("failures") or {}).get("session_unknown", 0),
            "expected": b.get("expected"), "delivered": b.get("delivered"), "delivery_ratio": b.get("delivery_ratio"),
            **{f"p95_{s}": (lat.get(s) or {}).get("p95") for s in P95_STEPS},
            "nodes_used": len(c.get("nodes") or {}),
        }
    return out


def raw_p95(twins: list[Path], table_r: dict[str, dict[str, Any]]) -> None:
    """Replace the rows table's p95s with numpy's over every raw latency (the pre-histogram figure:
    ok rows with a latency), so the comparison measures the histogram's error, not itself."""
    import numpy as np
    import pandas as pd

    for twin in twins:
        meta = json.loads((twin / "meta.json").read_text())
        name = str(meta.get("run") or twin.name)
        if name not in table_r:
            continue
        ev = pd.read_csv(twin / "events.csv", usecols=["step", "ok", "latency_ms"])
        ev = ev[(ev["ok"] == 1) & ev["latency_ms"].notna()]
        for step in P95_STEPS:
            v = ev.loc[ev["step"] == step, "latency_ms"].to_numpy(dtype=float)
            table_r[name][f"p95_{step}"] = float(np.quantile(v, 0.95)) if len(v) else None


def compare(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, float]:
    worst = {"max_count_diff": 0.0, "max_ratio_diff": 0.0, "max_p95_rel_diff": 0.0}
    for name, ra in a.items():
        rb = b.get(name, {})
        for k, va in ra.items():
            vb = rb.get(k)
            if va is None or vb is None or (isinstance(va, float) and math.isnan(va)):
                if (va is None) != (vb is None):
                    worst["max_count_diff"] = math.inf
                continue
            if k.startswith("p95_"):
                worst["max_p95_rel_diff"] = max(worst["max_p95_rel_diff"], abs(va - vb) / max(abs(vb), 1e-9))
            elif k.endswith("_ratio"):
                worst["max_ratio_diff"] = max(worst["max_ratio_diff"], abs(va - vb))
            else:
                worst["max_count_diff"] = max(worst["max_count_diff"], abs(va - vb))
    return worst


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


def print_tables(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> None:
    keys = ["connect_ratio", "upgrade_ratio", "session_unknown", "delivery_ratio", *[f"p95_{s}" for s in P95_STEPS],
            "nodes_used"]
    print("config".ljust(44) + "".join(k[:14].rjust(15) for k in keys))
    for name in a:
        print(("A " + name)[:44].ljust(44) + "".join(fmt(a[name].get(k)).rjust(15) for k in keys))
        print(("R " + name)[:44].ljust(44) + "".join(fmt(b.get(name, {}).get(k)).rjust(15) for k in keys))
    print("A = from the aggregates (schema 2), R = from every row (the same run as schema 1; p95s by numpy over the raw latencies)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaign", default=str(ROOT / "campaigns" / "seed.toml"))
    ap.add_argument("--out", default="")
    ap.add_argument("--reuse", action="store_true", help="use the runs already in OUT/runs (no new campaign)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sioscale-equiv-"))
    if not args.reuse:
        camp = out / "campaign.toml"
        out.mkdir(parents=True, exist_ok=True)
        log_all_campaign(Path(args.campaign), camp)
        rc = subprocess.run([str(ROOT / ".venv" / "bin" / "sioscale"), "campaign", str(camp), "--out", str(out)],
                            cwd=ROOT, check=False).returncode
        print(f"campaign exit code {rc}", file=sys.stderr)
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    twins = out / "schema1"
    shutil.rmtree(twins, ignore_errors=True)
    for r in runs:
        schema1_twin(r, twins / r.name)
    a = table(write_report(runs, out / "report-aggregates"))
    b = table(write_report(sorted(twins.iterdir()), out / "report-rows"))
    raw_p95(sorted(twins.iterdir()), b)
    print_tables(a, b)
    worst = compare(a, b)
    print(json.dumps({"configs": len(a), **worst, "stated_relative_error": RELATIVE_ERROR,
                      "within_error": worst["max_count_diff"] == 0 and worst["max_ratio_diff"] < 1e-12
                      and worst["max_p95_rel_diff"] <= RELATIVE_ERROR + 1e-9, "out": str(out)}))


if __name__ == "__main__":
    main()
