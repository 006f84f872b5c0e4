"""Thresholds against a report's summary.json: pure evaluation + JUnit XML for CI systems.

A check passes only on evidence. When a figure is missing, the question is whether it *could*
apply to this config:

- connect_ratio, p95_connect_ms, failure_ratio apply to every config that ran: missing means nothing
  was measured (no attempt, or nothing connected) → violation.
- upgrade_ratio applies only to polling+websocket clients (websocket-only clients open the WebSocket
  directly, polling-only ones never upgrade) → skipped for those; missing for polling+websocket
  (nothing connected, so nothing could upgrade) → violation.
- delivery_ratio / p95_ack_ms apply when the scenario broadcasts / emits with ack. That is only
  visible from what happened: when recipients were expected / ack steps were attempted, a missing
  figure is a violation. When none were, the check is skipped only if sessions connected and no
  step failed (the scenario simply does not broadcast / ack); otherwise failures may be why nothing
  was sent → violation.
- A config that did not run (status "failed") or attempted no connection at all violates every
  threshold: it measured nothing. An "interrupted" config (or one still "running") violates every
  threshold too: its figures cover only part of the run, and a partial run must not pass a gate.
  A "degraded" one is judged on its figures (they are real, if partial); `sioscale check` prints
  its reasons, and `sioscale run`/`campaign` already exited 3 for it.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from contract.config import ConfigError, Thresholds
from contract.status import Status, parse

from .summary import ConfigEntry, ConfigSummary


@dataclass(frozen=True)
class Figure:
    """How a threshold reads its figure from one typed summary config (and what to call it in an error)."""

    what: str
    get: Callable[[ConfigEntry], Any]


def _latency_p95(step: str) -> Callable[[ConfigEntry], Any]:
    def get(c: ConfigEntry) -> Any:
        lat = c.latency_ms.get(step)
        return lat.p95 if lat is not None else None
    return get


# threshold name → (how to read the figure from one summary config, "min" | "max", label)
FIGURES: dict[str, tuple[Figure, str, str]] = {
    "connect_ratio": (Figure("connections.connect_ratio", lambda c: c.connections.connect_ratio), "min",
                      "connect success ratio"),
    "upgrade_ratio": (Figure("connections.upgrade_ratio", lambda c: c.connections.upgrade_ratio), "min",
                      "upgrade success ratio"),
    "delivery_ratio": (Figure("broadcast.delivery_ratio", lambda c: c.broadcast.delivery_ratio), "min",
                       "broadcast delivery ratio"),
    "p95_connect_ms": (Figure("latency_ms.connect.p95", _latency_p95("connect")), "max", "p95 connect latency (ms)"),
    "p95_ack_ms": (Figure("latency_ms.ack.p95", _latency_p95("ack")), "max", "p95 ack latency (ms)"),
    "failure_ratio": (Figure("steps.failure_ratio", lambda c: c.steps.failure_ratio), "max", "failed steps / all steps"),
}

DID_NOT_RUN = "the config did not run (see its error in the report)"
NOT_JUDGED: dict[Status, str] = {
    Status.FAILED: DID_NOT_RUN,
    Status.INTERRUPTED: "the run was interrupted: its figures cover only part of it (see the report's first screen)",
    Status.RUNNING: "the run had not finished when the report was made",
}
"""Statuses (contract.status) whose figures no threshold may pass on, and why."""


@dataclass(frozen=True)
class CheckResult:
    config: str
    threshold: str
    limit: float
    value: float | None
    passed: bool
    skipped: str = ""  # why the figure cannot apply (e.g. websocket-only has no upgrade); "" when judged
    missing: str = ""  # why a violated check has no figure; "" when it has one

    def describe(self) -> str:
        label, kind = FIGURES[self.threshold][2], FIGURES[self.threshold][1]
        op = ">=" if kind == "min" else "<="
        if self.skipped:
            return f"{self.config}: {label}: skipped ({self.skipped})"
        if self.value is None:
            return f"{self.config}: {label}: no figure, required {op} {self.limit:g}: VIOLATED ({self.missing})"
        verdict = "ok" if self.passed else "VIOLATED"
        return f"{self.config}: {label} = {self.value:.4g}, required {op} {self.limit:g}: {verdict}"


def _number(cfg_name: str, what: str, v: Any) -> float | None:
    """A figure as float; None (and NaN) = missing. Anything else is a broken summary → ConfigError."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"summary config {cfg_name!r}: {what} is {v!r}, not a number")
    v = float(v)
    return None if math.isnan(v) else v


