"""Plain-word verdicts generated from a config's summary numbers.

The verdict table is what most readers look at first, so every sentence is computed from the
same summary.json figures the tables show (never typed in), and names the fix when there is one.
"""

from __future__ import annotations

import math
from typing import Any

from contract.fmt import num

from .capacity import GENERATOR_SATURATED

GOOD_RATIO = 0.99
BAD_RATIO = 0.5
HASH_POLICIES = ("source", "ip-hash")  # balancers that pick the node from the client address


def _pct(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    v = 100 * x
    return f"{v:.0f}%" if v in (0, 100) or abs(v - round(v)) < 0.05 else f"{v:.1f}%"


def _external(cfg: dict[str, Any]) -> bool:
    """A run against `--url`: sioscale did not build the target, so adapter/server/nodes are unknown (None)."""
    c = cfg.get("config") or {}
    return str(cfg.get("name") or "").startswith("external") or c.get("balancer") == "external"


def _who(cfg: dict[str, Any]) -> str:
    """'polling+websocket behind haproxy-cookie' — or 'against the external target' when sioscale did not build it."""
    c = cfg.get("config") or {}
    tr = "+".join(str(t) for t in (c.get("transports") or [])) or "?"
    if _external(cfg):
        return f"{tr} against the external target"
    bal = "-".join(str(x) for x in (c.get("balancer"), c.get("policy")) if x) or "an unknown balancer"
    return f"{tr} behind {bal}"


def describe(cfg: dict[str, Any]) -> str:
    """'polling+websocket behind haproxy l4-round-robin, memory adapter, 3 python nodes'; unknown labels left out."""
    c = cfg.get("config") or {}
    tr = "+".join(str(t) for t in (c.get("transports") or [])) or "?"
    if _external(cfg):
        parts = [f"{tr} against an external target (adapter, server and nodes unknown)"]
    else:
        parts = [f"{tr} behind " + (" ".join(str(x) for x in (c.get("balancer"), c.get("policy")) if x)
                                    or "an unknown balancer")]
    if c.get("adapter"):
        parts.append(f"{c['adapter']} adapter")
    if c.get("nodes") or c.get("server"):
        parts.append(" ".join(str(x) for x in (c.get("nodes"), c.get("server")) if x) + " node(s)")
    return ", ".join(parts) + (" (TLS)" if c.get("tls") else "")


def config_verdicts(cfg: dict[str, Any], nodes_used_note: bool = True) -> list[str]:
    """Sentences for one config entry of summary.json (before `verdicts` is filled in)."""
    who = _who(cfg)
    out = status_verdicts(cfg, who)
    if cfg.get("status") == "failed" and not cfg.get("events"):
        return out
    conn = cfg.get("connections") or {}
    if not conn.get("attempted"):
        return [*out, f"{who}: no connection attempts recorded — nothing to judge (see the loader warnings)"]
    out.append(connection_verdict(cfg, who))
    out.extend(upgrade_verdicts(cfg))
    out.extend(broadcast_verdicts(cfg))
    out.extend(redis_gain_verdicts(cfg))
    out.extend(node_verdicts(cfg, nodes_used_note))
    out.extend(generator_verdicts(cfg))
    out.extend(capacity_verdicts(cfg))
    return out


def connection_verdict(cfg: dict[str, Any], who: str) -> str:
    """'<who>: NN% connect success', with the session-unknown evidence and the sticky fix when it is low."""
    c = cfg.get("config") or {}
    conn = cfg.get("connections") or {}
    cr = num(conn.get("connect_ratio"))
    sticky_fix = "needs sticky sessions (cookie / source hash) or websocket-only clients"
    su = (cfg.get("failures") or {}).get("session_unknown", 0)
    ns = cfg.get("node_switch") or {}
    attribution = num(ns.get("share"))
    if cr is not None and cr < BAD_RATIO:
        why = ""
        if su:
            why = f" ({su} 'session unknown' failures"
            if attribution is not None:
                # measured over the polling 400s only: a bare 403 on the WebSocket probe is called
                # session-unknown by the client only after a node change, so it cannot count as evidence
                why += (f"; {_pct(attribution)} of the {ns.get('polling')} polling requests refused with 400 "
                        "came from sessions that met two nodes")
            if ns.get("probe"):
                why += f"; {ns['probe']} WebSocket-probe refusals counted apart"
            why += ")"
        fix = f" — {sticky_fix}" if su and "polling" in (c.get("transports") or []) else ""
        return f"{who}: {_pct(cr)} connect success{why}{fix}"
    if cr is not None and cr < GOOD_RATIO:
        return (f"{who}: {_pct(cr)} connect success — {conn.get('attempted', 0) - conn.get('connected', 0)} "
                f"of {conn.get('attempted')} attempts failed" + (f"; {sticky_fix}" if su else ""))
    return f"{who}: {_pct(cr)} connect success"


def upgrade_verdicts(cfg: dict[str, Any]) -> list[str]:
    """[] or the one sentence on connected sessions that did not upgrade to WebSocket."""
    ur = num((cfg.get("connections") or {}).get("upgrade_ratio"))
    if ur is None or ur >= GOOD_RATIO:
        return []
    su = (cfg.get("failures") or {}).get("session_unknown", 0)
    return [f"only {_pct(ur)} of connected sessions upgraded to WebSocket"
            + (" — the upgrade request reached another node" if su else "")]


def broadcast_verdicts(cfg: dict[str, Any]) -> list[str]:
    """[] or the one sentence on broadcast delivery (the memory adapter across nodes called out)."""
    c = cfg.get("config") or {}
    b = cfg.get("broadcast") or {}
    dr = num(b.get("delivery_ratio"))
    if dr is None:
        return []
    nodes = c.get("nodes")
    lat = (cfg.get("broadcast") or {}).get("latency_ms") or {}
    p95 = num(lat.get("p95"))
    extra = f", p95 {p95:.0f} ms" if p95 is not None else ""
    if c.get("adapter") == "memory" and dr < GOOD_RATIO and (nodes or 1) > 1:
        return [f"memory adapter: {_pct(dr)} of broadcast deliveries across {nodes} nodes{extra} — "
                "rooms span nodes: use the Redis adapter"]
    one_node = (c.get("adapter") == "memory" and (nodes or 1) > 1
                and sum(1 for v in (cfg.get("nodes") or {}).values() if v) == 1)
    whose = (f"{c['adapter']} adapter" if c.get("adapter")
             else "external target" if _external(cfg) else "unknown adapter")
    return [f"{whose}: {_pct(dr)} of broadcast deliveries{extra}"
            + (" — only because every session is on one node; rooms spanning nodes would need Redis"
               if one_node else "")]


def redis_gain_verdicts(cfg: dict[str, Any]) -> list[str]:
    """[] or the one sentence comparing this Redis config with its memory twin."""
    gain = cfg.get("redis_vs_memory")
    if not gain:
        return []
    return [f"Redis adapter vs memory: delivery {_pct(gain.get('ratio_memory'))} → "
            f"{_pct(gain.get('ratio_redis'))}, p95 delivery latency "
            f"{'+' if (gain.get('p95_cost_ms') or 0) >= 0 else ''}{(gain.get('p95_cost_ms') or 0):.1f} ms"]


def node_verdicts(cfg: dict[str, Any], nodes_used_note: bool = True) -> list[str]:
    """[] or the one sentence on the spread over nodes: all on one node, or uneven."""
    c = cfg.get("config") or {}
    imb = num(cfg.get("imbalance"))
    nodes_n = c.get("nodes") or 0
    counts = cfg.get("nodes") or {}
    used = sum(1 for v in counts.values() if v)
    sessions = sum(int(v or 0) for v in counts.values())
    # One node out of several only means something with enough sessions to have spread.
    if nodes_used_note and nodes_n and nodes_n > 1 and used == 1 and sessions >= 2 * nodes_n:
        why = ("the balancer's hash sees one client address — spread source IPs (--sio-source-range) "
               "or use cookie stickiness" if c.get("policy") in HASH_POLICIES else "the balancer did not spread them")
        return [f"all {sessions} sessions landed on one node of {nodes_n} ({c.get('policy') or 'policy unknown'}): {why}"]
    if imb is not None and imb > 1.5 and nodes_n > 1 and sessions >= 2 * nodes_n:
        return [f"uneven spread over nodes: the busiest node has {imb:.1f}× the mean"]
    return []


def capacity_verdicts(cfg: dict[str, Any]) -> list[str]:
    """[] or the one sentence on users per node within the SLO (and why it is only a lower bound)."""
    cap = cfg.get("capacity") or {}
    if cap.get("users_per_node") is None:
        return []
    lim = f" (next step: {cap['limit']})" if cap.get("limit") else ""
    at_least = "" if cap.get("reached", True) else "at least "
    if cap.get("reached", True):
        why = ""
    elif cap.get("generator_stage") is not None:
        why = " (the load generator saturated before any server limit: spread it over more processes to find the knee)"
    else:
        why = " (no step broke the SLO: load more to find the knee)"
    busiest = num(cap.get("capacity_per_node"))
    spread = (f" ({cap['users_per_node']:.0f} on average; the sessions were spread unevenly)"
              if busiest is not None and busiest > 1.05 * cap["users_per_node"] else "")
    per_node = busiest if busiest is not None else cap["users_per_node"]
    return [f"capacity: {at_least}{per_node:.0f} users per node within the SLO{spread}{lim}{why}"]


def status_verdicts(cfg: dict[str, Any], who: str) -> list[str]:
    """A config that is not ok says so first (contract.status), so no reader takes its figures for the
    whole run's: [] for ok, "did not run" for a failed config without rows, else the status and why."""
    status = str(cfg.get("status") or "ok")
    if status == "ok":
        return []
    why = "; ".join(str(r) for r in cfg.get("status_reasons") or []) or cfg.get("error") or "no reason recorded"
    if status == "failed" and not cfg.get("events"):
        return [f"{who}: did not run — {why}"]
    return [f"{who}: {status.upper()} — {why} (the figures below cover only what was measured)"]


_GEN_FIX = "use --processes or more machines"


def generator_verdicts(cfg: dict[str, Any]) -> list[str]:
    """Say plainly where the numbers measure the load generator rather than the servers."""
    cap = cfg.get("capacity") or {}
    bound = [st for st in (cap.get("table") or []) if st.get("generator_bound")]
    if len(bound) == 1:
        st = bound[0]
        return [f"stage {st['stage']} ({st['users']} users): the load generator was at "
                f"{st['generator_cpu_max']:.0f}% CPU — this stage measures the generator, not the servers; {_GEN_FIX}"]
    if bound:
        cpus = [st["generator_cpu_max"] for st in bound]
        span = f"{min(cpus):.0f}–{max(cpus):.0f}%" if round(min(cpus)) != round(max(cpus)) else f"{max(cpus):.0f}%"
        return [f"stages {', '.join(str(st['stage']) for st in bound)} ({bound[0]['users']}–{bound[-1]['users']} users): "
                f"the load generator was at {span} CPU — these stages measure the generator, not the servers; {_GEN_FIX}"]
    gen = cfg.get("generator") or {}
    if gen.get("saturated"):
        where = " outside the stage holds (ramps, start or stop)" if cap.get("table") else ""
        return [f"the load generator reached {gen['cpu_max']:.0f}% CPU{where} ({gen.get('saturated_samples', 0)} "
                f"process-second(s) ≥ {GENERATOR_SATURATED:.0f}%) — latencies then include the generator's own delay; {_GEN_FIX}"]
    return []
