"""Synthetic run directories for tests and the report benchmark.

Why this exists: the analysis must be tested before real campaigns exist and on cases that
are hard to provoke on demand (a 1,000,000-row run, a SIGKILLed writer, a config that never
started). The generator follows the same mechanics the real cluster shows (docs/protocol.md §5): a
non-sticky balancer sends a polling session's requests to nodes that never saw it
(session_unknown), the memory adapter delivers a room broadcast only to members on the
sender's node, a single source IP hashes every user to one node. It writes exactly the files
a real run writes (events.csv with rows.COLUMNS, Locust 2.47's --csv/--csv-full-history and
--json-file formats, meta.json, sio_stats.json). It is NOT a model of performance: latency and
overload numbers are parameters, so tests assert what the analysis computes from them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from analysis.runfiles import arrow_schema
from contract.aggregate import Aggregator
from contract.delivery import Membership
from contract.eventfiles import AGGREGATES, DELIVERY, EVENTS, SCHEMA_VERSION
from contract.histogram import BASE, MIN_MS, RELATIVE_ERROR
from contract.resources import RESOURCES_CSV, append_rows
from contract.rowpolicy import RowPolicy, RowPolicyConfig
from contract.rows import COLUMNS, DELIVERY_GRACE_S
from contract.wire import DEFAULT_TRANSPORTS

# Locust 2.47 stats.py: StatsCSV.requests_csv_columns / stats_history_csv_columns / failures / exceptions.
LOCUST_PERCENTILES = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")
LOCUST_STATS_COLUMNS = ("Type", "Name", "Request Count", "Failure Count", "Median Response Time",
                        "Average Response Time", "Min Response Time", "Max Response Time",
                        "Average Content Size", "Requests/s", "Failures/s", *LOCUST_PERCENTILES)
LOCUST_HISTORY_COLUMNS = ("Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s",
                          *LOCUST_PERCENTILES, "Total Request Count", "Total Failure Count",
                          "Total Median Response Time", "Total Average Response Time",
                          "Total Min Response Time", "Total Max Response Time", "Total Average Content Size")
LOCUST_FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen")
LOCUST_EXCEPTIONS_COLUMNS = ("Count", "Message", "Traceback", "Nodes")

STICKY = {"cookie", "source", "ip-hash", "direct"}


@dataclass
class SynthConfig:
    name: str
    balancer: str = "haproxy"
    policy: str = "cookie"
    adapter: str = "memory"
    transports: tuple[str, ...] = DEFAULT_TRANSPORTS
    server: str = "python"
    nodes: int = 3
    tls: bool = False
    users: int = 30
    duration: float = 10.0
    steps: tuple[tuple[int, float], ...] = ()  # (users, hold seconds); overrides users/duration
    spawn_rate: float = 50.0
    room_size: int = 10
    message_rate: float = 1.0
    base_latency_ms: float = 4.0
    capacity_per_node: float = 1e9  # users per node where latency starts to climb steeply
    timeout_s: float = 10.0  # a step that gets no answer fails after this long (--sio-timeout)
    seed: int = 0
    start: float = 1_760_000_000.0
    status: str = "ok"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    resources: bool = False  # also write resources.csv (write_resources), consistent with the simulated load
    node_cpu_limit: float | None = None  # cores (cgroup quota); None: the node's CPU is bound at one core
    node_memory_mb: float | None = None
    cpu_growth_per_node: float = 0.0  # each extra node adds this share to a node's CPU per client (Redis fan-out)


def write_run(run_dir: str | Path, cfg: SynthConfig) -> Path:
    """Simulate one run and write a complete run directory; returns its path."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    meta = _meta(cfg)
    if cfg.status == "failed":
        (d / "meta.json").write_text(json.dumps(meta, indent=1))
        return d
    rows, users_over_time = simulate(cfg)
    with open(d / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    _write_side_files(d, cfg, meta, rows, users_over_time)
    return d


def write_run_v2(run_dir: str | Path, cfg: SynthConfig, policy: RowPolicyConfig | None = None,
                 compact: bool = True, batch_rows: int = 500, rows: list[tuple] | None = None) -> Path:
    """The same simulated run written as schema 2 (contract/eventfiles.py), as the event log writes it.

    Aggregates of every row (drained every `batch_rows` rows, so one key spans several stream
    batches as it does when workers ship late), the rows `policy` keeps (default RowPolicyConfig()),
    exact broadcast delivery per send second (contract.delivery.Membership, independent of the
    analysis code) and eventlog.json. compact=True: Parquet files (a run that ended); False: the
    Arrow streams only, no delivery row final (a run killed after its last flush). `rows`: write
    these instead of simulating (a test's own rows).
    """
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    meta = _meta(cfg)
    if cfg.status == "failed":
        (d / "meta.json").write_text(json.dumps(meta, indent=1))
        return d
    users_over_time: list[tuple[float, int]] = []
    if rows is None:
        rows, users_over_time = simulate(cfg)
    policy = policy or RowPolicyConfig()
    dicts = [dict(zip(COLUMNS, r, strict=True)) for r in rows]
    for r in dicts:
        r["latency_ms"] = None if r["latency_ms"] == "" else float(r["latency_ms"])
    keeper = RowPolicy(policy)
    kept = [r for r in dicts if keeper.keep(r)]
    agg_batches, merged = _aggregate_batches(dicts, batch_rows)
    delivery = delivery_by_second(dicts, final=compact)
    if compact:
        pq.write_table(_table(EVENTS, [[r[c] for c in COLUMNS] for r in kept], stream=False), d / "events.parquet")
        pq.write_table(_table(AGGREGATES, merged, stream=False), d / "aggregates.parquet")
        pq.write_table(_table(DELIVERY, delivery, stream=False), d / "delivery.parquet")
    else:
        write_stream(d / "events.arrows", EVENTS, [[[r[c] for c in COLUMNS] for r in kept[i:i + batch_rows]]
                                                   for i in range(0, max(1, len(kept)), batch_rows)])
        write_stream(d / "aggregates.arrows", AGGREGATES, agg_batches)
        write_stream(d / "delivery.arrows", DELIVERY, [delivery])
    (d / "eventlog.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "policy": policy.as_json(),
        "histogram": {"base": BASE, "min_ms": MIN_MS, "relative_error": RELATIVE_ERROR},
        "counts": {"rows": len(rows), **keeper.counts()}}))
    _write_side_files(d, cfg, meta, rows, users_over_time)
    return d


