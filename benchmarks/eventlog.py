"""Metrics at scale (issue 11): the master's ingest rate, bytes per user-hour, and the report on an hour.

    .venv/bin/python -m benchmarks.eventlog [--quick] [--users 10000] [--duration 3600] [--keep DIR]

Last line: one JSON object. What it measures, on synthetic worker payloads at a chat load's real
rate (benchmarks/_synthetic_chat.py says how they are made and reused):
- `master_events_per_s`: the master's work for a run, `locustfiles.sio.eventlog.ingest_batch` of
  every worker's payload plus one `flush` a second (files, live stats, sio_stats.json), timed in
  process CPU seconds (time.process_time, one process); events = the steps the payloads' cells
  count. The end of the run (final flush and compaction to Parquet) is timed apart (`end_cpu_s`).
  Target: >= 250,000 events/s on one core.
- `storm_master_events_per_s`: the same for a failure storm (every user reconnecting under an L7
  round-robin, every attempt failing; failure rows budgeted by the row policy).
- `record_us_per_event`: the users' side per step, `locustfiles.sio.eventlog.record` (aggregator,
  row policy, receipts, the send list) over worker 0's simulated chat steps, drained each second
  untimed; `record_contract_us_per_event`: the same work done by the simulator with the contract's
  objects alone, over every worker's simulated steps.
- `bytes_per_user_hour`: the run directory's event files after the run (Parquet) over users x hours.
  Target: a 10,000-user hour <= 1 GB.
- `report_s`, `report_peak_rss_mb`: `sioscale report` on that run directory, a child process (wall
  time; ru_maxrss of that child from wait4). Target: <= 60 s and <= 4 GB.
With `--duration` under an hour, the hour figures are also given extrapolated linearly (named
`*_hour_extrapolated`); the measured ones keep their names. Nothing here opens a socket.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._synthetic_chat import ChatLoad, ChatRun, events_in, storm_seconds
from contract.eventfiles import FILES, FINAL_SUFFIX, STREAM_SUFFIX
from contract.rowpolicy import RowPolicyConfig
from tests.synth import SynthConfig, _meta  # the meta.json shape of a run (private, shared)

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"master_events_per_s": 250_000, "bytes_per_user_hour_max": 1e9 / 10_000, "report_s_max": 60.0,
           "report_peak_rss_mb_max": 4096.0}
END_NAMES = ("finish", "end_run", "close_run", "finalize", "end")
"""The event log's public "end the run and compact" function, by the first of these names it has."""

Payloads = Iterable[tuple[int, list[dict[str, Any]]]]


def master_api() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any], str]:
    """(ingest_batch, flush, write_stats, end, end's name) of locustfiles.sio.eventlog; SystemExit
    if it has no ingest_batch."""
    from locustfiles.sio import eventlog

    ingest = getattr(eventlog, "ingest_batch", None)
    if ingest is None:
        raise SystemExit("locustfiles.sio.eventlog has no ingest_batch(environment, worker_id, data): "
                         "the schema-2 event log is not there yet; nothing measured")
    for name in END_NAMES:
        end = getattr(eventlog, name, None)
        if callable(end):
            return ingest, eventlog.flush, eventlog.write_stats, end, name
    return (ingest, eventlog.flush, eventlog.write_stats, lambda env: eventlog._on_quitting(env),
            "_on_quitting (the quitting listener: no public end function)")


def environment(run_dir: Path, run: str) -> SimpleNamespace:
    """What the event log reads of a Locust environment on the master: the options, no runner."""
    return SimpleNamespace(parsed_options=SimpleNamespace(sio_run_dir=str(run_dir), sio_run_name=run), runner=None)


