"""The one table of --sio-* options (contract/options.py) and what is generated from it.

Locust's own parser is built with the options (as `locust -f locustfiles/chat.py` does) and parses
real command lines: every flag, its default, the true|false spelling of --sio-reconnect; the
runner's flags for a LoadConfig parse back to that LoadConfig's values.
"""

from __future__ import annotations

import typing
from dataclasses import fields, replace
from pathlib import Path

import pytest
from locust import argument_parser

import locustfiles.sio.options  # noqa: F401  (registers the parser entries)
from contract.config import ClusterConfig, LoadConfig, RunConfig, Step
from contract.options import BY_FIELD, OPTIONS, SioOptions, as_bool, load_flags
from locustfiles.sio.driver import SessionConfig
from sioscale.runner import locust_command

# A non-default command-line value for every option, and the typed value it reads as.
NON_DEFAULT: dict[str, tuple[list[str], object]] = {
    "transports": (["websocket"], "websocket"),
    "eio": (["3"], 3),
    "path": (["/sio/"], "/sio/"),
    "namespace": (["/chat"], "/chat"),
    "auth": (['{"token": "t"}'], '{"token": "t"}'),
    "node_header": (["X-Node"], "X-Node"),
    "room_size": (["7"], 7),
    "message_rate": (["2.5"], 2.5),
    "payload_size": (["0"], 0),
    "reconnect": (["false"], False),
    "timeout": (["3"], 3.0),
    "source_range": (["127.0.0.2-127.0.0.9"], "127.0.0.2-127.0.0.9"),
    "user_header": ([], True),
    "ca_file": (["/tmp/ca.pem"], "/tmp/ca.pem"),
    "insecure": ([], True),
    "steps": (["5:2,10:3"], "5:2,10:3"),
    "sample_rate": (["0.5"], 0.5),
    "first_rows": (["2"], 2),
    "failure_rows": (["9"], 9),
    "log_all": ([], True),
    "scrape": (["n1=http://127.0.0.1:5001/metrics,http://10.0.0.6:9100/metrics"],
               "n1=http://127.0.0.1:5001/metrics,http://10.0.0.6:9100/metrics"),
    "http_pool": (["browser"], "browser"),
    "ws_deflate": (["false"], False),
    "run_dir": (["/tmp/run"], "/tmp/run"),
    "run_name": (["r1"], "r1"),
}


def _parse(args: list[str]) -> SioOptions:
    parser = argument_parser.get_parser(default_config_files=[])
    return SioOptions.from_namespace(parser.parse_args(["-f", "locustfiles/chat.py", *args]))


def test_the_typed_options_name_every_row_of_the_table_with_its_type() -> None:
    hints = typing.get_type_hints(SioOptions)
    assert [f.name for f in fields(SioOptions)] == [o.field for o in OPTIONS]
    assert all(hints[o.field] is o.type for o in OPTIONS)
    assert set(NON_DEFAULT) == set(BY_FIELD)


def test_locust_parses_no_flags_to_the_table_defaults() -> None:
    parsed = argument_parser.get_parser(default_config_files=[]).parse_args(["-f", "locustfiles/chat.py"])
    for o in OPTIONS:
        assert getattr(parsed, o.dest) == o.cli_default, o.flag
    assert _parse([]) == SioOptions(**{o.field: o.default for o in OPTIONS})
    assert _parse([]).reconnect is True and _parse([]).insecure is False


@pytest.mark.parametrize("field", list(NON_DEFAULT))
def test_locust_parses_every_flag(field: str) -> None:
    o = BY_FIELD[field]
    args, want = NON_DEFAULT[field]
    got = getattr(_parse([o.flag, *args]), field)
    assert got == want and type(got) is o.type


def test_reconnect_keeps_its_true_false_spelling_and_reads_as_a_bool() -> None:
    assert _parse(["--sio-reconnect", "true"]).reconnect is True
    assert _parse(["--sio-reconnect=false"]).reconnect is False
    with pytest.raises(SystemExit):
        _parse(["--sio-reconnect", "no"])
    with pytest.raises(SystemExit):
        _parse(["--sio-eio", "5"])
    assert as_bool("true") is True and as_bool(False) is False
    with pytest.raises(ValueError, match="--sio-reconnect 'yes'"):
        BY_FIELD["reconnect"].read("yes")


