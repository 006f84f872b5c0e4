"""Synthetic Locust-worker payloads: a chat load at its real rate, and a reconnection failure storm.

Why: the master's ceiling, the bytes per user-hour and the report time must be measured on what
real workers would ship at 10,000 users, without 10,000 sockets. Each worker is simulated with
the very per-process objects a real worker uses (contract.aggregate.Aggregator,
contract.rowpolicy.RowPolicy, contract.delivery.Receipts), fed one row per client step: every
count in a payload is the real event count of that load, every kept row one the real policy
keeps, every receipt count one the real receivers would report.

The load (docs: the chat scenario, locustfiles/chat.py): users spread over `workers` processes
(Locust hands them out round-robin), rooms of `room_size` users of one process, one message per
user-second alternating an acked echo and a room broadcast (the sender receives its own), a ping
every 25 s, each user's session pinned to one of `nodes` nodes (a sticky balancer), polling then
upgraded to websocket. Per user-second: 0.5 ack, 0.5 broadcast_send, 5 broadcast_recv, 0.04 ping.

Reuse (why an hour is cheap): simulating every step costs about what a worker spends recording
it. So `ChatRun` simulates the first `warmup_s` seconds in full (the ramp and each user's first-N
kept rows per step), then a steady-state window of `template_s` seconds, and serves every later
second from that window: second `warmup_s + c * template_s + k` is window second k with every
`second`/`ts`/`max_ts` shifted by `c * template_s` and every message id's sequence number by the
broadcasts a user makes in a window (`c * template_s * message_rate / 2`), so ids stay unique and
continue each user's numbering. The window is a whole number of every period of the load (a
user's echo/broadcast pair, 2 s; its ping, 25 s: 50 s), so each user does in a window exactly
what it does in any other, and a served second is a simulated steady-state second: its counts,
histograms, receipts (`Served`) and kept-row rates. What repeats every window instead of every
1 / sample_rate messages is which users' rows are sampled (the same number of rows).
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from contract.aggregate import Aggregator
from contract.delivery import Receipts
from contract.rowpolicy import RowPolicy, RowPolicyConfig
from contract.rows import COLUMNS
from locustfiles.sio.protocol.backoff import reconnect_delay_ms

Row = dict[str, Any]


@dataclass(frozen=True)
class ChatLoad:
    """The load's parameters (defaults: the issue's 10,000-user chat hour)."""

    users: int = 10_000
    workers: int = 4
    nodes: int = 3
    room_size: int = 10
    message_rate: float = 1.0  # messages per user-second, alternating echo and broadcast
    ping_interval_s: float = 25.0  # python-engineio's default pingInterval
    spawn_rate: float = 500.0  # users per second, all workers together
    start: int = 1_760_000_000
    seed: int = 0
    run: str = "bench-chat-10k"

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def worker_id(k: int) -> str:
    """A Locust worker client id's shape: `<hostname>_<uuid4 hex>`."""
    return f"loadgen-{k}_{hashlib.md5(str(k).encode()).hexdigest()}"  # an id, not security


def sid(*parts: object) -> str:
    """A 20-character Engine.IO / Socket.IO session id, deterministic."""
    digest = hashlib.blake2b("-".join(map(str, parts)).encode(), digest_size=15).digest()
    return base64.urlsafe_b64encode(digest).decode()


class Latencies:
    """Pools of latencies (ms, rounded like the client's rows): gamma bodies with a 1 % tail."""

    def __init__(self, seed: int, size: int = 1 << 16) -> None:
        rng = random.Random(seed)

        def pool(mean: float, shape: float) -> list[float]:
            out = []
            for _ in range(size):
                v = rng.gammavariate(shape, mean / shape)
                if rng.random() < 0.01:
                    v *= rng.uniform(5, 40)  # the tail: a GC pause, a busy node
                out.append(round(v, 3))
            return out

        self.ack = pool(4.0, 4.0)
        self.recv = pool(6.0, 3.0)
        self.ping = pool(1.5, 3.0)
        self.http = pool(3.0, 4.0)
        self._i = 0
        self._mask = size - 1

    def draw(self, pool: list[float]) -> float:
        self._i = (self._i + 7919) & self._mask  # a prime stride: no short cycle between pools
        return pool[self._i]


