"""`sioscale cluster`: run a local cluster until Ctrl-C, printing its info as one JSON line.

The JSON line is the whole interface: a script (or another terminal) reads the balancer URL,
node ports/pids and the CA file from it. Child logs go to files in the workdir, never to this
terminal, so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sioscale.cliargs import add_cluster_args, cluster_from_args
from sioscale.config import ClusterConfig, ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cluster",
        help="run a local Socket.IO cluster (nodes + balancer [+ Redis]) until Ctrl-C",
        description="Start N reference Socket.IO nodes behind a real balancer on 127.0.0.1, print one "
        "JSON line (url, nodes, balancer, policy, adapter, server, tls, redis_url, ca_file) and block "
        "until Ctrl-C or SIGTERM, which stop every child.",
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
    try:
        with Cluster(config, workdir=args.workdir) as cluster:
            print(json.dumps(cluster.info), flush=True)
            while not stop.wait(0.5):
                dead = cluster.dead()
                if dead:
                    print(f"sioscale cluster: {', '.join(dead)} died; see the logs in {cluster.workdir}",
                          file=sys.stderr, flush=True)
                    return 1
    except ClusterError as e:
        print(f"sioscale cluster: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="python -m sioscale.cmd_cluster")
    _add_arguments(_p)
    sys.exit(main(_p.parse_args()))
