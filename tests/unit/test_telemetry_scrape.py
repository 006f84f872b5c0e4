"""`--scrape [ID=]URL` (issue 12, part 3): users' own nodes' Prometheus text into resources.csv.

The names of prom-client and python's prometheus_client map onto the contract's metrics, the CPU
counter becomes a rate (a counter reset included), and a page that lies, is garbage or is slow
becomes a warning row of that id while the others' samples go on. No sockets: the sampler's
fetch is replaced by a function of the test.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest

from contract.config import (
    ClusterConfig,
    ConfigError,
    LoadConfig,
    RunConfig,
    ScrapeTarget,
    parse_campaign,
    parse_scrape,
)
from sioscale import cliargs
from sioscale.cli import main
from targets import telemetry as tm

# what prom-client's collectDefaultMetrics() and a socket.io-prometheus gauge look like (Node)
PROM_CLIENT = """# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 73400320
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 31
# HELP nodejs_eventloop_lag_p99_seconds The 99th percentile of the recorded event loop delays.
# TYPE nodejs_eventloop_lag_p99_seconds gauge
nodejs_eventloop_lag_p99_seconds 0.0125
# HELP socket_io_connected Number of currently connected sockets
# TYPE socket_io_connected gauge
socket_io_connected{namespace="/"} 120
socket_io_connected{namespace="/chat"} 30
"""


def _rows(rows: list[tm.Row]) -> dict[tuple[str, str, str], float]:
    return {(c, i, m): v for _ts, _run, c, i, m, v in rows}


# ------------------------------------------------------------------------------- name mapping
def test_prom_client_names_map_onto_the_contract() -> None:
    levels, cpu = tm.parse_scrape_metrics(PROM_CLIENT)
    assert levels == {"rss_bytes": 73400320.0, "open_fds": 31.0, "event_loop_lag_ms": 12.5, "clients": 150.0}
    assert cpu == 12.5  # raw: the rate needs the previous scrape


def test_python_prometheus_client_defaults_map_onto_the_contract() -> None:
    """The real page of python's ProcessCollector (this process), not a hand-written imitation."""
    reg = CollectorRegistry()
    ProcessCollector(registry=reg)
    Gauge("socketio_connected_clients", "connected", registry=reg).set(7)
    levels, cpu = tm.parse_scrape_metrics(generate_latest(reg).decode())
    assert cpu is not None and cpu > 0
    assert levels["rss_bytes"] > 1e6 and levels["open_fds"] >= 3 and levels["clients"] == 7.0
    assert "event_loop_lag_ms" not in levels  # python has no default lag gauge: missing, not invented


def test_our_own_gauges_win_over_the_generic_names() -> None:
    text = ("sioscale_clients 5\nsocket_io_connected 9\n"
            "sioscale_event_loop_lag_ms 2.5\nnodejs_eventloop_lag_p99_seconds 0.9\n")
    assert tm.parse_scrape_metrics(text) == ({"event_loop_lag_ms": 2.5, "clients": 5.0}, None)


def test_missing_metrics_are_left_out_and_lies_are_dropped() -> None:
    text = ("process_resident_memory_bytes 1000\nprocess_open_fds -3\n"
            "nodejs_eventloop_lag_p99_seconds NaN\nprocess_cpu_seconds_total +Inf\n")
    assert tm.parse_scrape_metrics(text) == ({"rss_bytes": 1000.0}, None)


@pytest.mark.parametrize("text", [
    "", "<html><body>Grafana login</body></html>", "process_cpu_seconds_total twelve\n",
    '{"status": "ok"}', "# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{cpu=\"0\"} 5\n",
])
def test_garbage_or_a_page_without_any_known_name_is_garbage(text: str) -> None:
    with pytest.raises(tm.SampleError) as e:
        tm.parse_scrape_metrics(text)
    assert e.value.kind == "garbage"


# ------------------------------------------------------------------------------- CPU as a rate
def test_cpu_counter_rate_and_a_reset_read_as_a_restart_from_zero() -> None:
    r, key = tm._Rates(), ("node", "a", "cpu_seconds")
    assert r.rate(key, 10.0, 100.0, reset_from_zero=True) is None  # first reading: no rate
    assert r.rate(key, 10.5, 101.0, reset_from_zero=True) == pytest.approx(0.5)
    assert r.rate(key, 0.25, 102.0, reset_from_zero=True) == pytest.approx(0.25)  # restarted: 0.25 s since
    assert r.rate(key, 0.75, 104.0, reset_from_zero=True) == pytest.approx(0.25)
    # the local samplers' rule is unchanged: a counter that went down gives no rate that second
    assert tm._Rates().rate(key, 1.0, 1.0) is None


