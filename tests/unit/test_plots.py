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
