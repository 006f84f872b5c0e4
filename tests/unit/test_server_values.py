"""What a server sends never reaches the wire raw and never raises (issue 9, class 1).

The sans-IO core is driven without sockets: every value a server chooses that the client puts
into a URL (the open packet's sid above all) comes out percent-encoded exactly as
engine.io-client's query encoding (encodeURIComponent) does, so both transports receive an
ASCII query with no byte that could end a request line or start a header. Everything else the
open packet carries is checked against what a browser's timers can hold, and malformed JSON at
every step is a classified protocol_error.
"""

from __future__ import annotations

import json
import random
import re
from urllib.parse import parse_qs

import pytest

from locustfiles.sio.protocol.actions import Closed, HttpRequest, OpenWebSocket, StepResult
from locustfiles.sio.protocol.client import ClientProtocol
from locustfiles.sio.protocol.codec import encode_uri_component
from tests.unit.protocol_helpers import of

# What may appear in an encoded query: RFC 3986 unreserved + encodeURIComponent's extra marks,
# "%XX" escapes and the separators the client itself writes.
_WIRE_SAFE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=]*")


def _open(sid: object, **extra: object) -> bytes:
    doc = {"sid": sid, "upgrades": ["websocket"], "pingInterval": 25000, "pingTimeout": 20000,
           "maxPayload": 1000000}
    doc.update(extra)
    return b"0" + json.dumps(doc).encode()


def _handshake(sid: object, eio: int = 4, **extra: object) -> tuple[ClientProtocol, list]:
    c = ClientProtocol(eio=eio, rng=random.Random(1))
    (hs,) = c.start(0.0)
    body = _open(sid, **extra)
    if eio == 3:
        body = f"{len(body.decode())}:{body.decode()}".encode()
    return c, c.http_response(hs.rid, 200, body, 0.01)


def _queries(actions: list) -> list[str]:
    return [a.query for a in actions if isinstance(a, HttpRequest | OpenWebSocket)]


HOSTILE_SIDS = [
    "ab\r\nX-Injected: 1\r\nHost: evil",  # the reproducer: header injection
    "s\u2603id",  # the reproducer: non-ASCII (UnicodeEncodeError in both transports)
    "a&b=c",  # would add query parameters
    "a b",  # would end the request line early
    "a#b?c/d%41",  # fragment, path and an escape that must not be taken as one
    "\x00\x01\x7f\x80\x9f",  # control characters, C1 included
    "\U0001f600",  # astral plane: 4 UTF-8 bytes
    "x" * 1000,
]


@pytest.mark.parametrize("sid", HOSTILE_SIDS)
@pytest.mark.parametrize("eio", [3, 4])
def test_server_sid_is_percent_encoded_like_engine_io_client(sid: str, eio: int) -> None:
    c, a = _handshake(sid, eio=eio)
    assert c.state == "connecting" and c.eio_sid == sid  # the rows keep the server's own value
    qs = _queries(a)
    assert len(qs) == (3 if eio == 4 else 2) and all("sid=" in q for q in qs), a
    for q in qs:
        assert q.isascii() and _WIRE_SAFE.fullmatch(q), q
        assert parse_qs(q, keep_blank_values=True)["sid"] == [sid]  # what the server decodes
    # encodeURIComponent keeps A-Z a-z 0-9 - _ . ! ~ * ' ( ) and escapes every other UTF-8 byte
    assert f"sid={encode_uri_component(sid)}" in qs[0]


def test_crlf_sid_reproducer_exact_bytes() -> None:
    c, a = _handshake("ab\r\nX-Injected: 1\r\nHost: evil")
    post = of(a, HttpRequest)[0]
    assert "&sid=ab%0D%0AX-Injected%3A%201%0D%0AHost%3A%20evil&t=" in post.query
    probe = of(a, OpenWebSocket)[0]
    assert probe.query == "EIO=4&transport=websocket&sid=ab%0D%0AX-Injected%3A%201%0D%0AHost%3A%20evil"


def test_non_ascii_sid_reproducer_exact_bytes() -> None:
    _, a = _handshake("s\u2603id")
    assert of(a, OpenWebSocket)[0].query == "EIO=4&transport=websocket&sid=s%E2%98%83id"


def test_encode_uri_component_matches_the_browser() -> None:
    # Values from a browser console: encodeURIComponent(...)
    assert encode_uri_component("AZaz09-_.!~*'()") == "AZaz09-_.!~*'()"
    assert encode_uri_component(" &=+/?#%:@$,;") == "%20%26%3D%2B%2F%3F%23%25%3A%40%24%2C%3B"
    assert encode_uri_component("\u00e9\u2603\U0001f600") == "%C3%A9%E2%98%83%F0%9F%98%80"
    with pytest.raises(ValueError):  # a lone surrogate: the browser throws URIError
        encode_uri_component("\ud800")