def row(ts: float, run: str, worker: str, user: str, eio: str, sio: str, step: str, name: str, transport: str,
        node: str, latency: float | None, ok: int = 1, kind: str = "", error: str = "", room: str = "",
        msg_id: str = "") -> Row:
    """One event row (contract.rows.COLUMNS), as the client's log_step makes it."""
    return {"ts": ts, "run": run, "worker": worker, "user": user, "eio_sid": eio, "sio_sid": sio, "step": step,
            "name": name, "transport": transport, "node": node, "latency_ms": latency, "ok": ok,
            "error_kind": kind, "error": error, "room": room, "msg_id": msg_id}


@dataclass
class WorkerSim:
    """One worker process: what its record() calls feed, and the payload it ships each second."""

    wid: str
    policy: RowPolicy
    aggregator: Aggregator = field(default_factory=Aggregator)
    receipts: Receipts = field(default_factory=Receipts)
    rows: list[list[Any]] = field(default_factory=list)
    sends: list[list[Any]] = field(default_factory=list)
    seq: int = 0
    events: int = 0

    def record(self, r: Row) -> None:
        """What a worker does per step (locustfiles/sio/eventlog.py record): count it in the
        second's cells, keep the row if the policy says so, note ok sends, feed the receipts."""
        ok = r["ok"]
        step = r["step"]
        self.aggregator.add(r["ts"], step, r["name"], r["node"], r["transport"], ok, r["error_kind"],
                            r["latency_ms"])
        if self.policy.keep(r):
            self.rows.append([r[c] for c in COLUMNS])
        if step == "broadcast_send":
            if ok:
                self.sends.append([r["msg_id"], r["room"], r["ts"]])
        elif step in ("broadcast_recv", "join", "leave", "disconnect"):
            self.receipts.on_row(r)
        self.events += 1

    def payload(self, sent: float, final: bool = False) -> dict[str, Any]:
        """The worker's one message of the second (issue 11 wire payload, "v": 2)."""
        rows, self.rows = self.rows, []
        sends, self.sends = self.sends, []
        out = {"v": 2, "seq": self.seq, "final": final, "dropped": 0, "sent": sent, "cpu": [],
               "aggs": self.aggregator.drain(), "rows": rows, "sends": sends, "receipts": self.receipts.drain(),
               "policy": self.policy.counts()}
        self.seq += 1
        return out


def events_in(payload: dict[str, Any]) -> int:
    """The steps a payload stands for: the sum of its cells' counts (AGG_COLUMNS `count`)."""
    return sum(int(c[7]) for c in payload["aggs"])


# -- the chat load ------------------------------------------------------------------------------
@dataclass
class _ChatUser:
    name: str
    node: str
    eio: str
    sio: str
    room: str
    spawn: float
    joined: float = math.inf
    seq: int = 0  # broadcasts sent (the msg id's number)


