"""One status machine for a run (meta.json) and for a report's config (summary.json).

Why one module: the runner decides a run's status when it ends, the Locust event log writes
the status of a plain `locust --sio-run-dir` run, and the report reconciles both with what
is on disk later (a SIGKILLed run never ends). If each judged on its own, a run could be
"ok" in meta.json and "degraded" on the page. Stdlib only: Locust workers import it.

The states and their order (a worse state wins when reasons combine):

    ok < degraded < running < failed < interrupted

- ok: the run did what was asked and every number covers all of it.
- degraded (with reasons): it ran, but part of the load or of the data is missing or suspect
  (a worker went missing, rows dropped, Locust exceptions, a fault not applied). The figures
  are real but cover less than was asked.
- running: the writer process is alive (or cannot be checked: another host).
- failed: it did not run, or produced nothing to judge (cluster did not start, Locust crashed).
- interrupted: it was stopped before its end (Ctrl-C, SIGTERM, SIGKILL, power loss).

Exit codes of `sioscale run` / `sioscale campaign` (EXIT_CODES): ok 0, failed 1, degraded 3,
interrupted 130 (2 stays "bad input" for every subcommand).
"""

from __future__ import annotations

import csv
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    RUNNING = "running"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


_ORDER = {s: i for i, s in enumerate(Status)}  # declaration order above is the severity order

EXIT_CODES: dict[Status, int] = {Status.OK: 0, Status.FAILED: 1, Status.DEGRADED: 3, Status.INTERRUPTED: 130,
                                 Status.RUNNING: 1}
"""Process exit code per status (`sioscale run`, `sioscale campaign`). RUNNING never ends a command."""

EXIT_CODE_HELP = ("exit codes: 0 ok; 1 failed (did not run, or nothing measured; for campaign also a "
                  "[thresholds] violation with --check); 2 bad input (config, flags); 3 degraded (it ran, "
                  "but a worker went missing, rows were dropped, Locust raised exceptions or a fault was "
                  "not applied: see the reasons); 130 interrupted")


def parse(value: Any) -> Status | None:
    """A status string from meta.json/summary.json; None when it is not one of ours."""
    try:
        return Status(str(value))
    except ValueError:
        return None


@dataclass
class RunStatus:
    """A status plus the reasons that put it there (sentences a reader can act on)."""

    status: Status = Status.OK
    reasons: list[str] = field(default_factory=list)

    def add(self, status: Status, reason: str | None = None) -> RunStatus:
        """Escalate to `status` if it is worse; keep the reason (once) whatever the status."""
        if _ORDER[status] > _ORDER[self.status]:
            self.status = status
        if reason and reason not in self.reasons:
            self.reasons.append(reason)
        return self

    def merge(self, other: RunStatus) -> RunStatus:
        self.add(other.status)
        for r in other.reasons:
            self.add(Status.OK, r)
        return self

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_meta(self) -> dict[str, Any]:
        """The meta.json / summary.json keys: "status" (a string, pinned) and "status_reasons"."""
        return {"status": self.status.value, "status_reasons": list(self.reasons)}


def worst(statuses: Iterable[Status | str | None]) -> Status:
    """The worst of several statuses (a campaign's exit code); unknown strings count as failed."""
    out = Status.OK
    for s in statuses:
        st = parse(s) or Status.FAILED
        if _ORDER[st] > _ORDER[out]:
            out = st
    return out


# -- who wrote "running": can we tell whether it is still alive? ------------------------------

def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid and
    the boot id it names one process, so a recycled pid is not taken for the writer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # fields after "(comm)": state is field 3
    except (OSError, ValueError, IndexError):
        return None


