"""The table of sioscale's Locust options (--sio-*): flag, type, default, help, web UI, in one place.

Three things are generated from `OPTIONS`, so an option is added or changed here only:
- the Locust parser entries (`locustfiles/sio/options.py`, Locust's init_command_line_parser);
- the typed reading of the parsed options on the Locust side (`SioOptions.from_namespace`), which
  `SocketIOUser` and `SessionConfig.from_options` use, with the defaults from this table;
- the runner's flags for a run (`load_flags`, from a `contract.config.LoadConfig` plus the few
  values the runner itself owns: the run directory and name, the node header, the CA file).

Booleans are booleans once read. On the command line `--sio-reconnect` keeps its spelling
(`--sio-reconnect true|false`, a string in Locust's parsed options, so the web UI shows the same
select); `SioOptions.from_namespace` turns it into a bool. `--sio-insecure` is a switch (present
or not). Stdlib only: the Locust side and the runner both import it (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contract.config import DEFAULT_HTTP_POOL, HTTP_POOLS, LoadConfig, ScrapeTarget, Step, parse_scrape
from contract.rowpolicy import DEFAULT_FAILURE_ROWS_PER_S, DEFAULT_FIRST_N, DEFAULT_SAMPLE_RATE
from contract.wire import DEFAULT_TRANSPORTS, NODE_HEADER

BOOL_SPELLINGS = ("true", "false")
"""How a value-taking boolean option (`--sio-reconnect`) is spelled on the command line and in the web UI."""


@dataclass(frozen=True)
class SioOption:
    """One --sio-* option. `field` is its name in `SioOptions` (and, with `from_load`, in LoadConfig)."""

    field: str
    type: type  # str, int, float or bool
    default: str | int | float | bool
    help: str
    web_ui: bool = True  # shown (and editable) in Locust's web UI start form
    choices: tuple[Any, ...] = ()
    switch: bool = False  # a bool given by presence (store_true); other bools are spelled true|false
    from_load: bool = False  # the runner passes LoadConfig.<field> as this flag
    minimum: float | None = None  # numeric options: the smallest value allowed (inclusive)
    maximum: float | None = None  # numeric options: the largest value allowed (inclusive)
    text_check: Callable[[str], object] | None = None  # str options: raises ValueError on a bad value (parse time)

    @property
    def flag(self) -> str:
        return "--sio-" + self.field.replace("_", "-")

    @property
    def dest(self) -> str:
        """The attribute name in Locust's parsed options."""
        return "sio_" + self.field

    @property
    def cli_default(self) -> str | int | float | bool:
        """The default as Locust's parser holds it (a value-taking bool as its spelling)."""
        if self.type is bool and not self.switch:
            return "true" if self.default else "false"
        return self.default

    def read(self, raw: Any) -> Any:
        """A parsed-option value as this option's type; the default when absent (None)."""
        if raw is None:
            return self.default
        if self.type is bool:
            return as_bool(raw, self.flag)
        return self.check(self.type(raw))

    def check(self, value: Any) -> Any:
        """`value` if it lies in [minimum, maximum], else ValueError naming the flag and the range.

        Why: an out-of-range value (a sample rate of 1.5) would otherwise be found by the first
        user step of every user (the row policy refuses it) instead of at startup, once."""
        lo, hi = self.minimum, self.maximum
        if (lo is not None and not value >= lo) or (hi is not None and not value <= hi):  # NaN fails both
            span = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else \
                f"{lo:g} or more" if lo is not None else f"{hi:g} or less"
            raise ValueError(f"{self.flag} {value!r}: must be {span}")
        return value

    def parse(self, text: str) -> Any:
        """A command-line string as this option's value, range checked (the parser's `type`)."""
        try:
            value = self.type(text)
        except ValueError:
            raise ValueError(f"{self.flag} {text!r}: not a{'n integer' if self.type is int else ' number'}") from None
        return self.check(value)

    def render(self, value: Any) -> str:
        """A value as its command-line argument (the inverse of `read`)."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple | list):
            return ",".join(_render_item(v) for v in value)
        return str(value)


def _render_item(v: Any) -> str:
    if isinstance(v, Step):
        return f"{v.users}:{v.hold:g}"  # the --sio-steps spelling, USERS:HOLD_S
    return str(v)


def scrape_targets(text: str, flag: str = "--sio-scrape") -> tuple[ScrapeTarget, ...]:
    """--sio-scrape's comma-separated `[ID=]URL` list -> targets; "" (or only commas) -> ().

    Why contract.config.parse_scrape: the same syntax, ids and errors as `sioscale run --scrape`, so
    `sioscale cluster`'s "scrape" value (n1=URL,n2=URL) means the same in both. ConfigError (a
    ValueError) names the flag and the bad item.
    """
    parts = [p for p in text.split(",") if p.strip()]
    return parse_scrape(parts, flag) if parts else ()


def as_bool(raw: Any, flag: str = "option") -> bool:
    """The one place a boolean option's spelling ("true"/"false", as the CLI and web UI give it) becomes a bool."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw in BOOL_SPELLINGS:
        return raw == "true"
    raise ValueError(f"{flag} {raw!r}: one of {', '.join(BOOL_SPELLINGS)}")