class _FakeFetch:
    """Stands in for tm.fetch_metrics: a page per URL, from a list (one per call) or a callable."""

    def __init__(self, pages: dict[str, Any]) -> None:
        self.pages, self.calls = pages, {u: 0 for u in pages}

    def __call__(self, url: str, timeout: float = tm.TIMEOUT_S, context: Any = None) -> str:
        self.calls[url] += 1
        page = self.pages[url]
        if callable(page):
            return page()
        return page[min(self.calls[url], len(page)) - 1]


def test_a_sampler_turns_a_scraped_cpu_counter_into_cpu_percent_across_a_reset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pages = [f"process_cpu_seconds_total {v}\nprocess_resident_memory_bytes 4096\n" for v in (20.0, 20.05, 0.02)]
    monkeypatch.setattr(tm, "fetch_metrics", _FakeFetch({"http://u/metrics": pages}))
    s = tm.scrape_sampler(tmp_path, "r", [("u1", "http://u/metrics")], timeout=0.2)
    try:
        first = _rows(s.sample_once())
        time.sleep(0.2)
        second = _rows(s.sample_once())
        time.sleep(0.2)
        third = _rows(s.sample_once())
    finally:
        stats = s.stop()
    assert first == {("node", "u1", "rss_bytes"): 4096.0}  # no rate from one reading, and no warning
    # 0.05 s of CPU over 0.2-0.45 s of wall: 11-25 % of a core; the reset second is not a gap
    assert 10 <= second[("node", "u1", "cpu_percent")] <= 25.5, second
    assert 4 <= third[("node", "u1", "cpu_percent")] <= 10.5, third
    assert stats["scrape"] == [{"id": "u1", "url": "http://u/metrics"}] and stats["warnings"] == 0


def test_garbage_down_and_slow_targets_are_warnings_of_their_own_id_and_the_others_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hang() -> str:
        release.wait(5)
        return PROM_CLIENT

    def refuse() -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    fake = _FakeFetch({"http://good/m": [PROM_CLIENT], "http://junk/m": ["<html>nope</html>"],
                       "http://down/m": refuse, "http://slow/m": hang})
    monkeypatch.setattr(tm, "fetch_metrics", fake)
    s = tm.scrape_sampler(tmp_path, "r", [("good", "http://good/m"), ("junk", "http://junk/m"),
                                          ("down", "http://down/m"), ("slow", "http://slow/m")], timeout=0.2)
    try:
        ticks = []
        for _ in range(3):
            t0 = time.monotonic()
            ticks.append(_rows(s.sample_once()))
            assert time.monotonic() - t0 < 0.2 + 0.25 + 0.3  # the slow one holds no tick past its timeout
    finally:
        release.set()
        s.stop()
    for rows in ticks:
        assert rows[("node", "good", "rss_bytes")] == 73400320.0 and rows[("node", "good", "clients")] == 150.0
        assert rows[("node", "junk", "warning:garbage")] == 1.0
        assert rows[("node", "down", "warning:refused")] == 1.0
        assert rows[("node", "slow", "warning:timeout")] == 1.0
        assert not any(i in ("junk", "down", "slow") and not m.startswith("warning:") for _c, i, m in rows)
    assert ("node", "good", "cpu_percent") in ticks[1]
    assert fake.calls["http://slow/m"] == 1  # still in flight: never a second read (thread) beside it


# ------------------------------------------------------------------------------- config and flags
def test_parse_scrape_ids_default_to_host_port_and_urls_keep_their_query() -> None:
    got = parse_scrape(["n1x=http://10.0.0.5:9100/metrics", "http://[::1]:9100/m?a=b", "https://h.example/metrics"])
    assert got == (ScrapeTarget("n1x", "http://10.0.0.5:9100/metrics"), ScrapeTarget("[::1]:9100", "http://[::1]:9100/m?a=b"),
                   ScrapeTarget("h.example:443", "https://h.example/metrics"))


