"""Verdict wording follows the numbers, and does not over-read thin data."""

from analysis.verdicts import config_verdicts


def _cfg(policy: str, adapter: str, nodes: dict[str, int], connect_ratio: float = 1.0, delivery: float | None = 1.0):
    return {
        "name": f"haproxy-{policy}", "status": "ok",
        "config": {"balancer": "haproxy", "policy": policy, "adapter": adapter, "transports": ["websocket"],
                   "server": "python", "nodes": 3, "tls": False},
        "connections": {"attempted": 30, "connected": round(30 * connect_ratio), "upgraded": 0,
                        "connect_ratio": connect_ratio, "upgrade_ratio": None},
        "failures": {}, "broadcast": {"delivery_ratio": delivery, "latency_ms": {"p95": 10.0}},
        "nodes": nodes, "imbalance": (max(nodes.values()) / (sum(nodes.values()) / 3)) if sum(nodes.values()) else None,
    }


def test_source_hash_on_one_node_names_the_cause_and_qualifies_memory_delivery():
    v = " | ".join(config_verdicts(_cfg("source", "memory", {"n1": 0, "n2": 30, "n3": 0})))
    assert "all 30 sessions landed on one node of 3 (source): the balancer's hash sees one client address" in v
    assert "only because every session is on one node" in v


def test_one_or_two_sessions_on_one_node_is_not_a_finding():
    v = " | ".join(config_verdicts(_cfg("l7-round-robin", "redis", {"n1": 1, "n2": 0, "n3": 0}, connect_ratio=0.03)))
    assert "landed on one node" not in v and "uneven spread" not in v
    assert "3% connect success" in v


def test_non_hash_policy_on_one_node_does_not_blame_the_client_address():
    v = " | ".join(config_verdicts(_cfg("leastconn", "redis", {"n1": 12, "n2": 0, "n3": 0})))
    assert "the balancer did not spread them" in v and "client address" not in v


def test_capacity_verdict_names_the_busiest_nodes_load() -> None:
    """All 60 knee users on n1 of 3 nodes: one node carried 60 within the SLO, not the mean 20."""
    from analysis.verdicts import config_verdicts
    cfg = {"status": "ok", "config": {"transports": ["websocket"], "balancer": "haproxy", "policy": "source",
                                      "adapter": "memory", "nodes": 3},
           "connections": {"attempted": 60, "connected": 60, "connect_ratio": 1.0},
           "capacity": {"users_per_node": 20.0, "capacity_per_node": 60.0, "users": 60, "reached": True,
                        "limit": "p95_ack_ms 900 > 250 at 90 users"}}
    v = [x for x in config_verdicts(cfg) if x.startswith("capacity:")]
    assert v == ["capacity: 60 users per node within the SLO (20 on average; the sessions were spread unevenly)"
                 " (next step: p95_ack_ms 900 > 250 at 90 users)"]


def test_session_unknown_verdict_attributes_over_polling_400s_and_counts_probes_apart() -> None:
    from analysis.verdicts import config_verdicts
    cfg = {"status": "ok", "config": {"transports": ["polling", "websocket"], "balancer": "haproxy",
                                      "policy": "l4-round-robin", "adapter": "memory", "nodes": 3},
           "connections": {"attempted": 100, "connected": 19, "connect_ratio": 0.19},
           "failures": {"session_unknown": 205},
           "node_switch": {"session_unknown": 205, "attributed": 205, "share": 1.0, "polling": 128,
                           "polling_attributed": 128, "probe": 30, "probe_attributed": 30, "follow_on": 47}}
    v = config_verdicts(cfg)[0]
    assert "100% of the 128 polling requests refused with 400 came from sessions that met two nodes" in v
    assert "30 WebSocket-probe refusals counted apart" in v


def _external(**over):
    cfg = {"name": "external-poll+ws", "status": "ok",
           "config": {"balancer": None, "policy": None, "adapter": None, "transports": ["polling", "websocket"],
                      "server": None, "nodes": None, "tls": None},
           "connections": {"attempted": 10, "connected": 10, "upgraded": 10, "connect_ratio": 1.0, "upgrade_ratio": 1.0},
           "failures": {}, "broadcast": {"delivery_ratio": 0.5, "latency_ms": {"p95": 10.0}},
           "nodes": {"n1": 5, "?": 5}, "imbalance": 1.0}
    cfg.update(over)
    return cfg


def test_external_target_with_none_labels_reads_as_external_never_none() -> None:
    from analysis.verdicts import describe
    for cfg in (_external(), _external(config={**_external()["config"], "balancer": "external", "policy": "external"})):
        text = " | ".join(config_verdicts(cfg)) + " | " + describe(cfg)
        assert "None" not in text
        assert "against the external target" in text and "external target: 50% of broadcast deliveries" in text
        assert "memory adapter" not in text
    assert describe(_external()) == ("polling+websocket against an external target (adapter, server and nodes unknown)")


def test_missing_config_block_does_not_print_none() -> None:
    from analysis.verdicts import describe
    cfg = _external(name="some-run")
    del cfg["config"]
    text = " | ".join(config_verdicts(cfg)) + " | " + describe(cfg)
    assert "None" not in text and "behind an unknown balancer" in text and "unknown adapter" in text
    failed = {"name": "x", "status": "failed", "error": "boom", "config": None}
    assert config_verdicts(failed) == ["? behind an unknown balancer: did not run — boom"]


def test_sessions_that_died_under_the_runs_own_faults_say_so_and_each_fault_gets_its_row() -> None:
    """recovery.toml: half the sessions die because the run blips, restarts and kills nodes; the sessions verdict
    must name those faults rather than leave an idle timeout as the only reading, and each fault gets a verdict."""
    cfg = _cfg("cookie", "redis-streams", {"n1": 10, "n2": 10, "n3": 10})
    cfg["sessions"] = {"connected": 30, "failed": 15, "failed_share": 0.5, "closed": 15, "open": 15,
                       "lifetime_s": {"p50": 11.0}, "end_steps": {"connection_closed": 15},
                       "end_kinds": {"transport_closed": 15}, "after_node_switch": 0, "top_end_step": "connection_closed"}
    cfg["faults"] = [{"at": 7, "action": "blip", "target": None, "error": None, "fraction": 0.3},
                     {"at": 14, "action": "restart_node", "target": "n2", "error": None},
                     {"at": 30, "action": "stop_node", "target": "n3", "error": "not reached: the run ended first"}]
    cfg["options"] = {"recovery": True}
    blip = {"action": "blip", "at": 7, "target": None, "fraction": 0.3, "cut": 9, "disconnects": 9, "recovered": 9,
            "recovered_ratio": 1.0, "missed": 0, "duplicated": 0, "reordered": 0, "p95_reconnect_ms": 1400.0}
    cfg["recovery"] = {**{k: v for k, v in blip.items() if k not in ("action", "at", "target", "fraction", "cut")},
                       "by_fault": [blip], "redis": None, "bad_offsets": None}
    v = config_verdicts(cfg)
    died = next(x for x in v if "connected sessions died" in x)
    assert died.endswith("; the run's own faults ended sessions: blip, restart_node n2 (see Failover and recovery)")
    assert ("redis-streams + recovery, blip (30% of the users): 100% of sessions recovered (9 of 9 lost), "
            "0 messages missed") in v
    del cfg["faults"]
    assert "faults" not in next(x for x in config_verdicts(cfg) if "connected sessions died" in x)
