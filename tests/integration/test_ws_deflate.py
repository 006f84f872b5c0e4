"""permessage-deflate against the real servers (issue 13): the client offers it as Chrome does.

python-socketio under uvicorn's wsproto accepts it (uvicorn's `ws_per_message_deflate` is on by
default) and compresses every message; the Node.js socket.io 4.8.4 server declines it (engine.io
6.6 leaves `perMessageDeflate` off unless asked). Either way a large echo goes both ways intact,
and the upgrade_probe row records what was negotiated.
"""

from __future__ import annotations

import pytest

from contract.config import ClusterConfig
from locustfiles.sio.driver import Session, SessionConfig
from locustfiles.sio.protocol.actions import AckReceived, StepResult
from targets.cluster import Cluster
from tests.integration.support import first_action

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("server", "accepted"), [("python", True), ("node", False)])
def test_deflate_is_used_when_the_server_accepts_it(server: str, accepted: bool) -> None:
    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct", server=server)) as c:
        actions: list = []
        s = Session(SessionConfig(url=c.url, transports=("polling", "websocket"), timeout=5.0),
                    lambda a, ctx: actions.append(a))
        try:
            s.start()
            probe = first_action(actions, lambda a: isinstance(a, StepResult) and a.step == "upgrade_probe")
            first_action(actions, lambda a: isinstance(a, StepResult) and a.step == "upgrade")
            assert probe.ok, probe
            text = "compress me " * 500
            ack_id = s.emit("echo", text, ack=True)
            ack = first_action(actions, lambda a: isinstance(a, AckReceived) and a.ack_id == ack_id)
            assert ack.args == [text]
            ws = s._ws
            assert ws is not None
            if accepted:
                assert probe.error == ws.extension == (
                    "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15"), probe
                assert ws.compressed_in >= 2, ws.compressed_in  # "3probe" and the echo came compressed
            else:
                assert probe.error == ws.extension == "", probe
                assert ws.compressed_in == 0
            assert not [a for a in actions if isinstance(a, StepResult) and not a.ok]
        finally:
            s.abort()