@pytest.mark.parametrize("sid", [
    "\ud800x",  # lone surrogate: encodeURIComponent throws URIError, no browser could send it
    "y" * 4097,  # longer than MAX_SID_CHARS
    "", 7, None, ["a"],
])
def test_unsendable_sid_is_a_protocol_error(sid: object) -> None:
    c, a = _handshake(sid)
    steps = [(s.step, s.error_kind) for s in of(a, StepResult)]
    assert steps == [("handshake", "protocol_error"), ("connect", "protocol_error")], a
    assert of(a, Closed)[0].error_kind == "protocol_error" and not _queries(a)


def test_user_query_is_encoded_like_engine_io_client() -> None:
    c = ClientProtocol(query={"token": "a b&c", "\u00e9": "1"}, rng=random.Random(1))
    (hs,) = c.start(0.0)
    assert hs.query.startswith("token=a%20b%26c&%C3%A9=1&EIO=4&transport=polling&t=")


# -- the rest of the open packet ----------------------------------------------------------------
IMPOSSIBLE = [
    ("pingInterval", 0), ("pingInterval", -1), ("pingInterval", -1e20), ("pingInterval", float("nan")),
    ("pingInterval", float("inf")), ("pingInterval", 1e308), ("pingInterval", 2**31),
    ("pingInterval", 10**30), ("pingInterval", "25000"), ("pingInterval", None), ("pingInterval", True),
    ("pingInterval", [25000]), ("pingInterval", 0.4),
    ("pingTimeout", 0), ("pingTimeout", -5), ("pingTimeout", float("nan")), ("pingTimeout", 2**31),
    ("pingTimeout", "x"), ("pingTimeout", False),
    ("maxPayload", 0), ("maxPayload", -1), ("maxPayload", float("inf")), ("maxPayload", 2**53),
    ("maxPayload", "1e6"),
    ("upgrades", "websocket"), ("upgrades", [1]), ("upgrades", None),
]


@pytest.mark.parametrize(("key", "value"), IMPOSSIBLE)
@pytest.mark.parametrize("eio", [3, 4])
def test_impossible_open_values_are_protocol_errors(key: str, value: object, eio: int) -> None:
    c = ClientProtocol(eio=eio, rng=random.Random(1))
    (hs,) = c.start(0.0)
    doc = json.loads(_open("S1")[1:])
    doc[key] = value
    text = "0" + json.dumps(doc)  # json.dumps writes NaN / Infinity, as a broken server would
    body = (f"{len(text)}:{text}" if eio == 3 else text).encode()
    a = c.http_response(hs.rid, 200, body, 0.01)
    hs_step = [s for s in of(a, StepResult) if s.step == "handshake"]
    assert hs_step and hs_step[0].error_kind == "protocol_error", a
    assert key in hs_step[0].error, hs_step[0].error
    assert c.state == "closed" and c.next_deadline() is None


def test_ping_interval_plus_timeout_must_fit_a_browser_timer() -> None:
    # socket.io-client arms setTimeout(pingInterval + pingTimeout); beyond 2^31-1 ms a browser
    # fires it at once (a tight loop), so the pair is refused even when each value fits.
    c, a = _handshake("S1", pingInterval=2**30, pingTimeout=2**30)
    assert of(a, Closed)[0].error_kind == "protocol_error"
    assert "pingInterval + pingTimeout" in of(a, Closed)[0].error


@pytest.mark.parametrize(("pi", "pt"), [(1, 1), (25000, 20000), (2**31 - 2, 1), (25000.0, 5000.0)])
def test_possible_ping_values_are_accepted_and_arm_a_finite_timer(pi: float, pt: float) -> None:
    c, a = _handshake("S1", pingInterval=pi, pingTimeout=pt)
    assert c.state == "connecting", a
    d = c.next_deadline()
    assert d is not None and 0.0 < d < 2**31 / 1000.0 + 1


# -- malformed JSON at every step ----------------------------------------------------------------
BAD_JSON = ['{"a":', "[1,", '{"a":1}}', "[" * 100_000 + "]" * 100_000, '"\\ud800"x',
            "[" + "9" * 5000 + "]", '{"a":NaN', "\x00", "[\"\\u12\"]"]


