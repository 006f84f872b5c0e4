"""A browser's own lags around its HTTP/1.1 connection pool, drawn from distributions measured on Chromium.

Why: behind a balancer that routes per TCP connection, whether a session's first long-poll GET stays
on the handshake's node is a race decided in a few milliseconds (docs/protocol.md section 6): the GET
rides the handshake's connection A only when A is back in the pool before the GET asks for a
connection (or before the new connection it then starts is up). Two browser lags decide it, besides
the server's answer time:
- `dispatch_gap`: how long after the request issued just before it (the CONNECT POST) a request reaches
  the pool. The page has one JS thread and the network service another; measured at the wire, Chromium's
  first poll GET offers itself anywhere from together with the POST to 10 ms after it.
- `release`: how long after its answer arrives a connection is idle in the pool again. Chromium releases
  the socket only at the body's zero-length read, a posted task after the response
  (`HttpNetworkTransaction::DoReadBodyComplete`, `URLLoader::DidRead`), on a network thread that is busy
  with the page's other requests (the page creates its WebSocket probe at the same moment); the page sees the
  response after that. Measured, Chromium's first poll took a new connection started up to 7 ms after the
  answer had left for A in a third of such cases.
One fixed gap and no release lag matched Chromium's connect rate in one 3-run invocation and missed it by 13 to 35
points in others (the outcome then turns on the nodes' answer time alone); drawn lags spread the race
as the browser's own are spread.

Sans-IO: a `Lag` is numbers and a draw from an injected `random.Random`; transport/pooled.py waits them.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Lag:
    """A distribution as its inverse CDF: `knots` of (cumulative probability, milliseconds), rising in both,
    from probability 0 to 1, linear between knots."""

    knots: tuple[tuple[float, float], ...]
    _ps: tuple[float, ...] = field(init=False, repr=False, compare=False)  # the probabilities, for bisect

    def __post_init__(self) -> None:
        ps = [p for p, _ in self.knots]
        ms = [m for _, m in self.knots]
        if len(self.knots) < 2 or ps[0] != 0.0 or ps[-1] != 1.0 or ps != sorted(ps) or ms != sorted(ms) or ms[0] < 0:
            raise ValueError(f"Lag knots must rise from probability 0 to 1 with ms >= 0: {self.knots!r}")
        object.__setattr__(self, "_ps", tuple(ps))  # drawn twice per request: not rebuilt each time

    @classmethod
    def fixed(cls, ms: float) -> Lag:
        return cls(((0.0, ms), (1.0, ms)))

    def quantile(self, p: float) -> float:
        """Milliseconds at cumulative probability `p`."""
        i = bisect.bisect_right(self._ps, p)
        if i >= len(self.knots):
            return self.knots[-1][1]
        (p0, m0), (p1, m1) = self.knots[i - 1], self.knots[i]
        return m0 if p1 == p0 else m0 + (m1 - m0) * (p - p0) / (p1 - p0)

    def draw_s(self, rng: random.Random) -> float:
        """One draw, in seconds."""
        return self.quantile(rng.random()) / 1000.0


@dataclass(frozen=True)
class BrowserLags:
    """The page's dispatch gap and the network thread's release lag (see the module's docstring)."""

    dispatch_gap: Lag
    release: Lag

    @classmethod
    def fixed(cls, gap_ms: float, release_ms: float = 0.0) -> BrowserLags:
        return cls(Lag.fixed(gap_ms), Lag.fixed(release_ms))


NONE = BrowserLags.fixed(0.0, 0.0)
"""No lags: requests reach the pool as issued, connections are idle as soon as read (tests that must not race)."""

CHROMIUM = BrowserLags(
    dispatch_gap=Lag(((0.0, 0.0), (0.1, 0.0), (0.25, 0.85), (0.5, 2.05), (0.75, 3.5), (0.9, 5.3), (0.95, 6.9),
                      (1.0, 11.0))),
    release=Lag(((0.0, 0.0), (0.38, 0.0), (0.52, 1.0), (0.59, 2.0), (0.65, 3.0), (0.71, 4.0), (0.77, 5.0),
                 (0.85, 6.5), (0.91, 9.0), (1.0, 20.0))),
)
"""Fitted to Chromium 156 beside sioscale behind HAProxy L4 round robin (benchmarks/browser_fidelity --dump;
docs/protocol.md section 6), as drawn: gevent's loop waits whole milliseconds (epoll's timeout), so a draw of
0.2 ms waits about 1.1 ms, and the knots were fitted through that.
- `dispatch_gap`: so that the first poll asks for a connection when Chromium's does, measured at the proxy
  from the CONNECT POST's arrival (p10/p50/p90 over 1,605 Chromium people: 0.1 / 2.8 / 6.4 ms; sioscale
  with these knots, 405 users: 0.5 / 2.8 / 6.1).
- `release`: so that the share of first polls that ride the handshake's connection, by how long after the
  POST's answer the poll asked, follows Chromium's (about 0.25 at 0.5 ms, 0.45 at 1 ms, 0.6 at 2-3 ms, 0.7
  at 4 ms, 0.75 at 5-7 ms, 0.9 from 8 ms), then set by the connect rate it gives: first fitted on 795 Chromium
  people, the share of draws that wait nothing was moved about 0 -> 0.30 -> 0.45 -> 0.38 after 3-run
  invocations (sioscale 31.1, 32.6, then 41.0, 40.7, 39.8 % beside Chromium's 40.0, 41.7, then 38.5, 31.6,
  29.9 %): sioscale's own read and wake-ups add to every draw, and Chromium's answer times on the shared
  machine are longer and drift, which puts more of its people on the losing side (docs/protocol.md
  section 6). Chromium's own rate moved from 27 to 44 % run by run over the day, 35.7 % over 3,720 people;
  at 0.38, four invocations: Chromium 35.8, 34.1, 38.8, 41.0 % and sioscale 34.6, 34.6, 33.1, 33.8 % (p = 0.71,
  0.88, 0.09, 0.035); over 1,620 a side 37.4 % vs 34.0 %."""

DEFAULT = CHROMIUM
"""What `--sio-http-pool browser` uses (a calibration run may set another before its users start)."""
