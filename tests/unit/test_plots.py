"""The stacked-bar figures: one helper, and nodes stacked in natural order (n1, n2, n10)."""

from __future__ import annotations

import re

import pandas as pd

from analysis import plots as P


def _legend_labels(svg: str) -> list[str]:
    # svg.fonttype none keeps text as <text> elements; the legend's entries come last, in order
    return re.findall(r"<text[^>]*>([^<]+)</text>", svg)


def test_node_plot_stacks_nodes_in_natural_order() -> None:
    dist = pd.DataFrame({"config": ["c"] * 4, "node": ["n10", "n2", "n1", "n3"], "sessions": [1, 2, 3, 4]})
    labels = [t for t in _legend_labels(P.node_distribution(dist)) if re.fullmatch(r"n\d+", t)]
    assert labels == ["n1", "n2", "n3", "n10"]


def test_failure_plot_uses_the_same_stacked_helper() -> None:
    fails = pd.DataFrame({"config": ["a", "a", "b"], "error_kind": ["timeout", "session_unknown", "timeout"],
                          "count": [1, 5, 2]})
    svg = P.failure_breakdown(fails)
    assert svg and svg.startswith("<svg") and "Failures by kind" in svg
    assert {"timeout", "session_unknown"} <= set(_legend_labels(svg))
    assert P.failure_breakdown(fails.iloc[0:0]) is None and P.node_distribution(pd.DataFrame()) is None


def test_failures_over_time_draws_each_fault_where_it_happened() -> None:
    fot = pd.DataFrame({"config": ["c"] * 3, "t": [0.0, 10.0, 20.0], "failure_ratio": [0.0, 0.2, 0.0],
                        "active": [30, 21, 30]})
    svg = P.failures_over_time(fot, [(5.0, "blip"), (19.0, "stop_node n3")])
    assert svg and {"blip", "stop_node n3"} <= {t.strip() for t in _legend_labels(svg)}
    assert "stop_node" not in (P.failures_over_time(fot) or "")
