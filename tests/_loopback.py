"""Test servers on 127.0.0.1 in a native thread of the test process, and an in-memory socket.

Why a native thread (gevent's monkey patching, which importing Locust applies, is bypassed with
get_original): the server must run beside the hub, not in it, so that a flood keeps the kernel
full whatever the client's greenlets do. No process is started, so none can leak, and every
wait is bounded, so even a client that hangs ends its test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Any

import gevent
from gevent import monkey

_socket = monkey.get_original("socket", "socket")
_start_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")
real_sleep = monkey.get_original("time", "sleep")


class ThreadServer:
    """Accepts `connections` connections one after another; for each, reads the request head,
    keeps it in `heads`, then calls `serve(conn, head)` and closes the connection.

    `head` is the request up to its blank line (exclusive). A client that leaves before its head
    ends is not served. An OSError from `serve` (the client went away) ends that connection
    quietly; any other exception ends the thread. `sndbuf` shrinks the socket's send buffer
    (little to drain once a flood ends).
    """

    def __init__(self, serve: Callable[[Any, bytes], None], connections: int = 1, timeout: float = 10.0,
                 sndbuf: int | None = None) -> None:
        self.lsock = _socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(max(1, connections))
        self.lsock.settimeout(timeout)
        self.port: int = self.lsock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.heads: list[bytes] = []
        self._serve, self._connections, self._timeout, self._sndbuf = serve, connections, timeout, sndbuf
        self._done = _allocate_lock()
        self._done.acquire()
        self.done = False
        _start_thread(self._run, ())

    @property
    def request(self) -> bytes:
        """The first request head (b"" if none came)."""
        return self.heads[0] if self.heads else b""

    def _run(self) -> None:
        try:
            for _ in range(self._connections):
                conn, _addr = self.lsock.accept()
                try:
                    conn.settimeout(self._timeout)
                    if self._sndbuf:
                        conn.setsockopt(SOL_SOCKET, SO_SNDBUF, self._sndbuf)
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        d = conn.recv(65536)
                        if not d:
                            break
                        buf += d
                    else:
                        head = buf[: buf.index(b"\r\n\r\n")]
                        self.heads.append(head)
                        self._serve(conn, head)
                except OSError:
                    pass  # the client went away (or the script ran its time): this connection is over
                finally:
                    conn.close()
        except OSError:
            pass  # accept() timed out: nobody came
        finally:
            self.lsock.close()
            self.done = True
            self._done.release()

    def join(self, seconds: float = 15.0) -> None:
        """Wait (bounded) for the thread to end; fails the test if it does not."""
        # Why poll: a native lock's blocking acquire would stop the hub of this thread.
        deadline = time.monotonic() + seconds
        while not self._done.acquire(False):
            assert time.monotonic() < deadline, "server thread did not end"
            gevent.sleep(0.01)


class FakeSock:
    """An in-memory socket: recv() hands out `data`, then EOF; what the client writes is kept.

    Each read returns at most what was asked, and at most `step` bytes (None: no cap) or, while
    `reads` has sizes left, the next one popped from its end (at least 1).
    """

    def __init__(self, data: bytes, step: int | None = None, reads: list[int] | None = None) -> None:
        self.data, self.pos, self.step, self.reads = data, 0, step, reads
        self.sent = bytearray()
        self.closed = False

    def recv(self, n: int) -> bytes:
        step = max(1, self.reads.pop()) if self.reads else self.step or n
        chunk = self.data[self.pos : self.pos + min(n, step)]
        self.pos += len(chunk)
        return chunk

    def send(self, data, flags: int = 0, timeout: float | None = None) -> int:
        self.sent += data
        return len(data)

    def sendall(self, data) -> None:
        self.sent += data

    def close(self) -> None:
        self.closed = True
