"""The recipe table: one row per multi-node recipe (a balancer and its policy), one yes/no per question it must answer.

Why its own view: a campaign that compares recipes (campaigns/recipes.toml: nginx ip_hash, HAProxy cookie, ...)
is read as "which documented setup can I deploy, and what does it need?", recipe by recipe. The answer matrix
shows every configuration; this table folds each recipe's configurations into the five questions the
Socket.IO docs raise: do browser clients (polling+websocket) connect, do websocket-only clients, does a room
broadcast reach every member with the in-memory adapter and with Redis, and does the balancer spread sessions
over the nodes. Each cell is a yes/no, the number behind it and the same green/amber/red as the answer matrix.

Pure functions of summary.json's config entries (plain dicts) to a DataFrame, and of that DataFrame to Markdown
(README's table, `sioscale report --markdown-recipes`); the template only lays the rows out.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from contract.config import REDIS_ADAPTERS

from . import metrics as M
from .answer import FAIR, GOOD, outcome_class

RECIPE_NAMES: dict[tuple[str, str], str] = {
    ("nginx", "ip-hash"): "nginx ip_hash",
    ("nginx", "hash-consistent"): "nginx hash $remote_addr consistent",
    ("nginx", "header-hash"): "nginx hash $http_x_sio_user consistent",
    ("nginx", "l7-round-robin"): "nginx round robin",
    ("nginx", "l4-round-robin"): "nginx stream round robin",
    ("nginx", "least-conn"): "nginx least_conn",
    ("haproxy", "cookie"): "HAProxy cookie SRV insert",
    ("haproxy", "source"): "HAProxy balance source",
    ("haproxy", "l7-round-robin"): "HAProxy balance roundrobin (mode http)",
    ("haproxy", "l4-round-robin"): "HAProxy balance roundrobin (mode tcp)",
    ("haproxy", "leastconn"): "HAProxy balance leastconn",
    ("caddy", "cookie"): "Caddy lb_policy cookie",
    ("caddy", "ip-hash"): "Caddy lb_policy ip_hash",
    ("caddy", "l7-round-robin"): "Caddy lb_policy round_robin",
    ("traefik", "cookie"): "Traefik sticky cookie",
    ("traefik", "l7-round-robin"): "Traefik round robin",
    ("traefik", "l4-round-robin"): "Traefik TCP round robin",
    ("none", "direct"): "one node, no balancer",
}
"""Each recipe as its balancer's documentation writes it; a pair not listed reads 'balancer policy'."""
CONTROL_POLICIES = ("l7-round-robin", "l4-round-robin")
"""A balancer's round robin is the negative control: no stickiness, so browser clients are expected to fail."""
SPREAD_P = 0.01
"""χ² p-value below which a spread is called uneven (analysis.metrics.node_balance: not chance)."""
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("polling", "works with polling+websocket?"),
    ("websocket", "works websocket-only?"),
    ("memory", "broadcasts complete without Redis?"),
    ("redis", "broadcasts complete with Redis?"),
    ("spread", "spread across nodes? (χ²)"),
)
"""The table's columns after the recipe: key (the DataFrame's column prefix) and title."""
_POLL, _WS = ("polling", "websocket"), ("websocket",)


def recipe_key(config: dict[str, Any]) -> tuple[str, str]:
    """(balancer, policy) of a summary.json config entry ('?' for a value the entry does not have)."""
    block = config.get("config") if isinstance(config.get("config"), dict) else {}
    return str(block.get("balancer") or "?"), str(block.get("policy") or "?")


def recipe_name(balancer: str, policy: str) -> str:
    """The documented name of a recipe ('nginx ip_hash'), else 'balancer policy'."""
    return RECIPE_NAMES.get((balancer, policy), f"{balancer} {policy}")


def applies(configs: list[dict[str, Any]]) -> bool:
    """Whether the report leads with the recipe table: its configurations differ by balancer or policy."""
    return len({recipe_key(c) for c in configs if isinstance(c, dict)}) > 1


