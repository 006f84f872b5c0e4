"""Thresholds against a report's summary.json: pure evaluation + JUnit XML for CI systems."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from sioscale.config import Thresholds

# threshold name → (how to read the figure from one summary config, "min" | "max", label)
FIGURES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "connect_ratio": (("connections", "connect_ratio"), "min", "connect success ratio"),
    "upgrade_ratio": (("connections", "upgrade_ratio"), "min", "upgrade success ratio"),
    "delivery_ratio": (("broadcast", "delivery_ratio"), "min", "broadcast delivery ratio"),
    "p95_connect_ms": (("latency_ms", "connect", "p95"), "max", "p95 connect latency (ms)"),
    "p95_ack_ms": (("latency_ms", "ack", "p95"), "max", "p95 ack latency (ms)"),
    "failure_ratio": (("steps", "failure_ratio"), "max", "failed steps / all steps"),
}


@dataclass(frozen=True)
class CheckResult:
    config: str
    threshold: str
    limit: float
    value: float | None
    passed: bool
    skipped: str = ""  # why no figure (e.g. websocket-only has no upgrade), "" when evaluated

    def describe(self) -> str:
        label, kind = FIGURES[self.threshold][2], FIGURES[self.threshold][1]
        if self.skipped:
            return f"{self.config}: {label}: skipped ({self.skipped})"
        op = ">=" if kind == "min" else "<="
        verdict = "ok" if self.passed else "VIOLATED"
        return f"{self.config}: {label} = {self.value:.4g}, required {op} {self.limit:g}: {verdict}"


def _dig(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def evaluate(summary: dict[str, Any], thresholds: Thresholds, only: str | None = None) -> list[CheckResult]:
    """One result per config × active threshold. A config that failed to run violates every threshold."""
    out: list[CheckResult] = []
    for cfg in summary.get("configs", []):
        name = str(cfg.get("name", "?"))
        if only and only not in name:
            continue
        failed_run = cfg.get("status") == "failed"
        for key, limit in thresholds.active().items():
            path, kind, _ = FIGURES[key]
            value = _dig(cfg, path)
            if failed_run:
                out.append(CheckResult(name, key, limit, None, False, ""))
                continue
            if value is None:
                out.append(CheckResult(name, key, limit, None, True, "no such figure for this config"))
                continue
            value = float(value)
            ok = value >= limit if kind == "min" else value <= limit
            out.append(CheckResult(name, key, limit, value, ok))
    return out


def describe_failed_run(r: CheckResult) -> str:
    return f"{r.config}: {FIGURES[r.threshold][2]}: the config did not run (see its error in the report)"


def junit_xml(results: list[CheckResult], suite: str = "sioscale") -> str:
    """A testsuite with one testcase per config × threshold; violations are <failure>s."""
    failures = sum(1 for r in results if not r.passed)
    skipped = sum(1 for r in results if r.skipped)
    ts = ET.Element("testsuite", name=suite, tests=str(len(results)), failures=str(failures),
                    errors="0", skipped=str(skipped))
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{r.config}", name=r.threshold)
        if r.skipped:
            ET.SubElement(tc, "skipped", message=r.skipped)
        elif not r.passed:
            msg = describe_failed_run(r) if r.value is None else r.describe()
            ET.SubElement(tc, "failure", message=msg, type="threshold").text = msg
    return ET.tostring(ET.ElementTree(ts).getroot(), encoding="unicode", xml_declaration=True)
