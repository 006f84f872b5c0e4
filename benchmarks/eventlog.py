"""Event-log and live-stats throughput: how many rows per second one process can record,
aggregate and write, i.e. the master's ceiling when every worker ships its rows to it.

.venv/bin/python -m benchmarks.eventlog [N_ROWS]     (last line: one JSON object)

Chat-like rows: rooms of 10 users, every broadcast received by the room, acks in between.
No sockets; a temporary run directory.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import tracemalloc
from types import SimpleNamespace

from contract.rows import make_row
from locustfiles.sio import eventlog
from locustfiles.sio.live import LiveStats


def chat_rows(n: int, users: int = 200, room_size: int = 10) -> list[dict]:
    rows: list[dict] = []
    t = 1_000_000.0
    for u in range(users):
        rows.append(make_row("connect", ts=t, user=f"u{u}", eio_sid=f"s{u}", node=f"n{u % 3 + 1}"))
        rows.append(make_row("join", ts=t, user=f"u{u}", room=f"r{u // room_size}"))
    i = 0
    while len(rows) < n:
        t += 0.001
        u = i % users
        room = u // room_size
        if i % 2:
            rows.append(make_row("ack", ts=t, user=f"u{u}", latency_ms=3.0))
        else:
            rows.append(make_row("broadcast_send", ts=t, user=f"u{u}", room=f"r{room}", msg_id=f"m{i}"))
            for v in range(room * room_size, room * room_size + room_size):
                rows.append(make_row("broadcast_recv", ts=t + 0.004, user=f"u{v}", room=f"r{room}",
                                     msg_id=f"m{i}", latency_ms=4.0))
        i += 1
    return rows[:n]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rows = chat_rows(n)
    # 1. live aggregation alone
    s = LiveStats()
    t0 = time.perf_counter()
    s.add_many(rows)
    snap = s.snapshot()
    live_s = time.perf_counter() - t0
    # 2. record() cost on the users' side
    env = SimpleNamespace(parsed_options=SimpleNamespace(sio_run_dir="", sio_run_name="bench"), runner=None)
    t0 = time.perf_counter()
    for r in rows:
        eventlog.record(env, r)
    record_s = time.perf_counter() - t0
    # 3. full master path: ingest + live + CSV write (fresh rows: ingest fills them in place)
    with tempfile.TemporaryDirectory() as d:
        env2 = SimpleNamespace(parsed_options=SimpleNamespace(sio_run_dir=d, sio_run_name="bench"), runner=None)
        tracemalloc.start()
        t0 = time.perf_counter()
        for k in range(0, len(rows), 5000):
            for r in rows[k:k + 5000]:
                eventlog.record(env2, dict(r))
            eventlog.flush(env2)
        full_s = time.perf_counter() - t0
        _cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    out = {
        "rows": n,
        "record_us_per_row": round(record_s / n * 1e6, 3),
        "live_rows_per_s": round(n / live_s),
        "master_rows_per_s": round(n / full_s),
        "master_peak_mb": round(peak / 1e6, 1),
        "delivery_ratio": snap["delivery"]["ratio"],
    }
    print(f"record(): {out['record_us_per_row']} µs/row; live aggregate: {out['live_rows_per_s']} rows/s; "
          f"master (ingest+live+csv): {out['master_rows_per_s']} rows/s, peak {out['master_peak_mb']} MB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
