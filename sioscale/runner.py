"""One run, end to end: (cluster up) → headless Locust → run directory → (cluster down).

`sioscale run` and `sioscale campaign` both call `execute_run`, so a campaign cell and a
single run produce the same run directory (docs/contracts.md). Locust runs as a child
process, not in-process: it monkey-patches the interpreter with gevent, forks workers for
`--processes`, and must be killable as a group on Ctrl-C without taking the supervisor down.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from contract import environment
from contract import status as run_status
from contract.config import (
    DEFAULT_HTTP_POOL,
    ConfigError,
    Fault,
    LoadConfig,
    RunConfig,
    ScrapeTarget,
    sends_user_header,
    to_jsonable,
    with_policy_defaults,
)
from contract.control import SILENT_FILE, SilentOrder, orders_json
from contract.jsonfile import write_json  # also used by the Locust side's event log
from contract.options import load_flags
from targets.procs import Child, free_port

ROOT = Path(__file__).resolve().parent.parent
Progress = Callable[[str], None]


def locustfile_paths(cfg: RunConfig) -> list[str]:
    """The locustfile(s) for a run; checked before any load starts."""
    lf = Path(cfg.load.locustfile)
    if not lf.is_absolute():
        lf = (Path.cwd() / lf) if (Path.cwd() / lf).exists() else ROOT / lf
    if not lf.is_file():
        raise ConfigError(f"locustfile = {cfg.load.locustfile!r}: no such file")
    files = [str(lf)]
    if cfg.load.steps:
        files.append(str(ROOT / "locustfiles" / "steps.py"))
    return files


def locust_command(cfg: RunConfig, url: str, run_dir: Path, ca_file: str | None = None) -> list[str]:
    lo = cfg.load
    cmd = [
        sys.executable, "-m", "locust",
        "-f", ",".join(locustfile_paths(cfg)),
        "--headless", "--host", url,
        "-u", str(max(s.users for s in lo.steps) if lo.steps else lo.users),
        "-r", str(lo.spawn_rate),
        "--csv", str(run_dir / "locust"), "--csv-full-history",
        "--json-file", str(run_dir / "locust"),
        "--logfile", str(run_dir / "locust.log"),
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    if not lo.steps:
        cmd += ["-t", f"{lo.duration:g}s"]
    if lo.processes > 1:
        # A private master port on loopback: by default every `--processes` run on a machine
        # uses *:5557, so two concurrent runs adopt each other's workers and mix their rows.
        port = str(free_port())
        cmd += ["--processes", str(lo.processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", port, "--master-port", port]
    # The --sio-* flags: LoadConfig's fields through the option table, plus what the runner owns.
    cmd += load_flags(lo, run_dir=str(run_dir), run_name=cfg.name, node_header=cfg.cluster.node_header,
                      ca_file=ca_file or None, user_header=sends_user_header(cfg.cluster))
    return cmd + list(lo.extra_args)


def check_reachable(url: str, path: str = "/socket.io/", timeout: float = 5.0) -> None:
    """Fail before any load starts when nothing answers an Engine.IO handshake at `url`."""
    probe = url.rstrip("/") + path + "?EIO=4&transport=polling"
    try:
        urllib.request.urlopen(probe, timeout=timeout).read(1)
    except urllib.error.HTTPError:
        return  # something answered HTTP; whether it is Socket.IO is the run's finding
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"--url {url}: unreachable ({reason}); is the server up and the URL right?") from None


class interrupts_deferred:  # used like a function: `with interrupts_deferred():`
    """Hold SIGINT/SIGTERM off while children are stopped; re-raise one interrupt afterwards.

    Why: cli.py turns SIGTERM into KeyboardInterrupt, so a second Ctrl-C/SIGTERM arriving while
    the first one's cleanup runs would abort that cleanup half-way and leave Locust or cluster
    processes behind. The handlers (not the thread's signal mask: any thread may take a
    process-directed signal) are swapped for one that only notes the signal. Nested use is a
    no-op; off the main thread Python cannot set handlers, so it is a no-op there too.
    """

    _depth = 0
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> interrupts_deferred:
        self.active = threading.current_thread() is threading.main_thread() and interrupts_deferred._depth == 0
        self.noted: list[int] = []
        if self.active:
            self.saved = {s: signal.getsignal(s) for s in self.SIGNALS}
            for s in self.SIGNALS:
                signal.signal(s, self._note)
        interrupts_deferred._depth += 1
        return self

    def _note(self, signum: int, _frame: object) -> None:
        self.noted.append(signum)
        # os.write, not print: a handler may run while the main thread is inside a print to stderr
        os.write(2, b"sioscale: still stopping what it started; this takes a few seconds\n")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        interrupts_deferred._depth -= 1
        if not self.active:
            return
        for s, handler in self.saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if self.noted and exc_type is None:
            raise KeyboardInterrupt  # the interrupt that was held off, now that cleanup is done


# SIGTERM, not SIGINT, asks Locust to stop: its gevent SIGTERM handler runs the same shutdown()
# as Ctrl-C (locust/main.py: quitting event → our event log flushes, --json-file and the CSVs
# are written) and is installed whatever the inherited disposition was, whereas a SIGINT that
# sioscale inherited as ignored (nohup, a CI background job) stays ignored in Locust, which
# then always sat out the whole grace period.
LOCUST_STOP_GRACE = 10.0


@contextlib.contextmanager
def _locust_process(cmd: list[str], out: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Locust as a supervised child: targets.procs gives it its own session (one killpg reaches
    its `--processes` workers) and PR_SET_PDEATHSIG, so even a SIGKILLed sioscale leaves no Locust."""
    child = Child(name="locust", argv=cmd, log_path=out, env=env)
    child.start()
    assert child.proc is not None
    try:
        yield child.proc
    finally:
        with interrupts_deferred():
            try:
                if child.alive():
                    child.signal_group(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.proc.wait(LOCUST_STOP_GRACE)
            finally:
                child.signal_group(signal.SIGKILL)  # whatever is left, and stragglers (forked workers)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(5)


@contextlib.contextmanager
def _exit_deferred(cm: Any) -> Iterator[Any]:
    """`with cm:` whose __exit__ (the cluster's stop) runs with interrupts held off."""
    value = cm.__enter__()
    try:
        yield value
    except BaseException:
        with interrupts_deferred():
            if not cm.__exit__(*sys.exc_info()):
                raise
    else:
        with interrupts_deferred():
            cm.__exit__(None, None, None)


def _live_counts(run_dir: Path) -> tuple[int | None, int | None, int | None, int]:
    """(connected now, requests, failures, missing workers) for the progress line: the event log's live
    stats (rewritten every 2 s; connected_now already leaves out the sessions of workers that went
    missing) and Locust's stats CSV (rewritten every 2 s)."""
    connected = reqs = fails = None
    missing = 0
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stats = json.loads((run_dir / "sio_stats.json").read_text())
        missing = len(stats.get("missing_workers") or [])
        connected = int(stats["totals"]["connected_now"])
    with contextlib.suppress(OSError, ValueError, csv.Error, KeyError):
        with (run_dir / "locust_stats.csv").open() as fh:
            for row in csv.DictReader(fh):
                if row.get("Name") == "Aggregated":
                    reqs, fails = int(row["Request Count"]), int(row["Failure Count"])
    return connected, reqs, fails, missing


class FaultSchedule:
    """Fires the run's faults on the cluster as the run's clock passes them; records what happened.

    A `pause_node` leaves a resume due `duration` s later (fired by fire_due like a fault); `finish()`
    resumes whatever is still paused when the run ends early (Ctrl-C, a Locust failure), and the
    Cluster's stop() does it again as the last guard: a node is never left SIGSTOPped.
    """

    def __init__(self, cfg: RunConfig, cluster: Any | None, run_dir: Path | None = None) -> None:
        self.pending = sorted(cfg.faults, key=lambda f: f.at) if cluster is not None else []
        self.cluster = cluster
        self.run_dir = run_dir
        self.silent_orders: list[SilentOrder] = []  # every `silent` blip's order so far (contract/control.py)
        self.done: list[dict[str, Any]] = []
        self.resumes: list[tuple[float, dict[str, Any]]] = []  # (elapsed s when due, the pause's record)

    def fire_due(self, elapsed: float, progress: Progress | None) -> None:
        for due, rec in [r for r in self.resumes if r[0] <= elapsed]:
            self.resumes.remove((due, rec))
            self._resume(rec)
        while self.pending and self.pending[0].at <= elapsed:
            f = self.pending.pop(0)
            rec: dict[str, Any] = {"at": f.at, "action": f.action, "target": f.target, "ts": time.time(), "error": None}
            rec |= {k: getattr(f, k) for k in ("fraction", "duration", "mode") if getattr(f, k) is not None}
            try:
                rec |= self._apply(f, elapsed, rec) or {}
            except Exception as e:  # noqa: BLE001 - a fault that cannot be applied is recorded, the run goes on
                rec["error"] = f"{type(e).__name__}: {e}"
            self.done.append(rec)
            if progress:
                what = (f" cut {rec['cut']} of {rec['sessions']} connections" if "cut" in rec else
                        f" silenced {rec['silenced']} of {rec['sessions']} connections" if "silenced" in rec else "")
                progress(f"fault {f.action}{' ' + f.target if f.target else ''} at {elapsed:.1f}s{what}"
                         + (f": FAILED {rec['error']}" if rec["error"] else ""))

    def _apply(self, f: Fault, elapsed: float, rec: dict[str, Any]) -> dict[str, Any] | None:
        """One fault on the cluster; what it returns (blip's counts, a restart's downtime) goes in meta.json."""
        assert self.cluster is not None
        if f.action == "blip" and f.mode == "silent":
            return self._silent(f)
        if f.action == "blip":
            return dict(self.cluster.blip(f.fraction, f.target, f.mode or "cut"))
        if f.action == "pause_node":
            self.cluster.pause_node(f.target)
            self.resumes.append((elapsed + float(f.duration or 0), rec))
            return None
        method = getattr(self.cluster, f.action)
        out = method(f.target) if f.target else method()
        return dict(out) if isinstance(out, dict) else None

    def _silent(self, f: Fault) -> dict[str, Any]:
        """Choose at HAProxy, then order the Locust processes to drop those connections silently:
        the orders file in the run directory (contract/control.py), which every user process polls."""
        if self.run_dir is None:
            raise RuntimeError("blip silent needs the run directory, through which the clients get their order")
        gone = frozenset().union(*(o.addrs for o in self.silent_orders))  # abandoned earlier, still open
        out = dict(self.cluster.blip(f.fraction, f.target, "silent", exclude=gone))
        addrs = out.pop("addrs")
        order = SilentOrder(len(self.silent_orders) + 1, time.time(), float(f.duration or 0), frozenset(addrs))
        self.silent_orders.append(order)
        write_json(self.run_dir / SILENT_FILE, orders_json(self.silent_orders))
        return out

    def _resume(self, rec: dict[str, Any]) -> None:
        try:
            self.cluster.resume_node(rec["target"])
            rec["resumed_ts"] = time.time()
        except Exception as e:  # noqa: BLE001 - recorded; Cluster.stop() resumes it again
            rec["error"] = f"resume failed: {type(e).__name__}: {e}"

    def finish(self) -> None:
        """Resume every node still paused (the run ended before its pause did)."""
        while self.resumes:
            _, rec = self.resumes.pop(0)
            self._resume(rec)
            rec["resumed_early"] = True


def run_locust(cfg: RunConfig, url: str, run_dir: Path, ca_file: str | None, progress: Progress | None,
               cluster: Any | None = None) -> dict:
    """Run Locust to completion; faults (if any) are applied to `cluster` at their times."""
    cmd = locust_command(cfg, url, run_dir, ca_file)
    faults = FaultSchedule(cfg, cluster, run_dir)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    budget = cfg.load.run_seconds + 60 + 10 * cfg.load.processes
    started = time.time()
    seen = len(cluster.deaths) if cluster is not None else 0  # our cursor into cluster.deaths
    with _locust_process(cmd, run_dir / "locust.out", env) as proc:
        try:
            last = 0.0
            while proc.poll() is None:
                elapsed = time.time() - started
                if elapsed > budget:
                    raise TimeoutError(f"locust did not finish within {budget:.0f} s; stopped it")
                faults.fire_due(elapsed, progress)
                if cluster is not None:
                    seen = _say_deaths(cluster, seen, elapsed, progress)
                if progress and elapsed - last >= 5:
                    last = elapsed
                    users, reqs, fails, missing = _live_counts(run_dir)
                    progress(
                        f"{elapsed:5.0f}s/{cfg.load.run_seconds:.0f}s  connected {users if users is not None else '-'}"
                        f"  requests {reqs if reqs is not None else '-'}  failures {fails if fails is not None else '-'}"
                        + (f"  {missing} worker(s) missing (their sessions no longer counted)" if missing else "")
                    )
                time.sleep(0.5)
        finally:
            faults.finish()  # a pause that outlived the run (Ctrl-C, Locust gone) is resumed now
    rc = proc.returncode
    result: dict[str, Any] = {"locust_command": cmd, "locust_exit_code": rc}
    if cfg.faults:
        result["faults"] = faults.done + [
            {"at": f.at, "action": f.action, "target": f.target, "ts": None, "error": "not reached: the run ended first"}
            for f in faults.pending
        ]
    if rc != 0:
        tail = ""
        with contextlib.suppress(OSError):
            tail = " | ".join((run_dir / "locust.out").read_text(errors="replace").strip().splitlines()[-3:])
        result["error"] = f"locust exited with code {rc}: {tail}"
    return result


def _say_deaths(cluster: Any, seen: int, elapsed: float, progress: Progress | None) -> int:
    """A crash is a finding: say so now, one line per death after our cursor `seen`; the new cursor.

    A cursor of our own (Cluster.deaths_since), not check_deaths()'s return value: a fault hook
    that ran just before may have recorded the death first, and it must still be said.
    """
    from targets.cluster import how_died

    fresh = cluster.deaths_since(seen)
    for d in fresh:
        if progress:
            progress(f"{d['name']} died at {elapsed:.1f}s ({how_died(d)}); the run goes on; log: {d['log']}")
    return seen + len(fresh)


@contextlib.contextmanager
def _telemetry(cluster: Any, run_dir: Path, run: str, meta: dict[str, Any],
               cgroup_reader: Callable[[str], Any] | None = None,
               scrape: tuple[ScrapeTarget, ...] = ()) -> Iterator[None]:
    """Sample the cluster (and `scrape` targets) into RUN_DIR/resources.csv for the Locust run.

    `cluster` None (`--url`): only the scrape targets, users' own nodes; without any, nothing is
    sampled. Telemetry must never fail a run: a sampler that cannot be built or started is
    recorded in meta.json `telemetry.error` and the run goes on without it. `telemetry` also
    records what the sampler cost (`cpu_percent` of one core, all its threads), the budget being
    1 %, and the scrape targets (ids and URLs).
    """
    from targets.telemetry import cluster_sampler, scrape_sampler

    pairs = [(t.id, t.url) for t in scrape]
    sampler = None
    try:
        if cluster is not None:
            sampler = cluster_sampler(cluster, run_dir, run, cgroup_reader=cgroup_reader, scrape=pairs).start()
        elif pairs:
            sampler = scrape_sampler(run_dir, run, pairs).start()
    except Exception as e:  # noqa: BLE001 - no telemetry is a gap in the data, not a failed run
        meta["telemetry"] = {"error": f"{type(e).__name__}: {e}", "scrape": [{"id": i, "url": u} for i, u in pairs]}
    try:
        yield
    finally:
        if sampler is not None:
            meta["telemetry"] = sampler.stop()


def _record_deaths(meta: dict[str, Any], st: run_status.RunStatus, deaths: list[dict[str, Any]]) -> None:
    """Children that died on their own (targets.cluster.Cluster.deaths) go to meta.json `deaths`.

    A crash under load is a finding about the cluster, not a harness failure: the run stays
    valid, but it is degraded with one reason per death, so the report's first screen says so.
    """
    from targets.cluster import how_died

    meta["deaths"] = deaths
    for d in deaths:
        st.add(run_status.Status.DEGRADED, f"{d['name']} died during the run ({how_died(d)}): "
               f"a finding about the cluster, not a planned fault; its log: {d['log']}")


def external_labels(url: str, cfg: RunConfig) -> dict[str, Any]:
    """The config labels of a run against an existing server: only what the load decides is known.

    The cluster flags describe a local cluster that is not started for `--url`, so adapter,
    server, nodes and tls are None (unknown) rather than the flags' defaults; verdicts must not
    talk about a "memory adapter" they never saw.
    """
    h2_possible = cfg.load.http_pool == "browser" and url.lower().startswith(("https:", "wss:"))
    return dict(cfg.labels(), balancer="external", policy="external", adapter=None, server=None,
                nodes=None, tls=None, target_url=url, http_protocol=None if h2_possible else "http/1.1")


def external_run_name(load: LoadConfig) -> str:
    """`external-<transports>[-eio3][-node]`: a run name that claims nothing about the server behind --url."""
    return (f"external-{load.transports_label}" + ("-eio3" if load.eio == 3 else "")
            + ("" if load.http_pool == DEFAULT_HTTP_POOL else f"-{load.http_pool}"))


def execute_run(cfg: RunConfig, run_dir: Path, url: str | None = None, progress: Progress | None = None) -> dict:
    """Run one config into `run_dir`; never raises for a config that fails, records it instead.

    Any error of one config (a cluster that does not start, a value a child rejects, a bug) is
    caught and recorded in its meta.json, so one bad config never aborts a campaign. Only
    impossible requests raise ConfigError, before anything starts: whatever RunConfig.validate
    refuses for this target (e.g. faults with `url`: faults act on the local cluster, there is
    none). KeyboardInterrupt propagates, after everything is stopped.

    With `url`, the load goes to an existing server (no local cluster). The returned dict is
    the run's meta.json. Unplanned deaths of cluster children are recorded in it however the
    run ends (a Locust that hung, Ctrl-C, an error at the cluster's stop).
    """
    cfg = with_policy_defaults(cfg, url)  # e.g. nginx ip-hash: a source range over several /24s
    cfg.validate(url=url)  # the one set of rules (contract.config), as for `run` flags and campaign cells
    run_dir = run_dir.resolve()  # Locust and the cluster's children get paths that hold from any cwd
    run_dir.mkdir(parents=True, exist_ok=True)
    replaced = clear_previous_run(run_dir)
    if replaced and progress:
        progress(f"replacing the previous run in {run_dir} ({', '.join(replaced)})")
    meta = _initial_meta(cfg, url)
    if cfg.faults:
        meta["faults_planned"] = to_jsonable(cfg.faults)
    write_json(run_dir / "meta.json", meta)
    st = run_status.RunStatus()
    started: list[Any] = []  # the Cluster, once it is up: its deaths are recorded however the run ends
    try:
        if url:
            with _telemetry(None, run_dir, cfg.name, meta, scrape=cfg.scrape):
                meta.update(run_locust(cfg, url, run_dir, None, progress))
        else:
            from targets.cluster import Cluster, ClusterError

            try:
                with _exit_deferred(Cluster(cfg.cluster, workdir=run_dir / "cluster")) as cluster:
                    started.append(cluster)
                    meta["cluster_info"] = cluster.info
                    with _telemetry(cluster, run_dir, cfg.name, meta, scrape=cfg.scrape):
                        meta.update(run_locust(cfg, cluster.info["url"], run_dir, cluster.info.get("ca_file"),
                                               progress, cluster=cluster))
            except ClusterError as e:
                meta["error"] = f"cluster: {e}" if started else f"cluster did not start: {e}"
        if meta.get("error"):
            st.add(run_status.Status.FAILED, meta["error"])
    except KeyboardInterrupt:
        meta["error"] = "interrupted (Ctrl-C or SIGTERM)"
        st.add(run_status.Status.INTERRUPTED, meta["error"] + ": the figures cover only the part that ran")
        raise
    except (ConfigError, TimeoutError, OSError) as e:
        meta["error"] = str(e)
        st.add(run_status.Status.FAILED, meta["error"])
    except Exception as e:  # noqa: BLE001 - one config's failure is recorded, the campaign goes on
        meta["error"] = f"{type(e).__name__}: {e}"
        st.add(run_status.Status.FAILED, meta["error"])
    finally:
        with interrupts_deferred():
            if started:  # after the cluster's stop, which looks once more
                _record_deaths(meta, st, started[0].deaths)
            meta = _final_meta(run_dir, meta, st)
    return meta


# What a run writes into its directory (docs/contracts.md, "Run directory"). The event log and the
# generator CSV are appended to, so a run into a directory that holds an earlier run's files (a
# campaign run again into the same reports/NAME) would mix both runs' rows; only these names are
# removed, so an --out that points at a directory with other files in it loses none of them.
RUN_FILES = ("meta.json", "events.csv", "eventlog.json", "events.arrows", "events.parquet", "aggregates.arrows",
             "aggregates.parquet", "delivery.arrows", "delivery.parquet", "generator.csv", "resources.csv", "sio_stats.json",
             "locust.json", "locust.log", "locust.out", "locust_stats.csv", "locust_stats_history.csv",
             "locust_failures.csv", "locust_exceptions.csv")
RUN_DIRS = ("cluster", "report")


def clear_previous_run(run_dir: Path) -> list[str]:
    """Remove an earlier run's files from `run_dir`; returns the names removed."""
    gone = []
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_file() or p.is_symlink():
            p.unlink()
            gone.append(name)
    for name in RUN_DIRS:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            gone.append(name + "/")
    return gone


def _initial_meta(cfg: RunConfig, url: str | None) -> dict[str, Any]:
    """meta.json as the run starts: "running", written by this process (`writer`)."""
    return {
        "schema": 1,
        "run": cfg.name,
        "config": external_labels(url, cfg) if url else cfg.labels(),
        "cluster": None if url else to_jsonable(cfg.cluster),
        "load": to_jsonable(cfg.load),
        "cluster_info": None,
        "locust_command": None,
        "versions": environment.versions(),
        "machine": environment.machine(),
        "started": time.time(),
        "ended": None,
        "status": "running",
        "status_reasons": [],
        "error": None,
        # who writes "running": `sioscale report` checks it is alive, or calls the run interrupted
        "writer": run_status.writer_identity(),
    }


def _final_meta(run_dir: Path, meta: dict[str, Any], st: run_status.RunStatus) -> dict[str, Any]:
    """meta.json as the run ends: the status decided here, plus what the run's files say."""
    meta["ended"] = time.time()
    # this process is meta.json's one writer; the event log's `locust` block comes from its own file
    with contextlib.suppress(OSError, ValueError):
        sio_stats = json.loads((run_dir / "sio_stats.json").read_text())
        block = sio_stats.get("locust") if isinstance(sio_stats, dict) else None
        if isinstance(block, dict):
            meta["locust"] = block
    # what the files say (missing workers, dropped rows, Locust exceptions, faults not applied)
    st.merge(run_status.assess(run_dir, meta))
    meta.update(st.as_meta())
    write_json(run_dir / "meta.json", meta)
    return meta
