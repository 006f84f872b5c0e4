"""sioscale's Locust client: `from locustfiles.sio import SocketIOUser`.

Importing this package also registers the --sio-* options, the event log (RUN_DIR/events.csv),
the web UI's Socket.IO tab and its live node resources (--sio-scrape), so a locustfile needs nothing else.
"""

# registration on import; lifeline: forked Locust workers die with their master (PR_SET_PDEATHSIG)
from locustfiles.sio import eventlog, lifeline, noderes, options  # noqa: F401
from locustfiles.sio.user import SioError, SocketIOUser

try:  # the web UI tab is optional (headless runs work without it)
    from locustfiles.sio import webui  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["SioError", "SocketIOUser"]