def _write_side_files(d: Path, cfg: SynthConfig, meta: dict[str, Any], rows: list[tuple],
                      users_over_time: list[tuple[float, int]]) -> None:
    """Locust's outputs, meta.json and sio_stats.json (the same for both schemas)."""
    _write_locust(d, cfg, rows, users_over_time)
    if cfg.resources:
        write_resources(d, cfg, rows)
    end = max((r[0] for r in rows), default=cfg.start)
    meta["ended"] = end
    (d / "meta.json").write_text(json.dumps(meta, indent=1))
    (d / "sio_stats.json").write_text(json.dumps(_sio_stats(rows)))


RSS_BASE = 40 * 2**20
RSS_PER_CLIENT = 64 * 1024
"""The synthetic node's memory: a base and a fixed cost per connected client (what the analysis must find)."""


def node_clients(rows: list[tuple], seconds: list[float]) -> dict[str, list[int]]:
    """Per node: sessions up at each of `seconds` (ok connect to its first disconnect), from the rows."""
    up: dict[str, tuple[float, str]] = {}
    down: dict[str, float] = {}
    for r in rows:
        if r[6] == "connect" and r[11] and r[4] and r[4] not in up:
            up[r[4]] = (r[0], r[9])
        elif r[6] == "disconnect" and r[4] in up and r[4] not in down:
            down[r[4]] = r[0]
    out: dict[str, list[int]] = {}
    for sid, (t_up, node) in up.items():
        t_down = down.get(sid, float("inf"))
        counts = out.setdefault(node, [0] * len(seconds))
        for i, t in enumerate(seconds):
            if t_up <= t < t_down:
                counts[i] += 1
    return out


