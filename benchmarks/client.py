"""sioscale's client vs python-socketio's sync Client, per second of generator CPU.

Run: .venv/bin/python benchmarks/client.py [--n 600] [--idle 10000] [--idle-nodes 4]

Against the same local python-socketio node(s) (targets.app under uvicorn), each client runs in
its own subprocess (sioscale's gevent-patched, as under Locust; python-socketio's with its own
threads) and measures its own CPU with getrusage, so the servers' share of the 2 cores does
not count:
- full polling→websocket connects (connected and upgraded) + disconnect, sequential;
- websocket-only connects + disconnect, sequential;
- acked emits (echo) on one connected session, sequential;
- idle: --idle websocket-only sessions held by one sioscale process (spread over
  --idle-nodes servers), RSS growth per connection.
sioscale's figures use the driver `Session` with a no-op step sink (no Locust stats). Last
line: one JSON object with the figures and the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_cpu_second(fn, n: int) -> float:
    """Calls of `fn` per CPU-second of this process, after one warm-up call.

    Both clients are measured by this one function, so the ratio compares like with like.
    """
    fn()
    c0 = cpu()
    for _ in range(n):
        fn()
    return n / (cpu() - c0)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


# -- sioscale (subprocess) -------------------------------------------------------------------
def run_sioscale(url: str, n: int) -> dict[str, float]:
    from gevent import monkey

    monkey.patch_all()
    from gevent.event import AsyncResult

    from locustfiles.sio.driver import Session, SessionConfig
    from locustfiles.sio.protocol.actions import AckReceived, Closed, Connected, StepResult

    def connect(transports: tuple[str, ...]) -> Session:
        done = AsyncResult()
        closed = AsyncResult()
        upgraded = AsyncResult()

        def on(a, _ctx) -> None:
            if type(a) is StepResult and a.step == "upgrade":
                upgraded.set(a.ok)
            elif type(a) is Connected:
                done.set(True)
            elif type(a) is Closed:
                if not done.ready():
                    done.set(False)
                closed.set(a)

        s = Session(SessionConfig(url=url, transports=transports, timeout=10), on)
        s._done, s._closed_r, s._upgraded = done, closed, upgraded  # benchmark bookkeeping
        s.start()
        assert done.get(timeout=15), "connect failed"
        return s

    def full() -> None:
        s = connect(("polling", "websocket"))
        assert s._upgraded.get(timeout=10), "upgrade failed"  # connected AND upgraded
        s.disconnect()
        s._closed_r.get(timeout=10)

    def ws_only() -> None:
        s = connect(("websocket",))
        s.disconnect()
        s._closed_r.get(timeout=10)

    out = {"full": per_cpu_second(full, n), "ws": per_cpu_second(ws_only, n)}

    acks = AsyncResult()
    count = {"n": 0}
    target = n * 4
    s = None

    def on_ack(a, _ctx) -> None:
        if type(a) is AckReceived:
            count["n"] += 1
            if count["n"] < target:
                s.emit("echo", count["n"], ack=True)
            else:
                acks.set(True)

    s = connect(("websocket",))
    s._on_action = on_ack
    c0 = cpu()
    s.emit("echo", 0, ack=True)
    acks.get(timeout=60)
    out["ack"] = target / (cpu() - c0)
    s.abort()
    return out


def run_sioscale_idle(urls: list[str], count: int) -> dict[str, float]:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.pool import Pool

    from locustfiles.sio.driver import Session, SessionConfig
    from locustfiles.sio.protocol.actions import Closed, Connected

    resource.setrlimit(resource.RLIMIT_NOFILE, (min(count * 2 + 1000, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),) * 2)
    sessions: list[Session] = []
    state = {"ok": 0, "fail": 0, "lost": 0}

    def on(a, _ctx) -> None:
        if type(a) is Connected:
            state["ok"] += 1
        elif type(a) is Closed:
            state["lost"] += 1

    import gc

    gc.collect()
    base = rss_kib()
    pool = Pool(100)

    def one(i: int) -> None:
        s = Session(SessionConfig(url=urls[i % len(urls)], transports=("websocket",), timeout=30), on)
        sessions.append(s)
        s.start()

    t0 = time.monotonic()
    for i in range(count):
        pool.spawn(one, i)
        if i % 100 == 99:
            while len(sessions) - state["ok"] - state["lost"] > 200:
                gevent.sleep(0.01)
    pool.join()
    while state["ok"] + state["lost"] < count and time.monotonic() - t0 < 120:
        gevent.sleep(0.1)
    ramp = time.monotonic() - t0
    gevent.sleep(2)
    gc.collect()
    held = state["ok"] - state["lost"]
    used = rss_kib() - base
    for s in sessions:
        s.abort()
    return {"idle_held": held, "idle_lost": state["lost"], "idle_rss_kib": used,
            "idle_kib_per_conn": used / max(held, 1), "idle_ramp_s": ramp}


# -- python-socketio (subprocess) -----------------------------------------------------------
def run_python_socketio(url: str, n: int) -> dict[str, float]:
    import socketio

    def conn(transports: list[str]) -> socketio.Client:
        c = socketio.Client(reconnection=False)
        c.connect(url, transports=transports, wait_timeout=10)
        return c

    def full() -> None:
        c = conn(["polling", "websocket"])
        deadline = time.monotonic() + 5
        while c.transport() != "websocket" and time.monotonic() < deadline:
            time.sleep(0.002)
        c.disconnect()

    def ws_only() -> None:
        conn(["websocket"]).disconnect()

    out = {"full": per_cpu_second(full, n), "ws": per_cpu_second(ws_only, n)}
    c = conn(["websocket"])
    c0 = cpu()
    for i in range(n * 4):
        c.call("echo", i, timeout=10)
    out["ack"] = n * 4 / (cpu() - c0)
    c.disconnect()
    return out


def sub(role: str, *args: str, timeout: float = 900) -> dict[str, float]:
    p = subprocess.run([sys.executable, __file__, "--role", role, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout, start_new_session=True)
    if p.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--idle-nodes", type=int, default=4)
    ap.add_argument("--role", default="")
    ap.add_argument("--urls", default="")
    args = ap.parse_args()
    if args.role:
        urls = args.urls.split(",")
        fn = {"sioscale": lambda: run_sioscale(urls[0], args.n),
              "socketio": lambda: run_python_socketio(urls[0], args.n),
              "idle": lambda: run_sioscale_idle(urls, args.idle)}[args.role]
        print(json.dumps(fn()))
        return

    from benchmarks._server import python_node, python_nodes

    res: dict[str, float] = {}
    with python_node() as url:
        mine = sub("sioscale", "--urls", url, "--n", str(args.n))
        theirs = sub("socketio", "--urls", url, "--n", str(args.n))
    for k in ("full", "ws", "ack"):
        res[f"{k}_sioscale_per_cpu_s"] = round(mine[k], 1)
        res[f"{k}_python_socketio_per_cpu_s"] = round(theirs[k], 1)
        res[f"{k}_ratio"] = round(mine[k] / theirs[k], 2)
        print(f"{k:5s} sioscale {mine[k]:8.0f}/cpu-s   python-socketio {theirs[k]:8.0f}/cpu-s   x{mine[k] / theirs[k]:.2f}")
    if args.idle > 0:
        with python_nodes(args.idle_nodes) as urls:
            idle = sub("idle", "--urls", ",".join(urls), "--idle", str(args.idle))
        print(f"idle  held {idle['idle_held']} (lost {idle['idle_lost']}) in {idle['idle_ramp_s']:.1f}s, "
              f"RSS +{idle['idle_rss_kib']} KiB = {idle['idle_kib_per_conn']:.1f} KiB/connection")
        res.update({k: round(v, 2) for k, v in idle.items()})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
