"""`PooledHttpSession` over HTTP/2 on real loopback TLS sockets (issue 13): the gevent driver of
the h2 pool. A small h2 server (gevent + the h2 library's server side, ALPN h2) answers as its
script says; its count of accepted connections is compared with what the pool promised.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import h2.config
import h2.connection
import h2.events
import pytest
from gevent import ssl
from gevent.server import StreamServer

from locustfiles.sio.transport.lags import NONE
from locustfiles.sio.transport.net import Endpoint, tls_context
from locustfiles.sio.transport.pooled import PooledHttpSession
from targets.tls import make_tls


class H2Server:
    """Per connection (in accept order) one behaviour: "ok" answers every stream with
    `<conn>:<path>`; "goaway1" answers the first stream, then GOAWAY and close; "drop" closes
    the connection at the first request, unanswered; "slow" answers after 0.3 s."""

    def __init__(self, behaviours: list[str]) -> None:
        self.behaviours = behaviours
        self.accepted = 0

    def handle(self, sock, _addr) -> None:
        self.accepted += 1
        no = self.accepted
        what = self.behaviours[no - 1] if no <= len(self.behaviours) else "ok"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="latin-1"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        try:
            while data := sock.recv(65536):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        if what == "drop":
                            return
                        path = dict(ev.headers)[":path"]
                        gevent.spawn(self._answer, sock, conn, ev.stream_id, f"{no}:{path}", what)
                sock.sendall(conn.data_to_send())
        except OSError:
            pass
        finally:
            gevent.sleep(0.05)
            sock.close()

    @staticmethod
    def _answer(sock, conn, sid: int, body: str, what: str) -> None:
        if what == "slow":
            gevent.sleep(0.3)
        conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        conn.send_data(sid, body.encode(), end_stream=True)
        if what == "goaway1":
            conn.close_connection(last_stream_id=sid)
        try:
            sock.sendall(conn.data_to_send())
            if what == "goaway1":
                sock.close()
        except OSError:
            pass


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory):
    return make_tls(Path(tmp_path_factory.mktemp("tls")))  # a key pair takes a second: once per module


@pytest.fixture
def serve(tls_files) -> Iterator:
    tls = tls_files
    servers: list[StreamServer] = []

    def start(behaviours: list[str]) -> tuple[H2Server, PooledHttpSession]:
        script = H2Server(behaviours)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        srv = StreamServer(("127.0.0.1", 0), script.handle, ssl_context=ctx)
        srv.start()
        servers.append(srv)
        # no browser lags (transport/lags.py): requests issued together reach the pool at once, so a test
        # can hold three before the protocol is known
        http = PooledHttpSession(Endpoint.from_url(f"https://127.0.0.1:{srv.server_port}"), timeout=3.0,
                                 tls=tls_context(str(tls.ca_file)), lags=NONE)
        return script, http

    yield start
    for s in servers:
        s.stop(timeout=1)


def _get(http: PooledHttpSession, path: str) -> str:
    return http.request("GET", path).body.decode()


def test_concurrent_requests_share_one_session(serve) -> None:
    script, http = serve(["ok", "slow"])
    assert _get(http, "/first") == "1:/first"  # the handshake: now the origin is known to speak h2
    gs = [gevent.spawn(_get, http, f"/r{i}") for i in range(3)]
    gevent.joinall(gs, timeout=5, raise_error=True)
    assert sorted(g.value for g in gs) == ["1:/r0", "1:/r1", "1:/r2"]
    assert http.request("POST", "/p", b"x" * 200_000).body == b"1:/p"  # a body past the 64 KiB window
    assert http.protocol == "h2" and script.accepted == 1 and http.connections_opened == 1
    http.close()
    assert http.open_connections == 0


def test_requests_before_the_protocol_is_known_end_on_the_first_session(serve) -> None:
    """Three at once on a fresh pool: HTTP/1.1 rules start three connects; the first up as h2
    carries all three and the others are closed unused."""
    script, http = serve([])
    gs = [gevent.spawn(_get, http, f"/r{i}") for i in range(3)]
    gevent.joinall(gs, timeout=5, raise_error=True)
    conns = {g.value.split(":")[0] for g in gs}
    assert len(conns) == 1 and script.accepted == 3, [g.value for g in gs]
    assert len({cid for _, cid in http.served}) == 1
    gevent.sleep(0.05)
    assert http.open_connections == 1
    http.close()


def test_after_goaway_the_next_request_sets_up_a_new_session(serve) -> None:
    script, http = serve(["goaway1", "ok"])
    assert _get(http, "/a") == "1:/a"
    gevent.sleep(0.1)  # GOAWAY and the close arrive
    assert _get(http, "/b") == "2:/b"
    assert script.accepted == 2 and http.open_connections == 1
    http.close()


def test_a_stream_the_server_never_answered_is_sent_once_more(serve) -> None:
    script, http = serve(["drop", "ok"])
    assert _get(http, "/a") == "2:/a"  # no answer on the first session: retried on a new one
    assert script.accepted == 2
    http.close()


def test_close_fails_a_stream_in_flight(serve) -> None:
    from locustfiles.sio.transport.errors import TransportError

    _script, http = serve(["slow"])
    g = gevent.spawn(_get, http, "/parked")
    gevent.sleep(0.1)
    http.close()
    g.join(timeout=2)
    assert isinstance(g.exception, TransportError) and g.exception.kind == "transport_closed"