def writer_identity(pid: int | None = None) -> dict[str, Any]:
    """What meta.json records about the process that writes "running" (`writer`)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "start_ticks": _start_ticks(pid)}


def writer_alive(writer: Any) -> bool | None:
    """True/False when this machine can tell; None when it cannot (no record, another host)."""
    if not isinstance(writer, dict) or not isinstance(writer.get("pid"), int) or isinstance(writer.get("pid"), bool):
        return None
    if writer.get("host") not in (None, socket.gethostname()):
        return None
    boot = _boot_id()
    if writer.get("boot_id") and boot and writer["boot_id"] != boot:
        return False  # the machine rebooted since: nothing of that run can still run
    pid = writer["pid"]
    if not 0 < pid < 2**31:
        return None  # not a pid: os.kill(0 or -n) would address process groups
    ticks = _start_ticks(pid)
    if ticks is not None:
        want = writer.get("start_ticks")
        alive = want is None or ticks == want
        return alive and not _zombie(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return None
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process whose parent has not reaped it yet is gone as far as the run is concerned."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X")
    except (OSError, ValueError, IndexError):
        return False


# -- what the run directory says --------------------------------------------------------------

def from_sio_stats(stats: Any) -> RunStatus:
    """Degraded for what the event log saw: workers that went missing, rows it had to drop."""
    out = RunStatus()
    if not isinstance(stats, dict):
        return out
    missing = [w for w in stats.get("missing_workers") or [] if isinstance(w, dict)]
    if missing:
        ids = ", ".join(str(w.get("id")) for w in missing)
        rows = sum(int(w.get("rows") or 0) for w in missing if isinstance(w.get("rows"), int))
        out.add(Status.DEGRADED, f"{len(missing)} Locust worker(s) went missing mid-run ({ids}; {rows} row(s) "
                                 "received from them): their users stopped producing load and their last rows "
                                 "may be lost")
    dropped = stats.get("dropped_rows")
    if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0:
        out.add(Status.DEGRADED, f"the event log dropped {dropped} row(s) (buffer full): figures undercount")
    return out


def from_locust_exceptions(path: Path, has_events: bool) -> RunStatus:
    """Exceptions Locust caught in users (locust_exceptions.csv): a crash in the harness or a
    scenario, never a server finding; every user raising before any step is a failed run."""
    out = RunStatus()
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows = [r for r in csv.DictReader(fh) if isinstance(r, dict)]
    except (OSError, csv.Error):
        return out
    total = 0
    for r in rows:
        try:
            total += int(float(r.get("Count") or 0))
        except (TypeError, ValueError):
            total += 1
    if not total:
        return out
    first = next((str(r.get("Message") or "").strip() for r in rows if r.get("Message")), "")
    text = (f"Locust caught {total} exception(s) in users ({len(rows)} kind(s))"
            + (f", e.g. {first[:200]}" if first else "") + " — see locust_exceptions.csv")
    if has_events:
        out.add(Status.DEGRADED, text + "; the users that raised stopped measuring")
    else:
        out.add(Status.FAILED, text + "; no step was recorded, nothing was measured")
    return out


def from_faults(faults: Any) -> RunStatus:
    """A planned fault that could not be applied (or never fired) means the scenario was not the one asked."""
    out = RunStatus()
    for f in faults if isinstance(faults, list) else []:
        if isinstance(f, dict) and f.get("error"):
            what = " ".join(str(x) for x in (f.get("action"), f.get("target")) if x)
            out.add(Status.DEGRADED, f"fault {what} at {f.get('at')} s: {f['error']}")
    return out


def has_events(run_dir: Path) -> bool:
    """Whether the run recorded at least one step: a non-empty aggregates stream or its Parquet file
    (schema 2: the event log creates them with their first cell, contract/eventfiles.py), or
    events.csv with a row below its header (schema 1; read a few KB, not the file)."""
    for name in ("aggregates.parquet", "aggregates.arrows"):
        try:
            if (run_dir / name).stat().st_size > 0:
                return True
        except OSError:
            pass
    try:
        with (run_dir / "events.csv").open("rb") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return False
    lines = [ln for ln in head.split(b"\n") if ln.strip()]
    return len(lines) > 1 or (len(lines) == 1 and not lines[0].startswith(b"ts,"))


def assess(run_dir: Path, meta: dict[str, Any] | None = None) -> RunStatus:
    """Everything the run directory's files say about the run, besides meta.json's own status."""
    meta = meta if isinstance(meta, dict) else {}
    out = RunStatus()
    try:
        stats = json.loads((run_dir / "sio_stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stats = None
    out.merge(from_sio_stats(stats))
    out.merge(from_locust_exceptions(run_dir / "locust_exceptions.csv", has_events(run_dir)))
    out.merge(from_faults(meta.get("faults")))
    return out


def reconcile(meta: dict[str, Any] | None, run_dir: Path | None) -> RunStatus:
    """The status a report shows: meta.json's status and reasons, checked against reality.

    A meta.json that still says "running" is believed only while its writer lives: a writer that is
    gone (SIGKILL, crash, reboot) left an interrupted run; no writer record (older runs) is taken as
    interrupted too, since nothing would ever finish it. The files (missing workers, exceptions, …)
    are assessed again, so a plain `locust` run or an old run directory is judged the same way.
    """
    meta = meta if isinstance(meta, dict) else {}
    out = RunStatus()
    raw = meta.get("status")
    st = parse(raw)
    reasons = [str(r) for r in meta.get("status_reasons") or [] if r] if isinstance(meta.get("status_reasons"), list) else []
    if st is Status.RUNNING:
        out.merge(_running(meta))
    elif st is None:
        if raw is not None:
            out.add(Status.DEGRADED, f"meta.json status {raw!r} is not one of {', '.join(s.value for s in Status)}")
    else:
        out.add(st)
        if st in (Status.FAILED, Status.INTERRUPTED) and not reasons and meta.get("error"):
            reasons = [str(meta["error"])]
    for r in reasons:
        out.add(Status.OK, r)
    if run_dir is not None:
        out.merge(assess(run_dir, meta))
    return out


def _running(meta: dict[str, Any]) -> RunStatus:
    out = RunStatus()
    writer = meta.get("writer")
    alive = writer_alive(writer)
    who = (f"pid {writer.get('pid')}" + (f" on {writer['host']}" if writer.get("host") else "")
           if isinstance(writer, dict) else "")
    if alive:
        return out.add(Status.RUNNING, f"still running ({who}): the figures cover it so far")
    if alive is None and isinstance(writer, dict) and writer.get("host") not in (None, socket.gethostname()):
        return out.add(Status.RUNNING, f"meta.json says running, written by {who}: cannot check from this host "
                                       "whether it still runs")
    if alive is None:
        return out.add(Status.INTERRUPTED, "meta.json still says running but names no process to check: the run "
                                           "never finished (killed?); the figures cover only what it wrote")
    return out.add(Status.INTERRUPTED, f"the run's process ({who}) is gone but meta.json still says "
                                       "running — it was killed (SIGKILL, crash, reboot) before it could finish; "
                                       "the figures cover only what it wrote until then")
