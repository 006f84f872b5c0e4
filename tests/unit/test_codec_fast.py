"""codec.decode_text_packet's fast path gives exactly what engineio's Packet.decode gives."""

from __future__ import annotations

import random

import pytest

from locustfiles.sio.protocol import codec

eio_packet = codec.eio_packet  # engineio's own decoder (imported after locust's gevent patching)

CORPUS = [
    "6", "2", "3", "1", "5", "3probe", "2probe", "4hello", "4", "40", "41", '40{"sid":"abc"}', "40/chat,",
    '42["echo",1]', '430[{"a":1}]', "44{\"message\":\"no\"}", '451-["e",{"_placeholder":true,"num":0}]',
    '0{"sid":"x","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
    "0{bad json", "4[1,2", "4{}", "4[]", '4["é😀"]', "4true", "4false", "4null", "4NaN", "4Infinity",
    "4-Infinity", "4-1", "41.5", "4 1", '4"str"', "4 {}", "4tru", "4nul", "4probe", "4Probe", "4é", "4٣x",
    "4\u00b2", "4" + "1" * 150, "4[" + "1" * 150 + "]", "4{\"a\":" + "9" * 120 + "}", '4{"a":1} x', "4\x00",
    "4_x", "4@", "4é{}", "4{\"a\":[1,2,{\"b\":null}]}", "4[1e5, 2.5, -3]", "4😀",
]


def _engineio(s: str) -> tuple[int, object]:
    p = eio_packet.Packet(encoded_packet=s)
    return p.packet_type, p.data


@pytest.mark.parametrize("s", CORPUS)
def test_fast_path_equals_engineio(s):
    got = codec.decode_text_packet(s)
    want = _engineio(s)
    assert got == want
    assert type(got[1]) is type(want[1])


def test_fast_path_equals_engineio_fuzz():
    rng = random.Random(5)
    alphabet = '0123456789{}[]",:.-+eE tfnNIabpr\\é😀'
    for _ in range(5000):
        s = rng.choice("0123456") + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        got = codec.decode_text_packet(s)
        want = _engineio(s)
        assert got == want and type(got[1]) is type(want[1]), s
