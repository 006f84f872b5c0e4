"""The report's first screen: one matrix over the campaign's axes, coloured by outcome, and the capacity answer.

Why its own module: a performance engineer opens the report to read an answer ("which setups work behind this
balancer, and how many nodes of what size"), not a list of sixteen configurations. The campaign's axes are the
config labels that differ between its configurations (for the seed: policy × transports × adapter); the first
becomes the rows and the rest the columns, so the page reads like the campaign file. Every cell is one
configuration: its connect and delivery ratios, each judged green / amber / red, and the resource that binds.
Pure functions of summary.json's config entries (plain dicts); the template only lays them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

AXIS_ORDER: tuple[str, ...] = ("balancer", "policy", "server", "nodes", "size", "transports", "adapter", "recovery",
                               "tls", "idle_timeout", "ping_interval")
"""Axes in the order they become rows then columns: how a balancer routes is the first question, how the
clients and the adapter behave the second."""
AXIS_TITLES = {"balancer": "balancer", "policy": "policy", "server": "server", "nodes": "nodes", "size": "node size",
               "transports": "transports", "adapter": "adapter", "tls": "TLS", "recovery": "recovery",
               "idle_timeout": "idle timeout", "ping_interval": "ping interval"}
GOOD, FAIR = 0.99, 0.90
"""A ratio at or above GOOD is green (it works), at or above FAIR amber (it mostly works), below red."""
MAX_COLUMNS = 8
"""More columns than this do not fit 1280 px: further axes move into the rows."""


@dataclass(frozen=True)
class Cell:
    """One configuration in the matrix."""

    name: str
    status: str
    connect_ratio: float | None
    delivery_ratio: float | None
    connect_class: str
    delivery_class: str
    binding: str | None = None
    users_per_node: float | None = None
    nodes_used: int | None = None
    nodes_configured: int | None = None

    @property
    def spread_short(self) -> bool:
        """Sessions reached fewer nodes than the cluster has (e.g. a source hash of one client address)."""
        return self.nodes_used is not None and bool(self.nodes_configured) and self.nodes_used < (self.nodes_configured or 0)


@dataclass(frozen=True)
class Matrix:
    """rows × cols of cells; each row and column is a tuple of axis values, titled by row_keys / col_keys."""

    row_keys: tuple[str, ...]
    col_keys: tuple[str, ...]
    rows: list[tuple[str, ...]]
    cols: list[tuple[str, ...]]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], Cell] = field(default_factory=dict)

    def cell(self, row: tuple[str, ...], col: tuple[str, ...]) -> Cell | None:
        return self.cells.get((row, col))

    @property
    def row_titles(self) -> list[str]:
        return [AXIS_TITLES.get(k, k) for k in self.row_keys]

    @property
    def col_titles(self) -> list[str]:
        return [AXIS_TITLES.get(k, k) for k in self.col_keys]


def label(config: dict[str, Any], key: str) -> str:
    """An axis value as the page shows it ('polling+websocket', 'redis', '3', 'TLS', '0.25 CPU / 512 MiB')."""
    if key == "size":
        return str((((config.get("resources") or {}).get("node_size")) or {}).get("label") or "no limit")
    block = config.get("config") or {}
    v = block.get(key) if key in block else (config.get("options") or {}).get(key)
    if key in ("idle_timeout", "ping_interval"):
        return "default" if v is None else f"{v:g} s" if isinstance(v, int | float) else "?"
    if key == "recovery":
        return "recovery" if v else "no recovery"
    if key == "transports":
        return "+".join(str(t) for t in v) if isinstance(v, list | tuple) and v else "?"
    if key == "tls":
        return "TLS" if v else "plain"
    return "?" if v is None else str(v)


def axes(configs: list[dict[str, Any]]) -> list[str]:
    """The axis keys whose value differs between the configurations, in AXIS_ORDER."""
    return [k for k in AXIS_ORDER if len({label(c, k) for c in configs}) > 1]


def outcome_class(ratio: Any) -> str:
    """'ok' (≥ GOOD), 'warn' (≥ FAIR), 'bad', or 'na' (no figure: e.g. no broadcast in the scenario)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        return "na"
    return "ok" if ratio >= GOOD else "warn" if ratio >= FAIR else "bad"


