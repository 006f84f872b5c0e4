"""Write coalescing of the transports: same bytes on the wire, fewer writes."""

from __future__ import annotations

import struct

from locustfiles.sio.transport.http import HttpConnection, HttpResponse
from locustfiles.sio.transport.net import send_all
from locustfiles.sio.transport.websocket import WebSocket, _mask


class PartialSock:
    """send() takes at most `cap` bytes per call, as a nearly full socket buffer does."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.writes: list[bytes] = []
        self.closed = False

    def send(self, data, flags: int = 0, timeout: float | None = None) -> int:
        chunk = bytes(data[: self.cap])
        self.writes.append(chunk)
        return len(chunk)

    def sendall(self, data) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def unmask(frame: bytes) -> tuple[int, bytes, bytes]:
    """(opcode, payload, rest) of one masked client frame with a short payload."""
    n = frame[1] & 0x7F
    key, payload = frame[2:6], frame[6 : 6 + n]
    return frame[0] & 0x0F, _mask(key, payload), frame[6 + n :]


def test_send_all_finishes_a_partial_send() -> None:
    s = PartialSock(cap=5)
    send_all(s, b"0123456789abc")
    assert b"".join(s.writes) == b"0123456789abc" and s.writes[0] == b"01234"


def test_queued_frames_and_close_frame_go_out_in_one_write() -> None:
    s = PartialSock(cap=1 << 20)
    ws = WebSocket(HttpConnection(s), HttpResponse(101, "", {}, b""))
    ws.queue("41")
    ws.queue(b"\x01\x02")
    assert s.writes == []  # nothing written before flush/close
    ws.close()
    assert len(s.writes) == 1 and s.closed
    op1, p1, rest = unmask(s.writes[0])
    op2, p2, rest = unmask(rest)
    op3, p3, rest = unmask(rest)
    assert (op1, p1, op2, p2, op3, struct.unpack("!H", p3)[0], rest) == (1, b"41", 2, b"\x01\x02", 8, 1000, b"")


def test_flush_writes_queued_frames_in_order_and_close_without_frame_drops_queue() -> None:
    s = PartialSock(cap=3)  # the tail of the batch goes through sendall
    ws = WebSocket(HttpConnection(s), HttpResponse(101, "", {}, b""))
    ws.queue("5")
    ws.queue("42[\"e\"]")
    ws.flush()
    op1, p1, rest = unmask(b"".join(s.writes))
    op2, p2, rest = unmask(rest)
    assert (op1, p1, op2, p2, rest) == (1, b"5", 1, b'42["e"]', b"")
    s.writes.clear()
    ws.queue("x")
    ws.close(send_frame=False)
    assert s.writes == [] and s.closed