def _connected(eio: int = 4, transports=("polling",)) -> tuple[ClientProtocol, HttpRequest]:
    c = ClientProtocol(eio=eio, transports=transports, rng=random.Random(1))
    (hs,) = c.start(0.0)
    if eio == 3:  # EIO3: length-prefixed payloads, and the server sends CONNECT on its own
        text = _open("S1", upgrades=[]).decode()
        (poll,) = of(c.http_response(hs.rid, 200, f"{len(text)}:{text}".encode(), 0.01), HttpRequest)
        (poll,) = of(c.http_response(poll.rid, 200, b"2:40", 0.03), HttpRequest)
        return c, poll
    post, poll = of(c.http_response(hs.rid, 200, _open("S1", upgrades=[]), 0.01), HttpRequest)
    c.http_response(post.rid, 200, b"ok", 0.02)
    (poll,) = of(c.http_response(poll.rid, 200, b'40{"sid":"X"}', 0.03), HttpRequest)
    return c, poll


@pytest.mark.parametrize("bad", BAD_JSON)
def test_malformed_json_in_the_open_packet(bad: str) -> None:
    c = ClientProtocol(rng=random.Random(1))
    (hs,) = c.start(0.0)
    a = c.http_response(hs.rid, 200, ("0" + bad).encode("utf-8", "surrogatepass"), 0.01)
    assert of(a, Closed)[0].error_kind == "protocol_error"
    assert [s.step for s in of(a, StepResult)] == ["handshake", "connect"]


@pytest.mark.parametrize("bad", BAD_JSON)
def test_malformed_json_in_the_connect_answer(bad: str) -> None:
    c = ClientProtocol(transports=("polling",), rng=random.Random(1))
    (hs,) = c.start(0.0)
    _post, poll = of(c.http_response(hs.rid, 200, _open("S1", upgrades=[]), 0.01), HttpRequest)
    a = c.http_response(poll.rid, 200, ("40" + bad).encode("utf-8", "surrogatepass"), 0.02)
    assert [(s.step, s.error_kind) for s in of(a, StepResult)] == [("connect", "protocol_error")]


@pytest.mark.parametrize("bad", BAD_JSON)
@pytest.mark.parametrize("prefix", ["42", "421", "43", "430", "451-", "461-"])
def test_malformed_json_in_events_and_acks(bad: str, prefix: str) -> None:
    c, poll = _connected()
    c.emit("echo", 1, ack=True, now=0.5)
    a = c.http_response(poll.rid, 200, (prefix + bad).encode("utf-8", "surrogatepass"), 1.0)
    assert of(a, Closed)[0].error_kind == "protocol_error", a
    assert {s.error_kind for s in of(a, StepResult)} == {"protocol_error"}


@pytest.mark.parametrize("bad", BAD_JSON)
def test_malformed_json_over_websocket(bad: str) -> None:
    c = ClientProtocol(transports=("websocket",), rng=random.Random(1))
    c.start(0.0)
    c.ws_opened(0.0)
    c.ws_message(_open("S1", upgrades=[]).decode(), 0.01)
    a = c.ws_message("40" + bad, 0.02)
    assert of(a, Closed)[0].error_kind == "protocol_error"


# -- bounded work per payload ----------------------------------------------------------------------
@pytest.mark.parametrize("eio", [3, 4])
def test_ping_flood_payload_is_refused_by_a_named_limit(eio: int) -> None:
    # 16 MiB of "2\x1e2\x1e..." was 8 M packets handled in one go: seconds of a frozen process,
    # hundreds of MB of objects, and as many pong packets and ping rows.
    from locustfiles.sio.protocol.codec import MAX_PAYLOAD_PACKETS

    c, poll = _connected(eio=eio)
    n = 4_000_000
    body = b"2\x1e" * (n - 1) + b"2" if eio == 4 else b"1:2" * n
    a = c.http_response(poll.rid, 200, body, 1.0)  # refused whole: no pong, no ping row per packet
    closed = of(a, Closed)[0]
    assert closed.error_kind == "protocol_error" and "MAX_PAYLOAD_PACKETS" in closed.error
    assert len(a) < 10 and MAX_PAYLOAD_PACKETS >= 10_000


@pytest.mark.parametrize("eio", [3, 4])
def test_a_large_legitimate_batch_is_accepted(eio: int) -> None:
    c, poll = _connected(eio=eio)
    msgs = [f'42["broadcast",{{"id":"{i}"}}]' for i in range(5_000)]
    body = ("\x1e".join(msgs) if eio == 4 else "".join(f"{len(m)}:{m}" for m in msgs)).encode()
    a = c.http_response(poll.rid, 200, body, 1.0)
    assert not of(a, Closed) and c.state == "connected"
