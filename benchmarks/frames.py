"""WebSocket frame parsing: sioscale's reader vs wsproto's FrameProtocol, per CPU-second.

Run: .venv/bin/python benchmarks/frames.py [--frames 200000] [--size 100]

Both parse the same stream of unmasked server text frames (`--size` bytes each) from memory:
sioscale's `WebSocket.recv()` (every check of issue 9 included, UTF-8 decoded) over an in-memory
socket, and wsproto's `FrameProtocol.received_frames()`. The figure behind the comment at the
top of locustfiles/sio/transport/websocket.py on why the frame parser stays hand-written.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsproto.frame_protocol import FrameProtocol

from locustfiles.sio.transport.http import HttpConnection
from locustfiles.sio.transport.websocket import WebSocket
from tests._loopback import FakeSock


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def text_frames(n: int, size: int) -> bytes:
    payload = b"4" + b"x" * (size - 1)  # an Engine.IO message packet
    head = bytes([0x81, size]) if size < 126 else bytes([0x81, 126]) + size.to_bytes(2, "big")
    return (head + payload) * n


def sioscale_rate(data: bytes, n: int) -> float:
    ws = WebSocket(HttpConnection(FakeSock(data, step=65536)), None)  # type: ignore[arg-type]
    c0 = cpu()
    for _ in range(n):
        ws.recv()
    return n / (cpu() - c0)


def wsproto_rate(data: bytes, n: int) -> float:
    fp = FrameProtocol(client=True, extensions=[])
    c0 = cpu()
    for i in range(0, len(data), 65536):  # fed as a socket would hand it over
        fp.receive_bytes(data[i : i + 65536])
        for _ in fp.received_frames():
            pass
    return n / (cpu() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    a = ap.parse_args()
    if not 2 <= a.size < 65536:
        ap.error("--size must be 2 .. 65535 bytes")
    data = text_frames(a.frames, a.size)
    ours, theirs = sioscale_rate(data, a.frames), wsproto_rate(data, a.frames)
    print(f"sioscale WebSocket.recv  {ours / 1e6:6.2f} M frames/cpu-s")
    print(f"wsproto FrameProtocol    {theirs / 1e6:6.2f} M frames/cpu-s   x{ours / theirs:.1f}")
    print(json.dumps({"frames": a.frames, "size": a.size, "sioscale_per_cpu_s": round(ours),
                      "wsproto_per_cpu_s": round(theirs), "ratio": round(ours / theirs, 2)}))


if __name__ == "__main__":
    main()
