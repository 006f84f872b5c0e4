"""`sioscale report RUN_DIR... --out reports/NAME/`: the HTML capacity report and summary.json.

Accepts run directories or a campaign directory (its runs/* are taken), so the report of an
old campaign can be rebuilt without re-running it. `--markdown-recipes` prints the report's recipe
table as Markdown (README's "Recipes" table), from the same analysis as the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from contract.config import ConfigError
from sioscale.cmd_check import add_threshold_args, thresholds_from_args


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="Build the HTML capacity report from run directories",
                              description="Write index.html (self-contained), summary.json and plots/*.svg.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directories (meta.json, events.csv or the aggregates files, ...) or a campaign "
                        "directory containing runs/")
    p.add_argument("--out", default=None, help="output directory, e.g. reports/NAME/ (required unless "
                                                "--markdown-recipes)")
    p.add_argument("--markdown-recipes", action="store_true",
                   help="print the recipe table (the report's first section when the runs differ by balancer or "
                        "policy) as Markdown on stdout, e.g. for a README; without --out nothing is written")
    p.add_argument("--title", default=None, help="report title (default: from the campaign directory)")
    g = p.add_argument_group("thresholds", "checked per config and used as the capacity SLO "
                             "(p95 connect/ack, failure ratio; the rest of the SLO keeps its default)")
    add_threshold_args(g)
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
        elif (p / "runs").is_dir() and not (p / "meta.json").exists() and not _holds_run_files(p):
            sub = sorted(d for d in (p / "runs").iterdir() if d.is_dir())
            dirs.extend(sub)
            if not sub:
                problems.append(f"{p}/runs: no run directories inside")
        else:
            dirs.append(p)
    return dirs, problems


def _holds_run_files(p: Path) -> bool:
    """Does p hold a run's event files, of either schema (events.csv; eventlog.json, *.parquet, *.arrows)?"""
    from contract.eventfiles import EVENTLOG_JSON, FILES, FINAL_SUFFIX, LEGACY_EVENTS_CSV, STREAM_SUFFIX

    names = [LEGACY_EVENTS_CSV, EVENTLOG_JSON, *(f"{k}{sfx}" for k in FILES for sfx in (FINAL_SUFFIX, STREAM_SUFFIX))]
    return any((p / n).exists() for n in names)


def _note_earlier_thresholds(paths: list[str]) -> None:
    """Rebuilding a campaign's report without thresholds would silently change its checks and SLO: say so."""
    import json

    for s in paths:
        try:
            old = json.loads((Path(s) / "summary.json").read_text()).get("thresholds")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(old, dict) and old:
            flags = " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in old.items() if isinstance(v, int | float))
            print(f"sioscale report: note: {s}/summary.json was built with thresholds ({flags}); without them this "
                  "report checks nothing and uses the default capacity SLO — pass --campaign FILE or those flags",
                  file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    import jinja2

    from analysis.report import summarize, write_report  # heavy imports (pandas, matplotlib) only when used

    dirs, problems = expand_run_dirs(args.run_dirs)
    for msg in problems:
        print(f"sioscale report: {msg}", file=sys.stderr)
    if not dirs:
        print("sioscale report: no run directory to report on", file=sys.stderr)
        return 2
    if args.out is None and not args.markdown_recipes:
        raise ConfigError("--out is required (the report's directory), unless --markdown-recipes prints the recipe table")
    th, _, source = thresholds_from_args(args)  # a bad campaign file → ConfigError → exit 2 (cli.py)
    if not th.active() and args.out is not None:
        _note_earlier_thresholds(args.run_dirs)
    out = Path(args.out) if args.out is not None else None
    try:
        kw: dict[str, Any] = {"title": args.title, "thresholds": th if th.active() else None,
                              "thresholds_source": source or None}
        summary = write_report(dirs, out, **kw) if out is not None else summarize(dirs, **kw)
    except OSError as e:
        print(f"sioscale report: cannot write {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, AttributeError, jinja2.TemplateError) as e:
        # The loader turns bad run files into warnings; whatever still slips through is bad input
        # too, and deserves one line naming it rather than a traceback.
        print(f"sioscale report: cannot build a report from these runs: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.markdown_recipes:
        return _print_recipes(summary, out)
    return _print_summary(summary, out)


def _print_recipes(summary: dict[str, Any], out: Path | None) -> int:
    """The recipe table as Markdown on stdout (2 and one line when the runs hold one recipe only)."""
    import pandas as pd

    from analysis.recipes import recipe_key, to_markdown

    recs = summary.get("recipes")
    if not recs:
        keys = sorted({" ".join(recipe_key(c)) for c in summary.get("configs", [])})
        print(f"sioscale report: no recipe table: the runs do not differ by balancer or policy (they all run "
              f"{', '.join(keys) or 'nothing'})", file=sys.stderr)
        return 2
    if out is not None:
        print(f"wrote {out / 'index.html'} and {out / 'summary.json'}", file=sys.stderr)
    sys.stdout.write(to_markdown(pd.DataFrame(recs)))
    return 0


def _print_summary(summary: dict[str, Any], out: Path) -> int:
    """What the report found, in the terminal: configs not ok, warnings, the SLO, verdicts, failed thresholds."""
    from analysis.summary import ConfigSummary

    typed = ConfigSummary.from_json(summary)
    not_ok = [c for c in typed.configs if c.status != "ok"]
    print(f"wrote {out / 'index.html'} and {out / 'summary.json'}: {len(typed.configs)} config(s)"
          + (f", {len(not_ok)} not ok" if not_ok else "")
          + (f", {len(typed.warnings)} loader warning(s)" if typed.warnings else ""))
    for c in not_ok:  # what the page's first screen says, in the terminal too
        print(f"  {c.name}: {c.status.upper()}: " + "; ".join(c.status_reasons or [str(c.error)]))
    for w in typed.warnings:
        print(f"  warning: {w}")
    slo = typed.slo or {}
    print("capacity SLO: " + ", ".join(f"{k} {v:g} ({slo['from'][k]})" for k, v in slo.get("values", {}).items())
          + (f"; thresholds from {slo['thresholds_source']}" if slo.get("thresholds_source") else ""))
    for c in typed.configs:
        for v in c.verdicts:
            print(f"  {v}")
        for ch in c.checks.values():
            if ch.passed is False:  # the same sentence `sioscale check` prints for it
                print(f"  threshold: {ch.text}")
    return 0
