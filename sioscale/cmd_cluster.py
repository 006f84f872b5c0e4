"""`sioscale cluster`: run a local cluster until Ctrl-C, printing its info as one JSON line.

The JSON line is the whole interface: a script (or another terminal) reads the balancer URL,
node ports/pids and the CA file from it, and "scrape" (`n1=http://127.0.0.1:PORT/metrics,...`),
the value Locust's `--sio-scrape` takes to show each node's CPU, RSS and lag in its web UI.
Later lines, one per child that died on its own, are `{"death": {...}}`. Child logs go to files in the workdir, never to this terminal, so stdout
stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from contract.config import ClusterConfig, ConfigError
from sioscale.cliargs import add_cluster_args, cluster_from_args


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cluster",
        help="run a local Socket.IO cluster (nodes + balancer [+ Redis]) until Ctrl-C",
        description="Start N reference Socket.IO nodes behind a real balancer on 127.0.0.1, print one "
        "JSON line (url, nodes, balancer, policy, adapter, recovery, server, tls, redis_url, ca_file, node_limits, scrape) and "
        "block until Ctrl-C or SIGTERM, which stop every child. A child that dies on its own is reported as one "
        "JSON line {\"death\": {...}} (reason \"oom\" for a node OOM-killed under --node-memory-mb) and its "
        "logs are kept; the rest keep running while the URL can be served. --node-cpus / --node-memory-mb run "
        "each node in its own cgroup (v1 or v2, needs root), removed at exit.",
    )
    _add_arguments(p)
    p.set_defaults(func=main)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_cluster_args(p)  # the same flags and rules as `sioscale run` (sioscale.cliargs)
    p.add_argument("--workdir", type=Path, default=None,
                   help="directory for configs, logs and the CA (default: a temporary one, removed at exit)")


def config_from_args(args: argparse.Namespace) -> ClusterConfig:
    """The ClusterConfig the flags describe (validated: ConfigError messages are user-facing)."""
    return cluster_from_args(args)


def main(args: argparse.Namespace) -> int:
    from targets.cluster import Cluster, ClusterError  # deferred: `sioscale --help` stays fast

    try:
        config = config_from_args(args)
    except ConfigError as e:
        print(f"sioscale cluster: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            return  # a second Ctrl-C must not interrupt the stop that the first one started
        stop.set()
        raise KeyboardInterrupt  # also interrupts a start that is still waiting on a node

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    cluster = None
    try:
        with Cluster(config, workdir=args.workdir) as cluster:
            print(json.dumps(cluster.info), flush=True)
            return _supervise(cluster, stop)
    except ClusterError as e:
        print(f"sioscale cluster: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if cluster is not None and cluster.deaths:
            # stop() kept the workdir for these: say so, since a temporary one is usually removed
            print(f"sioscale cluster: {len(cluster.deaths)} unplanned death(s); logs kept in {cluster.workdir}",
                  file=sys.stderr, flush=True)


def _supervise(cluster: Any, stop: threading.Event) -> int:
    """Until Ctrl-C: report each child that dies on its own, keep the rest running while they can serve.

    Why not stop at the first death: a node that crashes under load is the finding a user came
    for, and the surviving nodes (and the balancer routing around the dead one) are the rest of
    it. Each death is one JSON line on stdout, `{"death": {...}}` (Cluster.check_deaths), and
    one readable line on stderr. Only when nothing can answer at the cluster's URL any more (the
    balancer died, or every node behind it) does the command stop, with exit code 1.
    """
    from targets.cluster import how_died

    seen = 0  # our own cursor into cluster.deaths (Cluster.deaths_since)
    while not stop.wait(0.5):
        fresh = cluster.deaths_since(seen)
        seen += len(fresh)
        for d in fresh:
            print(json.dumps({"death": d}), flush=True)
            print(f"sioscale cluster: {d['name']} died ({how_died(d)}); the rest keep running; its log: {d['log']}",
                  file=sys.stderr, flush=True)
        if not cluster.serving():
            print(f"sioscale cluster: nothing left to serve {cluster.url} ({', '.join(cluster.dead())} dead); "
                  "stopping the rest", file=sys.stderr, flush=True)
            return 1
    return 0

if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="python -m sioscale.cmd_cluster")
    _add_arguments(_p)
    sys.exit(main(_p.parse_args()))