@pytest.mark.parametrize(("values", "says"), [
    (["ftp://h/metrics"], "http:// or https://"),
    (["a=redis://h:6379"], "not an http:// or https:// URL"),
    (["a=http://"], "with a host"),
    (["a=http://h:99999/m"], "with a host"),
    (["a=http://h/m", "a=http://g/m"], "given twice"),
    (["http://h:1/m", "http://h:1/n"], "given twice"),
    (["a b=http://h/m"], "letters, digits"),
    ("http://h/m", "a list of"),
])
def test_parse_scrape_refuses_with_the_flag_named(values: Any, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_scrape(values, "--scrape")
    assert "--scrape" in str(e.value) and says in str(e.value) and e.value.key == "telemetry.scrape"


def test_a_scrape_id_may_not_be_a_local_nodes_id_but_may_be_behind_url() -> None:
    cfg = RunConfig(name="x", cluster=ClusterConfig(nodes=2), load=LoadConfig(),
                    scrape=(ScrapeTarget("n2", "http://10.0.0.5:9100/metrics"),))
    with pytest.raises(ConfigError, match="local cluster node"):
        cfg.validate()
    assert cfg.validate(url="http://10.0.0.5:3000") is cfg


CAMPAIGN = """name = "s"
[load]
users = 2
[telemetry]
scrape = {scrape}
"""


def test_campaign_telemetry_scrape_key_and_its_errors_name_the_line() -> None:
    camp = parse_campaign(CAMPAIGN.format(scrape='["a=http://10.0.0.5:9100/metrics"]'), "c.toml")
    assert [r.scrape for r in camp.runs()] == [(ScrapeTarget("a", "http://10.0.0.5:9100/metrics"),)]
    with pytest.raises(ConfigError, match=r"^c\.toml:5: telemetry\.scrape 'a=ftp://x'"):
        parse_campaign(CAMPAIGN.format(scrape='["a=ftp://x"]'), "c.toml")
    with pytest.raises(ConfigError, match=r"^c\.toml:5: scrape id 'n1'"):
        parse_campaign(CAMPAIGN.format(scrape='["n1=http://h/m"]'), "c.toml")
    with pytest.raises(ConfigError, match=r"c\.toml:6: unknown key 'interval' in \[telemetry\]"):
        parse_campaign(CAMPAIGN.format(scrape="[]") + "interval = 2\n", "c.toml")


def test_scrape_flag_is_repeatable_and_campaign_flag_replaces_the_files_list(
        capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    cliargs.add_scrape_arg(p)
    a = p.parse_args(["--scrape", "a=http://h:1/m", "--scrape", "http://g:2/m"])
    assert cliargs.scrape_from_args(a) == (ScrapeTarget("a", "http://h:1/m"), ScrapeTarget("g:2", "http://g:2/m"))
    assert cliargs.scrape_from_args(p.parse_args([])) is None
    camp = parse_campaign(CAMPAIGN.format(scrape='["old=http://o/m"]'))
    assert cliargs.override_scrape(camp, a).scrape == cliargs.scrape_from_args(a)
    assert cliargs.override_scrape(camp, p.parse_args([])) is camp
    # through the real entries: a bad --scrape is bad input (exit 2) naming the flag, before anything starts
    assert main(["campaign", "campaigns/smoke.toml", "--dry-run", "--scrape", "ext=http://10.0.0.5:9100/metrics"]) == 0
    assert main(["campaign", "campaigns/smoke.toml", "--dry-run", "--scrape", "n1=http://10.0.0.5:9100/m"]) == 2
    assert "scrape id 'n1'" in capsys.readouterr().err
    assert main(["run", "--url", "http://127.0.0.1:9", "--scrape", "x=gopher://h"]) == 2
    assert "--scrape 'x=gopher://h'" in capsys.readouterr().err


# ------------------------------------------------------------------------------- beside a local cluster; the runner
class _Child:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def alive(self) -> bool:
        return True


class _OneNodeCluster:
    """What cluster_sampler reads of a started targets.cluster.Cluster: one node (this process), no balancer."""

    def __init__(self, workdir: Path) -> None:
        self.config = ClusterConfig(nodes=1, balancer="none", policy="direct")
        self.info = {"nodes": [{"id": "n1", "url": "http://local-n1"}]}
        self.workdir, self.redis, self.redis_url, self.ssl_context, self.node_groups = workdir, None, None, None, {}

    def _children(self) -> list[tuple[str, str, _Child]]:
        return [("node", "n1", _Child(os.getpid()))]


def test_scrape_targets_are_sampled_beside_the_local_clusters_nodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tm, "fetch_metrics", _FakeFetch({"http://local-n1/metrics": ["sioscale_clients 4\n"],
                                                         "http://ext/m": [PROM_CLIENT]}))
    s = tm.cluster_sampler(_OneNodeCluster(tmp_path), tmp_path, "r", scrape=[("ext", "http://ext/m")])
    try:
        rows = _rows(s.sample_once())
    finally:
        s.stop()
    assert rows[("node", "n1", "clients")] == 4.0 and rows[("node", "n1", "rss_bytes")] > 0  # psutil + /metrics
    assert rows[("node", "ext", "clients")] == 150.0 and rows[("node", "ext", "rss_bytes")] == 73400320.0


def test_runner_hook_samples_scrape_targets_behind_url_and_records_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sioscale.runner import _telemetry

    meta: dict[str, Any] = {}
    with _telemetry(None, tmp_path, "r", meta):  # --url without --scrape: nothing to sample
        pass
    assert "telemetry" not in meta and not (tmp_path / "resources.csv").exists()
    monkeypatch.setattr(tm, "fetch_metrics", _FakeFetch({"http://ext/m": [PROM_CLIENT]}))
    with _telemetry(None, tmp_path, "r", meta, scrape=(ScrapeTarget("ext", "http://ext/m"),)):
        time.sleep(0.3)
    assert meta["telemetry"]["scrape"] == [{"id": "ext", "url": "http://ext/m"}]
    assert meta["telemetry"]["samples"] >= 1 and meta["telemetry"]["rows"] >= 4
    assert "ext,clients,150.0" in (tmp_path / "resources.csv").read_text()