def _cell(c: dict[str, Any]) -> Cell:
    cap = c.get("capacity") or {}
    b = cap.get("binding")
    binding = f"{b.get('component')} {b.get('id')} {b.get('metric')}" if isinstance(b, dict) and b.get("component") else None
    conn = (c.get("connections") or {}).get("connect_ratio")
    deliv = (c.get("broadcast") or {}).get("delivery_ratio")
    dist = c.get("nodes") if isinstance(c.get("nodes"), dict) else {}
    used = sum(1 for v in dist.values() if isinstance(v, int | float) and v > 0) if dist else None
    configured = (c.get("config") or {}).get("nodes")
    return Cell(name=str(c.get("name")), status=str(c.get("status")), connect_ratio=_ratio(conn),
                delivery_ratio=_ratio(deliv), connect_class=outcome_class(conn), delivery_class=outcome_class(deliv),
                binding=cap.get("binding_summary") or binding if binding else None,
                users_per_node=_ratio(cap.get("users_per_node")), nodes_used=used,
                nodes_configured=configured if isinstance(configured, int) and not isinstance(configured, bool) else None)


def _ratio(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def matrix(configs: list[dict[str, Any]], max_columns: int = MAX_COLUMNS) -> Matrix | None:
    """The matrix over the configurations' axes; None without configurations.

    The first axis is the rows, the others the columns while their product fits max_columns; what does not
    fit moves into the rows. Without any differing axis each configuration is its own row. Two
    configurations on the same cell (an axis the labels do not show, e.g. a fault plan) keep the first and the
    rest get a row of their own, named, so none is hidden.
    """
    if not configs:
        return None
    keys = axes(configs)
    if not keys:
        rows = [(str(c.get("name")),) for c in configs]
        m = Matrix(("configuration",), (), rows, [()])
        for r, c in zip(rows, configs, strict=True):
            m.cells[(r, ())] = _cell(c)
        return m
    row_keys, col_keys = [keys[0]], list(keys[1:])
    while col_keys and _count(configs, col_keys) > max_columns:
        row_keys.append(col_keys.pop(0))
    m = Matrix(tuple(row_keys), tuple(col_keys), _values(configs, row_keys), _values(configs, col_keys))
    for c in configs:
        r, col = tuple(label(c, k) for k in row_keys), tuple(label(c, k) for k in col_keys)
        if (r, col) in m.cells:  # same labels twice: its own row, by name
            r = (*r[:-1], f"{r[-1]} ({c.get('name')})")
            m.rows.append(r)
        m.cells[(r, col)] = _cell(c)
    return m


def _values(configs: list[dict[str, Any]], keys: list[str]) -> list[tuple[str, ...]]:
    """The combinations of keys' values that occur, in the order the configurations first show them."""
    seen: dict[tuple[str, ...], None] = {}
    for c in configs:
        seen.setdefault(tuple(label(c, k) for k in keys), None)
    return list(seen)


def _count(configs: list[dict[str, Any]], keys: list[str]) -> int:
    return len({tuple(label(c, k) for k in keys) for c in configs})


def nodes_needed(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes-needed line of each configuration that has one, configurations with the same line said once:
    [{"configs": [names], "line": text}] (configurations that differ only in node count share the scale-out
    model, so they usually share the line)."""
    out: dict[str, list[str]] = {}
    for c in configs:
        cap = c.get("capacity") or {}
        line = (cap.get("nodes_needed_by_resource") or {}).get("line") or _slo_line(cap)
        if line:
            out.setdefault(str(line), []).append(str(c.get("name")))
    return [{"configs": names, "line": line} for line, names in out.items()]


def _slo_line(cap: dict[str, Any]) -> str | None:
    """Without server telemetry, the SLO knee's own answer: 'by the SLO knee (150 users per node, no server
    telemetry): 10,000 users → 89; …', a knee not reached said as an upper bound; None without a knee."""
    nn, per = cap.get("nodes_needed"), _ratio(cap.get("capacity_per_node"))
    if not isinstance(nn, dict) or not nn or per is None:
        return None
    parts = [f"{int(float(t)):,} users → {n:,}" for t, n in nn.items() if isinstance(n, int) and not isinstance(n, bool)]
    if not parts:
        return None
    bound = "" if cap.get("reached") else " (the knee was not reached: upper bounds)"
    return f"by the SLO knee ({per:,.0f} users per node, no server telemetry): " + "; ".join(parts) + bound


_METRICS = (("connect", "connect_class", "every session connects"),
            ("delivery", "delivery_class", "every broadcast reaches its room"))


def findings(configs: list[dict[str, Any]]) -> list[str]:
    """What the matrix says, in a sentence per outcome: the axis values under which it always holds.

    'every session connects (≥ 99 %) whenever policy is cookie or source, or transports is websocket; not in
    4 of 16 configurations'. Only values under which every configuration with a figure is green are named
    (a value shared by all configurations says nothing and is left out); none when the outcome holds
    everywhere, nowhere, or has no figure. Delivery is judged only where sessions reached every node.
    """
    keys = axes(configs)
    cells = [(_cell(c), c) for c in configs]
    out = []
    for metric, attr, what in _METRICS:
        # a broadcast on a cluster whose sessions all met on one node crosses no node: it says nothing here
        judged = [(cl, c) for cl, c in cells if getattr(cl, attr) != "na"
                  and not (metric == "delivery" and cl.spread_short)]
        if not judged:
            continue
        bad = [cl for cl, _ in judged if getattr(cl, attr) != "ok"]
        if not bad:
            out.append(f"In all {len(judged)} configurations {what} (≥ {GOOD:.0%}).")
            continue
        if len(bad) == len(judged):
            out.append(f"In none of the {len(judged)} configurations {what} (≥ {GOOD:.0%}).")
            continue
        # the values under which the outcome always holds, widest first; a value whose configurations a wider
        # one already covers (e.g. one only ever beside adapter redis) is implied and not named
        cands = []
        for k in keys:
            for v in dict.fromkeys(label(c, k) for _, c in judged):
                with_v = [cl for cl, c in judged if label(c, k) == v]
                if all(getattr(cl, attr) == "ok" for cl in with_v):
                    cands.append((k, v, {id(cl) for cl in with_v}))
        named: dict[str, list[str]] = {}
        covered: set[int] = set()
        for k, v, ids in sorted(cands, key=lambda x: -len(x[2])):
            if not ids <= covered:
                named.setdefault(k, []).append(v)
                covered |= ids
        conds = [f"{AXIS_TITLES.get(k, k)} is {' or '.join(named[k])}" for k in keys if k in named]
        when = (" whenever " + ", or ".join(conds)) if conds else ""
        out.append(f"{what[0].upper()}{what[1:]} (≥ {GOOD:.0%}){when}; not in {len(bad)} of {len(judged)} configurations.")
    short = [cl for cl, _ in cells if cl.spread_short]
    if short:
        out.append(f"{len(short)} configuration(s) used fewer nodes than they had (e.g. {short[0].name}: "
                   f"{short[0].nodes_used} of {short[0].nodes_configured}): their sessions all met on the same node(s), "
                   "so they say nothing about a spread cluster (their delivery is left out of the sentence above).")
    return out


def usl_over_nodes(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct USL-over-node-count fits of the configurations (capacity.usl_nodes), each once."""
    seen: dict[tuple[str, ...], dict[str, Any]] = {}
    for c in configs:
        u = (c.get("capacity") or {}).get("usl_nodes")
        if isinstance(u, dict) and u.get("points"):
            seen.setdefault(tuple(str(p.get("config")) for p in u["points"]), u)
    return list(seen.values())