def recipe_table(configs: list[dict[str, Any]], sources: dict[str, str | None] | None = None) -> pd.DataFrame:
    """One row per recipe, in the order the configurations first show it, the round robins (controls) last.

    Columns: recipe (documented name), balancer, policy, control (a round robin), configs (names), sources (the
    client source ranges its configurations ran with, from `sources` {config name: meta.json load.source_range};
    a source-IP hash needs several, or every user is one client to it), and per
    question q of QUESTIONS: q (True / False / None = not measured), q_value (the ratio, or the worst χ² p for
    spread), q_num / q_den (connected / attempted, delivered / expected, nodes used / nodes), q_class (ok, warn,
    bad, na) and q_text ("yes · 100% (60/60)"). A question is yes when its ratio is at least GOOD, as a green
    cell of the answer matrix.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in configs:
        if isinstance(c, dict):
            groups.setdefault(recipe_key(c), []).append(c)
    rows = []
    for (balancer, policy), cs in groups.items():
        row: dict[str, Any] = {"recipe": recipe_name(balancer, policy), "balancer": balancer, "policy": policy,
                               "control": policy in CONTROL_POLICIES, "configs": [str(c.get("name")) for c in cs],
                               "sources": _sources(cs, sources or {})}
        row.update(_prefixed("polling", _connects([c for c in cs if _transports(c) == _POLL])))
        row.update(_prefixed("websocket", _connects([c for c in cs if _transports(c) == _WS])))
        row.update(_prefixed("memory", _delivers([c for c in cs if _adapter(c) == "memory"])))
        row.update(_prefixed("redis", _delivers([c for c in cs if _adapter(c) in REDIS_ADAPTERS])))
        row.update(_prefixed("spread", _spread(cs)))
        rows.append(row)
    rows.sort(key=lambda r: r["control"])  # the recipes, then the negative controls (each in first-seen order)
    cols = ["recipe", "balancer", "policy", "control", "configs", "sources",
            *(f"{q}{s}" for q, _ in QUESTIONS for s in ("", "_value", "_num", "_den", "_class", "_text"))]
    return pd.DataFrame(rows, columns=cols)


def _sources(cs: list[dict[str, Any]], sources: dict[str, str | None]) -> list[str]:
    """The distinct source ranges the configurations ran with (none: one address, the generator's)."""
    return list(dict.fromkeys(str(sources[n]) for n in (str(c.get("name")) for c in cs) if sources.get(n)))


def _prefixed(q: str, cell: dict[str, Any]) -> dict[str, Any]:
    return {(q if k == "ok" else f"{q}_{k}"): v for k, v in cell.items()}


def _cell(ok: bool | None, value: float | None, num: int | None, den: int | None, cls: str, text: str) -> dict[str, Any]:
    return {"ok": ok, "value": value, "num": num, "den": den, "class": cls, "text": text}


def _ratio_cell(num: int, den: int, what: str) -> dict[str, Any]:
    """yes/no from num/den judged as the answer matrix judges it: '100% (60/60)'."""
    if den <= 0:
        return _cell(None, None, None, None, "na", f"— ({what})")
    r = num / den
    ok = r >= GOOD
    return _cell(ok, r, num, den, outcome_class(r), f"{'yes' if ok else 'no'} · {_pct(r)} ({num:,}/{den:,})")


def _connects(cs: list[dict[str, Any]]) -> dict[str, Any]:
    """Connected / attempted sessions over the configurations (both adapters: routing does not depend on it)."""
    if not cs:
        return _cell(None, None, None, None, "na", "— (not in this campaign)")
    num = sum(_count((c.get("connections") or {}).get("connected")) for c in cs)
    den = sum(_count((c.get("connections") or {}).get("attempted")) for c in cs)
    return _ratio_cell(num, den, "no connect attempt: not run")


def _delivers(cs: list[dict[str, Any]]) -> dict[str, Any]:
    """Broadcast receipts / expected over the configurations whose sessions reached every node.

    Why only those: a room whose members all sit on one node is complete without any adapter, which says
    nothing about a cluster (the answer's findings leave such configurations out the same way).
    """
    if not cs:
        return _cell(None, None, None, None, "na", "— (not in this campaign)")
    spread = [c for c in cs if not _short(c)]
    num = sum(_count((c.get("broadcast") or {}).get("delivered")) for c in spread)
    den = sum(_count((c.get("broadcast") or {}).get("expected")) for c in spread)
    if den <= 0:
        short = [c for c in cs if _short(c)]
        used = max((sum(1 for v in _nodes(c).values() if v > 0) for c in short), default=0)
        why = f"all on {used} of {_configured(short[0])} nodes" if short else "no broadcast measured"
        return _cell(None, None, None, None, "na", f"— ({why})")
    return _ratio_cell(num, den, "no broadcast measured")


def _spread(cs: list[dict[str, Any]]) -> dict[str, Any]:
    """Nodes used and the χ² test against uniform (analysis.metrics.node_balance), per configuration; the worst shows,
    with how many of the configurations were short of nodes or uneven.

    Judged over the configurations whose sessions mostly connected (≥ FAIR; all with sessions when none did):
    a round robin's 1 connected session of 60 tells nothing about its spread. Per configuration and not pooled:
    the same users hash to the same nodes in every configuration, so pooling would count one assignment 4 times.
    """
    withs = [c for c in cs if sum(_nodes(c).values()) > 0]
    judged = [c for c in withs if _ratio((c.get("connections") or {}).get("connect_ratio")) >= FAIR] or withs
    if not judged:
        return _cell(None, None, None, None, "na", "— (no connected session)")
    dist = pd.DataFrame([{"config": str(i), "node": n, "sessions": s}
                         for i, c in enumerate(judged) for n, s in _nodes(c).items()])
    bal = M.node_balance(dist).set_index("config")
    seen = []  # (used, of, p) per judged configuration
    for i, c in enumerate(judged):
        b = bal.loc[str(i)]
        p = float(b["p_uniform"]) if not math.isnan(float(b["p_uniform"])) else 1.0
        seen.append((int(b["nodes_used"]), max(_configured(c), len(_nodes(c))), p))
    used, of, p = min(seen, key=lambda x: (x[0] - x[1], x[2]))  # fewest nodes first, then the smallest p
    ok = bool(used >= of and p >= SPREAD_P)
    short = sum(1 for u, o, _ in seen if u < o)
    uneven = sum(1 for u, o, q in seen if u >= o and q < SPREAD_P)
    pt = f"p {'< 0.001' if p < 0.001 else f'= {p:.2g}'}"
    if ok:
        text = f"yes · {used} of {of} nodes, {pt}"
    elif short:
        text = f"no · {used} of {of} nodes" + (f" in {short} of {len(seen)} configs" if short < len(seen) else "")
    else:
        text = f"no · uneven in {uneven} of {len(seen)} configs, {pt}"
    return _cell(ok, p, used, of, "ok" if ok else "warn" if not short else "bad", text)


def _transports(c: dict[str, Any]) -> tuple[str, ...]:
    tr = (c.get("config") or {}).get("transports")
    return tuple(str(t) for t in tr) if isinstance(tr, list | tuple) else ()


def _adapter(c: dict[str, Any]) -> str:
    return str((c.get("config") or {}).get("adapter"))


def _nodes(c: dict[str, Any]) -> dict[str, int]:
    """Sessions per node (summary.json `nodes`, nodes without a session included), numbers only."""
    n = c.get("nodes")
    return {str(k): _count(v) for k, v in n.items()} if isinstance(n, dict) else {}


def _configured(c: dict[str, Any]) -> int:
    return _count((c.get("config") or {}).get("nodes"))


def _short(c: dict[str, Any]) -> bool:
    """Sessions reached fewer nodes than the cluster has (all on one node: nothing crossed nodes)."""
    used = sum(1 for v in _nodes(c).values() if v > 0)
    return 0 < used < _configured(c)


def _count(v: Any) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else 0


def _ratio(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else 0.0


def _pct(r: float) -> str:
    """100%, 34.7%, 2%: the report's percent format (analysis.report's pct filter: one decimal unless whole)."""
    p = 100 * r
    return f"{p:.1f}%" if 0 < p < 99.95 and abs(p - round(p)) >= 0.05 else f"{p:.0f}%"


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The table as summary.json's `recipes` list and the template's rows: plain values, None for missing,
    counts as ints (a column with a missing count is float in the DataFrame)."""
    out = []
    for r in table.to_dict("records"):
        row = {}
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                v = None
            elif k.endswith(("_num", "_den")) and v is not None:
                v = int(v)
            elif hasattr(v, "item"):  # a numpy scalar
                v = v.item()
            row[k] = v
        out.append(row)
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown, one line per recipe (README's "Recipes" table)."""
    head = ["recipe", *(t for _, t in QUESTIONS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        name = f"{r['recipe']} (control)" if r["control"] else str(r["recipe"])
        cells = [_md(str(r[f"{q}_text"])) for q, _ in QUESTIONS]
        lines.append("| " + " | ".join([name.replace("|", "\\|"), *cells]) + " |")
    by_range: dict[str, list[str]] = {}
    for _, r in table.iterrows():
        for rng in r["sources"] or []:
            by_range.setdefault(rng, []).append(str(r["recipe"]))
    notes = [f"\n{', '.join(names)}: client sources {rng} (`--sio-source-range`)." for rng, names in by_range.items()]
    return "\n".join(lines) + "\n" + "".join(notes) + ("\n" if notes else "")


def _md(text: str) -> str:
    """A cell for Markdown: its yes/no in bold, the number after it."""
    verdict, sep, rest = text.partition(" · ")
    return (f"**{verdict}** {rest}" if sep else text).replace("|", "\\|")