def ingest(payloads: Payloads, run_dir: Path, run: str, workers: list[str]) -> dict[str, Any]:
    """Feed every second's payloads to the master's ingest, flush once a second, then end the run.
    Only the event log's calls are timed (process CPU, and wall), never making the payloads.

    sio_stats.json is written every STATS_INTERVAL_S seconds *of the run* here: the event log
    decides by the wall clock, and a benchmark second takes milliseconds, so left alone it would
    write the file once every hundred run-seconds and hide that cost."""
    from locustfiles.sio.eventlog import STATS_INTERVAL_S

    ingest_batch, flush, write_stats, end, end_name = master_api()
    stats_every = max(1, round(STATS_INTERVAL_S))
    env = environment(run_dir, run)
    cpu = wall = 0.0
    events = rows = seconds = 0
    policy: dict[str, int] = {}
    for _s, ps in payloads:
        policy = {n: sum(p["policy"][n] for p in ps) for n in ps[0]["policy"]}  # cumulative per worker
        events += sum(events_in(p) for p in ps)
        rows += sum(len(p["rows"]) for p in ps)
        c0, w0 = time.process_time(), time.perf_counter()
        for wid, p in zip(workers, ps, strict=True):
            ingest_batch(env, wid, p)
        flush(env)
        if seconds % stats_every == 0:
            write_stats(env)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        seconds += 1
    stream_bytes = file_bytes(run_dir, STREAM_SUFFIX)
    c0, w0 = time.process_time(), time.perf_counter()
    end(env)
    end_cpu, end_wall = time.process_time() - c0, time.perf_counter() - w0
    return {"seconds": seconds, "events": events, "rows_shipped": rows,
            "load_events_per_s": round(events / max(1, seconds)), "load_rows_per_s": round(rows / max(1, seconds)),
            "row_policy_counts": policy,
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3), "events_per_s": round(events / cpu) if cpu else None,
            "cpu_per_second_ms": round(cpu / max(1, seconds) * 1000, 2), "end_cpu_s": round(end_cpu, 3),
            "end_wall_s": round(end_wall, 3), "end_function": end_name, "stream_bytes": stream_bytes,
            "events_per_s_with_end": round(events / (cpu + end_cpu)) if cpu + end_cpu else None}


def file_bytes(run_dir: Path, *suffixes: str) -> int:
    """Bytes of the event files (contract.eventfiles kinds) with these suffixes."""
    return sum(p.stat().st_size for kind in FILES for suf in suffixes
               if (p := run_dir / f"{kind}{suf}").exists())


def write_meta(run_dir: Path, load: ChatLoad, duration_s: int, status: str, ended: float | None) -> None:
    """meta.json as `sioscale run`'s runner writes it (its one writer; the event log leaves it alone)."""
    cfg = SynthConfig(load.run, users=load.users, duration=float(duration_s), nodes=load.nodes,
                      room_size=load.room_size, message_rate=load.message_rate, spawn_rate=load.spawn_rate,
                      start=float(load.start), status=status)
    meta = _meta(cfg)
    meta["ended"] = ended
    meta["locust_command"] = ["locust", "-f", "locustfiles/chat.py", "--headless", "--processes",
                              str(load.workers), "(synthetic: benchmarks/eventlog.py)"]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def chat(load: ChatLoad, duration_s: int, run_dir: Path, warmup_s: int | None) -> tuple[dict[str, Any], ChatRun]:
    """The chat run through the master into run_dir (meta.json first, then status ok at the end)."""
    write_meta(run_dir, load, duration_s, "running", None)
    sim = ChatRun(load, duration_s, RowPolicyConfig(), warmup_s=warmup_s)
    attach_record(sim)
    workers = [w.sim.wid for w in sim.workers]
    t0 = time.perf_counter()
    out = ingest(sim.seconds(), run_dir, load.run, workers)
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    out["simulated_seconds"] = sim.simulated_s
    out["served_seconds"] = sim.served_s
    write_meta(run_dir, load, duration_s, "ok", float(load.start + duration_s))
    return out, sim


def attach_record(sim: ChatRun) -> None:
    """Feed worker 0's simulated steps also to the event log's own `record()` (a process with no
    run directory), timed apart: the users' side as the event log does it. Drained untimed each
    second with `flush`, as its flusher would."""
    from locustfiles.sio import eventlog

    env = environment(Path(), "bench-record")
    env.parsed_options.sio_run_dir = ""
    w = sim.workers[0]
    w.also = lambda r: eventlog.record(env, r)
    w.also_drain = lambda: eventlog.flush(env)


def storm(load: ChatLoad, duration_s: int, run_dir: Path) -> dict[str, Any]:
    """The failure storm through the master (its own run directory)."""
    write_meta(run_dir, load, duration_s, "running", None)
    from benchmarks._synthetic_chat import worker_id

    return ingest(storm_seconds(load, duration_s), run_dir, load.run + "-storm",
                  [worker_id(k) for k in range(load.workers)])


