"""`sioscale report RUN_DIR... --out reports/NAME/`: the HTML capacity report and summary.json.

Accepts run directories or a campaign directory (its runs/* are taken), so the report of an
old campaign can be rebuilt without re-running it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="Build the HTML capacity report from run directories",
                              description="Write index.html (self-contained), summary.json and plots/*.svg.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories (events.csv, meta.json, ...) or a campaign directory containing runs/")
    p.add_argument("--out", required=True, help="output directory, e.g. reports/NAME/")
    p.add_argument("--title", default=None, help="report title (default: from the campaign directory)")
    p.set_defaults(func=main)
    return p


def expand_run_dirs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Run dirs as given; a campaign dir (with runs/) expands to its runs. Returns (dirs, problems)."""
    dirs: list[Path] = []
    problems: list[str] = []
    for s in paths:
        p = Path(s)
        if not p.is_dir():
            problems.append(f"{p}: not a directory")
        elif (p / "runs").is_dir() and not (p / "meta.json").exists() and not (p / "events.csv").exists():
            sub = sorted(d for d in (p / "runs").iterdir() if d.is_dir())
            dirs.extend(sub)
            if not sub:
                problems.append(f"{p}/runs: no run directories inside")
        else:
            dirs.append(p)
    return dirs, problems


def main(args: argparse.Namespace) -> int:
    from analysis.report import write_report  # heavy imports (pandas, matplotlib) only when used

    dirs, problems = expand_run_dirs(args.run_dirs)
    for msg in problems:
        print(f"sioscale report: {msg}", file=sys.stderr)
    if not dirs:
        print("sioscale report: no run directory to report on", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        summary = write_report(dirs, out, title=args.title)
    except OSError as e:
        print(f"sioscale report: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    n_failed = sum(1 for c in summary["configs"] if c["status"] == "failed")
    print(f"wrote {out / 'index.html'} and {out / 'summary.json'}: {len(summary['configs'])} config(s)"
          + (f", {n_failed} failed to run" if n_failed else "")
          + (f", {len(summary['warnings'])} loader warning(s)" if summary["warnings"] else ""))
    for c in summary["configs"]:
        for v in c["verdicts"]:
            print(f"  {v}")
    return 0