def test_the_web_ui_shows_the_table_s_options_with_their_defaults() -> None:
    extra = argument_parser.ui_extra_args_dict(["-f", "locustfiles/chat.py"])
    shown = {o.dest: o for o in OPTIONS if o.web_ui}
    assert {k for k in extra if k.startswith("sio_")} == set(shown)
    for dest, o in shown.items():
        assert extra[dest]["default_value"] == o.cli_default
        assert extra[dest]["help_text"] == o.help
    assert extra["sio_reconnect"]["choices"] == ["true", "false"]  # a select in the form, as before


def test_partial_namespaces_take_the_table_defaults() -> None:
    """Tests and tools build parsed_options by hand with a few options; the rest are the defaults."""
    import argparse

    o = SioOptions.from_namespace(argparse.Namespace(sio_timeout=5, sio_reconnect="false", sio_eio=None))
    assert o.timeout == 5.0 and o.reconnect is False and o.eio == 4 and o.path == "/socket.io/"
    assert SioOptions.from_namespace(None) == _parse([])


def test_every_load_option_is_a_loadconfig_field_with_the_same_default() -> None:
    load = {f.name for f in fields(LoadConfig)}
    default = LoadConfig()
    for o in OPTIONS:
        if not o.from_load:
            continue
        assert o.field in load, o.field
        value = getattr(default, o.field)
        if value not in (None, ()):
            assert o.render(value) == o.render(o.cli_default), o.field


def test_the_runner_s_flags_parse_back_to_the_loadconfig() -> None:
    lo = replace(LoadConfig(), transports=("websocket",), eio=3, namespace="/chat", room_size=4, message_rate=2.5,
                 payload_size=0, reconnect=False, source_range="127.0.0.2-127.0.0.9", log_all=True, sample_rate=0.25,
                 steps=(Step(5, 2.5), Step(10, 3)), http_pool="browser")
    o = _parse(load_flags(lo, run_dir="/tmp/run", run_name="r", node_header="x-node", ca_file="/ca.pem"))
    assert (o.transports, o.eio, o.namespace, o.room_size, o.message_rate, o.payload_size, o.reconnect) == (
        "websocket", 3, "/chat", 4, 2.5, 0, False)
    assert (o.log_all, o.sample_rate, o.http_pool) == (True, 0.25, "browser")
    assert "--sio-log-all" not in load_flags(LoadConfig())
    assert (o.source_range, o.steps, o.run_dir, o.run_name, o.node_header, o.ca_file) == (
        "127.0.0.2-127.0.0.9", "5:2.5,10:3", "/tmp/run", "r", "x-node", "/ca.pem")
    assert "--sio-steps" not in load_flags(LoadConfig()) and "--sio-source-range" not in load_flags(LoadConfig())
    with pytest.raises(KeyError):
        load_flags(LoadConfig(), no_such_option="x")


def test_locust_command_passes_the_table_s_flags(tmp_path: Path) -> None:
    cfg = RunConfig("r", ClusterConfig(), LoadConfig(reconnect=False))
    cmd = locust_command(cfg, "http://127.0.0.1:1", tmp_path, ca_file="/ca.pem")
    sio = cmd[cmd.index("--sio-transports"):]
    assert sio == load_flags(cfg.load, run_dir=str(tmp_path), run_name="r", node_header=cfg.cluster.node_header,
                             ca_file="/ca.pem")
    assert cmd[cmd.index("--sio-reconnect") + 1] == "false" and cmd[cmd.index("-t") + 1] == "15s"
    assert "--sio-ca-file" not in locust_command(cfg, "http://127.0.0.1:1", tmp_path)


def test_session_config_from_options() -> None:
    o = _parse(["--sio-transports", "polling+websocket", "--sio-auth", '{"k": 1}', "--sio-node-header", "X-Node",
                "--sio-timeout", "3", "--sio-eio", "3", "--sio-path", "/p/"])
    c = SessionConfig.from_options(o, "http://h:1", headers={"a": "b"})
    assert (c.url, c.eio, c.transports, c.path, c.namespace, c.auth, c.timeout, c.node_header, c.headers) == (
        "http://h:1", 3, ("polling", "websocket"), "/p/", "/", {"k": 1}, 3.0, "x-node", {"a": "b"})
    c = SessionConfig.from_options(o, "http://h:1", namespace="/n", auth={"x": 2}, transports=["websocket"])
    assert (c.namespace, c.auth, c.transports) == ("/n", {"x": 2}, ("websocket",))


