"""The browser pool's HTTP/2 side without sockets (issue 13): which connection, or which session,
each request of a socket.io session gets, and the HTTP/2 framing against h2's own server side."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from locustfiles.sio.transport import h2codec
from locustfiles.sio.transport.errors import TransportError
from locustfiles.sio.transport.h2codec import GoAway, H2Codec, Response, StreamFailed
from locustfiles.sio.transport.h2pool import BrowserPool, Stream
from locustfiles.sio.transport.pool import Close, Connect, Fail, PoolPolicy, Send


# -- which connection (BrowserPool) ---------------------------------------------------------------
def _engineio_start(pool: BrowserPool, protocol: str) -> None:
    """Handshake GET on a new connection, then its answer: the origin's protocol is known."""
    assert pool.request(1, 0.0) == [Connect(1)]
    got = pool.connected(1, protocol, 0.01)
    assert got == ([Stream(1, 1)] if protocol == "h2" else [Send(1, 1, False)])
    if protocol != "h2":
        assert pool.released(1, 0.02) == []


@pytest.mark.parametrize("post_answers_first", [True, False])
def test_http11_the_first_poll_takes_whichever_connection_frees_first(post_answers_first: bool) -> None:
    """ALPN http/1.1: the HTTP/1.1 group's late binding, as before (both race regimes)."""
    pool = BrowserPool()
    _engineio_start(pool, "http/1.1")
    assert pool.request(2, 0.03) == [Send(2, 1, True)]  # the CONNECT POST reuses the handshake's
    assert pool.request(3, 0.031) == [Connect(2)]  # the first poll GET starts a connect and waits
    if post_answers_first:
        assert pool.released(1, 0.04) == [Send(3, 1, True)]  # regime (a): rides the handshake's
        assert pool.connected(2, "http/1.1", 0.08) == []  # the loser goes idle
    else:
        assert pool.connected(2, "http/1.1", 0.04) == [Send(3, 2, False)]  # regime (b): the new one
    assert pool.protocol == "http/1.1"


@pytest.mark.parametrize("post_answers_first", [True, False])
def test_h2_every_request_is_a_stream_on_the_one_session(post_answers_first: bool) -> None:
    """ALPN h2: no second connection, so the first poll rides the handshake's in both regimes."""
    pool = BrowserPool()
    _engineio_start(pool, "h2")
    assert pool.request(2, 0.03) == [Stream(2, 1)]  # the CONNECT POST
    assert pool.request(3, 0.031) == [Stream(3, 1)]  # the first poll, while the POST is in flight
    assert pool.request(4, 0.05 if post_answers_first else 0.032) == [Stream(4, 1)]
    assert pool.protocol == "h2" and pool.h1.conns == {}


def test_requests_waiting_in_the_http11_group_move_to_the_new_session() -> None:
    pool = BrowserPool()
    assert pool.request(1, 0.0) == [Connect(1)]
    assert pool.request(2, 0.0) == [Connect(2)]  # the protocol is not known yet: HTTP/1.1 rules
    assert pool.connected(2, "h2", 0.01) == [Stream(1, 2), Stream(2, 2)]  # oldest first
    assert pool.connected(1, "h2", 0.02) == [Close(1, "a second HTTP/2 connection: the origin's session is up")]
    assert pool.h1.conns == {} and pool.session == 2


def test_a_lost_session_is_set_up_again_and_later_requests_wait_for_it() -> None:
    pool = BrowserPool()
    _engineio_start(pool, "h2")
    assert pool.closed(1, 1.0) == []
    assert pool.request(2, 1.1) == [Connect(2)]
    assert pool.request(3, 1.1) == []  # waits for the session being set up: no second connection
    assert pool.connected(2, "h2", 1.2) == [Stream(2, 2), Stream(3, 2)]


def test_goaway_sends_new_requests_to_a_new_session() -> None:
    pool = BrowserPool()
    _engineio_start(pool, "h2")
    assert pool.goaway(1) == []
    assert pool.request(2, 1.0) == [Connect(2)]
    assert pool.closed(1, 1.1) == []  # the old one ends after its streams: nothing to do
    assert pool.connected(2, "h2", 1.2) == [Stream(2, 2)]


def test_a_server_that_stops_offering_h2_hands_its_waiters_to_the_http11_group() -> None:
    pool = BrowserPool()
    _engineio_start(pool, "h2")
    pool.closed(1, 1.0)
    assert pool.request(2, 1.0) == [Connect(2)]
    assert pool.request(3, 1.0) == []
    assert pool.connected(2, "http/1.1", 1.1) == [Send(2, 2, False), Connect(3)]  # r3 gets a connect
    assert pool.protocol == "http/1.1"
    assert pool.connected(3, "http/1.1", 1.2) == [Send(3, 3, False)]


def test_a_failed_session_connect_fails_one_waiter_and_the_next_connects() -> None:
    pool = BrowserPool()
    _engineio_start(pool, "h2")
    pool.closed(1, 1.0)
    pool.request(2, 1.0)
    pool.request(3, 1.0)
    assert pool.connect_failed(2, "connection_refused", "refused", 1.1) == [
        Fail(2, "connection_refused", "refused"), Connect(3)]
    assert pool.connected(3, "h2", 1.2) == [Stream(3, 3)]


def test_cancel_and_shutdown() -> None:
    pool = BrowserPool()
    _engineio_start(pool, "h2")
    pool.closed(1, 1.0)
    pool.request(2, 1.0)
    pool.request(3, 1.0)
    assert pool.cancel(2, 1.01) == [] and list(pool.waiting) == [3]
    assert pool.shutdown() == [Fail(3, "transport_closed", "HTTP session closed")]
    assert pool.request(4, 1.1) == [Fail(4, "transport_closed", "HTTP session closed")]
    assert pool.connected(2, "h2", 1.2) == [Close(2, "HTTP session closed")]


