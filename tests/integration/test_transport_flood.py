"""A server that floods a real 127.0.0.1 socket as fast as it can must not freeze the generator.

Issue 9, class 2: a reader that never yields starves every other user (a 10 s run took 31-37 s
against an endless chunked trailer at 20-200 MB/s), so every latency measured meanwhile is
false. The flooding server here runs in a real OS thread (not a greenlet: gevent's monkey
patching, which importing Locust applies, is bypassed with get_original) writing over a real
loopback socket (tests/_loopback.py); a StallMeter (tests/_stall.py) measures the hub's largest
stall while one HttpSession reads.
No processes are started, so the tests are not marked slow; each takes about a second.
"""

from __future__ import annotations

import resource
import time

import gevent
import pytest

from locustfiles.sio.transport.errors import TransportError
from locustfiles.sio.transport.http import HttpSession
from locustfiles.sio.transport.net import Endpoint
from tests._loopback import ThreadServer, real_sleep
from tests._stall import StallMeter

HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
DEADLINE_S = 1.0
MAX_STALL_S = 0.1


def _flood_server(head: bytes, pattern: bytes, pause: float = 0.0) -> tuple[ThreadServer, dict]:
    """Answer the first request with `head`, then write `pattern` forever (as fast as the kernel
    takes it, or every `pause` seconds) until the client goes away or 15 s passed."""
    stats = {"sent": 0}
    block = pattern if pause else pattern * max(1, 262144 // len(pattern))

    def serve(conn, _request: bytes) -> None:  # conn: a native socket
        conn.sendall(head)
        end = time.monotonic() + 15.0
        while time.monotonic() < end:
            conn.sendall(block)
            stats["sent"] += len(block)
            if pause:
                real_sleep(pause)

    return ThreadServer(serve, timeout=5.0), stats


def _read_while_measuring(url: str) -> tuple[BaseException | None, float, float, int]:
    """One GET through HttpSession while a StallMeter ticks every 5 ms: (error, seconds, largest
    stall of the hub, peak RSS growth in KiB)."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    meter = StallMeter()
    gevent.sleep(0.02)
    http = HttpSession(Endpoint.from_url(url), timeout=DEADLINE_S)
    t0 = time.monotonic()
    err: BaseException | None = None
    try:
        http.request("GET", "/socket.io/?EIO=4&transport=polling&t=flood1")
    except BaseException as e:  # noqa: BLE001 - the test asserts on what came out
        err = e
    took = time.monotonic() - t0
    stall = meter.stop()
    http.close()
    return err, took, stall, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0


FLOODS = {
    # the reproducer: an endless chunked trailer line, as fast as the socket goes
    "endless_trailer_line": (HEAD_CHUNKED + b"1\r\na\r\n0\r\n", b"X" * 4096, 0.0, "MAX_TRAILER_BYTES"),
    "endless_trailer_fields": (HEAD_CHUNKED + b"0\r\n", b"X-Trailer: y\r\n" * 256, 0.0, "MAX_TRAILER_BYTES"),
    # within every size limit for seconds: only the deadline, checked by the clock, ends it
    "endless_one_byte_chunks": (HEAD_CHUNKED, b"1\r\nx\r\n", 0.0, "timeout"),
    "endless_body_to_close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"b" * 4096, 0.0, "MAX_BODY_BYTES"),
    "endless_header": (b"HTTP/1.1 200 OK\r\nX-Big: ", b"h" * 4096, 0.0, "MAX_HEAD_BYTES"),
    # slowloris: a header byte every 20 ms, forever
    "slowloris_header": (b"HTTP/1.1 200 OK\r\n", b"X", 0.02, "timeout"),
}


@pytest.mark.parametrize("mode", list(FLOODS))
def test_flooding_server_neither_freezes_the_hub_nor_outlives_the_deadline(mode: str) -> None:
    head, pattern, pause, expect = FLOODS[mode]
    srv, stats = _flood_server(head, pattern, pause)
    try:
        err, took, stall, rss_kib = _read_while_measuring(srv.url)
    finally:
        srv.join(20.0)  # the server thread saw the client go (or fails the test)
    assert isinstance(err, TransportError), repr(err)
    assert expect in (err.kind, *str(err).split()) or expect in str(err), str(err)
    assert took < DEADLINE_S + 0.3, (took, stats)
    assert stall < MAX_STALL_S, f"the hub stalled {stall * 1000:.0f} ms while {stats['sent']} bytes arrived"
    assert rss_kib < 128 * 1024, rss_kib  # ru_maxrss is in KiB on Linux
