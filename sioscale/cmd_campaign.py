"""`sioscale campaign FILE.toml`: the same load against a matrix of clusters, then one report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from contract.config import Campaign, ConfigError, load_campaign
from contract.status import EXIT_CODE_HELP, EXIT_CODES, worst
from sioscale.cliargs import add_limit_args, add_scrape_arg, override_limits, override_scrape


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "campaign",
        help="run a campaign file: every config of its matrix, then one comparative report",
        description="For each config of the campaign's axes: start the local cluster, run Locust headless "
        "into OUT/runs/<config>/, stop the cluster. A config that fails to start is recorded as failed "
        "with its reason and the campaign goes on. Then write OUT/index.html and OUT/summary.json and, "
        "when the campaign has [thresholds], print the check (exit 1 on a violation only with --check). "
        "The exit code is that of the worst config's status (below).",
        epilog=EXIT_CODE_HELP,
    )
    p.add_argument("file", help="campaign TOML (see campaigns/seed.toml)")
    p.add_argument("--out", default=None, help="output directory (default reports/<campaign name>/)")
    p.add_argument("--only", default=None, help="run only configs whose name contains this text")
    p.add_argument("--dry-run", action="store_true", help="validate and list the configs, start nothing")
    p.add_argument("--check", action="store_true", help="exit 1 when a [thresholds] bound is violated")
    p.add_argument("--junit", default=None, help="with thresholds: write JUnit XML here")
    add_limit_args(p)  # --node-cpus / --node-memory-mb: override the file's [cluster] keys (and their axis)
    add_scrape_arg(p)  # replaces the file's [telemetry] scrape
    return p


def _preflight(camp: Campaign) -> list:
    """Everything that can be known wrong before any load starts: the campaign's cells, locustfiles."""
    from contract.config import key_location
    from sioscale.runner import locustfile_paths

    runs = camp.runs()
    for cfg in runs:
        try:
            locustfile_paths(cfg)
        except ConfigError as e:
            text = Path(camp.source).read_text() if camp.source else ""
            raise ConfigError(f"{key_location(camp.source, text, 'locustfile')}: {e}") from None
    return runs


def _interrupted(camp: Campaign, out: Path, run_dirs: list[Path], total: int, write_report) -> int:
    """Ctrl-C mid-campaign: the configs that finished cost minutes of load; report them, exit 130.

    The interrupted config is left out (its run directory stays, marked interrupted). No threshold
    check: a verdict over part of the matrix would read as the campaign's.
    """
    print(f"campaign {camp.name}: interrupted after {len(run_dirs)} of {total} configs; "
          "everything it started is stopped", file=sys.stderr, flush=True)
    if run_dirs:
        write_report(run_dirs, out, title=f"{camp.name} (interrupted: {len(run_dirs)} of {total} configs)",
                     thresholds=camp.thresholds)
        print(f"report of the finished configs: {out / 'index.html'}", file=sys.stderr)
    return 130


def main(args: argparse.Namespace) -> int:
    camp = override_scrape(override_limits(load_campaign(args.file), args), args)
    if args.junit and not camp.thresholds.active():
        # a JUnit file is a verdict per threshold: without any there is nothing to write, and a CI job
        # that asked for one must not pass on a file that never appears
        raise ConfigError(f"--junit {args.junit}: {args.file} has no [thresholds] to check; add some or drop --junit")
    runs = _preflight(camp)
    if args.only:
        runs = [r for r in runs if args.only in r.name]
        if not runs:
            raise ConfigError(f"--only {args.only!r} matches no config of {args.file}")
    out = Path(args.out or f"reports/{camp.name}")
    est = sum(r.load.run_seconds + 10 for r in runs)
    print(f"campaign {camp.name}: {len(runs)} configs, ~{est / 60:.1f} min of load; output {out}/", file=sys.stderr)
    if args.dry_run:
        for r in runs:
            print(r.name)
        return 0

    from analysis.report import write_report
    from sioscale.runner import execute_run

    t0 = time.time()
    run_dirs: list[Path] = []
    try:
        for i, cfg in enumerate(runs, 1):
            tag = f"[{i}/{len(runs)} {cfg.name}]"

            def progress(line: str, tag: str = tag) -> None:
                print(f"{tag} {line}  (campaign {time.time() - t0:.0f}s)", file=sys.stderr, flush=True)

            progress("starting cluster + load")
            run_dir = out / "runs" / cfg.name
            meta = execute_run(cfg, run_dir, progress=progress)
            progress(meta["status"] + (f": {meta['error']}" if meta.get("error") else ""))
            run_dirs.append(run_dir)
    except KeyboardInterrupt:
        return _interrupted(camp, out, run_dirs, len(runs), write_report)

    summary = write_report(run_dirs, out, title=camp.name, thresholds=camp.thresholds)
    print(f"campaign {camp.name}: done in {time.time() - t0:.0f}s; report {out / 'index.html'}", file=sys.stderr)
    for c in summary.get("configs", []):
        for v in c.get("verdicts", []):
            print(f"  {c.get('name')}: {v}", file=sys.stderr)
    for w in summary.get("warnings", []):
        print(f"  warning: {w}", file=sys.stderr)
    # the report's reconciled status, not the runner's: both agree, and the report's is what the page shows
    code = EXIT_CODES[worst(c.get("status") for c in summary.get("configs", []))]

    if camp.thresholds.active():
        from analysis.checks import evaluate, junit_xml

        results = evaluate(summary, camp.thresholds)
        if args.junit:
            Path(args.junit).write_text(junit_xml(results, suite=camp.name))
        bad = [r for r in results if not r.passed]
        for r in bad:
            print("  threshold: " + r.describe(), file=sys.stderr)
        print(f"thresholds: {len(results) - len(bad)} held, {len(bad)} violated", file=sys.stderr)
        if args.check and bad:
            return 1
    return code
