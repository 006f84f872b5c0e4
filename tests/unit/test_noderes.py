"""The web UI's live node resources (--sio-scrape, issue 12 part 6): the poller, the tab's rows, /sio/stats.

No sockets here: the poller's fetch is a function of the test (gevent: Locust is imported, so
sleeps are cooperative). tests/integration/test_noderes_webui.py runs it against a real cluster.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace
from typing import Any

import gevent
import pytest
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from locustfiles.sio import eventlog, noderes, webui

PY_NODE = """# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 62914560.0
# TYPE sioscale_clients gauge
sioscale_clients 3.0
# TYPE sioscale_event_loop_lag_ms gauge
sioscale_event_loop_lag_ms 1.25
"""


class _Node:
    """A node whose process CPU advances 0.05 s per read (so 0.05 s / interval of CPU)."""

    def __init__(self) -> None:
        self.cpu = 10.0

    def __call__(self, _url: str, _timeout: float) -> str:
        self.cpu += 0.05
        return PY_NODE.format(cpu=self.cpu)


def _fetcher(routes: dict[str, Any]) -> noderes.Fetch:
    def fetch(url: str, timeout: float) -> str:
        r = routes[url]
        return r(url, timeout) if callable(r) else r
    return fetch


def _hang(_url: str, _timeout: float) -> str:
    gevent.sleep(30)
    return ""


def _refuse(_url: str, _timeout: float) -> str:
    raise ConnectionRefusedError(111, "Connection refused")


def test_parse_metrics_uses_the_shared_names_and_calls_garbage_garbage() -> None:
    levels, cpu = noderes.parse_metrics(PY_NODE.format(cpu=2.5))
    assert levels == {"rss_bytes": 62914560.0, "clients": 3.0, "event_loop_lag_ms": 1.25} and cpu == 2.5
    for text in ("<html>502 Bad Gateway</html>", "up 1\n", 'x{a="1} 2\n'):
        with pytest.raises(noderes.ReadError) as e:
            noderes.parse_metrics(text)
        assert e.value.kind == "garbage"
    levels, _ = noderes.parse_metrics("process_resident_memory_bytes -5\nsioscale_clients NaN\nprocess_open_fds 3\n")
    assert levels == {"open_fds": 3.0}  # lies left out


def test_cpu_is_a_rate_between_two_reads_and_the_age_is_kept() -> None:
    p = noderes.NodePoller([("n1", "u1")], _fetcher({"u1": _Node()}), interval=0.2, timeout=0.5)
    gevent.joinall(p.poll_once())
    first = p.readings()[0]
    assert first["cpu_percent"] is None and first["rss_bytes"] == 62914560.0 and first["clients"] == 3.0
    gevent.sleep(0.2)
    gevent.joinall(p.poll_once())
    r = p.readings(now=time.time() + 3.0)[0]
    # 0.05 s of CPU over ~0.2 s of wall time: ~25 % of a core
    assert 10.0 < r["cpu_percent"] < 30.0 and r["error"] is None
    assert 2.9 <= r["age_s"] <= 3.2 and r["event_loop_lag_ms"] == 1.25


def test_a_hung_target_costs_the_others_nothing_and_shows_its_timeout() -> None:
    p = noderes.NodePoller([("ok", "u1"), ("hang", "u2"), ("junk", "u3"), ("down", "u4")],
                           _fetcher({"u1": _Node(), "u2": _hang, "u3": "<html>nope</html>", "u4": _refuse}),
                           interval=0.2, timeout=0.3)
    t0 = time.monotonic()
    reads = p.poll_once()
    gevent.joinall([reads[0], reads[2], reads[3]], timeout=1.0)
    assert time.monotonic() - t0 < 0.2  # the good read did not wait for the hung one
    by = {r["id"]: r for r in p.readings()}
    assert by["ok"]["age_s"] is not None and by["ok"]["error"] is None
    assert by["hang"]["age_s"] is None and by["hang"]["error"] is None  # still in flight, not failed yet
    assert (by["junk"]["error"], by["down"]["error"]) == ("garbage", "refused")
    assert p.poll_once() and all(g is not reads[1] for g in p.poll_once())  # the hung read is not started twice
    gevent.joinall([reads[1]], timeout=1.0)
    assert time.monotonic() - t0 < 0.6  # bounded by the poller's timeout, not the target's 30 s
    hang = {r["id"]: r for r in p.readings()}["hang"]
    assert hang["error"] == "timeout" and "0.3 s" in hang["detail"]
    p.stop()


def test_the_loop_polls_until_stopped_and_leaves_no_greenlet() -> None:
    node = _Node()
    p = noderes.NodePoller([("n1", "u1"), ("hang", "u2")], _fetcher({"u1": node, "u2": _hang}),
                           interval=0.1, timeout=5.0).start()
    gevent.sleep(0.35)
    loop, reads = p._loop_g, list(p._reads.values())
    p.stop()
    gevent.sleep(0)
    assert 3 <= round((node.cpu - 10.0) / 0.05) <= 5
    assert loop is not None and loop.dead and all(g.dead for g in reads)


def _runner(cls: type) -> Any:
    """A runner of that class without its machinery (isinstance is all the poller asks)."""
    r = object.__new__(cls)
    r.greenlet = None  # Runner.__del__ reads it
    return r


def _env(runner: Any, scrape: str = "") -> SimpleNamespace:
    opts = argparse.Namespace(sio_scrape=scrape, sio_run_dir="", sio_run_name="")
    return SimpleNamespace(parsed_options=opts, runner=runner)


def test_configure_polls_on_the_master_or_local_runner_never_on_a_worker() -> None:
    url = "http://127.0.0.1:9/metrics"  # discard port: nothing listens
    assert noderes.configure(_env(_runner(WorkerRunner), f"n1={url}")) is None
    assert noderes.configure(_env(None, f"n1={url}")) is None
    assert noderes.configure(_env(_runner(LocalRunner))) is None  # option empty: off
    for cls in (LocalRunner, MasterRunner):
        env = _env(_runner(cls), f"n1={url},{url.replace(':9', ':7')}")
        p = noderes.configure(env)
        try:
            assert p is not None and p.targets == [("n1", url), ("127.0.0.1:7", url.replace(":9", ":7"))]
            assert noderes.configure(env) is p  # test_start with the same list keeps the readings
            env.parsed_options.sio_scrape = f"n2={url}"  # the web UI's form changed it
            p2 = noderes.configure(env)
            assert p2 is not p and p._loop_g is None and p2 is not None and p2.targets == [("n2", url)]
            env.parsed_options.sio_scrape = ""
            assert noderes.configure(env) is None and p2._loop_g is None and noderes.readings(env) == []
        finally:
            for q in (p, noderes.poller(env)):
                if q is not None:
                    q.stop()


def test_a_bad_list_from_the_web_ui_form_is_one_row_not_an_exception() -> None:
    env = _env(_runner(LocalRunner), "n1=ftp://x/metrics")
    p = noderes.configure(env)
    assert p is not None
    (row,) = noderes.readings(env)
    assert row["error"] == "config" and "--sio-scrape" in row["detail"] and "http://" in row["detail"]
    value, detail = webui.node_resource_cells(row)
    assert value == "–" and detail.startswith("warning: config: --sio-scrape") and "no node is polled" in detail


def test_the_tab_rows_the_json_and_the_csv_show_the_same_node_resources() -> None:
    items = [
        {"id": "n1", "url": "u", "cpu_percent": 12.34, "rss_bytes": 62914560.0, "event_loop_lag_ms": 1.25,
         "clients": 3.0, "age_s": 0.8, "error": None, "detail": ""},
        {"id": "n2", "url": "u", "cpu_percent": None, "rss_bytes": 1048576.0, "event_loop_lag_ms": None,
         "clients": 0.0, "age_s": 1.0, "error": None, "detail": ""},
        {"id": "hang", "url": "u", "cpu_percent": None, "rss_bytes": None, "event_loop_lag_ms": None,
         "clients": None, "age_s": None, "error": "timeout", "detail": "no answer within 1 s"},
        {"id": "junk", "url": "u", "cpu_percent": 5.0, "rss_bytes": 1.0, "event_loop_lag_ms": 1.0,
         "clients": 1.0, "age_s": 7.04, "error": "garbage", "detail": "not Prometheus text (ValueError)"},
        {"id": "new", "url": "http://h:1/metrics", "cpu_percent": None, "rss_bytes": None,
         "event_loop_lag_ms": None, "clients": None, "age_s": None, "error": None, "detail": ""},
    ]
    rows = [r for r in webui.table_rows({"node_resources": items}) if r["section"] == "Node resources"]
    by = {r["metric"]: (r["value"], r["detail"]) for r in rows}
    assert [r["metric"] for r in rows] == ["n1", "n2", "hang", "junk", "new"]
    assert by["n1"] == ("12.3 %", "RSS 60.0 MiB, lag p99 1.2 ms, 3 clients, read 0.8 s ago")
    assert by["n2"] == ("–", "RSS 1.0 MiB, lag p99 – ms, 0 clients, read 1.0 s ago")
    assert by["hang"] == ("–", "warning: timeout: no answer within 1 s; no good reading yet")
    assert by["junk"] == ("–", "warning: garbage: not Prometheus text (ValueError); last good reading 7.0 s ago")
    assert by["new"] == ("–", "waiting for the first read of http://h:1/metrics")
    assert "Node resources,n1,12.3 %," in webui.to_csv(rows)


def test_sio_stats_carries_node_resources_from_the_environment_s_poller() -> None:
    env = _env(_runner(LocalRunner))
    assert eventlog.stats(env, now=100.0)["node_resources"] == []
    p = noderes.NodePoller([("n1", "u1")], _fetcher({"u1": _Node()}))
    env2 = _env(_runner(LocalRunner))
    setattr(env2, noderes.ATTR, p)
    gevent.joinall(p.poll_once())
    s = eventlog.stats(env2)
    (n1,) = s["node_resources"]
    assert n1["id"] == "n1" and n1["clients"] == 3.0 and n1["rss_bytes"] == 62914560.0
    assert ("Node resources", "n1") in {(r["section"], r["metric"]) for r in webui.table_rows(s)}
