"""resources.csv's pinned contract (issue 12): columns, warning rows, what the writer refuses."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from contract.resources import (
    METRICS,
    NODE_GAUGES,
    RESOURCE_COLUMNS,
    SCRAPE_GAUGES,
    append_rows,
    counter_rate,
    is_warning,
    metrics_of_samples,
    valid_row,
    warning_metric,
)


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


# ------------------------------------------------- the one name table (telemetry.py and noderes.py)
def test_python_and_prom_client_default_names_map_to_the_csv_metrics() -> None:
    python = {"process_cpu_seconds_total": [3.25], "process_resident_memory_bytes": [52e6],
              "process_open_fds": [17.0], "sioscale_clients": [4.0], "sioscale_event_loop_lag_ms": [1.5]}
    assert metrics_of_samples(python) == ({"rss_bytes": 52e6, "open_fds": 17.0, "event_loop_lag_ms": 1.5,
                                           "clients": 4.0}, 3.25)
    node = {"nodejs_eventloop_lag_p99_seconds": [0.0125], "socket_io_connected": [120.0, 30.0]}
    levels, cpu = metrics_of_samples(node)
    assert levels == pytest.approx({"event_loop_lag_ms": 12.5, "clients": 150.0}) and cpu is None  # summed labels


def test_the_first_name_of_the_table_wins_and_empty_lists_are_absent() -> None:
    both = {"sioscale_event_loop_lag_ms": [2.0], "nodejs_eventloop_lag_p99_seconds": [0.009],
            "sioscale_clients": [3.0], "socket_io_connected": [99.0], "process_cpu_seconds_total": []}
    assert metrics_of_samples(both) == ({"event_loop_lag_ms": 2.0, "clients": 3.0}, None)
    assert metrics_of_samples({}) == ({}, None)
    assert metrics_of_samples({"some_other_metric": [1.0]}) == ({}, None)


def test_a_local_node_reads_only_its_own_gauges_with_node_gauges() -> None:
    """targets/telemetry.py reads a local node's process metrics from psutil, only clients and lag here."""
    seen = {"sioscale_clients": [5.0], "sioscale_event_loop_lag_ms": [0.0], "process_resident_memory_bytes": [1e6],
            "process_cpu_seconds_total": [9.0]}
    assert metrics_of_samples(seen, NODE_GAUGES, ()) == ({"clients": 5.0, "event_loop_lag_ms": 0.0}, 9.0)


def test_every_mapped_name_lands_on_a_contract_metric() -> None:
    assert {m for m, _ in [*SCRAPE_GAUGES.values(), *NODE_GAUGES.values()]} <= set(METRICS)


def test_counter_rate_per_second_and_a_restart_counts_from_zero() -> None:
    assert counter_rate(None, 10.0, 5.0) is None
    assert counter_rate((10.0, 5.0), 10.0, 6.0) is None  # no time passed: no rate
    assert counter_rate((10.0, 5.0), 12.0, 6.0) == pytest.approx(0.5)
    assert counter_rate((10.0, 5.0), 12.0, 0.4) == pytest.approx(0.2)  # restarted: 0.4 s of CPU since