def _count(name: str, what: str, v: Any) -> int:
    n = _number(name, what, v)
    return int(n) if n is not None else 0


def _judge_missing(cfg: ConfigEntry, name: str, key: str) -> tuple[str, str]:
    """(skipped, missing): exactly one is non-empty. See the module docstring for the rules."""
    attempted = _count(name, "connections.attempted", cfg.connections.attempted)
    connected = _count(name, "connections.connected", cfg.connections.connected)
    failed = _count(name, "steps.failed", cfg.steps.failed)
    total = _count(name, "steps.total", cfg.steps.total)
    tr = cfg.config.transports
    transports = [str(t) for t in tr] if isinstance(tr, list | tuple) else []
    if attempted == 0:
        return "", "no connection attempt recorded: nothing was measured"
    if key == "upgrade_ratio" and transports and set(transports) != {"polling", "websocket"}:
        return f"{'+'.join(transports)}-only clients do not upgrade", ""
    if connected == 0:
        return "", f"none of {attempted} connection attempt(s) connected"
    if key == "delivery_ratio":
        sent = _count(name, "broadcast.sent", cfg.broadcast.sent)
        expected = _count(name, "broadcast.expected", cfg.broadcast.expected)
        if expected:
            return "", f"{expected} deliveries expected, none measured"
        if failed == 0:
            return ("the scenario sent no broadcast" if not sent else "no recipient was in the room at send time"), ""
        return "", f"no broadcast delivery measured while {failed} of {total} steps failed"
    if key == "p95_ack_ms":
        acks = _count(name, "steps.by_step.ack.total", cfg.steps.step_total("ack"))
        if acks:
            return "", f"{acks} ack step(s), none succeeded"
        if failed == 0:
            return "the scenario emitted no ack", ""
        return "", f"no ack measured while {failed} of {total} steps failed"
    return "", "no such figure although connections were attempted"


def _entries(summary: dict[str, Any] | ConfigSummary) -> Iterator[ConfigEntry]:
    """The typed configs, read one at a time (a broken entry raises ConfigError where evaluate reaches it)."""
    if isinstance(summary, ConfigSummary):
        yield from summary.configs
        return
    configs = summary.get("configs") if isinstance(summary, dict) else None
    if not isinstance(configs, list):
        raise ConfigError("summary has no 'configs' list")
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, dict):
            raise ConfigError(f"summary configs[{i}] is {type(cfg).__name__}, not an object")
        yield ConfigEntry.from_json(cfg)


def evaluate(summary: dict[str, Any] | ConfigSummary, thresholds: Thresholds, only: str | None = None) -> list[CheckResult]:
    """One result per config × active threshold (rules: module docstring). ConfigError on a broken summary.

    summary: a summary.json object (each config read with ConfigEntry.from_json, old files too) or a ConfigSummary."""
    out: list[CheckResult] = []
    for cfg in _entries(summary):
        name = str(cfg.name)
        if only and only not in name:
            continue
        status = parse(cfg.status)
        not_judged = NOT_JUDGED.get(status) if status is not None else None
        for key, limit in thresholds.active().items():
            figure, kind, _ = FIGURES[key]
            if not_judged:
                out.append(CheckResult(name, key, limit, None, False, missing=not_judged))
                continue
            value = _number(name, figure.what, figure.get(cfg))
            if value is None:
                skipped, missing = _judge_missing(cfg, name, key)
                out.append(CheckResult(name, key, limit, None, bool(skipped), skipped, missing))
                continue
            ok = value >= limit if kind == "min" else value <= limit
            out.append(CheckResult(name, key, limit, value, ok))
    return out


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
            msg = r.describe()
            ET.SubElement(tc, "failure", message=msg, type="threshold").text = msg
    return ET.tostring(cast(ET.Element, ET.ElementTree(ts).getroot()), encoding="unicode", xml_declaration=True)


__all__ = ["DID_NOT_RUN", "FIGURES", "Figure", "NOT_JUDGED", "CheckResult", "evaluate", "junit_xml"]
"""The public names (the analysis.checks shim re-exports exactly these)."""
