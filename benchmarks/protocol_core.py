"""Throughput of the pure sans-IO client core (no sockets): how much of the driver's CPU
budget the protocol logic takes.

The driver's floor is 1,200 websocket-only handshakes per CPU-second for the whole client, so
the core must stay well under a fifth of that budget (i.e. >= 6,000/s here). Also measures
what reusing python-engineio / python-socketio packet codecs costs against the cheapest
hand-written decode, to justify the reuse.

Run: .venv/bin/python benchmarks/protocol_core.py [--seconds 1.0]   (last line: one JSON object)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# locustfiles.sio imports locust, which gevent-patches ssl: it must come before engineio/socketio.
from locustfiles.sio.protocol.actions import HttpRequest  # noqa: I001
from locustfiles.sio.protocol.client import ClientProtocol
from engineio import packet as eio_packet
from socketio import packet as sio_packet

OPEN = '0{"sid":"S1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


def ws_only_session(rng: random.Random) -> None:
    c = ClientProtocol(transports=("websocket",), rng=rng)
    c.start(0.0)
    c.ws_opened(0.001, node="n1")
    c.ws_message(OPEN, 0.002)
    c.ws_message('40{"sid":"X1"}', 0.003)
    c.disconnect(0.004)


def full_session(rng: random.Random) -> None:
    c = ClientProtocol(rng=rng)
    (hs,) = c.start(0.0)
    a = c.http_response(hs.rid, 200, OPEN.encode(), 0.01, node="n1")
    post, poll = [x for x in a if isinstance(x, HttpRequest)]
    c.http_response(post.rid, 200, b"ok", 0.011, node="n1")
    c.ws_opened(0.012, node="n1")
    a = c.http_response(poll.rid, 200, b'40{"sid":"X1"}', 0.02, node="n1")
    poll = [x for x in a if isinstance(x, HttpRequest)][0]
    c.ws_message("3probe", 0.021)
    c.http_response(poll.rid, 200, b"6", 0.022, node="n1")
    c.disconnect(0.03)


def rate(fn, seconds: float) -> float:
    """Calls per CPU-second of this process."""
    n, t0 = 0, time.process_time()
    deadline = t0 + seconds
    while True:
        for _ in range(200):
            fn()
        n += 200
        t = time.process_time()
        if t >= deadline:
            return n / (t - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per measurement")
    s = ap.parse_args().seconds
    rng = random.Random(1)

    ws = rate(lambda: ws_only_session(rng), s)
    full = rate(lambda: full_session(rng), s)

    c = ClientProtocol(transports=("websocket",), rng=rng)
    c.start(0.0)
    c.ws_opened(0.0)
    c.ws_message(OPEN, 0.0)
    c.ws_message('40{"sid":"X"}', 0.0)
    payload = {"room": "room-1", "id": "m1", "sent": 1.0, "from": "u1", "pad": "x" * 64}

    def acked() -> None:
        aid, _ = c.emit("echo", payload, ack=True, now=1.0)
        c.ws_message(f'43{aid}[{json.dumps(payload, separators=(",", ":"))}]', 1.001)

    acks = rate(acked, s)

    # The cost of reuse: library decoders vs the cheapest hand-written equivalent.
    frame = '42["broadcast",{"room":"room-1","id":"m1","sent":1.0,"from":"u1","pad":"xxxxxxxx"}]'
    sio_frame = frame[1:]  # the Socket.IO packet inside the Engine.IO message
    lib_eio = rate(lambda: eio_packet.Packet(encoded_packet=frame), s / 2)
    hand_eio = rate(lambda: (int(frame[0]), frame[1:]), s / 2)
    lib_sio = rate(lambda: sio_packet.Packet(encoded_packet=sio_frame), s / 2)
    hand_sio = rate(lambda: json.loads(sio_frame[1:]), s / 2)

    budget_us = 1e6 / 1200
    result = {
        "ws_only_handshakes_per_cpu_s": round(ws),
        "full_polling_ws_handshakes_per_cpu_s": round(full),
        "acked_emits_per_cpu_s": round(acks),
        "ws_only_core_us": round(1e6 / ws, 1),
        "ws_only_share_of_driver_budget": round((1e6 / ws) / budget_us, 3),
        "eio_decode_lib_per_s": round(lib_eio),
        "eio_decode_hand_per_s": round(hand_eio),
        "sio_decode_lib_per_s": round(lib_sio),
        "sio_decode_hand_json_per_s": round(hand_sio),
        "python": sys.version.split()[0],
    }
    print(f"websocket-only connect+disconnect: {result['ws_only_handshakes_per_cpu_s']:,}/CPU-s "
          f"({result['ws_only_core_us']} us, {result['ws_only_share_of_driver_budget']:.1%} of the driver's "
          f"1,200/s budget)")
    print(f"polling->websocket connect+upgrade+disconnect: {result['full_polling_ws_handshakes_per_cpu_s']:,}/CPU-s")
    print(f"acked emits (emit + ack decode): {result['acked_emits_per_cpu_s']:,}/CPU-s")
    print(f"engineio Packet decode {lib_eio:,.0f}/s vs hand {hand_eio:,.0f}/s; "
          f"socketio Packet decode {lib_sio:,.0f}/s vs json.loads alone {hand_sio:,.0f}/s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