class ChatWorker:
    """The steps of one worker's chat users, second by second, recorded through a WorkerSim."""

    def __init__(self, load: ChatLoad, k: int, policy: RowPolicyConfig, lat: Latencies) -> None:
        self.load, self.k, self.lat = load, k, lat
        self.sim = WorkerSim(worker_id(k), RowPolicy(policy))
        tag = f"{0x1000 + k:x}{k * 7919 % 65536:04x}"  # user ids like the client's u<pid><rand>-<n>
        self.users: list[_ChatUser] = []
        rng = random.Random(load.seed * 1000 + k)
        for j, g in enumerate(range(k, load.users, load.workers)):
            # a spawn time off any grid, as a clock's is: two steps of a user never share a ts by construction
            self.users.append(_ChatUser(f"u{tag}-{j + 1}", f"n{g % load.nodes + 1}", sid(k, j), sid("s", k, j),
                                        f"w{k}-room-{j // load.room_size}",
                                        load.start + (g + rng.random()) / load.spawn_rate))
        self.rooms: dict[str, list[_ChatUser]] = {}
        for u in self.users:
            self.rooms.setdefault(u.room, []).append(u)
        self.pending: list[Row] = []  # steps that end in a later second (a receipt after the send)
        self.record_s = 0.0  # time spent in record() (the users' side cost)
        self.also: Callable[[Row], None] | None = None  # another record() fed the same rows, timed apart
        self.also_drain: Callable[[], None] | None = None  # called untimed after each second
        self.also_s = 0.0
        self.also_events = 0

    def second(self, s: int, final: bool = False) -> dict[str, Any]:
        """Simulate second s (its steps recorded in ts order) and return the payload shipped after it."""
        out, later = [], []
        for r in self.pending + self._steps(s, final):
            (out if r["ts"] < s + 1 or final else later).append(r)
        self.pending = later
        out.sort(key=lambda r: r["ts"])
        t0 = time.perf_counter()
        rec = self.sim.record
        for r in out:
            rec(r)
        self.record_s += time.perf_counter() - t0
        if self.also is not None:
            self._also(out)
        return self.sim.payload(float(s + 1), final)

    def _also(self, rows: list[Row]) -> None:
        also = self.also
        assert also is not None
        copies = [dict(r) for r in rows]  # the event log may fill a row in place
        t0 = time.perf_counter()
        for r in copies:
            also(r)  # type: ignore[arg-type]
        self.also_s += time.perf_counter() - t0
        self.also_events += len(copies)
        if self.also_drain is not None:
            self.also_drain()

    def _steps(self, s: int, final: bool) -> list[Row]:
        load, run, wid, lat = self.load, self.load.run, self.sim.wid, self.lat
        rate = load.message_rate
        out: list[Row] = []
        for u in self.users:  # every start of the second first: a member's receipts need its join
            if s <= u.spawn < s + 1:
                out += self._connect(u)
        for u in self.users:
            if u.joined == math.inf or u.joined >= s + 1:
                continue
            n_lo = max(0, math.ceil((s - u.joined) * rate))
            n_hi = math.ceil((s + 1 - u.joined) * rate)
            for n in range(n_lo, n_hi):
                t = u.joined + n / rate
                if n % 2 == 0:
                    ms = lat.draw(lat.ack)
                    out.append(row(t + ms / 1000, run, wid, u.name, u.eio, u.sio, "ack", "ack:echo", "websocket",
                                   u.node, ms))
                else:
                    out += self._broadcast(u, t)
            p_lo = max(1, math.ceil((s - u.spawn) / load.ping_interval_s))
            p = p_lo
            while u.spawn + p * load.ping_interval_s < s + 1:
                out.append(row(u.spawn + p * load.ping_interval_s, run, wid, u.name, u.eio, u.sio, "ping", "ping",
                               "websocket", u.node, lat.draw(lat.ping)))
                p += 1
            if final:
                out.append(row(s + 0.999, run, wid, u.name, u.eio, u.sio, "disconnect", "disconnect", "websocket",
                               u.node, None))
        return out

    def _connect(self, u: _ChatUser) -> list[Row]:
        """handshake (polling), connect, upgrade probe and upgrade, join: a sticky session's start."""
        run, wid, lat = self.load.run, self.sim.wid, self.lat
        t = u.spawn
        out = []
        for step, transport, sio in (("handshake", "polling", ""), ("connect", "polling", u.sio),
                                     ("upgrade_probe", "websocket", u.sio), ("upgrade", "websocket", u.sio),
                                     ("join", "websocket", u.sio)):
            ms = lat.draw(lat.http)
            t += ms / 1000
            out.append(row(t, run, wid, u.name, u.eio, sio, step, step, transport, u.node, ms,
                           room=u.room if step == "join" else ""))
        u.joined = t
        return out

    def _broadcast(self, u: _ChatUser, t: float) -> list[Row]:
        """The send (ts = the payload's `sent`) and one receipt per room member joined by then."""
        run, wid, lat = self.load.run, self.sim.wid, self.lat
        mid = f"{u.name}-{u.seq}"
        u.seq += 1
        out = [row(t, run, wid, u.name, u.eio, u.sio, "broadcast_send", "broadcast_send:broadcast", "websocket",
                   u.node, None, room=u.room, msg_id=mid)]
        for v in self.rooms[u.room]:
            if v.joined < t:
                ms = lat.draw(lat.recv)
                out.append(row(t + ms / 1000, run, wid, v.name, v.eio, v.sio, "broadcast_recv", "broadcast:broadcast",
                               "websocket", v.node, ms, room=u.room, msg_id=mid))
        return out


