"""Plain-word verdicts generated from a config's summary numbers.

The verdict table is what most readers look at first, so every sentence is computed from the
same summary.json figures the tables show (never typed in), and names the fix when there is one.
"""

from __future__ import annotations

import math
from typing import Any

from contract.fmt import num

from .capacity import GENERATOR_SATURATED
from .recovery import FAULT_WORDS, bad_offset_verdict, fault_verdict, recovery_verdict
from .resources import binding_text
from .sessions import idle_timeout_verdict, sessions_verdict
from .summary import ConfigEntry, NodeSwitch

Cfg = ConfigEntry | dict[str, Any]
"""A config entry: typed, or as summary.json has it (read with ConfigEntry.from_json)."""

GOOD_RATIO = 0.99
BAD_RATIO = 0.5
HASH_POLICIES = ("source", "ip-hash")  # balancers that pick the node from the client address


def _pct(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    v = 100 * x
    return f"{v:.0f}%" if v in (0, 100) or abs(v - round(v)) < 0.05 else f"{v:.1f}%"


def _typed(cfg: Cfg) -> ConfigEntry:
    return cfg if isinstance(cfg, ConfigEntry) else ConfigEntry.from_json(cfg)


def _transports(cfg: ConfigEntry) -> str:
    return "+".join(str(t) for t in (cfg.config.transports or [])) or "?"


def _external(cfg: ConfigEntry) -> bool:
    """A run against `--url`: sioscale did not build the target, so adapter/server/nodes are unknown (None)."""
    return str(cfg.name or "").startswith("external") or cfg.config.balancer == "external"


def _who(cfg: ConfigEntry) -> str:
    """'polling+websocket behind haproxy-cookie' — or 'against the external target' when sioscale did not build it."""
    c = cfg.config
    tr = _transports(cfg)
    if _external(cfg):
        return f"{tr} against the external target"
    bal = "-".join(str(x) for x in (c.balancer, c.policy) if x) or "an unknown balancer"
    return f"{tr} behind {bal}"


def describe(entry: Cfg) -> str:
    """'polling+websocket behind haproxy l4-round-robin, memory adapter, 3 python nodes'; unknown labels left out."""
    cfg = _typed(entry)
    c = cfg.config
    tr = _transports(cfg)
    if _external(cfg):
        parts = [f"{tr} against an external target (adapter, server and nodes unknown)"]
    else:
        parts = [f"{tr} behind " + (" ".join(str(x) for x in (c.balancer, c.policy) if x) or "an unknown balancer")]
    if c.adapter:
        parts.append(f"{c.adapter} adapter")
    if c.nodes or c.server:
        parts.append(" ".join(str(x) for x in (c.nodes, c.server) if x) + " node(s)")
    return ", ".join(parts) + (" (TLS)" if c.tls else "")


def config_verdicts(entry: Cfg, nodes_used_note: bool = True) -> list[str]:
    """Sentences for one config entry of summary.json (before `verdicts` is filled in)."""
    cfg = _typed(entry)
    who = _who(cfg)
    out = status_verdicts(cfg, who)
    if cfg.status == "failed" and not cfg.events:
        return out
    if not cfg.connections.attempted:
        return [*out, f"{who}: no connection attempts recorded — nothing to judge (see the loader warnings)"]
    out.append(connection_verdict(cfg, who))
    died = sessions_verdict(cfg.sessions, num(cfg.connections.connect_ratio))
    if died:
        out.append(f"{who}: {died}{_faults_note(cfg.faults)}")
    idle = idle_timeout_verdict(cfg.options, cfg.sessions)
    if idle:
        out.append(f"{who}: {idle}")
    out.extend(upgrade_verdicts(cfg))
    out.extend(broadcast_verdicts(cfg))
    out.extend(redis_gain_verdicts(cfg))
    out.extend(node_verdicts(cfg, nodes_used_note))
    out.extend(generator_verdicts(cfg))
    out.extend(capacity_verdicts(cfg))
    out.extend(resource_verdicts(cfg))
    said = recovery_verdict(cfg.recovery, cfg.config.adapter)
    out = [*out, said] if said else out
    return out + _fault_verdicts(cfg)


def _faults_note(faults: Any) -> str:
    """'; the run's own faults ended sessions: blip, restart_node n2, stop_node n3 (see Failover and recovery)'
    when faults that end sessions were applied: the dying sessions are the experiment, not an idle timeout."""
    done = [f"{f.get('action')}{' ' + str(f['target']) if f.get('target') else ''}" for f in faults or ()
            if isinstance(f, dict) and f.get("action") in FAULT_WORDS and not f.get("error")]
    return f"; the run's own faults ended sessions: {', '.join(done)} (see Failover and recovery)" if done else ""


def _fault_verdicts(cfg: Any) -> list[str]:
    """One sentence per fault of recovery.by_fault (adapter x recovery x fault), then a server that sent
    offsets it cannot honour."""
    rec = cfg.recovery if isinstance(cfg.recovery, dict) else {}
    on = (cfg.options or {}).get("recovery") if isinstance(cfg.options, dict) else None
    out = [fault_verdict(f, cfg.config.adapter, on) for f in rec.get("by_fault") or () if isinstance(f, dict)]
    bad = bad_offset_verdict(rec, cfg.config.adapter)
    return [*out, bad] if bad else out


def connection_verdict(entry: Cfg, who: str) -> str:
    """'<who>: NN% connect success', with the session-unknown evidence and the sticky fix when it is low."""
    cfg = _typed(entry)
    conn = cfg.connections
    cr = num(conn.connect_ratio)
    sticky_fix = "needs sticky sessions (cookie / source hash) or websocket-only clients"
    su = cfg.failures.get("session_unknown", 0)
    ns = cfg.node_switch or NodeSwitch()
    attribution = num(ns.share)
    if cr is not None and cr < BAD_RATIO:
        why = ""
        if su:
            why = f" ({su} 'session unknown' failures"
            if attribution is not None:
                # measured over the polling 400s only: a bare 403 on the WebSocket probe is called
                # session-unknown by the client only after a node change, so it cannot count as evidence
                why += (f"; {_pct(attribution)} of the {ns.polling} polling requests refused with 400 "
                        "came from sessions that met two nodes")
            if ns.probe:
                why += f"; {ns.probe} WebSocket-probe refusals counted apart"
            why += ")"
        fix = f" — {sticky_fix}" if su and "polling" in (cfg.config.transports or []) else ""
        return f"{who}: {_pct(cr)} connect success{why}{fix}"
    if cr is not None and cr < GOOD_RATIO:
        return (f"{who}: {_pct(cr)} connect success — {conn.attempted - conn.connected} "
                f"of {conn.attempted} attempts failed" + (f"; {sticky_fix}" if su else ""))
    return f"{who}: {_pct(cr)} connect success"


def upgrade_verdicts(entry: Cfg) -> list[str]:
    """[] or the one sentence on connected sessions that did not upgrade to WebSocket."""
    cfg = _typed(entry)
    ur = num(cfg.connections.upgrade_ratio)
    if ur is None or ur >= GOOD_RATIO:
        return []
    su = cfg.failures.get("session_unknown", 0)
    return [f"only {_pct(ur)} of connected sessions upgraded to WebSocket"
            + (" — the upgrade request reached another node" if su else "")]


def broadcast_verdicts(entry: Cfg) -> list[str]:
    """[] or the one sentence on broadcast delivery (the memory adapter across nodes called out)."""
    cfg = _typed(entry)
    c = cfg.config
    dr = num(cfg.broadcast.delivery_ratio)
    if dr is None:
        return []
    nodes = c.nodes
    lat = cfg.broadcast.latency_ms
    p95 = num(lat.p95) if lat is not None else None
    extra = f", p95 {p95:.0f} ms" if p95 is not None else ""
    if c.adapter == "memory" and dr < GOOD_RATIO and (nodes or 1) > 1:
        return [f"memory adapter: {_pct(dr)} of broadcast deliveries across {nodes} nodes{extra} — "
                "rooms span nodes: use the Redis adapter"]
    one_node = (c.adapter == "memory" and (nodes or 1) > 1
                and sum(1 for v in cfg.nodes.values() if v) == 1)
    whose = (f"{c.adapter} adapter" if c.adapter
             else "external target" if _external(cfg) else "unknown adapter")
    return [f"{whose}: {_pct(dr)} of broadcast deliveries{extra}"
            + (" — only because every session is on one node; rooms spanning nodes would need Redis"
               if one_node else "")]


def redis_gain_verdicts(entry: Cfg) -> list[str]:
    """[] or the one sentence comparing this Redis config with its memory twin."""
    gain = _typed(entry).redis_vs_memory
    if not gain:
        return []
    return [f"Redis adapter vs memory: delivery {_pct(gain.get('ratio_memory'))} → "
            f"{_pct(gain.get('ratio_redis'))}, p95 delivery latency "
            f"{'+' if (gain.get('p95_cost_ms') or 0) >= 0 else ''}{(gain.get('p95_cost_ms') or 0):.1f} ms"]


def node_verdicts(entry: Cfg, nodes_used_note: bool = True) -> list[str]:
    """[] or the one sentence on the spread over nodes: all on one node, or uneven."""
    cfg = _typed(entry)
    c = cfg.config
    imb = num(cfg.imbalance)
    nodes_n = c.nodes or 0
    counts = cfg.nodes
    used = sum(1 for v in counts.values() if v)
    sessions = sum(int(v or 0) for v in counts.values())
    # One node out of several only means something with enough sessions to have spread.
    if nodes_used_note and nodes_n and nodes_n > 1 and used == 1 and sessions >= 2 * nodes_n:
        why = ("the balancer's hash sees one client address — spread source IPs (--sio-source-range) "
               "or use cookie stickiness" if c.policy in HASH_POLICIES else "the balancer did not spread them")
        return [f"all {sessions} sessions landed on one node of {nodes_n} ({c.policy or 'policy unknown'}): {why}"]
    if imb is not None and imb > 1.5 and nodes_n > 1 and sessions >= 2 * nodes_n:
        return [f"uneven spread over nodes: the busiest node has {imb:.1f}× the mean"]
    return []


def capacity_verdicts(entry: Cfg) -> list[str]:
    """[] or the one sentence on users per node within the SLO (and why it is only a lower bound)."""
    cap = _typed(entry).capacity
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


def status_verdicts(entry: Cfg, who: str) -> list[str]:
    """A config that is not ok says so first (contract.status), so no reader takes its figures for the
    whole run's: [] for ok, "did not run" for a failed config without rows, else the status and why."""
    cfg = _typed(entry)
    status = str(cfg.status or "ok")
    if status == "ok":
        return []
    why = "; ".join(str(r) for r in cfg.status_reasons or []) or cfg.error or "no reason recorded"
    if status == "failed" and not cfg.events:
        return [f"{who}: did not run — {why}"]
    return [f"{who}: {status.upper()} — {why} (the figures below cover only what was measured)"]


_GEN_FIX = "use --processes or more machines"


def generator_verdicts(entry: Cfg) -> list[str]:
    """Say plainly where the numbers measure the load generator rather than the servers."""
    cfg = _typed(entry)
    cap = cfg.capacity
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
    gen = cfg.generator or {}
    if gen.get("saturated"):
        where = " outside the stage holds (ramps, start or stop)" if cap.get("table") else ""
        return [f"the load generator reached {gen['cpu_max']:.0f}% CPU{where} ({gen.get('saturated_samples', 0)} "
                f"process-second(s) ≥ {GENERATOR_SATURATED:.0f}%) — latencies then include the generator's own delay; {_GEN_FIX}"]
    return []


def resource_verdicts(entry: Cfg) -> list[str]:
    """[], or the binding resource at the knee (with the nodes-needed answer) and a reconciliation gap > tolerance."""
    cfg = _typed(entry)
    cap = cfg.capacity
    out = []
    b = binding_text(cap.get("binding"))
    if b:
        nbr = cap.get("nodes_needed_by_resource") or {}
        line = f" — {nbr['line']}" if isinstance(nbr, dict) and nbr.get("line") else ""
        out.append(f"binding resource: {cap.get('binding_reason') or b}{line}")
    rec = (cfg.resources or {}).get("reconciliation")
    if isinstance(rec, dict) and rec.get("flagged"):
        out.append(f"server-side clients ({rec.get('server_mean', 0):.0f} on average) differ from the client side's "
                   f"connected sessions ({rec.get('client_mean', 0):.0f}) by {_pct(rec.get('diff_median'))} (median over "
                   f"{rec.get('seconds')} s, tolerance {_pct(rec.get('tolerance'))}): sessions the servers hold that the "
                   "clients gave up (leaks, slow disconnect detection), or clients that believe they are connected")
    return out
