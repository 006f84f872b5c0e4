"""execute_run's promises that need no processes: interrupts held off during cleanup, honest labels
for an external target, faults refused for --url, any one config's error recorded, not raised."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from contract.config import ClusterConfig, ConfigError, Fault, LoadConfig, RunConfig
from sioscale import runner
from sioscale.runner import execute_run, external_labels, external_run_name, interrupts_deferred


def _raise_kbi(signum, frame):  # what cli.py installs for SIGTERM
    raise KeyboardInterrupt


@pytest.fixture
def sigterm_as_interrupt():
    old = signal.signal(signal.SIGTERM, _raise_kbi)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def test_an_interrupt_during_cleanup_is_held_until_the_cleanup_is_done(sigterm_as_interrupt) -> None:
    done = []
    sigint_before = signal.getsignal(signal.SIGINT)  # other tests (gevent, Locust) may have set one
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            done.append("cleanup finished")  # not cut short by either signal
    assert done == ["cleanup finished"]
    assert signal.getsignal(signal.SIGTERM) is _raise_kbi  # handlers restored
    assert signal.getsignal(signal.SIGINT) is sigint_before


def test_held_interrupt_does_not_replace_the_exception_in_flight(sigterm_as_interrupt) -> None:
    with pytest.raises(ValueError):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("the original error")


def test_nested_deferral_holds_until_the_outermost_ends(sigterm_as_interrupt) -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after inner")
    assert reached == ["after inner"]


def test_no_signal_no_interrupt(sigterm_as_interrupt) -> None:
    with interrupts_deferred():
        pass
    assert signal.getsignal(signal.SIGTERM) is _raise_kbi


def test_external_target_labels_claim_nothing_about_the_cluster() -> None:
    cfg = RunConfig("x", ClusterConfig(adapter="redis", nodes=5, tls=True), LoadConfig(transports=("websocket",)))
    labels = external_labels("http://127.0.0.1:9", cfg)
    assert labels["balancer"] == labels["policy"] == "external"
    assert labels["adapter"] is labels["server"] is labels["nodes"] is labels["tls"] is None
    assert labels["transports"] == ["websocket"] and labels["target_url"] == "http://127.0.0.1:9"
    assert external_run_name(cfg.load) == "external-websocket"
    assert external_run_name(LoadConfig(eio=3)) == "external-polling+websocket-eio3"
    assert labels["http_protocol"] == "http/1.1"  # plain http: no ALPN, no h2
    browser = RunConfig("y", ClusterConfig(), LoadConfig(http_pool="browser"))
    assert external_labels("https://example.test", browser)["http_protocol"] is None  # only the server knows


def test_faults_with_url_are_a_config_error_before_anything_starts(tmp_path: Path) -> None:
    cfg = RunConfig("x", ClusterConfig(), LoadConfig(), faults=(Fault(at=1.0, action="stop_redis"),))
    with pytest.raises(ConfigError, match="faults need the local cluster"):
        execute_run(cfg, tmp_path / "run", url="http://127.0.0.1:9")
    assert not (tmp_path / "run").exists()


def test_any_error_of_one_config_is_recorded_not_raised(tmp_path: Path, monkeypatch) -> None:
    def broken(*_a, **_kw):  # what a bad value reaching Popen looks like (reviewer's redis_url=5)
        raise TypeError("expected str, bytes or os.PathLike object, not int")

    monkeypatch.setattr(runner, "run_locust", broken)
    cfg = RunConfig("x", ClusterConfig(), LoadConfig())
    meta = execute_run(cfg, tmp_path / "run", url="http://127.0.0.1:9")
    assert meta["status"] == "failed" and meta["error"].startswith("TypeError: expected str")
    on_disk = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["ended"] is not None
    assert on_disk["config"]["adapter"] is None and on_disk["cluster"] is None
