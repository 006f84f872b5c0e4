"""The faults that leave the node alive (issue 14 part 3): blip, pause_node, restart_node.

Config: each key required or refused by action, with a one-line error. Runner: a pause is always
resumed (after its duration, or at the run's end), and what each fault did lands in its record.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from contract.config import (
    ClusterConfig,
    ConfigError,
    Fault,
    LoadConfig,
    RunConfig,
    check_faults,
    parse_campaign,
)
from sioscale.runner import FaultSchedule


def _camp(faults: str, cluster: str = "") -> Any:
    return parse_campaign(f'name = "f"\n[cluster]\nserver = "node"\n{cluster}[load]\nusers = 2\nduration = 20\n'
                          + faults)


def test_blip_pause_restart_parse_and_keep_their_keys() -> None:
    camp = _camp('[[faults]]\nat = 2\naction = "blip"\nfraction = 0.3\nduration = 3\n'
                 '[[faults]]\nat = 4\naction = "blip"\nfraction = 1\nduration = 1\ntarget = "n2"\nmode = "cut"\n'
                 '[[faults]]\nat = 6\naction = "pause_node"\ntarget = "n1"\nduration = 2.5\n'
                 '[[faults]]\nat = 9\naction = "restart_node"\ntarget = "n3"\n')
    (run,) = camp.runs()
    assert [(f.action, f.target, f.fraction, f.duration, f.mode) for f in run.faults] == [
        ("blip", None, 0.3, 3, None), ("blip", "n2", 1, 1, "cut"), ("pause_node", "n1", None, 2.5, None),
        ("restart_node", "n3", None, None, None)]


@pytest.mark.parametrize(("fault", "needle"), [
    (Fault(1, "blip", duration=3), "faults.fraction = None for blip"),
    (Fault(1, "blip", fraction=0, duration=3), "faults.fraction = 0 for blip"),
    (Fault(1, "blip", fraction=1.5, duration=3), "0 < fraction <= 1"),
    (Fault(1, "blip", fraction=True, duration=3), "faults.fraction = True"),
    (Fault(1, "blip", fraction=0.3), "faults.duration = None for blip"),
    (Fault(1, "blip", fraction=0.3, duration=-1), "faults.duration = -1"),
    (Fault(1, "blip", fraction=0.3, duration=3, mode="loud"), "faults.mode = 'loud' is not valid"),
    (Fault(1, "blip", fraction=0.3, duration=3, target="n9"), "faults.target = 'n9' for blip: one of n1, n2, n3"),
    (Fault(1, "pause_node", duration=2), "faults.target = None for pause_node"),
    (Fault(1, "pause_node", target="n1"), "faults.duration = None for pause_node"),
    (Fault(1, "pause_node", target="n1", duration=2, fraction=0.5), "faults.fraction is not for pause_node"),
    (Fault(1, "restart_node", target="n1", duration=2), "faults.duration is not for restart_node"),
    (Fault(1, "stop_node", target="n1", mode="cut"), "faults.mode is not for stop_node"),
])
def test_bad_keys_are_one_line_errors(fault: Fault, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)) as e:
        fault.validate(3)
    assert "\n" not in str(e.value)


def test_cluster_rules_blip_needs_haproxy_and_live_nodes() -> None:
    blip = Fault(1, "blip", fraction=0.5, duration=1)
    with pytest.raises(ConfigError, match="balancer = 'caddy' has none"):
        check_faults([blip], ClusterConfig(balancer="caddy"), 10)
    for later in (Fault(3, "pause_node", target="n2", duration=1), Fault(3, "restart_node", target="n2"),
                  Fault(3, "blip", target="n2", fraction=1, duration=1)):
        with pytest.raises(ConfigError, match="n2 is already stopped then"):
            check_faults([Fault(1, "stop_node", target="n2"), later], ClusterConfig(), 10)
    # pause / restart leave the node up: a stop_node after them is fine
    check_faults([Fault(1, "pause_node", target="n2", duration=1), Fault(2, "restart_node", target="n2"),
                  Fault(3, "stop_node", target="n2")], ClusterConfig(), 10)
    with pytest.raises(ConfigError, match=re.escape("unknown key 'frac' in [[faults]]; allowed: action, at")):
        _camp('[[faults]]\nat = 1\naction = "blip"\nfrac = 0.3\n')


class FakeCluster:
    """Records the hooks the schedule calls, as the real Cluster's would be."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.paused: set[str] = set()

    def blip(self, fraction: float, target: str | None, mode: str) -> dict[str, Any]:
        self.calls.append(("blip", fraction, target, mode))
        return {"sessions": 10, "cut": round(10 * fraction), "cut_by_node": {"n1": round(10 * fraction)}}

    def pause_node(self, nid: str) -> None:
        self.calls.append(("pause", nid))
        self.paused.add(nid)

    def resume_node(self, nid: str) -> None:
        self.calls.append(("resume", nid))
        self.paused.discard(nid)

    def restart_node(self, nid: str) -> dict[str, Any]:
        self.calls.append(("restart", nid))
        return {"exit_code": 0, "down_s": 0.4}


def _schedule(*faults: Fault) -> tuple[FaultSchedule, FakeCluster]:
    cfg = RunConfig(name="x", cluster=ClusterConfig(server="node"), load=LoadConfig(users=2, duration=20),
                    faults=faults)
    fake = FakeCluster()
    return FaultSchedule(cfg, fake), fake


def test_schedule_records_blip_counts_and_restart_downtime() -> None:
    sched, fake = _schedule(Fault(1, "blip", fraction=0.3, duration=3), Fault(2, "restart_node", target="n3"))
    sched.fire_due(2.5, None)
    assert fake.calls == [("blip", 0.3, None, "cut"), ("restart", "n3")]
    blip, restart = sched.done
    assert (blip["cut"], blip["sessions"], blip["cut_by_node"], blip["fraction"], blip["duration"]) == (
        3, 10, {"n1": 3}, 0.3, 3)
    assert restart["down_s"] == 0.4 and restart["error"] is None and "fraction" not in restart


def test_pause_is_resumed_after_its_duration_and_never_left_at_the_end() -> None:
    sched, fake = _schedule(Fault(1, "pause_node", target="n1", duration=2), Fault(2, "pause_node", target="n2",
                                                                                    duration=60))
    sched.fire_due(1.0, None)
    assert fake.paused == {"n1"}
    sched.fire_due(2.9, None)
    assert fake.paused == {"n1", "n2"}
    sched.fire_due(3.0, None)  # n1's 2 s are up
    assert fake.paused == {"n2"} and "resumed_ts" in sched.done[0]
    sched.finish()  # the run ends (or Ctrl-C) before n2's 60 s
    assert fake.paused == set() and sched.done[1]["resumed_early"] is True
    assert fake.calls == [("pause", "n1"), ("pause", "n2"), ("resume", "n1"), ("resume", "n2")]


def test_a_failing_blip_is_recorded_and_the_run_goes_on() -> None:
    sched, fake = _schedule(Fault(1, "blip", fraction=0.5, duration=1), Fault(2, "restart_node", target="n1"))

    def broken(*_: Any) -> dict[str, Any]:
        raise OSError("no socket")
    fake.blip = broken  # type: ignore[method-assign]
    sched.fire_due(5, None)
    assert sched.done[0]["error"] == "OSError: no socket" and sched.done[1]["error"] is None
