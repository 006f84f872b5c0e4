"""transport/lags.py: a browser's lags as inverse-CDF knots, drawn from an injected random source."""

from __future__ import annotations

import random

import pytest

from locustfiles.sio.transport.lags import CHROMIUM, DEFAULT, NONE, BrowserLags, Lag


def test_quantiles_interpolate_linearly_between_knots() -> None:
    lag = Lag(((0.0, 0.0), (0.5, 2.0), (1.0, 10.0)))
    assert lag.quantile(0.0) == 0.0
    assert lag.quantile(0.25) == pytest.approx(1.0)
    assert lag.quantile(0.5) == pytest.approx(2.0)
    assert lag.quantile(0.75) == pytest.approx(6.0)
    assert lag.quantile(1.0) == 10.0


def test_a_step_knot_jumps() -> None:
    """Two knots at one probability: a jump in the CDF is a flat run of the inverse."""
    lag = Lag(((0.0, 0.0), (0.1, 0.0), (0.1, 5.0), (1.0, 5.0)))
    assert lag.quantile(0.05) == 0.0 and lag.quantile(0.5) == 5.0


def test_draws_follow_the_distribution() -> None:
    lag = Lag(((0.0, 0.0), (0.5, 2.0), (1.0, 10.0)))
    rng = random.Random(1)
    draws = sorted(lag.draw_s(rng) for _ in range(4000))
    assert draws[0] >= 0.0 and draws[-1] <= 0.010
    assert draws[2000] == pytest.approx(0.002, abs=0.0003)  # the median knot, in seconds
    assert draws[1000] == pytest.approx(0.001, abs=0.0003)


def test_fixed_is_one_value() -> None:
    lags = BrowserLags.fixed(1.25, 0.5)
    rng = random.Random(2)
    assert {lags.dispatch_gap.draw_s(rng) for _ in range(20)} == {0.00125}
    assert {lags.release.draw_s(rng) for _ in range(20)} == {0.0005}
    assert NONE.dispatch_gap.quantile(0.9) == NONE.release.quantile(0.9) == 0.0


@pytest.mark.parametrize("knots", [
    (),  # nothing
    ((0.0, 1.0),),  # does not reach probability 1
    ((0.1, 1.0), (1.0, 2.0)),  # does not start at 0
    ((0.0, 2.0), (1.0, 1.0)),  # falling ms
    ((0.0, 0.0), (0.6, 1.0), (0.5, 2.0), (1.0, 3.0)),  # falling probability
    ((0.0, -1.0), (1.0, 1.0)),  # negative ms
])
def test_bad_knots_are_refused(knots) -> None:
    with pytest.raises(ValueError, match="Lag knots"):
        Lag(knots)


def test_the_default_is_chromiums_and_spread() -> None:
    """The fitted model, not a point: its spread is what makes the race answer latency as a browser's does."""
    assert DEFAULT is CHROMIUM
    for lag in (CHROMIUM.dispatch_gap, CHROMIUM.release):
        assert lag.quantile(0.9) - lag.quantile(0.1) > 3.0
