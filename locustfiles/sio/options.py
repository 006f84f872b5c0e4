"""sioscale's Locust custom options: one definition, shown in the web UI, passed to workers.

Importing this module registers the options (Locust's init_command_line_parser event), so
any locustfile that imports `locustfiles.sio` gets them. Defaults mirror socket.io-client 4.x
in a browser, and `contract.config.LoadConfig` maps onto them one to one.
"""

from __future__ import annotations

from locust import events

from contract.wire import DEFAULT_TRANSPORTS, NODE_HEADER


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:  # parser: Locust's configargparse parser
    g = _LocustGroup(parser.add_argument_group("sioscale (Socket.IO)"))
    g.add_argument("--sio-transports", default=",".join(DEFAULT_TRANSPORTS), include_in_web_ui=True,
                   help="Client transports, as socket.io-client's `transports`: polling,websocket | websocket | polling")
    g.add_argument("--sio-eio", type=int, default=4, choices=[3, 4], include_in_web_ui=True,
                   help="Engine.IO protocol: 4 (socket.io 3.x/4.x) or 3 (socket.io 2.x)")
    g.add_argument("--sio-path", default="/socket.io/", include_in_web_ui=True, help="Engine.IO path on the server")
    g.add_argument("--sio-namespace", default="/", include_in_web_ui=True, help="Socket.IO namespace to connect")
    g.add_argument("--sio-auth", default="", include_in_web_ui=True,
                   help="JSON object sent as the CONNECT auth payload (empty: none)")
    g.add_argument("--sio-node-header", default=NODE_HEADER, include_in_web_ui=True,
                   help="Response header naming the backend node (falls back to the balancer's sticky cookie)")
    g.add_argument("--sio-room-size", type=int, default=10, include_in_web_ui=True,
                   help="chat: users per room")
    g.add_argument("--sio-message-rate", type=float, default=1.0, include_in_web_ui=True,
                   help="chat: messages (broadcast + acked echo) per user per second")
    g.add_argument("--sio-payload-size", type=int, default=64, include_in_web_ui=True,
                   help="chat: padding bytes per message")
    g.add_argument("--sio-reconnect", default="true", choices=["true", "false"], include_in_web_ui=True,
                   help="Reconnect with socket.io-client's backoff (1000 ms, max 5000 ms, randomization 0.5)")
    g.add_argument("--sio-timeout", type=float, default=10.0, include_in_web_ui=True,
                   help="Seconds to wait for any single step (handshake, connect, upgrade, ack)")
    g.add_argument("--sio-source-range", default="", include_in_web_ui=True,
                   help="Bind each user's sockets to its own loopback address, e.g. 127.0.0.2-127.0.0.254")
    g.add_argument("--sio-ca-file", default="", include_in_web_ui=True, help="CA bundle for https/wss targets")
    g.add_argument("--sio-insecure", action="store_true", default=False,
                   help="Do not verify TLS certificates (explicit opt-in)")
    g.add_argument("--sio-steps", default="", include_in_web_ui=False,
                   help="Step load for locustfiles/steps.py: USERS:HOLD_S,USERS:HOLD_S,... (ramp at --spawn-rate)")
    g.add_argument("--sio-run-dir", default="", include_in_web_ui=False,
                   help="Run directory for the per-step event log (events.csv) and live stats; empty: none")
    g.add_argument("--sio-run-name", default="", include_in_web_ui=False,
                   help="Run name written in every event row (default: the run directory's name)")


class _LocustGroup:
    """An argument group that accepts Locust's extra add_argument keywords.

    Why: argparse groups' add_argument is the plain one and rejects `include_in_web_ui`
    (TypeError at startup); Locust's parser only handles those keywords on the parser itself.
    """

    _EXTRA = {"include_in_web_ui": True, "is_secret": False, "is_required": False, "is_multiple": False}

    def __init__(self, group) -> None:  # group: an argparse._ArgumentGroup
        self._group = group

    def add_argument(self, *args, **kwargs):  # argparse's signature
        extra = {k: kwargs.pop(k, default) for k, default in self._EXTRA.items()}
        action = self._group.add_argument(*args, **kwargs)
        for k, v in extra.items():
            setattr(action, k, v)
        return action
