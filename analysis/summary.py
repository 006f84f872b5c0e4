"""The report's summary as typed dataclasses: one per summary.json section, serialised once.

analysis.report builds a ConfigSummary one section at a time; `to_json()` is the only way it becomes
the pinned summary.json object (docs/contracts.md): the same keys, in the same order, with the same
values. `from_json()` reads a summary.json back (`sioscale check`, analysis.checks), old files too:
a missing optional key or section takes its default, a section that is not an object counts as
missing. Values are kept as the file has them (a figure is not coerced here), so analysis.checks
can still tell a broken summary (a figure that is not a number) from a missing figure.

Sections whose shape varies with the data (failures, generator, capacity, redis_vs_memory, faults,
resources, environment, thresholds, slo) stay plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from contract.config import ConfigError

SCHEMA = 1


def to_plain(o: Any) -> Any:
    """Dataclasses → dicts (field order; a field's metadata "key" renames it), recursively; other values as they are."""
    if is_dataclass(o) and not isinstance(o, type):
        return {f.metadata.get("key", f.name): to_plain(getattr(o, f.name)) for f in fields(o)}
    if isinstance(o, dict):
        return {k: to_plain(v) for k, v in o.items()}
    if isinstance(o, list):
        return [to_plain(v) for v in o]
    return o


def _obj(d: Any) -> dict[str, Any]:
    """A section read from JSON: itself when an object, else (missing, null, wrong type) empty."""
    return d if isinstance(d, dict) else {}


def _pick(cls: type, d: Any) -> dict[str, Any]:
    """The keyword arguments of cls that the JSON object d has (by their JSON key)."""
    d = _obj(d)
    return {f.name: d[f.metadata.get("key", f.name)] for f in fields(cls) if f.metadata.get("key", f.name) in d}


@dataclass
class ConfigBlock:
    """`config`: what the config ran (from its meta.json)."""

    balancer: Any = None
    policy: Any = None
    adapter: Any = None
    transports: Any = field(default_factory=list)
    server: Any = None
    nodes: Any = None
    tls: Any = None

    @classmethod
    def from_json(cls, d: Any) -> ConfigBlock:
        return cls(**_pick(cls, d))


@dataclass
class Connections:
    """`connections`: attempted / connected / upgraded and the two ratios."""

    attempted: Any = 0
    connected: Any = 0
    upgraded: Any = 0
    connect_ratio: Any = None
    upgrade_ratio: Any = None

    @classmethod
    def from_json(cls, d: Any) -> Connections:
        return cls(**_pick(cls, d))


@dataclass
class Steps:
    """`steps`: failed / total steps, their ratio and the counts per step (step → {"total", "failed"})."""

    total: Any = 0
    failed: Any = 0
    failure_ratio: Any = None
    by_step: Any = field(default_factory=dict)

    def step_total(self, step: str) -> Any:
        """How many `step` steps were attempted, as recorded (None when not recorded)."""
        s = _obj(self.by_step).get(step)
        return s.get("total") if isinstance(s, dict) else None

    @classmethod
    def from_json(cls, d: Any) -> Steps:
        return cls(**_pick(cls, d))


@dataclass
class NodeSwitch:
    """`node_switch`: the session-unknown failures attributed to a node change."""

    session_unknown: Any = None
    attributed: Any = None
    share: Any = None
    polling: Any = None
    polling_attributed: Any = None
    probe: Any = None
    probe_attributed: Any = None
    follow_on: Any = None
    rows: Any = None  # the kept failure rows the shares rest on (fewer than session_unknown in a storm)

    @classmethod
    def from_json(cls, d: Any) -> NodeSwitch | None:
        return cls(**_pick(cls, d)) if isinstance(d, dict) else None


@dataclass
class Percentiles:
    """Delivery latency percentiles (ms)."""

    p50: Any = None
    p95: Any = None
    p99: Any = None

    @classmethod
    def from_json(cls, d: Any) -> Percentiles | None:
        return cls(**_pick(cls, d)) if isinstance(d, dict) else None


@dataclass
class Broadcast:
    """`broadcast`: sent / expected / delivered, the delivery ratio and its latency percentiles."""

    sent: Any = 0
    expected: Any = 0
    delivered: Any = 0
    delivery_ratio: Any = None
    latency_ms: Percentiles | None = None

    @classmethod
    def from_json(cls, d: Any) -> Broadcast:
        kw = _pick(cls, d)
        if "latency_ms" in kw:
            kw["latency_ms"] = Percentiles.from_json(kw["latency_ms"])
        return cls(**kw)


@dataclass
class Latency:
    """One step's (or one step on one node's) latency percentiles (ms) and sample count."""

    p50: Any = None
    p95: Any = None
    p99: Any = None
    max: Any = None
    count: Any = 0

    @classmethod
    def from_json(cls, d: Any) -> Latency:
        return cls(**_pick(cls, d))


@dataclass
class FirstFailure:
    """`first_failure`: when (and at how many users) failures first passed the SLO."""

    t_s: Any = None  # the 1-s bucket's start, in s from the start of the config's first second
    active_users: Any = None

    @classmethod
    def from_json(cls, d: Any) -> FirstFailure | None:
        return cls(**_pick(cls, d)) if isinstance(d, dict) else None


@dataclass
class CheckOutcome:
    """One threshold's check in `checks` (analysis.checks.evaluate's result, as the page shows it)."""

    value: Any
    limit: Any
    kind: str
    label: str
    passed: bool | None = field(default=None, metadata={"key": "pass"})
    skipped: str | None = None
    missing: str | None = None
    text: str = ""

    @classmethod
    def from_json(cls, d: Any) -> CheckOutcome:
        kw = {"value": None, "limit": None, "kind": "", "label": "", **_pick(cls, d)}
        return cls(**kw)


@dataclass
class ConfigEntry:
    """One config's entry in `configs`, its sections in summary.json's order."""

    name: Any = "?"
    status: Any = None
    status_reasons: Any = field(default_factory=list)
    error: Any = None
    config: ConfigBlock = field(default_factory=ConfigBlock)
    options: dict[str, Any] = field(default_factory=dict)  # the run's labels beyond `config`'s pinned keys
    events: Any = 0  # steps of the run (exact, from the aggregates), not the rows a schema-2 run kept
    warnings: list[Any] = field(default_factory=list)
    connections: Connections = field(default_factory=Connections)
    failures: dict[str, Any] = field(default_factory=dict)
    steps: Steps = field(default_factory=Steps)
    node_switch: NodeSwitch | None = None
    broadcast: Broadcast = field(default_factory=Broadcast)
    latency_ms: dict[str, Latency] = field(default_factory=dict)
    latency_by_node: dict[str, dict[str, Latency]] = field(default_factory=dict)
    nodes: dict[str, Any] = field(default_factory=dict)
    imbalance: Any = None
    p_uniform: Any = None
    first_failure: FirstFailure | None = None
    generator: dict[str, Any] | None = None
    capacity: dict[str, Any] = field(default_factory=dict)
    redis_vs_memory: dict[str, Any] | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    recovery: dict[str, Any] | None = None  # analysis.recovery.recovery_block; None without lost sessions
    sessions: dict[str, Any] | None = None  # analysis.sessions.session_summary: how connected sessions ended
    resources: dict[str, Any] | None = None  # analysis.resources.analyse's section; None without resources.csv
    checks: dict[str, CheckOutcome] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConfigEntry:
        """An entry of a summary.json (any age): missing keys take their defaults."""
        kw = _pick(cls, d)
        sections: dict[str, Any] = {"config": ConfigBlock.from_json, "connections": Connections.from_json,
                                    "steps": Steps.from_json, "node_switch": NodeSwitch.from_json,
                                    "broadcast": Broadcast.from_json, "first_failure": FirstFailure.from_json}
        for key, read in sections.items():
            if key in kw:
                kw[key] = read(kw[key])
        if "latency_ms" in kw:
            kw["latency_ms"] = {str(s): Latency.from_json(v) for s, v in _obj(kw["latency_ms"]).items()
                                if isinstance(v, dict)}
        if "latency_by_node" in kw:
            kw["latency_by_node"] = {str(s): {str(n): Latency.from_json(v) for n, v in per.items() if isinstance(v, dict)}
                                     for s, per in _obj(kw["latency_by_node"]).items() if isinstance(per, dict)}
        if "checks" in kw:
            kw["checks"] = {str(k): CheckOutcome.from_json(v) for k, v in _obj(kw["checks"]).items()}
        for key in ("failures", "nodes", "capacity", "options"):
            if key in kw:
                kw[key] = _obj(kw[key])
        for key in ("generator", "redis_vs_memory", "recovery", "resources", "sessions"):
            if key in kw and not isinstance(kw[key], dict):
                kw[key] = None
        return cls(**kw)


@dataclass
class ConfigSummary:
    """summary.json: the report's configs and what they were judged against."""

    title: Any = None
    status: Any = None
    generated: Any = None
    configs: list[ConfigEntry] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    warnings: list[Any] = field(default_factory=list)
    slo: dict[str, Any] | None = None
    schema: Any = SCHEMA
    recipes: list[dict[str, Any]] | None = None  # analysis.recipes.records: only when configs differ by recipe

    def to_json(self) -> dict[str, Any]:
        """The pinned summary.json object (`slo` only once set: write_report sets it; `recipes` only when the
        configurations differ by balancer or policy)."""
        out: dict[str, Any] = {"schema": self.schema, "title": self.title, "status": self.status,
                               "generated": self.generated, "configs": [c.to_json() for c in self.configs],
                               "environment": to_plain(self.environment), "thresholds": to_plain(self.thresholds),
                               "warnings": list(self.warnings)}
        if self.slo is not None:
            out["slo"] = to_plain(self.slo)
        if self.recipes is not None:
            out["recipes"] = to_plain(self.recipes)
        return out

    @classmethod
    def from_json(cls, d: Any) -> ConfigSummary:
        """A summary.json object (any age). ConfigError when it has no `configs` list or an entry is not an object."""
        configs = d.get("configs") if isinstance(d, dict) else None
        if not isinstance(configs, list):
            raise ConfigError("summary has no 'configs' list")
        for i, c in enumerate(configs):
            if not isinstance(c, dict):
                raise ConfigError(f"summary configs[{i}] is {type(c).__name__}, not an object")
        kw = _pick(cls, d)
        kw["configs"] = [ConfigEntry.from_json(c) for c in configs]
        if not isinstance(kw.get("recipes"), list | type(None)):
            kw["recipes"] = None
        return cls(**kw)