def write_resources(d: Path, cfg: SynthConfig, rows: list[tuple]) -> Path:
    """resources.csv as the sampler writes it (contract.resources.append_rows), from the simulated sessions.

    A node's CPU grows linearly with its clients and reaches its bound (the cgroup limit, else one core)
    at cfg.capacity_per_node clients, where the simulated latency starts to climb; past it the quota
    holds it there (throttled) and the event loop lags. RSS = RSS_BASE + RSS_PER_CLIENT × clients.
    """
    rng = np.random.default_rng(cfg.seed + 7)
    end = max((r[0] for r in rows), default=cfg.start)
    seconds = [float(s) + 0.25 for s in range(int(cfg.start), int(end) + 1)]
    per_node = node_clients(rows, seconds)
    nodes = [f"n{i + 1}" for i in range(cfg.nodes)]
    bound = 100.0 * (cfg.node_cpu_limit or 1.0)
    base = 0.04 * bound
    out: list[tuple[float, str, str, str, str, float]] = []
    for i, ts in enumerate(seconds):
        total = 0
        for n in nodes:
            c = per_node.get(n, [0] * len(seconds))[i]
            total += c
            demand = base + (bound - base) * c / cfg.capacity_per_node * (1 + cfg.cpu_growth_per_node * (cfg.nodes - 1))
            cpu = min(demand, bound * (0.97 + 0.03 * rng.random())) if demand >= bound else demand * (1 + 0.01 * rng.random())
            over = max(0.0, c / cfg.capacity_per_node - 1.0)
            out += [(ts, cfg.name, "node", n, "cpu_percent", cpu), (ts, cfg.name, "node", n, "clients", float(c)),
                    (ts, cfg.name, "node", n, "rss_bytes", float(RSS_BASE + RSS_PER_CLIENT * c)),
                    (ts, cfg.name, "node", n, "open_fds", float(20 + c)),
                    (ts, cfg.name, "node", n, "event_loop_lag_ms", 2.0 + 400.0 * over)]
            if cfg.node_cpu_limit:
                out += [(ts, cfg.name, "node", n, "cpu_limit_cores", cfg.node_cpu_limit),
                        (ts, cfg.name, "node", n, "throttled_ms", 1000.0 * max(0.0, 1 - bound / demand) if demand else 0.0)]
            if cfg.node_memory_mb:
                out.append((ts, cfg.name, "node", n, "memory_limit_bytes", cfg.node_memory_mb * 2**20))
        out += [(ts, cfg.name, "balancer", cfg.balancer, "current_sessions", float(total)),
                (ts, cfg.name, "balancer", cfg.balancer, "queue", 0.0),
                (ts, cfg.name, "balancer", cfg.balancer, "errors", 0.0)]
        if cfg.adapter == "redis":
            out += [(ts, cfg.name, "redis", "redis", "cpu_percent", 2.0 + 0.02 * total),
                    (ts, cfg.name, "redis", "redis", "ops_per_sec", 10.0 * total)]
    path = d / RESOURCES_CSV
    append_rows(path, out)
    return path


def _aggregate_batches(rows: list[dict[str, Any]], batch_rows: int) -> tuple[list[list[list[Any]]], list[list[Any]]]:
    """(stream batches of aggregate cells, drained every batch_rows rows; every cell merged by key)."""
    agg, total = Aggregator(), Aggregator()
    batches: list[list[list[Any]]] = []
    for i, r in enumerate(rows, 1):
        agg.add_row(r)
        if i % batch_rows == 0:
            batches.append([_agg_cell(w) for w in agg.drain()])
    batches.append([_agg_cell(w) for w in agg.drain()])
    for b in batches:
        total.merge_wire([_wire_of(c) for c in b])
    return batches, [_agg_cell(w) for w in total.drain()]


def _agg_cell(w: list[Any]) -> list[Any]:
    """A wire cell (AGG_COLUMNS) as the file's columns (AGGREGATE_TYPES: hist as two lists)."""
    pairs = w[-1]
    return [*w[:-1], pairs[0::2], pairs[1::2]]


def _wire_of(c: list[Any]) -> list[Any]:
    pairs = [x for bc in zip(c[-2], c[-1], strict=True) for x in bc]
    return [*c[:-2], pairs]