OPTIONS: tuple[SioOption, ...] = (
    SioOption("transports", str, ",".join(DEFAULT_TRANSPORTS), from_load=True,
              help="Client transports, as socket.io-client's `transports`: polling,websocket | websocket | polling"),
    SioOption("eio", int, 4, choices=(3, 4), from_load=True,
              help="Engine.IO protocol: 4 (socket.io 3.x/4.x) or 3 (socket.io 2.x)"),
    SioOption("path", str, "/socket.io/", help="Engine.IO path on the server"),
    SioOption("namespace", str, "/", from_load=True, help="Socket.IO namespace to connect"),
    SioOption("auth", str, "", help="JSON object sent as the CONNECT auth payload (empty: none)"),
    SioOption("node_header", str, NODE_HEADER,
              help="Response header naming the backend node (falls back to the balancer's sticky cookie)"),
    SioOption("room_size", int, 10, from_load=True, help="chat: users per room"),
    SioOption("message_rate", float, 1.0, from_load=True,
              help="chat: messages (broadcast + acked echo) per user per second"),
    SioOption("payload_size", int, 64, from_load=True, help="chat: padding bytes per message"),
    SioOption("reconnect", bool, True, choices=BOOL_SPELLINGS, from_load=True,
              help="Reconnect with socket.io-client's backoff (1000 ms, max 5000 ms, randomization 0.5)"),
    SioOption("timeout", float, 10.0,
              help="Seconds to wait for any single step (handshake, connect, upgrade, ack)"),
    SioOption("source_range", str, "", from_load=True,
              help="Bind each user's sockets to its own loopback address, e.g. 127.0.0.2-127.0.0.254"),
    SioOption("user_header", bool, False, switch=True,
              help="Send X-SIO-User: <user id> on every HTTP request and WebSocket handshake (for a balancer "
                   "that hashes a header: nginx header-hash, ingress-nginx upstream-hash-by)"),
    SioOption("ca_file", str, "", help="CA bundle for https/wss targets"),
    SioOption("insecure", bool, False, switch=True, help="Do not verify TLS certificates (explicit opt-in)"),
    SioOption("steps", str, "", web_ui=False, from_load=True,
              help="Step load for locustfiles/steps.py: USERS:HOLD_S,USERS:HOLD_S,... (ramp at --spawn-rate)"),
    SioOption("sample_rate", float, DEFAULT_SAMPLE_RATE, from_load=True, minimum=0.0, maximum=1.0,
              help="Event log: share of successful high-volume rows kept beyond the first ones (0-1; counts stay "
                   "exact in the aggregates)"),
    SioOption("first_rows", int, DEFAULT_FIRST_N, minimum=0,
              help="Event log: rows kept in full per user and step before sampling"),
    SioOption("failure_rows", int, DEFAULT_FAILURE_ROWS_PER_S, minimum=0,
              help="Event log: failed-step rows kept per second per process beyond each user's first of a kind"),
    SioOption("log_all", bool, False, switch=True, from_load=True,
              help="Event log: keep every row beside the aggregates (proof runs; large files)"),
    SioOption("scrape", str, "", text_check=scrape_targets,
              help="Web UI: nodes' Prometheus /metrics to show live in the Socket.IO tab (CPU, RSS, event-loop lag, "
                   "clients): comma-separated [ID=]URL, e.g. n1=http://127.0.0.1:5001/metrics (sioscale cluster's "
                   "\"scrape\"); empty: none"),
    SioOption("http_pool", str, DEFAULT_HTTP_POOL, choices=HTTP_POOLS, from_load=True,
              help="HTTP connections per user: browser (Chromium's pool: a request takes the first connection "
                   "to become free, 6 per host) | node (a new connection bound to each concurrent request, as "
                   "the Node.js client)"),
    SioOption("ws_deflate", bool, True, choices=BOOL_SPELLINGS,
              help="WebSocket: offer permessage-deflate as Chrome does and compress when the server accepts "
                   "(true|false; false saves ~140 KB of zlib state per user and the CPU of compressing)"),
    SioOption("run_dir", str, "", web_ui=False,
              help="Run directory for the event log (event streams, Parquet at the end) and live stats; empty: none"),
    SioOption("run_name", str, "", web_ui=False,
              help="Run name written in every event row (default: the run directory's name)"),
)
BY_FIELD: dict[str, SioOption] = {o.field: o for o in OPTIONS}