@pytest.mark.parametrize(("args", "flag", "words"), [
    (["--sio-sample-rate", "1.5"], "--sio-sample-rate", "between 0 and 1"),
    (["--sio-sample-rate=-0.1"], "--sio-sample-rate", "between 0 and 1"),
    (["--sio-sample-rate", "nan"], "--sio-sample-rate", "between 0 and 1"),
    (["--sio-first-rows=-1"], "--sio-first-rows", "0 or more"),
    (["--sio-failure-rows=-3"], "--sio-failure-rows", "0 or more"),
    (["--sio-failure-rows", "x"], "--sio-failure-rows", "not an integer"),
])
def test_out_of_range_policy_options_stop_the_parse_with_one_clear_line(
        args: list[str], flag: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Review 2.6: a sample rate of 1.5 used to pass the parser and make every record() raise."""
    with pytest.raises(SystemExit):
        _parse(args)
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and flag in err[0] and words in err[0], err


def test_the_range_edges_parse_and_a_hand_made_namespace_is_checked_too() -> None:
    import argparse

    assert _parse(["--sio-sample-rate", "0"]).sample_rate == 0.0
    assert _parse(["--sio-sample-rate", "1"]).sample_rate == 1.0
    assert _parse(["--sio-first-rows", "0", "--sio-failure-rows", "0"]).failure_rows == 0
    with pytest.raises(ValueError, match="--sio-sample-rate"):
        SioOptions.from_namespace(argparse.Namespace(sio_sample_rate=2.0))


@pytest.mark.parametrize(("value", "words"), [
    ("n1=ftp://x/metrics", "is not an http:// or https:// URL"),
    ("n1=http://a:1/m,n1=http://b:2/m", "id 'n1' is given twice"),
    ("justaname", "expected [ID=]URL"),
])
def test_a_bad_scrape_list_stops_the_parse_with_one_line_naming_the_flag(
        value: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--sio-scrape goes through contract.config.parse_scrape, the rules of `sioscale run --scrape`."""
    with pytest.raises(SystemExit):
        _parse(["--sio-scrape", value])
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "--sio-scrape" in err[0] and words in err[0], err


def test_scrape_targets_reads_the_cluster_s_scrape_value() -> None:
    from contract.options import scrape_targets

    got = scrape_targets(" n1=http://127.0.0.1:5001/metrics, ,http://127.0.0.1:5002/metrics,")
    assert [(t.id, t.url) for t in got] == [("n1", "http://127.0.0.1:5001/metrics"),
                                           ("127.0.0.1:5002", "http://127.0.0.1:5002/metrics")]
    assert scrape_targets("") == () and scrape_targets(" , ") == ()


@pytest.mark.parametrize(("value", "ok"), [("browser", True), ("node", True), ("chrome", False), (1, False)])
def test_http_pool_campaign_key_sioscale_run_flag_and_session_class(value: object, ok: bool) -> None:
    """[load] http_pool, `sioscale run --http-pool` and --sio-http-pool name one setting; `browser` is the
    default (issue 13: real Chromium measured beside it), `node` ends the run name with -node."""
    import argparse
    import json

    from contract.config import ConfigError, parse_campaign
    from locustfiles.sio.driver import http_session
    from locustfiles.sio.transport import HttpSession
    from locustfiles.sio.transport.pooled import PooledHttpSession
    from sioscale.cliargs import add_load_args, load_from_args

    assert LoadConfig().http_pool == "browser" and BY_FIELD["http_pool"].default == "browser"
    text = f'name = "c"\n[load]\nhttp_pool = {json.dumps(value)}\n'
    if not ok:
        with pytest.raises(ConfigError, match="http_pool"):
            parse_campaign(text)
        return
    [run] = parse_campaign(text).runs()
    assert run.load.http_pool == value and run.name.endswith("-node") == (value == "node")
    p = argparse.ArgumentParser()
    add_load_args(p)
    assert load_from_args(p.parse_args(["--http-pool", str(value)])).http_pool == value
    cfg = SessionConfig.from_options(_parse(["--sio-http-pool", str(value)]), "http://127.0.0.1:1")
    http = http_session(cfg)
    assert type(http) is (PooledHttpSession if value == "browser" else HttpSession)
    http.close()
