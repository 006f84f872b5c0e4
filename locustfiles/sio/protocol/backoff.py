"""socket.io-client's reconnection backoff, as a pure function.

Ported from socket.io-client's `contrib/backo2.ts` (docs/protocol.md §4.1) because the exact
distribution is what shapes a reconnection storm after a node dies: every disconnect restarts
at attempt 1, so clients retry within 0.5-1.5 s. The random value is passed in (no hidden
global RNG), so tests and replays are deterministic.
"""

from __future__ import annotations

import math

RECONNECTION_DELAY_MS = 1000
RECONNECTION_DELAY_MAX_MS = 5000
RANDOMIZATION_FACTOR = 0.5
_FACTOR = 2


def reconnect_delay_ms(
    attempt: int,
    rand: float,
    *,
    delay_ms: float = RECONNECTION_DELAY_MS,
    delay_max_ms: float = RECONNECTION_DELAY_MAX_MS,
    randomization_factor: float = RANDOMIZATION_FACTOR,
) -> int:
    """Delay before reconnection attempt `attempt` (1 = the first retry after a loss).

    `rand` in [0, 1) plays JS's Math.random(); the same value picks both the deviation and
    its sign, exactly as backo2 does.
    """
    if attempt < 1:
        raise ValueError(f"attempt = {attempt!r}: reconnection attempts count from 1")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand = {rand!r}: must be in [0, 1)")
    # backo2 computes min * factor**attempts with attempts starting at 0; the cap makes any
    # exponent beyond ~30 irrelevant, and bounding it keeps the float finite.
    ms = float(delay_ms) * _FACTOR ** min(attempt - 1, 64)
    if randomization_factor:
        deviation = math.floor(rand * randomization_factor * ms)
        ms = ms - deviation if (math.floor(rand * 10) & 1) == 0 else ms + deviation
    return int(min(ms, float(delay_max_ms)))