@dataclass(frozen=True)
class SioOptions:
    """The --sio-* options as read on the Locust side, typed; one field per row of `OPTIONS`.

    The fields carry no defaults: those are the table's (a unit test checks the two agree).
    """

    transports: str
    eio: int
    path: str
    namespace: str
    auth: str
    node_header: str
    room_size: int
    message_rate: float
    payload_size: int
    reconnect: bool
    timeout: float
    source_range: str
    user_header: bool
    ca_file: str
    insecure: bool
    steps: str
    sample_rate: float
    first_rows: int
    failure_rows: int
    log_all: bool
    scrape: str
    http_pool: str
    ws_deflate: bool
    run_dir: str
    run_name: str

    @classmethod
    def from_namespace(cls, parsed: Any) -> SioOptions:
        """From Locust's parsed options (`environment.parsed_options`, None in tests that build an
        Environment by hand); an option absent or None there takes the table's default."""
        return cls(**{o.field: o.read(getattr(parsed, o.dest, None)) for o in OPTIONS})

    @classmethod
    def from_environment(cls, environment: Any) -> SioOptions:
        return cls.from_namespace(getattr(environment, "parsed_options", None))


def load_flags(load: LoadConfig, **runner_values: Any) -> list[str]:
    """The --sio-* arguments for a run, in table order.

    Options marked `from_load` take LoadConfig's field; `runner_values` give others by field
    (run_dir, run_name, node_header, ca_file). A value that is None, or empty where the option's
    default is empty as well (no steps, no source range), is left out: Locust's default applies.
    """
    unknown = set(runner_values) - set(BY_FIELD)
    if unknown:
        raise KeyError(f"load_flags: not a --sio-* option: {', '.join(sorted(unknown))}")
    out: list[str] = []
    for o in OPTIONS:
        if o.field in runner_values:
            value = runner_values[o.field]
        elif o.from_load:
            value = getattr(load, o.field)
        else:
            continue
        if value is None or (value in ("", ()) and o.default == ""):
            continue
        if o.switch:  # given by presence
            out += [o.flag] if value else []
            continue
        out += [o.flag, o.render(value)]
    return out

