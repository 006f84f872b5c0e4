"""Node attribution in the driver: the node header option is matched case-insensitively.

Why: the HTTP layer lower-cases response header names, so a header option written as the
server writes it (`X-Served-By`) must still find the node, not silently attribute nothing.
"""

from __future__ import annotations

import argparse

import pytest
from locust.env import Environment
from locust.event import Events

from contract.config import NODE_COOKIE, NODE_HEADER
from locustfiles.sio.driver import SessionConfig, node_of
from locustfiles.sio.transport import Endpoint, HttpSession
from locustfiles.sio.user import SocketIOUser


class _User(SocketIOUser):
    abstract = False


@pytest.mark.parametrize("option", ["X-Served-By", "x-served-by", " X-SERVED-BY "])
def test_node_header_option_any_case(option: str) -> None:
    cfg = SessionConfig(url="http://127.0.0.1:9", node_header=option)
    http = HttpSession(Endpoint.from_url(cfg.url))
    # response header names as transport/http.py hands them over: lower case
    assert node_of({"x-served-by": "n2"}, http, cfg.node_header) == "n2"


def test_user_passes_the_option_through_and_defaults_to_the_config_header() -> None:
    env = Environment(events=Events(), host="http://127.0.0.1:9")
    env.parsed_options = argparse.Namespace(sio_node_header="X-Node")
    assert _User(env)._config(None, None, None, None, None).node_header == "x-node"
    env.parsed_options = argparse.Namespace()
    assert _User(env)._config(None, None, None, None, None).node_header == NODE_HEADER


def test_sticky_cookie_is_the_fallback() -> None:
    http = HttpSession(Endpoint.from_url("http://127.0.0.1:9"))
    http.cookies.update([f"{NODE_COOKIE}=n3; path=/"])
    assert node_of({}, http, NODE_HEADER) == "n3"


def test_a_node_id_longer_than_a_name_is_cut() -> None:
    from locustfiles.sio.driver import MAX_NODE_ID_CHARS

    http = HttpSession(Endpoint.from_url("http://127.0.0.1:9"))
    assert node_of({"x-served-by": "n" * 60_000}, http, "x-served-by") == "n" * MAX_NODE_ID_CHARS
