"""The fidelity benchmark's arithmetic (benchmarks/browser_fidelity.py, tests/_fidelity.schedule): jittered start
times stay in their slot and repeat with their seed; the two-proportion comparison gives textbook figures."""

from __future__ import annotations

import math

import pytest

from benchmarks.browser_fidelity import compare, needed_n
from tests._fidelity import schedule


def test_jittered_starts_stay_in_their_slot_in_order_and_repeat_with_the_seed() -> None:
    s = schedule(200, 1.0, 1000.0, jitter=0.25, seed=3)
    assert len(s) == 200 and s == schedule(200, 1.0, 1000.0, jitter=0.25, seed=3)
    assert s != schedule(200, 1.0, 1000.0, jitter=0.25, seed=4)
    assert all(abs(t - (1000.0 + i)) <= 0.25 for i, t in enumerate(s))
    assert all(b - a >= 0.5 for a, b in zip(s, s[1:], strict=False))  # never two people at once
    offsets = [t - (1000.0 + i) for i, t in enumerate(s)]
    assert min(offsets) < -0.2 and max(offsets) > 0.2  # it does move them
    assert schedule(3, 0.5, 10.0) == [10.0, 10.5, 11.0]  # no jitter: exact


def test_two_proportion_comparison_gives_textbook_figures() -> None:
    c = compare(181, 405, 162, 405)  # 44.7 % vs 40.0 %
    assert c["diff"] == pytest.approx(19 / 405)
    assert c["p"] == pytest.approx(0.175, abs=0.005)  # pooled z = 1.36
    assert c["ci_lo"] < 0 < c["ci_hi"] and c["ci_hi"] - c["ci_lo"] == pytest.approx(0.135, abs=0.005)
    assert compare(0, 10, 0, 10)["p"] == 1.0  # no variance: no evidence of a difference
    assert needed_n(0.5) == math.ceil(needed_n(0.5)) and 380 <= needed_n(0.5) <= 400  # 10 points around 50 %
