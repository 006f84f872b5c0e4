"""The Socket.IO stats routes ask for the same login as Locust's own pages when --web-login is on
(Flask test client on Locust's real WebUI app: no socket is opened)."""

from __future__ import annotations

import pytest
from locust.env import Environment
from locust.web import WebUI

from locustfiles.sio import webui


def _client(web_login: bool):
    env = Environment(events=None)
    ui = WebUI(env, "127.0.0.1", 0, web_login=web_login)
    if web_login:
        ui.app.secret_key = "test"
        ui.login_manager.user_loader(lambda user_id: None)  # nobody is logged in
    webui._on_init(environment=env, web_ui=ui)
    return ui.app.test_client()


@pytest.mark.parametrize("path", [webui.STATS_PATH, webui.CSV_PATH])
def test_stats_routes_require_login_when_enabled(path: str) -> None:
    r = _client(web_login=True).get(path)
    assert r.status_code in (302, 401) and b"totals" not in r.data and b"section,metric" not in r.data


@pytest.mark.parametrize("path, needle", [(webui.STATS_PATH, b"totals"), (webui.CSV_PATH, b"section,metric")])
def test_stats_routes_open_without_web_login(path: str, needle: bytes) -> None:
    r = _client(web_login=False).get(path)
    assert r.status_code == 200 and needle in r.data