def shift_id(mid: str, by: int) -> str:
    """`<user>-<n>` -> `<user>-<n + by>` (a message id further on in the same user's numbering)."""
    user, _, n = mid.rpartition("-")
    return f"{user}-{int(n) + by}"


def shift_payload(p: dict[str, Any], dt: int, dseq: int, seq: int, policy: dict[str, int]) -> dict[str, Any]:
    """A template payload moved `dt` seconds on, its message numbers `dseq` on (see the module doc)."""
    aggs = [[c[0] + dt, *c[1:12], c[12] + dt, c[13]] for c in p["aggs"]]
    rows = []
    for r in p["rows"]:
        r2 = list(r)
        r2[0] = r[0] + dt
        if r[15]:
            r2[15] = shift_id(r[15], dseq)
        rows.append(r2)
    sends = [[shift_id(m, dseq), room, ts + dt] for m, room, ts in p["sends"]]
    receipts = {shift_id(m, dseq): n for m, n in p["receipts"].items()}
    return {**p, "seq": seq, "sent": p["sent"] + dt, "aggs": aggs, "rows": rows, "sends": sends,
            "receipts": receipts, "policy": policy}


class ChatRun:
    """Every worker's payload, second by second, for `duration_s` seconds (see the module doc)."""

    def __init__(self, load: ChatLoad, duration_s: int, policy: RowPolicyConfig | None = None,
                 warmup_s: int | None = None, template_s: int | None = None) -> None:
        pair_s, ping_s = 2 / load.message_rate, load.ping_interval_s
        if template_s is None:
            template_s = math.lcm(round(pair_s), round(ping_s))
        if (template_s / pair_s) % 1 or (template_s / ping_s) % 1:
            raise ValueError(f"template_s {template_s}: a whole number of echo/broadcast pairs ({pair_s:g} s) "
                             f"and of pings ({ping_s:g} s)")
        self.load, self.duration_s, self.template_s = load, duration_s, template_s
        ramp = math.ceil(load.users / load.spawn_rate)
        first_n = (policy or RowPolicyConfig()).first_n
        # full simulation until every user is past its first-N rows of every step (pings last). At
        # least: the reused window never holds a user's start (a served second would connect it
        # twice) and comes after every user's first ping (or served seconds would have no pings)
        least = ramp + math.ceil(load.ping_interval_s) + 2
        self.warmup_s = max(least, warmup_s if warmup_s is not None
                            else ramp + math.ceil(first_n * load.ping_interval_s) + 5)
        lat = Latencies(load.seed)
        self.workers = [ChatWorker(load, k, policy or RowPolicyConfig(), lat) for k in range(load.workers)]
        self.simulated_s = 0
        self.served_s = 0

    def seconds(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(second, [one payload per worker]) for every second of the run, in order. The last
        second is always simulated: the users stop, their disconnect rows close every membership."""
        start, last = self.load.start, self.load.start + self.duration_s - 1
        window_end = start + self.warmup_s + self.template_s  # the first second after the window
        serve = window_end < last
        before = [w.sim.policy.counts() for w in self.workers]  # policy counts before the window
        window: list[list[dict[str, Any]]] = []
        after: list[dict[str, Any]] = []
        for s in range(start, window_end + 1 if serve else last):
            payloads = [w.second(s) for w in self.workers]
            self.simulated_s += 1
            if s < start + self.warmup_s:
                before = [dict(p["policy"]) for p in payloads]
            elif s < window_end:
                window.append(payloads)
            else:  # simulated only for the receipts of the window's last sends; served like the rest
                after = payloads
                break
            yield s, payloads
        c, k = divmod(last - 1 - start - self.warmup_s, self.template_s)  # the last served second's
        if serve:
            dseq = int(self.template_s * self.load.message_rate / 2)
            served = Served(window, after, before, dseq)
            for s in range(window_end, last):
                self.served_s += 1
                yield s, served.payloads(*divmod(s - start - self.warmup_s, self.template_s), s - start)
            for w in self.workers:  # the last second goes on from the served ones
                w.pending = []  # (their receipts are the served second's spill: Served.finish)
                w.sim.seq = last - start
                for u in w.users:
                    u.seq += c * dseq  # message numbers past every served one
        self.simulated_s += 1
        pre = [w.sim.policy.counts() for w in self.workers]
        finals = [w.second(last, final=True) for w in self.workers]
        if serve:
            served.finish(finals, c, k, pre)
        yield last, finals

    def record_us_per_event(self) -> float | None:
        events = sum(w.sim.events for w in self.workers)
        return sum(w.record_s for w in self.workers) / events * 1e6 if events else None


class Served:
    """The steady-state window's payloads, served again further on (see the module doc).

    Receipts of a send can come in the next second's payload (the receiver's step ends after the
    second turned). So each window second's receipts are split into its own sends' (`own`) and
    those its sends got one second later (`spill`, read in the next payload; for the window's last
    second in the payload after the window, simulated for that alone). A served second k of window
    c (c >= 1: the second right after the window is served too) holds own[k] and
    spill[k - 1] of the same window (spill[-1] of the window before for k = 0): every send gets
    exactly the receipts it got when simulated, none twice, none lost across windows.
    """

    def __init__(self, window: list[list[dict[str, Any]]], after: list[dict[str, Any]],
                 before: list[dict[str, int]], dseq: int) -> None:
        self.window, self.dseq = window, dseq
        workers = range(len(after))
        self.last_policy: list[dict[str, int]] = [{} for _ in workers]  # of the last served second
        self.per_window = [{n: window[-1][j]["policy"][n] - before[j][n] for n in before[j]} for j in workers]
        self.own: list[list[dict[str, int]]] = []
        self.spill: list[list[dict[str, int]]] = []
        for k, payloads in enumerate(window):
            nxt = window[k + 1] if k + 1 < len(window) else after
            own, spill = [], []
            for j, p in enumerate(payloads):
                ids = {m for m, _room, _ts in p["sends"]}
                own.append({m: n for m, n in p["receipts"].items() if m in ids})
                spill.append({m: n for m, n in nxt[j]["receipts"].items() if m in ids})
            self.own.append(own)
            self.spill.append(spill)

    def _shifted(self, receipts: dict[str, int], c: int) -> dict[str, int]:
        return {shift_id(m, c * self.dseq): n for m, n in receipts.items()}

    def payloads(self, c: int, k: int, seq: int) -> list[dict[str, Any]]:
        """Window second k served in window c (c >= 1), as the workers' payloads number `seq`."""
        size = len(self.window)
        out = []
        for j, tp in enumerate(self.window[k]):
            p = shift_payload(tp, c * size, c * self.dseq, seq,
                              {n: tp["policy"][n] + c * self.per_window[j][n] for n in tp["policy"]})
            spill = self._shifted(self.spill[k - 1][j], c) if k else self._shifted(self.spill[-1][j], c - 1)
            p["receipts"] = {**self._shifted(self.own[k][j], c), **spill}
            out.append(p)
        self.last_policy = [p["policy"] for p in out]
        return out

    def finish(self, finals: list[dict[str, Any]], c: int, k: int, pre: list[dict[str, int]]) -> None:
        """The simulated last second after served second k of window c: the served second's late
        receipts, and policy counts that go on from the served ones (`pre`: the simulation's
        counts before the last second)."""
        for j, p in enumerate(finals):
            p["receipts"] = {**p["receipts"], **self._shifted(self.spill[k][j], c)}
            p["policy"] = {n: self.last_policy[j][n] + v - pre[j][n] for n, v in p["policy"].items()}


