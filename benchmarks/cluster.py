"""What the local cluster costs: start/stop time and the balancer's sequential connect rate.

Run: .venv/bin/python benchmarks/cluster.py [--n 500] [--servers python,node]
For each (server, balancer, policy) it starts a 3-node cluster through targets.cluster.Cluster,
then sends `n` raw WebSocket upgrades (Engine.IO websocket-only opens, closed at once) and `n`
polling handshakes one after another through the balancer, and stops the cluster. Sequential
on purpose: the figure is the per-request round trip of the whole path (balancer + node) on
this machine, the floor under any load test's connect latency. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.config import ClusterConfig
from targets import probe
from targets.cluster import Cluster, node_server_problem

CONFIGS = [
    ("none", "direct"),
    ("haproxy", "l4-round-robin"),
    ("haproxy", "cookie"),
    ("caddy", "l7-round-robin"),
    ("caddy", "cookie"),
]


def bench(server: str, balancer: str, policy: str, n: int) -> dict:
    t0 = time.perf_counter()
    c = Cluster(ClusterConfig(nodes=3, balancer=balancer, policy=policy, server=server))
    c.start()
    started = time.perf_counter() - t0
    try:
        t = time.perf_counter()
        ok_ws = sum(probe.ws_upgrade(c.url).status == 101 for _ in range(n))
        ws_rate = n / (time.perf_counter() - t)
        t = time.perf_counter()
        ok_poll = sum(probe.handshake(c.url, close=False).status == 200 for _ in range(n))
        poll_rate = n / (time.perf_counter() - t)
    finally:
        t = time.perf_counter()
        c.stop()
        stopped = time.perf_counter() - t
    return {"server": server, "balancer": balancer, "policy": policy, "start_s": round(started, 2),
            "stop_s": round(stopped, 2), "ws_open_per_s": round(ws_rate), "ws_ok": ok_ws,
            "poll_handshake_per_s": round(poll_rate), "poll_ok": ok_poll, "n": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--servers", default="python,node")
    a = ap.parse_args()
    rows = []
    for server in a.servers.split(","):
        if server == "node" and node_server_problem():
            print(f"skip node: {node_server_problem()}")
            continue
        for balancer, policy in CONFIGS:
            r = bench(server, balancer, policy, a.n)
            rows.append(r)
            print(f"{server:6} {balancer:7} {policy:15} start {r['start_s']:5.2f}s stop {r['stop_s']:4.2f}s  "
                  f"ws open {r['ws_open_per_s']:5}/s ({r['ws_ok']}/{a.n})  "
                  f"poll handshake {r['poll_handshake_per_s']:5}/s ({r['poll_ok']}/{a.n})", flush=True)
    print(json.dumps({"benchmark": "cluster", "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
