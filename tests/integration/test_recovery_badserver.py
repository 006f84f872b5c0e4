"""A server that lies about connection-state recovery, over real sockets (issue 14, bad input).

A scripted Engine.IO polling server in this process (the test_client_badserver.py way) gives the
first session a pid and two broadcasts with stream-id offsets, then closes it; the client
reconnects with `{pid, offset}` and the server answers `recovered` (the same pid) while it:
- replays nothing ("empty"),
- replays the two broadcasts the client already had ("twice"),
- replays a broadcast whose offset is older than the last one the client had ("backwards").
Each is counted by the client, shipped in the event log's batch as counts, and classified in the
summary's recovery block and its verdict; nothing raises and the session stays usable.
"""

from __future__ import annotations

import json
import urllib.parse

import gevent
import pandas as pd
import pytest
from gevent.server import StreamServer

from analysis.recovery import recovery_block, recovery_verdict
from locustfiles.sio import eventlog
from tests.integration.test_client_badserver import http, read_request
from tests.integration.test_client_cluster import Probe, make_env

from .support import until_green

pytestmark = pytest.mark.slow

OPEN = '0{"sid":"%s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
FIRST = ['42["broadcast",{"id":"s-0"},"1700000000001-0"]', '42["broadcast",{"id":"s-1"},"1700000000002-0"]']
REPLAY = {"empty": [], "twice": FIRST, "backwards": ['42["broadcast",{"id":"s-9"},"1700000000000-5"]']}


class LyingServer:
    """Polling-only Engine.IO; the second session's CONNECT is answered as `recovered` per `mode`."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.out: dict[str, list[str]] = {}
        self.connects: list[dict | None] = []

    def handle(self, sock, _addr) -> None:
        buf = bytearray()
        while (req := read_request(sock, buf)) is not None:
            line, body = req
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(line.split(" ")[1]).query)
            sid = (q.get("sid") or [""])[0]
            if not sid:
                sid = f"S{len(self.out) + 1}"
                self.out[sid] = []
                sock.sendall(http(OPEN % sid))
            elif line.startswith("POST"):
                for pkt in body.decode().split("\x1e"):
                    if pkt.startswith("40"):
                        self._connect(sid, json.loads(pkt[2:]) if len(pkt) > 2 else None)
                sock.sendall(http("ok"))
            else:  # a long-poll GET: whatever is queued, else wait (bounded)
                for _ in range(500):
                    if self.out.get(sid):
                        break
                    gevent.sleep(0.01)
                pkts, self.out[sid] = self.out.get(sid) or ["6"], []
                sock.sendall(http("\x1e".join(pkts)))

    def _connect(self, sid: str, auth: dict | None) -> None:
        self.connects.append(auth)
        if len(self.connects) == 1:  # the first session: a pid, two broadcasts, then the server ends it
            self.out[sid] += ['40{"sid":"A","pid":"P1"}', *FIRST]
            gevent.spawn_later(0.3, lambda: self.out[sid].append("1"))
        else:  # "recovered": the same pid, after the replay this mode gives
            self.out[sid] += [*REPLAY[self.mode], '40{"sid":"B","pid":"P1"}']


@pytest.mark.parametrize("mode,counter,words", [
    ("empty", "recovered_empty", "said recovered with nothing replayed (1)"),
    ("twice", "duplicated", "sent an offset it had sent before (2)"),
    ("backwards", "backwards", "sent offsets going backwards (1)"),
])
def test_a_lying_recovery_is_counted_shipped_and_classified(mode: str, counter: str, words: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("locustfiles.sio.user.reconnect_delay_ms", lambda attempt, rand: 50)
    server = LyingServer(mode)
    srv = StreamServer(("127.0.0.1", 0), server.handle)
    srv.start()
    env = make_env(f"http://127.0.0.1:{srv.server_port}", sio_reconnect="true", sio_transports="polling")
    u = Probe(env)
    got: list[str] = []
    u.on("broadcast", lambda p: got.append(p["id"]))
    try:
        assert u.connect(), u.steps
        until_green(lambda: any(s["name"] == "recover" for s in u.steps), 5, "the recovery attempt")
        assert server.connects[1] == {"pid": "P1", "offset": "1700000000002-0"}  # what socket.io-client sends
        (rec,) = [s for s in u.steps if s["name"] == "recover"]
        assert rec["error"] == ""  # the server said recovered: the client takes its word, and counts
        assert u.recovery.counts[counter] >= 1 and u.recovery.counts["recovered"] == 1
        assert got[:2] == ["s-0", "s-1"] and got[2:] == [m.split('"id":"')[1].split('"')[0] for m in REPLAY[mode]]
        assert u.connected and u.session.proto.sio_sid == "B"  # still usable: nothing raised
    finally:
        u._teardown()
        srv.stop()
    shipped = eventlog.payload_of(eventlog._state(env).producer, seq=0)["recovery"]
    assert shipped.get(counter, 0) >= 1 and shipped["attempts"] == 1
    lost = {"step": "disconnect", "ok": 0, "latency_ms": None}
    block = recovery_block(pd.DataFrame([lost, {"step": "recover", "ok": 1, "latency_ms": 5.0}]), client=shipped)
    assert block["recovered_ratio"] == 1.0 and block["server_answers"][
        {"recovered_empty": "recovered_empty", "duplicated": "duplicated_offsets", "backwards": "offsets_backwards"}[counter]] >= 1
    assert words in recovery_verdict(block, "liar")