def report(run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """`sioscale report RUN_DIR --out OUT` as a child process: wall time, peak RSS, exit code."""
    exe = ROOT / ".venv" / "bin" / "sioscale"
    cmd = [str(exe) if exe.exists() else "sioscale", "report", str(run_dir), "--out", str(out_dir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read() if proc.stdout else b"", proc.stderr.read() if proc.stderr else b""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"report_s": round(wall, 2), "report_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "report_exit": proc.returncode, "report_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "report_tail": (stderr or stdout).decode(errors="replace").strip().splitlines()[-3:]}


def eventlog_record_us(sim: ChatRun) -> float | None:
    """µs per step of locustfiles.sio.eventlog.record over worker 0's simulated steps."""
    w = sim.workers[0]
    return round(w.also_s / w.also_events * 1e6, 3) if w.also_events else None


def code_version() -> dict[str, Any]:
    """The commit measured, and the event log's files that differ from it (figures move with them)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except OSError:
            return ""

    changed = git("status", "--porcelain", "--", "locustfiles", "contract", "analysis").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": [ln[3:] for ln in changed]}


def run_dir_bytes(run_dir: Path) -> dict[str, int]:
    """Bytes by file of the run directory (the event files and the JSON beside them)."""
    return {p.name: p.stat().st_size for p in sorted(run_dir.iterdir()) if p.is_file()}


def args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small and short (a smoke test: < 60 s)")
    ap.add_argument("--users", type=int, default=None, help="virtual users (default 10000; quick 1000)")
    ap.add_argument("--workers", type=int, default=4, help="Locust worker processes (default 4)")
    ap.add_argument("--duration", type=int, default=None, help="run seconds (default 3600; quick 100)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="seconds simulated in full before the reused window (default: ramp + first rows of "
                         "every step, at least ramp + first ping; quick: that least)")
    ap.add_argument("--storm-seconds", type=int, default=None, help="failure storm seconds (default 120; quick 10)")
    ap.add_argument("--no-report", action="store_true", help="skip sioscale report")
    ap.add_argument("--keep", default=None, help="write the run directories and the report here")
    return ap.parse_args()


def main() -> int:
    a = args()
    users = a.users or (1000 if a.quick else 10_000)
    duration = a.duration or (100 if a.quick else 3600)
    warmup = a.warmup if a.warmup is not None else (0 if a.quick else None)
    storm_s = a.storm_seconds or (10 if a.quick else 120)
    # the ramp: 20 s (500 users/s at 10,000 users); quick: 5 s
    load = ChatLoad(users=users, workers=a.workers, spawn_rate=users / (5 if a.quick else 20), run="bench-chat")
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="sioscale-bench-eventlog-"))
    try:
        return measure(load, duration, warmup, storm_s, root, not a.no_report, a.quick)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


def measure(load: ChatLoad, duration: int, warmup: int | None, storm_s: int, root: Path, with_report: bool,
            quick: bool) -> int:
    code = code_version()  # at the start: the modules measured are the ones imported now
    chat_dir, storm_dir = root / "runs" / "chat", root / "runs" / "storm"
    for d in (chat_dir, storm_dir):
        shutil.rmtree(d, ignore_errors=True)
    gc.collect()
    c, sim = chat(load, duration, chat_dir, warmup)
    print(f"chat: {load.users} users x {duration} s, {c['events']:,} events, master {c['events_per_s']:,} events/s "
          f"({c['cpu_s']} CPU s; end {c['end_cpu_s']} s)", file=sys.stderr)
    record_us, record_contract_us = eventlog_record_us(sim), round(sim.record_us_per_event() or 0.0, 3)
    sim_params = {"warmup_s": sim.warmup_s, "template_s": sim.template_s}
    del sim  # the storm's master does not walk the chat simulation's heap in its collections
    gc.collect()
    s = storm(load, storm_s, storm_dir)
    print(f"storm: {s['events']:,} events in {storm_s} s, master {s['events_per_s']:,} events/s, "
          f"{s['rows_shipped']:,} rows shipped", file=sys.stderr)
    files = run_dir_bytes(chat_dir)
    event_bytes = file_bytes(chat_dir, FINAL_SUFFIX, STREAM_SUFFIX)
    hours = duration / 3600
    out: dict[str, Any] = {
        "master_events_per_s": c["events_per_s"],
        "storm_master_events_per_s": s["events_per_s"],
        "record_us_per_event": record_us,
        "record_contract_us_per_event": record_contract_us,
        "bytes_per_user_hour": round(event_bytes / load.users / hours),
        "run_dir_bytes": sum(files.values()),
        "event_file_bytes": event_bytes,
        "stream_bytes_before_end": c["stream_bytes"],
    }
    if with_report:
        rep = report(chat_dir, root / "report")
        out.update(rep)
        print(f"report: {rep['report_s']} s, {rep['report_peak_rss_mb']} MB, exit {rep['report_exit']}",
              file=sys.stderr)
    else:
        out.update({"report_s": None, "report_peak_rss_mb": None})
    if duration < 3600:
        out["event_file_bytes_hour_extrapolated"] = round(event_bytes / hours)
        if out.get("report_s") is not None:
            out["report_s_hour_extrapolated"] = round(out["report_s"] / hours, 1)
    out.update({"params": {"quick": quick, "duration_s": duration, "storm_s": storm_s, **load.as_json(),
                           **sim_params,
                           "row_policy": RowPolicyConfig().as_json()},
                "chat": c, "storm": s, "files": files, "targets": TARGETS, "code": code,
                "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
