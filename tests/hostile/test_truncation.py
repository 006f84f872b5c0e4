"""A handshake answer cut at every byte offset: each cut is a classified failure, in time.

The server's sweep modes cut the n-th connection's answer after n-1 bytes (status line,
headers, body, and for WebSocket-only the 101 and the open packet's frame), then close; the
first connection past the whole answer succeeds and ends the sweep. Each connect is a bare
SocketIOUser (the Probe of tests/integration/test_client_cluster.py) with reconnection off,
so one connect is one cut.
"""

from __future__ import annotations

import time

import pytest

from tests.hostile.conftest import TABLE, HostileServer
from tests.hostile.harness import classified, kind_of
from tests.hostile.modes import SWEEPS, Mode
from tests.integration.test_client_cluster import Probe, close_all, make_env

pytestmark = pytest.mark.slow

TIMEOUT = 1.0
MAX_OFFSETS = 2000  # far above any handshake answer: a sweep that never ends is a failure


@pytest.mark.parametrize("sweep", SWEEPS, ids=[m.name for m in SWEEPS])
def test_cut_at_every_offset(hostile: HostileServer, sweep: Mode) -> None:
    url = hostile.url(sweep.name)
    bad: list[str] = []
    start = time.monotonic()
    slowest = 0.0
    offset = 0
    for offset in range(MAX_OFFSETS):  # the offset reached is asserted below
        u = Probe(make_env(url, sio_timeout=TIMEOUT, sio_transports=sweep.transports))
        t0 = time.monotonic()
        try:
            ok = u.connect()
        finally:
            close_all([u])
        took = time.monotonic() - t0
        slowest = max(slowest, took)
        if ok:
            break
        fails = [s["error"] for s in u.steps if s["error"]]
        if not fails:
            bad.append(f"offset {offset}: connect failed with no failure reported: {u.steps}")
        elif not all(classified(kind_of(f)) for f in fails) or kind_of(fails[0]) not in sweep.kinds:
            bad.append(f"offset {offset}: {fails[:2]}")
        if took > TIMEOUT + 1.0:
            bad.append(f"offset {offset}: connect took {took:.2f} s")
        if not (u.session.closed and u._http.open_connections == 0):
            bad.append(f"offset {offset}: session or sockets left open")
    else:
        pytest.fail(f"{sweep.name}: no connect succeeded within {MAX_OFFSETS} offsets")
    TABLE.append((sweep.name, "FAIL" if bad else "ok", time.monotonic() - start,
                  f"{offset} offsets, slowest connect {slowest:.3f} s, {len(bad)} bad"))
    assert offset > 100, f"only {offset} offsets: the sweep did not cut the answer byte by byte"
    assert not bad, f"{sweep.name}: {len(bad)} bad offsets of {offset}:\n  " + "\n  ".join(bad[:10])
    assert not hostile.stats()[sweep.name]["server_errors"]
