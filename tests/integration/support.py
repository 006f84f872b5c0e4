"""Plumbing shared by the integration tests that run Locust as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

from targets.procs import free_port  # re-exported: the tests import it from here

ROOT = Path(__file__).resolve().parents[2]
# a test locustfile whose users fire known, uniquely named rows (no server needed)
LOCUSTFILE = Path(__file__).parent / "locustfiles_el" / "rowfire.py"
LOCUST = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]


def processes(n: int) -> list[str]:
    """`--processes n` on a private master port bound to loopback.

    Why: by default the forked workers meet their master on 127.0.0.1:5557 (bound on every
    interface), so two `--processes` runs on one machine (parallel tests, two engineers, two
    campaigns) join each other's workers and mix their users and rows.
    """
    port = str(free_port())
    return ["--processes", str(n), "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
            "--master-port", port]


class Procs:
    """Processes started by a test, each in its own process group, all killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], name: str, **env: str) -> subprocess.Popen:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        log = (self.tmp / f"{name}.log").open("w")
        p = subprocess.Popen(args, cwd=self.tmp, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def read_counts(d: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in d.glob("*.json"):
        c = json.loads(p.read_text())
        out[c["worker"]] = out.get(c["worker"], 0) + c["produced"]
    return {k: v for k, v in out.items() if v}


def run_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run's kept event rows as the CSV reader gave them (every value a string, "" for none), so
    a test reads a schema-2 run directory (events.parquet, or the stream of a killed run) as it read
    events.csv. Which rows are kept is the row policy's: tests that need every row run --sio-log-all."""
    import math

    from analysis.runfiles import read_rows

    df = read_rows(run_dir)
    out = []
    for rec in df.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                row[k] = ""
            elif k == "ok":
                row[k] = str(int(v))
            else:
                row[k] = str(v)
        out.append(row)
    return out


def log_of(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp.glob("*.log"))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


# -- processes a test watched (SIGKILL tests: test_orphans, test_cli_interrupt, test_run_status) ----
def running(q: psutil.Process) -> bool:
    """Whether a process a test saw is still running (a zombie is not: it only waits to be reaped)."""
    try:
        return q.is_running() and q.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_running(ps: Iterable[psutil.Process]) -> list[str]:
    """'pid ppid=N command' of each process in `ps` still running: what an assertion message shows."""
    out = []
    for q in ps:
        try:
            if running(q):
                out.append(f"{q.pid} ppid={q.ppid()} {' '.join(q.cmdline())[:120]}")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):  # gone between the two looks
            pass
    return out


# -- what `sioscale report` / `check` say about a run directory ------------------------------------
SIOSCALE = [sys.executable, "-m", "sioscale.cli"]


def report_of(runs: Path, out: Path) -> dict:
    """`sioscale report RUNS --out OUT` must succeed without a traceback; its summary.json."""
    rep = subprocess.run([*SIOSCALE, "report", str(runs), "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert rep.returncode == 0 and "Traceback" not in rep.stderr, rep.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def first_screen(html: str) -> str:
    """The top of the report page: everything before the second section (the configuration matrix)."""
    return html.split('<section id="matrix"', 1)[0]


def first_action(actions: list, pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """The first of a driver's actions (a list it keeps appending to) that `pred` accepts, waiting in gevent."""
    import gevent

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in actions:
            if pred(a):
                return a
        gevent.sleep(0.01)
    raise AssertionError(f"timed out; actions so far: {actions}")


def until_green(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for cond() inside a gevent test (it yields to the other greenlets between looks)."""
    import gevent

    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.02)


H2C_CADDYFILE = """{
    admin off
    auto_https off
    persist_config off
    servers {
        protocols h1 h2c
    }
}
http://127.0.0.1:%(port)d {
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:%(node)d
}
"""


@contextlib.contextmanager
def haproxy_behind_delay_proxy(policy: str, tls: Any, ping_interval: float | None = None,
                               process: bool = False) -> Iterator[tuple[Any, str]]:
    """A DelayProxy (TLS with `tls`'s files) in front of HAProxy `policy` over 3 python nodes: (proxy, CA file).
    `process`: the proxy in a process of its own (`ProxyProcess`, as benchmarks/browser_fidelity.py runs it)."""
    from contract.config import ClusterConfig
    from targets.cluster import Cluster
    from tests._delayproxy import DelayProxy, ProxyProcess

    with Cluster(ClusterConfig(nodes=3, balancer="haproxy", policy=policy, ping_interval=ping_interval)) as c:
        p = (ProxyProcess if process else DelayProxy)(("127.0.0.1", c.balancer_port), str(tls.cert_file),
                                                      str(tls.key_file))
        try:
            yield p, str(tls.ca_file)
        finally:
            p.close()


@contextlib.contextmanager
def h2c_proxy(tmp: Path, ping_interval: float | None = None) -> Iterator[tuple[Any, str]]:
    """A delay proxy offering ALPN h2 in front of one python-socketio node: (proxy, CA file).

    Why: an h2-speaking balancer whose one connection means one node (issue 13); h2 goes to Caddy
    speaking h2c in front of the node, HTTP/1.1 (the WebSocket) straight to the node. Shared by
    sioscale's race test and the real-Chromium fidelity test so both sides meet the same thing."""
    from contract.config import ClusterConfig
    from targets.cluster import Cluster, find_binary
    from targets.tls import make_tls
    from tests._delayproxy import DelayProxy

    tls = make_tls(tmp)
    procs = Procs(tmp)
    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct", ping_interval=ping_interval)) as c:
        node = c.nodes["n1"].port or 0
        port = free_port("127.0.0.1")
        (tmp / "Caddyfile").write_text(H2C_CADDYFILE % {"port": port, "node": node})
        p = None
        try:
            procs.start([find_binary("caddy"), "run", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"],
                        "caddy", XDG_CONFIG_HOME=str(tmp / "cfg"), XDG_DATA_HOME=str(tmp / "data"))
            await_port(port)
            p = DelayProxy(("127.0.0.1", node), str(tls.cert_file), str(tls.key_file), h2_upstream=("127.0.0.1", port))
            yield p, str(tls.ca_file)
        finally:
            if p is not None:
                p.close()
            procs.close()


def await_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on 127.0.0.1:`port` (a clear error after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout:g} s")
