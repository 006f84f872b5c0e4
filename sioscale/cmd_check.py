"""`sioscale check`: thresholds against a report → exit code 1 and a list of violations."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from analysis.checks import FIGURES, evaluate, junit_xml
from analysis.summary import ConfigEntry
from contract.config import Campaign, ConfigError, Thresholds, load_campaign
from contract.status import Status, parse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "check",
        help="thresholds on a report → exit code (and JUnit XML)",
        description="Compare a report's summary.json against thresholds (from flags and/or a campaign "
        "file's [thresholds]; flags win). Exit 0 when all hold, 1 when any is violated (each listed), "
        "2 on bad input. A config that failed to run, was interrupted or was still running violates every "
        "threshold; a degraded one is judged on its figures, with its reasons printed.",
    )
    p.add_argument("report", help="report directory (with summary.json) or a summary.json file")
    add_threshold_args(p)
    p.add_argument("--only", default=None, help="check only configs whose name contains this text")
    p.add_argument("--junit", default=None, help="write JUnit XML here (a test case per config × threshold)")
    return p


def add_threshold_args(p: argparse.ArgumentParser) -> None:
    """--campaign FILE and one flag per threshold; shared by `sioscale check` and `sioscale report`."""
    p.add_argument("--campaign", default=None, help="take [thresholds] from this campaign TOML (flags win)")
    for key, (_, kind, label) in FIGURES.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=float, default=None,
                       help=f"{'minimum' if kind == 'min' else 'maximum'} {label}")


def thresholds_from_args(args: argparse.Namespace) -> tuple[Thresholds, Campaign | None, str]:
    """The campaign's [thresholds] overridden by the flags; plus the campaign and a phrase naming the source."""
    camp = load_campaign(args.campaign) if args.campaign else None
    th = camp.thresholds if camp else Thresholds()
    flags = {k: getattr(args, k) for k in FIGURES if getattr(args, k, None) is not None}
    th = replace(th, **flags)
    parts = ([f"{args.campaign} [thresholds]"] if camp and camp.thresholds.active() else []) + (
        ["flags " + ", ".join(f"--{k.replace('_', '-')}" for k in flags)] if flags else [])
    return th, camp, " + ".join(parts)


def main(args: argparse.Namespace) -> int:
    path = Path(args.report)
    if path.is_dir():
        path = path / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror}); run `sioscale report` or a campaign first") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(summary, dict) or summary.get("schema") != 1 or not isinstance(summary.get("configs"), list):
        raise ConfigError(f"{path}: not a sioscale summary (expected schema 1 with a 'configs' list)")
    th, camp, _ = thresholds_from_args(args)
    if not th.active():
        raise ConfigError("no thresholds: give flags such as --connect-ratio 0.99, or --campaign FILE with [thresholds]")
    for raw in summary["configs"]:  # a check passes on figures; say plainly when they are not the whole run's
        if not isinstance(raw, dict):
            continue  # evaluate says which entry is broken
        c = ConfigEntry.from_json(raw)  # typed; an older summary.json's missing keys take their defaults
        if c.status is not None and parse(c.status) is not Status.OK and (not args.only or args.only in str(c.name)):
            why = "; ".join(str(r) for r in c.status_reasons or []) or str(c.error or "no reason recorded")
            print(f"{c.name}: status {c.status}: {why}", file=sys.stderr)
    results = evaluate(summary, th, args.only)
    if args.junit:
        suite = camp.name if camp else str(summary.get("title") or "sioscale")
        Path(args.junit).write_text(junit_xml(results, suite=suite))
    bad = [r for r in results if not r.passed]
    for r in results:
        print(r.describe(), file=sys.stderr if not r.passed else sys.stdout)
    print(f"thresholds: {len(results) - len(bad)} held, {len(bad)} violated", file=sys.stdout)
    return 1 if bad else 0
