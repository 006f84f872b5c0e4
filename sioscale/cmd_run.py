"""`sioscale run`: one headless Locust run, against a URL or a local cluster, into a run directory."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from contract.config import RunConfig, run_name
from contract.status import EXIT_CODE_HELP, EXIT_CODES, Status, parse
from sioscale.cliargs import (
    add_cluster_args,
    add_load_args,
    add_scrape_arg,
    cluster_from_args,
    load_from_args,
    scrape_from_args,
)


def add_parser(sub) -> argparse.ArgumentParser:  # sub: argparse's private subparsers type
    p = sub.add_parser(
        "run",
        help="one headless run into a run directory",
        description="Run one scenario headless, against --url or a local cluster built from the cluster flags, "
        "and write the run directory (meta.json, events.csv, Locust CSV/JSON, logs). "
        "Optionally write a report of it too. The run's status (ok, degraded, failed, interrupted) and its "
        "reasons go to meta.json and the last line of stderr.",
        epilog=EXIT_CODE_HELP,
    )
    p.add_argument("--url", default=None, help="target an existing server (http[s]://host:port) instead of a local cluster")
    p.add_argument("--out", default=None, help="run directory (default runs/<config-name>-<time>)")
    p.add_argument("--report", action="store_true", help="also write index.html + summary.json into RUN_DIR/report")
    add_scrape_arg(p)
    add_cluster_args(p)
    add_load_args(p)
    return p


def main(args: argparse.Namespace) -> int:
    from sioscale.runner import check_reachable, execute_run, external_run_name, locustfile_paths

    cluster, load = cluster_from_args(args), load_from_args(args)
    # with --url the cluster flags describe nothing that runs: the name must not claim them
    name = external_run_name(load) if args.url else run_name(cluster, load)
    # the cross-field rules (source range vs --url or --host, ...): the same call as a campaign cell's
    cfg = RunConfig(name=name, cluster=cluster, load=load, scrape=scrape_from_args(args) or ()).validate(url=args.url)
    locustfile_paths(cfg)  # a missing locustfile is an error before anything starts
    if args.url:
        check_reachable(args.url)
    run_dir = Path(args.out or f"runs/{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")

    def progress(line: str) -> None:
        print(f"[{cfg.name}] {line}", file=sys.stderr, flush=True)

    print(f"[{cfg.name}] starting; run directory {run_dir}", file=sys.stderr, flush=True)
    meta = execute_run(cfg, run_dir, url=args.url, progress=progress)
    status = parse(meta.get("status")) or Status.FAILED
    why = "; ".join(meta.get("status_reasons") or []) or meta.get("error") or ""
    print(f"[{cfg.name}] {status.value}" + (f": {why}" if why else ""), file=sys.stderr)
    if args.report and status in (Status.OK, Status.DEGRADED):  # a degraded run's report says why, on top
        from analysis.report import write_report

        write_report([run_dir], run_dir / "report", title=cfg.name)
        print(f"report: {run_dir / 'report' / 'index.html'}", file=sys.stderr)
    print(str(run_dir))
    return EXIT_CODES[status]