# -- the failure storm --------------------------------------------------------------------------
class StormWorker:
    """One worker's users after an L7 round-robin broke every session: each reconnects with
    socket.io-client's backoff and every attempt fails the same way (handshake ok on one node, the
    CONNECT POST on another: node_switch, connect session_unknown, disconnect, reconnect failed)."""

    def __init__(self, load: ChatLoad, k: int, policy: RowPolicyConfig, lat: Latencies) -> None:
        self.load, self.k, self.lat = load, k, lat
        self.sim = WorkerSim(worker_id(k), RowPolicy(policy))
        self.rng = random.Random(load.seed * 1000 + k)
        tag = f"{0x2000 + k:x}{k * 7919 % 65536:04x}"
        self.users = [f"u{tag}-{j + 1}" for j in range(len(range(k, load.users, load.workers)))]
        # (next attempt time, attempt number, user index), one per user; all sessions lost at start
        self.next: list[tuple[float, int]] = [
            (load.start + self.rng.random() + reconnect_delay_ms(1, self.rng.random()) / 1000, 1) for _ in self.users]
        self.record_s = 0.0

    def second(self, s: int, final: bool = False) -> dict[str, Any]:
        """Simulate second s of the storm and return the payload shipped after it."""
        out: list[Row] = []
        for j, (t, attempt) in enumerate(self.next):
            while t < s + 1:
                out += self._attempt(j, t, attempt)
                attempt += 1
                t += reconnect_delay_ms(attempt, self.rng.random()) / 1000
            self.next[j] = (t, attempt)
        out.sort(key=lambda r: r["ts"])
        t0 = time.perf_counter()
        for r in out:
            self.sim.record(r)
        self.record_s += time.perf_counter() - t0
        return self.sim.payload(float(s + 1), final)

    def _attempt(self, j: int, t: float, attempt: int) -> list[Row]:
        load, run, wid, lat = self.load, self.load.run, self.sim.wid, self.lat
        user = self.users[j]
        eio = sid("storm", self.k, j, attempt)
        a = f"n{(j + attempt) % load.nodes + 1}"
        b = f"n{(j + attempt + 1) % load.nodes + 1}"
        h = lat.draw(lat.http)
        c = lat.draw(lat.http)
        t1, t2 = t + h / 1000, t + (h + c) / 1000
        return [
            row(t1, run, wid, user, eio, "", "handshake", "handshake", "polling", a, h),
            row(t2, run, wid, user, eio, "", "node_switch", "node_switch", "polling", b, None, error=f"{a}->{b}"),
            row(t2, run, wid, user, eio, "", "connect", "connect", "polling", b, c, 0, "session_unknown",
                "400 Invalid session <sid>"),
            row(t2, run, wid, user, eio, "", "disconnect", "disconnect", "polling", b, None, 0, "session_unknown",
                "session lost"),
            row(t2, run, wid, user, "", "", "reconnect", "reconnect", "", b, round(h + c, 3), 0, "session_unknown",
                f"attempt {attempt} failed"),
        ]


def storm_seconds(load: ChatLoad, duration_s: int,
                  policy: RowPolicyConfig | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(second, [one payload per worker]) of the storm, every second simulated in full."""
    lat = Latencies(load.seed + 1)
    workers = [StormWorker(load, k, policy or RowPolicyConfig(), lat) for k in range(load.workers)]
    for s in range(load.start, load.start + duration_s):
        yield s, [w.second(s, s == load.start + duration_s - 1) for w in workers]


__all__ = ["ChatLoad", "ChatRun", "ChatWorker", "Latencies", "StormWorker", "WorkerSim", "events_in",
           "shift_payload", "storm_seconds", "worker_id"]