def delivery_by_second(rows: list[dict[str, Any]], final: bool = True) -> list[list[Any]]:
    """Exact delivery per send second (DELIVERY_TYPES order), by docs/contracts.md's definition.

    final=True applies the grace window exactly (sends within DELIVERY_GRACE_S of the last row left
    out); final=False writes every second, none final (the reader leaves out the last ones).
    """
    mem = Membership()
    for r in rows:
        mem.on_row(r)
    end = max((r["ts"] for r in rows), default=0.0)
    sends = {}
    for r in rows:
        if r["step"] == "broadcast_send" and r["ok"] and r["msg_id"] not in sends:
            if not final or r["ts"] <= end - DELIVERY_GRACE_S:
                sends[r["msg_id"]] = r
    receivers: dict[str, set[str]] = {}
    for r in rows:
        if r["step"] == "broadcast_recv" and r["ok"] and r["msg_id"] in sends:
            s = sends[r["msg_id"]]
            if mem.is_member(r["user"], s["room"], s["ts"]):
                receivers.setdefault(r["msg_id"], set()).add(r["user"])
    by: dict[int, list[int]] = {}
    for mid, s in sends.items():
        exp = mem.count(s["room"], s["ts"])
        cell = by.setdefault(int(s["ts"]), [0, 0, 0])
        cell[0] += 1
        cell[1] += exp
        cell[2] += min(exp, len(receivers.get(mid, ())))
    written = end + 1.0
    return [[sec, n, e, dl, int(final), written] for sec, (n, e, dl) in sorted(by.items())]


