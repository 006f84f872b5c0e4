"""Engine.IO payload codecs and the backoff function, from the protocol documents' samples."""

from __future__ import annotations

import pytest

from locustfiles.sio.protocol import codec
from locustfiles.sio.protocol.backoff import reconnect_delay_ms
from locustfiles.sio.protocol.classify import classify_http, is_session_unknown


def test_v4_payload_sample_from_the_spec():
    # engine.io-protocol README: 4hello\x1e2\x1e4world and 4hello\x1ebAQIDBA==
    assert codec.decode_payload_v4(b"4hello\x1e2\x1e4world") == [(4, "hello"), (2, ""), (4, "world")]
    assert codec.decode_payload_v4(b"4hello\x1ebAQIDBA==") == [(4, "hello"), (4, b"\x01\x02\x03\x04")]
    assert codec.encode_payload_v4(["4hello", b"\x01\x02\x03\x04"]) == (
        b"4hello\x1ebAQIDBA==", "text/plain;charset=UTF-8")


def test_v4_payload_with_more_than_16_packets():
    body = "\x1e".join(['42["e"]'] * 40).encode()
    assert len(codec.decode_payload_v4(body)) == 40


def test_v3_text_samples_from_the_spec():
    assert codec.split_v3_text('11:42["hello"]11:42["world"]') == ['42["hello"]', '42["world"]']
    assert codec.decode_payload_v3("2:4€".encode()) == [(4, "€")]
    assert codec.decode_payload_v3(b"10:b4AQIDBA==") == [(4, b"\x01\x02\x03\x04")]
    assert codec.encode_payload_v3(["4€", "2"]) == ("2:4€1:2".encode(), "text/plain;charset=UTF-8")
    assert codec.utf16_len("a😀") == 3


def test_v3_non_bmp_lengths_roundtrip():
    packets = ['42["😀😀"]', "4é", '42["𝄞x"]']
    body, ctype = codec.encode_payload_v3(packets)
    assert body.startswith(b"10:")
    assert codec.split_v3_text(body.decode()) == packets


@pytest.mark.parametrize("s", ["", "9", "x", "٣", "4" * 0])
def test_bad_text_packets(s):
    with pytest.raises(ValueError):
        codec.decode_text_packet(s)


def test_classify_both_server_wordings():
    assert is_session_unknown(400, b'{"code":1,"message":"Session ID unknown"}')
    assert is_session_unknown(400, b'"Invalid session Vfa5Ul5cdE23LNbpAAAD"')
    assert is_session_unknown(400, b"Session ID unknown")
    assert not is_session_unknown(400, b"")  # overlapping GET: bare 400
    assert not is_session_unknown(200, b'"Invalid session x"')
    assert classify_http(400, b"", handshake=False) == ("http_400", "HTTP 400")
    assert classify_http(400, b'{"code":3,"message":"Bad request"}', handshake=True)[0] == "handshake_rejected"
    assert classify_http(503, b"", handshake=True)[0] == "http_503"


def test_backoff_matches_backo2():
    # rand picks the deviation and, via floor(rand*10) parity, its sign
    assert reconnect_delay_ms(1, 0.0) == 1000
    assert reconnect_delay_ms(1, 0.45) == 775  # floor(4.5)=4 even: 1000 - 225
    assert reconnect_delay_ms(1, 0.5) == 1250  # floor(5)=5 odd: 1000 + 250
    assert reconnect_delay_ms(1, 0.99) == 1495
    assert reconnect_delay_ms(2, 0.99) == 2990
    assert reconnect_delay_ms(3, 0.99) == 5000  # 4000 + 1980, capped
    assert reconnect_delay_ms(3, 0.05) == 3900  # floor(0.5)=0 even: 4000 - 100
    assert reconnect_delay_ms(10, 0.0) == 5000
    assert reconnect_delay_ms(10_000, 0.3) == 5000


def test_backoff_ranges_from_the_docs():
    rands = [i / 1000 for i in range(1000)]
    a1 = [reconnect_delay_ms(1, r) for r in rands]
    a2 = [reconnect_delay_ms(2, r) for r in rands]
    a3 = [reconnect_delay_ms(3, r) for r in rands]
    assert 500 <= min(a1) and max(a1) < 1500
    assert 1000 <= min(a2) and max(a2) < 3000
    assert 2000 <= min(a3) and max(a3) <= 5000
    with pytest.raises(ValueError):
        reconnect_delay_ms(0, 0.5)
    with pytest.raises(ValueError):
        reconnect_delay_ms(1, 1.0)
