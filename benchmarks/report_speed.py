"""Load → report time for a 1,000,000-event run (floor: ≤ 30 s on the 2-core reference machine).

Generates one realistic run directory with tests.synth (chat scenario, polling→websocket behind a
cookie balancer, Redis adapter, 3 nodes; broadcast receives are most of the rows, as in a real chat run),
then times analysis.load.load_runs and analysis.report.write_report separately. Last line: JSON.
--schema 1 writes events.csv (every row); --schema 2 the same simulated steps as aggregates, the rows the
default row policy keeps and delivery seconds (contract/eventfiles.py), as the event log writes them now.

    .venv/bin/python benchmarks/report_speed.py [--rows 1000000] [--schema 1|2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.load import load_runs
from analysis.report import write_report
from analysis.runfiles import schema_version
from tests.synth import SynthConfig, write_run, write_run_v2

FLOOR_S = 30.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="target event rows (approximate)")
    ap.add_argument("--keep", default=None, help="write the run and the report here instead of a temp dir")
    ap.add_argument("--schema", type=int, choices=(1, 2), default=1, help="run directory layout (default 1: CSV)")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="sioscale-bench-"))
    users = 300
    # ≈ 0.5 ack + 0.5 send + 0.5 × room_size receives per user-second at 1 msg/s (Redis: every member receives)
    duration = a.rows / (users * (1 + 0.5 * 10))
    cfg = SynthConfig("bench-haproxy-cookie-poll+ws-redis-python-3n", adapter="redis", users=users,
                      duration=duration, spawn_rate=100, room_size=10, message_rate=1.0, seed=42)
    t = time.perf_counter()
    run = (write_run if a.schema == 1 else write_run_v2)(root / "runs" / cfg.name, cfg)
    gen_s = time.perf_counter() - t
    assert schema_version(run) == a.schema
    files = [f for f in run.iterdir() if f.name.startswith(("events.", "aggregates.", "delivery."))]
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"generated schema {a.schema} ({', '.join(sorted(f.name for f in files))}: {size_mb:.1f} MB) in "
          f"{gen_s:.1f} s", flush=True)

    t = time.perf_counter()
    frames = load_runs([run])
    load_s = time.perf_counter() - t
    rows = int(frames.runs["n_events"].sum())  # steps (exact from the aggregates), as many as CSV rows
    print(f"load: {load_s:.2f} s ({rows / load_s:,.0f} rows/s), {frames.events.memory_usage(deep=True).sum() / 1e6:.0f} MB "
          f"in memory, {len(frames.warnings)} warning(s)", flush=True)
    t = time.perf_counter()
    summary = write_report([run], root / "report")
    total_s = time.perf_counter() - t  # write_report loads again: this is the full load → report time
    print(f"load → report (write_report): {total_s:.2f} s; index.html {(root / 'report' / 'index.html').stat().st_size / 1e3:.0f} kB",
          flush=True)
    c = summary["configs"][0]
    print(f"delivery ratio {c['broadcast']['delivery_ratio']}, connect ratio {c['connections']['connect_ratio']}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(json.dumps({"benchmark": "report_speed", "schema": a.schema, "rows": rows,
                      "rows_loaded": int(frames.runs["n_rows"].sum()), "events_mb": round(size_mb, 1),
                      "load_s": round(load_s, 2), "load_to_report_s": round(total_s, 2), "floor_s": FLOOR_S,
                      "within_floor": total_s <= FLOOR_S, "peak_rss_mb": round(peak_mb), "dir": str(root)}))
    return 0 if total_s <= FLOOR_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