def test_http11_only_matches_the_bare_group_step_for_step() -> None:
    """With ALPN http/1.1 the browser pool is the HTTP/1.1 group, nothing added."""
    pool, bare = BrowserPool(PoolPolicy(max_connections=2)), PoolPolicy(max_connections=2)
    script = [("request", 1), ("request", 2), ("request", 3), ("connected", 2), ("released", 2),
              ("connected", 1), ("closed", 1), ("released", 2)]
    for t, (op, x) in enumerate(script):
        if op == "request":
            got, want = pool.request(x, t), bare.request(x, t)
        elif op == "connected":
            got, want = pool.connected(x, "http/1.1", t), bare.connected(x, t)
        else:
            got, want = getattr(pool, op)(x, t), getattr(bare, op)(x, t)
        assert got == want, (op, x)


# -- framing (H2Codec) against h2's server side -------------------------------------------------
def _server() -> h2.connection.H2Connection:
    srv = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="latin-1"))
    srv.initiate_connection()
    return srv


def _pump(client: H2Codec, srv: h2.connection.H2Connection) -> tuple[list, list]:
    """Exchange bytes until both sides are quiet: (server events, client results)."""
    events, results = [], []
    for _ in range(20):
        a = client.data_to_send()
        if a:
            events += srv.receive_data(a)
        b = srv.data_to_send()
        if b:
            results += client.receive(b)
        if not a and not b:
            break
    return events, results


def test_chromium_settings_and_header_order_reach_the_server() -> None:
    client, srv = H2Codec(), _server()
    sid = client.request("POST", "lb:443", "/socket.io/?EIO=4&sid=x", [("user-agent", "ua"), ("cookie", "a=1")], b"40")
    events, _ = _pump(client, srv)
    settings = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)).changed_settings
    assert settings[h2.settings.SettingCodes.ENABLE_PUSH].new_value == 0
    assert settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value == 6 * 1024 * 1024
    req = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert req.stream_id == sid and [k for k, _ in req.headers][:4] == [":method", ":authority", ":scheme", ":path"]
    assert dict(req.headers)[":path"] == "/socket.io/?EIO=4&sid=x"
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"40"
    assert srv.outbound_flow_control_window >= 15 * 1024 * 1024  # the connection window Chromium opens


def test_streams_answered_out_of_order_each_get_their_response() -> None:
    client, srv = H2Codec(), _server()
    get = client.request("GET", "lb", "/poll", [])
    post = client.request("POST", "lb", "/post", [], b"x" * 100_000)  # past the 65,535-byte default window
    _pump(client, srv)
    srv.send_headers(post, [(":status", "200"), ("x-served-by", "n2"), ("set-cookie", "a=1"), ("set-cookie", "b=2")])
    srv.send_data(post, b"ok", end_stream=True)
    _, results = _pump(client, srv)
    srv.send_headers(get, [(":status", "200")])
    srv.send_data(get, b"4hello", end_stream=False)
    srv.send_data(get, b"!", end_stream=True)
    _, results2 = _pump(client, srv)
    [r1], [r2] = results, results2
    assert isinstance(r1, Response) and r1.sid == post and r1.response.body == b"ok"
    assert r1.response.headers["x-served-by"] == "n2" and r1.response.set_cookie == ["a=1", "b=2"]
    assert isinstance(r2, Response) and r2.sid == get and r2.response.body == b"4hello!"


def test_goaway_fails_only_the_streams_the_server_did_not_take() -> None:
    client, srv = H2Codec(), _server()
    first, second = client.request("GET", "lb", "/a", []), client.request("GET", "lb", "/b", [])
    _pump(client, srv)
    srv.close_connection(last_stream_id=first)
    _, results = _pump(client, srv)
    assert GoAway(first, 0) in results
    assert StreamFailed(second, "transport_closed", "HTTP/2 GOAWAY before the server took the stream", True) in results
    with pytest.raises(TransportError):
        client.request("GET", "lb", "/c", [])
    assert client.lost("transport_closed", "eof") == [StreamFailed(first, "transport_closed", "eof", True)]


@pytest.mark.parametrize(("code", "retry"), [(h2.errors.ErrorCodes.REFUSED_STREAM, True),
                                             (h2.errors.ErrorCodes.INTERNAL_ERROR, False)])
def test_a_reset_stream_is_retried_only_when_refused(code: h2.errors.ErrorCodes, retry: bool) -> None:
    client, srv = H2Codec(), _server()
    sid = client.request("GET", "lb", "/a", [])
    _pump(client, srv)
    srv.reset_stream(sid, code)
    _, [r] = _pump(client, srv)
    assert isinstance(r, StreamFailed) and r.unprocessed is retry and r.kind == "connection_reset"


def test_an_oversized_body_fails_its_stream_and_a_bad_frame_the_connection(monkeypatch) -> None:
    monkeypatch.setattr(h2codec, "MAX_BODY_BYTES", 1000)
    client, srv = H2Codec(), _server()
    sid = client.request("GET", "lb", "/a", [])
    _pump(client, srv)
    srv.send_headers(sid, [(":status", "200")])
    srv.send_data(sid, b"x" * 1500)
    _, results = _pump(client, srv)
    assert [r.kind for r in results if isinstance(r, StreamFailed)] == ["protocol_error"]
    with pytest.raises(TransportError) as ei:
        H2Codec().receive(b"\x00\x00\x04\x09\x00\x00\x00\x00\x07garbage!")
    assert ei.value.kind == "protocol_error"
