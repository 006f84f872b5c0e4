"""Connection-state recovery in the sans-IO client, from exact packets (issue 14; no sockets).

The wire is socket.io 4.8.4's with `connectionStateRecovery` on: the CONNECT reply carries a pid,
each broadcast EVENT ends with its offset (a Redis stream id or an in-memory yeast id), and a server
that restores a session writes the missed packets before its CONNECT reply. The client must send
`{pid, offset}` on the next CONNECT, call the session recovered when the pid comes back, and take
the replay as events; whatever a bad server does (recovered with nothing replayed, a replay of what
had arrived, offsets going backwards, junk offsets) is counted, never raised.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from locustfiles.sio.protocol.actions import Closed, Connected, EventReceived, HttpRequest, StepResult, WsSend
from locustfiles.sio.protocol.client import ClientProtocol
from locustfiles.sio.protocol.recovery import COUNTERS, Recovery, offset_key

from .protocol_helpers import OPEN, of

S1, S2, S3 = "1700000000000-0", "1700000000001-0", "1700000000002-0"


def ws_session(rec: Recovery, auth: dict | None = None, t0: float = 0.0) -> tuple[ClientProtocol, str]:
    """A websocket-only session opened on `rec`: (client, the CONNECT packet it wrote)."""
    c = ClientProtocol(transports=("websocket",), recovery=rec, auth=auth)
    c.start(t0)
    c.ws_opened(t0 + 0.001, node="n1")
    a = c.ws_message(OPEN.decode(), t0 + 0.002)
    (connect,) = [w.data for w in of(a, WsSend) if isinstance(w.data, str) and w.data.startswith("40")]
    return c, connect


def connect_payload(packet: str) -> dict | None:
    return json.loads(packet[2:]) if len(packet) > 2 else None


def steps(actions, name):
    return [a for a in actions if isinstance(a, StepResult) and a.step == name]


def first_session(rec: Recovery, events: list[str]) -> ClientProtocol:
    c, connect = ws_session(rec)
    assert connect == "40"  # nothing to recover yet
    a = c.ws_message('40{"sid":"A","pid":"P1"}', 0.010)
    assert Connected("/", "A") in a and steps(a, "recover") == []  # a first connect is no recovery
    for e in events:
        c.ws_message(e, 0.020)
    return c


def test_pid_and_offset_are_kept_and_the_offset_is_taken_off_the_args() -> None:
    rec = Recovery()
    c, _ = ws_session(rec)
    c.ws_message('40{"sid":"A","pid":"P1"}', 0.010)
    (ev,) = of(c.ws_message(f'42["broadcast",{{"id":"m1"}},"{S1}"]', 0.02), EventReceived)
    assert (ev.event, ev.args, ev.offset, ev.replayed) == ("broadcast", [{"id": "m1"}], S1, False)
    (ev,) = of(c.ws_message(f'42["tick","{S2}"]', 0.03), EventReceived)  # the offset alone: no args left
    assert (ev.args, ev.offset) == ([], S2)
    (ev,) = of(c.ws_message('421["ask","not-an-offset"]', 0.04), EventReceived)  # asks an ack: never stored
    assert (ev.args, ev.offset, ev.ack_id) == (["not-an-offset"], None, 1)
    (ev,) = of(c.ws_message('42["n",{"a":1},7]', 0.05), EventReceived)  # last arg no string: no offset
    assert (ev.args, ev.offset) == ([{"a": 1}, 7], None)
    assert (rec.pid, rec.offset) == ("P1", S2)


def test_a_server_without_recovery_leaves_events_alone() -> None:
    rec = Recovery()
    c, _ = ws_session(rec)
    c.ws_message('40{"sid":"A"}', 0.010)
    (ev,) = of(c.ws_message('42["msg","hello"]', 0.02), EventReceived)
    assert (ev.args, ev.offset) == (["hello"], None)
    assert rec.pid is None
    c2, connect = ws_session(rec)
    assert connect == "40"  # no pid: a plain CONNECT, and no recover step
    assert steps(c2.ws_message('40{"sid":"B"}', 0.5), "recover") == []


def test_reconnect_sends_pid_and_offset_and_takes_the_replay_as_events() -> None:
    rec = Recovery()
    first_session(rec, [f'42["broadcast",{{"id":"m1"}},"{S1}"]'])
    c, connect = ws_session(rec, t0=1.0)
    assert connect_payload(connect) == {"pid": "P1", "offset": S1}
    # socket.io 4.8.4 writes the missed packets first (the Socket constructor), then the CONNECT reply
    assert of(c.ws_message(f'42["broadcast",{{"id":"m2"}},"{S2}"]', 1.003), EventReceived) == []
    assert of(c.ws_message(f'42["broadcast",{{"id":"m3"}},"{S3}"]', 1.004), EventReceived) == []
    a = c.ws_message('40{"sid":"A","pid":"P1"}', 1.010)
    (rs,) = steps(a, "recover")
    assert rs.ok and rs.latency_ms == 10.0 and rs.error_kind == ""
    evs = of(a, EventReceived)
    assert [(e.args, e.offset, e.replayed) for e in evs] == [([{"id": "m2"}], S2, True), ([{"id": "m3"}], S3, True)]
    kinds = [type(x).__name__ for x in a if not isinstance(x, WsSend)]
    assert kinds.index("Connected") < kinds.index("EventReceived")  # fired once connected, as emitBuffered()
    assert rec.offset == S3
    assert {k: v for k, v in rec.counts.items() if v} == {"attempts": 1, "recovered": 1, "replayed": 2}


def test_auth_is_merged_over_pid_and_offset() -> None:
    rec = Recovery()
    first_session(rec, [f'42["b",{{}},"{S1}"]'])
    _, connect = ws_session(rec, auth={"token": "t", "offset": "mine"})
    # Object.assign({pid, offset}, auth): the app's own keys win
    assert connect_payload(connect) == {"pid": "P1", "offset": "mine", "token": "t"}


def test_a_new_pid_is_not_recovered_and_names_why() -> None:
    rec = Recovery()
    first_session(rec, [f'42["b",{{}},"{S1}"]'])
    c, _ = ws_session(rec, t0=1.0)
    a = c.ws_message('40{"sid":"B","pid":"P2"}', 1.020)
    (rs,) = steps(a, "recover")
    assert (rs.ok, rs.error_kind) == (False, "not_recovered") and "new session" in rs.error
    assert rs.latency_ms == 20.0 and Connected("/", "B") in a
    assert rec.pid == "P2" and rec.counts["not_recovered"] == 1
    # the server stopped offering recovery: said so, and no pid is sent next time
    c, _ = ws_session(rec, t0=2.0)
    (rs,) = steps(c.ws_message('40{"sid":"C"}', 2.01), "recover")
    assert not rs.ok and "no longer offers recovery" in rs.error and rec.pid is None


def test_no_event_before_the_loss_means_no_offset_the_known_limit() -> None:
    rec = Recovery()
    first_session(rec, [])
    c, connect = ws_session(rec, t0=1.0)
    assert connect_payload(connect) == {"pid": "P1"}  # undefined offset: left out of the JSON
    (rs,) = steps(c.ws_message('40{"sid":"B","pid":"P9"}', 1.01), "recover")
    assert not rs.ok and "no offset" in rs.error
    assert rec.counts["no_offset"] == 1 and rec.counts["not_recovered"] == 1


def test_events_without_offsets_name_an_adapter_that_stores_nothing() -> None:
    """Redis pub/sub with recovery on: a pid, but broadcasts carry no offset, so nothing can be recovered."""
    rec = Recovery()
    first_session(rec, ['42["broadcast",{"id":"m1"}]', '42["broadcast",{"id":"m2"}]'])
    assert rec.offset is None
    c, connect = ws_session(rec, t0=1.0)
    assert connect_payload(connect) == {"pid": "P1"}
    (rs,) = steps(c.ws_message('40{"sid":"B","pid":"P2"}', 1.01), "recover")
    assert not rs.ok and "appended none to the 2 event(s)" in rs.error


def test_recovered_with_nothing_replayed_is_counted() -> None:
    rec = Recovery()
    first_session(rec, [f'42["b",{{}},"{S1}"]'])
    c, _ = ws_session(rec, t0=1.0)
    (rs,) = steps(c.ws_message('40{"sid":"A","pid":"P1"}', 1.01), "recover")
    assert rs.ok and rec.counts["recovered_empty"] == 1 and rec.counts["replayed"] == 0


def test_a_replay_of_what_had_arrived_is_counted_as_duplicated_and_still_delivered() -> None:
    rec = Recovery()
    first_session(rec, [f'42["b",{{"id":"m1"}},"{S1}"]', f'42["b",{{"id":"m2"}},"{S2}"]'])
    c, _ = ws_session(rec, t0=1.0)
    for p in (f'42["b",{{"id":"m1"}},"{S1}"]', f'42["b",{{"id":"m2"}},"{S2}"]', f'42["b",{{"id":"m2"}},"{S2}"]'):
        c.ws_message(p, 1.001)
    a = c.ws_message('40{"sid":"A","pid":"P1"}', 1.01)
    assert len(of(a, EventReceived)) == 3  # socket.io-client fires every one: the scenario sees them
    assert rec.counts["duplicated"] == 3 and rec.counts["backwards"] == 1  # S1 after S2
    assert steps(a, "recover")[0].ok and c.state == "connected"


def test_offsets_going_backwards_live_are_counted_and_the_last_one_is_kept() -> None:
    rec = Recovery()
    first_session(rec, [f'42["b",{{}},"{S3}"]', f'42["b",{{}},"{S1}"]', f'42["b",{{}},"{S2}"]'])
    assert rec.counts["backwards"] == 1 and rec.offset == S2  # socket.io-client keeps the last received


@pytest.mark.parametrize("reply,pid", [
    ('40{"sid":"A","pid":7}', None),  # a pid that is no string: no recovery offered
    ('40{"sid":"A","pid":""}', None),
    ('40{"sid":"A","pid":"P1","recovered":"yes"}', "P1"),  # extra keys are ignored
])
def test_odd_pids_are_not_crashes(reply: str, pid: str | None) -> None:
    rec = Recovery()
    c, _ = ws_session(rec)
    a = c.ws_message(reply, 0.01)
    assert of(a, Closed) == [] and c.state == "connected" and rec.pid == pid


def test_junk_offsets_are_counted_and_never_resent_when_huge() -> None:
    rec = Recovery()
    big = "x" * 5000
    first_session(rec, [f'42["b",{{}},"{S1}"]', f'42["b",{{}},"{big}"]', '42["b",{},"not an offset!"]'])
    assert rec.counts["bad_offset"] == 2 and rec.offset == "not an offset!"
    _, connect = ws_session(rec)
    assert big not in connect


def test_events_before_connect_without_recovery_are_delivered_after_connected() -> None:
    rec = Recovery()
    c, _ = ws_session(rec)
    c.ws_message('42["early",1]', 0.005)
    a = c.ws_message('40{"sid":"A"}', 0.01)
    (ev,) = of(a, EventReceived)
    assert (ev.event, ev.args, ev.replayed) == ("early", [1], True)
    assert rec.counts["replay_without_recovery"] == 1


def test_a_flood_before_connect_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import locustfiles.sio.protocol.client as client

    monkeypatch.setattr(client, "MAX_EVENTS_BEFORE_CONNECT", 3)
    c, _ = ws_session(Recovery())
    for _ in range(3):
        assert of(c.ws_message('42["x"]', 0.005), Closed) == []
    (closed,) = of(c.ws_message('42["x"]', 0.006), Closed)
    assert closed.error_kind == "protocol_error" and "before the CONNECT reply" in closed.error


def test_replay_and_connect_in_one_polling_payload() -> None:
    """Over polling the replay and the CONNECT reply usually share one payload (\\x1e-separated)."""
    rec = Recovery()
    first_session(rec, [f'42["b",{{"id":"m1"}},"{S1}"]'])
    c = ClientProtocol(transports=("polling",), recovery=rec)
    (hs,) = c.start(1.0)
    a = c.http_response(hs.rid, 200, OPEN, 1.01, node="n2")
    post, poll = of(a, HttpRequest)
    assert post.body is not None and connect_payload(post.body.decode()) == {"pid": "P1", "offset": S1}
    c.http_response(post.rid, 200, b"ok", 1.015, node="n2")
    body = f'42["b",{{"id":"m2"}},"{S2}"]\x1e40{{"sid":"A","pid":"P1"}}'.encode()
    a = c.http_response(poll.rid, 200, body, 1.02, node="n2")
    assert steps(a, "recover")[0].ok
    assert [(e.args, e.replayed) for e in of(a, EventReceived)] == [([{"id": "m2"}], True)]


def test_eio3_has_no_recovery() -> None:
    rec = Recovery()
    rec.pid, rec.offset = "P1", S1
    c = ClientProtocol(eio=3, transports=("websocket",), recovery=rec)
    c.start(0.0)
    assert c._recovery is None


def test_offset_order_keys() -> None:
    assert offset_key(S1) < offset_key(S2) < offset_key("1700000000002-5")
    assert offset_key("PaV8xYz") < offset_key("PaV8xYz.1") < offset_key("PaV8xYz.2") < offset_key("PaV8xZ0")
    assert offset_key("not an offset!") is None and offset_key("") is None
    assert set(Recovery().counts) == set(COUNTERS)
    rec = Recovery()
    rec.pid, rec.offset = "P", S1
    rec.reset()
    assert (rec.pid, rec.offset) == (None, None) and rec.connect_auth(None) is None


_PACKETS = [
    '40{"sid":"A","pid":"P1"}', '40{"sid":"A","pid":"P2"}', '40{"sid":"A","pid":null}', '40{"sid":"A","pid":["P1"]}',
    '40{"sid":"A"}', "40", '44{"message":"no"}', "41",
    f'42["b",{{"id":"m"}},"{S1}"]', f'42["b",{{"id":"m"}},"{S2}"]', '42["b","99999999999999999999999-1"]',
    '42["b",{},"PaV8xYz.1"]', '42["b",{},"PaV8xYz"]', '42["b"]', "42[]", '42["b",null]', '421["b","1-0"]',
    '42["b",{},"' + "é" * 300 + '"]', '42["b",{},"1-0"', "42", '43{"x":1}',
]


@given(seq=st.lists(st.sampled_from(_PACKETS), max_size=12), pid=st.sampled_from([None, "P1"]),
       offset=st.sampled_from([None, S1, "PaV8xYz", "junk"]))
@settings(max_examples=300, deadline=None)
def test_any_packet_sequence_is_classified_never_raised(seq: list[str], pid: str | None, offset: str | None) -> None:
    rec = Recovery()
    rec.pid, rec.offset = pid, offset
    for _ in range(2):  # two sessions on one record, as a user's reconnects
        c, _ = ws_session(rec)
        recovers = 0
        for i, p in enumerate(seq):
            a = c.ws_message(p, 0.01 + i / 1000)
            assert isinstance(a, list)
            recovers += len(steps(a, "recover"))
            assert all(isinstance(e.args, list) for e in of(a, EventReceived))
        assert recovers <= 1
        assert all(v >= 0 for v in rec.counts.values())
        assert rec.counts["recovered"] + rec.counts["not_recovered"] == rec.counts["attempts"]
        assert rec.offset is None or len(rec.offset) <= 256


def test_the_sharded_adapters_empty_offsets_are_taken_off_and_counted() -> None:
    """@socket.io/redis-adapter's sharded adapter with recovery on: "" on the publishing node, null on
    the others. Both leave the scenario's args as sent (a handler of one argument must still fit),
    count as bad offsets, never as duplicates; "" is kept and resent as socket.io-client does."""
    rec = Recovery()
    c = first_session(rec, [])
    evs = [of(c.ws_message(p, 0.03), EventReceived)[0]
           for p in ('42["broadcast",{"id":"m1"},""]', '42["broadcast",{"id":"m2"},null]',
                     '42["broadcast",{"id":"m3"},""]', '42["broadcast",{"id":"m4"},null]')]
    assert [e.args for e in evs] == [[{"id": f"m{i}"}] for i in range(1, 5)]
    assert rec.counts["bad_offset"] == 4 and rec.counts["duplicated"] == 0 and rec.counts["backwards"] == 0
    assert rec.offset == ""
    c, connect = ws_session(rec, t0=1.0)
    assert connect_payload(connect) == {"pid": "P1", "offset": ""}
    (rs,) = steps(c.ws_message('40{"sid":"B","pid":"P2"}', 1.01), "recover")
    assert not rs.ok and "only empty offsets" in rs.error
    # a member on another node saw nulls only: no offset to send, and the same reason
    rec2 = Recovery()
    first_session(rec2, ['42["broadcast",{"id":"m1"},null]'])
    c, connect = ws_session(rec2, t0=1.0)
    assert connect_payload(connect) == {"pid": "P1"}
    (rs,) = steps(c.ws_message('40{"sid":"B","pid":"P2"}', 1.01), "recover")
    assert not rs.ok and "only empty offsets" in rs.error


def test_a_trailing_null_without_recovery_is_the_apps_own() -> None:
    rec = Recovery()
    c, _ = ws_session(rec)
    c.ws_message('40{"sid":"A"}', 0.010)  # no pid: the server offers no recovery
    (ev,) = of(c.ws_message('42["n",{"a":1},null]', 0.02), EventReceived)
    assert ev.args == [{"a": 1}, None] and rec.counts["bad_offset"] == 0
