"""analysis.sessions on hand-made rows: lifetimes, the step that ended a session, the node switch, the verdict."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import sessions as S

T0 = 1_760_000_000.0


def _row(t: float, user: str, sid: str, step: str, ok: int = 1, name: str | None = None, kind: str = "",
         error: str = "", transport: str = "polling", config: str = "c") -> dict:
    return {"config": config, "ts": T0 + t, "user": user, "eio_sid": sid, "step": step, "name": name or step,
            "ok": ok, "error_kind": kind, "error": error, "transport": transport}


def _died_at_pong(user: str, sid: str, life: float) -> list[dict]:
    """Connected at 1 s, a node switch at the first pong POST (life s later), session unknown, disconnected."""
    end = 1 + life
    return [_row(0, user, sid, "handshake"), _row(1, user, sid, "connect"),
            _row(end, user, sid, "node_switch", error="n1->n2"),
            _row(end, user, sid, "poll", 0, "post:pong", "session_unknown"),
            _row(end + 0.01, user, sid, "disconnect", 0, kind="session_unknown")]


EVENTS = pd.DataFrame(
    _died_at_pong("u1", "s1", 25.0) + _died_at_pong("u2", "s2", 25.5) + _died_at_pong("u3", "s3", 24.0)
    + [_row(0, "u4", "s4", "connect"), _row(30, "u4", "s4", "disconnect")]  # the client's own close at the end
    + [_row(0, "u5", "s5", "connect")]  # still up when the run stopped
    + [_row(0, "u6", "s6", "handshake"), _row(0.1, "u6", "s6", "connect", 0, kind="session_unknown")]  # never connected
    + [_row(0, "u7", "s7", "connect"), _row(3, "u7", "s7", "disconnect", 0, kind="transport_closed")]  # its row was cut
)


def test_each_connected_session_ends_one_way() -> None:
    e = S.session_ends(EVENTS).set_index("user")
    assert set(e.index) == {"u1", "u2", "u3", "u4", "u5", "u7"}  # u6 never connected
    assert e.loc["u1", "outcome"] == "failed" and e.loc["u1", "end_step"] == "post:pong"
    assert e.loc["u1", "lifetime_s"] == pytest.approx(25.01) and e.loc["u1", "switch"] == "n1->n2"
    assert bool(e.loc["u1", "switched"]) and e.loc["u1", "end_kind"] == "session_unknown"
    assert (e.loc["u4", "outcome"], e.loc["u5", "outcome"]) == ("closed", "open")
    assert e.loc["u7", "end_step"] == "connection_closed" and not e.loc["u7", "switched"]  # nothing else failed


def test_summary_and_verdict_say_how_they_died() -> None:
    s = S.session_summary(S.session_ends(EVENTS), "c")
    assert (s["connected"], s["failed"], s["closed"], s["open"]) == (6, 4, 1, 1)
    assert s["end_steps"] == {"post:pong": 3, "connection_closed": 1} and s["top_end_step"] == "post:pong"
    assert s["after_node_switch"] == 3 and s["lifetime_s"]["p50"] == pytest.approx(24.51, abs=0.6)
    v = S.sessions_verdict(s, 0.41)
    assert v.startswith("41% connect, but 67% of the connected sessions died (median 25 s after connecting), most at "
                        "the pong POST (the answer to a heartbeat) (75%), 75% of them after meeting a second node")
    assert v.endswith("use sticky sessions or websocket-only")
    assert S.session_summary(S.session_ends(EVENTS), "other") is None


def test_no_verdict_for_a_few_deaths_and_no_crash_on_bad_rows() -> None:
    calm = pd.DataFrame(_died_at_pong("u1", "s1", 2.0) + [_row(0, f"u{i}", f"s{i}", "connect") for i in range(2, 30)])
    assert S.sessions_verdict(S.session_summary(S.session_ends(calm), "c"), 1.0) is None
    assert S.session_ends(pd.DataFrame()).empty and S.session_ends(None).empty
    junk = EVENTS.assign(ok=["1", "0", True, 1.0, None, "x", *EVENTS["ok"].tolist()[6:]])
    assert len(S.session_ends(junk)) >= 1  # read with contract.rows.is_ok, never a crash


def test_the_idle_timeout_verdict_names_the_timeout_and_the_ping_interval() -> None:
    dead = {"failed": 9, "failed_share": 0.9, "end_kinds": {"transport_closed": 9}}
    v = S.idle_timeout_verdict({"idle_timeout": 60, "ping_interval": 90}, dead)
    assert v.startswith("the balancer's 60 s idle timeout closed 90% of the connected sessions (transport_closed × 9)")
    assert "pingInterval of 90 s" in v and v.endswith("keep pingInterval below the balancer's idle timeout")
    alive = {"failed": 0, "failed_share": 0.0, "end_kinds": {}}
    assert "kept the sessions alive through the balancer's 60 s idle timeout" in S.idle_timeout_verdict(
        {"idle_timeout": 60, "ping_interval": None}, alive)  # socket.io's 25 s default
    assert "yet the sessions lived" in S.idle_timeout_verdict({"idle_timeout": 2, "ping_interval": 3}, alive)
    assert S.idle_timeout_verdict({"idle_timeout": None}, dead) is None and S.idle_timeout_verdict(None, None) is None


def test_a_silent_blip_ends_a_session_at_the_clients_own_network_loss() -> None:
    ev = pd.DataFrame([_row(0, "u1", "s1", "connect"), _row(2, "u1", "s1", "ack", 0, "ack:echo", "network_lost"),
                       _row(2, "u1", "s1", "disconnect", 0, kind="network_lost")])
    e = S.session_ends(ev).set_index("user")
    assert (e.loc["u1", "end_step"], e.loc["u1", "end_kind"]) == ("network_lost", "network_lost")  # not the ack
