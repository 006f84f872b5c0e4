"""The blip's `silent` mode (issue 14): the runner's order, who it reaches, and a loss without a FIN.

The order file is contract/control.py's; `silent.apply` must reach exactly the users that hold a
chosen connection; the core ends the session with kind `network_lost` from exact packets; a kept
descriptor keeps the TCP connection open (the peer sees no EOF) until the drain closes it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from contract.config import ClusterConfig, Fault, LoadConfig, RunConfig
from contract.control import SILENT_FILE, SilentOrder, orders_json, parse_orders
from locustfiles.sio import silent
from locustfiles.sio.protocol.actions import Closed, EventReceived, StepResult
from locustfiles.sio.protocol.client import ClientProtocol
from sioscale.runner import FaultSchedule

from .protocol_helpers import OPEN, connected_polling, of


def test_orders_round_trip_and_bad_files_are_one_line_errors() -> None:
    o = SilentOrder(1, 1700000000.5, 3.0, frozenset({"127.0.0.1:40001", "127.0.0.1:40002"}))
    assert parse_orders(json.loads(json.dumps(orders_json([o])))) == [o]
    for bad in ({"v": 2, "orders": []}, [], {"v": 1, "orders": [{"seq": 0, "ts": 1, "duration": 1, "addrs": []}]},
                {"v": 1, "orders": [{"seq": 1, "ts": 1, "duration": 0, "addrs": []}]},
                {"v": 1, "orders": [{"seq": 1, "ts": 1, "duration": 1, "addrs": [5]}]}, {"v": 1, "orders": ["x"]}):
        with pytest.raises(ValueError, match=SILENT_FILE):
            parse_orders(bad)


class FakeUser:
    def __init__(self, uid: str, addrs: set[str], alive: bool = True) -> None:
        self.user_id, self.addrs, self.alive, self.silenced = uid, addrs, alive, []

    def local_addresses(self) -> set[str]:
        return self.addrs

    def go_silent(self, duration: float) -> bool:
        self.silenced.append(duration)
        return self.alive


class Env:
    pass


def test_an_order_reaches_exactly_the_users_holding_a_chosen_connection_once() -> None:
    env = Env()
    users = [FakeUser("a", {"127.0.0.1:1"}), FakeUser("b", {"127.0.0.1:2", "127.0.0.1:3"}),
             FakeUser("c", {"127.0.0.1:4"}), FakeUser("d", set()), FakeUser("e", {"127.0.0.1:5"}, alive=False)]
    for u in users:
        silent.register(env, u)
    order = SilentOrder(1, 0.0, 2.5, frozenset({"127.0.0.1:3", "127.0.0.1:4", "127.0.0.1:5", "127.0.0.1:99"}))
    assert sorted(silent.apply(env, order)) == ["b", "c"]  # e held one but had no session left to lose
    assert [u.silenced for u in users] == [[], [2.5], [2.5], [], [2.5]]
    assert silent.apply(env, order) == []  # the file is re-read whole: an order is carried out once


def test_the_poller_reads_the_file_only_when_it_changed(tmp_path: Path) -> None:
    st = silent._State()
    assert silent.read_orders(tmp_path, st) == []  # no file yet
    o = SilentOrder(1, 0.0, 1.0, frozenset({"127.0.0.1:7"}))
    (tmp_path / SILENT_FILE).write_text(json.dumps(orders_json([o])))
    assert silent.read_orders(tmp_path, st) == [o]
    assert silent.read_orders(tmp_path, st) == []  # unchanged
    (tmp_path / SILENT_FILE).write_text("{not json")
    assert silent.read_orders(tmp_path, st) == []  # a damaged file is said in the log, never raised


def _connected_ws() -> ClientProtocol:
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    c.ws_opened(0.001, node="n1")
    c.ws_message(OPEN.decode(), 0.002)
    c.ws_message('40{"sid":"A"}', 0.003)
    assert c.state == "connected"
    return c


def test_network_lost_ends_a_websocket_session_as_the_offline_event_does() -> None:
    c = _connected_ws()
    a = c.network_lost(5.0, "network lost for 3 s (blip silent)")
    (row,) = [s for s in of(a, StepResult) if s.step == "disconnect"]
    assert (row.ok, row.error_kind) == (False, "network_lost") and "blip silent" in row.error
    closed = of(a, Closed)[0]
    assert (closed.reason, closed.error_kind) == ("transport close", "network_lost")
    assert c.network_lost(6.0) == []  # once
    assert of(c.ws_message('42["late",1]', 6.1), EventReceived) == []  # nothing is read after the loss


def test_network_lost_ends_a_polling_session_too() -> None:
    c, _ = connected_polling()
    a = c.network_lost(1.0)
    assert of(a, Closed)[0].error_kind == "network_lost"


def test_network_lost_before_the_open_packet_is_a_failed_connect() -> None:
    c = ClientProtocol(transports=("websocket",))
    c.start(0.0)
    a = c.network_lost(0.5)
    assert [(s.step, s.error_kind) for s in of(a, StepResult)] == [("handshake", "network_lost"),
                                                                   ("connect", "network_lost")]


def _pair() -> tuple[socket.socket, socket.socket]:
    lst = socket.create_server(("127.0.0.1", 0))
    try:
        cli = socket.create_connection(lst.getsockname(), timeout=2)
        srv, _ = lst.accept()
    finally:
        lst.close()
    srv.settimeout(0.3)
    return cli, srv


def test_a_kept_connection_sends_no_fin_until_its_drain_closes_it() -> None:
    cli, srv = _pair()
    assert silent.address(cli) == "{}:{}".format(*cli.getsockname())
    (fd,) = silent.keep([cli])
    cli.close()  # the session's socket object goes; the connection must not
    with pytest.raises(TimeoutError):
        srv.recv(10)  # no EOF: the server sees nothing
    srv.sendall(b"2")  # a ping nobody answers
    ended = [False]
    g = gevent.spawn(silent.drain, fd, lambda: ended[0])
    gevent.sleep(0.1)
    with pytest.raises(TimeoutError):
        srv.recv(10)  # drained, never answered
    srv.close()  # the server gives up (its ping timeout): the drain sees EOF and closes its end
    g.join(2)
    assert g.dead
    with pytest.raises(OSError):
        socket.socket(fileno=fd).getsockname()  # the kept descriptor was closed


def test_a_kept_connection_closes_when_the_user_ends() -> None:
    cli, srv = _pair()
    (fd,) = silent.keep([cli])
    cli.close()
    ended = [False]
    g = gevent.spawn(silent.drain, fd, lambda: ended[0])
    gevent.sleep(0.1)
    ended[0] = True
    g.join(3)
    assert g.dead and srv.recv(10) == b""  # closed on the user's end, not before
    srv.close()


class FakeCluster:
    def __init__(self) -> None:
        self.excluded: list[frozenset[str]] = []

    def blip(self, fraction: float, target: str | None, mode: str, exclude: frozenset[str]) -> dict[str, Any]:
        assert mode == "silent"
        self.excluded.append(exclude)
        n = len(self.excluded)
        return {"sessions": 4, "silenced": 2, "silenced_by_node": {"n1": 2},
                "addrs": [f"127.0.0.1:{n}5", f"127.0.0.1:{n}6"]}


def test_the_runner_writes_the_order_and_meta_gets_the_counts(tmp_path: Path) -> None:
    cfg = RunConfig(name="x", cluster=ClusterConfig(server="node"), load=LoadConfig(users=2, duration=20),
                    faults=(Fault(1, "blip", fraction=0.5, duration=3, mode="silent"),
                            Fault(5, "blip", fraction=0.5, duration=1, mode="silent")))
    fake = FakeCluster()
    sched = FaultSchedule(cfg, fake, tmp_path)
    t0 = time.time()
    sched.fire_due(1.2, None)
    (rec,) = sched.done
    assert rec["error"] is None and (rec["silenced"], rec["sessions"], rec["mode"]) == (2, 4, "silent")
    assert "addrs" not in rec  # meta.json gets counts, the file the addresses
    (order,) = parse_orders(json.loads((tmp_path / SILENT_FILE).read_text()))
    assert order.seq == 1 and order.duration == 3.0 and order.addrs == {"127.0.0.1:15", "127.0.0.1:16"}
    assert order.ts >= t0
    sched.fire_due(5.0, None)
    # the second blip does not choose the connections the first abandoned (the nodes keep them open a while)
    assert fake.excluded == [frozenset(), frozenset({"127.0.0.1:15", "127.0.0.1:16"})]
    first, second = parse_orders(json.loads((tmp_path / SILENT_FILE).read_text()))
    assert (first, second.seq, second.duration) == (order, 2, 1.0)


def test_ping_timeout_is_checked_and_names_the_run() -> None:
    from contract.config import ConfigError, run_name

    with pytest.raises(ConfigError, match=r"ping_timeout = 0.5: seconds from 1 to 3600"):
        ClusterConfig(ping_timeout=0.5).validate()
    cfg = ClusterConfig(server="node", ping_interval=2, ping_timeout=3).validate()
    assert run_name(cfg, LoadConfig()).endswith("-ping2-pingto3")