def _table(kind: str, rows: list[list[Any]], stream: bool) -> pa.Table:
    schema = arrow_schema(kind, stream=stream)
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in schema.names]
    arrays = []
    for f, vals in zip(schema, cols, strict=True):
        if pa.types.is_dictionary(f.type):
            arrays.append(pa.array(list(vals), pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(list(vals), f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_stream(path: Path, kind: str, batches: list[list[list[Any]]]) -> None:
    """An Arrow IPC stream of `kind` (dictionary strings), one record batch per list of rows."""
    schema = arrow_schema(kind, stream=True)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_stream(sink, schema) as w:
        for b in batches:
            for batch in _table(kind, b, stream=True).to_batches():
                w.write_batch(batch)


def simulate(cfg: SynthConfig) -> tuple[list[tuple], list[tuple[float, int]]]:
    """Event rows (tuples in rows.COLUMNS order) and the (ts, active users) series."""
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.steps or ((cfg.users, cfg.duration),)
    nodes = [f"n{i + 1}" for i in range(cfg.nodes)]
    ws_only = tuple(cfg.transports) == ("websocket",)
    polling_only = tuple(cfg.transports) == ("polling",)
    sticky = cfg.policy in STICKY or ws_only
    one_node = cfg.policy in ("source", "ip-hash", "direct")
    rows: list[tuple] = []
    run = cfg.name

    # Spawn schedule: each stage ramps to its users at spawn_rate, then holds.
    spawn: list[float] = []
    stage_bounds: list[tuple[float, float, int]] = []
    t = cfg.start
    for users, hold in steps:
        n_new = max(0, users - len(spawn))
        for i in range(n_new):
            spawn.append(t + i / cfg.spawn_rate)
        ramp_end = t + n_new / cfg.spawn_rate
        stage_bounds.append((t, ramp_end + hold, users))
        t = ramp_end + hold
    end = t
    n_users = len(spawn)

    spawn_arr = np.array(spawn)

    def active_at(ts: float) -> int:
        return int(np.searchsorted(spawn_arr, ts, side="right"))

    def lat(ts: float, scale: float = 1.0) -> float:
        per_node = active_at(ts) / max(1, (1 if one_node else cfg.nodes))
        load = (per_node / cfg.capacity_per_node) ** 4
        return float(rng.gamma(4.0, cfg.base_latency_ms * scale * (1 + load) / 4.0))

    def overload_fail(ts: float) -> bool:
        per_node = active_at(ts) / max(1, (1 if one_node else cfg.nodes))
        return bool(rng.random() < max(0.0, (per_node / cfg.capacity_per_node - 1.0) * 0.3))

    # Phase 1: connect each user (with reconnect attempts when the balancer breaks the session).
    session_node: dict[int, str] = {}
    connected_at: dict[int, float] = {}
    sids: dict[int, str] = {}
    for u in range(n_users):
        user = f"w{cfg.seed}-{u}"
        ts = spawn[u]
        attempt = 0
        while ts < end:
            attempt += 1
            sid = f"s{u}x{attempt}"
            home = nodes[0] if one_node else nodes[(u + attempt) % cfg.nodes] if sticky else str(rng.choice(nodes))
            transport = "websocket" if ws_only else "polling"
            ts += lat(ts) / 1000
            if overload_fail(ts):
                rows.append(_row(ts, run, user, "", "", "handshake", transport, home, lat(ts, 50), 0,
                                 "timeout", "handshake timed out after 10 s"))
                ts += 1.0 + rng.random()
                continue
            rows.append(_row(ts, run, user, sid, "", "handshake", transport, home, lat(ts), 1))
            # CONNECT (a POST when polling): lands on another node unless the balancer is sticky.
            hit = home if (sticky or ws_only) else str(rng.choice(nodes))
            ts += lat(ts) / 1000
            if hit != home:
                rows.append(_row(ts, run, user, sid, "", "node_switch", transport, hit, None, 1, "", f"{home}->{hit}"))
                err = "Invalid session " + sid if cfg.server == "python" else '{"code":1,"message":"Session ID unknown"}'
                rows.append(_row(ts, run, user, sid, "", "connect", transport, hit, lat(ts), 0, "session_unknown",
                                 f"400 {err}"))
                rows.append(_row(ts, run, user, sid, "", "disconnect", transport, hit, None, 0, "session_unknown",
                                 "session lost"))
                back = min(5.0, 1.0 * 2 ** (attempt - 1)) * (0.5 + rng.random())
                rows.append(_row(ts + back, run, user, "", "", "reconnect", "", "", back * 1000, 0, "session_unknown",
                                 "reconnect attempt"))
                ts += back
                continue
            rows.append(_row(ts, run, user, sid, f"n{sid}", "connect", transport, home, lat(ts), 1))
            if not ws_only and not polling_only:
                up_node = home if sticky else str(rng.choice(nodes))
                ts += lat(ts) / 1000
                if up_node != home:
                    rows.append(_row(ts, run, user, sid, f"n{sid}", "node_switch", "websocket", up_node, None, 1, "",
                                     f"{home}->{up_node}"))
                    rows.append(_row(ts, run, user, sid, f"n{sid}", "upgrade_probe", "websocket", up_node, lat(ts), 0,
                                     "session_unknown", "400 Invalid session"))
                    rows.append(_row(ts, run, user, sid, f"n{sid}", "upgrade", "websocket", up_node, None, 0,
                                     "upgrade_failed", "probe failed"))
                    # socket.io-client stays on polling; the next poll also misses the session
                    rows.append(_row(ts, run, user, sid, f"n{sid}", "disconnect", "polling", home, None, 0,
                                     "session_unknown", "session lost"))
                    back = min(5.0, 2 ** (attempt - 1)) * (0.5 + rng.random())
                    ts += back
                    continue
                rows.append(_row(ts, run, user, sid, f"n{sid}", "upgrade_probe", "websocket", home, lat(ts), 1))
                rows.append(_row(ts, run, user, sid, f"n{sid}", "upgrade", "websocket", home, lat(ts, 0.5), 1))
            session_node[u] = home
            connected_at[u] = ts
            sids[u] = sid
            break

    # Phase 2: rooms, messages, broadcasts, pings, disconnect at the end.
    members: dict[str, list[int]] = {}
    join_ts: dict[int, float] = {}
    for u, ts in connected_at.items():
        room = f"room{u // cfg.room_size}"
        jts = ts + lat(ts) / 1000
        rows.append(_row(jts, run, f"w{cfg.seed}-{u}", sids[u], f"n{sids[u]}", "join",
                         _tr(cfg), session_node[u], lat(jts), 1, room=room))
        join_ts[u] = jts
        members.setdefault(room, []).append(u)
    msg = 0
    for u, jts in join_ts.items():
        user = f"w{cfg.seed}-{u}"
        room = f"room{u // cfg.room_size}"
        ts = jts + rng.exponential(1 / cfg.message_rate)
        k = 0
        next_ping = jts + 25.0
        while ts < end - 0.05:
            k += 1
            if ts >= next_ping:
                rows.append(_row(ts, run, user, sids[u], f"n{sids[u]}", "ping", _tr(cfg), session_node[u], lat(ts), 1))
                next_ping += 25.0
            if k % 2:
                if overload_fail(ts):
                    if ts + cfg.timeout_s >= end:  # the timeout would fire after the run stopped: never logged
                        ts += rng.exponential(1 / cfg.message_rate)
                        continue
                    rows.append(_row(ts + cfg.timeout_s, run, user, sids[u], f"n{sids[u]}", "ack", _tr(cfg), session_node[u], None,
                                     0, "timeout", f"no ack within {cfg.timeout_s:g} s", name="ack:echo"))
                else:
                    rows.append(_row(ts, run, user, sids[u], f"n{sids[u]}", "ack", _tr(cfg), session_node[u], lat(ts), 1,
                                     name="ack:echo"))
            else:
                msg += 1
                mid = f"m{cfg.seed}-{msg}"
                rows.append(_row(ts, run, user, sids[u], f"n{sids[u]}", "broadcast_send", _tr(cfg), session_node[u], None,
                                 1, room=room, msg_id=mid, name="broadcast:broadcast"))
                for v in members.get(room, ()):
                    if join_ts[v] > ts:
                        continue
                    same = session_node[v] == session_node[u]
                    if cfg.adapter == "redis" or same:
                        extra = 0.0 if same else 1.5
                        d = lat(ts) + extra
                        if ts + d / 1000 < end:
                            rows.append(_row(ts + d / 1000, run, f"w{cfg.seed}-{v}", sids[v], f"n{sids[v]}",
                                             "broadcast_recv", _tr(cfg), session_node[v], d, 1, room=room, msg_id=mid,
                                             name="broadcast"))
            ts += rng.exponential(1 / cfg.message_rate)
    for u in connected_at:
        rows.append(_row(end, run, f"w{cfg.seed}-{u}", sids[u], f"n{sids[u]}", "disconnect", _tr(cfg),
                         session_node[u], None, 1))
    rows.sort(key=lambda r: r[0])
    users_over_time = [(float(s), i + 1) for i, s in enumerate(spawn)]
    return rows, users_over_time


def _tr(cfg: SynthConfig) -> str:
    return "polling" if tuple(cfg.transports) == ("polling",) else "websocket"


def _row(ts: float, run: str, user: str, eio: str, sio: str, step: str, transport: str, node: str,
         latency: float | None, ok: int, kind: str = "", error: str = "", room: str = "", msg_id: str = "",
         name: str | None = None) -> tuple:
    return (round(ts, 6), run, "local", user, eio, sio, step, name or step, transport, node,
            "" if latency is None else round(latency, 3), ok, kind, error, room, msg_id)


def _meta(cfg: SynthConfig) -> dict[str, Any]:
    return {
        "schema": 1, "run": cfg.name,
        "config": {"balancer": cfg.balancer, "policy": cfg.policy, "adapter": cfg.adapter,
                   "transports": list(cfg.transports), "server": cfg.server, "nodes": cfg.nodes, "tls": cfg.tls},
        "cluster": {"nodes": cfg.nodes, "balancer": cfg.balancer, "policy": cfg.policy, "adapter": cfg.adapter},
        "load": {"users": cfg.users, "steps": [{"users": u, "hold": h} for u, h in cfg.steps],
                 "spawn_rate": cfg.spawn_rate, "room_size": cfg.room_size, "message_rate": cfg.message_rate},
        "cluster_info": {}, "locust_command": ["locust", "-f", "locustfiles/chat.py", "--headless", "(synthetic)"],
        "versions": {"sioscale": "synthetic"}, "machine": {"cpus": 2},
        "started": cfg.start, "ended": None, "status": cfg.status, "error": cfg.error, **cfg.extra,
    }


def _write_locust(d: Path, cfg: SynthConfig, rows: list[tuple], users: list[tuple[float, int]]) -> None:
    """Locust-format CSV/JSON outputs computed from the same rows (what Locust would have counted)."""
    by: dict[tuple[str, str], list[tuple[float, float | None, int, str]]] = {}
    for r in rows:
        step, ok = r[6], r[11]
        if step in ("broadcast_recv",) or (step == "disconnect" and ok):
            continue
        by.setdefault(("sio", r[7]), []).append((r[0], r[10] if r[10] != "" else None, ok, r[13]))
    t0 = cfg.start
    t1 = max((r[0] for r in rows), default=t0 + 1)
    span = max(1.0, t1 - t0)

    def pct(vals: list[float]) -> list[Any]:
        if not vals:
            return ["N/A"] * len(LOCUST_PERCENTILES)
        a = np.array(vals)
        return [int(np.percentile(a, float(p.rstrip("%")))) for p in LOCUST_PERCENTILES]

    with open(d / "locust_stats.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LOCUST_STATS_COLUMNS)
        allv: list[float] = []
        tot_n = tot_f = 0
        for (typ, name), es in sorted(by.items()):
            v = [e[1] for e in es if e[1] is not None]
            allv += v
            n, nf = len(es), sum(1 for e in es if not e[2])
            tot_n, tot_f = tot_n + n, tot_f + nf
            w.writerow([typ, name, n, nf, int(np.median(v)) if v else 0, float(np.mean(v)) if v else 0,
                        min(v) if v else 0, max(v) if v else 0, 0.0, n / span, nf / span, *pct(v)])
        w.writerow(["", "Aggregated", tot_n, tot_f, int(np.median(allv)) if allv else 0,
                    float(np.mean(allv)) if allv else 0, min(allv) if allv else 0, max(allv) if allv else 0,
                    0.0, tot_n / span, tot_f / span, *pct(allv)])
    with open(d / "locust_stats_history.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LOCUST_HISTORY_COLUMNS)
        ts_users = np.array([u[0] for u in users])
        sec_rows: dict[int, list[tuple]] = {}
        for r in rows:
            sec_rows.setdefault(int(r[0]), []).append(r)
        cum_n = cum_f = 0
        for s in range(int(t0), int(t1) + 1):
            rs = [r for r in sec_rows.get(s, []) if r[6] != "broadcast_recv"]
            v = [r[10] for r in rs if r[10] != ""]
            nf = sum(1 for r in rs if not r[11])
            cum_n, cum_f = cum_n + len(rs), cum_f + nf
            uc = int(np.searchsorted(ts_users, s, side="right"))
            w.writerow([s, uc, "", "Aggregated", f"{len(rs):2f}", f"{nf:2f}", *pct(v), cum_n, cum_f,
                        int(np.median(v)) if v else 0, float(np.mean(v)) if v else 0, min(v) if v else 0,
                        max(v) if v else 0, 0])
    fails: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if not r[11] and r[6] != "disconnect":
            fails.setdefault((r[7], r[13]), []).append(r[0])
    with open(d / "locust_failures.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LOCUST_FAILURES_COLUMNS)
        for (name, err), tss in sorted(fails.items()):
            w.writerow(["sio", name, err, len(tss), "", ""])
    with open(d / "locust_exceptions.csv", "w", newline="") as f:
        csv.writer(f).writerow(LOCUST_EXCEPTIONS_COLUMNS)
    entries = []
    for (typ, name), es in sorted(by.items()):
        v = [e[1] for e in es if e[1] is not None]
        hist: dict[str, int] = {}
        for x in v:
            k = str(int(round(x)))
            hist[k] = hist.get(k, 0) + 1
        entries.append({"name": name, "method": typ, "last_request_timestamp": t1, "start_time": t0,
                        "num_requests": len(es), "num_none_requests": len(es) - len(v),
                        "num_failures": sum(1 for e in es if not e[2]),
                        "total_response_time": float(sum(v)), "max_response_time": max(v) if v else 0,
                        "min_response_time": min(v) if v else None, "total_content_length": 0,
                        "response_times": hist, "num_reqs_per_sec": {}, "num_fail_per_sec": {}})
    (d / "locust.json").write_text(json.dumps(entries, indent=1))


def _sio_stats(rows: list[tuple]) -> dict[str, Any]:
    steps: dict[str, dict[str, int]] = {}
    for r in rows:
        s = steps.setdefault(r[6], {"ok": 0, "failed": 0})
        s["ok" if r[11] else "failed"] += 1
    return {"steps": steps, "rows": len(rows), "source": "synthetic"}


def seed_campaign(root: str | Path, users: int = 30, duration: float = 10.0, seed: int = 0) -> list[Path]:
    """The seed's premise as four synthetic configs (sticky/non-sticky × memory/redis × transports)."""
    root = Path(root)
    cfgs = [
        SynthConfig("haproxy-l4-round-robin-poll+ws-memory-python-3n", policy="l4-round-robin"),
        SynthConfig("haproxy-l4-round-robin-ws-memory-python-3n", policy="l4-round-robin", transports=("websocket",)),
        SynthConfig("haproxy-cookie-poll+ws-memory-python-3n", policy="cookie"),
        SynthConfig("haproxy-cookie-poll+ws-redis-python-3n", policy="cookie", adapter="redis"),
    ]
    out = []
    for i, c in enumerate(cfgs):
        c.users, c.duration, c.seed = users, duration, seed + i
        out.append(write_run(root / c.name, c))
    return out


def events_per_user_second(cfg: SynthConfig) -> float:
    """Rough rows per user-second of this config (for sizing the benchmark's run)."""
    return cfg.message_rate * (0.5 + 0.5 * (1 + cfg.room_size))
