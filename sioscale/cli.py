"""`sioscale`: the one command line. Each subcommand lives in sioscale/cmd_<name>.py."""

from __future__ import annotations

import argparse
import importlib
import resource
import signal
import sys

from contract.config import ConfigError

SUBCOMMANDS = ("cluster", "run", "campaign", "report", "check")


def _raise_nofile() -> None:
    # Thousands of sockets (balancer, nodes, generator) need descriptors; children inherit this.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sioscale",
        description="Load testing and capacity planning for Socket.IO clusters behind load balancers.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        mod = importlib.import_module(f"sioscale.cmd_{name}")
        mod.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _raise_nofile()
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return int(importlib.import_module(f"sioscale.cmd_{args.command}").main(args) or 0)
    except ConfigError as e:
        print(f"sioscale {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Everything is stopped; a further Ctrl-C/SIGTERM (a second one sent while the first one's
        # cleanup ran) has nothing left to stop. Ignore it: at interpreter exit CPython resets a
        # Python-level handler to SIG_DFL, so that signal would otherwise kill the process by
        # SIGTERM (-15) and lose the exit code 130 that says "interrupted".
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        print(f"sioscale {args.command}: interrupted; everything it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
