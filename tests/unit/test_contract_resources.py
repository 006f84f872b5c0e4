"""resources.csv's pinned contract (issue 12): columns, warning rows, what the writer refuses."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from contract.resources import RESOURCE_COLUMNS, append_rows, is_warning, valid_row, warning_metric


def test_rows_are_written_under_the_pinned_header_and_bad_ones_skipped(tmp_path: Path) -> None:
    p = tmp_path / "resources.csv"
    n = append_rows(p, [(1.5, "r", "node", "n1", "cpu_percent", 23.5),
                        (1.5, "r", "node", "n1", "no_such_metric", 1.0),
                        (1.5, "r", "moon", "n1", "cpu_percent", 1.0),
                        (math.nan, "r", "node", "n1", "cpu_percent", 1.0),
                        (1.5, "r", "node", "n1", "rss_bytes", math.inf),
                        (1.5, "r", "redis", "redis", warning_metric("timeout"), 1.0)])
    assert n == 2
    append_rows(p, [(2.5, "r", "balancer", "haproxy", "queue", 0.0)])
    rows = list(csv.reader(p.open()))
    assert tuple(rows[0]) == RESOURCE_COLUMNS == ("ts", "run", "component", "id", "metric", "value")
    assert [r[4] for r in rows[1:]] == ["cpu_percent", "warning:timeout", "queue"]
    assert float(rows[1][5]) == 23.5


def test_warning_kinds() -> None:
    assert warning_metric("nonsense") == "warning:error" and is_warning(warning_metric("gone"))
    assert not valid_row(1.0, "node", "", "cpu_percent", 1.0)  # an id is required
